#include "ops/cuda/cuda_backward.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "ops/cuda/backend_kernels.h"
#include "ops/cuda/backward_kernels.h"
#include "ops/cuda/cuda_context.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/kernels/kernels.h"

namespace mf {
namespace {

namespace bw = cuda::backward;

cudaStream_t stream() { return cuda::context().stream; }
void ok(cudaError_t e, const char* what) { cuda::check(e, what); }

const float* in(const Tensor& t) { return cuda::device_f32(t); }
const float* in(const Tensor* t) { return t ? cuda::device_f32(*t) : nullptr; }

// An output the dispatcher allocated on the backend's device.
float* out(Tensor& t) {
  MF_CHECK(t.device() == Device::CUDA && t.dtype() == DType::f32, "a GPU backward pass writes fp32 device tensors");
  return t.data();
}

// Scratch space for n doubles, from the pool, for one call (freed in stream order with the tensor).
struct Work {
  Tensor t;
  double* p = nullptr;
  explicit Work(int64_t n) : t(Tensor::empty({2 * std::max<int64_t>(n, 1)}, Device::CUDA)) {
    p = reinterpret_cast<double*>(t.data());  // a fresh allocation: 256-byte aligned
  }
};

// A gradient the caller passes in (a parameter's, channel_slice's dx, glu's dc), as a device pointer:
// itself on the GPU; a host tensor (the op harness's zero-initialised gradients) is copied up when it
// is accumulated into, and copied back by finish() (which waits for the GPU).
class DeviceGrad {
 public:
  DeviceGrad(Tensor* t, bool accumulate) : target_(t) {
    if (!t) return;
    MF_CHECK(t->dtype() == DType::f32, "a GPU backward pass writes fp32 gradients, not {}", dtype_name(t->dtype()));
    if (t->device() == Device::CUDA) {
      p_ = t->data();
      return;
    }
    copy_ = accumulate ? t->to(Device::CUDA) : Tensor::empty(t->shape(), Device::CUDA);
    p_ = copy_.data();
  }
  float* get() const { return p_; }
  void finish() {
    if (copy_.defined()) target_->copy_from(copy_);
  }

 private:
  Tensor* target_;
  Tensor copy_;
  float* p_ = nullptr;
};

// Attention's backward comes in three versions (docs/cuda.md, "Backward passes"):
//   gemm (default)  the five products (S = QKᵀ, dP = dY·Vᵀ, dV = Pᵀ·dY, dQ = dS·K, dK = dSᵀ·Q) through
//                   cuBLASLt, strided over the samples, one head at a time, with the softmax rows in
//                   one kernel between them; P and dS in fp32 in a workspace;
//   materialised    one thread per output in double, P and dS in double (the plain version);
//   fused           no N×N matrices in global memory (attention_backward.cu).
// METAFORMER_CUDA_ATTN_BWD=materialised|fused picks another (the device A/B, tools/device/cuda_check.sh
// attnab: on the H200 the fused kernel was slower than the materialised one, which was 0.34 s of
// two caformer_s18 training steps at batch 128).
// METAFORMER_CUDA_DW_BWD=gather: the depthwise convolution's dx by the plain gather in double at
// every stride (the default convolves dy with the flipped kernel at stride 1).
bool gather_depthwise_dx() {
  static const bool gather = [] {
    const char* e = std::getenv("METAFORMER_CUDA_DW_BWD");
    return e != nullptr && std::string(e) == "gather";
  }();
  return gather;
}

enum class AttnBwd { gemm, materialised, fused };
AttnBwd attention_backward_version() {
  static const AttnBwd v = [] {
    const char* e = std::getenv("METAFORMER_CUDA_ATTN_BWD");
    const std::string s = e ? e : "";
    return s == "fused" ? AttnBwd::fused : s == "materialised" ? AttnBwd::materialised : AttnBwd::gemm;
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

// A strided batch of column-major fp32 products, D[i] = op(A[i]) · op(B[i]) (overwritten), the i-th
// operands `batch` strides apart (stride 0: the same matrix for every i).
void strided_gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                      int64_t stride_a, const float* b, int64_t ldb, int64_t stride_b, float* d, int64_t ldd,
                      int64_t stride_d, int64_t batch) {
  cuda::Gemm g;
  g.type = cuda::GemmType::f32;
  g.trans_a = trans_a, g.trans_b = trans_b;
  g.m = m, g.n = n, g.k = k;
  g.a = a, g.lda = lda, g.stride_a = stride_a;
  g.b = b, g.ldb = ldb, g.stride_b = stride_b;
  g.d = d, g.ldd = ldd, g.stride_d = stride_d;
  g.batch = batch;
  cuda::run_gemm(g);
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

void CudaBackwardOps::require_fp32(OpKind op) const {
  if (activation_dtype() != DType::f32)
    fail("the backward pass of {} on backend cuda is fp32 only (asked for {})", op_name(op),
         precision_name(precision()));
}

bool CudaBackwardOps::supports_backward(OpKind op) const {
  if (activation_dtype() != DType::f32) return false;
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
  require_fp32(OpKind::Linear);
  const int64_t K = x.shape().last(), M = x.shape().rows(), N = w.dim(0);
  const float* G = in(dy);
  if (dx) input_grad(G, in(w), out(*dx), M, N, K);
  if (dw) {
    DeviceGrad g(dw, true);
    weight_grad(G, in(x), g.get(), M, N, K, true);
    g.finish();
  }
  if (db) {
    DeviceGrad g(db, true);
    Work work(bw::column_sum_work(M, N));
    ok(bw::column_sum_add(G, g.get(), M, N, work.p, stream()), "linear backward: bias");
    g.finish();
  }
}

// Through im2col, as the forward: dW = dyᵀ · cols (then reordered to [Co, Ci, kh, kw]), dcols = dy · W
// (W as [Co, kh, kw, Ci]) and dx = col2im(dcols).
void CudaBackwardOps::conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy,
                                      Tensor* dx, Tensor* dw, Tensor* db) {
  require_fp32(OpKind::Conv2d);
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3), Co = w.dim(0);
  const int64_t Ho = dy.dim(1), Wo = dy.dim(2);
  const int kh = g.kernel_h, kw = g.kernel_w;
  const int64_t K = Ci * kh * kw, M = B * Ho * Wo;
  const float* G = in(dy);
  if (db) {
    DeviceGrad d(db, true);
    Work work(bw::column_sum_work(M, Co));
    ok(bw::column_sum_add(G, d.get(), M, Co, work.p, stream()), "conv2d backward: bias");
    d.finish();
  }
  if (dw && M > 0) {
    DeviceGrad d(dw, true);
    Tensor dwk = Tensor::empty({Co, K}, Device::CUDA);
    {
      Tensor cols = Tensor::empty({M, K}, Device::CUDA);
      ok(cuda::kernels::im2col_nhwc_padded(in(x), cols.data(), K, B, H, W, Ci, kh, kw, g.stride_h, g.stride_w, g.pad_h,
                                           g.pad_w, Ho, Wo, stream()),
         "conv2d backward: im2col");
      weight_grad(G, cols.data(), dwk.data(), M, Co, K, false);
    }
    ok(bw::conv_weight_grad_add(dwk.data(), d.get(), Co, Ci, kh, kw, stream()), "conv2d backward: weight");
    d.finish();
  }
  if (dx) {
    Tensor wk = Tensor::empty({Co, K}, Device::CUDA);
    ok(cuda::kernels::conv_weight_to_gemm(in(w), wk.data(), K, Co, Ci, kh, kw, stream()), "conv2d backward: weight layout");
    Tensor dcols = Tensor::empty({M, K}, Device::CUDA);
    input_grad(G, wk.data(), dcols.data(), M, Co, K);
    ok(bw::col2im_nhwc(dcols.data(), out(*dx), B, H, W, Ci, kh, kw, g.stride_h, g.stride_w, g.pad_h, g.pad_w, Ho, Wo,
                       stream()),
       "conv2d backward: col2im");
  }
}

void CudaBackwardOps::depthwise_conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g,
                                                const Tensor& dy, Tensor* dx, Tensor* dw, Tensor* db) {
  require_fp32(OpKind::DepthwiseConv2d);
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3), Ho = dy.dim(1), Wo = dy.dim(2);
  const int kh = g.kernel_h, kw = g.kernel_w;
  // At stride 1, dx is the forward convolution of dy with the kernel flipped, padded by k − 1 − p:
  // the tiled forward kernel (fp32 sums) instead of a gather per input element in double, which
  // was 8 % of a caformer_s18 training step (kernel time) on the H200.
  const bool dx_by_forward = dx && g.stride_h == 1 && g.stride_w == 1 && g.pad_h <= kh - 1 && g.pad_w <= kw - 1 &&
                             !gather_depthwise_dx();
  if (dx_by_forward) {
    Tensor flipped = Tensor::empty({static_cast<int64_t>(kh) * kw * C}, Device::CUDA);
    ok(bw::depthwise_weight_flip_hwc(in(w), flipped.data(), C, kh, kw, stream()), "depthwise_conv2d backward: flip");
    ok(cuda::kernels::depthwise_conv2d(in(dy), C, flipped.data(), nullptr, out(*dx), C, B, Ho, Wo, C, H, W, kh, kw, 1,
                                       1, kh - 1 - g.pad_h, kw - 1 - g.pad_w, cuda::kernels::Act{},
                                       cuda::kernels::Act{}, stream()),
       "depthwise_conv2d backward: dx");
  }
  DeviceGrad gw(dw, true), gb(db, true);
  Work work(bw::depthwise_backward_work(B, Ho, Wo, C, g.kernel_h, g.kernel_w));
  ok(bw::depthwise_conv2d_backward(in(x), in(w), in(dy), dx && !dx_by_forward ? out(*dx) : nullptr, gw.get(), gb.get(), B, H, W, C, Ho,
                                   Wo, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, work.p,
                                   stream()),
     "depthwise_conv2d backward");
  gw.finish();
  gb.finish();
}

void CudaBackwardOps::pool_minus_input_backward(const Tensor& dy, int kernel, Tensor& dx) {
  require_fp32(OpKind::PoolMinusInput);
  ok(bw::pool_minus_input_backward(in(dy), out(dx), dy.dim(0), dy.dim(1), dy.dim(2), dy.dim(3), kernel, stream()),
     "pool_minus_input backward");
}

void CudaBackwardOps::layer_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                                          Tensor* dw, Tensor* db) {
  require_fp32(OpKind::LayerNorm);
  const int64_t C = x.shape().last(), rows = x.numel() / std::max<int64_t>(C, 1);
  DeviceGrad gw(dw, true), gb(db, true);
  Work work(bw::norm_backward_work(rows, C, C));
  ok(bw::norm_backward(in(x), in(w), in(dy), eps, out(dx), gw.get(), gb.get(), rows, C, C, work.p, stream()),
     "layer_norm backward");
  gw.finish();
  gb.finish();
}

void CudaBackwardOps::group_norm1_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                                           Tensor* dw, Tensor* db) {
  require_fp32(OpKind::GroupNorm1);
  const int64_t B = x.dim(0), C = x.shape().last(), per = B ? x.numel() / B : 0;
  DeviceGrad gw(dw, true), gb(db, true);
  Work work(bw::norm_backward_work(B, per, C));
  ok(bw::norm_backward(in(x), in(w), in(dy), eps, out(dx), gw.get(), gb.get(), B, per, C, work.p, stream()),
     "group_norm1 backward");
  gw.finish();
  gb.finish();
}

void CudaBackwardOps::activation_backward(const Tensor& x, const Activation& act, const Tensor& dy, Tensor& dx,
                                          Tensor* dscale, Tensor* dbias) {
  require_fp32(OpKind::Activation);
  const bool star = act.kind == ActKind::StarReLU;
  DeviceGrad gs(star ? dscale : nullptr, true), gb(star ? dbias : nullptr, true);
  Work work(gs.get() || gb.get() ? bw::activation_backward_work(x.numel()) : 0);
  ok(bw::activation_backward(in(x), bact(act), in(dy), out(dx), gs.get(), gb.get(), x.numel(), work.p, stream()),
     "activation backward");
  gs.finish();
  gb.finish();
}

void CudaBackwardOps::scaled_residual_backward(const Tensor& x, const Tensor* res_scale, const Tensor& branch,
                                               const Tensor* layer_scale, const Tensor& dy, Tensor& dx,
                                               Tensor& dbranch, Tensor* d_res_scale, Tensor* d_layer_scale) {
  require_fp32(OpKind::ScaledResidual);
  const int64_t C = x.shape().last(), rows = x.numel() / std::max<int64_t>(C, 1);
  DeviceGrad grs(d_res_scale, true), gls(d_layer_scale, true);
  Work work(grs.get() || gls.get() ? bw::scaled_residual_backward_work(rows, C) : 0);
  ok(bw::scaled_residual_backward(in(x), in(res_scale), in(branch), in(layer_scale), in(dy), out(dx), out(dbranch),
                                  grs.get(), gls.get(), rows, C, work.p, stream()),
     "scaled_residual backward");
  grs.finish();
  gls.finish();
}

void CudaBackwardOps::global_avg_pool_backward(const Tensor& dy, Tensor& dx) {
  require_fp32(OpKind::GlobalAvgPool);
  const int64_t B = dx.dim(0), C = dx.shape().last(), HW = B && C ? dx.numel() / (B * C) : 0;
  ok(bw::global_avg_pool_backward(in(dy), out(dx), B, HW, C, stream()), "global_avg_pool backward");
}

void CudaBackwardOps::attention_backward(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                                         Tensor& dqkv) {
  require_fp32(OpKind::Attention);
  const int64_t B = qkv.dim(0), N = qkv.dim(1), A = static_cast<int64_t>(heads) * head_dim;
  const AttnBwd version = attention_backward_version();
  if (version == AttnBwd::fused && bw::attention_backward_fused_supports(head_dim)) {
    Work work(bw::attention_backward_fused_work(B, N, heads));
    ok(bw::attention_backward_fused(in(qkv), in(dy), out(dqkv), B, N, heads, head_dim, scale, work.p, stream()),
       "attention backward (fused)");
    return;
  }
  const float* q = in(qkv);
  const float* g = in(dy);
  float* d = out(dqkv);
  if (version == AttnBwd::gemm) {
    // Row-major products as column-major cuBLASLt calls (see gemm_f32): a row-major X = op(L) · op(R)
    // is the column-major Xᵀ = op(R)ᵀ · op(L)ᵀ, and a row-major matrix is its column-major transpose.
    const int64_t NN = N * N, ld = 3 * A;
    const int64_t chunk = std::clamp<int64_t>((int64_t{1} << 26) / std::max<int64_t>(heads * NN, 1), 1,
                                              std::max<int64_t>(B, 1));
    Tensor work = Tensor::empty({2 * heads * chunk * NN}, Device::CUDA);
    const auto product = strided_gemm_f32;
    for (int64_t b0 = 0; b0 < B; b0 += chunk) {
      const int64_t nb = std::min(chunk, B - b0);
      const float* q0 = q + b0 * N * ld;
      const float* g0 = g + b0 * N * A;
      float* d0 = d + b0 * N * ld;
      float* S = work.data();                // [heads, nb, N, N]
      float* dP = work.data() + heads * nb * NN;
      for (int h = 0; h < heads; ++h) {
        const int64_t o = static_cast<int64_t>(h) * head_dim;
        float* Sh = S + h * nb * NN;
        float* dPh = dP + h * nb * NN;
        // S = Q·Kᵀ and dP = dY·Vᵀ, [N, N] per sample
        product(true, false, N, N, head_dim, q0 + A + o, ld, N * ld, q0 + o, ld, N * ld, Sh, N, NN, nb);
        product(true, false, N, N, head_dim, q0 + 2 * A + o, ld, N * ld, g0 + o, A, N * A, dPh, N, NN, nb);
      }
      ok(bw::attention_softmax_grad(S, dP, heads * nb * N, N, scale, stream()), "attention backward: softmax");
      for (int h = 0; h < heads; ++h) {
        const int64_t o = static_cast<int64_t>(h) * head_dim;
        const float* Ph = S + h * nb * NN;
        const float* dSh = dP + h * nb * NN;
        // dV = Pᵀ·dY, dQ = dS·K, dK = dSᵀ·Q, [N, head_dim] per sample, into dqkv's slices
        product(false, true, head_dim, N, N, g0 + o, A, N * A, Ph, N, NN, d0 + 2 * A + o, ld, N * ld, nb);
        product(false, false, head_dim, N, N, q0 + A + o, ld, N * ld, dSh, N, NN, d0 + o, ld, N * ld, nb);
        product(false, true, head_dim, N, N, q0 + o, ld, N * ld, dSh, N, NN, d0 + A + o, ld, N * ld, nb);
      }
    }
    return;
  }
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

void CudaBackwardOps::channel_slice_backward(const Tensor& dy, int64_t offset, Tensor& dx) {
  require_fp32(OpKind::ChannelSlice);
  const int64_t C = dx.shape().last(), width = dy.shape().last();
  DeviceGrad g(&dx, true);
  ok(bw::channel_slice_backward(in(dy), g.get(), dy.numel() / std::max<int64_t>(width, 1), C, offset, width, stream()),
     "channel_slice backward");
  g.finish();
}

void CudaBackwardOps::glu_backward(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset,
                                   const Activation& act, const Tensor& dy, Tensor& dt, Tensor* dc) {
  require_fp32(OpKind::Glu);
  const int64_t Ct = t.shape().last(), width = dy.shape().last(), rows = dy.numel() / std::max<int64_t>(width, 1);
  const int64_t cw = c ? c->shape().last() : 0;
  DeviceGrad gc(dc, false);
  ok(bw::glu_backward(in(t), Ct, in(c), cw, gate_offset, value_offset, bact(act), in(dy), width, out(dt), gc.get(), rows,
                      stream()),
     "glu backward");
  gc.finish();
}

void CudaBackwardOps::token_mix_backward(const Tensor& r, const Tensor& x, const Tensor& dy, Tensor* dx, Tensor* dr,
                                         Tensor* dbias) {
  require_fp32(OpKind::TokenMix);
  const int64_t B = x.dim(0), N = x.dim(1), C = x.dim(2), M = r.dim(0);
  const float *R = in(r), *X = in(x), *G = in(dy);
  if (dx) {
    // Row-major dx[b] (N×C) = Rᵀ (N×M) · dy[b] (M×C): column-major dx[b]ᵀ (C×N) = dy[b]ᵀ (C×M) · R (M×N),
    // R read as the transpose of its column-major N×M storage.
    strided_gemm_f32(false, true, C, N, M, G, C, M * C, R, N, 0, out(*dx), C, N * C, B);
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
  require_fp32(OpKind::ChannelAffine);
  const int64_t C = x.shape().last(), rows = x.numel() / std::max<int64_t>(C, 1);
  DeviceGrad ga(dalpha, true), gb(dbeta, true);
  Work work(bw::channel_affine_backward_work(rows, C));
  ok(bw::channel_affine_backward(in(x), in(alpha), in(dy), out(dx), ga.get(), gb.get(), rows, C, work.p, stream()),
     "channel_affine backward");
  ga.finish();
  gb.finish();
}

void CudaBackwardOps::complex_mul_backward(const Tensor& a, const Tensor& b, const Tensor& dy, Tensor* da,
                                           Tensor* db) {
  require_fp32(OpKind::ComplexMul);
  const int64_t C = a.shape().last(), rows = a.numel() / std::max<int64_t>(2 * C, 1);
  const int64_t brows = b.numel() / std::max<int64_t>(2 * C, 1);
  if (da) complex_mul(dy, b, /*conj_b=*/true, *da);
  if (!db) return;
  MF_CHECK(brows > 0 && rows % brows == 0, "complex_mul backward: {} rows do not repeat {} filter rows", rows, brows);
  DeviceGrad gb(db, true);
  Work work(bw::complex_mul_weight_grad_work(rows, brows, C));
  ok(bw::complex_mul_weight_grad(in(a), in(dy), gb.get(), rows, brows, C, work.p, stream()),
     "complex_mul backward");
  gb.finish();
}

void CudaBackwardOps::cross_entropy(const Tensor& logits, const Tensor& target, float grad_scale, Tensor& loss,
                                    Tensor& dlogits) {
  require_fp32(OpKind::CrossEntropy);
  ok(bw::cross_entropy(in(logits), in(target), grad_scale, out(loss), out(dlogits), logits.dim(0), logits.dim(1),
                       stream()),
     "cross_entropy");
}

}  // namespace mf
