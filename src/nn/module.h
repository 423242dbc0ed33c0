// The module tree: every layer is a Module with named parameters and named children, exactly like
// a torch.nn.Module, so that the dotted path of every parameter is its timm state-dict key
// ("stages.2.blocks.0.token_mixer.qkv.weight"). One description of a model builds this tree, and
// the tree alone drives parameter naming, loading, saving, initialisation and counting.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "ops/ops.h"

namespace mf {

// How a parameter is initialised for training from scratch (and for random-weight benchmarks).
struct Init {
  enum class Kind { Zeros, Ones, Constant, TruncNormal, RowSoftmaxUniform, Identity, LogColumnIndex } kind = Kind::Zeros;
  float value = 0.f;  // the constant, or the standard deviation of TruncNormal
  static Init zeros() { return {Kind::Zeros, 0.f}; }
  static Init ones() { return {Kind::Ones, 1.f}; }
  static Init constant(float v) { return {Kind::Constant, v}; }
  static Init trunc_normal(float std) { return {Kind::TruncNormal, std}; }
  // RandFormer's token matrix: softmax over each row of a U[0, 1) matrix.
  static Init row_softmax_uniform() { return {Kind::RowSoftmaxUniform, 0.f}; }
  static Init identity() { return {Kind::Identity, 1.f}; }  // a square matrix's identity
  // t[r, c] = log(c + 1): Mamba's S4D-real A_log (A = -(1, 2, ..., N) in every channel).
  static Init log_column_index() { return {Kind::LogColumnIndex, 0.f}; }
};

struct Parameter {
  Tensor value;
  Tensor grad;             // allocated by the trainer
  Init init;
  bool trainable = true;   // false: kept and saved, never updated (RandFormer's matrix)
  bool decay = true;       // weight decay applies (timm: not to 1-D tensors: norms, biases, scales)
  // A buffer (BatchNorm's running statistics): in the state dict, but not a parameter: not
  // trainable, not counted by num_parameters(), updated by the module's own training forward.
  bool buffer = false;
  // An integer buffer (num_batches_tracked): held as float (exact to 2^24), saved as I64 as PyTorch
  // does, loaded from an integer or a float tensor.
  bool integer = false;
};

class Rng;

// Everything a forward pass needs besides its input.
//
// Training: with `training` set, every module keeps what its backward pass needs (its input, and
// for blocks the branch outputs) until backward() consumes it, and stochastic layers (drop path)
// draw from `rng`.
class Module;

struct Ctx {
  Exec exec;
  bool training = false;
  Rng* rng = nullptr;
  // Called with (module path, output) after every module that has a path, when set: lets tools
  // and tests compare any intermediate with timm's (named exactly as timm's modules).
  std::function<void(const std::string&, const Tensor&)> on_output;
  // Called during backward with a module whose backward has just returned (the children of a
  // Sequential, the classifier head), when set: from then on its parameters' gradients are final,
  // so a data-parallel run can start averaging them while the rest of the backward runs
  // (train/grad_buckets.h).
  std::function<void(const Module&)> on_backward_done;
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The class name shown by `metaformer info` (timm's class name where there is one).
  virtual std::string kind() const = 0;
  // A short description of the configuration, e.g. "64 -> 128, bias".
  virtual std::string describe() const { return ""; }
  // Input and output are channels-last; see each subclass.
  virtual Tensor forward(Ctx& ctx, const Tensor& x);
  // Given d(loss)/d(output) of the last training-mode forward, returns d(loss)/d(input) and
  // accumulates d(loss)/d(parameter) into each trainable parameter's `grad` (when allocated).
  // Releases what forward kept.
  virtual Tensor backward(Ctx& ctx, const Tensor& dy);
  // Ops this module runs itself (not its children's): checked against the backend at load time.
  virtual void collect_ops(std::set<OpKind>& ops) const {}

  // forward() followed by the output hook.
  Tensor run(Ctx& ctx, const Tensor& x);
  // forward() for a caller that hands its input over: a module that is done with its input before
  // it is done (a block's first residual half) may drop it, so that a pass holds one stream of
  // activations fewer (docs/design.md, "Memory"). The default keeps it to the end, as forward does.
  virtual Tensor forward_owned(Ctx& ctx, Tensor x) { return forward(ctx, x); }
  // forward_owned() followed by the output hook.
  Tensor run_owned(Ctx& ctx, Tensor x);

  const std::string& path() const { return path_; }
  // Sets the dotted path of this module and all its descendants (call once on the root).
  void assign_paths(const std::string& prefix = "");

  // Depth-first, registration order (= timm's state-dict order).
  std::vector<std::pair<std::string, Parameter*>> named_parameters();
  std::vector<std::pair<std::string, const Parameter*>> named_parameters() const;
  const std::vector<std::pair<std::string, std::unique_ptr<Module>>>& children() const { return children_; }
  const std::vector<std::pair<std::string, std::unique_ptr<Parameter>>>& parameters() const { return params_; }
  int64_t num_parameters() const;
  void all_ops(std::set<OpKind>& ops) const;

 protected:
  Parameter& add_param(const std::string& name, const Shape& shape, Init init, bool decay);
  // A buffer (see Parameter::buffer): not trainable, no weight decay.
  Parameter& add_buffer(const std::string& name, const Shape& shape, Init init, bool integer = false);
  template <typename T>
  T* add_child(const std::string& name, std::unique_ptr<T> child) {
    T* raw = child.get();
    children_.emplace_back(name, std::move(child));
    return raw;
  }
  // Tensors a forward pass reads: the current value of a parameter.
  static const Tensor& v(const Parameter* p) { return p->value; }
  static const Tensor* opt(const Parameter* p) { return p ? &p->value : nullptr; }
  // Where backward accumulates a parameter's gradient, or null when it needs none.
  static Tensor* grad_of(Parameter* p) { return p && p->trainable && p->grad.defined() ? &p->grad : nullptr; }

 private:
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Parameter*>>& out);
  std::vector<std::pair<std::string, std::unique_ptr<Parameter>>> params_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
  std::string path_;
};

// Fills every parameter from its Init, deterministically from `seed` and the parameter's name
// (so adding a parameter never changes the values drawn for the others).
void initialize_parameters(Module& root, uint64_t seed);
// Moves every parameter and buffer (and any gradient) of the tree to `device`: training on a GPU
// keeps the weights there, so the optimizer updates them in place and nothing is uploaded per step.
// Loading (model/loader.h) copies into the tensors wherever they are; saving takes host copies.
void move_parameters(Module& root, Device device);

// A few modules rearrange a small parameter on the host each step (AFF's block-diagonal complex
// weights, MS-MLP's padded kernels, Strip-MLP's position table). On a GPU run the parameter and
// its gradient live on the device, where host code may not dereference them, so they read it
// through to(Device::CPU), send what they build back with to(device), and add the gradient they
// fold on the host with add_on_host: `update` gets the tensor's elements on the host, and the
// result is written back when the tensor lives elsewhere. Costs a small copy each way per step.
void add_on_host(Tensor& t, const std::function<void(float*)>& update);
// A zero fp32 tensor on `device`.
Tensor zeros_on(const Shape& shape, Device device);

}  // namespace mf
