// The tensor-core depthwise convolution's body (src/ops/cuda/kernels/depthwise_mma.h) run on the host:
// a whole grid of blocks, each through its three phases, with the warp's 32 lanes held side by side
// and mma.sync emulated from PTX's fragment layouts (the ones attention.cu's tensor-core kernel uses
// on the GPU). On any machine, GPU or not: what only a GPU can check is the launch and the real
// mma.sync (tools/device/cuda_check.sh candidates runs the op harness with METAFORMER_CUDA_DW=mma).
//
// Shared memory is poisoned with NaNs before each block, so a fragment that reads a word the staging
// did not write fails the comparison; y is poisoned too, and what lies outside the outputs (the rest
// of a wider row) must keep its poison.
//
// The bar: the reference is the same convolution in double over the same bf16-rounded inputs (after
// the input activation) and weights, so what differs is the fp32 accumulation and the final rounding
// to bf16: 2^-8 of the value plus 1e-5 of Σ|x·w|.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "ops/cuda/kernels/depthwise_mma.h"

namespace {

using namespace mf::cuda::dwmma;

float lo_half(uint32_t w) { return bf16_bits_to_float(uint16_t(w & 0xffffu)); }
float hi_half(uint32_t w) { return bf16_bits_to_float(uint16_t(w >> 16)); }

// mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32 over a warp's 32 lanes (lane = 4g + t).
struct EmulatedMma {
  void operator()(float (&d)[4][32], const uint32_t (&a)[4][32], const uint32_t (&b0)[32],
                  const uint32_t (&b1)[32]) const {
    float A[16][16], B[16][8];
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane >> 2, t = lane & 3;
      for (int h = 0; h < 2; ++h) {
        A[g][2 * t + h] = h ? hi_half(a[0][lane]) : lo_half(a[0][lane]);
        A[g + 8][2 * t + h] = h ? hi_half(a[1][lane]) : lo_half(a[1][lane]);
        A[g][2 * t + 8 + h] = h ? hi_half(a[2][lane]) : lo_half(a[2][lane]);
        A[g + 8][2 * t + 8 + h] = h ? hi_half(a[3][lane]) : lo_half(a[3][lane]);
        B[2 * t + h][g] = h ? hi_half(b0[lane]) : lo_half(b0[lane]);
        B[2 * t + 8 + h][g] = h ? hi_half(b1[lane]) : lo_half(b1[lane]);
      }
    }
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane >> 2, t = lane & 3;
      for (int e = 0; e < 4; ++e) {
        const int i = g + 8 * (e >> 1), j = 2 * t + (e & 1);
        float s = d[e][lane];
        for (int k = 0; k < 16; ++k) s += A[i][k] * B[k][j];
        d[e][lane] = s;
      }
    }
  }
};

struct Identity {
  float operator()(float v) const { return v; }
};
struct StarRelu {  // ConvFormer's input activation
  float operator()(float v) const { return v > 0.f ? 0.8944f * v * v - 0.4472f : -0.4472f; }
};
struct Relu {
  float operator()(float v) const { return v > 0.f ? v : 0.f; }
};

struct Case {
  int64_t B, H, W, C;
  int k, pad;
  int64_t xs, x_offset, ys;  // pixel strides; x starts x_offset elements into its buffer
  bool bias, pre, post;
};

float round_bf16(float v) { return bf16_bits_to_float(float_to_bf16_bits(v)); }

template <class G, class Pre, class Post>
void run_grid(Args a, int64_t B, const Pre& pre, const Post& post) {
  a.tiles_w = int((a.Wo + G::TC - 1) / G::TC);
  const int64_t tiles_h = (a.Ho + G::TR - 1) / G::TR, cblocks = (a.C + G::CB - 1) / G::CB;
  std::vector<uint32_t> smem(G::kSmemWords);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t cb = 0; cb < cblocks; ++cb)
      for (int64_t tile = 0; tile < tiles_h * a.tiles_w; ++tile) {
        std::fill(smem.begin(), smem.end(), 0x7fc07fc0u);  // two bf16 NaNs
        uint32_t* in_s = smem.data();
        uint32_t* out_s = smem.data() + G::CB * G::kInPlane;
        const BlockPos at{b, cb * G::CB, (tile / a.tiles_w) * G::TR, (tile % a.tiles_w) * G::TC};
        for (int tid = 0; tid < kThreads; ++tid) stage<G>(tid, kThreads, a, at, in_s, pre);
        for (int warp = 0; warp < kWarps; ++warp) compute<G, 32>(warp, 0, a, at, in_s, out_s, EmulatedMma{}, post);
        for (int tid = 0; tid < kThreads; ++tid) copy_out<G>(tid, kThreads, a, at, out_s);
      }
}

// The launcher's path (depthwise_mma.cu): the geometry chosen from the map, then the grid.
template <int K, class Pre, class Post>
void run(const Args& a, int64_t B, bool tall, const Pre& pre, const Post& post) {
  with_geometry<K>(choose_shape(a.Ho, a.Wo, tall), [&](auto geometry) {
    run_grid<decltype(geometry)>(a, B, pre, post);
    return 0;
  });
}

template <class Pre, class Post>
void check(const Case& c, bool tall, const Pre& pre, const Post& post) {
  SCOPED_TRACE(::testing::Message() << (tall ? "tall " : "") << "B" << c.B << " " << c.H << "x" << c.W << "x" << c.C << " k" << c.k << " p"
                                    << c.pad << " xs" << c.xs << "+" << c.x_offset << " ys" << c.ys);
  const int64_t Ho = c.H + 2 * c.pad - c.k + 1, Wo = c.W + 2 * c.pad - c.k + 1;
  std::mt19937 rng(uint32_t(c.H * 131 + c.W * 17 + c.C + c.k));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<uint16_t> x(size_t(c.B * c.H * c.W * c.xs + c.x_offset + 8));
  for (auto& v : x) v = float_to_bf16_bits(u(rng));
  std::vector<float> w(size_t(c.k * c.k * c.C)), bias(size_t(c.C));
  for (auto& v : w) v = u(rng) * 0.3f;
  for (auto& v : bias) v = u(rng);
  const uint16_t kPoison = 0x7fc1;
  std::vector<uint16_t> y(size_t(c.B * Ho * Wo * c.ys), kPoison);

  Args a{};
  a.x = x.data() + c.x_offset;
  a.xs = c.xs;
  a.w = w.data();
  a.bias = c.bias ? bias.data() : nullptr;
  a.y = y.data();
  a.ys = c.ys;
  a.H = c.H, a.W = c.W, a.C = c.C, a.Ho = Ho, a.Wo = Wo;
  a.ph = a.pw = c.pad;
  // As the launcher decides: 16-byte groups where channels, strides and pointers allow (a host
  // vector's data is 16-byte aligned).
  a.vec_in = c.C % 8 == 0 && c.xs % 8 == 0 && c.x_offset % 8 == 0;
  a.vec_out = c.C % 8 == 0 && c.ys % 8 == 0;
  switch (c.k) {
    case 3: run<3>(a, c.B, tall, pre, post); break;
    case 5: run<5>(a, c.B, tall, pre, post); break;
    case 7: run<7>(a, c.B, tall, pre, post); break;
    default: FAIL() << "no such kernel size";
  }

  int bad = 0;
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow)
        for (int64_t ch = 0; ch < c.ys; ++ch) {
          const uint16_t got_bits = y[size_t(((b * Ho + oh) * Wo + ow) * c.ys + ch)];
          if (ch >= c.C) {  // the rest of a wider row: untouched
            if (got_bits != kPoison && bad++ < 5) ADD_FAILURE() << "wrote past the channels at " << ch;
            continue;
          }
          double s = c.bias ? bias[size_t(ch)] : 0.0, mag = std::fabs(s);
          for (int ki = 0; ki < c.k; ++ki)
            for (int kj = 0; kj < c.k; ++kj) {
              const int64_t ih = oh - c.pad + ki, iw = ow - c.pad + kj;
              if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
              const float xv = bf16_bits_to_float(x[size_t(((b * c.H + ih) * c.W + iw) * c.xs + c.x_offset + ch)]);
              const double term = double(round_bf16(pre(xv))) * round_bf16(w[size_t((ki * c.k + kj) * c.C + ch)]);
              s += term;
              mag += std::fabs(term);
            }
          const double want = post(float(s)), got = bf16_bits_to_float(got_bits);
          const double tol = std::ldexp(std::fabs(want), -8) + 1e-5 * mag + 1e-30;
          if (!(std::fabs(got - want) <= tol) && bad++ < 5)
            ADD_FAILURE() << "at b" << b << " (" << oh << ", " << ow << ") c" << ch << ": " << got << " vs " << want;
        }
  EXPECT_EQ(bad, 0);
}

TEST(DepthwiseMma, GeometryKeepsSharedMemoryAccessesConflictFree) {
  // The layout promises of depthwise_mma.h, for the geometries the launcher uses.
  using G16 = Geometry<7, 1, 2>;
  using G8 = Geometry<7, 1, 1>;
  using G32 = Geometry<7, 2, 2, 16>;
  EXPECT_EQ(G32::SW % 16, 8);
  EXPECT_EQ(G32::kInPlane % 2, 1);
  EXPECT_EQ(G32::kOutPlane % 32, 2);
  EXPECT_LE(G32::kSmemBytes, 100 * 1024);
  EXPECT_EQ(G16::SW % 16, 8);
  EXPECT_EQ(G8::SW % 16, 8);
  EXPECT_EQ(G16::kInPlane % 2, 1);
  EXPECT_EQ(G16::kOutPlane % 32, 2);
  EXPECT_LE(G16::kSmemBytes, 100 * 1024);
  // An epilogue store: lanes (g, t) write pixel (g + 8h) · TC + 8n + 2t + e of their tile; 32 banks.
  auto distinct_banks = [](auto out_word, int tc, int h, int n, int e) {
    std::vector<int> seen(32, 0);
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane >> 2, t = lane & 3;
      seen[size_t(out_word((g + 8 * h) * tc + 8 * n + 2 * t + e) % 32)]++;
    }
    for (int v : seen)
      if (v != 1) return false;
    return true;
  };
  for (int h = 0; h < 2; ++h)
    for (int n = 0; n < 2; ++n)
      for (int e = 0; e < 2; ++e) {
        EXPECT_TRUE(distinct_banks(&G16::out_word, 16, h, n, e)) << h << n << e;
        EXPECT_TRUE(distinct_banks(&G32::out_word, 16, h + 2, n, e)) << h << n << e;  // the second row tile
      }
  // Every pixel has its own word.
  std::vector<int> hit(G16::TR * G16::TC, 0);
  for (int p = 0; p < G16::TR * G16::TC; ++p) hit[size_t(G16::out_word(p))]++;
  for (int v : hit) EXPECT_EQ(v, 1);
  std::vector<int> hit8(G8::TR * G8::TC, 0);
  for (int p = 0; p < G8::TR * G8::TC; ++p) hit8[size_t(G8::out_word(p))]++;
  for (int v : hit8) EXPECT_EQ(v, 1);
  std::vector<int> hit32(G32::TR * G32::TC, 0);
  for (int p = 0; p < G32::TR * G32::TC; ++p) hit32[size_t(G32::out_word(p))]++;
  for (int v : hit32) EXPECT_EQ(v, 1);
}

TEST(DepthwiseMma, HostRunMatchesTheConvolution) {
  const std::vector<Case> cases = {
      // B, H, W, C, k, pad, xs, x_offset, ys, bias, pre, post
      {2, 7, 7, 32, 7, 3, 32, 0, 32, false, false, false},     // MetaFormer's last stage: 16×8 tiles
      {1, 14, 14, 64, 7, 3, 64, 0, 64, true, true, false},     // ConvFormer's StarReLU → dwconv
      {1, 21, 19, 40, 7, 3, 40, 0, 40, true, false, true},     // two row tiles, a column tail, a channel block
      {1, 9, 11, 48, 7, 3, 48, 0, 48, true, false, false},     // partial tiles both ways
      {1, 1, 1, 8, 7, 3, 8, 0, 8, false, false, false},        // one pixel
      {1, 5, 6, 20, 7, 3, 20, 0, 20, true, true, true},        // C % 8 ≠ 0: one channel at a time
      {2, 6, 10, 35, 3, 1, 35, 0, 35, false, false, false},    // 3×3, odd channel count (a half pair)
      {1, 10, 17, 16, 5, 2, 16, 0, 16, true, false, false},    // 5×5
      {1, 12, 12, 24, 3, 0, 24, 0, 24, false, false, false},   // no padding: Ho = H − 2
      {1, 9, 9, 16, 7, 6, 16, 0, 16, true, false, false},      // the backward's padding k − 1
      {1, 8, 20, 16, 7, 3, 48, 32, 24, true, false, false},    // MambaOut: a channel window of a wider x, wider y
      {1, 8, 9, 16, 7, 3, 48, 4, 16, false, true, false},      // a window not 16-byte aligned
      {1, 30, 40, 8, 7, 3, 8, 0, 8, false, false, false},      // several tiles each way
      {1, 56, 24, 40, 7, 3, 40, 0, 40, true, true, false},     // ConvFormer's first stage's height, tall tiles
  };
  for (const bool tall : {false, true})
    for (const Case& c : cases) {
      if (c.pre && c.post) check(c, tall, StarRelu{}, Relu{});
      else if (c.pre) check(c, tall, StarRelu{}, Identity{});
      else if (c.post) check(c, tall, Identity{}, Relu{});
      else check(c, tall, Identity{}, Identity{});
    }
}

}  // namespace
