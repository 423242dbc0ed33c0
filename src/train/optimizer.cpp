#include "train/optimizer.h"

#include <cmath>

#include "core/error.h"
#include "ops/ops.h"

namespace mf {

namespace {
// The optimizer runs where the parameters live: the cpu backend for host tensors, cuda for GPU ones.
Exec exec_on(Device d) { return Exec{&get_backend(d == Device::CUDA ? "cuda" : "cpu"), nullptr}; }
}  // namespace

AdamW::AdamW(Module& model, AdamWOptions options) : options_(options) {
  for (auto& [name, p] : model.named_parameters()) {
    if (!p->trainable) continue;
    params_.emplace_back(name, p);
    exp_avg_.push_back(Tensor::zeros(p->value.shape()).to(p->value.device()));
    exp_avg_sq_.push_back(Tensor::zeros(p->value.shape()).to(p->value.device()));
  }
}

Device AdamW::device() const { return params_.empty() ? Device::CPU : params_.front().second->value.device(); }

namespace {
// Each gradient's slot in the flat buffer starts at a multiple of 64 floats (256 bytes, the device
// pool's alignment). Packed back to back, a parameter of one element (StarReLU's scale and bias) left
// every later gradient at a 4-byte boundary, and the GEMMs that accumulate a weight's gradient in its
// slot got cuBLASLt kernels for 4-byte-aligned operands (sm80 CUTLASS "align2" ones: 7 % of a
// convformer_s18 training step's kernel time, H100, 2026-12-06). The gaps stay zero.
constexpr int64_t kGradientSlotAlignment = 64;
int64_t slot_size(int64_t n) { return (n + kGradientSlotAlignment - 1) / kGradientSlotAlignment * kGradientSlotAlignment; }
}  // namespace

bool AdamW::gradients_are_views() const {
  if (!flat_grads_.defined() || flat_grads_.device() != device()) return false;
  const float* at = flat_grads_.data();  // compared as addresses only (a device's are not read here)
  for (const auto& [name, p] : params_) {
    if (!p->grad.defined() || p->grad.device() != flat_grads_.device() || p->grad.data() != at) return false;
    at += slot_size(p->value.numel());
  }
  return true;
}

void AdamW::zero_grad() {
  if (params_.empty()) return;
  if (!gradients_are_views()) {
    int64_t total = 0;
    for (const auto& [name, p] : params_) total += slot_size(p->value.numel());
    flat_grads_ = Tensor::empty({total}, device());
    int64_t at = 0;
    for (auto& [name, p] : params_) {
      const int64_t n = p->value.numel();
      p->grad = flat_grads_.slice0(at, at + n).reshape(p->value.shape());
      at += slot_size(n);
    }
  }
  flat_grads_.zero();
}

double AdamW::grad_norm() const {
  std::vector<const Tensor*> grads;
  for (auto& [name, p] : params_)
    if (p->grad.defined()) grads.push_back(&p->grad);
  return std::sqrt(op::sum_of_squares(exec_on(device()), grads));
}

double AdamW::clip_grad_norm(double max_norm) {
  const double norm = grad_norm();
  // torch: clip_coef = max_norm / (total_norm + 1e-6), applied when below 1.
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    std::vector<Tensor*> grads;
    for (auto& [name, p] : params_)
      if (p->grad.defined()) grads.push_back(&p->grad);
    op::scale_(exec_on(device()), grads, coef);
  }
  return norm;
}

void AdamW::step(double lr) {
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  AdamWScalars s;
  s.decay_factor = static_cast<float>(1.0 - lr * options_.weight_decay);
  s.one_minus_beta1 = static_cast<float>(1.0 - b1);
  s.beta2 = static_cast<float>(b2);
  s.one_minus_beta2 = static_cast<float>(1.0 - b2);
  s.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(b2, static_cast<double>(steps_))));
  s.eps = static_cast<float>(options_.eps);
  s.step_size = static_cast<float>(lr / (1.0 - std::pow(b1, static_cast<double>(steps_))));
  std::vector<AdamWTensors> tensors;
  tensors.reserve(params_.size());
  for (size_t k = 0; k < params_.size(); ++k) {
    Parameter* p = params_[k].second;
    MF_CHECK(p->grad.defined(), "optimizer step before any backward pass ({})", params_[k].first);
    tensors.push_back({&p->value, &p->grad, &exp_avg_[k], &exp_avg_sq_[k], p->decay});
  }
  // The same sequence of float32 operations as torch's single-tensor AdamW (Backend::adamw_step).
  op::adamw_step(exec_on(device()), tensors, s);
}

void AdamW::save_state(std::vector<SafeTensorEntry>& out, const std::string& prefix) const {
  for (size_t k = 0; k < params_.size(); ++k) {
    out.push_back({prefix + params_[k].first + ".exp_avg", exp_avg_[k].to(Device::CPU), {}, {}});
    out.push_back({prefix + params_[k].first + ".exp_avg_sq", exp_avg_sq_[k].to(Device::CPU), {}, {}});
  }
  out.push_back({prefix + "step", Tensor(), {steps_}, Shape{1}});
}

void AdamW::load_state(const SafeTensors& file, const std::string& prefix) {
  for (size_t k = 0; k < params_.size(); ++k) {
    for (auto [suffix, t] : {std::pair{".exp_avg", &exp_avg_[k]}, std::pair{".exp_avg_sq", &exp_avg_sq_[k]}}) {
      const std::string key = prefix + params_[k].first + suffix;
      MF_CHECK(file.contains(key), "{}: optimizer state lacks {}", file.what(), key);
      Tensor s = file.load(key);
      MF_CHECK(s.shape() == t->shape(), "{}: {} has shape {}, expected {}", file.what(), key, s.shape().str(),
               t->shape().str());
      t->copy_from(s);
    }
  }
  const auto step = file.load_int(prefix + "step");
  MF_CHECK(step.size() == 1 && step[0] >= 0, "{}: bad optimizer step", file.what());
  steps_ = step[0];
}

}  // namespace mf
