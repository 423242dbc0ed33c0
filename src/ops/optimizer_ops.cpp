// The optimizer's ops on the host (Backend's defaults, which the ref and cpu backends use) and their
// dispatcher entries (ops.h). The cuda backend's versions are in ops/cuda/cuda_optimizer.cpp.
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "ops/ops.h"
#include "ops/timed.h"

namespace mf {

namespace {
void check_host(const Tensor& t, const char* what) {
  MF_CHECK(t.device() == Device::CPU && t.dtype() == DType::f32, "{}: a host backend got a {} {} tensor", what,
           device_name(t.device()), dtype_name(t.dtype()));
}
}  // namespace

void Backend::adamw_step(const std::vector<AdamWTensors>& tensors, const AdamWScalars& s) {
  for (const AdamWTensors& t : tensors) {
    for (const Tensor* x : {static_cast<const Tensor*>(t.weight), t.grad, static_cast<const Tensor*>(t.exp_avg),
                            static_cast<const Tensor*>(t.exp_avg_sq)})
      check_host(*x, "adamw_step");
    float* w = t.weight->data();
    const float* g = t.grad->data();
    float* m = t.exp_avg->data();
    float* v = t.exp_avg_sq->data();
    const float decay = t.decay ? s.decay_factor : 1.f;
    const int64_t n = t.weight->numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      w[i] *= decay;
      m[i] += (g[i] - m[i]) * s.one_minus_beta1;  // lerp(m, g, 1 - beta1)
      v[i] = v[i] * s.beta2 + g[i] * g[i] * s.one_minus_beta2;
      const float denom = std::sqrt(v[i]) / s.bias_correction2_sqrt + s.eps;
      w[i] -= s.step_size * (m[i] / denom);
    }
  }
}

double Backend::sum_of_squares(const std::vector<const Tensor*>& tensors) {
  double sq = 0;
  for (const Tensor* t : tensors) {
    check_host(*t, "sum_of_squares");
    for (float g : t->span()) sq += static_cast<double>(g) * g;
  }
  return sq;
}

void Backend::scale_(const std::vector<Tensor*>& tensors, double factor) {
  for (Tensor* t : tensors) {
    check_host(*t, "scale_");
    for (float& g : t->span()) g = static_cast<float>(g * factor);
  }
}

void Backend::ema_update(const std::vector<Tensor*>& avg, const std::vector<const Tensor*>& w,
                         const std::vector<bool>& copy, float decay, float one_minus_decay) {
  for (size_t k = 0; k < avg.size(); ++k) {
    check_host(*avg[k], "ema_update");
    check_host(*w[k], "ema_update");
    float* s = avg[k]->data();
    const float* x = w[k]->data();
    const int64_t n = avg[k]->numel();
    if (copy[k]) {
      for (int64_t i = 0; i < n; ++i) s[i] = x[i];
      continue;
    }
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) s[i] = s[i] * decay + x[i] * one_minus_decay;
  }
}

void Backend::allreduce_mean(const std::vector<Tensor*>&, const RankGroup&) {
  fail("the {} backend has no all-reduce across ranks in this build", name());
}

void Backend::allreduce_mean_start(Tensor& t, const RankGroup& group) { allreduce_mean({&t}, group); }

namespace op {

namespace {
// The optimizer's tensors must all live where the backend computes, in fp32, with matching shapes.
void check_on(const Exec& e, const Tensor& t, const Tensor& like, OpKind op) {
  MF_CHECK(t.defined() && t.shape() == like.shape(), "{}: a tensor of shape {} beside one of {}", op_name(op),
           t.defined() ? t.shape().str() : "(none)", like.shape().str());
  MF_CHECK(t.device() == e.backend->device() && t.dtype() == DType::f32,
           "{}: the {} backend cannot update a {} {} tensor", op_name(op), e.backend->name(), device_name(t.device()),
           dtype_name(t.dtype()));
}

}  // namespace

void adamw_step(const Exec& e, const std::vector<AdamWTensors>& tensors, const AdamWScalars& s) {
  for (const AdamWTensors& t : tensors) {
    check_on(e, *t.weight, *t.weight, OpKind::AdamWStep);
    check_on(e, *t.grad, *t.weight, OpKind::AdamWStep);
    check_on(e, *t.exp_avg, *t.weight, OpKind::AdamWStep);
    check_on(e, *t.exp_avg_sq, *t.weight, OpKind::AdamWStep);
  }
  // Derived layouts are stale once the step is queued. The versions move first so that a backend that
  // rewrites a derived copy in the step itself (cuda: the weights' bf16 copies) can stamp it with the
  // new version (Tensor::derived_any_version, then set_derived).
  for (const AdamWTensors& t : tensors) t.weight->bump_version();
  Timed timed(e, OpKind::AdamWStep, 0);
  e.backend->adamw_step(tensors, s);
}

double sum_of_squares(const Exec& e, const std::vector<const Tensor*>& tensors) {
  for (const Tensor* t : tensors) check_on(e, *t, *t, OpKind::GradNorm);
  Timed timed(e, OpKind::GradNorm, 0);
  return e.backend->sum_of_squares(tensors);
}

void scale_(const Exec& e, const std::vector<Tensor*>& tensors, double factor) {
  for (const Tensor* t : tensors) check_on(e, *t, *t, OpKind::GradNorm);
  {
    Timed timed(e, OpKind::GradNorm, 0);
    e.backend->scale_(tensors, factor);
  }
  for (Tensor* t : tensors) t->bump_version();
}

void ema_update(const Exec& e, const std::vector<Tensor*>& avg, const std::vector<const Tensor*>& w,
                const std::vector<bool>& copy, double decay) {
  MF_CHECK(avg.size() == w.size() && copy.size() == w.size(), "ema_update: {} averages for {} tensors", avg.size(),
           w.size());
  for (size_t k = 0; k < avg.size(); ++k) {
    check_on(e, *avg[k], *avg[k], OpKind::EmaUpdate);
    check_on(e, *w[k], *avg[k], OpKind::EmaUpdate);
  }
  {
    Timed timed(e, OpKind::EmaUpdate, 0);
    e.backend->ema_update(avg, w, copy, static_cast<float>(decay), static_cast<float>(1.0 - decay));
  }
  for (Tensor* t : avg) t->bump_version();
}

}  // namespace op
}  // namespace mf
