#include "op_cases.h"

#include <fmt/format.h>

#include "test_util.h"

namespace mf::test {

namespace {

Tensor rnd(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) { return random_tensor(s, seed, lo, hi); }

void add_linear(std::vector<OpCase>& v, Shape x, int64_t out, bool bias) {
  const int64_t in = x[-1];
  v.push_back({fmt::format("linear/{}->{}{}", x.str(), out, bias ? "+bias" : ""), OpKind::Linear, 1e-5,
               [=](const Exec& e, uint64_t s) {
                 Tensor b = rnd({out}, s + 2);
                 return op::linear(e, rnd(x, s), rnd({out, in}, s + 1, -0.3f, 0.3f), bias ? &b : nullptr);
               }});
}

void add_conv(std::vector<OpCase>& v, Shape x, int64_t out, int k, int stride, int pad, bool bias) {
  const int64_t in = x[-1];
  v.push_back({fmt::format("conv2d/{}->{} k{} s{} p{}{}", x.str(), out, k, stride, pad, bias ? "+bias" : ""),
               OpKind::Conv2d, 1e-5, [=](const Exec& e, uint64_t s) {
                 Tensor b = rnd({out}, s + 2);
                 return op::conv2d(e, rnd(x, s), rnd({out, in, k, k}, s + 1, -0.3f, 0.3f), bias ? &b : nullptr,
                                   ConvGeometry{k, k, stride, stride, pad, pad});
               }});
}

void add_depthwise(std::vector<OpCase>& v, Shape x, int k, int stride, int pad, bool bias) {
  const int64_t c = x[-1];
  v.push_back({fmt::format("depthwise_conv2d/{} k{} s{} p{}{}", x.str(), k, stride, pad, bias ? "+bias" : ""),
               OpKind::DepthwiseConv2d, 1e-6, [=](const Exec& e, uint64_t s) {
                 Tensor b = rnd({c}, s + 2);
                 return op::depthwise_conv2d(e, rnd(x, s), rnd({c, 1, k, k}, s + 1), bias ? &b : nullptr,
                                             ConvGeometry{k, k, stride, stride, pad, pad});
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

    add_conv(v, {3, 23, 17, 3}, 13, 7, 4, 2, true);     // a stem on an odd image
    add_conv(v, {1, 7, 7, 21}, 19, 3, 2, 1, true);      // a downsampling
    add_conv(v, {2, 9, 6, 5}, 7, 3, 1, 1, false);

    add_depthwise(v, {3, 7, 7, 37}, 7, 1, 3, false);
    add_depthwise(v, {1, 14, 14, 130}, 7, 1, 3, true);  // > 2 channel blocks, one partial
    add_depthwise(v, {2, 5, 9, 3}, 3, 2, 1, true);
    add_depthwise(v, {1, 1, 1, 65}, 7, 1, 3, false);

    for (Shape x : {Shape{3, 7, 7, 37}, Shape{1, 1, 1, 5}, Shape{2, 2, 5, 64}, Shape{1, 56, 56, 64}})
      v.push_back({"pool_minus_input/" + x.str(), OpKind::PoolMinusInput, 1e-6,
                   [x](const Exec& e, uint64_t s) { return op::pool_minus_input(e, rnd(x, s), 3); }});
    v.push_back({"pool_minus_input/[1, 9, 8, 5] k5", OpKind::PoolMinusInput, 1e-6,
                 [](const Exec& e, uint64_t s) { return op::pool_minus_input(e, rnd({1, 9, 8, 5}, s), 5); }});

    for (bool bias : {false, true})
      for (Shape x : {Shape{3, 7, 7, 37}, Shape{1, 49, 512}, Shape{2, 1, 1, 2048}}) {
        const int64_t c = x[-1];
        v.push_back({fmt::format("layer_norm/{}{}", x.str(), bias ? "+bias" : ""), OpKind::LayerNorm, 1e-5,
                     [=](const Exec& e, uint64_t s) {
                       Tensor b = rnd({c}, s + 2);
                       // An offset mean checks that the variance is computed around the mean.
                       return op::layer_norm(e, rnd(x, s, 2.f, 4.f), rnd({c}, s + 1), bias ? &b : nullptr, 1e-6f);
                     }});
        v.push_back({fmt::format("group_norm1/{}{}", x.str(), bias ? "+bias" : ""), OpKind::GroupNorm1, 1e-5,
                     [=](const Exec& e, uint64_t s) {
                       Tensor b = rnd({c}, s + 2);
                       return op::group_norm1(e, rnd(x, s, 2.f, 4.f), rnd({c}, s + 1), bias ? &b : nullptr, 1e-5f);
                     }});
      }

    const std::vector<Activation> acts{{ActKind::GELU, 1, 0},        {ActKind::StarReLU, 0.8944f, -0.4472f},
                                       {ActKind::SquaredReLU, 1, 0}, {ActKind::ReLU, 1, 0},
                                       {ActKind::SiLU, 1, 0},        {ActKind::Identity, 1, 0}};
    for (const Activation& a : acts)
      v.push_back({fmt::format("activation/{}/[3, 7, 7, 37]", act_name(a.kind)), OpKind::Activation, 1e-6,
                   [a](const Exec& e, uint64_t s) { return op::activation(e, rnd({3, 7, 7, 37}, s, -6.f, 6.f), a); }});

    for (int mode = 0; mode < 4; ++mode)
      v.push_back({fmt::format("scaled_residual/[3, 7, 7, 37] rs={} ls={}", mode & 1, mode >> 1),
                   OpKind::ScaledResidual, 1e-6, [mode](const Exec& e, uint64_t s) {
                     Tensor rs = rnd({37}, s + 2), ls = rnd({37}, s + 3);
                     return op::scaled_residual(e, rnd({3, 7, 7, 37}, s), (mode & 1) ? &rs : nullptr,
                                                rnd({3, 7, 7, 37}, s + 1), (mode >> 1) ? &ls : nullptr);
                   }});

    for (Shape x : {Shape{3, 7, 7, 37}, Shape{1, 1, 1, 5}})
      v.push_back({"global_avg_pool/" + x.str(), OpKind::GlobalAvgPool, 1e-6,
                   [x](const Exec& e, uint64_t s) { return op::global_avg_pool(e, rnd(x, s)); }});

    struct Att {
      int64_t b, n;
      int heads, d;
    };
    for (Att a : {Att{3, 49, 5, 8}, Att{1, 196, 10, 32}, Att{2, 7, 1, 3}, Att{1, 1, 2, 4}})
      v.push_back({fmt::format("attention/B{} N{} heads{} d{}", a.b, a.n, a.heads, a.d), OpKind::Attention, 1e-5,
                   [a](const Exec& e, uint64_t s) {
                     return op::attention(e, rnd({a.b, a.n, 3 * a.heads * a.d}, s, -2.f, 2.f), a.heads, a.d,
                                          1.f / std::sqrt(static_cast<float>(a.d)));
                   }});

    for (Shape x : {Shape{3, 49, 37}, Shape{1, 16, 8}})
      v.push_back({"token_mix/" + x.str(), OpKind::TokenMix, 1e-5,
                   [x](const Exec& e, uint64_t s) { return op::token_mix(e, rnd({x[1], x[1]}, s + 1), rnd(x, s)); }});

    v.push_back({"nchw_to_nhwc/[3, 37, 7, 5]", OpKind::NchwToNhwc, 0.0,
                 [](const Exec& e, uint64_t s) { return op::nchw_to_nhwc(e, rnd({3, 37, 7, 5}, s)); }});
    return v;
  }();
  return cases;
}

}  // namespace mf::test
