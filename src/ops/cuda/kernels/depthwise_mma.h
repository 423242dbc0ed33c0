// Depthwise K×K convolution (stride 1, K ≤ 9) on the tensor cores, bf16 storage: the body of
// `dw_mma_kernel` (depthwise_mma.cu), written so that the host can run it too.
//
// Why the tensor cores: a depthwise 7×7 is 49 multiply-adds per output and no reuse across
// channels, so on the CUDA cores it is bound by instruction issue (docs/cuda.md: the best CUDA-core
// kernel ran ConvFormer's convolutions at a tenth of the fp32 rate). For one channel and one kernel
// row ki, the eight outputs j0 … j0 + 7 of a row are a product with a banded (Toeplitz) matrix:
//
//   y[i, j0 + n] += Σ_k x[i + ki − ph, j0 + k − pw] · T_ki[k, n],   T_ki[k, n] = w[ki, k − n] (0 ≤ k − n < K)
//
// so a 16×8 output tile of one channel is K products of a 16×16 input window (A) with a 16×8 band
// (B), one `mma.m16n8k16` each: 16·8·16 multiply-adds of which 16·8·K are useful (44 % at K = 7),
// on units about fifteen times faster than the fp32 FMAs. Sums stay fp32 in the accumulators;
// inputs (after the input activation) and weights are rounded to bf16, as under PyTorch's autocast.
//
// A block (kWarps warps) computes TR × TC outputs (TR = 16·MT rows, TC = 8·NT columns) of CB
// channels of one image, in three phases separated by barriers:
// 1. stage: the input patch with its halo, input activation applied, into shared memory as bf16,
//    transposed to one plane per channel (rows of SW columns), so that an A fragment's two
//    neighbouring columns are one 32-bit word;
// 2. compute: each warp takes channel pairs; it builds the pair's B fragments once (2 · K · 2
//    registers), then for each 16×8 tile accumulates K products per channel, adds the bias through
//    the accumulator's start value, applies the output activation and stores the pair's results as
//    bf16x2 words into one plane per channel pair;
// 3. copy out: 16-byte rows of 8 channels per pixel to global memory (channels-last).
//
// The same code runs on the GPU (S = 1: a thread holds its own lane's registers) and on the host
// (S = 32: `tests/test_depthwise_mma.cpp` holds all 32 lanes of a warp, runs every per-lane step for
// each lane and emulates mma.sync with PTX's documented fragment layout), so the index arithmetic is
// checked on machines without a GPU. On the host nothing here needs a CUDA header; device code uses
// cuda_bf16.h's conversions and CUDA's vector types, which the .cu includes first (common.cuh).
#pragma once

#include <cstdint>
#include <cstring>

#include "core/bf16_bits.h"

#if defined(__CUDACC__)
#define MF_DWMMA_HD __host__ __device__ __forceinline__
#define MF_DWMMA_UNROLL _Pragma("unroll")
#define MF_DWMMA_UNROLL2 _Pragma("unroll 2")
#else
#define MF_DWMMA_HD inline
#define MF_DWMMA_UNROLL
#define MF_DWMMA_UNROLL2
#endif

namespace mf::cuda::dwmma {

constexpr int kWarps = 8, kThreads = kWarps * 32;

// ---- bf16 bits <-> float (core/bf16_bits.h) ----
using mf::bf16_bits_to_float;
using mf::float_to_bf16_bits;

// Two floats as one bf16x2 word: `lo` in the low half (the lower address, the first element).
MF_DWMMA_HD uint32_t pack_bf16x2(float lo, float hi) {
#if defined(__CUDA_ARCH__)
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
#else
  return uint32_t(float_to_bf16_bits(lo)) | (uint32_t(float_to_bf16_bits(hi)) << 16);
#endif
}

// ---- the block's geometry (compile-time) ----
// CB channels a block (16 or 32: a copied-out pixel is CB / 8 rows of 16 bytes), shared by the warps
// as CB / 2 channel pairs. A warp builds a pair's B fragments once for the MT·NT tiles of the block,
// so taller blocks with fewer channels (MT = 2, CB = 16) build them half as often per output and
// stage a smaller halo (38 × 22 staged pixels for 32 × 16 outputs instead of 22 × 22 for 16 × 16).
template <int K_, int MT_, int NT_, int CB_ = 32>
struct Geometry {
  static constexpr int K = K_, MT = MT_, NT = NT_, CB = CB_;
  static constexpr int TR = 16 * MT, TC = 8 * NT;  // output rows, columns of a block
  static constexpr int SR = TR + K - 1;             // staged input rows
  // Staged columns: an A fragment of column tile n reads columns 8n … 8n + 15, so TC + 8 of them
  // (K ≤ 9 keeps the real halo, TC + K − 1 columns, inside). SW ≡ 8 (mod 16) puts the eight rows of a
  // fragment load on eight different groups of four banks: conflict-free.
  static constexpr int SW = (TC + 8) % 16 == 8 ? TC + 8 : TC + 16;
  static constexpr int kRowWords = SW / 2;
  // Words per channel plane of the staged input, odd: the staging writes (lanes = 4 channel groups ×
  // 8 column pairs) then fall on 32 different banks.
  static constexpr int kInPlane = (SR * kRowWords) | 1;
  // Words per channel-pair plane of the output, ≡ 2 (mod 32): the copy-out reads (lanes = 4 channel
  // groups × 8 pixels) fall on 32 different banks.
  static constexpr int kOutPlane = TR * TC + 2;
  static constexpr int kSmemWords = CB * kInPlane + (CB / 2) * kOutPlane;
  static constexpr int kSmemBytes = kSmemWords * 4;
  static_assert(K >= 1 && K <= 9, "the band of a 16-wide window covers 8 outputs for K ≤ 9");
  static_assert(CB % 8 == 0 && (CB / 2) % kWarps == 0, "channel pairs are shared evenly by the warps");

  // Where output pixel p (row-major in the block's tile) lives in its output plane. A warp's
  // epilogue stores pixels 16·(g mod 2) + 2t + 8·col_tile + 128·(row half) + … (TC = 16) or
  // 8g + 2t + … (TC = 8) for lanes (g, t): the XOR moves the row bits that alias mod 32 into bits 0
  // and 3, so the 32 lanes hit 32 banks. A bijection (it only flips lower bits by higher ones), and
  // aligned groups of 8 pixels stay together, which keeps the copy-out conflict-free.
  MF_DWMMA_HD static int out_word(int p) {
    if (TC == 16) return p ^ ((p >> 5) & 1) ^ (((p >> 6) & 1) << 3);
    if (TC == 8) return p ^ ((p >> 5) & 1);
    return p;
  }
};

// The launcher's choice of block geometry (the host test takes the same): 16×8 tiles on maps eight
// columns wide or less (MetaFormer's last stage, 7×7), 16×16 tiles of 32 channels otherwise; with
// `tall` (METAFORMER_CUDA_DW=mma2), maps taller than 16 rows take 32×16 tiles of 16 channels.
enum class Shape { Narrow, Square, Tall };
MF_DWMMA_HD Shape choose_shape(int64_t Ho, int64_t Wo, bool tall) {
  if (Wo <= 8) return Shape::Narrow;
  return tall && Ho > 16 ? Shape::Tall : Shape::Square;
}
// f(Geometry<…>{}) for the shape's geometry.
template <int K, class F>
auto with_geometry(Shape shape, F&& f) {
  switch (shape) {
    case Shape::Narrow: return f(Geometry<K, 1, 1>{});
    case Shape::Tall: return f(Geometry<K, 2, 2, 16>{});
    default: return f(Geometry<K, 1, 2>{});
  }
}

// What a block reads and writes. x, y are bf16 bits; w is float [K, K, C] (depthwise_weight_to_hwc).
struct Args {
  const uint16_t* x;
  int64_t xs;  // elements between pixels of x (≥ C: a channel window of a wider tensor)
  const float* w;
  const float* bias;  // [C] or null
  uint16_t* y;
  int64_t ys;
  int64_t H, W, C, Ho, Wo;
  int ph, pw;
  int tiles_w;     // column tiles per image
  bool vec_in;     // x's pixels are 16-byte aligned groups of 8 channels (C, xs multiples of 8)
  bool vec_out;    // the same for y
};

// Block coordinates: output tile (oh0, ow0) of image b, channels c0 … c0 + CB − 1.
struct BlockPos {
  int64_t b, c0, oh0, ow0;
};

// Phase 1, thread `tid` of `threads`: the input patch rows oh0 − ph …, columns ow0 − pw …, as bf16
// words (two neighbouring columns of one channel) in `in_s`. Outside the image, past the channels
// and past the real halo the words are zero (the A fragments multiply those columns by zeros of the
// band, which must not meet a NaN).
template <class G, class Pre>
MF_DWMMA_HD void stage(int tid, int threads, const Args& a, const BlockPos& at, uint32_t* in_s, const Pre& pre) {
  constexpr int kGroups = G::CB / 8;
  constexpr int kItems = G::SR * G::kRowWords * kGroups;
  MF_DWMMA_UNROLL2  // two items' four 16-byte loads in flight at once
  for (int i = tid; i < kItems; i += threads) {
    const int cg = i % kGroups, rest = i / kGroups;
    const int j = rest % G::kRowWords, r = rest / G::kRowWords;
    const int64_t ih = at.oh0 - a.ph + r, c = at.c0 + cg * 8;
    float v[2][8];
    MF_DWMMA_UNROLL
    for (int h = 0; h < 2; ++h) {
      const int col = 2 * j + h;
      const int64_t iw = at.ow0 - a.pw + col;
      const bool inside = ih >= 0 && ih < a.H && iw >= 0 && iw < a.W && col < G::TC + G::K - 1 && c < a.C;
      if (inside && a.vec_in) {
        const uint16_t* src = a.x + ((at.b * a.H + ih) * a.W + iw) * a.xs + c;
#if defined(__CUDA_ARCH__)
        const uint4 u = *reinterpret_cast<const uint4*>(src);
        const uint32_t word[4] = {u.x, u.y, u.z, u.w};
#else
        uint32_t word[4];
        std::memcpy(word, src, 16);
#endif
        MF_DWMMA_UNROLL
        for (int e = 0; e < 8; ++e) {
          const uint16_t bits = uint16_t(e % 2 ? word[e / 2] >> 16 : word[e / 2] & 0xffffu);
          v[h][e] = pre(bf16_bits_to_float(bits));
        }
      } else {
        MF_DWMMA_UNROLL
        for (int e = 0; e < 8; ++e)
          v[h][e] = inside && c + e < a.C ? pre(bf16_bits_to_float(a.x[((at.b * a.H + ih) * a.W + iw) * a.xs + c + e])) : 0.f;
      }
    }
    MF_DWMMA_UNROLL
    for (int e = 0; e < 8; ++e) in_s[(cg * 8 + e) * G::kInPlane + r * G::kRowWords + j] = pack_bf16x2(v[0][e], v[1][e]);
  }
}

// The band T_ki[k, n] of channel `ch` (zero past C): w[ki, k − n] for 0 ≤ k − n < K.
template <class G>
MF_DWMMA_HD float band(const Args& a, int64_t ch, int ki, int k, int n) {
  const int kj = k - n;
  return ch < a.C && kj >= 0 && kj < G::K ? a.w[(int64_t(ki) * G::K + kj) * a.C + ch] : 0.f;
}

// Phase 2, one warp. S lanes' registers per value: S = 1 on the GPU (lane `lane0`), S = 32 on the
// host (lanes 0 … 31, lane0 = 0). `mma(d, a, b)` is D += A·B for the warp's fragments
// (PTX m16n8k16 layouts: lane = 4g + t; A rows g, g + 8 and columns 2t, 2t + 1, 2t + 8, 2t + 9;
// B rows 2t, 2t + 1, 2t + 8, 2t + 9 of column g; D rows g, g + 8 and columns 2t, 2t + 1).
template <class G, int S, class Mma, class Post>
MF_DWMMA_HD void compute(int warp, int lane0, const Args& a, const BlockPos& at, const uint32_t* in_s,
                         uint32_t* out_s, const Mma& mma, const Post& post) {
  for (int pp = warp; pp < G::CB / 2; pp += kWarps) {
    const int64_t ch0 = at.c0 + 2 * pp;
    uint32_t bf[2][G::K][2][S];  // B fragments: channel of the pair, kernel row, register
    MF_DWMMA_UNROLL
    for (int s = 0; s < S; ++s) {
      const int lane = lane0 + s, g = lane >> 2, t = lane & 3;
      MF_DWMMA_UNROLL
      for (int q = 0; q < 2; ++q)
        MF_DWMMA_UNROLL
        for (int ki = 0; ki < G::K; ++ki)
          MF_DWMMA_UNROLL
          for (int r = 0; r < 2; ++r) {
            const int k = 2 * t + 8 * r;
            bf[q][ki][r][s] = pack_bf16x2(band<G>(a, ch0 + q, ki, k, g), band<G>(a, ch0 + q, ki, k + 1, g));
          }
    }
    float b0[2];
    MF_DWMMA_UNROLL
    for (int q = 0; q < 2; ++q) b0[q] = a.bias && ch0 + q < a.C ? a.bias[ch0 + q] : 0.f;
    // For each row of tiles, the NT column tiles and the two channels are 2·NT independent chains of
    // K products (latency hidden within the warp), and neighbouring column tiles share half their A
    // words (tile n's columns 8 … 15 are tile n + 1's 0 … 7: loaded once).
    MF_DWMMA_UNROLL
    for (int mt = 0; mt < G::MT; ++mt) {
      float d[G::NT][2][4][S];
      MF_DWMMA_UNROLL
      for (int nt = 0; nt < G::NT; ++nt)
        MF_DWMMA_UNROLL
        for (int q = 0; q < 2; ++q)
          MF_DWMMA_UNROLL
          for (int e = 0; e < 4; ++e)
            MF_DWMMA_UNROLL
            for (int s = 0; s < S; ++s) d[nt][q][e][s] = b0[q];
      MF_DWMMA_UNROLL
      for (int ki = 0; ki < G::K; ++ki)
        MF_DWMMA_UNROLL
        for (int q = 0; q < 2; ++q) {
          const uint32_t* plane = in_s + (2 * pp + q) * G::kInPlane;
          MF_DWMMA_UNROLL
          for (int nt = 0; nt < G::NT; ++nt) {
            uint32_t af[4][S];
            MF_DWMMA_UNROLL
            for (int s = 0; s < S; ++s) {
              const int lane = lane0 + s, g = lane >> 2, t = lane & 3;
              const int w0 = (mt * 16 + ki + g) * G::kRowWords + nt * 4 + t;  // row g, columns 2t, 2t + 1
              af[0][s] = plane[w0];
              af[1][s] = plane[w0 + 8 * G::kRowWords];  // row g + 8
              af[2][s] = plane[w0 + 4];                 // columns 2t + 8, 2t + 9
              af[3][s] = plane[w0 + 8 * G::kRowWords + 4];
            }
            mma(d[nt][q], af, bf[q][ki][0], bf[q][ki][1]);
          }
        }
      uint32_t* oplane = out_s + pp * G::kOutPlane;
      MF_DWMMA_UNROLL
      for (int nt = 0; nt < G::NT; ++nt)
        MF_DWMMA_UNROLL
        for (int s = 0; s < S; ++s) {
          const int lane = lane0 + s, g = lane >> 2, t = lane & 3;
          MF_DWMMA_UNROLL
          for (int e = 0; e < 4; ++e) {
            const int row = mt * 16 + g + 8 * (e >> 1), col = nt * 8 + 2 * t + (e & 1);
            oplane[G::out_word(row * G::TC + col)] = pack_bf16x2(post(d[nt][0][e][s]), post(d[nt][1][e][s]));
          }
        }
    }
  }
}

// Phase 3, thread `tid` of `threads`: the block's outputs inside the map and the channels, as
// 16-byte rows of 8 channels (or one channel at a time where y does not allow it).
template <class G>
MF_DWMMA_HD void copy_out(int tid, int threads, const Args& a, const BlockPos& at, const uint32_t* out_s) {
  constexpr int kGroups = G::CB / 8;
  for (int i = tid; i < G::TR * G::TC * kGroups; i += threads) {
    const int cg = i % kGroups, p = i / kGroups;
    const int64_t oh = at.oh0 + p / G::TC, ow = at.ow0 + p % G::TC, c = at.c0 + cg * 8;
    if (oh >= a.Ho || ow >= a.Wo || c >= a.C) continue;
    uint32_t word[4];
    MF_DWMMA_UNROLL
    for (int e = 0; e < 4; ++e) word[e] = out_s[(cg * 4 + e) * G::kOutPlane + G::out_word(p)];
    uint16_t* dst = a.y + ((at.b * a.Ho + oh) * a.Wo + ow) * a.ys + c;
    if (a.vec_out) {
#if defined(__CUDA_ARCH__)
      *reinterpret_cast<uint4*>(dst) = make_uint4(word[0], word[1], word[2], word[3]);
#else
      std::memcpy(dst, word, 16);
#endif
    } else {
      for (int e = 0; e < 8 && c + e < a.C; ++e) dst[e] = uint16_t(e % 2 ? word[e / 2] >> 16 : word[e / 2] & 0xffffu);
    }
  }
}

}  // namespace mf::cuda::dwmma
