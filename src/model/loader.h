// Loading and saving weights by timm's state-dict keys.
//
// Loading is strict: every parameter of the model must be in the file with exactly the model's
// shape, and every tensor of the file must belong to the model; otherwise one error names every
// missing, unexpected and mis-shaped tensor with both shapes. Checkpoints in the original sail-sg
// naming (PoolFormer, MetaFormer Baselines) are recognised and renamed with timm's rules first.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "io/safetensors.h"
#include "nn/module.h"

namespace mf {

struct LoadOptions {
  // Parameters (by name prefix) that may be absent or mis-shaped and are then left as initialised:
  // used to fine-tune with a new classifier. Reported through LoadResult::skipped.
  std::vector<std::string> reinit_prefixes;
  // A grey (1-channel) model takes an RGB checkpoint's first convolution summed over its input
  // channels, as timm's adapt_input_conv does.
  bool adapt_input_channels = false;
};

struct LoadResult {
  int loaded = 0;
  bool renamed_from_original = false;  // the sail-sg naming was detected and converted
  std::vector<std::string> skipped;    // parameters left as initialised (reinit_prefixes)
  std::vector<std::string> notes;      // adaptations made (adapt_input_channels)
};

LoadResult load_weights(Module& model, const SafeTensors& file, const LoadOptions& options = {});
void save_weights(Module& model, const std::string& path, const std::map<std::string, std::string>& metadata = {});

// timm's checkpoint_filter_fn for metaformer.py, as a pure renaming of keys (spec section 9.3).
// Returns the key unchanged when `original_poolformer` is false and nothing applies.
std::string original_to_timm_key(const std::string& key, bool original_poolformer);

// Reads the number of classes of a checkpoint's classifier (head.fc.weight or head.fc.fc2.weight,
// in timm or original naming), or 0 when none is found.
int checkpoint_num_classes(const SafeTensors& file);

// A ready model from a description and a weights file: with `weights` empty, seeded random weights;
// otherwise the file's, with the classifier sized as the checkpoint's (ImageNet-22k: 21841) unless
// `keep_num_classes` says the caller fixed it. The CLI and the C API both build models this way.
class MetaFormer;
struct MetaFormerConfig;
std::unique_ptr<MetaFormer> build_model(MetaFormerConfig config, const std::string& weights, uint64_t seed,
                                        bool keep_num_classes);

}  // namespace mf
