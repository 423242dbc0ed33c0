// Op-harness cases of the optimizer's ops (adamw_step, sum_of_squares / scale_, ema_update): each
// runs over a list of tensors of awkward sizes (one element, an odd matrix, one that spans two of the
// cuda backend's 4 096-element chunks), and returns everything it updated, concatenated, so that the
// harness compares backends as for any op. No backward: they are not differentiated.
// Tolerances (docs/tolerances.md): the updates are a few float32 operations per element, which the
// host compiler may contract into fused multiply-adds and the GPU kernels do not: 1e-6. The sum of
// squares is accumulated in double in another order on the GPU, then rounded to float: 1e-7.
// Scaling is one double product rounded once, the same everywhere: exact.
#include <cmath>

#include "op_cases.h"

namespace mf::test {

namespace {

const std::vector<Shape> kShapes{Shape{1}, Shape{3, 7}, Shape{5000}};

// The inputs on the backend's device, as fresh tensors (the ops update them in place).
std::vector<Tensor> on_device(const Exec& e, const std::vector<Tensor>& in) {
  std::vector<Tensor> t;
  for (const Tensor& x : in) t.push_back(x.to(e.backend->device()).clone());
  return t;
}

// The listed tensors' elements, one after another, on the host.
Tensor concatenated(const std::vector<const Tensor*>& ts) {
  int64_t n = 0;
  for (const Tensor* t : ts) n += t->numel();
  Tensor out = Tensor::empty({n});
  int64_t at = 0;
  for (const Tensor* t : ts) {
    const Tensor h = t->to(Device::CPU);
    std::copy_n(h.data(), h.numel(), out.data() + at);
    at += h.numel();
  }
  return out;
}

}  // namespace

void add_optimizer_cases(std::vector<OpCase>& v) {
  // AdamW at its third step (lr 1e-3, weight decay 0.05 on the second tensor only): w, g, m, v per
  // tensor (v ≥ 0, as a second moment is).
  std::vector<OpInput> adam;
  for (const Shape& s : kShapes) {
    adam.push_back({s, -1.f, 1.f, false});
    adam.push_back({s, -1.f, 1.f, false});
    adam.push_back({s, -0.1f, 0.1f, false});
    adam.push_back({s, 0.f, 0.01f, false});
  }
  v.push_back({"adamw_step/[1]+[3, 7]+[5000]", OpKind::AdamWStep, 1e-6, adam,
               [](const Exec& e, const std::vector<Tensor>& in) {
                 std::vector<Tensor> t = on_device(e, in);
                 std::vector<AdamWTensors> ts;
                 for (size_t k = 0; k < t.size(); k += 4) ts.push_back({&t[k], &t[k + 1], &t[k + 2], &t[k + 3], k == 4});
                 const double lr = 1e-3;
                 AdamWScalars s{static_cast<float>(1 - lr * 0.05), 0.1f, 0.999f, 0.001f,
                                static_cast<float>(std::sqrt(1 - std::pow(0.999, 3))), 1e-8f,
                                static_cast<float>(lr / (1 - std::pow(0.9, 3)))};
                 op::adamw_step(e, ts, s);
                 std::vector<const Tensor*> out;
                 for (size_t k = 0; k < t.size(); k += 4) out.insert(out.end(), {&t[k], &t[k + 2], &t[k + 3]});
                 return concatenated(out);
               },
               nullptr});
  std::vector<OpInput> grads;
  for (const Shape& s : kShapes) grads.push_back({s, -1.f, 1.f, false});
  v.push_back({"sum_of_squares/[1]+[3, 7]+[5000]", OpKind::GradNorm, 1e-7, grads,
               [](const Exec& e, const std::vector<Tensor>& in) {
                 const std::vector<Tensor> t = on_device(e, in);
                 std::vector<const Tensor*> ts;
                 for (const Tensor& x : t) ts.push_back(&x);
                 return Tensor::full({1}, static_cast<float>(op::sum_of_squares(e, ts)));
               },
               nullptr});
  v.push_back({"scale_/[1]+[3, 7]+[5000]", OpKind::GradNorm, 0.0, grads,
               [](const Exec& e, const std::vector<Tensor>& in) {
                 std::vector<Tensor> t = on_device(e, in);
                 std::vector<Tensor*> ts;
                 for (Tensor& x : t) ts.push_back(&x);
                 op::scale_(e, ts, 0.3711);
                 return concatenated({&t[0], &t[1], &t[2]});
               },
               nullptr});
  // The EMA with decay 0.9998; the first tensor is a counter, copied.
  std::vector<OpInput> ema;
  for (const Shape& s : kShapes) {
    ema.push_back({s, -1.f, 1.f, false});
    ema.push_back({s, -1.f, 1.f, false});
  }
  v.push_back({"ema_update/[1]+[3, 7]+[5000]", OpKind::EmaUpdate, 1e-6, ema,
               [](const Exec& e, const std::vector<Tensor>& in) {
                 std::vector<Tensor> t = on_device(e, in);
                 std::vector<Tensor*> avg;
                 std::vector<const Tensor*> w;
                 for (size_t k = 0; k < t.size(); k += 2) {
                   avg.push_back(&t[k]);
                   w.push_back(&t[k + 1]);
                 }
                 op::ema_update(e, avg, w, {true, false, false}, 0.9998);
                 return concatenated({&t[0], &t[2], &t[4]});
               },
               nullptr});
}

}  // namespace mf::test
