// Multi-head attention on the CPU: q, k, v are gathered head-major into contiguous [B·heads, N, d]
// buffers (q pre-multiplied by the scale), both products run as batched oneDNN matmuls, and the
// softmax runs row-wise in between with a vectorised exp.
#include <cmath>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/fast_math.h"
#include "ops/cpu/onednn.h"

namespace mf {

namespace {
using dnnl::memory;

// Operands in fp32, or bf16 (the forward pass in bf16 precision); the product is fp32 either way.
dnnl::matmul& batched_matmul(int64_t batch, int64_t M, int64_t K, int64_t N, bool transpose_b, bool bf16 = false) {
  const std::string key = fmt::format("bmm:{}:{}:{}:{}:{}:{}", batch, M, K, N, transpose_b, bf16);
  return onednn::cached<dnnl::matmul>(key, [&] {
    const auto t = onednn::operand_type(bf16);
    auto src = onednn::plain({batch, M, K}, {M * K, K, 1}, t);
    // B is stored [batch, N, K] when transposed, [batch, K, N] otherwise.
    auto wei = transpose_b ? onednn::plain({batch, K, N}, {N * K, 1, K}, t)
                           : onednn::plain({batch, K, N}, {K * N, N, 1}, t);
    auto dst = onednn::plain({batch, M, N}, {M * N, N, 1});
    return dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), onednn::engine()));
  });
}

void run_bmm(dnnl::matmul& mm, int64_t batch, int64_t M, int64_t K, int64_t N, bool transpose_b, const void* a,
             const void* b, float* c, bool bf16 = false) {
  const auto t = onednn::operand_type(bf16);
  dnnl::memory src(onednn::plain({batch, M, K}, {M * K, K, 1}, t), onednn::engine(), const_cast<void*>(a));
  dnnl::memory wei(transpose_b ? onednn::plain({batch, K, N}, {N * K, 1, K}, t)
                               : onednn::plain({batch, K, N}, {K * N, N, 1}, t),
                   onednn::engine(), const_cast<void*>(b));
  auto dst = onednn::wrap(onednn::plain({batch, M, N}, {M * N, N, 1}), c);
  mm.execute(onednn::stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
  onednn::stream().wait();
}
}  // namespace

void CpuBackend::attention(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y) {
  const int64_t B = qkv.dim(0), N = qkv.dim(1), d = head_dim, A = heads * d, BH = B * heads;
  Tensor q = Tensor::empty({BH, N, d}), k = Tensor::empty({BH, N, d}), v = Tensor::empty({BH, N, d});
  Tensor s = Tensor::empty({BH, N, N});
  const float* QKV = qkv.data();
  float *Q = q.data(), *Kp = k.data(), *V = v.data(), *S = s.data();

#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i) {
      const float* row = QKV + (b * N + i) * 3 * A;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t at = ((b * heads + h) * N + i) * d;
        for (int64_t c = 0; c < d; ++c) {
          Q[at + c] = row[h * d + c] * scale;
          Kp[at + c] = row[A + h * d + c];
          V[at + c] = row[2 * A + h * d + c];
        }
      }
    }

  // bf16 precision: the operands of both products are rounded to bf16 (scratch buffers).
  const bool bf16 = precision_ == Precision::bf16;
  using onednn::Scratch;
  const int64_t nq = BH * N * d;
  run_bmm(batched_matmul(BH, N, d, N, true, bf16), BH, N, d, N, true,
          bf16 ? onednn::bf16_scratch(Scratch::attn_q, Q, nq) : Q, bf16 ? onednn::bf16_scratch(Scratch::attn_k, Kp, nq) : Kp,
          S, bf16);

#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < BH * N; ++r) {
    float* sr = S + r * N;
    float mx = -INFINITY;
    for (int64_t j = 0; j < N; ++j) mx = std::max(mx, sr[j]);
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < N; ++j) {
      sr[j] = fastmath::exp_fast(sr[j] - mx);
      sum += sr[j];
    }
    const float inv = 1.f / sum;
#pragma omp simd
    for (int64_t j = 0; j < N; ++j) sr[j] *= inv;
  }

  Tensor o = std::move(q);  // reuse q's buffer for the output
  run_bmm(batched_matmul(BH, N, N, d, false, bf16), BH, N, N, d, false,
          bf16 ? onednn::bf16_scratch(Scratch::attn_p, S, BH * N * N) : S,
          bf16 ? onednn::bf16_scratch(Scratch::attn_v, V, nq) : V, o.data(), bf16);

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
  const float* QKV = qkv.data();
  const float* G = dy.data();
  float *Q = q.data(), *Kp = k.data(), *V = v.data(), *DO = dout.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < N; ++i)
      for (int64_t h = 0; h < heads; ++h) {
        const float* row = QKV + (b * N + i) * 3 * A;
        const int64_t at = ((b * heads + h) * N + i) * d;
        for (int64_t c = 0; c < d; ++c) {
          Q[at + c] = row[h * d + c];  // unscaled here: dK needs the plain q
          Kp[at + c] = row[A + h * d + c];
          V[at + c] = row[2 * A + h * d + c];
          DO[at + c] = G[(b * N + i) * A + h * d + c];
        }
      }
  Tensor p = Tensor::empty({BH, N, N}), dp = Tensor::empty({BH, N, N});
  float *P = p.data(), *DP = dp.data();
  run_bmm(batched_matmul(BH, N, d, N, true), BH, N, d, N, true, Q, Kp, P);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < BH * N; ++r) {
    float* pr = P + r * N;
    float mx = -INFINITY;
    for (int64_t j = 0; j < N; ++j) mx = std::max(mx, pr[j] * scale);
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < N; ++j) {
      pr[j] = fastmath::exp_fast(pr[j] * scale - mx);
      sum += pr[j];
    }
    const float inv = 1.f / sum;
#pragma omp simd
    for (int64_t j = 0; j < N; ++j) pr[j] *= inv;
  }
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
