#include "ops/cuda/cuda_backward.h"

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/env_switch.h"
#include "ops/cuda/backend_kernels.h"
#include "ops/cuda/backward_kernels.h"
#include "ops/cuda/cuda_context.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/kernels/kernels.h"
#include "ops/cuda/op_buffers.h"

namespace mf {
namespace {

namespace bw = cuda::backward;

using cuda::ops::DeviceGrad;
using cuda::ops::ok;
using cuda::ops::stream;
using cuda::ops::typed_acts;
using cuda::ops::Widened;
using cuda::ops::Work;
namespace k = cuda::kernels;
using k::bf16;

// Attention's backward comes in six versions (docs/cuda.md, "Backward passes"):
//   mma (default)   bf16 activations, head size 32: one block per (sample, head) on the tensor cores
//                   with raw mma.sync, P and dS in registers, nothing N×N in global memory, the
//                   scores recomputed per key tile (attention_backward_mma.cu). Chosen by the H100
//                   A/B of 2026-12-05 (cuda_check.sh attnmma): 5.9 against 9.8 ms of two
//                   caformer_s18 steps' attention backward, 77.0 against 80.9 ms of all their
//                   kernels; where it does not apply (head size 64) the key-tile kernel runs, and
//                   elsewhere (fp32 activations, other head sizes) the gemm version;
//   tiles           the previous default (2026-12-05, attntiles: 9.8 against 15.1 ms of the lock-step
//                   kernel), head sizes 32 and 64: warps that work alone between two barriers on query
//                   blocks and key tiles, WMMA products through shared memory (attention_backward_wmma.cu);
//   wmma            the default before that, the same file: the warps in lock step over query row blocks;
//   gemm            the five products (S = QKᵀ, dP = dY·Vᵀ, dV = Pᵀ·dY, dQ = dS·K, dK = dSᵀ·Q) through
//                   cuBLASLt, strided over the samples, one head at a time, with the softmax rows in
//                   one kernel between them; P and dS in fp32 in a workspace;
//   materialised    one thread per output in double, P and dS in double (the plain version);
//   fused           no N×N matrices in global memory (attention_backward.cu).
// METAFORMER_CUDA_ATTN_BWD=tiles|wmma|gemm|materialised|fused picks another (the device A/B, tools/device/cuda_check.sh
// attnab: on the H200 the fused kernel was slower than the materialised one, which was 0.34 s of
// two caformer_s18 training steps at batch 128).
// METAFORMER_CUDA_DW_BWD=gather: the depthwise convolution's dx by the plain gather in double at
// every stride (the default convolves dy with the flipped kernel at stride 1).
bool gather_depthwise_dx() {
  static const bool gather = [] {
    return env_choice("METAFORMER_CUDA_DW_BWD", {"flip", "gather"}) == 1;
  }();
  return gather;
}

enum class AttnBwd { gemm, materialised, fused, wmma, tiles, mma };
AttnBwd attention_backward_version() {
  static const AttnBwd v = [] {
    constexpr AttnBwd order[] = {AttnBwd::mma, AttnBwd::tiles, AttnBwd::wmma, AttnBwd::gemm,
                                 AttnBwd::materialised, AttnBwd::fused};
    const int v = env_choice("METAFORMER_CUDA_ATTN_BWD", {"mma", "tiles", "wmma", "gemm", "materialised", "fused"});
    return order[v < 0 ? 0 : v];
  }();
  return v;
}

bw::Act bact(const Activation& a) {
  return bw::Act{static_cast<int>(a.kind), a.scale, a.bias, a.threshold, a.scale_on_device, a.bias_on_device};
}

// Column-major cuBLASLt product in fp32 (TF32 off); D = op(A) · op(B) (+ D when accumulate).
void gemm_f32(bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
              float* d, int64_t ldd, bool accumulate) {
  cuda::Gemm g;
  g.type = cuda::GemmType::f32;
  g.trans_b = trans_b;
  g.m = m, g.n = n, g.k = k;
  g.a = a, g.lda = lda;
  g.b = b, g.ldb = ldb;
  g.d = d, g.ldd = ldd;
  g.c = accumulate ? d : nullptr;  // beta = 1, in place (C and D share one layout)
  cuda::run_gemm(g);
}

// The same product with bf16 operands and fp32 accumulation, into bf16 (GemmType::bf16) or into fp32
// (GemmType::bf16_f32out; with accumulate, added to D).
void gemm_bf16(cuda::GemmType type, bool trans_b, int64_t m, int64_t n, int64_t k, const bf16* a, int64_t lda,
               const bf16* b, int64_t ldb, void* d, int64_t ldd, bool accumulate) {
  cuda::Gemm g;
  g.type = type;
  g.trans_b = trans_b;
  g.m = m, g.n = n, g.k = k;
  g.a = a, g.lda = lda;
  g.b = b, g.ldb = ldb;
  g.d = d, g.ldd = ldd;
  g.c = accumulate ? d : nullptr;
  cuda::run_gemm(g);
}

// A strided batch of column-major fp32 products, D[i] = op(A[i]) · op(B[i]) (overwritten), the i-th
// operands `batch` strides apart (stride 0: the same matrix for every i).
void strided_gemm(cuda::GemmType type, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void* a,
                  int64_t lda, int64_t stride_a, const void* b, int64_t ldb, int64_t stride_b, void* d, int64_t ldd,
                  int64_t stride_d, int64_t batch) {
  cuda::Gemm g;
  g.type = type;
  g.trans_a = trans_a, g.trans_b = trans_b;
  g.m = m, g.n = n, g.k = k;
  g.a = a, g.lda = lda, g.stride_a = stride_a;
  g.b = b, g.ldb = ldb, g.stride_b = stride_b;
  g.d = d, g.ldd = ldd, g.stride_d = stride_d;
  g.batch = batch;
  cuda::run_gemm(g);
}

void strided_gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                      int64_t stride_a, const float* b, int64_t ldb, int64_t stride_b, float* d, int64_t ldd,
                      int64_t stride_d, int64_t batch) {
  strided_gemm(cuda::GemmType::f32, trans_a, trans_b, m, n, k, a, lda, stride_a, b, ldb, stride_b, d, ldd, stride_d,
               batch);
}

// Attention's default backward: the five products through cuBLASLt, strided over the samples, one
// head at a time (the heads are column windows of qkv: no copies), with the softmax rows in one
// kernel between them. E: the activations' type. In bf16, S = Q·Kᵀ and dP = dY·Vᵀ come out in fp32
// (bf16 operands), and the softmax kernel writes P and dS in bf16 for the three products that read
// them (as flash attention does), which write dqkv in bf16.
// Row-major products as column-major cuBLASLt calls (see gemm_f32): a row-major X = op(L) · op(R)
// is the column-major Xᵀ = op(R)ᵀ · op(L)ᵀ, and a row-major matrix is its column-major transpose.
template <class E>
void attention_backward_gemm(const E* q, const E* g, E* d, int64_t B, int64_t N, int heads, int head_dim,
                             float scale) {
  constexpr bool half = std::is_same_v<E, bf16>;
  const cuda::GemmType scores = half ? cuda::GemmType::bf16_f32out : cuda::GemmType::f32;
  const cuda::GemmType grads = half ? cuda::GemmType::bf16 : cuda::GemmType::f32;
  const int64_t A = static_cast<int64_t>(heads) * head_dim, NN = N * N, ld = 3 * A;
  const int64_t chunk = std::clamp<int64_t>((int64_t{1} << 26) / std::max<int64_t>(heads * NN, 1), 1,
                                            std::max<int64_t>(B, 1));
  Tensor work = Tensor::empty({2 * heads * chunk * NN}, Device::CUDA);
  Tensor work16 = half ? Tensor::empty({2 * heads * chunk * NN}, Device::CUDA, DType::bf16) : Tensor();
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    const int64_t nb = std::min(chunk, B - b0);
    const E* q0 = q + b0 * N * ld;
    const E* g0 = g + b0 * N * A;
    E* d0 = d + b0 * N * ld;
    float* S = work.data();  // [heads, nb, N, N]
    float* dP = work.data() + heads * nb * NN;
    for (int h = 0; h < heads; ++h) {
      const int64_t o = static_cast<int64_t>(h) * head_dim;
      // S = Q·Kᵀ and dP = dY·Vᵀ, [N, N] per sample
      strided_gemm(scores, true, false, N, N, head_dim, q0 + A + o, ld, N * ld, q0 + o, ld, N * ld, S + h * nb * NN, N,
                   NN, nb);
      strided_gemm(scores, true, false, N, N, head_dim, q0 + 2 * A + o, ld, N * ld, g0 + o, A, N * A,
                   dP + h * nb * NN, N, NN, nb);
    }
    const E* P = reinterpret_cast<const E*>(S);
    const E* dS = reinterpret_cast<const E*>(dP);
    if constexpr (half) {
      bf16* P16 = static_cast<bf16*>(work16.raw());
      bf16* dS16 = P16 + heads * nb * NN;
      ok(bw::attention_softmax_grad(S, dP, P16, dS16, heads * nb * N, N, scale, stream()), "attention backward: softmax");
      P = P16;
      dS = dS16;
    } else {
      ok(bw::attention_softmax_grad(S, dP, heads * nb * N, N, scale, stream()), "attention backward: softmax");
    }
    for (int h = 0; h < heads; ++h) {
      const int64_t o = static_cast<int64_t>(h) * head_dim;
      const E* Ph = P + h * nb * NN;
      const E* dSh = dS + h * nb * NN;
      // dV = Pᵀ·dY, dQ = dS·K, dK = dSᵀ·Q, [N, head_dim] per sample, into dqkv's slices
      strided_gemm(grads, false, true, head_dim, N, N, g0 + o, A, N * A, Ph, N, NN, d0 + 2 * A + o, ld, N * ld, nb);
      strided_gemm(grads, false, false, head_dim, N, N, q0 + A + o, ld, N * ld, dSh, N, NN, d0 + o, ld, N * ld, nb);
      strided_gemm(grads, false, true, head_dim, N, N, q0 + o, ld, N * ld, dSh, N, NN, d0 + A + o, ld, N * ld, nb);
    }
  }
}

// Row-major dx [M, K] = dy [M, N] · w [N, K]: column-major dxᵀ (K×M) = wᵀ (K×N) · dyᵀ (N×M).
void input_grad(const float* dy, const float* w, float* dx, int64_t M, int64_t N, int64_t K) {
  gemm_f32(false, K, M, N, w, K, dy, N, dx, K, false);
}
// Row-major dw [N, K] (+)= dyᵀ [N, M] · x [M, K]: column-major dwᵀ (K×N) = xᵀ (K×M) · dy (M×N), dy
// stored column-major as N×M (so transposed).
void weight_grad(const float* dy, const float* x, float* dw, int64_t M, int64_t N, int64_t K, bool accumulate) {
  if (M == 0) return;  // an empty sum: nothing to add
  gemm_f32(true, K, N, M, x, K, dy, N, dw, K, accumulate);
}

}  // namespace

// In both precisions: on the bf16 backend the ops without bf16 kernels run their fp32 ones through
// Widened copies.
bool CudaBackwardOps::supports_backward(OpKind op) const {
  switch (op) {
    case OpKind::Linear:
    case OpKind::Conv2d:
    case OpKind::DepthwiseConv2d:
    case OpKind::PoolMinusInput:
    case OpKind::LayerNorm:
    case OpKind::GroupNorm1:
    case OpKind::Activation:
    case OpKind::ScaledResidual:
    case OpKind::GlobalAvgPool:
    case OpKind::Attention:
    case OpKind::ChannelSlice:
    case OpKind::TokenMix:
    case OpKind::ChannelAffine:
    case OpKind::ComplexMul:
    case OpKind::Glu:
    case OpKind::CrossEntropy:
    // Backward passes made of forward ops the backend has (the adjoint transforms, a rescale).
    case OpKind::SampleScale:
    case OpKind::Rfft2:
    case OpKind::Irfft2:
    case OpKind::Haar2d: return supports(op);
    default: return false;
  }
}

void CudaBackwardOps::linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                                      Tensor* db) {
  const int64_t K = x.shape().last(), M = x.shape().rows(), N = w.dim(0);
  // With bf16 activations the products take bf16 operands with fp32 accumulation: dx = dy·W into
  // bf16 (from W's bf16 copy, the one the forward reads), and dW += dyᵀ·x added by cuBLASLt straight
  // into the fp32 gradient (GemmType::bf16_f32out).
  const bool bf16_acts = activation_dtype() == DType::bf16;
  Widened f;
  const bf16* G16 = bf16_acts ? f.in16(dy) : nullptr;
  const float* G = bf16_acts ? nullptr : f.in(dy);
  if (dx) {
    if (bf16_acts)
      gemm_bf16(cuda::GemmType::bf16, false, K, M, N, cuda::device_bf16(w), K, G16, N, f.out16(*dx), K, false);
    else
      input_grad(G, f.in(w), f.out(*dx), M, N, K);
  }
  if (dw && M > 0) {
    DeviceGrad g(dw, true);
    if (bf16_acts)
      gemm_bf16(cuda::GemmType::bf16_f32out, true, K, N, M, f.in16(x), K, G16, N, g.get(), K, true);
    else
      weight_grad(G, f.in(x), g.get(), M, N, K, true);
    g.finish();
  }
  if (db) {
    DeviceGrad g(db, true);
    Work work(bw::column_sum_work(M, N));
    ok(bf16_acts ? bw::column_sum_add(G16, g.get(), M, N, work.p, stream())
                 : bw::column_sum_add(G, g.get(), M, N, work.p, stream()),
       "linear backward: bias");
    g.finish();
  }
}

void CudaBackwardOps::linear_act_backward(const Tensor& h, const Tensor& pre, const Activation& act, const Tensor& w,
                                          const Tensor& dy, Tensor& dpre, Tensor* dw, Tensor* db, Tensor* dscale,
                                          Tensor* dbias) {
  const int64_t K = h.shape().last(), M = h.shape().rows(), N = w.dim(0);
  const bool bf16_acts = activation_dtype() == DType::bf16;
  if (act.kind != ActKind::GELU || !cuda::gelu_epilogue_in_training(bf16_acts, K)) {
    Backend::linear_act_backward(h, pre, act, w, dy, dpre, dw, db, dscale, dbias);
    return;
  }
  linear_backward(h, w, dy, nullptr, dw, db);  // the parameters' gradients
  Widened f;
  cuda::Gemm g;  // dpreᵀ [K, M] = W [K, N] (column-major view of w [N, K]) · dyᵀ [N, M], ⊙ GELU'(pre)
  g.type = cuda::GemmType::bf16;
  g.m = K, g.n = M, g.k = N;
  g.a = cuda::device_bf16(w), g.lda = K;
  g.b = f.in16(dy), g.ldb = N;
  g.d = f.out16(dpre), g.ldd = K;
  g.epilogue = cuda::Epilogue::dgelu;
  g.aux = const_cast<bf16*>(f.in16(pre));  // read only (DGELU's input)
  cuda::run_gemm(g);
}

namespace {
// dw, db and dls from the sums G [N, K] and s [N] that a folded layer scale's backward made through
// ls ⊙ w (layer_scale_fold_grads); the gradients may be on the host (DeviceGrad), any may be null.
void fold_layer_scale_grads(const Tensor& G, const Tensor& s, const Tensor& w, const Tensor* b, const Tensor& ls,
                            Tensor* dw, Tensor* db, Tensor* dls, int64_t N, int64_t K, const char* what) {
  if (!dw && !db && !dls) return;
  DeviceGrad gw(dw, true), gb(db, true), gl(dls, true);
  ok(bw::layer_scale_fold_grads(G.defined() ? G.data() : nullptr, s.defined() ? s.data() : nullptr,
                                dls ? cuda::device_f32(w) : nullptr, b && dls ? cuda::device_f32(*b) : nullptr,
                                cuda::device_f32(ls), gw.get(), gb.get(), gl.get(), N, K, stream()),
     what);
  gw.finish();
  gb.finish();
  gl.finish();
}
}  // namespace

// Through the folded weight wf = ls ⊙ w the forward's GEMM read (cuda::layer_scaled, still cached):
// dpre = act'(pre) ⊙ (dy · wf), and the GEMMs' weight and bias sums G = dyᵀ · h and s = Σ_rows dy
// into scratch, from which one small kernel gives dw, db and dls (layer_scale_backward.cu). No pass
// writes dy ⊙ ls or reads the branch output, which the forward never wrote.
void CudaBackwardOps::linear_act_scaled_backward(const Tensor& h, const Tensor& pre, const Activation& act,
                                                 const Tensor& w, const Tensor* b, const Tensor& ls, const Tensor& dy,
                                                 Tensor& dpre, Tensor* dw, Tensor* db, Tensor* dls, Tensor* dscale,
                                                 Tensor* dbias) {
  const cuda::LayerScaled& f = cuda::layer_scaled(w, b, ls);
  const int64_t N = f.w.dim(0), K = f.w.dim(1);
  Tensor G, s;
  if (dw || dls) {
    G = Tensor::empty({N, K}, Device::CUDA);
    G.zero();
  }
  if (b && (db || dls)) {
    s = Tensor::empty({N}, Device::CUDA);
    s.zero();
  }
  linear_act_backward(h, pre, act, f.w, dy, dpre, G.defined() ? &G : nullptr, s.defined() ? &s : nullptr, dscale,
                      dbias);
  fold_layer_scale_grads(G, s, w, b, ls, dw, db, dls, N, K,
                         "linear_scaled_residual backward: the layer scale's gradients");
}

// PoolFormer's first half y = x + ls ⊙ (pool(n) − n), n = GroupNorm(x; w, b), which the forward ran as
// one pool_branch kernel: the pooling's adjoint and the layer scale commute (both act per channel),
// so q = (pool − I)ᵀ(dy) and the norm's backward runs with the weight ls ⊙ w, adding the skip's dy as
// it writes dx. Its weight and bias sums Σ q ⊙ x̂ and Σ q then give dw, db and dls (= Σ dy ⊙ (pool(n)
// − n) = Σ q ⊙ n = w ⊙ Σ q ⊙ x̂ + b ⊙ Σ q) through layer_scale_fold_grads with K = 1. No pass writes
// dy ⊙ ls or reads the mixer's output, which the forward never wrote.
void CudaBackwardOps::pool_branch_backward(const Tensor& x, const BranchNorm& norm, int kernel, const Tensor& ls,
                                           const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db, Tensor* dls) {
  const int64_t C = x.dim(3);
  Tensor wf = Tensor::empty({C}, Device::CUDA);
  ok(k::sample_scale(cuda::device_f32(*norm.weight), cuda::device_f32(ls), wf.data(), C, 1, stream()),
     "pool_branch backward: the layer-scaled norm weight");
  Tensor gw, gb;
  if (dw || dls) {
    gw = Tensor::empty({C}, Device::CUDA);
    gw.zero();
  }
  if (norm.bias && (db || dls)) {
    gb = Tensor::empty({C}, Device::CUDA);
    gb.zero();
  }
  {
    Tensor q = Tensor::empty(x.shape(), Device::CUDA, activation_dtype());
    pool_minus_input_backward(dy, kernel, q);
    group_norm1_backward_add(x, wf, norm.eps, q, dy, nullptr, dx, gw.defined() ? &gw : nullptr,
                             gb.defined() ? &gb : nullptr, nullptr);
  }
  fold_layer_scale_grads(gw, gb, *norm.weight, norm.bias, ls, dw, db, dls, C, 1,
                         "pool_branch backward: the layer scale's gradients");
}

// Through im2col, as the forward: dW = dyᵀ · cols (then reordered to [Co, Ci, kh, kw]), dcols = dy · W
// (W as [Co, kh, kw, Ci]) and dx = col2im(dcols). With bf16 activations the columns, dcols and the
// weight's GEMM layout are bf16, dW's product comes out in fp32 (bf16_f32out).
void CudaBackwardOps::conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy,
                                      Tensor* dx, Tensor* dw, Tensor* db) {
  Widened f;
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3), Co = w.dim(0);
  const int64_t Ho = dy.dim(1), Wo = dy.dim(2);
  const int kh = g.kernel_h, kw = g.kernel_w;
  const int64_t K = Ci * kh * kw, M = B * Ho * Wo;
  const bool bf16_acts = activation_dtype() == DType::bf16;
  const DType act = bf16_acts ? DType::bf16 : DType::f32;
  const bf16* G16 = bf16_acts ? f.in16(dy) : nullptr;
  const float* G = bf16_acts ? nullptr : f.in(dy);
  if (db) {
    DeviceGrad d(db, true);
    Work work(bw::column_sum_work(M, Co));
    ok(bf16_acts ? bw::column_sum_add(G16, d.get(), M, Co, work.p, stream())
                 : bw::column_sum_add(G, d.get(), M, Co, work.p, stream()),
       "conv2d backward: bias");
    d.finish();
  }
  if (dw && M > 0) {
    DeviceGrad d(dw, true);
    // bf16: the columns' rows padded to 16 bytes, as the forward's are (the stem's K = 147 otherwise
    // limited cuBLASLt to 2-byte-aligned kernels: an sm75 CUTLASS one, H100, 2026-12-06).
    const int64_t ldk = bf16_acts ? (K + 7) / 8 * 8 : K;
    Tensor dwk = Tensor::empty({Co, ldk}, Device::CUDA);
    {
      Tensor cols = Tensor::empty({M, ldk}, Device::CUDA, act);
      if (bf16_acts) {
        ok(cuda::kernels::im2col_nhwc_padded(f.in16(x), static_cast<bf16*>(cols.raw()), ldk, B, H, W, Ci, kh, kw,
                                             g.stride_h, g.stride_w, g.pad_h, g.pad_w, Ho, Wo, stream()),
           "conv2d backward: im2col");
        // ldk rows of dW, not K: the padding columns' products are never read (conv_weight_grad_add
        // takes the first K), and an m of K = 147 again kept cuBLASLt to its 2-byte-aligned kernels.
        gemm_bf16(cuda::GemmType::bf16_f32out, true, ldk, Co, M, static_cast<const bf16*>(cols.raw()), ldk, G16, Co,
                  dwk.data(), ldk, false);
      } else {
        ok(cuda::kernels::im2col_nhwc_padded(f.in(x), cols.data(), K, B, H, W, Ci, kh, kw, g.stride_h, g.stride_w,
                                             g.pad_h, g.pad_w, Ho, Wo, stream()),
           "conv2d backward: im2col");
        weight_grad(G, cols.data(), dwk.data(), M, Co, K, false);
      }
    }
    ok(bw::conv_weight_grad_add(dwk.data(), ldk, d.get(), Co, Ci, kh, kw, stream()), "conv2d backward: weight");
    d.finish();
  }
  if (dx) {
    Tensor wk = Tensor::empty({Co, K}, Device::CUDA, act);
    Tensor dcols = Tensor::empty({M, K}, Device::CUDA, act);
    if (bf16_acts) {
      bf16* wk16 = static_cast<bf16*>(wk.raw());
      bf16* dcols16 = static_cast<bf16*>(dcols.raw());
      ok(cuda::kernels::conv_weight_to_gemm(f.in(w), wk16, K, Co, Ci, kh, kw, stream()), "conv2d backward: weight layout");
      gemm_bf16(cuda::GemmType::bf16, false, K, M, Co, wk16, K, G16, Co, dcols16, K, false);
      ok(bw::col2im_nhwc<bf16>(dcols16, f.out16(*dx), B, H, W, Ci, kh, kw, g.stride_h, g.stride_w, g.pad_h, g.pad_w, Ho,
                               Wo, stream()),
         "conv2d backward: col2im");
    } else {
      ok(cuda::kernels::conv_weight_to_gemm(f.in(w), wk.data(), K, Co, Ci, kh, kw, stream()),
         "conv2d backward: weight layout");
      input_grad(G, wk.data(), dcols.data(), M, Co, K);
      ok(bw::col2im_nhwc<float>(dcols.data(), f.out(*dx), B, H, W, Ci, kh, kw, g.stride_h, g.stride_w, g.pad_h,
                                g.pad_w, Ho, Wo, stream()),
         "conv2d backward: col2im");
    }
  }
}

void CudaBackwardOps::depthwise_conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g,
                                                const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* db) {
  Widened f;
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3), Ho = dy.dim(1), Wo = dy.dim(2);
  const int kh = g.kernel_h, kw = g.kernel_w;
  // At stride 1, dx is the forward convolution of dy with the kernel flipped, padded by k − 1 − p:
  // the tiled forward kernel (fp32 sums) instead of a gather per input element in double, which
  // was 8 % of a caformer_s18 training step (kernel time) on the H200.
  const bool dx_by_forward = dx && g.stride_h == 1 && g.stride_w == 1 && g.pad_h <= kh - 1 && g.pad_w <= kw - 1 &&
                             !gather_depthwise_dx();
  if (dx_by_forward) {
    Tensor flipped = Tensor::empty({static_cast<int64_t>(kh) * kw * C}, Device::CUDA);
    ok(bw::depthwise_weight_flip_hwc(f.in(w), flipped.data(), C, kh, kw, stream()), "depthwise_conv2d backward: flip");
    const auto forward = [&](const auto* in, auto* out) {
      ok(cuda::kernels::depthwise_conv2d(in, C, flipped.data(), nullptr, out, C, B, Ho, Wo, C, H, W, kh, kw, 1, 1,
                                         kh - 1 - g.pad_h, kw - 1 - g.pad_w, cuda::kernels::Act{},
                                         cuda::kernels::Act{}, stream()),
         "depthwise_conv2d backward: dx");
    };
    typed_acts(activation_dtype(), [&](auto tag) {
      using T = decltype(tag);
      forward(f.act<T>(dy), f.act_out<T>(*dx));
    });
  }
  DeviceGrad gw(dw, true), gb(db, true);
  Work work(bw::depthwise_backward_work(B, Ho, Wo, C, g.kernel_h, g.kernel_w));
  const bool gather_dx = dx && !dx_by_forward;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(bw::depthwise_conv2d_backward(f.act<T>(x), f.in(w), f.act<T>(dy), gather_dx ? f.act_out<T>(*dx) : nullptr,
                                     gw.get(), gb.get(), B, H, W, C, Ho, Wo, g.kernel_h, g.kernel_w, g.stride_h,
                                     g.stride_w, g.pad_h, g.pad_w, work.p, stream()),
       "depthwise_conv2d backward");
  });
  gw.finish();
  gb.finish();
}

// The gated CNN's backward without the conv channels' copies: glu_backward writes dt (zero in the
// conv slice) and dc; the forward kernel with the flipped weights (as depthwise_conv2d_backward's dx)
// then writes the slice's gradient into dt where it lies (y stride Ct), and the weight-gradient
// kernels read t's slice where it lies (ldx = Ct). The same kernels, sums and orders as the separate
// ops (glu_backward, depthwise_conv2d_backward on the copy, channel_slice_backward adding into the
// zeros), so the same bits. Elsewhere (other strides or kernel sizes, the gather dx, a host
// gradient) the default: those separate ops.
void CudaBackwardOps::gated_conv_backward(const Tensor& t, const Tensor& c, int64_t hidden, int64_t offset,
                                          const Activation& act, const Tensor& w, const ConvGeometry& g,
                                          const Tensor& dz, Tensor& dt, Tensor* dw, Tensor* db) {
  const int kh = g.kernel_h, kw = g.kernel_w;
  const bool applies = dt.device() == Device::CUDA && dt.dtype() == activation_dtype() && g.stride_h == 1 &&
                       g.stride_w == 1 && kh == kw && (kh == 3 || kh == 5 || kh == 7) && g.pad_h <= kh - 1 &&
                       g.pad_w <= kw - 1 && !gather_depthwise_dx();
  if (!applies) return Backend::gated_conv_backward(t, c, hidden, offset, act, w, g, dz, dt, dw, db);
  Tensor dc = Tensor::empty(c.shape(), Device::CUDA, activation_dtype());
  glu_backward(t, &c, 0, hidden, act, dz, dt, &dc);
  const int64_t B = t.dim(0), H = t.dim(1), W = t.dim(2), Ct = t.dim(3), C = c.dim(3);
  Widened f;
  Tensor flipped = Tensor::empty({static_cast<int64_t>(kh) * kw * C}, Device::CUDA);
  ok(bw::depthwise_weight_flip_hwc(f.in(w), flipped.data(), C, kh, kw, stream()), "gated_conv backward: flip");
  DeviceGrad gw(dw, true), gb(db, true);
  Work work(bw::depthwise_backward_work(B, H, W, C, kh, kw));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(cuda::kernels::depthwise_conv2d(f.act<T>(dc), C, flipped.data(), nullptr, f.act_out<T>(dt) + offset, Ct, B, H, W,
                                       C, H, W, kh, kw, 1, 1, kh - 1 - g.pad_h, kw - 1 - g.pad_w,
                                       cuda::kernels::Act{}, cuda::kernels::Act{}, stream()),
       "gated_conv backward: dx");
    ok(bw::depthwise_conv2d_backward(f.act<T>(t) + offset, f.in(w), f.act<T>(dc), static_cast<T*>(nullptr), gw.get(),
                                     gb.get(), B, H, W, C, H, W, kh, kw, 1, 1, g.pad_h, g.pad_w, work.p, stream(), Ct),
       "gated_conv backward: weight");
  });
  gw.finish();
  gb.finish();
}

// The backward of act_depthwise_conv2d (the forward kernel applied act as it staged pre): dh by
// depthwise_conv2d_backward's own path (which reads its x only for dw, so pre stands in), with db; dW
// by the tiled kernel applying act as it stages pre, where that kernel applies, else from act(pre)
// materialised in a temporary; then the activation's backward turns dh into dpre and StarReLU's
// scalar gradients. Every sum as deterministic as the separate ops'.
void CudaBackwardOps::act_depthwise_conv2d_backward(const Tensor& pre, const Activation& act, const Tensor& w,
                                                    const ConvGeometry& g, const Tensor& dy, Tensor& dpre, Tensor* dw,
                                                    Tensor* db, Tensor* dscale, Tensor* dbias) {
  Tensor dh = Tensor::empty(pre.shape(), Device::CUDA, activation_dtype());
  depthwise_conv2d_backward(pre, w, g, dy, &dh, nullptr, db);
  if (dw) {
    bool done = false;
    if (activation_dtype() == DType::bf16) {  // the tiled kernel is bf16's
      Widened f;
      DeviceGrad gw(dw, true);
      Work work(bw::depthwise_backward_work(pre.dim(0), dy.dim(1), dy.dim(2), pre.dim(3), g.kernel_h, g.kernel_w));
      ok(bw::act_depthwise_weight_grad(f.in16(pre), bact(act), f.in16(dy), gw.get(), pre.dim(0), pre.dim(1), pre.dim(2),
                                       pre.dim(3), dy.dim(1), dy.dim(2), g.kernel_h, g.kernel_w, g.stride_h, g.stride_w,
                                       g.pad_h, g.pad_w, work.p, stream(), done),
         "act_depthwise_conv2d backward: weight");
      gw.finish();
    }
    if (!done) {
      Tensor h = Tensor::empty(pre.shape(), Device::CUDA, activation_dtype());
      activation(pre, act, h);
      depthwise_conv2d_backward(h, w, g, dy, nullptr, dw, nullptr);
    }
  }
  activation_backward(pre, act, dh, dpre, dscale, dbias);
}

void CudaBackwardOps::pool_minus_input_backward(const Tensor& dy, int kernel, Tensor& dx) {
  Widened f;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(bw::pool_minus_input_backward(f.act<T>(dy), f.act_out<T>(dx), dy.dim(0), dy.dim(1), dy.dim(2), dy.dim(3),
                                     kernel, stream()),
       "pool_minus_input backward");
  });
}

// LayerNorm (groups = rows, n = C) or GroupNorm with one group (groups = samples): dx, plus the
// block's skip gradient `residual` where given, added in the kernel that writes dx. A res scale is
// applied there too (and its gradient summed with the norm's parameters') where the kernels take it:
// LayerNorm rows of up to 768 channels; elsewhere scaled_residual_backward makes the scaled skip first.
void CudaBackwardOps::norm_backward_on_gpu(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                                           const Tensor* residual, const Tensor* res_scale, Tensor& dx, Tensor* dw,
                                           Tensor* db, Tensor* d_res_scale, bool group) {
  const int64_t C = x.shape().last();
  const int64_t groups = group ? x.dim(0) : x.numel() / std::max<int64_t>(C, 1);
  const int64_t n = group ? (groups ? x.numel() / groups : 0) : C;
  Tensor skip;
  if (res_scale && !bw::norm_backward_fuses_res_scale(n, C)) {
    skip = scaled_skip(x, *residual, res_scale, d_res_scale);
    residual = &skip;
    res_scale = nullptr;
    d_res_scale = nullptr;
  }
  Widened f;
  DeviceGrad gw(dw, true), gb(db, true), grs(d_res_scale, true);
  Work work(bw::norm_backward_work(groups, n, C));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(bw::norm_backward(f.act<T>(x), f.in(w), f.act<T>(dy), eps, f.act_out<T>(dx), gw.get(), gb.get(), groups, n, C,
                         work.p, stream(), residual ? f.act<T>(*residual) : nullptr, f.in(res_scale), grs.get()),
       group ? "group_norm1 backward" : "layer_norm backward");
  });
  gw.finish();
  gb.finish();
  grs.finish();
}

void CudaBackwardOps::layer_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                                          Tensor* dw, Tensor* db) {
  norm_backward_on_gpu(x, w, eps, dy, nullptr, nullptr, dx, dw, db, nullptr, false);
}
void CudaBackwardOps::group_norm1_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                                           Tensor* dw, Tensor* db) {
  norm_backward_on_gpu(x, w, eps, dy, nullptr, nullptr, dx, dw, db, nullptr, true);
}
void CudaBackwardOps::layer_norm_backward_add(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                                              const Tensor& residual, const Tensor* res_scale, Tensor& dx, Tensor* dw,
                                              Tensor* db, Tensor* d_res_scale) {
  norm_backward_on_gpu(x, w, eps, dy, &residual, res_scale, dx, dw, db, d_res_scale, false);
}
void CudaBackwardOps::group_norm1_backward_add(const Tensor& x, const Tensor& w, float eps, const Tensor& dy,
                                               const Tensor& residual, const Tensor* res_scale, Tensor& dx, Tensor* dw,
                                               Tensor* db, Tensor* d_res_scale) {
  norm_backward_on_gpu(x, w, eps, dy, &residual, res_scale, dx, dw, db, d_res_scale, true);
}

void CudaBackwardOps::activation_backward(const Tensor& x, const Activation& act, const Tensor& dy, Tensor& dx,
                                          Tensor* dscale, Tensor* dbias) {
  Widened f;
  const bool star = act.kind == ActKind::StarReLU;
  DeviceGrad gs(star ? dscale : nullptr, true), gb(star ? dbias : nullptr, true);
  Work work(gs.get() || gb.get() ? bw::activation_backward_work(x.numel()) : 0);
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(bw::activation_backward(f.act<T>(x), bact(act), f.act<T>(dy), f.act_out<T>(dx), gs.get(), gb.get(), x.numel(),
                               work.p, stream()),
       "activation backward");
  });
  gs.finish();
  gb.finish();
}

void CudaBackwardOps::scaled_residual_backward(const Tensor& x, const Tensor* res_scale, const Tensor& branch,
                                               const Tensor* layer_scale, const Tensor& dy, Tensor& dx,
                                               Tensor& dbranch, Tensor* d_res_scale, Tensor* d_layer_scale) {
  Widened f;
  const int64_t C = x.shape().last(), rows = x.numel() / std::max<int64_t>(C, 1);
  DeviceGrad grs(d_res_scale, true), gls(d_layer_scale, true);
  Work work(grs.get() || gls.get() ? bw::scaled_residual_backward_work(rows, C) : 0);
  // x is read only for the res scale's gradient and branch only for the layer scale's (neither is
  // rounded to bf16 otherwise; branch may be undefined without the latter).
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(bw::scaled_residual_backward(grs.get() ? f.act<T>(x) : nullptr, f.in(res_scale),
                                    gls.get() ? f.act<T>(branch) : nullptr,
                                    f.in(layer_scale), f.act<T>(dy), dx.defined() ? f.act_out<T>(dx) : nullptr,
                                    f.act_out<T>(dbranch),
                                    grs.get(), gls.get(), rows, C, work.p, stream()),
       "scaled_residual backward");
  });
  grs.finish();
  gls.finish();
}

void CudaBackwardOps::global_avg_pool_backward(const Tensor& dy, Tensor& dx) {
  Widened f;
  const int64_t B = dx.dim(0), C = dx.shape().last(), HW = B && C ? dx.numel() / (B * C) : 0;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(bw::global_avg_pool_backward(f.act<T>(dy), f.act_out<T>(dx), B, HW, C, stream()), "global_avg_pool backward");
  });
}

void CudaBackwardOps::attention_backward(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                                         Tensor& dqkv) {
  Widened f;
  const int64_t B = qkv.dim(0), N = qkv.dim(1), A = static_cast<int64_t>(heads) * head_dim;
  const AttnBwd version = attention_backward_version();
  if (version == AttnBwd::fused && bw::attention_backward_fused_supports(head_dim)) {
    Work work(bw::attention_backward_fused_work(B, N, heads));
    ok(bw::attention_backward_fused(f.in(qkv), f.in(dy), f.out(dqkv), B, N, heads, head_dim, scale, work.p, stream()),
       "attention backward (fused)");
    return;
  }
  const bool tensor_cores = version == AttnBwd::wmma || version == AttnBwd::tiles || version == AttnBwd::mma;
  if (tensor_cores && activation_dtype() == DType::bf16) {
    const bf16 *q = f.in16(qkv), *g = f.in16(dy);
    bf16* d = f.out16(dqkv);
    if (version == AttnBwd::mma && bw::attention_backward_mma_supports(N, heads, head_dim, q, g, d)) {
      ok(bw::attention_backward_mma(q, g, d, B, N, heads, scale, stream()), "attention backward (mma)");
      return;
    }
    const bool tiles = version == AttnBwd::tiles || version == AttnBwd::mma;  // mma's head size 64: key tiles
    if (bw::attention_backward_wmma_supports(N, heads, head_dim, q, g, d, tiles)) {
      ok(bw::attention_backward_wmma(q, g, d, B, N, heads, head_dim, scale, tiles, stream()),
         tiles ? "attention backward (key tiles)" : "attention backward (wmma)");
      return;
    }
  }
  if (version == AttnBwd::gemm || tensor_cores) {  // wmma, tiles, mma: where they do not apply
    typed_acts(activation_dtype(), [&](auto tag) {
      using T = decltype(tag);
      attention_backward_gemm(f.act<T>(qkv), f.act<T>(dy), f.act_out<T>(dqkv), B, N, heads, head_dim, scale);
    });
    return;
  }
  const float* q = f.in(qkv);
  const float* g = f.in(dy);
  float* d = f.out(dqkv);
  const int64_t per_sample = bw::attention_backward_work(1, N, heads);
  const int64_t chunk = std::clamp<int64_t>((int64_t{1} << 27) / std::max<int64_t>(per_sample, 1), 1, std::max<int64_t>(B, 1));
  Work work(per_sample * chunk);
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    const int64_t n = std::min(chunk, B - b0);
    ok(bw::attention_backward(q + b0 * N * 3 * A, g + b0 * N * A, d + b0 * N * 3 * A, n, N, heads, head_dim, scale,
                              work.p, stream()),
       "attention backward");
  }
}

// The forward's log-sum-exps and output in place of the mma kernel's phase A (attention_backward_mma.cu),
// where the mma kernel is the chosen one and applies; elsewhere attention_backward, which ignores them.
void CudaBackwardOps::attention_backward_stats(const Tensor& qkv, int heads, int head_dim, float scale,
                                               const Tensor& dy, const Tensor& y, const Tensor& stats, Tensor& dqkv) {
  const bool bf16_here = activation_dtype() == DType::bf16 && y.device() == Device::CUDA && y.dtype() == DType::bf16 &&
                         stats.device() == Device::CUDA && dqkv.device() == Device::CUDA;
  if (bf16_here && attention_backward_version() == AttnBwd::mma) {
    Widened f;
    const bf16 *q = f.in16(qkv), *g = f.in16(dy), *o = f.in16(y);
    bf16* d = f.out16(dqkv);
    if (bw::attention_backward_mma_supports(qkv.dim(1), heads, head_dim, q, g, d, o)) {
      ok(bw::attention_backward_mma(q, g, d, qkv.dim(0), qkv.dim(1), heads, scale, stream(), o, stats.data()),
         "attention backward (mma, the forward's statistics)");
      return;
    }
  }
  attention_backward(qkv, heads, head_dim, scale, dy, dqkv);
}

void CudaBackwardOps::channel_slice_backward(const Tensor& dy, int64_t offset, Tensor& dx) {
  Widened f;
  const int64_t C = dx.shape().last(), width = dy.shape().last();
  const int64_t rows = dy.numel() / std::max<int64_t>(width, 1);
  // dx is an activation gradient (bf16 on the bf16 backend, added into in place), or one on the host
  // (the op harness's).
  if (dx.device() == Device::CUDA && dx.dtype() == DType::bf16) {
    ok(bw::channel_slice_backward(f.in16(dy), static_cast<bf16*>(dx.raw()), rows, C, offset, width, stream()),
       "channel_slice backward");
    return;
  }
  DeviceGrad g(&dx, true);
  ok(bw::channel_slice_backward(f.in(dy), g.get(), rows, C, offset, width, stream()), "channel_slice backward");
  g.finish();
}

void CudaBackwardOps::glu_backward(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset,
                                   const Activation& act, const Tensor& dy, Tensor& dt, Tensor* dc) {
  Widened f;
  const int64_t Ct = t.shape().last(), width = dy.shape().last(), rows = dy.numel() / std::max<int64_t>(width, 1);
  const int64_t cw = c ? c->shape().last() : 0;
  // dc is an activation gradient (bf16 on the bf16 backend), or one on the host (the op harness's).
  const bool bf16_dc = dc && dc->device() == Device::CUDA && dc->dtype() == DType::bf16;
  if (activation_dtype() == DType::bf16 && (!dc || bf16_dc)) {
    ok(bw::glu_backward(f.in16(t), Ct, c ? f.in16(*c) : nullptr, cw, gate_offset, value_offset, bact(act), f.in16(dy),
                        width, f.out16(dt), dc ? f.out16(*dc) : nullptr, rows, stream()),
       "glu backward");
    return;
  }
  DeviceGrad gc(bf16_dc ? nullptr : dc, false);
  ok(bw::glu_backward(f.in(t), Ct, f.in(c), cw, gate_offset, value_offset, bact(act), f.in(dy), width, f.out(dt),
                      bf16_dc ? f.out(*dc) : gc.get(), rows, stream()),
     "glu backward");
  gc.finish();
}

void CudaBackwardOps::token_mix_backward(const Tensor& r, const Tensor& x, const Tensor& dy, Tensor* dx, Tensor* dr,
                                         Tensor* dbias) {
  Widened f;
  const int64_t B = x.dim(0), N = x.dim(1), C = x.dim(2), M = r.dim(0);
  const float *R = f.in(r), *X = f.in(x), *G = f.in(dy);
  if (dx) {
    // Row-major dx[b] (N×C) = Rᵀ (N×M) · dy[b] (M×C): column-major dx[b]ᵀ (C×N) = dy[b]ᵀ (C×M) · R (M×N),
    // R read as the transpose of its column-major N×M storage.
    strided_gemm_f32(false, true, C, N, M, G, C, M * C, R, N, 0, f.out(*dx), C, N * C, B);
  }
  if (dr) {
    // Row-major dR (M×N) += Σ_b dy[b] (M×C) · x[b]ᵀ (C×N). Per sample, column-major dR[b]ᵀ (N×M) =
    // x[b] (N×C, the transpose of its column-major C×N storage) · dy[b]ᵀ (C×M): one strided batched
    // product for a chunk of samples into a workspace, then its column sums (in double, a fixed
    // order) added to dR. (A product per sample was thousands of launches for an axial or wavelet
    // mixer, whose "batch" is B·H rows or B·h·w positions.)
    DeviceGrad d(dr, true);
    const int64_t per = N * M, chunk = std::max<int64_t>(1, std::min<int64_t>(B, (int64_t{16} << 20) / per));
    Tensor partial = Tensor::empty({chunk * per}, Device::CUDA);
    Work work(bw::column_sum_work(chunk, per));
    for (int64_t b0 = 0; b0 < B; b0 += chunk) {
      const int64_t nb = std::min(chunk, B - b0);
      strided_gemm_f32(true, false, N, M, C, X + b0 * N * C, C, N * C, G + b0 * M * C, C, M * C, partial.data(), N,
                       per, nb);
      ok(bw::column_sum_add(partial.data(), d.get(), nb, per, work.p, stream()), "token_mix backward: map");
    }
    d.finish();
  }
  if (dbias) {
    DeviceGrad d(dbias, true);
    Work work(bw::token_bias_grad_work(B, M, C));
    ok(bw::token_bias_grad_add(G, d.get(), B, M, C, work.p, stream()), "token_mix backward: bias");
    d.finish();
  }
}

void CudaBackwardOps::channel_affine_backward(const Tensor& x, const Tensor& alpha, const Tensor& dy, Tensor& dx,
                                              Tensor* dalpha, Tensor* dbeta) {
  Widened f;
  const int64_t C = x.shape().last(), rows = x.numel() / std::max<int64_t>(C, 1);
  DeviceGrad ga(dalpha, true), gb(dbeta, true);
  Work work(bw::channel_affine_backward_work(rows, C));
  ok(bw::channel_affine_backward(f.in(x), f.in(alpha), f.in(dy), f.out(dx), ga.get(), gb.get(), rows, C, work.p, stream()),
     "channel_affine backward");
  ga.finish();
  gb.finish();
}

void CudaBackwardOps::complex_mul_backward(const Tensor& a, const Tensor& b, const Tensor& dy, Tensor* da,
                                           Tensor* db) {
  Widened f;
  const int64_t C = a.shape().last(), rows = a.numel() / std::max<int64_t>(2 * C, 1);
  const int64_t brows = b.numel() / std::max<int64_t>(2 * C, 1);
  if (da) complex_mul(dy, b, /*conj_b=*/true, *da);
  if (!db) return;
  MF_CHECK(brows > 0 && rows % brows == 0, "complex_mul backward: {} rows do not repeat {} filter rows", rows, brows);
  DeviceGrad gb(db, true);
  Work work(bw::complex_mul_weight_grad_work(rows, brows, C));
  ok(bw::complex_mul_weight_grad(f.in(a), f.in(dy), gb.get(), rows, brows, C, work.p, stream()),
     "complex_mul backward");
  gb.finish();
}

void CudaBackwardOps::cross_entropy(const Tensor& logits, const Tensor& target, float grad_scale, Tensor& loss,
                                    Tensor& dlogits) {
  Widened f;
  ok(bw::cross_entropy(f.in(logits), f.in(target), grad_scale, f.out(loss), f.out(dlogits), logits.dim(0), logits.dim(1),
                       stream()),
     "cross_entropy");
}

}  // namespace mf
