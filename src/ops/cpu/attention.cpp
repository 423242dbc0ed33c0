// Multi-head attention on the CPU: both products run as batched oneDNN matmuls and the softmax runs
// row-wise in between with a vectorised exp. The forward pass reads q, k, v as strided views of the
// qkv rows and writes the output into y's rows; the backward pass gathers head-major copies (its five
// products reuse them).
#include "ops/cpu/fast_math.h"  // first: it includes the AVX-512 intrinsics (see there)

#include <fmt/ranges.h>

#include <cmath>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/onednn.h"

namespace mf {

namespace {
using dnnl::memory;

// One row of scores replaced by softmax(scale · s), with a vectorised exp (scale 1 multiplies
// exactly, so pre-scaled scores take scale = 1).
inline void softmax_row(float* __restrict s, int64_t n, float scale) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < n; ++j) mx = std::max(mx, s[j] * scale);
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    s[j] = fastmath::exp_fast(s[j] * scale - mx);
    sum += s[j];
  }
  const float inv = 1.f / sum;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
}

// The inference softmax: the same arithmetic as softmax_row (max, exp_fast's polynomial, sum, one
// multiply by 1/sum), written with AVX-512 intrinsics so that the last partial vector of a row runs
// masked instead of in scalar code: caformer's 196-wide rows end in 4 lanes, and their scalar exps
// made up about a fifth of the softmax. In bf16 the normalised row is rounded straight into `p16`
// (round to nearest even, as round_to_bf16_serial) instead of a pass of its own. Training keeps
// softmax_row, whose rounding its golden gradients were checked with.
#ifdef __AVX512F__
inline void store_bf16(uint16_t* out, __m512 v, __mmask16 m) {
  __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  u = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lsb));
  _mm256_mask_storeu_epi16(out, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32(u, 16)));
}

inline void softmax_row_inference(float* __restrict s, int64_t n, uint16_t* __restrict p16) {
  const int64_t full = n / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (n - full)) - 1u);
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < full; j += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + j));
  if (tail) mx = _mm512_mask_max_ps(mx, tail, mx, _mm512_maskz_loadu_ps(tail, s + full));
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < full; j += 16) {
    const __m512 e = fastmath::exp16(_mm512_sub_ps(_mm512_loadu_ps(s + j), m));
    _mm512_storeu_ps(s + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (tail) {
    const __m512 e = fastmath::exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, s + full), m));
    _mm512_mask_storeu_ps(s + full, tail, e);
    sum = _mm512_mask_add_ps(sum, tail, sum, e);
  }
  const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(sum));
  for (int64_t j = 0; j < full; j += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(s + j), inv);
    if (p16)
      store_bf16(p16 + j, v, 0xFFFF);
    else
      _mm512_storeu_ps(s + j, v);
  }
  if (tail) {
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, s + full), inv);
    if (p16)
      store_bf16(p16 + full, v, tail);
    else
      _mm512_mask_storeu_ps(s + full, tail, v);
  }
}
#else
inline void softmax_row_inference(float* __restrict s, int64_t n, uint16_t* __restrict p16) {
  softmax_row(s, n, 1.f);
  if (p16) onednn::round_to_bf16_serial(s, n, p16);
}
#endif

// fp32 batched products for the backward pass: [batch, M, K] · [batch, K, N] (B stored [batch, N, K]
// when transposed).
dnnl::matmul& batched_matmul(int64_t batch, int64_t M, int64_t K, int64_t N, bool transpose_b) {
  const std::string key = fmt::format("bmm:{}:{}:{}:{}:{}", batch, M, K, N, transpose_b);
  return onednn::cached<dnnl::matmul>(key, [&] {
    auto src = onednn::plain({batch, M, K}, {M * K, K, 1});
    auto wei = transpose_b ? onednn::plain({batch, K, N}, {N * K, 1, K}) : onednn::plain({batch, K, N}, {K * N, N, 1});
    auto dst = onednn::plain({batch, M, N}, {M * N, N, 1});
    return dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), onednn::engine()));
  });
}

void run_bmm(dnnl::matmul& mm, int64_t batch, int64_t M, int64_t K, int64_t N, bool transpose_b, const float* a,
             const float* b, float* c) {
  auto src = onednn::wrap(onednn::plain({batch, M, K}, {M * K, K, 1}), a);
  auto wei = onednn::wrap(
      transpose_b ? onednn::plain({batch, K, N}, {N * K, 1, K}) : onednn::plain({batch, K, N}, {K * N, N, 1}), b);
  auto dst = onednn::wrap(onednn::plain({batch, M, N}, {M * N, N, 1}), c);
  mm.execute(onednn::stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
  onednn::stream().wait();
}
}  // namespace

namespace {
// A [B, heads, rows, cols] view with explicit element strides (oneDNN matmul takes any strides, so
// q, k, v are read straight out of the qkv rows and the output written straight into y's rows).
struct View4 {
  dnnl::memory::dims dims, strides;
};

dnnl::matmul& view_matmul(const View4& a, const View4& b, const View4& c, bool bf16) {
  const std::string key = fmt::format("attn:{}:{}:{}:{}:{}:{}:{}", fmt::join(a.dims, "x"), fmt::join(a.strides, "x"),
                                      fmt::join(b.dims, "x"), fmt::join(b.strides, "x"), fmt::join(c.dims, "x"),
                                      fmt::join(c.strides, "x"), bf16);
  return onednn::cached<dnnl::matmul>(key, [&] {
    const auto t = onednn::operand_type(bf16);
    return dnnl::matmul(dnnl::matmul::primitive_desc(
        dnnl::matmul::desc(onednn::plain(a.dims, a.strides, t), onednn::plain(b.dims, b.strides, t),
                           onednn::plain(c.dims, c.strides)),
        onednn::engine()));
  });
}

void run_view_matmul(const View4& a, const void* pa, const View4& b, const void* pb, const View4& c, float* pc,
                     bool bf16) {
  const auto t = onednn::operand_type(bf16);
  auto& mm = view_matmul(a, b, c, bf16);
  mm.execute(onednn::stream(), {{DNNL_ARG_SRC, dnnl::memory(onednn::plain(a.dims, a.strides, t), onednn::engine(),
                                                            const_cast<void*>(pa))},
                                {DNNL_ARG_WEIGHTS, dnnl::memory(onednn::plain(b.dims, b.strides, t), onednn::engine(),
                                                                const_cast<void*>(pb))},
                                {DNNL_ARG_DST, onednn::wrap(onednn::plain(c.dims, c.strides), pc)}});
  onednn::stream().wait();
}
}  // namespace

// S = q kᵀ and O = P v run on strided views of qkv [B, N, 3·A] (no gathering into head-major
// copies of k and v) and O lands in y's rows directly (no scattering back); q is scaled into a
// head-major copy first. The softmax runs row by row in place, one image at a time. bf16 precision
// rounds k and v into a scratch copy of the image's qkv rows and has the softmax write P in bf16 for
// the second product.
void CpuBackend::attention(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y) {
  const int64_t B = qkv.dim(0), N = qkv.dim(1), d = head_dim, A = heads * d, H = heads;
  const bool bf16 = precision_ == Precision::bf16;
  const size_t esize = bf16 ? 2 : 4;
  // One image at a time: its scores (heads × N × N, 1.5 MB for caformer's 14×14 stage) stay in
  // cache from q·kᵀ through the softmax to P·v, instead of the whole batch's going through memory.
  void* qs = onednn::scratch(onednn::Scratch::attn_q, H * N * d * static_cast<int64_t>(esize));
  uint16_t* kv16 = bf16 ? static_cast<uint16_t*>(onednn::scratch(onednn::Scratch::attn_qkv, N * 3 * A * 2)) : nullptr;
  float* S = static_cast<float*>(onednn::scratch(onednn::Scratch::attn_scores, H * N * N * 4));
  uint16_t* P16 = bf16 ? static_cast<uint16_t*>(onednn::scratch(onednn::Scratch::attn_probs, H * N * N * 2)) : nullptr;
  const View4 q{{1, H, N, d}, {H * N * d, N * d, d, 1}};
  const View4 kt{{1, H, d, N}, {N * 3 * A, d, 1, 3 * A}};
  const View4 v{{1, H, N, d}, {N * 3 * A, d, 3 * A, 1}};
  const View4 scores{{1, H, N, N}, {H * N * N, N * N, N, 1}};
  const View4 out{{1, H, N, d}, {N * A, d, A, 1}};
  for (int64_t b = 0; b < B; ++b) {
    const float* rows = qkv.data() + b * N * 3 * A;
    // q · scale, gathered head-major (scaling q before the product, as the backward pass does,
    // keeps the rounding the golden gradients were checked with); in bf16 also k and v rounded.
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      const float* src = rows + i * 3 * A;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t at = (h * N + i) * d;
        if (bf16) {
          uint16_t* dst = static_cast<uint16_t*>(qs) + at;
          for (int64_t c0 = 0; c0 < d; c0 += 64) {  // through a small buffer, so the rounding vectorises
            float scaled[64];
            const int64_t n = std::min<int64_t>(64, d - c0);
#pragma omp simd
            for (int64_t c = 0; c < n; ++c) scaled[c] = src[h * d + c0 + c] * scale;
            onednn::round_to_bf16_serial(scaled, n, dst + c0);
          }
        } else {
          float* dst = static_cast<float*>(qs) + at;
#pragma omp simd
          for (int64_t c = 0; c < d; ++c) dst[c] = src[h * d + c] * scale;
        }
      }
      if (bf16) onednn::round_to_bf16_serial(src + A, 2 * A, kv16 + i * 3 * A + A);
    }
    const char* kv = bf16 ? reinterpret_cast<const char*>(kv16) : reinterpret_cast<const char*>(rows);
    run_view_matmul(q, qs, kt, kv + A * esize, scores, S, bf16);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < H * N; ++r) softmax_row_inference(S + r * N, N, P16 ? P16 + r * N : nullptr);
    run_view_matmul(scores, P16 ? static_cast<const void*>(P16) : S, v, kv + 2 * A * esize, out,
                    y.data() + b * N * A, bf16);
  }
}


// Training: q (scaled), k and v gathered head-major into contiguous [B·heads, N, d] copies, as
// attention_backward does, both products on them, and the output scattered back into y's rows.
namespace {
// q · q_scale, k and v out of qkv [B, N, 3·heads·d] into head-major [B·heads, N, d] copies (the
// layout the training kernels' batched products take). q_scale 1 copies q exactly.
void gather_heads(const Tensor& qkv, int heads, int64_t d, float q_scale, float* Q, float* K, float* V) {
  const int64_t B = qkv.dim(0), N = qkv.dim(1), A = heads * d;
  const float* QKV = qkv.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i) {
      const float* row = QKV + (b * N + i) * 3 * A;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t at = ((b * heads + h) * N + i) * d;
        for (int64_t c = 0; c < d; ++c) {
          Q[at + c] = row[h * d + c] * q_scale;
          K[at + c] = row[A + h * d + c];
          V[at + c] = row[2 * A + h * d + c];
        }
      }
    }
}
}  // namespace

void CpuBackend::attention_training(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y) {
  const int64_t B = qkv.dim(0), N = qkv.dim(1), d = head_dim, A = heads * d, BH = B * heads;
  Tensor q = Tensor::empty({BH, N, d}), k = Tensor::empty({BH, N, d}), v = Tensor::empty({BH, N, d});
  Tensor s = Tensor::empty({BH, N, N});
  float *Q = q.data(), *Kp = k.data(), *V = v.data(), *S = s.data();
  gather_heads(qkv, heads, d, scale, Q, Kp, V);
  run_bmm(batched_matmul(BH, N, d, N, true), BH, N, d, N, true, Q, Kp, S);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < BH * N; ++r) softmax_row(S + r * N, N, 1.f);
  Tensor o = std::move(q);  // reuse q's buffer for the output
  run_bmm(batched_matmul(BH, N, N, d, false), BH, N, N, d, false, S, V, o.data());
  const float* O = o.data();
  float* Y = y.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t c = 0; c < d; ++c) Y[(b * N + i) * A + h * d + c] = O[((b * heads + h) * N + i) * d + c];
}

// Recomputes P = softmax(q kᵀ · scale) with the forward's kernels, then five batched GEMMs:
// dV = Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP - rowsum(P ⊙ dP)), dQ = dS K · scale, dK = dSᵀ Q · scale.
void CpuBackend::attention_backward(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                                    Tensor& dqkv) {
  const int64_t B = qkv.dim(0), N = qkv.dim(1), d = head_dim, A = heads * d, BH = B * heads;
  Tensor q = Tensor::empty({BH, N, d}), k = Tensor::empty({BH, N, d}), v = Tensor::empty({BH, N, d});
  Tensor dout = Tensor::empty({BH, N, d});
  const float* G = dy.data();
  float *Q = q.data(), *Kp = k.data(), *V = v.data(), *DO = dout.data();
  gather_heads(qkv, heads, d, 1.f, Q, Kp, V);  // q unscaled here: dK needs the plain q
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t c = 0; c < d; ++c)
          DO[((b * heads + h) * N + i) * d + c] = G[(b * N + i) * A + h * d + c];
  Tensor p = Tensor::empty({BH, N, N}), dp = Tensor::empty({BH, N, N});
  float *P = p.data(), *DP = dp.data();
  run_bmm(batched_matmul(BH, N, d, N, true), BH, N, d, N, true, Q, Kp, P);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < BH * N; ++r) softmax_row(P + r * N, N, scale);
  run_bmm(batched_matmul(BH, N, d, N, true), BH, N, d, N, true, DO, V, DP);  // dP = dO Vᵀ
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < BH * N; ++r) {
    float* pr = P + r * N;
    float* dr = DP + r * N;
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < N; ++j) dot += pr[j] * dr[j];
#pragma omp simd
    for (int64_t j = 0; j < N; ++j) dr[j] = pr[j] * (dr[j] - dot) * scale;  // dS · scale
  }
  Tensor dq = Tensor::empty({BH, N, d}), dk = Tensor::empty({BH, N, d}), dv = Tensor::empty({BH, N, d});
  run_bmm(batched_matmul(BH, N, N, d, false), BH, N, N, d, false, DP, Kp, dq.data());  // dQ = dS K · scale
  // Transposed left operands: dK = (dS · scale)ᵀ Q, dV = Pᵀ dO.
  auto& tmm = onednn::cached<dnnl::matmul>(fmt::format("bmmT:{}:{}:{}", BH, N, d), [&] {
    return dnnl::matmul(dnnl::matmul::primitive_desc(
        dnnl::matmul::desc(onednn::plain({BH, N, N}, {N * N, 1, N}), onednn::plain({BH, N, d}, {N * d, d, 1}),
                           onednn::plain({BH, N, d}, {N * d, d, 1})),
        onednn::engine()));
  });
  auto run_t = [&](const float* a, const float* b, float* c) {
    tmm.execute(onednn::stream(), {{DNNL_ARG_SRC, onednn::wrap(onednn::plain({BH, N, N}, {N * N, 1, N}), a)},
                                   {DNNL_ARG_WEIGHTS, onednn::wrap(onednn::plain({BH, N, d}, {N * d, d, 1}), b)},
                                   {DNNL_ARG_DST, onednn::wrap(onednn::plain({BH, N, d}, {N * d, d, 1}), c)}});
    onednn::stream().wait();
  };
  run_t(DP, Q, dk.data());
  run_t(P, DO, dv.data());
  float* D = dqkv.data();
  const float *DQ = dq.data(), *DK = dk.data(), *DV = dv.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i)
      for (int64_t h = 0; h < heads; ++h) {
        float* row = D + (b * N + i) * 3 * A;
        const int64_t at = ((b * heads + h) * N + i) * d;
        for (int64_t c = 0; c < d; ++c) {
          row[h * d + c] = DQ[at + c];
          row[A + h * d + c] = DK[at + c];
          row[2 * A + h * d + c] = DV[at + c];
        }
      }
}

}  // namespace mf
