// Hugging Face transformers' PatchTSMixer (PatchTSMixerForPrediction, ...ForTimeSeriesClassification)
// as a 1-D MetaFormer (docs/sequences.md): each PatchTSMixerLayer is one MetaFormer block, its patch
// mixer the block's token half (norm1, time_mlp or gated_time_mlp) and its feature mixer the MLP half
// (norm2, mlp with the softmax gate); common_channel mode is independent channels; the std scaler,
// the forecasting head and the mean-pooled classifier are the series options of the config.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "io/safetensors.h"
#include "model/config.h"

namespace mf {

class MetaFormer;

// The engine's description of a PatchTSMixerConfig (its JSON fields: context_length, patch_length,
// patch_stride, num_input_channels, d_model, expansion_factor, num_layers, mode, gated_attn, norm_mlp,
// norm_eps, scaling, and prediction_length for forecasting or num_targets + head_aggregation for
// classification). What the engine does not reproduce (self_attn, mix_channel mode, positional
// encodings, max-pool or last-token heads, scaling with a classifier) is refused with one line.
MetaFormerConfig patchtsmixer_config(const nlohmann::json& hf, bool classification);

// The engine's key for one of transformers' state-dict keys (the renaming table: model tree names
// that differ), or "" for a key with no counterpart. Keys are those of the ...ForPrediction /
// ...ForTimeSeriesClassification model (prefix "model." for the backbone, "head." for the head).
std::string patchtsmixer_key(const std::string& hf_key);

// Loads a transformers PatchTSMixer state dict into `model` (built from patchtsmixer_config):
// strict, as load_weights (every parameter found, every tensor used, shapes equal up to the 1×1 of
// the MLP's weights); returns the number of tensors loaded.
int load_patchtsmixer(MetaFormer& model, const SafeTensors& file);

}  // namespace mf
