// The `mix_shift` token mixer: MS-MLP's mix-and-shift (mixers/mix_shift.h). In a MetaFormer block it
// is the token-mixing branch; MS-MLP's own block (model/msmlp.cpp) applies it before its norm.
#include "mixers/mix_shift.h"

#include <memory>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "mixers/mixer.h"

namespace mf {

namespace {
// A parameter holder named like the authors' nn.Conv2d (its forward is MixShift's).
class DepthwiseParams : public Module {
 public:
  DepthwiseParams(int64_t channels, int kernel) {
    weight_ = &add_param("weight", {channels, 1, kernel, kernel}, Init::trunc_normal(0.02f), true);
    bias_ = &add_param("bias", {channels}, Init::zeros(), false);
  }
  std::string kind() const override { return "Conv2d"; }
  Parameter* weight_;
  Parameter* bias_;
};
}  // namespace

MixShift::MixShift(int64_t channels, std::vector<int> shifts, std::vector<int> kernels)
    : channels_(channels), shifts_(std::move(shifts)), kernels_(std::move(kernels)) {
  MF_CHECK(!shifts_.empty() && shifts_.size() == kernels_.size(),
           "mix_shift: {} shifts but {} kernel sizes (one of each per channel group)", shifts_.size(), kernels_.size());
  const auto n = static_cast<int64_t>(shifts_.size());
  group_width_ = (channels + n - 1) / n;  // torch.chunk
  const int64_t groups = (channels + group_width_ - 1) / group_width_;
  for (int k : kernels_) MF_CHECK(k >= 1 && k <= 31 && k % 2 == 1, "mix_shift: kernel size {} must be odd, 1 to 31", k);
  max_kernel_ = *std::max_element(kernels_.begin(), kernels_.begin() + groups);
  lr_.axis = 2;
  td_.axis = 1;
  for (auto [d, name] : {std::pair{&lr_, "dwconv_lr"}, std::pair{&td_, "dwconv_td"}})
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t width = std::min(group_width_, channels - g * group_width_);
      auto* p = add_child(fmt::format("{}.{}", name, g),
                          std::make_unique<DepthwiseParams>(width, kernels_[static_cast<size_t>(g)]));
      d->weights.push_back(p->weight_);
      d->biases.push_back(p->bias_);
    }
}

std::string MixShift::describe() const {
  return fmt::format("{} channels in groups of {}, shifts [{}], kernels [{}]", channels_, group_width_,
                     fmt::join(shifts_, ", "), fmt::join(kernels_, ", "));
}

void MixShift::collect_ops(std::set<OpKind>& ops) const {
  ops.insert(OpKind::SpatialShift);
  ops.insert(OpKind::DepthwiseConv2d);
  ops.insert(OpKind::ScaledResidual);
}

std::pair<Tensor, Tensor> MixShift::combined(const Direction& d) const {
  // Cached with the first weight, and remade when any of the direction's parameters changes: a pass
  // replayed as a CUDA graph must not copy between host and device (docs/cuda.md), and the combined
  // kernel only changes when an optimizer step does.
  struct Cached {
    std::string signature;
    Tensor w, b;
  };
  std::string signature;
  for (size_t g = 0; g < d.weights.size(); ++g)
    for (const Parameter* p : {d.weights[g], d.biases[g]})
      signature += p->value.version_key();
  const std::string key = d.axis == 2 ? "mix_shift.combined.lr" : "mix_shift.combined.td";
  const Tensor& anchor = v(d.weights[0]);
  if (auto c = std::static_pointer_cast<Cached>(anchor.derived(key)); c && c->signature == signature)
    return {c->w, c->b};
  const int K = max_kernel_;
  Tensor w = Tensor::zeros({channels_, 1, K, K}), b = Tensor::empty({channels_});
  int64_t c0 = 0;
  // Built on the host, placed where the parameters live (nn/module.h, add_on_host).
  for (size_t g = 0; g < d.weights.size(); ++g) {
    const Tensor wg = v(d.weights[g]).to(Device::CPU), bg = v(d.biases[g]).to(Device::CPU);
    const int64_t width = wg.dim(0), k = wg.dim(2), off = (K - k) / 2;
    for (int64_t c = 0; c < width; ++c) {
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j)
          w.data()[((c0 + c) * K + off + i) * K + off + j] = wg.data()[(c * k + i) * k + j];
      b.data()[c0 + c] = bg.data()[c];
    }
    c0 += width;
  }
  const Device device = v(d.weights[0]).device();
  auto c = std::make_shared<Cached>(Cached{signature, w.to(device), b.to(device)});
  anchor.set_derived(key, c);
  return {c->w, c->b};
}

void MixShift::scatter_grads(Direction& d, const Tensor& dw_any, const Tensor& db_any) {
  const int K = max_kernel_;
  const Tensor dw = dw_any.to(Device::CPU), db = db_any.to(Device::CPU);
  int64_t c0 = 0;
  for (size_t g = 0; g < d.weights.size(); ++g) {
    const int64_t width = v(d.weights[g]).dim(0), k = v(d.weights[g]).dim(2), off = (K - k) / 2;
    if (Tensor* gw = grad_of(d.weights[g]))
      add_on_host(*gw, [&](float* out) {
        for (int64_t c = 0; c < width; ++c)
          for (int64_t i = 0; i < k; ++i)
            for (int64_t j = 0; j < k; ++j) out[(c * k + i) * k + j] += dw.data()[((c0 + c) * K + off + i) * K + off + j];
      });
    if (Tensor* gb = grad_of(d.biases[g]))
      add_on_host(*gb, [&](float* out) {
        for (int64_t c = 0; c < width; ++c) out[c] += db.data()[c0 + c];
      });
    c0 += width;
  }
}

Tensor MixShift::forward(Ctx& ctx, const Tensor& x) {
  MF_CHECK(x.ndim() == 4 && x.dim(3) == channels_, "{}: expected [B, H, W, {}], got {}", path(), channels_,
           x.shape().str());
  const ConvGeometry g{max_kernel_, max_kernel_, 1, 1, max_kernel_ / 2, max_kernel_ / 2};
  auto branch = [&](const Direction& d) {
    auto [w, b] = combined(d);
    return op::depthwise_conv2d(ctx.exec, op::spatial_shift(ctx.exec, x, d.axis, group_width_, shifts_), w, &b, g);
  };
  Tensor lr = branch(lr_);
  if (ctx.training) saved_x_ = x;
  return op::scaled_residual(ctx.exec, lr, nullptr, branch(td_), nullptr);
}

Tensor MixShift::backward(Ctx& ctx, const Tensor& dy) {
  MF_CHECK(saved_x_.defined(), "{}: backward without a training forward", path());
  const ConvGeometry g{max_kernel_, max_kernel_, 1, 1, max_kernel_ / 2, max_kernel_ / 2};
  auto branch = [&](Direction& d) {
    auto [w, b] = combined(d);
    Tensor dw = Tensor::zeros(w.shape()), db = Tensor::zeros(b.shape());
    const Tensor shifted = op::spatial_shift(ctx.exec, saved_x_, d.axis, group_width_, shifts_);
    Tensor dshifted = op::depthwise_conv2d_backward(ctx.exec, shifted, w, g, dy, &dw, &db);
    scatter_grads(d, dw, db);
    return op::spatial_shift_backward(ctx.exec, dshifted, d.axis, group_width_, shifts_);
  };
  Tensor dx = branch(lr_);
  dx = op::scaled_residual(ctx.exec, dx, nullptr, branch(td_), nullptr);
  saved_x_ = Tensor();
  return dx;
}

void register_mix_shift_mixer(MixerRegistry& r) {
  r.add({"mix_shift", "MS-MLP's mix-and-shift: channel groups rolled along W and along H by their own shifts, each "
         "mixed by a depthwise conv of its own size; the two summed",
         [](const MixerContext& ctx) {
           MixerOptions o("mix_shift", ctx.options);
           const auto shifts = o.get_int_list("shifts", {-2, -1, 0, 1, 2});
           const auto kernels = o.get_int_list("kernels", {1, 1, 3, 5, 7});
           o.finish();
           for (int s : shifts) MF_CHECK(s >= -64 && s <= 64, "mix_shift: shift {} is out of range [-64, 64]", s);
           return std::make_unique<MixShift>(ctx.dim, shifts, kernels);
         }});
}

}  // namespace mf
