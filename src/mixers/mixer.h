// Token mixers: the plug-in of the MetaFormer block, x + mixer(norm(x)).
//
// A mixer is a Module that maps channels-last x [B, H, W, C] to the same shape. Each mixer lives in
// its own file in this folder and is added to the registry with one line in registry.cpp; a JSON
// model config then names it per stage, with options:
//   "mixers": ["sepconv", "sepconv", {"type": "attention", "head_dim": 32}, "attention"]
// See docs/adding-a-mixer.md.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "nn/module.h"

namespace mf {

class Norm;

class TokenMixer : public Module {
 public:
  // Inference: x ⊙ res_scale + layer_scale ⊙ this(norm(x)), the block's first half. By default the
  // norm, the mixer and the residual add in turn; a mixer whose kernel can absorb its norm and the
  // residual overrides this with one fused op (Pooling: op::pool_branch).
  virtual Tensor run_branch(Ctx& ctx, const Tensor& x, Norm& norm, const BranchScales& scales);
  // Training: x + ls ⊙ this(norm(x)) as one op that keeps neither the norm's nor the mixer's output,
  // where the backend folds layer scales (Backend::folds_layer_scales) and the mixer has such an op
  // (Pooling with GroupNorm: op::pool_branch). An undefined result means "not here": the caller runs
  // the modules in turn. After a defined one, the block's backward calls backward_scaled_branch
  // (not norm's nor this mixer's backward), which returns x's gradient, the skip's dy included, and
  // adds the norm's and the scale's gradients (dls where not null).
  virtual Tensor run_scaled_branch_train(Ctx& ctx, const Tensor& x, Norm& norm, const Tensor& ls);
  // Training: skip + this(n) where the backend fuses residuals into Linears
  // (Backend::fuses_residual_into_linear) and the mixer ends in a Linear, which then adds skip
  // (Linear::run_residual_train): the mixer's output is never written. Undefined means "not here":
  // the caller runs the mixer and the add in turn. The backward is the mixer's usual one (its dy is
  // the sum's).
  virtual Tensor run_residual_train(Ctx& ctx, const Tensor& n, const Tensor& skip);
  virtual Tensor backward_scaled_branch(Ctx& ctx, const Tensor& x, Norm& norm, const Tensor& ls, const Tensor& dy,
                                        Tensor* dls);
};

// What a mixer is built from.
struct MixerContext {
  int64_t dim = 0;     // channels of the stage
  int stage = 0;       // 0-based stage index
  int64_t height = 0;  // token grid at the model's nominal input size (for mixers tied to it)
  int64_t width = 0;
  nlohmann::json options = nlohmann::json::object();
};

// Reads a mixer's options and rejects the ones it does not know (typos must not pass silently).
class MixerOptions {
 public:
  MixerOptions(const std::string& mixer, const nlohmann::json& options);
  int64_t get_int(const std::string& key, int64_t fallback);
  double get_double(const std::string& key, double fallback);
  bool get_bool(const std::string& key, bool fallback);
  std::string get_string(const std::string& key, const std::string& fallback);
  std::vector<int> get_int_list(const std::string& key, const std::vector<int>& fallback);  // 1 to 64 integers
  void finish() const;  // throws if an option was never read

 private:
  const nlohmann::json* find(const std::string& key);
  std::string mixer_;
  const nlohmann::json& options_;
  std::set<std::string> used_;
};

struct MixerInfo {
  std::string name;
  std::string summary;  // one line for `metaformer info --mixers` and the README
  std::function<std::unique_ptr<TokenMixer>(const MixerContext&)> make;
};

class MixerRegistry {
 public:
  static MixerRegistry& get();  // the built-in mixers, registered in registry.cpp
  void add(MixerInfo info);
  const MixerInfo* find(const std::string& name) const;
  std::unique_ptr<TokenMixer> create(const std::string& name, const MixerContext& ctx) const;
  std::vector<const MixerInfo*> all() const;
  std::string names() const;  // "attention, identity, ..."

 private:
  std::vector<MixerInfo> mixers_;
};

}  // namespace mf
