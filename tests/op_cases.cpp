#include "op_cases.h"

#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "test_util.h"

namespace mf::test {

std::vector<Tensor> OpCase::make_inputs(uint64_t seed) const {
  std::vector<Tensor> out;
  for (size_t i = 0; i < inputs.size(); ++i)
    out.push_back(random_tensor(inputs[i].shape, seed * 7919 + i, inputs[i].lo, inputs[i].hi));
  return out;
}

namespace {

double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += static_cast<double>(a.data()[i]) * b.data()[i];
  return s;
}

Tensor zeros_like(const Tensor& t) { return Tensor::zeros(t.shape()); }

// Each row scaled to sum to 1: a soft target distribution.
Tensor normalised_rows(const Tensor& t) {
  Tensor out = t.clone();
  const int64_t K = out.dim(1);
  for (int64_t r = 0; r < out.dim(0); ++r) {
    double sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += out.data()[r * K + k];
    for (int64_t k = 0; k < K; ++k) out.data()[r * K + k] /= static_cast<float>(sum);
  }
  return out;
}

void add_linear(std::vector<OpCase>& v, Shape x, int64_t out, bool bias) {
  const int64_t in = x[-1];
  std::vector<OpInput> inputs{{x}, {{out, in}, -0.3f, 0.3f}};
  if (bias) inputs.push_back({{out}});
  v.push_back({fmt::format("linear/{}->{}{}", x.str(), out, bias ? "+bias" : ""), OpKind::Linear, 1e-5, inputs,
               [bias](const Exec& e, const std::vector<Tensor>& in) {
                 return op::linear(e, in[0], in[1], bias ? &in[2] : nullptr);
               },
               [bias](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                 Tensor dw = zeros_like(in[1]), db = bias ? zeros_like(in[2]) : Tensor();
                 Tensor dx = op::linear_backward(e, in[0], in[1], dy, true, &dw, bias ? &db : nullptr);
                 return std::vector<Tensor>{dx, dw, db};
               }});
}

// The fused inference ops (forward only): linear with its activation, and the whole MLP.
Activation act_of(ActKind k) {
  Activation a;
  a.kind = k;
  if (k == ActKind::StarReLU) {  // not timm's init (0.8944, -0.4472... ), but scalars that matter
    a.scale = 0.8f;
    a.bias = -0.1f;
  }
  if (k == ActKind::SoftShrink) a.threshold = 0.3f;  // λ = 0 would be the identity
  return a;
}

void add_linear_act(std::vector<OpCase>& v, Shape x, int64_t out, bool bias, ActKind k) {
  const int64_t in = x[-1];
  std::vector<OpInput> inputs{{x}, {{out, in}, -0.3f, 0.3f}};
  if (bias) inputs.push_back({{out}});
  v.push_back({fmt::format("linear_act/{}->{}{} {}", x.str(), out, bias ? "+bias" : "", act_name(k)), OpKind::Linear,
               1e-5, inputs,
               [bias, k](const Exec& e, const std::vector<Tensor>& in) {
                 return op::linear_act(e, in[0], in[1], bias ? &in[2] : nullptr, act_of(k));
               },
               nullptr});
}

// An MLP case's inputs: x, fc1's and fc2's weights, then (with bias) their biases.
std::vector<OpInput> mlp_inputs(const Shape& x, int64_t hidden, bool bias) {
  const int64_t in = x[-1];
  std::vector<OpInput> inputs{{x}, {{hidden, in}, -0.3f, 0.3f}, {{in, hidden}, -0.3f, 0.3f}};
  if (bias) {
    inputs.push_back({{hidden}});
    inputs.push_back({{in}});
  }
  return inputs;
}

void add_mlp(std::vector<OpCase>& v, Shape x, int64_t hidden, bool bias, ActKind k) {
  const std::vector<OpInput> inputs = mlp_inputs(x, hidden, bias);
  v.push_back({fmt::format("mlp/{}->{}{} {}", x.str(), hidden, bias ? "+bias" : "", act_name(k)), OpKind::Linear,
               1e-5, inputs,
               [bias, k](const Exec& e, const std::vector<Tensor>& in) {
                 return op::mlp(e, in[0], in[1], bias ? &in[3] : nullptr, act_of(k), in[2], bias ? &in[4] : nullptr);
               },
               nullptr});
}

// A training step's MLP through the ops it runs (Mlp in training): {h, pre} = linear_act_train(x, w1,
// b1), y = linear(h, w2, b2); backward: linear_act_backward (fc2 and the activation), then fc1's
// linear_backward. On the CUDA backend with bf16 activations GELU runs in the GEMMs' epilogues (the
// tanh form, within the bf16 bar of the reference's erf form; METAFORMER_CUDA_GELU_EPILOGUE=0: not).
void add_mlp_train(std::vector<OpCase>& v, Shape x, int64_t hidden, bool bias, ActKind k) {
  const std::vector<OpInput> inputs = mlp_inputs(x, hidden, bias);
  v.push_back({fmt::format("mlp_train/{}->{}{} {}", x.str(), hidden, bias ? "+bias" : "", act_name(k)),
               OpKind::Linear, 1e-5, inputs,
               [bias, k](const Exec& e, const std::vector<Tensor>& in) {
                 auto [h, pre] = op::linear_act_train(e, in[0], in[1], bias ? &in[3] : nullptr, act_of(k));
                 return op::linear(e, h, in[2], bias ? &in[4] : nullptr);
               },
               [bias, k](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                 auto [h, pre] = op::linear_act_train(e, in[0], in[1], bias ? &in[3] : nullptr, act_of(k));
                 Tensor dw1 = zeros_like(in[1]), dw2 = zeros_like(in[2]);
                 Tensor db1 = bias ? zeros_like(in[3]) : Tensor(), db2 = bias ? zeros_like(in[4]) : Tensor();
                 Tensor dpre = op::linear_act_backward(e, h, pre, act_of(k), in[2], dy, &dw2, bias ? &db2 : nullptr);
                 Tensor dx = op::linear_backward(e, in[0], in[1], dpre, true, &dw1, bias ? &db1 : nullptr);
                 if (!bias) return std::vector<Tensor>{dx, dw1, dw2};
                 return std::vector<Tensor>{dx, dw1, dw2, db1, db2};
               }});
}

// The same MLP as the MetaFormer block's layer-scaled second half with the scale folded into fc2
// (MetaFormerBlock where Backend::folds_layer_scales): y = skip + ls ⊙ mlp(x) through
// linear_scaled_residual, backward through linear_act_scaled_backward. The CUDA backend runs fc2 with
// ls ⊙ w2 and the residual in the GEMM's epilogue, and the scale's gradients from dyᵀ · h; the
// reference runs the separate ops. conv1x1: fc2's weight as timm's 1×1 convolution keeps it
// ([out, in, 1, 1], PoolFormer's).
void add_mlp_train_scaled(std::vector<OpCase>& v, Shape x, int64_t hidden, bool bias, ActKind k, bool conv1x1) {
  std::vector<OpInput> inputs = mlp_inputs(x, hidden, bias);
  const int64_t C = x[-1];
  if (conv1x1) inputs[2].shape = Shape{C, hidden, 1, 1};
  inputs.push_back({{C}, 0.5f, 1.5f});  // the layer scale
  inputs.push_back({x});                // the residual stream
  const size_t ls = inputs.size() - 2, skip = inputs.size() - 1;
  v.push_back({fmt::format("mlp_train_scaled/{}->{}{} {}{}", x.str(), hidden, bias ? "+bias" : "", act_name(k),
                           conv1x1 ? " 1x1" : ""),
               OpKind::Linear, 1e-5, inputs,
               [bias, k, ls, skip](const Exec& e, const std::vector<Tensor>& in) {
                 auto [h, pre] = op::linear_act_train(e, in[0], in[1], bias ? &in[3] : nullptr, act_of(k));
                 return op::linear_scaled_residual(e, h, in[2], bias ? &in[4] : nullptr, in[ls], in[skip]);
               },
               [bias, k, ls](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                 auto [h, pre] = op::linear_act_train(e, in[0], in[1], bias ? &in[3] : nullptr, act_of(k));
                 Tensor dw1 = zeros_like(in[1]), dw2 = zeros_like(in[2]), dls = zeros_like(in[ls]);
                 Tensor db1 = bias ? zeros_like(in[3]) : Tensor(), db2 = bias ? zeros_like(in[4]) : Tensor();
                 Tensor dpre = op::linear_act_scaled_backward(e, h, pre, act_of(k), in[2], bias ? &in[4] : nullptr,
                                                              in[ls], dy, &dw2, bias ? &db2 : nullptr, &dls);
                 Tensor dx = op::linear_backward(e, in[0], in[1], dpre, true, &dw1, bias ? &db1 : nullptr);
                 if (!bias) return std::vector<Tensor>{dx, dw1, dw2, dls, dy};
                 return std::vector<Tensor>{dx, dw1, dw2, db1, db2, dls, dy};
               }});
}

// skip + linear(h): a training half's last Linear with the residual added in (MetaFormerBlock where
// Backend::fuses_residual_into_linear; the CUDA backend adds skip in the GEMM's epilogue), backward
// through linear_backward, skip's gradient being dy itself. conv1x1: timm's 1×1 convolution weight.
void add_linear_residual(std::vector<OpCase>& v, Shape x, int64_t out, bool bias, bool conv1x1) {
  const int64_t in = x[-1];
  Shape y = x;
  y[-1] = out;
  std::vector<OpInput> inputs{{x}, {conv1x1 ? Shape{out, in, 1, 1} : Shape{out, in}, -0.3f, 0.3f}};
  if (bias) inputs.push_back({{out}});
  inputs.push_back({y});  // the residual stream
  const size_t skip = inputs.size() - 1;
  v.push_back({fmt::format("linear_residual/{}->{}{}{}", x.str(), out, bias ? "+bias" : "", conv1x1 ? " 1x1" : ""),
               OpKind::Linear, 1e-5, inputs,
               [bias, skip](const Exec& e, const std::vector<Tensor>& in) {
                 return op::linear_residual(e, in[0], in[1], bias ? &in[2] : nullptr, in[skip]);
               },
               [bias](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                 Tensor dw = zeros_like(in[1]), db = bias ? zeros_like(in[2]) : Tensor();
                 Tensor dx = op::linear_backward(e, in[0], in[1], dy, true, &dw, bias ? &db : nullptr);
                 if (!bias) return std::vector<Tensor>{dx, dw, dy};
                 return std::vector<Tensor>{dx, dw, db, dy};
               }});
}

void add_depthwise_linear(std::vector<OpCase>& v, Shape x, int k, int64_t out, bool bias) {
  const int64_t C = x[-1];
  const ConvGeometry g{k, k, 1, 1, k / 2, k / 2};
  std::vector<OpInput> inputs{{x}, {{C, 1, k, k}, -0.3f, 0.3f}, {{out, C}, -0.3f, 0.3f}};
  if (bias) {
    inputs.push_back({{C}});
    inputs.push_back({{out}});
  }
  v.push_back({fmt::format("depthwise_linear/{} k{}->{}{}", x.str(), k, out, bias ? "+bias" : ""), OpKind::Linear,
               1e-5, inputs,
               [=](const Exec& e, const std::vector<Tensor>& in) {
                 return op::depthwise_linear(e, in[0], in[1], bias ? &in[3] : nullptr, g, in[2],
                                             bias ? &in[4] : nullptr);
               },
               nullptr});
}

void add_conv(std::vector<OpCase>& v, Shape x, int64_t out, int k, int stride, int pad, bool bias) {
  const int64_t in = x[-1];
  const ConvGeometry g{k, k, stride, stride, pad, pad};
  std::vector<OpInput> inputs{{x}, {{out, in, k, k}, -0.3f, 0.3f}};
  if (bias) inputs.push_back({{out}});
  v.push_back({fmt::format("conv2d/{}->{} k{} s{} p{}{}", x.str(), out, k, stride, pad, bias ? "+bias" : ""),
               OpKind::Conv2d, 1e-5, inputs,
               [=](const Exec& e, const std::vector<Tensor>& in) {
                 return op::conv2d(e, in[0], in[1], bias ? &in[2] : nullptr, g);
               },
               [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                 Tensor dw = zeros_like(in[1]), db = bias ? zeros_like(in[2]) : Tensor();
                 Tensor dx = op::conv2d_backward(e, in[0], in[1], g, dy, true, &dw, bias ? &db : nullptr);
                 return std::vector<Tensor>{dx, dw, db};
               }});
}

// WaveMix's transposed convolution (4×4, stride 2, padding 1) and iFormer's pooling ops, on odd shapes.
void add_wavemix_iformer_cases(std::vector<OpCase>& v) {
  for (auto [x, out, k, stride, pad, bias] : std::vector<std::tuple<Shape, int64_t, int, int, int, bool>>{
           {Shape{2, 5, 6, 7}, 9, 4, 2, 1, true}, {Shape{1, 3, 4, 5}, 6, 3, 1, 0, false},
           {Shape{1, 4, 3, 6}, 5, 2, 2, 0, true}}) {
    const ConvGeometry g{k, k, stride, stride, pad, pad};
    std::vector<OpInput> inputs{{x}, {{x[-1], out, k, k}, -0.3f, 0.3f}};
    if (bias) inputs.push_back({{out}});
    v.push_back({fmt::format("conv_transpose2d/{}->{} k{} s{} p{}{}", x.str(), out, k, stride, pad, bias ? "+bias" : ""),
                 OpKind::ConvTranspose2d, 1e-5, inputs,
                 [=](const Exec& e, const std::vector<Tensor>& in) {
                   return op::conv_transpose2d(e, in[0], in[1], bias ? &in[2] : nullptr, g);
                 },
                 [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                   Tensor dw = zeros_like(in[1]), db = bias ? zeros_like(in[2]) : Tensor();
                   Tensor dx = op::conv_transpose2d_backward(e, in[0], in[1], g, dy, true, &dw, bias ? &db : nullptr);
                   return std::vector<Tensor>{dx, dw, db};
                 }});
  }
  for (auto [x, k, stride, pad] : std::vector<std::tuple<Shape, int, int, int>>{
           {Shape{2, 7, 6, 5}, 3, 1, 1}, {Shape{1, 8, 8, 19}, 2, 2, 0}, {Shape{1, 7, 7, 4}, 3, 2, 1}}) {
    const ConvGeometry g{k, k, stride, stride, pad, pad};
    // Max pooling has no derivative where two values of a window tie, and uniform inputs come close
    // enough to a tie in some window for the finite differences to step across it. So the op runs on
    // x + s, where s = 3 · ((i mod 3) · 3 + j mod 3) differs by at least 3 between any two pixels of a
    // window of up to 3×3 consecutive pixels: larger than x's range [-1, 1] plus the step, so no
    // window's maximum ever changes place.
    auto separated = [](const Tensor& in) {
      Tensor t = in.clone();
      const int64_t H = t.dim(1), W = t.dim(2), C = t.dim(3);
      for (int64_t n = 0; n < t.dim(0); ++n)
        for (int64_t i = 0; i < H; ++i)
          for (int64_t j = 0; j < W; ++j)
            for (int64_t c = 0; c < C; ++c)
              t.data()[((n * H + i) * W + j) * C + c] += static_cast<float>(3 * ((i % 3) * 3 + j % 3));
      return t;
    };
    v.push_back({fmt::format("max_pool2d/{} k{} s{} p{}", x.str(), k, stride, pad), OpKind::MaxPool2d, 0.0, {{x}},
                 [=](const Exec& e, const std::vector<Tensor>& in) { return op::max_pool2d(e, separated(in[0]), g); },
                 [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                   return std::vector<Tensor>{op::max_pool2d_backward(e, separated(in[0]), g, dy)};
                 }});
  }
  for (auto [x, f] : std::vector<std::pair<Shape, int>>{{Shape{2, 6, 8, 5}, 2}, {Shape{1, 9, 6, 3}, 3}}) {
    v.push_back({fmt::format("avg_pool2d/{} f{}", x.str(), f), OpKind::AvgPool2d, 1e-6, {{x}},
                 [=](const Exec& e, const std::vector<Tensor>& in) { return op::avg_pool2d(e, in[0], f); },
                 [=](const Exec& e, const std::vector<Tensor>&, const Tensor& dy) {
                   return std::vector<Tensor>{op::avg_pool2d_backward(e, dy, f)};
                 }});
    const Shape small{x[0], x[1] / f, x[2] / f, x[3]};
    v.push_back({fmt::format("upsample_nearest/{} f{}", small.str(), f), OpKind::UpsampleNearest, 0.0, {{small}},
                 [=](const Exec& e, const std::vector<Tensor>& in) { return op::upsample_nearest(e, in[0], f); },
                 [=](const Exec& e, const std::vector<Tensor>&, const Tensor& dy) {
                   return std::vector<Tensor>{op::upsample_nearest_backward(e, dy, f)};
                 }});
  }
}

void add_depthwise(std::vector<OpCase>& v, Shape x, int k, int stride, int pad, bool bias) {
  const int64_t c = x[-1];
  const ConvGeometry g{k, k, stride, stride, pad, pad};
  std::vector<OpInput> inputs{{x}, {{c, 1, k, k}}};
  if (bias) inputs.push_back({{c}});
  v.push_back({fmt::format("depthwise_conv2d/{} k{} s{} p{}{}", x.str(), k, stride, pad, bias ? "+bias" : ""),
               OpKind::DepthwiseConv2d, 1e-6, inputs,
               [=](const Exec& e, const std::vector<Tensor>& in) {
                 return op::depthwise_conv2d(e, in[0], in[1], bias ? &in[2] : nullptr, g);
               },
               [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                 Tensor dw = zeros_like(in[1]), db = bias ? zeros_like(in[2]) : Tensor();
                 Tensor dx = op::depthwise_conv2d_backward(e, in[0], in[1], g, dy, &dw, bias ? &db : nullptr);
                 return std::vector<Tensor>{dx, dw, db};
               }});
}

// ConvFormer's StarReLU → dwconv in a training step as one op (SepConv where
// Backend::fuses_act_into_depthwise): y = depthwise(act(pre)) with zero padding, and its backward
// through both. StarReLU's scale and bias are inputs with gradients (host values, read by the op from
// the inputs each call). The CUDA backend applies act in the forward kernel's staging, and in the
// tiled dW kernel's where that applies (bf16, 14 rows or more, channels in 16-byte vectors), elsewhere
// from act(pre) materialised.
void add_act_depthwise(std::vector<OpCase>& v, Shape x, int k, ActKind kind, bool bias) {
  const int64_t C = x[-1];
  const ConvGeometry g{k, k, 1, 1, k / 2, k / 2};
  const bool star = kind == ActKind::StarReLU;
  std::vector<OpInput> inputs{{x, -2.f, 2.f}, {{C, 1, k, k}, -0.3f, 0.3f}};
  const size_t b = inputs.size();
  if (bias) inputs.push_back({{C}});
  const size_t s = inputs.size();
  if (star) {
    inputs.push_back({{1}, 0.5f, 1.5f});   // scale
    inputs.push_back({{1}, -0.5f, 0.5f});  // bias
  }
  auto act_of_inputs = [=](const std::vector<Tensor>& in) {
    Activation a{kind, 1.f, 0.f};
    if (star) {
      a.scale = in[s].data()[0];
      a.bias = in[s + 1].data()[0];
    }
    return a;
  };
  v.push_back({fmt::format("act_depthwise_train/{} k{} {}{}", x.str(), k, act_name(kind), bias ? " +bias" : ""),
               OpKind::DepthwiseConv2d, 1e-6, inputs,
               [=](const Exec& e, const std::vector<Tensor>& in) {
                 return op::act_depthwise_conv2d(e, in[0], act_of_inputs(in), in[1], bias ? &in[b] : nullptr, g);
               },
               [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                 Tensor dw = zeros_like(in[1]), db = bias ? zeros_like(in[b]) : Tensor();
                 Tensor ds = Tensor::zeros({1}), dsb = Tensor::zeros({1});
                 Tensor dpre = op::act_depthwise_conv2d_backward(e, in[0], act_of_inputs(in), in[1], g, dy, &dw,
                                                                 bias ? &db : nullptr, star ? &ds : nullptr,
                                                                 star ? &dsb : nullptr);
                 std::vector<Tensor> grads{dpre, dw};
                 if (bias) grads.push_back(db);
                 if (star) {
                   grads.push_back(ds);
                   grads.push_back(dsb);
                 }
                 return grads;
               }});
  if (!star) return;
  // StarReLU's d scale = Σ dh · relu(pre)² and d bias = Σ dh, with dh the convolution's input
  // gradient: sums over every element whose terms carry dy's random signs and cancel (docs/tolerances.md).
  v.back().term_magnitudes = [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
    Tensor dw = zeros_like(in[1]);
    const Tensor dh = op::depthwise_conv2d_backward(e, in[0], in[1], g, dy, &dw, nullptr);
    double scale_terms = 0, bias_terms = 0;
    const float* pre = in[0].data();
    const float* d = dh.data();
    for (int64_t i = 0; i < dh.numel(); ++i) {
      const double r = std::max(0.f, pre[i]);
      scale_terms += std::abs(d[i] * r * r);
      bias_terms += std::abs(d[i]);
    }
    std::vector<double> m(in.size(), 0.0);
    m[s] = scale_terms;
    m[s + 1] = bias_terms;
    return m;
  };
}

}  // namespace

double finite_difference_error(const OpCase& c, const Exec& e, uint64_t seed, std::string* worst_input) {
  const std::vector<Tensor> in = c.make_inputs(seed);
  const Tensor y = c.forward(e, in);
  const Tensor dy = random_tensor(y.shape(), seed + 101);
  const std::vector<Tensor> grads = c.backward(e, in, dy);
  double worst = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    if (!c.inputs[i].differentiable || i >= grads.size() || !grads[i].defined()) continue;
    const Tensor d = random_tensor(in[i].shape(), seed + 202 + i);
    // A step small against the inputs' scale, large against float32 rounding of the output.
    const float eps = 1e-3f * std::max(1.f, std::max(std::fabs(c.inputs[i].lo), std::fabs(c.inputs[i].hi)));
    auto loss_at = [&](float sign) {
      std::vector<Tensor> moved = in;
      moved[i] = in[i].clone();
      for (int64_t k = 0; k < d.numel(); ++k) moved[i].data()[k] += sign * eps * d.data()[k];
      return dot(c.forward(e, moved), dy);
    };
    const double numeric = (loss_at(1.f) - loss_at(-1.f)) / (2.0 * eps);
    const double analytic = dot(grads[i], d);
    // Relative to the typical size of <g, d> for a random d, ||g|| ||d|| / sqrt(n): <g, d> itself can
    // be near zero by chance, and dividing by it would measure float32 rounding, not the gradient.
    const double typical = std::sqrt(dot(grads[i], grads[i]) * dot(d, d) / static_cast<double>(d.numel()));
    const double err = std::fabs(numeric - analytic) / std::max({std::fabs(analytic), typical, 1e-12});
    if (err > worst) {
      worst = err;
      if (worst_input) *worst_input = fmt::format("input {}: numeric {:.6g}, analytic {:.6g}", i, numeric, analytic);
    }
  }
  return worst;
}

namespace {
// Token ids from a uniform [-1, 1) input: integers in [0, vocab).
Tensor ids_from(const Tensor& x, int64_t vocab) {
  Tensor ids = Tensor::empty(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i)
    ids.data()[i] = std::min(static_cast<float>(vocab - 1), std::floor((x.data()[i] + 1.f) * 0.5f * static_cast<float>(vocab)));
  return ids;
}

// The sequence ops (docs/sequences.md): embedding, position tables, causal attention, Mamba's conv
// and selective scan. The scan's cases use checkpoint intervals shorter than the sequence, so the
// cpu backend's chunked recomputation crosses chunk edges (the reference keeps every state).
// PatchTSMixer's gated attention: softmax over the patches (I = channels), over the channels (I = 1),
// and a single-element axis (softmax 1: the gate passes x through).
void add_softmax_gate_cases(std::vector<OpCase>& v) {
  for (Shape s : {Shape{6, 7, 5}, Shape{21, 16, 1}, Shape{3, 1, 4}}) {
    v.push_back({fmt::format("softmax_gate/{}", s.str()), OpKind::SoftmaxGate, 1e-6, {{s}, {s}},
                 [](const Exec& e, const std::vector<Tensor>& in) { return op::softmax_gate(e, in[0], in[1]); },
                 [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                   auto [dx, dl] = op::softmax_gate_backward(e, in[0], in[1], dy);
                   return std::vector<Tensor>{dx, dl};
                 }});
  }
}

void add_sequence_cases(std::vector<OpCase>& v) {
  v.push_back({"embedding/[3, 11] vocab 13 -> 7", OpKind::Embedding, 0.0, {{{3, 11}}, {{13, 7}}},
               [](const Exec& e, const std::vector<Tensor>& in) { return op::embedding(e, ids_from(in[0], 13), in[1]); },
               [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                 Tensor dt = zeros_like(in[1]);
                 op::embedding_backward_(e, ids_from(in[0], 13), dy, dt);
                 return std::vector<Tensor>{Tensor(), dt};
               }});
  v.back().inputs[0].differentiable = false;
  v.push_back({"add_positions/[3, 9, 7] table 12", OpKind::AddPositions, 1e-7, {{{3, 9, 7}}, {{12, 7}}},
               [](const Exec& e, const std::vector<Tensor>& in) { return op::add_positions(e, in[0], in[1]); },
               [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                 Tensor dp = zeros_like(in[1]);
                 op::add_positions_backward_(e, dy, dp);
                 return std::vector<Tensor>{dy.clone(), dp};
               }});
  struct Att {
    int64_t b, n;
    int heads, d;
  };
  for (Att a : {Att{3, 49, 5, 8}, Att{2, 7, 1, 3}, Att{1, 1, 2, 4}}) {
    const float scale = 1.f / std::sqrt(static_cast<float>(a.d));
    v.push_back({fmt::format("causal_attention/B{} N{} heads{} d{}", a.b, a.n, a.heads, a.d), OpKind::CausalAttention,
                 1e-5, {{{a.b, a.n, 3 * a.heads * a.d}, -2.f, 2.f}},
                 [=](const Exec& e, const std::vector<Tensor>& in) {
                   return op::causal_attention(e, in[0], a.heads, a.d, scale);
                 },
                 [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                   return std::vector<Tensor>{op::causal_attention_backward(e, in[0], a.heads, a.d, scale, dy)};
                 }});
  }
  for (const auto& [shape, kernel, with_bias] : std::vector<std::tuple<Shape, int64_t, bool>>{
           {{3, 13, 7}, 4, true}, {{2, 5, 3}, 1, false}, {{1, 3, 5}, 6, true}}) {
    const Shape x = shape;  // copies: the lambdas below capture them
    const int64_t k = kernel;
    const bool bias = with_bias;
    std::vector<OpInput> inputs{{x}, {{x[2], 1, k}}};
    if (bias) inputs.push_back({{x[2]}});
    v.push_back({fmt::format("causal_conv1d/{} k{}{}", x.str(), k, bias ? "+bias" : ""), OpKind::CausalConv1d, 1e-6,
                 inputs,
                 [=](const Exec& e, const std::vector<Tensor>& in) {
                   return op::causal_conv1d(e, in[0], in[1], bias ? &in[2] : nullptr);
                 },
                 [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                   Tensor dw = zeros_like(in[1]), db = bias ? zeros_like(in[2]) : Tensor();
                   Tensor dx = op::causal_conv1d_backward(e, in[0], in[1], dy, &dw, bias ? &db : nullptr);
                   std::vector<Tensor> g{dx, dw};
                   if (bias) g.push_back(db);
                   return g;
                 }});
  }
  for (Shape x : {Shape{3, 7, 37}, Shape{2, 1, 5, 16}})
    v.push_back({"rms_norm/" + x.str(), OpKind::RmsNorm, 1e-6, {{x}, {{x[-1]}}},
                 [](const Exec& e, const std::vector<Tensor>& in) { return op::rms_norm(e, in[0], in[1], 1e-5f); },
                 [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                   Tensor dw = zeros_like(in[1]);
                   Tensor dx = op::rms_norm_backward(e, in[0], in[1], 1e-5f, dy, &dw);
                   return std::vector<Tensor>{dx, dw};
                 }});
  struct Scan {
    int64_t b, l, d, n, rank, chunk;
  };
  for (Scan s : {Scan{2, 13, 6, 4, 3, 4}, Scan{1, 40, 5, 3, 1, 7}, Scan{3, 9, 4, 2, 2, 64}, Scan{1, 6, 3, 5, 0, 1}}) {
    // u, dt_raw (around softplus's bend), A_log, x_proj's output [dt | B | C], D, z
    std::vector<OpInput> inputs{{{s.b, s.l, s.d}},       {{s.b, s.l, s.d}, -3.f, 1.f}, {{s.d, s.n}},
                                {{s.b, s.l, s.rank + 2 * s.n}}, {{s.d}},                      {{s.b, s.l, s.d}, -2.f, 2.f}};
    v.push_back({fmt::format("selective_scan/B{} L{} D{} N{} chunk{}", s.b, s.l, s.d, s.n, s.chunk),
                 OpKind::SelectiveScan, 1e-5, inputs,
                 [=](const Exec& e, const std::vector<Tensor>& in) {
                   return op::selective_scan(e, in[0], in[1], in[2], in[3], s.rank, in[4], in[5]);
                 },
                 [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                   Tensor da = zeros_like(in[2]), dd = zeros_like(in[4]);
                   op::SelectiveScanGrads g =
                       op::selective_scan_backward(e, in[0], in[1], in[2], in[3], s.rank, in[4], in[5], dy, s.chunk,
                                                   &da, &dd);
                   return std::vector<Tensor>{g.du, g.ddt_raw, da, g.dbc, dd, g.dz};
                 }});
  }
  // Hydra's bidirectional scan: chunks shorter than the sequence, one and several diagonal heads, a
  // single token (both shifted outputs empty).
  struct BiScan {
    int64_t b, l, d, n, rank, heads, chunk;
  };
  for (BiScan s : {BiScan{2, 13, 6, 4, 3, 2, 4}, BiScan{1, 40, 4, 3, 1, 1, 7}, BiScan{3, 9, 4, 2, 2, 4, 64},
                   BiScan{1, 1, 3, 2, 0, 3, 1}}) {
    // u, dt_raw [2D] (around softplus's bend), A_log, x_proj's output [dt | B_f C_f B_b C_b], dd, D
    std::vector<OpInput> inputs{{{s.b, s.l, s.d}}, {{s.b, s.l, 2 * s.d}, -3.f, 1.f}, {{s.d, s.n}},
                                {{s.b, s.l, s.rank + 4 * s.n}}, {{s.b, s.l, s.heads}}, {{s.heads}}};
    v.push_back({fmt::format("bidirectional_scan/B{} L{} D{} N{} heads{} chunk{}", s.b, s.l, s.d, s.n, s.heads,
                             s.chunk),
                 OpKind::BidirectionalScan, 1e-5, inputs,
                 [=](const Exec& e, const std::vector<Tensor>& in) {
                   return op::bidirectional_scan(e, in[0], in[1], in[2], in[3], s.rank, in[4], in[5]);
                 },
                 [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                   Tensor da = zeros_like(in[2]), dd = zeros_like(in[5]);
                   op::BidirectionalScanGrads g = op::bidirectional_scan_backward(
                       e, in[0], in[1], in[2], in[3], s.rank, in[4], in[5], dy, s.chunk, &da, &dd);
                   return std::vector<Tensor>{g.du, g.ddt_raw, da, g.dbc, g.ddd, dd};
                 }});
  }
  // PoNet's pooling: segments that divide the sequence and that do not, one token, a wide window.
  struct Pool {
    int64_t b, l, c;
    int heads;
    int64_t segment;
    int local;
  };
  for (Pool k : {Pool{2, 13, 8, 2, 5, 3}, Pool{1, 12, 6, 3, 4, 5}, Pool{3, 1, 4, 1, 2, 3}, Pool{1, 9, 4, 4, 10, 7}})
    v.push_back({fmt::format("ponet_pool/B{} L{} C{} heads{} segment{} local{}", k.b, k.l, k.c, k.heads, k.segment,
                             k.local),
                 OpKind::PonetPool, 1e-5, {{{k.b, k.l, 6 * k.c}, -2.f, 2.f}},
                 [=](const Exec& e, const std::vector<Tensor>& in) {
                   return op::ponet_pool(e, in[0], k.heads, k.segment, k.local);
                 },
                 [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                   return std::vector<Tensor>{op::ponet_pool_backward(e, in[0], k.heads, k.segment, k.local, dy)};
                 }});
}
}  // namespace

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = [] {
    std::vector<OpCase> v;
    add_linear(v, {3, 7, 7, 37}, 53, true);
    add_linear(v, {1, 7, 7, 64}, 128, false);
    add_linear(v, {2, 5, 131}, 17, true);
    add_linear(v, {1, 1}, 1, false);
    add_linear(v, {3, 49, 320}, 1280, false);
    for (ActKind k : {ActKind::GELU, ActKind::StarReLU, ActKind::SquaredReLU, ActKind::ReLU, ActKind::SiLU})
      add_linear_act(v, {2, 5, 7, 24}, 40, k != ActKind::StarReLU, k);
    add_linear_act(v, {1, 3, 3, 8}, 12, true, ActKind::SoftShrink);  // not fusable: the unfused path
    // The training MLP: GELU at widths the CUDA epilogue takes (multiples of 8) and one it does not
    // (36: the activation kernels), the identity, SiLU (smooth: ReLU's kink fails finite differences).
    add_mlp_train(v, {2, 5, 7, 24}, 96, true, ActKind::GELU);
    add_mlp_train(v, {3, 49, 16}, 64, false, ActKind::GELU);
    add_mlp_train(v, {1, 3, 3, 12}, 36, true, ActKind::GELU);
    add_mlp_train(v, {1, 4, 4, 8}, 16, true, ActKind::Identity);
    add_mlp_train(v, {1, 4, 4, 8}, 24, true, ActKind::SiLU);
    add_mlp_train_scaled(v, {2, 5, 7, 24}, 96, true, ActKind::GELU, true);
    add_mlp_train_scaled(v, {3, 49, 16}, 64, false, ActKind::GELU, false);
    add_mlp_train_scaled(v, {1, 3, 3, 12}, 36, true, ActKind::GELU, false);
    add_mlp_train_scaled(v, {1, 4, 4, 8}, 24, true, ActKind::StarReLU, true);
    add_linear_residual(v, {2, 5, 7, 96}, 24, true, true);
    add_linear_residual(v, {3, 49, 32}, 16, false, false);
    add_linear_residual(v, {1, 3, 3, 40}, 12, true, false);
    add_depthwise_linear(v, {2, 9, 11, 48}, 7, 24, false);  // ConvFormer's dwconv -> pwconv2, odd sizes
    add_depthwise_linear(v, {1, 5, 6, 20}, 3, 7, true);      // a channel tail, biases
    add_depthwise_linear(v, {3, 60, 40, 16}, 7, 8, false);   // several blocks of rows
    add_mlp(v, {2, 7, 7, 32}, 128, true, ActKind::GELU);
    add_mlp(v, {1, 50, 48}, 192, false, ActKind::StarReLU);
    add_mlp(v, {3, 1000, 8}, 32, false, ActKind::SquaredReLU);  // several row blocks and a tail
    // The block's second half, norm -> MLP -> residual: LayerNorm and GroupNorm, with and without
    // biases and scales, one block of rows and several (where GroupNorm's blocks span samples).
    struct BranchCase {
      Shape x;
      bool group, bias, res_scale, layer_scale;
    };
    for (const BranchCase& k : {BranchCase{{2, 7, 7, 32}, false, true, false, true},
                                BranchCase{{3, 1000, 8}, false, false, true, false},
                                BranchCase{{2, 7, 7, 32}, true, true, true, true},
                                BranchCase{{3, 30, 34, 8}, true, false, false, false},
                                BranchCase{{2, 7, 7, 32}, false, false, false, true},
                                BranchCase{{1, 9, 10, 16}, false, true, false, false}}) {
      const int64_t C = k.x[-1], hidden = 4 * C;
      // Inputs: x (an offset mean), norm weight, fc1, fc2, res scale, layer scale, then the biases.
      std::vector<OpInput> inputs{{k.x, -2.f, 3.f},          {{C}, 0.5f, 1.5f}, {{hidden, C}, -0.3f, 0.3f},
                                  {{C, hidden}, -0.3f, 0.3f}, {{C}, 0.5f, 1.5f}, {{C}, -0.5f, 0.5f}};
      if (k.bias) {
        inputs.push_back({{C}});
        inputs.push_back({{hidden}});
        inputs.push_back({{C}});
      }
      v.push_back({fmt::format("mlp_branch/{} {}{}{}{}", k.x.str(), k.group ? "group_norm1" : "layer_norm",
                               k.bias ? " +bias" : "", k.res_scale ? " rs" : "", k.layer_scale ? " ls" : ""),
                   OpKind::Linear, 1e-5, inputs,
                   [k](const Exec& e, const std::vector<Tensor>& in) {
                     BranchNorm n{k.group ? BranchNorm::Type::group_norm1 : BranchNorm::Type::layer_norm, &in[1],
                                  k.bias ? &in[6] : nullptr, k.group ? 1e-5f : 1e-6f};
                     return op::mlp_branch(e, in[0], n, in[2], k.bias ? &in[7] : nullptr, act_of(ActKind::StarReLU),
                                           in[3], k.bias ? &in[8] : nullptr,
                                           {k.res_scale ? &in[4] : nullptr, k.layer_scale ? &in[5] : nullptr});
                   },
                   nullptr});
    }
    // PoolFormer's first half, GroupNorm -> pool - x -> residual, in every combination of scales.
    for (int mode = 0; mode < 4; ++mode)
      for (Shape x : {Shape{3, 7, 7, 37}, Shape{2, 5, 6, 64}}) {
        const int64_t C = x[-1];
        const bool bias = mode == 1;
        std::vector<OpInput> inputs{{x, -2.f, 3.f}, {{C}, 0.5f, 1.5f}, {{C}, 0.5f, 1.5f}, {{C}, -0.5f, 0.5f}};
        if (bias) inputs.push_back({{C}});
        v.push_back({fmt::format("pool_branch/{} rs={} ls={}{}", x.str(), mode & 1, mode >> 1, bias ? " +bias" : ""),
                     OpKind::PoolMinusInput, 1e-5, inputs,
                     [mode, bias](const Exec& e, const std::vector<Tensor>& in) {
                       BranchNorm n{BranchNorm::Type::group_norm1, &in[1], bias ? &in[4] : nullptr, 1e-5f};
                       return op::pool_branch(e, in[0], n, 3,
                                              {(mode & 1) ? &in[2] : nullptr, (mode >> 1) ? &in[3] : nullptr});
                     },
                     nullptr});
      }

    // The same half in training where the backend folds layer scales (a layer scale, no res scale;
    // MetaFormerBlock through Pooling::run_scaled_branch_train): its backward, pool_branch_backward,
    // recomputes the norm's statistics from x; the CUDA backend folds the scale into the norm's weight.
    struct PoolTrainCase {
      Shape x;
      int k;
      bool bias;
    };
    for (const PoolTrainCase& k : {PoolTrainCase{{3, 7, 7, 37}, 3, true}, PoolTrainCase{{2, 5, 6, 64}, 3, true},
                                   PoolTrainCase{{1, 6, 5, 24}, 5, false}, PoolTrainCase{{2, 4, 4, 8}, 3, true}}) {
      const int64_t C = k.x[-1];
      std::vector<OpInput> inputs{{k.x, -2.f, 3.f}, {{C}, 0.5f, 1.5f}, {{C}, -0.5f, 0.5f}};
      // The norm's bias gets no gradient: pool(n + b) − (n + b) = pool(n) − n, the pooling of a constant
      // (padded cells not counted) being the constant. Its computed gradient is rounding noise, so it is
      // neither asked for, compared, nor checked against finite differences.
      if (k.bias) inputs.push_back({{C}, -1.f, 1.f, false});
      v.push_back({fmt::format("pool_branch_train/{} k{}{}", k.x.str(), k.k, k.bias ? " +bias" : ""),
                   OpKind::PoolMinusInput, 1e-5, inputs,
                   [k](const Exec& e, const std::vector<Tensor>& in) {
                     BranchNorm n{BranchNorm::Type::group_norm1, &in[1], k.bias ? &in[3] : nullptr, 1e-5f};
                     return op::pool_branch(e, in[0], n, k.k, {nullptr, &in[2]});
                   },
                   [k](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     BranchNorm n{BranchNorm::Type::group_norm1, &in[1], k.bias ? &in[3] : nullptr, 1e-5f};
                     Tensor dw = zeros_like(in[1]), dls = zeros_like(in[2]);
                     Tensor dx = op::pool_branch_backward(e, in[0], n, k.k, in[2], dy, &dw, nullptr, &dls);
                     if (!k.bias) return std::vector<Tensor>{dx, dw, dls};
                     return std::vector<Tensor>{dx, dw, dls, Tensor()};
                   }});
    }

    // ConvFormer's first half, norm -> pwconv1 -> StarReLU -> depthwise -> pwconv2 -> residual, with
    // each combination of scales, an odd size, a channel tail and a 3x3 window.
    struct SepCase {
      Shape x;
      int k;
      bool group, bias, res_scale, layer_scale;
    };
    for (const SepCase& k : {SepCase{{2, 9, 11, 24}, 7, false, false, false, false},
                             SepCase{{1, 14, 14, 40}, 7, false, true, false, true},
                             SepCase{{2, 7, 7, 20}, 7, false, false, true, false},
                             SepCase{{3, 5, 6, 12}, 3, true, true, true, true},
                             SepCase{{1, 10, 9, 36}, 3, false, false, false, true}}) {
      const int64_t C = k.x[-1], M = 2 * C;
      // Inputs: x, norm weight, pwconv1, depthwise, pwconv2, res scale, layer scale, then the biases.
      std::vector<OpInput> inputs{{k.x, -2.f, 3.f},         {{C}, 0.5f, 1.5f},         {{M, C}, -0.3f, 0.3f},
                                  {{M, 1, k.k, k.k}, -0.3f, 0.3f}, {{C, M}, -0.3f, 0.3f}, {{C}, 0.5f, 1.5f},
                                  {{C}, -0.5f, 0.5f}};
      if (k.bias) {
        inputs.push_back({{C}});  // norm bias
        inputs.push_back({{M}});
        inputs.push_back({{M}});
        inputs.push_back({{C}});
      }
      v.push_back({fmt::format("sepconv_branch/{} k{} {}{}{}{}", k.x.str(), k.k, k.group ? "group_norm1" : "layer_norm",
                               k.bias ? " +bias" : "", k.res_scale ? " rs" : "", k.layer_scale ? " ls" : ""),
                   OpKind::Linear, 1e-5, inputs,
                   [k](const Exec& e, const std::vector<Tensor>& in) {
                     BranchNorm n{k.group ? BranchNorm::Type::group_norm1 : BranchNorm::Type::layer_norm, &in[1],
                                  k.bias ? &in[7] : nullptr, k.group ? 1e-5f : 1e-6f};
                     const ConvGeometry g{k.k, k.k, 1, 1, k.k / 2, k.k / 2};
                     return op::sepconv_branch(e, in[0], n, in[2], k.bias ? &in[8] : nullptr,
                                               act_of(ActKind::StarReLU), in[3], k.bias ? &in[9] : nullptr, g, in[4],
                                               k.bias ? &in[10] : nullptr,
                                               {k.res_scale ? &in[5] : nullptr, k.layer_scale ? &in[6] : nullptr});
                   },
                   nullptr});
    }

    add_conv(v, {3, 23, 17, 3}, 13, 7, 4, 2, true);  // a stem on an odd image
    add_conv(v, {1, 7, 7, 21}, 19, 3, 2, 1, true);   // a downsampling
    add_conv(v, {2, 9, 6, 5}, 7, 3, 1, 1, false);
    add_conv(v, {2, 9, 10, 16}, 24, 3, 2, 1, true);  // channels a multiple of 8: the vector im2col

    add_depthwise(v, {3, 7, 7, 37}, 7, 1, 3, false);
    add_depthwise(v, {1, 14, 14, 130}, 7, 1, 3, true);  // > 2 channel blocks, one partial
    add_depthwise(v, {2, 5, 9, 3}, 3, 2, 1, true);
    add_depthwise(v, {1, 1, 1, 65}, 7, 1, 3, false);
    add_depthwise(v, {2, 11, 13, 48}, 7, 1, 3, true);  // the sliding window: a width not a multiple of 8
    add_depthwise(v, {1, 6, 10, 35}, 3, 1, 1, false);  // 3x3 window with a channel tail
    add_depthwise(v, {2, 4, 37, 32}, 3, 1, 1, true);   // wide rows: interior windows (no bounds checks)
    add_depthwise(v, {1, 3, 30, 16}, 7, 1, 3, false);  // the same for 7x7
    // The tiled dW kernel's shapes (bf16, channels in 16-byte vectors, 14 rows or more): tiles of 16 × 8
    // cut at the map's bottom and right, a channel block of one vector; several chunks of tiles.
    add_depthwise(v, {2, 18, 21, 40}, 7, 1, 3, true);
    add_depthwise(v, {1, 16, 9, 16}, 3, 1, 1, false);
    add_depthwise(v, {20, 14, 8, 8}, 7, 1, 3, false);
    add_depthwise(v, {2, 7, 7, 32}, 5, 1, 2, false);   // 5x5: the generic forward kernel, the fixed backward
    add_depthwise(v, {1, 9, 10, 24}, 5, 1, 2, true);
    add_depthwise(v, {2, 9, 9, 16}, 5, 2, 2, false);   // 5x5 at stride 2: the gather for dx
    add_depthwise(v, {2, 21, 19, 40}, 7, 1, 3, true);  // two 16-row patches (the second partial), a channel tail
    add_depthwise(v, {1, 18, 17, 24}, 3, 1, 1, false);  // the same for 3x3

    // act → depthwise as one op: an odd map and a channel count that is no multiple of 8 (the GPU's dW
    // from act(pre) materialised), 3x3, 5x5 and 7x7; then ConvFormer-like maps of 14 rows or more with
    // channels in 16-byte vectors, where the GPU's tiled dW kernel applies act itself (in bf16).
    add_act_depthwise(v, {2, 7, 7, 20}, 7, ActKind::StarReLU, false);
    add_act_depthwise(v, {1, 9, 11, 13}, 3, ActKind::GELU, true);
    add_act_depthwise(v, {2, 5, 6, 12}, 5, ActKind::StarReLU, true);
    add_act_depthwise(v, {2, 16, 15, 32}, 7, ActKind::StarReLU, false);
    add_act_depthwise(v, {1, 14, 14, 40}, 7, ActKind::GELU, true);
    add_act_depthwise(v, {1, 17, 14, 16}, 3, ActKind::StarReLU, true);
    add_act_depthwise(v, {1, 15, 15, 24}, 5, ActKind::GELU, false);


    auto pool_case = [&](Shape x, int k) {
      v.push_back({fmt::format("pool_minus_input/{}{}", x.str(), k == 3 ? "" : fmt::format(" k{}", k)),
                   OpKind::PoolMinusInput, 1e-6, {{x}},
                   [k](const Exec& e, const std::vector<Tensor>& in) { return op::pool_minus_input(e, in[0], k); },
                   [k](const Exec& e, const std::vector<Tensor>&, const Tensor& dy) {
                     return std::vector<Tensor>{op::pool_minus_input_backward(e, dy, k)};
                   }});
    };
    for (Shape x : {Shape{3, 7, 7, 37}, Shape{1, 1, 1, 5}, Shape{2, 2, 5, 64}, Shape{1, 56, 56, 64}}) pool_case(x, 3);
    pool_case({1, 9, 8, 5}, 5);

    for (bool bias : {false, true})
      // 64, 320 and 8 channels: the CUDA LayerNorm's vector path with 8, 32 (two vectors a lane) and 1 lanes a row.
      // 768 channels and 45,000 rows: the fused CUDA LayerNorm backward's widest rows (24 channels a lane)
      // and its cap on blocks (2,048 blocks of 22 rows, several rows a warp). 3 × 9 × 9 × 37: GroupNorm's
      // samples of more than 2,048 values with an odd channel count (the one-pass CUDA backward's column
      // tiles then straddle samples, and dx takes the scalar kernel). 8 × 9 × 9 × 36: 8 · 36 columns are
      // whole 16-byte vectors but 36 channels are not, so a vector would straddle two samples (the
      // cell sums' 16-byte view must refuse it).
      for (Shape x : {Shape{3, 7, 7, 37}, Shape{1, 49, 512}, Shape{2, 1, 1, 2048}, Shape{2, 5, 7, 64}, Shape{1, 3, 5, 320},
                      Shape{3, 11, 8}, Shape{1, 2, 7, 768}, Shape{2, 150, 150, 8}, Shape{3, 9, 9, 37},
                      Shape{8, 9, 9, 36}}) {
        const int64_t c = x[-1];
        std::vector<OpInput> inputs{{x, 2.f, 4.f}, {{c}}};  // an offset mean: variance around the mean
        if (bias) inputs.push_back({{c}});
        for (const bool group : {false, true}) {
          const float eps = group ? 1e-5f : 1e-6f;
          v.push_back(
              {fmt::format("{}/{}{}", group ? "group_norm1" : "layer_norm", x.str(), bias ? "+bias" : ""),
               group ? OpKind::GroupNorm1 : OpKind::LayerNorm, 1e-5, inputs,
               [=](const Exec& e, const std::vector<Tensor>& in) {
                 return group ? op::group_norm1(e, in[0], in[1], bias ? &in[2] : nullptr, eps)
                              : op::layer_norm(e, in[0], in[1], bias ? &in[2] : nullptr, eps);
               },
               [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                 Tensor dw = zeros_like(in[1]), db = bias ? zeros_like(in[2]) : Tensor();
                 Tensor dx = group ? op::group_norm1_backward(e, in[0], in[1], eps, dy, &dw, bias ? &db : nullptr)
                                   : op::layer_norm_backward(e, in[0], in[1], eps, dy, &dw, bias ? &db : nullptr);
                 return std::vector<Tensor>{dx, dw, db};
               },
               1e-5});
        }
      }
    // A block's skip path with its norm: y = x ⊙ rs + norm(x) ⊙ ls, so dx = rs ⊙ dy + the norm's dx
    // for dn = ls ⊙ dy, and drs = Σ x ⊙ dy: the skip gradient dy and rs passed to the norm's backward
    // (Backend::layer_norm_backward_add, which the cuda backend adds in the kernel that writes dx; the
    // layer scale only makes the norm's dy differ from the skip's). Without rs ("_skip"), dx = dy +
    // the norm's dx. The shapes take each of the cuda kernels: 37 channels the scalar rows, 64 and 320
    // the vector rows (8 and 32 lanes), 768 the widest; as GroupNorm, 3 × 7 × 7 × 37 the warp rows,
    // 2 × 5 × 7 × 64 the one-pass statistics with 16-byte dx, 3 × 9 × 9 × 37 with scalar dx.
    for (Shape x : {Shape{3, 7, 7, 37}, Shape{2, 5, 7, 64}, Shape{1, 3, 5, 320}, Shape{1, 2, 7, 768}, Shape{3, 9, 9, 37}})
      for (const bool group : {false, true})
        for (const bool scaled : {false, true}) {
          const int64_t c = x[-1];
          const float eps = group ? 1e-5f : 1e-6f;
          auto norm = [=](const Exec& e, const std::vector<Tensor>& in) {
            return group ? op::group_norm1(e, in[0], in[1], &in[2], eps) : op::layer_norm(e, in[0], in[1], &in[2], eps);
          };
          v.push_back(
              {fmt::format("{}_{}/{}", group ? "group_norm1" : "layer_norm", scaled ? "res_scale" : "skip", x.str()),
               group ? OpKind::GroupNorm1 : OpKind::LayerNorm, 1e-5,
               {{x, 2.f, 4.f}, {{c}}, {{c}}, {{c}, 0.5f, 1.5f}, {{c}, 0.5f, 1.5f}},
               [=](const Exec& e, const std::vector<Tensor>& in) {
                 return op::scaled_residual(e, in[0], scaled ? &in[3] : nullptr, norm(e, in), &in[4]);
               },
               [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                 Tensor dw = zeros_like(in[1]), db = zeros_like(in[2]), dls = zeros_like(in[4]);
                 Tensor drs = scaled ? zeros_like(in[3]) : Tensor();
                 // (need_dx false: the branch's gradient alone, as a block with a layer scale and no res scale)
                 const Tensor dn = op::scaled_residual_backward(e, in[0], nullptr, norm(e, in), &in[4], dy, nullptr,
                                                                &dls, /*need_dx=*/false)
                                       .second;
                 const Tensor* rs = scaled ? &in[3] : nullptr;
                 Tensor* d_rs = scaled ? &drs : nullptr;
                 Tensor dx = group ? op::group_norm1_backward(e, in[0], in[1], eps, dn, &dw, &db, &dy, rs, d_rs)
                                   : op::layer_norm_backward(e, in[0], in[1], eps, dn, &dw, &db, &dy, rs, d_rs);
                 return std::vector<Tensor>{dx, dw, db, drs, dls};
               },
               1e-5});
          if (!scaled) v.back().inputs[3].differentiable = false;
        }
    // BatchNorm: eval mode (given running statistics: not differentiated, as PyTorch treats
    // buffers) and training mode (the batch's own statistics, which backward differentiates through).
    for (Shape x : {Shape{3, 7, 7, 37}, Shape{1, 1, 1, 5}, Shape{2, 49, 64}}) {
      const int64_t c = x[-1];
      for (bool bias : {false, true}) {
        v.push_back({fmt::format("batch_norm_eval/{}{}", x.str(), bias ? "+bias" : ""), OpKind::BatchNorm, 1e-6,
                     {{x, 2.f, 4.f}, {{c}}, {{c}}, {{c}, 2.f, 4.f}, {{c}, 0.2f, 2.f}},
                     [bias](const Exec& e, const std::vector<Tensor>& in) {
                       return op::batch_norm(e, in[0], in[1], bias ? &in[2] : nullptr, in[3], in[4], 1e-5f);
                     },
                     [bias](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                       Tensor dw = zeros_like(in[1]), db = bias ? zeros_like(in[2]) : Tensor();
                       Tensor dx = op::batch_norm_backward(e, in[0], in[1], in[3], in[4], 1e-5f, false, dy, &dw,
                                                           bias ? &db : nullptr);
                       return std::vector<Tensor>{dx, dw, db, Tensor(), Tensor()};
                     }});
        v.back().inputs[3].differentiable = v.back().inputs[4].differentiable = false;
      }
    }
    // (Two values per channel would normalise to ±1 whatever they are: a gradient of ~0 that finite
    // differences cannot check. Six is the smallest case here.)
    for (Shape x : {Shape{3, 7, 7, 37}, Shape{3, 1, 2, 5}, Shape{4, 5, 3, 64}}) {
      const int64_t c = x[-1];
      v.push_back({"batch_norm_train/" + x.str(), OpKind::BatchNorm, 1e-5, {{x, 2.f, 4.f}, {{c}}, {{c}}},
                   [](const Exec& e, const std::vector<Tensor>& in) {
                     Tensor mean, var;
                     return op::batch_norm_train(e, in[0], in[1], &in[2], 1e-5f, mean, var);
                   },
                   [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor mean, var;
                     op::batch_norm_train(e, in[0], in[1], &in[2], 1e-5f, mean, var);
                     Tensor dw = zeros_like(in[1]), db = zeros_like(in[2]);
                     Tensor dx = op::batch_norm_backward(e, in[0], in[1], mean, var, 1e-5f, true, dy, &dw, &db);
                     return std::vector<Tensor>{dx, dw, db};
                   },
                   1e-5});
    }

    const std::vector<Activation> acts{{ActKind::GELU, 1, 0},        {ActKind::StarReLU, 0.8944f, -0.4472f},
                                       {ActKind::SquaredReLU, 1, 0}, {ActKind::ReLU, 1, 0},
                                       {ActKind::SiLU, 1, 0},        {ActKind::Identity, 1, 0}};
    // An odd size, and one of whole 16-byte vectors (the GPU's backward takes four elements a thread there).
    for (const Activation& a : acts)
      for (const Shape& shape : {Shape{3, 7, 7, 37}, Shape{2, 7, 7, 64}})
        v.push_back({fmt::format("activation/{}/{}", act_name(a.kind), shape.str()), OpKind::Activation, 1e-6,
                     {{shape, -6.f, 6.f}},
                     [a](const Exec& e, const std::vector<Tensor>& in) { return op::activation(e, in[0], a); },
                     [a](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                       return std::vector<Tensor>{op::activation_backward(e, in[0], a, dy, nullptr)};
                     }});
    // SoftShrink (λ = 0.5) away from its kinks at ±λ, where central differences are meaningless: each
    // branch on its own range (above λ, below -λ, and the dead zone).
    for (auto [lo, hi] : {std::pair<float, float>{0.6f, 6.f}, {-6.f, -0.6f}, {-0.4f, 0.4f}}) {
      const Activation a{ActKind::SoftShrink, 1, 0, 0.5f};
      v.push_back({fmt::format("activation/softshrink/[3, 7, 7, 37] in [{}, {}]", lo, hi), OpKind::Activation, 1e-6,
                   {{{3, 7, 7, 37}, lo, hi}},
                   [a](const Exec& e, const std::vector<Tensor>& in) { return op::activation(e, in[0], a); },
                   [a](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     return std::vector<Tensor>{op::activation_backward(e, in[0], a, dy, nullptr)};
                   }});
    }
    // StarReLU's own scalars: d scale, d bias as a two-element "input". An odd size (the GPU's scalar
    // path), whole 16-byte vectors in one chunk of the GPU's sums, and 64 chunks (its wide finish).
    for (const Shape& shape : {Shape{2, 5, 5, 7}, Shape{2, 5, 5, 8}, Shape{2, 64, 64, 64}}) {
      v.push_back({fmt::format("activation/starrelu-params/{}", shape.str()), OpKind::Activation, 1e-6,
                   {{shape, -3.f, 3.f}},
                   [](const Exec& e, const std::vector<Tensor>& in) {
                     return op::activation(e, in[0], {ActKind::StarReLU, 1.3f, 0.2f});
                   },
                   [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor ds = Tensor::zeros({1}), db = Tensor::zeros({1});
                     // Packed on the host (from a GPU backend, dx comes back first).
                     const Tensor dx =
                         op::activation_backward(e, in[0], {ActKind::StarReLU, 1.3f, 0.2f}, dy, &ds, &db).to(Device::CPU);
                     // Fold the scalar gradients into the returned input gradient check: compare dp too.
                     Tensor both = Tensor::empty({dx.numel() + 2});
                     std::copy(dx.data(), dx.data() + dx.numel(), both.data());
                     both.data()[dx.numel()] = ds.data()[0];
                     both.data()[dx.numel() + 1] = db.data()[0];
                     return std::vector<Tensor>{both};
                   }});
      v.back().inputs[0].differentiable = false;  // the packed gradient is not the input's shape
    }

    // 37 channels: the scalar column sums; 64: the 16-byte ones too (METAFORMER_CUDA_COLSUM=vec or
    // batch on the GPU), 147 rows leaving a tail of a thread's batch of rows.
    for (int64_t C : {37, 64})
    for (int mode = 0; mode < 4; ++mode)
      v.push_back({fmt::format("scaled_residual/[3, 7, 7, {}] rs={} ls={}", C, mode & 1, mode >> 1),
                   OpKind::ScaledResidual, 1e-6, {{{3, 7, 7, C}}, {{3, 7, 7, C}}, {{C}}, {{C}}},
                   [mode](const Exec& e, const std::vector<Tensor>& in) {
                     return op::scaled_residual_new(e, in[0], (mode & 1) ? &in[2] : nullptr, in[1],
                                                    (mode >> 1) ? &in[3] : nullptr);
                   },
                   [mode](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor drs = zeros_like(in[2]), dls = zeros_like(in[3]);
                     // Without a layer scale the branch output is not kept (MetaFormerBlock): undefined.
                     auto [dx, db] = op::scaled_residual_backward(e, in[0], (mode & 1) ? &in[2] : nullptr,
                                                                  (mode >> 1) ? in[1] : Tensor(),
                                                                  (mode >> 1) ? &in[3] : nullptr, dy,
                                                                  (mode & 1) ? &drs : nullptr,
                                                                  (mode >> 1) ? &dls : nullptr);
                     return std::vector<Tensor>{dx, db, (mode & 1) ? drs : Tensor(), (mode >> 1) ? dls : Tensor()};
                   }});

    for (Shape x : {Shape{3, 7, 7, 37}, Shape{1, 1, 1, 5}})
      v.push_back({"global_avg_pool/" + x.str(), OpKind::GlobalAvgPool, 1e-6, {{x}},
                   [](const Exec& e, const std::vector<Tensor>& in) { return op::global_avg_pool(e, in[0]); },
                   [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     return std::vector<Tensor>{op::global_avg_pool_backward(e, dy, in[0].shape())};
                   }});

    struct Att {
      int64_t b, n;
      int heads, d;
    };
    // Head sizes 64 and 100 reach the GPU kernels' two and four elements a lane (with a tail lane
    // mask at 100); 49 and 50 tokens are not multiples of a warp's 8 rows. CAFormer's last stage (49
    // tokens, 16 heads of 32) and 17 tokens (a row block of one real row) for the tensor-core backward.
    // 80 tokens: a second key tile of exactly 16 keys (the forward skips the key groups past N).
    for (Att a : {Att{3, 49, 5, 8}, Att{1, 196, 10, 32}, Att{2, 7, 1, 3}, Att{1, 1, 2, 4}, Att{1, 49, 2, 64},
                  Att{1, 50, 2, 100}, Att{2, 49, 16, 32}, Att{2, 17, 3, 32}, Att{1, 80, 2, 32}}) {
      const float scale = 1.f / std::sqrt(static_cast<float>(a.d));
      v.push_back({fmt::format("attention/B{} N{} heads{} d{}", a.b, a.n, a.heads, a.d), OpKind::Attention, 1e-5,
                   {{{a.b, a.n, 3 * a.heads * a.d}, -2.f, 2.f}},
                   [=](const Exec& e, const std::vector<Tensor>& in) {
                     return op::attention(e, in[0], a.heads, a.d, scale);
                   },
                   [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     return std::vector<Tensor>{op::attention_backward(e, in[0], a.heads, a.d, scale, dy)};
                   }});
      // The training step's forward kernel (head-major copies) on the same shapes, and its backward
      // given the forward's output and statistics where the backend keeps them
      // (Backend::attention_training_stats; the CUDA backend with METAFORMER_CUDA_ATTN_STATS=1).
      v.push_back({fmt::format("attention_training/B{} N{} heads{} d{}", a.b, a.n, a.heads, a.d), OpKind::Attention,
                   1e-5, {{{a.b, a.n, 3 * a.heads * a.d}, -2.f, 2.f}},
                   [=](const Exec& e, const std::vector<Tensor>& in) {
                     Tensor stats;
                     return op::attention(e, in[0], a.heads, a.d, scale, /*training=*/true, &stats);
                   },
                   [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor stats;
                     Tensor y = op::attention(e, in[0], a.heads, a.d, scale, /*training=*/true, &stats);
                     return std::vector<Tensor>{op::attention_backward(e, in[0], a.heads, a.d, scale, dy, &y, &stats)};
                   }});
    }

    for (Shape x : {Shape{3, 49, 37}, Shape{1, 16, 8}})
      v.push_back({"token_mix/" + x.str(), OpKind::TokenMix, 1e-5, {{x}, {{x[1], x[1]}}},
                   [](const Exec& e, const std::vector<Tensor>& in) { return op::token_mix(e, in[1], in[0]); },
                   [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor dr = zeros_like(in[1]);
                     Tensor dx = op::token_mix_backward(e, in[1], in[0], dy, &dr);
                     return std::vector<Tensor>{dx, dr};
                   }});
    // Rectangular with a bias: MLP-Mixer's token MLP (N -> hidden -> N) and ResMLP's linear_tokens.
    // ({37, 4, 5}: a 4 × 4 map over many samples, the CPU backend's small-map path.)
    for (auto [x, m] : std::vector<std::pair<Shape, int64_t>>{
             {{3, 49, 37}, 23}, {{2, 13, 5}, 13}, {{1, 9, 64}, 20}, {{37, 4, 5}, 4}})
      v.push_back({fmt::format("token_mix/{}->{}+bias", x.str(), m), OpKind::TokenMix, 1e-5, {{x}, {{m, x[1]}}, {{m}}},
                   [](const Exec& e, const std::vector<Tensor>& in) { return op::token_mix(e, in[1], in[0], &in[2]); },
                   [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor dr = zeros_like(in[1]), db = zeros_like(in[2]);
                     Tensor dx = op::token_mix_backward(e, in[1], in[0], dy, &dr, &db);
                     return std::vector<Tensor>{dx, dr, db};
                   }});

    // {2, 5, 5, 48} [16:40]: widths and offset in whole 16-byte vectors, as MambaOut's (the CUDA
    // backend's vector kernels).
    for (auto [x, off, w] : std::vector<std::tuple<Shape, int64_t, int64_t>>{
             {{3, 7, 7, 37}, 5, 19}, {{2, 3, 8}, 0, 8}, {{2, 5, 5, 48}, 16, 24}})
      v.push_back({fmt::format("channel_slice/{}[{}:{}]", x.str(), off, off + w), OpKind::ChannelSlice, 0.0, {{x}},
                   [off, w](const Exec& e, const std::vector<Tensor>& in) { return op::channel_slice(e, in[0], off, w); },
                   [off](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor dx = zeros_like(in[0]);
                     op::channel_slice_backward_(e, dy, off, dx);
                     return std::vector<Tensor>{dx};
                   }});

    // The gated products of MambaOut (gate first, value = identity part + conv output), gMixer (x1 ⊙
    // SiLU(x2)) and gMLP (u ⊙ a separately computed v).
    struct GluCase {
      const char* what;
      Shape t;
      int64_t extra, gate_offset, value_offset, width;
      ActKind act;
    };
    for (const GluCase& g : {GluCase{"mambaout", {3, 7, 7, 26}, 5, 0, 13, 13, ActKind::GELU},
                             GluCase{"gmixer", {2, 5, 38}, 0, 19, 0, 19, ActKind::SiLU},
                             GluCase{"gmlp", {1, 9, 10}, 5, 0, 0, 5, ActKind::Identity},
                             // every width and offset a multiple of 8: the GPU's 16-byte kernels (t's
                             // last 8 channels in neither window: their gradient is zero)
                             GluCase{"mambaout16B", {2, 5, 6, 48}, 8, 0, 24, 24, ActKind::GELU},
                             GluCase{"gmixer16B", {2, 5, 32}, 0, 16, 0, 16, ActKind::SiLU}}) {
      std::vector<OpInput> inputs{{g.t}};
      if (g.extra) {
        Shape c = g.t;
        c[-1] = g.extra;
        inputs.push_back({c});
      }
      v.push_back({fmt::format("glu/{} {}", g.what, g.t.str()), OpKind::Glu, 1e-6, inputs,
                   [g](const Exec& e, const std::vector<Tensor>& in) {
                     return op::glu(e, in[0], g.extra ? &in[1] : nullptr, g.gate_offset, g.value_offset, g.width,
                                    Activation{g.act});
                   },
                   [g](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor dc = g.extra ? zeros_like(in[1]) : Tensor();
                     Tensor dt = op::glu_backward(e, in[0], g.extra ? &in[1] : nullptr, g.gate_offset, g.value_offset,
                                                  Activation{g.act}, dy, g.extra ? &dc : nullptr);
                     return g.extra ? std::vector<Tensor>{dt, dc} : std::vector<Tensor>{dt};
                   }});
    }
    // MambaOut's gated product fused into fc2 (inference): one block of rows, and several.
    for (Shape t : {Shape{2, 7, 7, 26}, Shape{3, 40, 40, 26}}) {
      Shape c = t;
      c[-1] = 5;
      v.push_back({fmt::format("glu_linear/mambaout {}->11+bias", t.str()), OpKind::Linear, 1e-5,
                   {{t}, {c}, {{11, 13}, -0.3f, 0.3f}, {{11}}},
                   [](const Exec& e, const std::vector<Tensor>& in) {
                     return op::glu_linear(e, in[0], &in[1], 0, 13, 13, Activation{ActKind::GELU}, in[2], &in[3]);
                   },
                   nullptr});
    }

    // MambaOut's training gated CNN where the backend convolves channel slices: the depthwise
    // convolution of t's last channels read where they lie, then the gated product; backward through
    // gated_conv_backward (the slice's gradient written into dt, dW read from t's slice). 16-byte
    // aligned slices on maps of 14 rows or more (the tiled dW kernel), smaller maps (the units
    // kernel), and odd widths (scalar paths).
    struct SliceCase {
      Shape t;
      int64_t conv;
      int k;
    };
    for (const SliceCase& k : {SliceCase{{2, 16, 15, 64}, 16, 7}, SliceCase{{2, 9, 11, 48}, 8, 7},
                               SliceCase{{1, 7, 7, 26}, 5, 3}, SliceCase{{1, 6, 5, 20}, 10, 5}}) {
      const int64_t hidden = k.t[-1] / 2, off = k.t[-1] - k.conv;
      const ConvGeometry g{k.k, k.k, 1, 1, k.k / 2, k.k / 2};
      auto conv = [k, off, g](const Exec& e, const std::vector<Tensor>& in) {
        return op::depthwise_conv2d_slice(e, in[0], off, in[1], &in[2], g);
      };
      v.push_back({fmt::format("gated_conv/{} conv {} k{}", k.t.str(), k.conv, k.k), OpKind::DepthwiseConv2d, 1e-5,
                   {{k.t}, {{k.conv, 1, k.k, k.k}, -0.3f, 0.3f}, {{k.conv}}},
                   [conv, hidden](const Exec& e, const std::vector<Tensor>& in) {
                     Tensor c = conv(e, in);
                     return op::glu(e, in[0], &c, 0, hidden, hidden, Activation{ActKind::GELU});
                   },
                   [conv, hidden, off, g](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor c = conv(e, in);
                     Tensor dw = zeros_like(in[1]), db = zeros_like(in[2]);
                     Tensor dt = op::gated_conv_backward(e, in[0], c, hidden, off, Activation{ActKind::GELU}, in[1], g,
                                                         dy, &dw, &db);
                     return std::vector<Tensor>{dt, dw, db};
                   }});
    }

    // MambaOut's whole block (norm, fc1, the split, depthwise on the last channels, gated product, fc2,
    // residual): a 7x7 on a part of the hidden width, a 3x3 on all of it with GroupNorm and scales.
    struct GatedCase {
      Shape x;
      int64_t hidden, conv;
      int k;
      bool group, res_scale, layer_scale;
    };
    for (const GatedCase& k : {GatedCase{{2, 9, 11, 16}, 24, 8, 7, false, false, false},
                               GatedCase{{1, 7, 7, 24}, 40, 40, 3, true, true, true},
                               GatedCase{{2, 5, 6, 8}, 16, 3, 7, false, false, true}}) {
      const int64_t C = k.x[-1];
      std::vector<OpInput> inputs{{k.x, -2.f, 3.f},         {{C}, 0.5f, 1.5f},      {{2 * k.hidden, C}, -0.3f, 0.3f},
                                  {{2 * k.hidden}},         {{k.conv, 1, k.k, k.k}, -0.3f, 0.3f},
                                  {{k.conv}},               {{C, k.hidden}, -0.3f, 0.3f}, {{C}},
                                  {{C}, 0.5f, 1.5f},        {{C}, -0.5f, 0.5f},     {{C}}};
      v.push_back({fmt::format("gated_cnn_branch/{} hidden {} conv {} k{} {}{}{}", k.x.str(), k.hidden, k.conv, k.k,
                               k.group ? "group_norm1" : "layer_norm", k.res_scale ? " rs" : "",
                               k.layer_scale ? " ls" : ""),
                   OpKind::Linear, 1e-5, inputs,
                   [k](const Exec& e, const std::vector<Tensor>& in) {
                     BranchNorm n{k.group ? BranchNorm::Type::group_norm1 : BranchNorm::Type::layer_norm, &in[1],
                                  &in[10], k.group ? 1e-5f : 1e-6f};
                     const ConvGeometry g{k.k, k.k, 1, 1, k.k / 2, k.k / 2};
                     return op::gated_cnn_branch(e, in[0], n, in[2], &in[3], k.hidden, in[4], &in[5], g,
                                                 Activation{ActKind::GELU}, in[6], &in[7],
                                                 {k.res_scale ? &in[8] : nullptr, k.layer_scale ? &in[9] : nullptr});
                   },
                   nullptr});
    }

    // Spectral ops. Odd and even widths (the Nyquist column exists only for even W), odd heights.
    for (Shape x : {Shape{2, 7, 7, 5}, Shape{1, 6, 8, 3}, Shape{3, 5, 6, 4}, Shape{1, 1, 1, 2}}) {
      const int64_t W = x[2];
      v.push_back({"rfft2/" + x.str(), OpKind::Rfft2, 1e-5, {{x}},
                   [](const Exec& e, const std::vector<Tensor>& in) { return op::rfft2(e, in[0]); },
                   [W](const Exec& e, const std::vector<Tensor>&, const Tensor& dy) {
                     return std::vector<Tensor>{op::rfft2_backward(e, dy, W)};
                   }});
      const Shape spec{x[0], x[1], W / 2 + 1, 2, x[3]};
      v.push_back({"irfft2/" + spec.str() + "->W" + std::to_string(W), OpKind::Irfft2, 1e-5, {{spec}},
                   [W](const Exec& e, const std::vector<Tensor>& in) { return op::irfft2(e, in[0], W); },
                   [](const Exec& e, const std::vector<Tensor>&, const Tensor& dy) {
                     return std::vector<Tensor>{op::irfft2_backward(e, dy)};
                   }});
    }
    for (bool broadcast : {false, true}) {
      const Shape a{3, 5, 4, 2, 7};
      const Shape b = broadcast ? Shape{5, 4, 2, 7} : a;
      v.push_back({fmt::format("complex_mul/{}x{}", a.str(), b.str()), OpKind::ComplexMul, 1e-6, {{a}, {b}},
                   [](const Exec& e, const std::vector<Tensor>& in) { return op::complex_mul(e, in[0], in[1]); },
                   [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor db = zeros_like(in[1]);
                     Tensor da = op::complex_mul_backward(e, in[0], in[1], dy, &db);
                     return std::vector<Tensor>{da, db};
                   }});
    }
    for (Shape x : {Shape{2, 6, 8, 5}, Shape{1, 7, 5, 3}}) {
      const int64_t H = x[1], W = x[2];
      v.push_back({"haar2d/" + x.str(), OpKind::Haar2d, 1e-6, {{x}},
                   [](const Exec& e, const std::vector<Tensor>& in) { return op::haar2d(e, in[0]); },
                   [H, W](const Exec& e, const std::vector<Tensor>&, const Tensor& dy) {
                     return std::vector<Tensor>{op::haar2d_inverse(e, dy, H, W)};
                   }});
      const Shape bands{x[0], (H + 1) / 2, (W + 1) / 2, 4, x[3]};
      v.push_back({"haar2d_inverse/" + bands.str(), OpKind::Haar2d, 1e-6, {{bands}},
                   [H, W](const Exec& e, const std::vector<Tensor>& in) { return op::haar2d_inverse(e, in[0], H, W); },
                   [](const Exec& e, const std::vector<Tensor>&, const Tensor& dy) {
                     return std::vector<Tensor>{op::haar2d(e, dy)};
                   }});
    }

    add_wavemix_iformer_cases(v);

    for (Shape x : {Shape{3, 7, 7, 37}, Shape{1, 196, 8}})
      v.push_back({"channel_affine/" + x.str(), OpKind::ChannelAffine, 1e-6, {{x}, {{x[-1]}}, {{x[-1]}}},
                   [](const Exec& e, const std::vector<Tensor>& in) { return op::channel_affine(e, in[0], in[1], in[2]); },
                   [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor da = zeros_like(in[1]), db = zeros_like(in[2]);
                     Tensor dx = op::channel_affine_backward(e, in[0], in[1], dy, &da, &db);
                     return std::vector<Tensor>{dx, da, db};
                   }});

    v.push_back({"sample_scale/[3, 7, 7, 37]", OpKind::SampleScale, 0.0, {{{3, 7, 7, 37}}, {{3}}},
                 [](const Exec& e, const std::vector<Tensor>& in) { return op::sample_scale(e, in[0], in[1]); },
                 [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                   return std::vector<Tensor>{op::sample_scale(e, dy, in[1]), Tensor()};
                 }});
    v.back().inputs[1].differentiable = false;

    // Cross-entropy: the "output" is the per-sample loss gradient route: forward returns the mean
    // loss as a [1] tensor so that finite differences see the loss itself.
    for (Shape s : {Shape{3, 10}, Shape{5, 1000}, Shape{1, 1}})
      v.push_back({"cross_entropy/" + s.str(), OpKind::CrossEntropy, 1e-6, {{s, -4.f, 4.f}, {s, 0.f, 1.f}},
                   [](const Exec& e, const std::vector<Tensor>& in) {
                     const Tensor target = normalised_rows(in[1]);
                     Tensor dl;
                     return Tensor::full({1}, static_cast<float>(op::cross_entropy(e, in[0], target, dl)));
                   },
                   [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     const Tensor target = normalised_rows(in[1]);
                     Tensor dl;
                     op::cross_entropy(e, in[0], target, dl);
                     dl = dl.to(Device::CPU);  // scaled on the host (from a GPU backend, a copy)
                     for (float& g : dl.span()) g *= dy.data()[0];
                     return std::vector<Tensor>{dl, Tensor()};
                   }});
    for (size_t i = v.size() - 3; i < v.size(); ++i) v[i].inputs[1].differentiable = false;

    add_sequence_cases(v);
    add_softmax_gate_cases(v);
    add_optimizer_cases(v);
    // Layout ops. permute: RaftMLP's raft layouts (the last axis moved, and kept), and a 6-D case.
    for (auto [x, perm] : std::vector<std::pair<Shape, std::vector<int>>>{
             {Shape{2, 5, 6, 3, 4}, {0, 2, 4, 3, 1}},
             {Shape{2, 40, 6, 4, 2}, {0, 2, 3, 4, 1}},  // tiled: H against the merged channels
             {Shape{2, 5, 6, 2, 3}, {0, 1, 2, 4, 3}},
             {Shape{3, 4, 5}, {2, 0, 1}},
             {Shape{2, 3, 1, 4, 2, 3}, {5, 1, 0, 3, 2, 4}}}) {
      v.push_back({fmt::format("permute/{}->({})", x.str(), fmt::join(perm, ",")), OpKind::Permute, 0.0, {{x}},
                   [perm](const Exec& e, const std::vector<Tensor>& in) { return op::permute(e, in[0], perm); },
                   [perm](const Exec& e, const std::vector<Tensor>&, const Tensor& dy) {
                     return std::vector<Tensor>{op::permute(e, dy, op::inverse_permutation(perm))};
                   }});
    }
    // spatial_shift: MS-MLP's five groups of torch.chunk (the last narrower), shifts beyond the size.
    for (int axis : {1, 2})
      for (auto [x, width] : std::vector<std::pair<Shape, int64_t>>{{Shape{2, 5, 6, 14}, 3}, {Shape{1, 3, 2, 10}, 2}}) {
        const std::vector<int> shifts{-2, -1, 0, 1, 2};
        v.push_back({fmt::format("spatial_shift/{} axis {} groups of {}", x.str(), axis, width), OpKind::SpatialShift,
                     0.0, {{x}},
                     [=](const Exec& e, const std::vector<Tensor>& in) {
                       return op::spatial_shift(e, in[0], axis, width, shifts);
                     },
                     [=](const Exec& e, const std::vector<Tensor>&, const Tensor& dy) {
                       return std::vector<Tensor>{op::spatial_shift_backward(e, dy, axis, width, shifts)};
                     }});
      }

    // resize_bicubic: RaftMLP's resizes between the actual and the nominal token grids (up, down, and
    // one axis each way), and the identity size.
    for (auto [x, h, w] : std::vector<std::tuple<Shape, int64_t, int64_t>>{
             {Shape{2, 6, 8, 5}, 7, 7}, {Shape{1, 7, 7, 3}, 6, 8}, {Shape{2, 5, 9, 4}, 11, 4}, {Shape{1, 4, 5, 3}, 4, 5}}) {
      const int64_t H = x[1], W = x[2];
      v.push_back({fmt::format("resize_bicubic/{}->{}x{}", x.str(), h, w), OpKind::ResizeBicubic, 1e-5, {{x}},
                   [=](const Exec& e, const std::vector<Tensor>& in) { return op::resize_bicubic(e, in[0], h, w); },
                   [=](const Exec& e, const std::vector<Tensor>&, const Tensor& dy) {
                     return std::vector<Tensor>{op::resize_bicubic_backward(e, dy, H, W)};
                   }});
    }

    // strip_mix: Strip-MLP's proj_h (axis 2: rows) and proj_w (axis 1: columns), with groups of channels
    // (channel c in group c mod G), a non-square map, one group, and without the bias.
    for (auto [x, axis, groups, bias] : std::vector<std::tuple<Shape, int, int64_t, bool>>{
             {Shape{2, 5, 5, 12}, 2, 3, true}, {Shape{1, 6, 4, 8}, 1, 4, true}, {Shape{2, 3, 7, 6}, 2, 2, false},
             {Shape{1, 4, 3, 5}, 1, 1, true}, {Shape{2, 1, 1, 4}, 2, 2, true}}) {
      const int64_t L = x[axis];
      v.push_back({fmt::format("strip_mix/{} axis {} groups {}{}", x.str(), axis, groups, bias ? "+bias" : ""),
                   OpKind::StripMix, 1e-5, {{x}, {{groups * L, L, 1, 3}}, {{groups * L}}},
                   [=](const Exec& e, const std::vector<Tensor>& in) {
                     return op::strip_mix(e, in[0], in[1], bias ? &in[2] : nullptr, axis);
                   },
                   [=](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor dw = zeros_like(in[1]), db = zeros_like(in[2]);
                     Tensor dx = op::strip_mix_backward(e, in[0], in[1], axis, dy, true, &dw, bias ? &db : nullptr);
                     return std::vector<Tensor>{dx, dw, bias ? db : Tensor()};
                   }});
      if (!bias) v.back().inputs[2].differentiable = false;
    }
    // split_attention: Strip-MLP's reweight (three branches, softmax per sample and channel), and two.
    for (auto [x, K] : std::vector<std::pair<Shape, int>>{{Shape{2, 5, 6, 7}, 3}, {Shape{3, 4, 4, 5}, 2}}) {
      std::vector<OpInput> inputs(static_cast<size_t>(K), OpInput{x});
      inputs.push_back({{x[0], x[-1] * K}, -2.f, 2.f});
      v.push_back({fmt::format("split_attention/{} x {}", x.str(), K), OpKind::SplitAttention, 1e-6, inputs,
                   [K](const Exec& e, const std::vector<Tensor>& in) {
                     return op::split_attention(e, std::vector<Tensor>(in.begin(), in.begin() + K), in[K]);
                   },
                   [K](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor dl;
                     auto d = op::split_attention_backward(e, std::vector<Tensor>(in.begin(), in.begin() + K), in[K],
                                                           dy, dl);
                     d.push_back(dl);
                     return d;
                   }});
    }
    // grn: ConvNeXt-V2's GRN as Strip-MLP's channel mixing has it (gamma, beta [1, 1, 1, C]).
    for (Shape x : {Shape{2, 5, 6, 7}, Shape{1, 3, 3, 16}, Shape{3, 1, 2, 3}}) {
      const int64_t c = x[-1];
      v.push_back({"grn/" + x.str(), OpKind::Grn, 1e-6, {{x}, {{1, 1, 1, c}}, {{1, 1, 1, c}}},
                   [](const Exec& e, const std::vector<Tensor>& in) { return op::grn(e, in[0], in[1], in[2]); },
                   [](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     Tensor dg = zeros_like(in[1]), db = zeros_like(in[2]);
                     Tensor dx = op::grn_backward(e, in[0], in[1], dy, &dg, &db);
                     return std::vector<Tensor>{dx, dg, db};
                   }});
    }

    // gate: CAS-ViT's spatial (one sigmoid gate per position) and channel (one per sample and channel)
    // operations, and its plain product of two maps.
    for (auto [x, g, sigmoid] : std::vector<std::tuple<Shape, Shape, bool>>{
             {Shape{2, 5, 6, 7}, Shape{2, 5, 6, 1}, true}, {Shape{3, 4, 4, 9}, Shape{3, 9}, true},
             {Shape{2, 5, 6, 7}, Shape{2, 5, 6, 7}, false}, {Shape{1, 3, 2, 5}, Shape{1, 3, 2, 5}, true},
             {Shape{2, 1, 1, 3}, Shape{2, 3}, false}}) {
      v.push_back({fmt::format("gate/{} by {}{}", x.str(), g.str(), sigmoid ? " sigmoid" : ""), OpKind::Gate, 1e-6,
                   {{x}, {g, -3.f, 3.f}},
                   [sigmoid](const Exec& e, const std::vector<Tensor>& in) { return op::gate(e, in[0], in[1], sigmoid); },
                   [sigmoid](const Exec& e, const std::vector<Tensor>& in, const Tensor& dy) {
                     auto [dx, dg] = op::gate_backward(e, in[0], in[1], sigmoid, dy);
                     return std::vector<Tensor>{dx, dg};
                   }});
    }

    v.push_back({"nchw_to_nhwc/[3, 37, 7, 5]", OpKind::NchwToNhwc, 0.0, {{{3, 37, 7, 5}}},
                 [](const Exec& e, const std::vector<Tensor>& in) { return op::nchw_to_nhwc(e, in[0]); }, nullptr});
    return v;
  }();
  return cases;
}

double forward_tolerance(const OpCase& c, const Backend& backend) {
  if (backend.activation_dtype() == DType::bf16) return std::max(c.tolerance, kBf16Tolerance);
  const bool rounds = c.op == OpKind::Linear || c.op == OpKind::Conv2d || c.op == OpKind::Attention;
  if (backend.precision() == Precision::bf16 && rounds) return kBf16Tolerance;
  return c.tolerance;
}

std::vector<double> gradient_errors(const OpCase& c, const Backend& backend, const std::vector<Tensor>& in,
                                    const Tensor& dy, const std::vector<Tensor>& got,
                                    const std::vector<Tensor>& expected) {
  std::vector<double> magnitudes;
  if (c.term_magnitudes && backend.activation_dtype() == DType::bf16)
    magnitudes = c.term_magnitudes(Exec{&get_backend("ref"), nullptr}, in, dy);
  std::vector<double> errors(got.size(), -1.0);
  for (size_t i = 0; i < got.size() && i < expected.size(); ++i) {
    if (!got[i].defined() || !expected[i].defined()) continue;
    const Tensor host = got[i].to(Device::CPU);  // compared on the host: a GPU backend's come back first
    const double magnitude = i < magnitudes.size() ? magnitudes[i] : 0.0;
    if (magnitude > 0 && host.numel() == 1 && expected[i].numel() == 1)
      errors[i] = std::abs(static_cast<double>(host.data()[0]) - expected[i].data()[0]) / magnitude;
    else
      errors[i] = rel_error(host, expected[i]);
  }
  return errors;
}

double grad_tolerance(const OpCase& c, const Backend& backend) {
  if (backend.activation_dtype() == DType::bf16) return std::max(c.grad_tolerance, kBf16Tolerance);
  const bool rounds = c.op == OpKind::Linear || c.op == OpKind::Conv2d || c.op == OpKind::Attention;
  if (backend.precision() == Precision::bf16 && rounds) return std::max(c.grad_tolerance, kBf16Tolerance);
  return c.grad_tolerance;
}

}  // namespace mf::test
