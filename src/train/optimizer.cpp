#include "train/optimizer.h"

#include <cmath>

#include "core/error.h"

namespace mf {

AdamW::AdamW(Module& model, AdamWOptions options) : options_(options) {
  for (auto& [name, p] : model.named_parameters()) {
    if (!p->trainable) continue;
    params_.emplace_back(name, p);
    exp_avg_.push_back(Tensor::zeros(p->value.shape()));
    exp_avg_sq_.push_back(Tensor::zeros(p->value.shape()));
  }
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_) {
    if (!p->grad.defined()) p->grad = Tensor::empty(p->value.shape());
    p->grad.zero();
  }
}

double AdamW::grad_norm() const {
  double sq = 0;
  for (auto& [name, p] : params_) {
    if (!p->grad.defined()) continue;
    const float* g = p->grad.data();
    for (int64_t i = 0; i < p->grad.numel(); ++i) sq += static_cast<double>(g[i]) * g[i];
  }
  return std::sqrt(sq);
}

double AdamW::clip_grad_norm(double max_norm) {
  const double norm = grad_norm();
  // torch: clip_coef = max_norm / (total_norm + 1e-6), applied when below 1.
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0)
    for (auto& [name, p] : params_) {
      if (!p->grad.defined()) continue;
      for (float& g : p->grad.span()) g = static_cast<float>(g * coef);
    }
  return norm;
}

void AdamW::step(double lr) {
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(steps_));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(b2, static_cast<double>(steps_)));
  const float step_size = static_cast<float>(lr / bc1);
  for (size_t k = 0; k < params_.size(); ++k) {
    Parameter* p = params_[k].second;
    MF_CHECK(p->grad.defined(), "optimizer step before any backward pass ({})", params_[k].first);
    float* w = p->value.data();
    const float* g = p->grad.data();
    float* m = exp_avg_[k].data();
    float* v = exp_avg_sq_[k].data();
    const float decay = p->decay ? static_cast<float>(1.0 - lr * options_.weight_decay) : 1.f;
    const float fb1 = static_cast<float>(1.0 - b1), fb2 = static_cast<float>(b2), fb2c = static_cast<float>(1.0 - b2);
    const float fbc2 = static_cast<float>(bc2_sqrt), feps = static_cast<float>(options_.eps);
    const int64_t n = p->value.numel();
    // The same sequence of float32 operations as torch's single-tensor AdamW.
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      w[i] *= decay;
      m[i] += (g[i] - m[i]) * fb1;  // lerp(m, g, 1 - beta1)
      v[i] = v[i] * fb2 + g[i] * g[i] * fb2c;
      const float denom = std::sqrt(v[i]) / fbc2 + feps;
      w[i] -= step_size * (m[i] / denom);
    }
    p->value.bump_version();
  }
}

void AdamW::save_state(std::vector<SafeTensorEntry>& out, const std::string& prefix) const {
  for (size_t k = 0; k < params_.size(); ++k) {
    out.push_back({prefix + params_[k].first + ".exp_avg", exp_avg_[k], {}, {}});
    out.push_back({prefix + params_[k].first + ".exp_avg_sq", exp_avg_sq_[k], {}, {}});
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
