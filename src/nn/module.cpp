#include "nn/module.h"

#include <cmath>

#include "core/rng.h"

namespace mf {

Tensor Module::forward(Ctx&, const Tensor&) { fail("{} has no single-input forward", kind()); }
Tensor Module::backward(Ctx&, const Tensor&) { fail("{} has no backward pass", kind()); }

Tensor Module::run(Ctx& ctx, const Tensor& x) {
  Tensor y = forward(ctx, x);
  if (ctx.on_output && !path_.empty()) ctx.on_output(path_, y);
  return y;
}

Tensor Module::run_owned(Ctx& ctx, Tensor x) {
  Tensor y = forward_owned(ctx, std::move(x));
  if (ctx.on_output && !path_.empty()) ctx.on_output(path_, y);
  return y;
}

namespace {
// An empty name joins nothing: a child registered as "" puts its parameters directly under its
// parent (MambaOut's `blocks.0.fc1` is the gated-CNN mixer's fc1), and a parameter named "" is
// named by its module alone (ResMLP's bare `blocks.0.ls1`).
std::string join(const std::string& prefix, const std::string& name) {
  if (prefix.empty()) return name;
  return name.empty() ? prefix : prefix + "." + name;
}
}  // namespace

void Module::assign_paths(const std::string& prefix) {
  path_ = prefix;
  for (auto& [name, child] : children_) child->assign_paths(join(prefix, name));
}

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, Parameter*>>& out) {
  for (auto& [name, p] : params_) out.emplace_back(join(prefix, name), p.get());
  for (auto& [name, child] : children_) child->collect(join(prefix, name), out);
}

std::vector<std::pair<std::string, Parameter*>> Module::named_parameters() {
  std::vector<std::pair<std::string, Parameter*>> out;
  collect("", out);
  return out;
}

std::vector<std::pair<std::string, const Parameter*>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Parameter*>> tmp;
  const_cast<Module*>(this)->collect("", tmp);
  return {tmp.begin(), tmp.end()};
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, p] : named_parameters())
    if (!p->buffer) n += p->value.numel();
  return n;
}

void Module::all_ops(std::set<OpKind>& ops) const {
  collect_ops(ops);
  for (auto& [name, child] : children_) child->all_ops(ops);
}

Parameter& Module::add_param(const std::string& name, const Shape& shape, Init init, bool decay) {
  auto p = std::make_unique<Parameter>();
  p->value = Tensor::zeros(shape);
  p->init = init;
  p->decay = decay;
  Parameter& ref = *p;
  params_.emplace_back(name, std::move(p));
  return ref;
}

Parameter& Module::add_buffer(const std::string& name, const Shape& shape, Init init, bool integer) {
  Parameter& p = add_param(name, shape, init, false);
  p.trainable = false;
  p.buffer = true;
  p.integer = integer;
  return p;
}

void move_parameters(Module& root, Device device) {
  for (auto& [name, p] : root.named_parameters()) {
    p->value = p->value.to(device);
    if (p->grad.defined()) p->grad = p->grad.to(device);
  }
}

void add_on_host(Tensor& t, const std::function<void(float*)>& update) {
  if (t.device() == Device::CPU) {
    update(t.data());
    return;
  }
  Tensor host = t.to(Device::CPU);
  update(host.data());
  t.copy_from(host);
}

Tensor zeros_on(const Shape& shape, Device device) {
  Tensor t = Tensor::empty(shape, device);
  t.zero();
  return t;
}

void initialize_parameters(Module& root, uint64_t seed) {
  for (auto& [name, p] : root.named_parameters()) {
    Rng rng(seed ^ hash_string(name));
    Tensor& t = p->value;
    float* d = t.data();
    const int64_t n = t.numel();
    switch (p->init.kind) {
      case Init::Kind::Zeros: t.fill(0.f); break;
      case Init::Kind::Ones: t.fill(1.f); break;
      case Init::Kind::Constant: t.fill(p->init.value); break;
      case Init::Kind::TruncNormal:
        // timm's trunc_normal_(std=0.02) truncates at ±2 (absolute), i.e. ±100 std: redraw outside.
        for (int64_t i = 0; i < n; ++i) {
          float v;
          do v = rng.normal() * p->init.value;
          while (v < -2.f || v > 2.f);
          d[i] = v;
        }
        break;
      case Init::Kind::Identity: {
        MF_ASSERT(t.ndim() == 2 && t.dim(0) == t.dim(1));
        t.fill(0.f);
        for (int64_t i = 0; i < t.dim(0); ++i) d[i * t.dim(0) + i] = 1.f;
        break;
      }
      case Init::Kind::LogColumnIndex: {
        MF_ASSERT(t.ndim() == 2);
        for (int64_t i = 0; i < n; ++i) d[i] = std::log(static_cast<float>(i % t.dim(1) + 1));
        break;
      }
      case Init::Kind::RowSoftmaxUniform: {
        MF_ASSERT(t.ndim() == 2);
        const int64_t rows = t.dim(0), cols = t.dim(1);
        for (int64_t r = 0; r < rows; ++r) {
          double sum = 0;
          for (int64_t c = 0; c < cols; ++c) sum += (d[r * cols + c] = std::exp(rng.uniform()));
          for (int64_t c = 0; c < cols; ++c) d[r * cols + c] = static_cast<float>(d[r * cols + c] / sum);
        }
        break;
      }
    }
    t.bump_version();
  }
}

}  // namespace mf
