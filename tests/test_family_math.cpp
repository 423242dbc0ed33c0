// The arithmetic of the paper networks' CUDA kernels (src/ops/cuda/families/family_math.h), run on the
// host against the reference backend: each kernel's per-element function over every element, and its
// fixed-order sums through plain loops in place of ../backward_common.cuh's column and group sums. On
// any machine, GPU or not: what only a GPU can check is the launches around these functions
// (tools/device/cuda_check.sh families). The bars are the op cases' (tests/op_cases.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <tuple>
#include <vector>

#include "ops/backend.h"
#include "ops/cuda/families/family_math.h"
#include "ops/cuda/families/host_tables.h"
#include "ops/cuda/families/sequence_math.h"
#include "ops/ops.h"
#include "test_util.h"

namespace mf::test {
namespace {

namespace fam = cuda::families;
namespace fm = cuda::families::math;

Exec ref() { return Exec{&get_backend("ref"), nullptr}; }

// y[i] = f(i) over a fresh tensor of `shape`.
Tensor each(const Shape& shape, const std::function<double(int64_t)>& f) {
  Tensor y = Tensor::empty(shape);
  for (int64_t i = 0; i < y.numel(); ++i) y.data()[i] = static_cast<float>(f(i));
  return y;
}

// What column_sums / group_sums compute, in the plainest order (the kernels' order differs only in
// how the double sums are grouped).
template <int K, class F>
void column_sums(const F& f, int64_t rows, int64_t cols) {
  for (int64_t col = 0; col < cols; ++col) {
    double acc[K] = {};
    for (int64_t r = 0; r < rows; ++r) {
      double v[K];
      f(r, col, v);
      for (int k = 0; k < K; ++k) acc[k] += v[k];
    }
    f.store(col, acc);
  }
}
template <int K, class F>
void group_sums(const F& f, int64_t groups, int64_t n) {
  for (int64_t g = 0; g < groups; ++g) {
    double acc[K] = {};
    for (int64_t i = 0; i < n; ++i) {
      double v[K];
      f(g, i, v);
      for (int k = 0; k < K; ++k) acc[k] += v[k];
    }
    f.finish(g, acc);
  }
}

TEST(FamilyMath, PermuteAndShiftMatchTheReference) {
  for (auto [shape, perm] :
       std::vector<std::pair<Shape, std::vector<int>>>{{Shape{2, 5, 6, 3, 4}, {0, 2, 4, 3, 1}},
                                                       {Shape{3, 4, 5}, {2, 0, 1}},
                                                       {Shape{2, 3, 1, 4, 2, 3}, {5, 1, 0, 3, 2, 4}}}) {
    const Tensor x = random_tensor(shape, 1);
    const Tensor expected = op::permute(ref(), x, perm);
    fam::PermuteGeometry g{};
    ASSERT_TRUE(fm::permute_geometry(shape.ndim(), shape.vec().data(), perm.data(), g));
    EXPECT_EQ(
        rel_error(each(expected.shape(), [&](int64_t i) { return x.data()[fm::permute_source(i, g)]; }), expected), 0)
        << shape.str();
  }
  fam::PermuteGeometry g{};
  const int64_t dims[7] = {1, 1, 1, 1, 1, 1, 1};
  const int bad[3] = {0, 3, 1};
  EXPECT_FALSE(fm::permute_geometry(7, dims, bad, g));
  EXPECT_FALSE(fm::permute_geometry(3, dims, bad, g));

  const std::vector<int> shifts{-2, -1, 0, 1, 2};
  for (int axis : {1, 2})
    for (auto [shape, width] :
         std::vector<std::pair<Shape, int64_t>>{{Shape{2, 5, 6, 14}, 3}, {Shape{1, 3, 2, 10}, 2}}) {
      const Tensor x = random_tensor(shape, 2);
      const Tensor expected = op::spatial_shift(ref(), x, axis, width, shifts);
      const Tensor got = each(shape, [&](int64_t i) {
        return x.data()[fm::shift_source(i, shape[1], shape[2], shape[3], axis, width, shifts.data())];
      });
      EXPECT_EQ(rel_error(got, expected), 0) << shape.str() << " axis " << axis;
    }
}

TEST(FamilyMath, BicubicResizeAndItsAdjointMatchTheReference) {
  for (auto [shape, h, w] : std::vector<std::tuple<Shape, int64_t, int64_t>>{{Shape{2, 6, 8, 5}, 7, 7},
                                                                             {Shape{1, 7, 7, 3}, 6, 8},
                                                                             {Shape{2, 5, 9, 4}, 11, 4},
                                                                             {Shape{1, 4, 5, 3}, 4, 5}}) {
    const int64_t B = shape[0], H = shape[1], W = shape[2], C = shape[3];
    const auto ty = fam::bicubic_host_tables(H, h), tx = fam::bicubic_host_tables(W, w);
    const fam::BicubicAxis ay = ty.view(), ax = tx.view();
    const Tensor x = random_tensor(shape, 3);
    const Tensor y = each({B, h, w, C}, [&](int64_t i) { return fm::bicubic_forward_at(x.data(), i, C, ay, ax); });
    EXPECT_LE(rel_error(y, op::resize_bicubic(ref(), x, h, w)), 1e-6) << shape.str();
    const Tensor dy = random_tensor({B, h, w, C}, 4);
    const Tensor dx = each(shape, [&](int64_t i) { return fm::bicubic_adjoint_at(dy.data(), i, C, ay, ax); });
    EXPECT_LE(rel_error(dx, op::resize_bicubic_backward(ref(), dy, H, W)), 1e-6) << shape.str();
  }
}

TEST(FamilyMath, PoolingMatchesTheReference) {
  for (auto [shape, k, s, p] : std::vector<std::tuple<Shape, int, int, int>>{
           {Shape{2, 7, 6, 5}, 3, 1, 1}, {Shape{1, 8, 8, 19}, 2, 2, 0}, {Shape{1, 7, 7, 4}, 3, 2, 1}}) {
    const ConvGeometry g{k, k, s, s, p, p};
    const fam::Window win{k, k, s, s, p, p};
    const int64_t H = shape[1], W = shape[2], C = shape[3];
    const Tensor x = random_tensor(shape, 5);  // ties have probability zero
    const Tensor expected = op::max_pool2d(ref(), x, g);
    const int64_t Ho = expected.dim(1), Wo = expected.dim(2);
    const Tensor y = each(expected.shape(), [&](int64_t i) {
      const int64_t at = fm::max_pool_source(x.data(), i, H, W, C, Ho, Wo, win);
      return at < 0 ? -INFINITY : x.data()[at];
    });
    EXPECT_EQ(rel_error(y, expected), 0) << shape.str();
    const Tensor dy = random_tensor(expected.shape(), 6);
    const Tensor dx =
        each(shape, [&](int64_t e) { return fm::max_pool_backward_at(x.data(), dy.data(), e, H, W, C, Ho, Wo, win); });
    EXPECT_LE(rel_error(dx, op::max_pool2d_backward(ref(), x, g, dy)), 1e-6) << shape.str();
  }
  for (auto [shape, f] : std::vector<std::pair<Shape, int>>{{Shape{2, 6, 8, 5}, 2}, {Shape{1, 9, 6, 3}, 3}}) {
    const int64_t B = shape[0], H = shape[1], W = shape[2], C = shape[3], h = H / f, w = W / f;
    const float scale = 1.f / static_cast<float>(f * f);
    const Tensor x = random_tensor(shape, 7), small = random_tensor({B, h, w, C}, 8);
    const Tensor pooled =
        each({B, h, w, C}, [&](int64_t e) { return fm::sum_pool_at(x.data(), e, H, W, C, f, scale); });
    EXPECT_LE(rel_error(pooled, op::avg_pool2d(ref(), x, f)), 1e-6);
    const Tensor summed = each({B, h, w, C}, [&](int64_t e) { return fm::sum_pool_at(x.data(), e, H, W, C, f, 1.f); });
    EXPECT_LE(rel_error(summed, op::upsample_nearest_backward(ref(), x, f)), 1e-6);
    const Tensor up = each(shape, [&](int64_t e) { return small.data()[fm::upsample_source(e, h, w, C, f)]; });
    EXPECT_EQ(rel_error(up, op::upsample_nearest(ref(), small, f)), 0);
    const Tensor up_scaled =
        each(shape, [&](int64_t e) { return scale * small.data()[fm::upsample_source(e, h, w, C, f)]; });
    EXPECT_LE(rel_error(up_scaled, op::avg_pool2d_backward(ref(), small, f)), 1e-6);
  }
}

// The transposed convolution as the GPU computes it: columns x · W (W reordered), scattered by col2im,
// plus the bias; dW from dy's im2col columns; dx as the convolution of dy with the same weight.
TEST(FamilyMath, TransposedConvolutionMatchesTheReference) {
  for (auto [shape, Co, k, s, p] : std::vector<std::tuple<Shape, int64_t, int, int, int>>{
           {Shape{2, 5, 6, 7}, 9, 4, 2, 1}, {Shape{1, 3, 4, 5}, 6, 3, 1, 0}, {Shape{1, 4, 3, 6}, 5, 2, 2, 0}}) {
    const int64_t B = shape[0], H = shape[1], W = shape[2], Ci = shape[3];
    const ConvGeometry g{k, k, s, s, p, p};
    const Tensor x = random_tensor(shape, 9), w = random_tensor({Ci, Co, k, k}, 10, -0.3f, 0.3f),
                 b = random_tensor({Co}, 11);
    const Tensor expected = op::conv_transpose2d(ref(), x, w, &b, g);
    const int64_t Ho = expected.dim(1), Wo = expected.dim(2), N = k * k * Co, M = B * H * W;
    const Tensor wg =
        each({N, Ci}, [&](int64_t e) { return w.data()[fm::conv_transpose_weight_source(e, Ci, Co, k, k)]; });
    std::vector<double> y(static_cast<size_t>(B * Ho * Wo * Co));
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double col = 0;
        for (int64_t ci = 0; ci < Ci; ++ci) col += static_cast<double>(x.data()[m * Ci + ci]) * wg.data()[n * Ci + ci];
        const int64_t co = n % Co, kx = (n / Co) % k, ky = n / (Co * k);
        const int64_t j = m % W, i = (m / W) % H, bb = m / (W * H);
        const int64_t oh = i * s - p + ky, ow = j * s - p + kx;
        if (oh >= 0 && oh < Ho && ow >= 0 && ow < Wo)
          y[static_cast<size_t>(((bb * Ho + oh) * Wo + ow) * Co + co)] += col;
      }
    const Tensor got = each(expected.shape(), [&](int64_t e) { return y[static_cast<size_t>(e)] + b.data()[e % Co]; });
    EXPECT_LE(rel_error(got, expected), 1e-6) << shape.str();

    const Tensor dy = random_tensor(expected.shape(), 12);
    Tensor dw_ref = Tensor::zeros(w.shape()), db_ref = Tensor::zeros({Co});
    const Tensor dx_ref = op::conv_transpose2d_backward(ref(), x, w, g, dy, true, &dw_ref, &db_ref);
    EXPECT_LE(rel_error(op::conv2d(ref(), dy, w, nullptr, g), dx_ref), 1e-6) << "dx is conv2d(dy, w): " << shape.str();
    // dwk[ci, (ky, kx, co)] = Σ_m x[m, ci] · im2col(dy)[m, (ky, kx, co)], then reordered to [Ci, Co, k, k].
    Tensor dw = Tensor::zeros(w.shape());
    for (int64_t ci = 0; ci < Ci; ++ci)
      for (int64_t n = 0; n < N; ++n) {
        const int64_t co = n % Co, kx = (n / Co) % k, ky = n / (Co * k);
        double acc = 0;
        for (int64_t m = 0; m < M; ++m) {
          const int64_t j = m % W, i = (m / W) % H, bb = m / (W * H);
          const int64_t oh = i * s - p + ky, ow = j * s - p + kx;
          if (oh >= 0 && oh < Ho && ow >= 0 && ow < Wo)
            acc += static_cast<double>(x.data()[m * Ci + ci]) * dy.data()[((bb * Ho + oh) * Wo + ow) * Co + co];
        }
        dw.data()[((ci * Co + co) * k + ky) * k + kx] = static_cast<float>(acc);
      }
    EXPECT_LE(rel_error(dw, dw_ref), 1e-6) << shape.str();
  }
}

TEST(FamilyMath, StripMixAndItsGradientsMatchTheReference) {
  for (auto [shape, axis, G] : std::vector<std::tuple<Shape, int, int64_t>>{{Shape{2, 5, 5, 12}, 2, 3},
                                                                            {Shape{1, 6, 4, 8}, 1, 4},
                                                                            {Shape{2, 3, 7, 6}, 2, 2},
                                                                            {Shape{1, 4, 3, 5}, 1, 1},
                                                                            {Shape{2, 1, 1, 4}, 2, 2}}) {
    const int64_t L = shape[axis];
    const fm::Strip st(shape[0], shape[1], shape[2], shape[3], axis, G);
    const Tensor x = random_tensor(shape, 13), w = random_tensor({G * L, L, 1, 3}, 14), b = random_tensor({G * L}, 15);
    const Tensor y = each(shape, [&](int64_t i) { return fm::strip_mix_at(x.data(), w.data(), b.data(), i, st); });
    EXPECT_LE(rel_error(y, op::strip_mix(ref(), x, w, &b, axis)), 1e-6) << shape.str();
    const Tensor dy = random_tensor(shape, 16);
    Tensor dw_ref = Tensor::zeros(w.shape()), db_ref = Tensor::zeros(b.shape());
    const Tensor dx_ref = op::strip_mix_backward(ref(), x, w, axis, dy, true, &dw_ref, &db_ref);
    const Tensor dx = each(shape, [&](int64_t i) { return fm::strip_mix_dx_at(w.data(), dy.data(), i, st); });
    EXPECT_LE(rel_error(dx, dx_ref), 1e-6) << shape.str();
    Tensor dw = Tensor::zeros(w.shape()), db = Tensor::zeros(b.shape());
    const int64_t terms = shape[0] * st.P * st.per_group();
    group_sums<1>(fm::StripWeightGrad<float>{x.data(), dy.data(), dw.data(), st}, G * L * L * 3, terms);
    group_sums<1>(fm::StripBiasGrad<float>{dy.data(), db.data(), st}, G * L, terms);
    EXPECT_LE(rel_error(dw, dw_ref), 1e-6) << shape.str();
    EXPECT_LE(rel_error(db, db_ref), 1e-6) << shape.str();
  }
}

template <int K>
void check_split_attention(const Shape& shape) {
  const int64_t B = shape[0], C = shape[-1], per = shape.numel() / (B * C);
  std::vector<Tensor> branches;
  fam::Branches<float> br{};
  br.K = K;
  for (int k = 0; k < K; ++k) {
    branches.push_back(random_tensor(shape, 20 + static_cast<uint64_t>(k)));
    br.p[k] = branches.back().data();
  }
  const Tensor logits = random_tensor({B, C * K}, 30, -2.f, 2.f);
  const Tensor y = each(shape, [&](int64_t i) { return fm::split_attention_at(br, logits.data(), i, per, C); });
  EXPECT_LE(rel_error(y, op::split_attention(ref(), branches, logits)), 1e-6) << shape.str();
  const Tensor dy = random_tensor(shape, 31);
  Tensor dlogits_ref;
  const auto d_ref = op::split_attention_backward(ref(), branches, logits, dy, dlogits_ref);
  std::vector<Tensor> d;
  fam::BranchGrads<float> dg{};
  dg.K = K;
  for (int k = 0; k < K; ++k) {
    d.push_back(Tensor::empty(shape));
    dg.p[k] = d.back().data();
  }
  for (int64_t i = 0; i < shape.numel(); ++i) fm::split_attention_dbranches_at(logits.data(), dy.data(), dg, i, per, C);
  for (int k = 0; k < K; ++k) EXPECT_LE(rel_error(d[static_cast<size_t>(k)], d_ref[static_cast<size_t>(k)]), 1e-6);
  Tensor dlogits = Tensor::empty(logits.shape());
  column_sums<K>(fm::SplitLogitGrad<float, K>{br, dy.data(), logits.data(), dlogits.data(), per, C}, per, B * C);
  EXPECT_LE(rel_error(dlogits, dlogits_ref), 1e-6) << shape.str();
}

TEST(FamilyMath, SplitAttentionAndItsGradientsMatchTheReference) {
  check_split_attention<3>(Shape{2, 5, 6, 7});
  check_split_attention<2>(Shape{3, 4, 4, 5});
  check_split_attention<4>(Shape{2, 3, 9});
}

TEST(FamilyMath, GrnAndItsGradientsMatchTheReference) {
  for (Shape shape : {Shape{2, 5, 6, 7}, Shape{1, 3, 3, 16}, Shape{3, 1, 2, 3}}) {
    const int64_t B = shape[0], N = shape[1] * shape[2], C = shape[3];
    const Tensor x = random_tensor(shape, 40), gamma = random_tensor({1, 1, 1, C}, 41),
                 beta = random_tensor({1, 1, 1, C}, 42);
    // Forward: Σx² per (sample, channel), then per sample (grn_norm_kernel) n = g / (mean g + 1e-6).
    std::vector<double> nx(static_cast<size_t>(B * C));
    column_sums<1>(fm::GrnSums<float, 1>{x.data(), nullptr, nx.data(), N, C}, N, B * C);
    for (int64_t b = 0; b < B; ++b) {
      double mean = 0;
      for (int64_t c = 0; c < C; ++c) mean += std::sqrt(nx[static_cast<size_t>(b * C + c)]);
      mean /= static_cast<double>(C);
      for (int64_t c = 0; c < C; ++c)
        nx[static_cast<size_t>(b * C + c)] = std::sqrt(nx[static_cast<size_t>(b * C + c)]) / (mean + 1e-6);
    }
    const Tensor y =
        each(shape, [&](int64_t i) { return fm::grn_at(x.data(), gamma.data(), beta.data(), nx.data(), i, N, C); });
    EXPECT_LE(rel_error(y, op::grn(ref(), x, gamma, beta)), 1e-6) << shape.str();

    const Tensor dy = random_tensor(shape, 43);
    Tensor dg_ref = Tensor::zeros(gamma.shape()), db_ref = Tensor::zeros(beta.shape());
    const Tensor dx_ref = op::grn_backward(ref(), x, gamma, dy, &dg_ref, &db_ref);
    std::vector<double> S(static_cast<size_t>(B * C * 3)), E(static_cast<size_t>(B * C * 4));
    column_sums<3>(fm::GrnSums<float, 3>{x.data(), dy.data(), S.data(), N, C}, N, B * C);
    for (int64_t b = 0; b < B; ++b) {  // grn_backward_coef_kernel
      const double* s = S.data() + b * C * 3;
      double mean = 0, sg = 0;
      for (int64_t c = 0; c < C; ++c) mean += std::sqrt(s[c * 3]);
      mean /= static_cast<double>(C);
      for (int64_t c = 0; c < C; ++c) sg += gamma.data()[c] * s[c * 3 + 1] * std::sqrt(s[c * 3]);
      for (int64_t c = 0; c < C; ++c)
        fm::grn_coefficients(s + c * 3, gamma.data()[c], 1.0 / (mean + 1e-6), sg, C, E.data() + (b * C + c) * 4);
    }
    Tensor dg = Tensor::zeros(gamma.shape()), db = Tensor::zeros(beta.shape());
    for (int64_t c = 0; c < C; ++c) {  // grn_param_grad_kernel
      double a = 0, z = 0;
      for (int64_t b = 0; b < B; ++b)
        a += E[static_cast<size_t>((b * C + c) * 4 + 2)], z += E[static_cast<size_t>((b * C + c) * 4 + 3)];
      dg.data()[c] = static_cast<float>(a);
      db.data()[c] = static_cast<float>(z);
    }
    const Tensor dx = each(shape, [&](int64_t i) {  // grn_dx_kernel
      const double* e = E.data() + ((i / (N * C)) * C + i % C) * 4;
      return dy.data()[i] * e[0] + e[1] * x.data()[i];
    });
    EXPECT_LE(rel_error(dx, dx_ref), 1e-6) << shape.str();
    EXPECT_LE(rel_error(dg, dg_ref), 1e-6) << shape.str();
    EXPECT_LE(rel_error(db, db_ref), 1e-6) << shape.str();
  }
}

TEST(FamilyMath, GateAndItsGradientsMatchTheReference) {
  for (auto [shape, gshape, sig] :
       std::vector<std::tuple<Shape, Shape, bool>>{{Shape{2, 5, 6, 7}, Shape{2, 5, 6, 1}, true},
                                                   {Shape{3, 4, 4, 9}, Shape{3, 9}, true},
                                                   {Shape{2, 5, 6, 7}, Shape{2, 5, 6, 7}, false},
                                                   {Shape{2, 1, 1, 3}, Shape{2, 3}, false}}) {
    const int64_t B = shape[0], C = shape[-1], per = shape.numel() / (B * C);
    const fam::GateKind kind = gshape == shape                 ? fam::GateKind::full
                               : gshape.ndim() == shape.ndim() ? fam::GateKind::position
                                                               : fam::GateKind::channel;
    const Tensor x = random_tensor(shape, 50), g = random_tensor(gshape, 51, -3.f, 3.f), dy = random_tensor(shape, 52);
    const Tensor y = each(
        shape, [&](int64_t i) { return x.data()[i] * fm::gate_value(g.data()[fm::gate_index(i, per, C, kind)], sig); });
    EXPECT_LE(rel_error(y, op::gate(ref(), x, g, sig)), 1e-6) << shape.str() << " by " << gshape.str();
    const auto [dx_ref, dg_ref] = op::gate_backward(ref(), x, g, sig, dy);
    const Tensor dx = each(shape, [&](int64_t i) {
      return dy.data()[i] * fm::gate_value(g.data()[fm::gate_index(i, per, C, kind)], sig);
    });
    Tensor dg = Tensor::empty(gshape);
    if (kind == fam::GateKind::full)
      for (int64_t i = 0; i < dg.numel(); ++i)
        dg.data()[i] =
            static_cast<float>(static_cast<double>(dy.data()[i]) * x.data()[i] * fm::gate_slope(g.data()[i], sig));
    else if (kind == fam::GateKind::position)
      group_sums<1>(fm::PositionGateGrad<float>{x.data(), dy.data(), g.data(), dg.data(), C, sig}, B * per, C);
    else
      column_sums<1>(fm::ChannelGateGrad<float>{x.data(), dy.data(), g.data(), dg.data(), per, C, sig}, per, B * C);
    EXPECT_LE(rel_error(dx, dx_ref), 1e-6) << shape.str();
    EXPECT_LE(rel_error(dg, dg_ref), 1e-6) << shape.str() << " by " << gshape.str();
  }
}

TEST(FamilyMath, BatchNormAndItsGradientsMatchTheReference) {
  for (Shape shape : {Shape{3, 7, 7, 37}, Shape{3, 1, 2, 5}, Shape{2, 49, 64}}) {
    const int64_t C = shape[-1], rows = shape.numel() / C;
    const Tensor x = random_tensor(shape, 60, 2.f, 4.f), w = random_tensor({C}, 61), b = random_tensor({C}, 62);
    Tensor mean_ref, var_ref;
    const Tensor y_ref = op::batch_norm_train(ref(), x, w, &b, 1e-5f, mean_ref, var_ref);
    Tensor mean = Tensor::empty({C}), var = Tensor::empty({C});
    std::vector<double> mean_d(static_cast<size_t>(C));
    column_sums<1>(fm::ChannelMean<float>{x.data(), mean.data(), mean_d.data(), rows, C}, rows, C);
    column_sums<1>(fm::ChannelVar<float>{x.data(), mean_d.data(), var.data(), rows, C}, rows, C);
    EXPECT_LE(rel_error(mean, mean_ref), 1e-6) << shape.str();
    EXPECT_LE(rel_error(var, var_ref), 1e-6) << shape.str();
    const Tensor y = each(shape, [&](int64_t i) {
      return fm::batch_norm_at(x.data(), w.data(), b.data(), mean.data(), var.data(), 1e-5f, i, C);
    });
    EXPECT_LE(rel_error(y, y_ref), 1e-6) << shape.str();
    const Tensor dy = random_tensor(shape, 63);
    for (bool batch_stats : {true, false}) {
      Tensor dw_ref = Tensor::zeros({C}), db_ref = Tensor::zeros({C});
      const Tensor dx_ref = op::batch_norm_backward(ref(), x, w, mean, var, 1e-5f, batch_stats, dy, &dw_ref, &db_ref);
      Tensor dw = Tensor::zeros({C}), db = Tensor::zeros({C});
      std::vector<double> sums(static_cast<size_t>(2 * C));
      column_sums<2>(fm::BatchNormSums<float>{x.data(), dy.data(), mean.data(), var.data(), 1e-5f, sums.data(),
                                              dw.data(), db.data(), C},
                     rows, C);
      const Tensor dx = each(shape, [&](int64_t i) {
        return fm::batch_norm_dx_at(x.data(), w.data(), mean.data(), var.data(), 1e-5f, batch_stats, dy.data(),
                                    sums.data(), i, rows, C);
      });
      EXPECT_LE(rel_error(dx, dx_ref), 1e-6) << shape.str() << (batch_stats ? " train" : " eval");
      EXPECT_LE(rel_error(dw, dw_ref), 1e-6) << shape.str();
      EXPECT_LE(rel_error(db, db_ref), 1e-6) << shape.str();
    }
  }
}

TEST(FamilyMath, PositionTablesAndTheirGradientMatchTheReference) {
  const int64_t B = 3, N = 9, D = 7, T = 12;
  const Tensor x = random_tensor({B, N, D}, 70), pos = random_tensor({T, D}, 71), dy = random_tensor({B, N, D}, 72);
  const Tensor y = each(x.shape(), [&](int64_t i) { return fm::add_positions_at(x.data(), pos.data(), i, N * D); });
  EXPECT_EQ(rel_error(y, op::add_positions(ref(), x, pos)), 0);
  Tensor dpos_ref = Tensor::zeros(pos.shape()), dpos = Tensor::zeros(pos.shape());
  op::add_positions_backward_(ref(), dy, dpos_ref);
  column_sums<1>(fm::PositionGrad<float>{dy.data(), dpos.data(), N * D}, B, N * D);
  EXPECT_LE(rel_error(dpos, dpos_ref), 1e-7);
}

TEST(FamilyMath, EmbeddingRmsNormAndSoftmaxGateMatchTheReference) {
  // Embedding: ids with repeats and an unused id; the gradient through the host's counting sort.
  const int64_t V = 13, D = 7;
  Tensor ids = Tensor::empty({3, 11});
  for (int64_t i = 0; i < ids.numel(); ++i) ids.data()[i] = static_cast<float>((i * 5 + 3) % 12);
  const Tensor table = random_tensor({V, D}, 80), dy = random_tensor({3, 11, D}, 81);
  const Tensor y = each({3, 11, D}, [&](int64_t i) { return table.data()[fm::embedding_source(ids.data(), i, D)]; });
  EXPECT_EQ(rel_error(y, op::embedding(ref(), ids, table)), 0);
  Tensor dt_ref = Tensor::zeros(table.shape());
  op::embedding_backward_(ref(), ids, dy, dt_ref);
  const fam::TokenRows rows = fam::token_rows(ids.data(), ids.numel(), V);
  ASSERT_EQ(rows.begin.back(), ids.numel());
  const Tensor dt = each(table.shape(), [&](int64_t e) {
    return fm::embedding_grad_at(dy.data(), rows.order.data(), rows.begin.data(), e, D);
  });
  EXPECT_LE(rel_error(dt, dt_ref), 1e-7);

  // RMSNorm: rows of 5 and of 64 channels.
  for (Shape shape : {Shape{2, 3, 5}, Shape{4, 64}}) {
    const int64_t C = shape[-1], rows_n = shape.numel() / C;
    const Tensor x = random_tensor(shape, 82), w = random_tensor({C}, 83), g = random_tensor(shape, 84);
    std::vector<double> stats(static_cast<size_t>(rows_n * 2));
    group_sums<1>(fm::RmsRowSums<float, 1>{x.data(), nullptr, w.data(), stats.data(), C, 1e-5f}, rows_n, C);
    const Tensor yn = each(shape, [&](int64_t i) { return fm::rms_norm_at(x.data(), w.data(), stats.data(), i, C); });
    EXPECT_LE(rel_error(yn, op::rms_norm(ref(), x, w, 1e-5f)), 1e-6) << shape.str();
    Tensor dw_ref = Tensor::zeros({C}), dw = Tensor::zeros({C});
    const Tensor dx_ref = op::rms_norm_backward(ref(), x, w, 1e-5f, g, &dw_ref);
    group_sums<2>(fm::RmsRowSums<float, 2>{x.data(), g.data(), w.data(), stats.data(), C, 1e-5f}, rows_n, C);
    const Tensor dx =
        each(shape, [&](int64_t i) { return fm::rms_norm_dx_at(x.data(), w.data(), g.data(), stats.data(), i, C); });
    column_sums<1>(fm::RmsWeightGrad<float>{x.data(), g.data(), stats.data(), dw.data(), C}, rows_n, C);
    EXPECT_LE(rel_error(dx, dx_ref), 1e-6) << shape.str();
    EXPECT_LE(rel_error(dw, dw_ref), 1e-6) << shape.str();
  }

  // PatchTSMixer's gate over [A, N, I].
  const Shape s{3, 5, 4};
  const Tensor x = random_tensor(s, 85), logits = random_tensor(s, 86, -2.f, 2.f), g = random_tensor(s, 87);
  const Tensor yg = each(s, [&](int64_t i) { return fm::softmax_gate_at(x.data(), logits.data(), i, 5, 4); });
  EXPECT_LE(rel_error(yg, op::softmax_gate(ref(), x, logits)), 1e-6);
  const auto [dx_ref, dl_ref] = op::softmax_gate_backward(ref(), x, logits, g);
  Tensor dx = Tensor::empty(s), dl = Tensor::empty(s);
  for (int64_t i = 0; i < s.numel(); ++i) {
    double a, b;
    fm::softmax_gate_backward_at(x.data(), logits.data(), g.data(), i, 5, 4, a, b);
    dx.data()[i] = static_cast<float>(a);
    dl.data()[i] = static_cast<float>(b);
  }
  EXPECT_LE(rel_error(dx, dx_ref), 1e-6);
  EXPECT_LE(rel_error(dl, dl_ref), 1e-6);
}

TEST(FamilyMath, CausalConvolutionAndAttentionMatchTheReference) {
  for (const auto& [shape, K, bias] : std::vector<std::tuple<Shape, int64_t, bool>>{
           {{3, 13, 7}, 4, true}, {{2, 5, 3}, 1, false}, {{1, 3, 5}, 6, true}}) {
    const int64_t L = shape[1], C = shape[2];
    const Tensor x = random_tensor(shape, 90), w = random_tensor({C, 1, K}, 91), b = random_tensor({C}, 92),
                 dy = random_tensor(shape, 93);
    const float* bp = bias ? b.data() : nullptr;
    const Tensor y = each(shape, [&](int64_t i) { return fm::causal_conv1d_at(x.data(), w.data(), bp, i, L, C, K); });
    EXPECT_LE(rel_error(y, op::causal_conv1d(ref(), x, w, bias ? &b : nullptr)), 1e-6) << shape.str();
    Tensor dw_ref = Tensor::zeros(w.shape()), db_ref = Tensor::zeros({C});
    const Tensor dx_ref = op::causal_conv1d_backward(ref(), x, w, dy, &dw_ref, &db_ref);
    const Tensor dx = each(shape, [&](int64_t i) { return fm::causal_conv1d_dx_at(w.data(), dy.data(), i, L, C, K); });
    Tensor dw = Tensor::zeros(w.shape());
    group_sums<1>(fm::CausalConvWeightGrad<float>{x.data(), dy.data(), dw.data(), L, C, K}, C * K, shape[0] * L);
    EXPECT_LE(rel_error(dx, dx_ref), 1e-6) << shape.str();
    EXPECT_LE(rel_error(dw, dw_ref), 1e-6) << shape.str();
  }
  struct Att {
    int64_t b, n;
    int heads, d;
  };
  for (Att a : {Att{3, 49, 5, 8}, Att{2, 7, 1, 3}, Att{1, 1, 2, 4}}) {
    const float scale = 1.f / std::sqrt(static_cast<float>(a.d));
    const int64_t A = a.heads * a.d;
    const Tensor qkv = random_tensor({a.b, a.n, 3 * A}, 94, -2.f, 2.f), dy = random_tensor({a.b, a.n, A}, 95);
    const fm::CausalAttention att{a.n, a.heads, a.d, static_cast<double>(scale)};
    Tensor y = Tensor::empty({a.b, a.n, A}), dqkv = Tensor::empty(qkv.shape());
    std::vector<double> stats(static_cast<size_t>(a.b * a.heads * a.n * 3));
    for (int64_t b = 0; b < a.b; ++b)
      for (int h = 0; h < a.heads; ++h)
        for (int64_t i = 0; i < a.n; ++i) {
          att.forward_row(qkv.data(), y.data(), b, h, i);
          att.backward_stats(qkv.data(), dy.data(), b, h, i, stats.data() + ((b * a.heads + h) * a.n + i) * 3);
        }
    for (int64_t b = 0; b < a.b; ++b)
      for (int h = 0; h < a.heads; ++h)
        for (int64_t i = 0; i < a.n; ++i) {
          att.dq_row(qkv.data(), dy.data(), stats.data() + ((b * a.heads + h) * a.n + i) * 3, dqkv.data(), b, h, i);
          att.dkv_row(qkv.data(), dy.data(), stats.data(), dqkv.data(), b, h, i);
        }
    EXPECT_LE(rel_error(y, op::causal_attention(ref(), qkv, a.heads, a.d, scale)), 1e-6) << a.n;
    EXPECT_LE(rel_error(dqkv, op::causal_attention_backward(ref(), qkv, a.heads, a.d, scale, dy)), 1e-6) << a.n;
  }
}

TEST(FamilyMath, SelectiveScanAndItsGradientsMatchTheReference) {
  struct Case {
    int64_t b, l, d, n, rank, chunk;
  };
  for (Case k : {Case{2, 13, 6, 4, 3, 4}, Case{1, 40, 5, 3, 1, 7}, Case{3, 9, 4, 2, 2, 64}, Case{1, 6, 3, 5, 0, 1}}) {
    const int64_t B = k.b, L = k.l, D = k.d, N = k.n, W = k.rank + 2 * N;
    const Tensor u = random_tensor({B, L, D}, 100), dt_raw = random_tensor({B, L, D}, 101, -3.f, 1.f),
                 a_log = random_tensor({D, N}, 102), bc = random_tensor({B, L, W}, 103),
                 d_skip = random_tensor({D}, 104), z = random_tensor({B, L, D}, 105, -2.f, 2.f),
                 dy = random_tensor({B, L, D}, 106);
    const fm::Scan<float> sc{u.data(), dt_raw.data(), bc.data(), z.data(), a_log.data(), d_skip.data(), k.rank, L, D, N,
                             W};
    Tensor y = Tensor::empty({B, L, D});
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < D; ++d) sc.forward(b, d, y.data());
    EXPECT_LE(rel_error(y, op::selective_scan(ref(), u, dt_raw, a_log, bc, k.rank, d_skip, z)), 1e-6) << L;

    Tensor da_ref = Tensor::zeros(a_log.shape()), dd_ref = Tensor::zeros(d_skip.shape());
    const op::SelectiveScanGrads g =
        op::selective_scan_backward(ref(), u, dt_raw, a_log, bc, k.rank, d_skip, z, dy, k.chunk, &da_ref, &dd_ref);
    // What selective_scan_backward's launches do, in order (families/scan.cu).
    const int64_t S = std::min<int64_t>(std::max<int64_t>(k.chunk, 1), fm::kMaxScanChunk), chunks = (L + S - 1) / S;
    std::vector<double> ckpt(static_cast<size_t>(B * D * chunks * N)), lam(static_cast<size_t>(B * D * N)),
        next_dt(static_cast<size_t>(B * D)), gA(static_cast<size_t>(B * D * N)), gD(static_cast<size_t>(B * D)),
        contrib(static_cast<size_t>(B * S * D * 2 * N)), states(static_cast<size_t>((S + 1) * N));
    Tensor du = Tensor::empty(u.shape()), ddt = Tensor::empty(u.shape()), dz = Tensor::empty(u.shape()),
           dbc = Tensor::zeros(bc.shape());
    for (int64_t r = 0; r < B * D; ++r) sc.checkpoints(r / D, r % D, S, ckpt.data() + r * chunks * N);
    for (int64_t c = chunks - 1; c >= 0; --c) {
      for (int64_t r = 0; r < B * D; ++r)
        sc.backward_chunk(dy.data(), r / D, r % D, c, S, ckpt.data() + r * chunks * N, lam.data() + r * N,
                          next_dt[static_cast<size_t>(r)], gA.data() + r * N, gD[static_cast<size_t>(r)],
                          contrib.data(), states.data(), du.data(), ddt.data(), dz.data());
      for (int64_t b = 0; b < B; ++b)
        for (int64_t tl = 0; tl < S && c * S + tl < L; ++tl)
          for (int64_t j = 0; j < 2 * N; ++j)
            dbc.data()[(b * L + c * S + tl) * W + k.rank + j] =
                static_cast<float>(fm::scan_bc_grad_at(contrib.data(), b, tl, j, S, D, N));
    }
    Tensor da = Tensor::zeros(a_log.shape()), dd = Tensor::zeros(d_skip.shape());
    for (int64_t d = 0; d < D; ++d) {
      for (int64_t n = 0; n < N; ++n) {
        double sum = 0;
        for (int64_t b = 0; b < B; ++b) sum += gA[static_cast<size_t>((b * D + d) * N + n)];
        da.data()[d * N + n] = static_cast<float>(sum * sc.A(d, n));
      }
      double sum = 0;
      for (int64_t b = 0; b < B; ++b) sum += gD[static_cast<size_t>(b * D + d)];
      dd.data()[d] = static_cast<float>(sum);
    }
    EXPECT_LE(rel_error(du, g.du), 1e-6) << L;
    EXPECT_LE(rel_error(ddt, g.ddt_raw), 1e-6) << L;
    EXPECT_LE(rel_error(dz, g.dz), 1e-6) << L;
    EXPECT_LE(rel_error(dbc, g.dbc), 1e-6) << L;
    EXPECT_LE(rel_error(da, da_ref), 1e-6) << L;
    EXPECT_LE(rel_error(dd, dd_ref), 1e-6) << L;
  }
}

TEST(FamilyMath, PonetPoolingAndItsGradientMatchTheReference) {
  struct Pool {
    int64_t b, l, c;
    int heads;
    int64_t segment;
    int local;
  };
  for (Pool k : {Pool{2, 13, 8, 2, 5, 3}, Pool{1, 12, 6, 3, 4, 5}, Pool{3, 1, 4, 1, 2, 3}, Pool{1, 9, 4, 4, 10, 7}}) {
    const Tensor p = random_tensor({k.b, k.l, 6 * k.c}, 110, -2.f, 2.f), dy = random_tensor({k.b, k.l, k.c}, 111);
    const fm::Ponet<float> pn{p.data(), k.l, k.c, k.heads, k.c / k.heads, k.segment, k.local};
    std::vector<double> work(static_cast<size_t>(k.b * pn.work_per_sequence()));
    for (int64_t b = 0; b < k.b; ++b) pn.global(b, work.data() + b * pn.work_per_sequence());
    const Tensor y = each({k.b, k.l, k.c}, [&](int64_t i) {
      const int64_t c = i % k.c, t = (i / k.c) % k.l, b = i / (k.c * k.l);
      return pn.forward_at(b, t, c, work.data() + b * pn.work_per_sequence());
    });
    EXPECT_LE(rel_error(y, op::ponet_pool(ref(), p, k.heads, k.segment, k.local)), 1e-6) << k.l;
    for (int64_t i = 0; i < k.b * k.c; ++i)
      pn.dg2_at(dy.data(), i / k.c, i % k.c, work.data() + (i / k.c) * pn.work_per_sequence());
    for (int64_t b = 0; b < k.b; ++b) pn.global_backward(b, work.data() + b * pn.work_per_sequence());
    const Tensor dp = each(p.shape(), [&](int64_t e) { return pn.dp_at(dy.data(), e, work.data()); });
    EXPECT_LE(rel_error(dp, op::ponet_pool_backward(ref(), p, k.heads, k.segment, k.local, dy)), 1e-6) << k.l;
  }
}

TEST(FamilyMath, BidirectionalScanAndItsGradientsMatchTheReference) {
  struct Case {
    int64_t b, l, d, n, rank, heads, chunk;
  };
  for (Case k : {Case{2, 13, 6, 4, 3, 2, 4}, Case{1, 40, 4, 3, 1, 1, 7}, Case{3, 9, 4, 2, 2, 4, 64},
                 Case{1, 1, 3, 2, 0, 3, 1}}) {
    const int64_t B = k.b, L = k.l, D = k.d, N = k.n, W = k.rank + 4 * N, H = k.heads;
    const Tensor u = random_tensor({B, L, D}, 120), dt_raw = random_tensor({B, L, 2 * D}, 121, -3.f, 1.f),
                 a_log = random_tensor({D, N}, 122), bc = random_tensor({B, L, W}, 123),
                 dd = random_tensor({B, L, H}, 124), d_skip = random_tensor({H}, 125),
                 dy = random_tensor({B, L, D}, 126);
    const fm::BiScan<float> sc{
        u.data(), dt_raw.data(), bc.data(), dd.data(), a_log.data(), d_skip.data(), k.rank, L, D, N, W, H};
    std::vector<double> ybuf(static_cast<size_t>(B * L * D));
    Tensor y = Tensor::empty({B, L, D});
    for (int64_t r = 0; r < B * D; ++r) sc.forward_g_terms(r / D, r % D, ybuf.data());
    for (int64_t r = 0; r < B * D; ++r) sc.forward_out(r / D, r % D, ybuf.data(), y.data());
    EXPECT_LE(rel_error(y, op::bidirectional_scan(ref(), u, dt_raw, a_log, bc, k.rank, dd, d_skip)), 1e-6) << L;

    Tensor da_ref = Tensor::zeros(a_log.shape()), ds_ref = Tensor::zeros(d_skip.shape());
    const op::BidirectionalScanGrads g =
        op::bidirectional_scan_backward(ref(), u, dt_raw, a_log, bc, k.rank, dd, d_skip, dy, k.chunk, &da_ref, &ds_ref);
    // What bidirectional_scan_backward's launches do, in order (families/scan.cu).
    const int64_t S = std::min<int64_t>(std::max<int64_t>(k.chunk, 1), fm::kMaxScanChunk), chunks = (L + S - 1) / S;
    const int64_t n = B * D;
    std::vector<double> ckf(static_cast<size_t>(n * chunks * N)), ckg(ckf.size()), lam(static_cast<size_t>(n * N)),
        carry(static_cast<size_t>(n)), gA(static_cast<size_t>(n * N)), gu(static_cast<size_t>(B * L * D)),
        contrib(static_cast<size_t>(B * S * D * 2 * N)), states(static_cast<size_t>((S + 1) * N));
    Tensor du = Tensor::empty(u.shape()), ddt = Tensor::empty(dt_raw.shape()), dbc = Tensor::zeros(bc.shape()),
           ddd = Tensor::empty(dd.shape());
    for (int64_t r = 0; r < n; ++r)
      sc.checkpoints(r / D, r % D, S, ckf.data() + r * chunks * N, ckg.data() + r * chunks * N);
    for (int64_t i = 0; i < B * L * D; ++i) gu[static_cast<size_t>(i)] = sc.skip_grad_at(dy.data(), i);
    auto reduce = [&](int64_t c, int64_t offset) {
      for (int64_t b = 0; b < B; ++b)
        for (int64_t tl = 0; tl < S && c * S + tl < L; ++tl)
          for (int64_t j = 0; j < 2 * N; ++j)
            dbc.data()[(b * L + c * S + tl) * W + offset + j] =
                static_cast<float>(fm::scan_bc_grad_at(contrib.data(), b, tl, j, S, D, N));
    };
    for (int64_t c = chunks - 1; c >= 0; --c) {
      for (int64_t r = 0; r < n; ++r)
        sc.backward_chunk_f(dy.data(), r / D, r % D, c, S, ckf.data() + r * chunks * N, lam.data() + r * N,
                            carry[static_cast<size_t>(r)], gA.data() + r * N, gu.data(), contrib.data(), states.data(),
                            ddt.data());
      reduce(c, k.rank);
    }
    std::fill(lam.begin(), lam.end(), 0.0);
    std::fill(carry.begin(), carry.end(), 0.0);
    for (int64_t c = 0; c < chunks; ++c) {
      for (int64_t r = 0; r < n; ++r)
        sc.backward_chunk_b(dy.data(), r / D, r % D, c, S, ckg.data() + r * chunks * N, lam.data() + r * N,
                            carry[static_cast<size_t>(r)], gA.data() + r * N, gu.data(), contrib.data(), states.data(),
                            ddt.data());
      reduce(c, k.rank + 2 * N);
    }
    for (int64_t i = 0; i < B * L * D; ++i) du.data()[i] = static_cast<float>(gu[static_cast<size_t>(i)]);
    for (int64_t e = 0; e < B * L * H; ++e) ddd.data()[e] = static_cast<float>(sc.ddd_at(dy.data(), e));
    Tensor da = Tensor::zeros(a_log.shape()), ds = Tensor::zeros(d_skip.shape());
    for (int64_t d = 0; d < D; ++d)
      for (int64_t j = 0; j < N; ++j) {
        double sum = 0;
        for (int64_t b = 0; b < B; ++b) sum += gA[static_cast<size_t>((b * D + d) * N + j)];
        da.data()[d * N + j] = static_cast<float>(sum * sc.A(d, j));
      }
    for (int64_t h = 0; h < H; ++h) ds.data()[h] = static_cast<float>(sc.d_skip_grad(dy.data(), h, B));
    EXPECT_LE(rel_error(du, g.du), 1e-6) << L;
    EXPECT_LE(rel_error(ddt, g.ddt_raw), 1e-6) << L;
    EXPECT_LE(rel_error(dbc, g.dbc), 1e-6) << L;
    EXPECT_LE(rel_error(ddd, g.ddd), 1e-6) << L;
    EXPECT_LE(rel_error(da, da_ref), 1e-6) << L;
    EXPECT_LE(rel_error(ds, ds_ref), 1e-6) << L;
  }
}

}  // namespace
}  // namespace mf::test
