// The description of a MetaFormer: the single source from which the module tree (and so every
// parameter name and shape) is built. Zoo models are descriptions written in C++ (zoo.cpp); users
// write the same description as JSON (docs/config.md) and build new models without recompiling.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "nn/norm_spec.h"
#include "ops/op_kind.h"

namespace mf {

struct MixerSpec {
  std::string type;                                      // a registered mixer name
  nlohmann::json options = nlohmann::json::object();     // mixer-specific options
  bool operator==(const MixerSpec&) const = default;
};

// The stem (stem.*) or the downsampling between stages (stages.{s}.downsample.*).
struct ConvSpec {
  int kernel_size = 3, stride = 2, padding = 1;
  std::optional<NormSpec> norm;  // stem: after the conv; downsampling: before it (unless norm_after)
  // Stem only. "conv": stem.conv (+ stem.norm), MetaFormer's. "two_conv": MambaOut's stem.conv1
  // (in -> dim/2) [stem.norm1 when mid_norm] -> act -> stem.conv2 (-> dim) -> stem.norm2, each conv
  // with this geometry. "patch": MLP-Mixer's patch embedding stem.proj (+ stem.norm).
  std::string type = "conv";
  bool mid_norm = false;
  std::string act = "gelu";
  // Downsampling only: normalise the conv's output instead of its input (MambaOut's original
  // variants; the _rw variants normalise the input, as MetaFormer does).
  bool norm_after = false;
  bool operator==(const ConvSpec&) const = default;
};

struct HeadSpec {
  // After global average pooling and `norm`:
  //   "linear": head.fc;  "mlp": head.fc.{fc1, act, norm, fc2} (MetaFormer's MlpHead);
  //   "mambaout_mlp": head.pre_logits.{fc, act, norm}, head.fc (MambaOut's MlpHead);
  //   "norm_mlp": head.pre_logits.{fc, act}, head.fc (timm's ClNormMlpClassifierHead, MambaOut _rw).
  // "token_norm_linear" (isotropic models): `norm` on every token, then pooling, then `head`.
  std::string type = "mlp";
  NormSpec norm{"layer_norm", 1e-6, true};      // after global pooling
  double mlp_ratio = 4.0;
  std::string act = "squared_relu";
  NormSpec mlp_norm{"layer_norm", 1e-6, true};
  // Series models (docs/sequences.md), no norm: "forecast": a linear map of each sequence's flattened
  // tokens to `horizon` future steps (per channel with independent channels; all channels at once
  // otherwise), output [B, horizon, in_chans]; "channel_mean_linear": the mean over each sequence's
  // tokens, the channels' means side by side, a linear classifier (PatchTSMixer's avg_pool head).
  int horizon = 0;
  bool series_head() const { return type == "forecast" || type == "channel_mean_linear"; }
  bool operator==(const HeadSpec&) const = default;
};

// Evaluation preprocessing (timm's pretrained_cfg).
struct InputSpec {
  int size = 224;
  double crop_pct = 1.0;
  std::string interpolation = "bicubic";
  std::string crop_mode = "center";
  std::vector<float> mean{0.485f, 0.456f, 0.406f};  // one per input channel
  std::vector<float> std{0.229f, 0.224f, 0.225f};
  bool operator==(const InputSpec&) const = default;
};

// A 1-D MetaFormer's input (docs/sequences.md): tokens laid out as a 1 × L grid ([B, 1, L, C],
// channels-last), so that every layer, mixer and tool works on them unchanged. `input` empty: an
// image model.
struct SequenceSpec {
  std::string input;            // "", "tokens" (ids through stem.embed) or "series" (stem.proj patches)
  int vocab_size = 0;           // tokens: ids are integers in [0, vocab_size)
  int length = 0;               // nominal input length (ids, or time steps); with learned positions the longest
  int patch_size = 1;           // series: each token is a linear map of patch_size steps × in_chans,
  int patch_stride = 1;         //   patches patch_stride steps apart (PatchTST's strided patching)
  std::string position = "none";  // "none", "learned" (stem.pos_embed [tokens, dim]) or "sinusoidal"
  // series: "mixed" (one token per patch of all channels) or "independent" (PatchTST/PatchTSMixer:
  // each channel's patches are a sequence of their own, folded into the batch: [B·C, 1, N, dim]).
  std::string channels = "mixed";
  // series: "none" or "std" (PatchTSMixer's std scaler: each channel of each sample standardised by
  // its mean and sqrt(variance + 1e-5) over the context; a forecast is mapped back with them).
  std::string scaling = "none";
  bool independent_channels() const { return channels == "independent"; }
  bool enabled() const { return !input.empty(); }
  // Tokens made from `steps` input steps (for ids, one each).
  int64_t tokens(int64_t steps) const {
    return input == "series" ? (steps - patch_size) / patch_stride + 1 : steps;
  }
  bool operator==(const SequenceSpec&) const = default;
};

// AFFNet (microsoft/TokenMixers, "Adaptive Frequency Filters"): a MobileViT-v2-style network of
// inverted residual (MobileNetV2) layers and AFF blocks, built by layout "affnet" (model/affnet.h).
struct AffNetLayer {
  bool aff = false;  // an AFF layer (a stride-2 inverted residual, then an AFF block); else inverted residuals
  int out = 0;       // out_channels (= transformer_channels)
  int blocks = 1;    // num_blocks of inverted residuals, or transformer_blocks of the AFF block
  int stride = 1;
  int ffn = 0;       // AFF layers: ffn_dim
  bool operator==(const AffNetLayer&) const = default;
};
struct AffNetSpec {
  // The authors' modes: "xx_small" (AFFNet-ET), "x_small" (-T), "small" (AFFNet); or "custom", with
  // the five layers and the expansion ratio given here (small test models in the same format).
  std::string mode = "small";
  double expand_ratio = 4;          // custom: mv2_exp_mult
  std::vector<AffNetLayer> layers;  // custom: layer_1 .. layer_5
  // The norm of the AFF blocks' global branch (norm1, norm2 and the norm after them): cvnets'
  // layer_norm_2d (GroupNorm with one group, eps 1e-5) or batch_norm.
  NormSpec attn_norm{"group_norm1", 1e-5, true};
  std::string act = "silu";  // every activation, the filter's too (cvnets' model.activation.name: swish)
  bool operator==(const AffNetSpec&) const = default;
};

struct MetaFormerConfig {
  std::string name = "custom";
  int in_chans = 3;
  int num_classes = 1000;
  std::vector<int> depths;
  std::vector<int> dims;
  std::vector<MixerSpec> mixers;   // one per stage
  std::vector<NormSpec> norms;     // block norms, one per stage
  // The block's structure and child names (see model/metaformer.h):
  //   "metaformer": norm1, token_mixer, layer_scale1, res_scale1, norm2, mlp, layer_scale2, res_scale2
  //   "mambaout":   norm, the mixer's own layers directly in the block, ls (one residual branch)
  //   "mlp_mixer":  norm1, mlp_tokens, norm2, mlp_channels
  //   "resmlp":     norm1, linear_tokens, ls1, norm2, mlp_channels, ls2
  //   "gmlp":       norm, mlp_channels (one residual branch)
  //   "mamba":      norm, mixer (one residual branch: transformers' MambaBlock)
  std::string block = "metaformer";
  // "hierarchical": stem, stages.{s}.{downsample, blocks.{b}}, head.  "isotropic" (MLP-Mixer family):
  // one stage without downsampling: stem, blocks.{b}, norm, head.  "affnet": the authors' AFFNet
  // (conv_1, layer_1 .. layer_5, conv_1x1_exp, classifier.fc), described by `affnet` alone.
  // "raftmlp" (RaftMLP) and "msmlp" (MS-MLP): the authors' own module trees (model/custom_layouts.h);
  // RaftMLP reads its raft sizes from the "raft" mixers and its embeddings from embed_kernels, MS-MLP
  // its stem, downsampling, gamma and mixers from the usual fields. "stripmlp" (Strip-MLP): `strip`
  // mixers, stem (the patch size) and downsampling (2×2) convs, mlp_ratio (the authors' alpha), the
  // channel mixing's LayerNorm in norms, the final BatchNorm in head.norm. "casvit" (CAS-ViT, the
  // authors' RCViT): `additive` mixers, a two_conv stem, norm_after downsampling, BatchNorms in norms.
  std::string layout = "hierarchical";
  AffNetSpec affnet;  // layout "affnet" only
  // RaftMLP only: per stage, the kernel sizes of the cross-scale patch embedding; the first is the
  // patch size (the stride), as in the authors' configs ([[4, 8], [2, 4], [2, 4], [2]]).
  std::vector<std::vector<int>> embed_kernels;
  std::string mlp_act = "starrelu";
  bool mlp_bias = false;
  double mlp_ratio = 4.0;
  bool mlp_glu = false;  // timm's GluMlp (gMixer): fc2 reads x1 ⊙ act(x2)
  // "mlp": {"mixer": ...}: a registered mixer in the MLP's place (a channel mixer such as
  // "channel_scan", MambaMixer's); empty type: the MLP.
  MixerSpec mlp_mixer;
  bool mlp_gate = false;  // PatchTSMixer's gated attention after the MLP: y ⊙ softmax(mlp.gate(y)) over channels
  std::vector<std::optional<double>> layer_scale_init;  // per stage; empty optional = no layer scale
  std::vector<std::optional<double>> res_scale_init;    // per stage; empty optional = no res scale
  ConvSpec stem{7, 4, 2, std::nullopt};
  ConvSpec downsample{3, 2, 1, std::nullopt};
  HeadSpec head;
  InputSpec input;
  double drop_path_rate = 0.0;  // training only
  SequenceSpec sequence;         // set: a 1-D MetaFormer over sequences (isotropic or hierarchical)

  size_t num_stages() const { return depths.size(); }
  bool isotropic() const { return layout == "isotropic"; }
  bool is_sequence() const { return sequence.enabled(); }
  // The stages' downsampling convolution: downsample's square kernel, stride and padding over an
  // image; over a sequence (a 1 × L grid) the same numbers along the sequence only.
  ConvGeometry downsample_geometry() const {
    const ConvSpec& d = downsample;
    if (is_sequence()) return {1, d.kernel_size, 1, d.stride, 0, d.padding};
    return {d.kernel_size, d.kernel_size, d.stride, d.stride, d.padding, d.padding};
  }
  bool is_affnet() const { return layout == "affnet"; }
  // The authors' module trees rather than the MetaFormer's (RaftMLP, MS-MLP).
  bool custom_layout() const {
    // model/raftmlp.cpp, msmlp.cpp, stripmlp.cpp, casvit.cpp, wavemix.cpp, iformer.cpp
    return layout == "raftmlp" || layout == "msmlp" || layout == "stripmlp" || layout == "casvit" ||
           layout == "wavemix" || layout == "iformer";
  }
  // Blocks with a second residual branch (the channel MLP); "mambaout" and "gmlp" have one.
  bool has_mlp_branch() const { return block != "mambaout" && block != "gmlp" && block != "mamba"; }
  // Throws mf::Error describing the first inconsistency.
  void validate() const;
  bool operator==(const MetaFormerConfig&) const = default;
};

// Parses and validates a JSON model description. `what` names the source in error messages.
MetaFormerConfig parse_config(const std::string& json_text, const std::string& what);
MetaFormerConfig load_config(const std::string& path);
nlohmann::json config_to_json(const MetaFormerConfig& c);

// "layer_norm", "layer_norm_nobias", "group_norm1", "group_norm1_nobias" with timm's eps, and
// "affine" (ResMLP).
NormSpec norm_from_name(const std::string& name);

// An AFFNet of one of the authors' modes ("xx_small", "x_small", "small"), layout "affnet", with
// cvnets' preprocessing (model/affnet.h builds it).
MetaFormerConfig affnet_description(const std::string& name, const std::string& mode);

}  // namespace mf
