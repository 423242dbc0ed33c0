#include "ops/cuda/cuda_backend.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ops/cuda/backend_kernels.h"
#include "ops/cuda/cuda_context.h"
#include "ops/cuda/fft.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/kernels/kernels.h"
#include "ops/cuda/simple_kernels.h"

namespace mf {
namespace {

using cuda::context;

cudaStream_t stream() { return context().stream; }

// A device pointer to t's data: t itself when it is on the GPU, else its upload, cached with t's
// storage (parameters are uploaded once; the cache follows their version).
const float* dev(const Tensor& t) {
  if (t.device() == Device::CUDA) return t.data();
  static const std::string key = "cuda";
  if (auto d = t.derived(key)) return static_cast<Tensor*>(d.get())->data();
  auto up = std::make_shared<Tensor>(t.to(Device::CUDA));
  const float* p = up->data();
  t.set_derived(key, up);
  return p;
}
const float* dev(const Tensor* t) { return t ? dev(*t) : nullptr; }

float* out(Tensor& y) {
  MF_ASSERT(y.device() == Device::CUDA);
  return y.data();
}

void launched(const char* what) { MF_CUDA_LAUNCHED(what); }

int act_code(const Activation& a) { return static_cast<int>(a.kind); }
namespace k = cuda::kernels;
k::Act kact(const Activation& a) {
  return k::Act{static_cast<k::ActKind>(static_cast<int>(a.kind)), a.scale, a.bias, a.threshold};
}
void ok(cudaError_t e, const char* what) { cuda::check(e, what); }

// METAFORMER_CUDA_KERNELS=simple runs the plain one-thread-per-output kernels (simple_kernels.cu)
// instead of the tuned ones (kernels/): a second GPU implementation to tell a kernel's bug from
// the backend's, op by op, with the op harness.
bool simple_kernels() {
  static const bool v = [] {
    const char* e = std::getenv("METAFORMER_CUDA_KERNELS");
    return e && std::strcmp(e, "simple") == 0;
  }();
  return v;
}

// Scratch space in the pool, for one call (freed in stream order when it goes out of scope).
Tensor scratch(size_t bytes) { return Tensor::empty({static_cast<int64_t>((bytes + 3) / 4) + 1}, Device::CUDA); }

// A depthwise weight [C, 1, kh, kw] as [kh, kw, C] (what the tuned kernel reads), cached with it.
const float* depthwise_weight(const Tensor& w) {
  static const std::string key = "cuda.dw_hwc";
  if (auto d = w.derived(key)) return static_cast<Tensor*>(d.get())->data();
  const int64_t C = w.dim(0);
  const int kh = static_cast<int>(w.dim(2)), kw = static_cast<int>(w.dim(3));
  auto t = std::make_shared<Tensor>(Tensor::empty({kh, kw, C}, Device::CUDA));
  ok(k::depthwise_weight_to_hwc(dev(w), t->data(), C, kh, kw, context().stream), "depthwise_weight_to_hwc");
  const float* p = t->data();
  w.set_derived(key, t);
  return p;
}

// A dense convolution's weight [Co, Ci, kh, kw] as [Co, kh, kw, Ci], the column order of
// im2col_nhwc, on the GPU; cached with the weight.
const float* conv_weight(const Tensor& w) {
  static const std::string key = "cuda.conv_khwc";
  if (auto d = w.derived(key)) return static_cast<Tensor*>(d.get())->data();
  const Tensor host = w.to(Device::CPU);
  const int64_t Co = w.dim(0), Ci = w.dim(1), kh = w.dim(2), kw = w.dim(3);
  Tensor r = Tensor::empty({Co, kh, kw, Ci});
  for (int64_t o = 0; o < Co; ++o)
    for (int64_t i = 0; i < Ci; ++i)
      for (int64_t y = 0; y < kh; ++y)
        for (int64_t x = 0; x < kw; ++x) r.data()[((o * kh + y) * kw + x) * Ci + i] = host.data()[((o * Ci + i) * kh + y) * kw + x];
  auto up = std::make_shared<Tensor>(r.to(Device::CUDA));
  const float* p = up->data();
  w.set_derived(key, up);
  return p;
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(Precision p) : precision_(p) { context(); }
  std::string name() const override { return "cuda"; }
  Device device() const override { return Device::CUDA; }
  Precision precision() const override { return precision_; }
  bool supports(OpKind op) const override { return op != OpKind::CrossEntropy; }
  void synchronize() override { cuda::synchronize(); }

  void linear(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) override {
    cuda::linear_rows(dev(x), dev(w), dev(b), out(y), x.shape().rows(), w.dim(0), w.dim(1));
  }
  void linear_act(const Tensor& x, const Tensor& w, const Tensor* b, const Activation& act, Tensor& y) override {
    // cuBLASLt's GELU epilogue is the tanh approximation, not timm's erf GELU: only ReLU is fused.
    const bool relu = act.kind == ActKind::ReLU;
    cuda::linear_rows(dev(x), dev(w), dev(b), out(y), x.shape().rows(), w.dim(0), w.dim(1), relu);
    if (!relu && act.kind != ActKind::Identity) activation(y, act, y);
  }
  void conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g, Tensor& y) override {
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3), Co = w.dim(0);
    const int64_t Ho = y.dim(1), Wo = y.dim(2), K = Ci * g.kernel_h * g.kernel_w;
    if (g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0) {
      cuda::linear_rows(dev(x), dev(w), dev(b), out(y), B * H * W, Co, Ci);
      return;
    }
    Tensor cols = Tensor::empty({B * Ho * Wo, K}, Device::CUDA);
    cuda::im2col_nhwc(dev(x), cols.data(), B, H, W, Ci, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h,
                      g.pad_w, Ho, Wo, stream());
    launched("im2col");
    cuda::linear_rows(cols.data(), conv_weight(w), dev(b), out(y), B * Ho * Wo, Co, K);
  }
  void depthwise_conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g, Tensor& y) override {
    if (simple_kernels()) {
      cuda::simple::depthwise_conv2d(dev(x), dev(w), dev(b), out(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3),
                                     g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, y.dim(1),
                                     y.dim(2), stream());
      return launched("depthwise_conv2d");
    }
    const int64_t C = x.dim(3);
    ok(k::depthwise_conv2d(dev(x), C, depthwise_weight(w), dev(b), out(y), C, x.dim(0), x.dim(1), x.dim(2), C, y.dim(1),
                           y.dim(2), g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, k::Act{},
                           k::Act{}, stream()),
       "depthwise_conv2d");
  }
  void pool_minus_input(const Tensor& x, int kernel, Tensor& y) override {
    if (simple_kernels()) {
      cuda::simple::pool_minus_input(dev(x), out(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3), kernel, stream());
      return launched("pool_minus_input");
    }
    ok(k::pool_minus_input(dev(x), out(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3), kernel, stream()), "pool_minus_input");
  }
  void pool_branch(const Tensor& x, const BranchNorm& norm, int kernel, const BranchScales& scales, Tensor& y) override {
    if (simple_kernels()) return Backend::pool_branch(x, norm, kernel, scales, y);
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
    Tensor ws = scratch(k::group_norm1_workspace_bytes(B, H * W * C));
    ok(k::pool_branch(dev(x), dev(norm.weight), dev(norm.bias), norm.eps, kernel, dev(scales.res_scale),
                      dev(scales.layer_scale), out(y), B, H, W, C, ws.data(), stream()),
       "pool_branch");
  }
  void layer_norm(const Tensor& x, const Tensor& w, const Tensor* b, float eps, Tensor& y) override {
    const int64_t C = x.shape().last();
    if (simple_kernels()) {
      cuda::simple::layer_norm(dev(x), dev(w), dev(b), eps, out(y), x.numel() / C, C, stream());
      return launched("layer_norm");
    }
    ok(k::layer_norm(dev(x), dev(w), dev(b), eps, out(y), x.numel() / C, C, stream()), "layer_norm");
  }
  void group_norm1(const Tensor& x, const Tensor& w, const Tensor* b, float eps, Tensor& y) override {
    const int64_t B = x.dim(0);
    if (simple_kernels()) {
      cuda::simple::group_norm1(dev(x), dev(w), dev(b), eps, out(y), B, x.numel() / B, x.shape().last(), stream());
      return launched("group_norm1");
    }
    Tensor ws = scratch(k::group_norm1_workspace_bytes(B, x.numel() / B));
    ok(k::group_norm1(dev(x), dev(w), dev(b), eps, out(y), B, x.numel() / B, x.shape().last(), ws.data(), stream()),
       "group_norm1");
  }
  void activation(const Tensor& x, const Activation& act, Tensor& y) override {
    if (simple_kernels()) {
      cuda::simple::activation(dev(x), out(y), x.numel(), act_code(act), act.scale, act.bias, act.threshold, stream());
      return launched("activation");
    }
    ok(k::activation(dev(x), out(y), x.numel(), kact(act), stream()), "activation");
  }
  void scaled_residual(const Tensor& x, const Tensor* res_scale, const Tensor& branch, const Tensor* layer_scale,
                       Tensor& y) override {
    const int64_t C = x.shape().last();
    if (simple_kernels()) {
      cuda::simple::scaled_residual(dev(x), dev(res_scale), dev(branch), dev(layer_scale), out(y), x.numel(), C,
                                    stream());
      return launched("scaled_residual");
    }
    ok(k::scaled_residual(dev(x), dev(res_scale), dev(branch), dev(layer_scale), out(y), x.numel() / C, C, stream()),
       "scaled_residual");
  }
  void global_avg_pool(const Tensor& x, Tensor& y) override {
    const int64_t B = x.dim(0), C = x.shape().last();
    if (simple_kernels()) {
      cuda::simple::global_avg_pool(dev(x), out(y), B, x.numel() / (B * C), C, stream());
      return launched("global_avg_pool");
    }
    ok(k::global_avg_pool(dev(x), out(y), B, x.numel() / (B * C), C, stream()), "global_avg_pool");
  }
  void attention(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y) override {
    MF_CHECK(head_dim <= 128, "attention: head_dim {} is over the CUDA kernels' 128", head_dim);
    if (simple_kernels()) {
      cuda::simple::attention(dev(qkv), out(y), qkv.dim(0), qkv.dim(1), heads, head_dim, scale, stream());
      return launched("attention");
    }
    ok(k::attention(dev(qkv), out(y), qkv.dim(0), qkv.dim(1), heads, head_dim, scale, stream()), "attention");
  }
  void token_mix(const Tensor& r, const Tensor& x, const Tensor* bias, Tensor& y) override {
    // y[b] (M×C row-major) = r (M×N) · x[b] (N×C): column-major y[b]ᵀ = x[b]ᵀ · rᵀ, one strided batch.
    const int64_t B = x.dim(0), N = x.dim(1), C = x.dim(2), M = r.dim(0);
    cuda::Gemm g;
    g.m = C, g.n = M, g.k = N;
    g.a = dev(x), g.lda = C, g.stride_a = N * C;
    g.b = dev(r), g.ldb = N, g.stride_b = 0;
    g.d = out(y), g.ldd = C, g.stride_d = M * C;
    g.batch = B;
    cuda::run_gemm(g);
    if (bias) {
      cuda::add_token_bias(y.data(), dev(bias), B, M, C, stream());
      launched("token bias");
    }
  }
  void nchw_to_nhwc(const Tensor& x, Tensor& y) override {
    if (simple_kernels()) {
      cuda::nchw_to_nhwc_scaled(dev(x), out(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3), 1.f, stream());
      return launched("nchw_to_nhwc");
    }
    ok(k::nchw_to_nhwc(dev(x), out(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3), stream()), "nchw_to_nhwc");
  }
  void sample_scale(const Tensor& x, const Tensor& s, Tensor& y) override {
    const int64_t B = x.dim(0);
    if (simple_kernels()) {
      cuda::simple::sample_scale(dev(x), dev(s), out(y), B, B ? x.numel() / B : 0, stream());
      return launched("sample_scale");
    }
    ok(k::sample_scale(dev(x), dev(s), out(y), B, B ? x.numel() / B : 0, stream()), "sample_scale");
  }
  void channel_slice(const Tensor& x, int64_t offset, Tensor& y) override {
    const int64_t C = x.shape().last();
    if (simple_kernels()) {
      cuda::simple::channel_slice(dev(x), out(y), x.numel() / C, C, offset, y.shape().last(), stream());
      return launched("channel_slice");
    }
    ok(k::channel_slice(dev(x), out(y), x.numel() / C, C, offset, y.shape().last(), stream()), "channel_slice");
  }
  void glu(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset, const Activation& act,
           Tensor& y) override {
    const int64_t Ct = t.shape().last(), width = y.shape().last(), rows = t.numel() / Ct;
    const int64_t cw = c ? c->shape().last() : 0;
    if (simple_kernels()) {
      cuda::simple::glu(dev(t), dev(c), out(y), rows, Ct, cw, gate_offset, value_offset, width, act_code(act),
                        act.scale, act.bias, act.threshold, stream());
      return launched("glu");
    }
    ok(k::glu(dev(t), Ct, dev(c), cw, gate_offset, value_offset, out(y), rows, width, kact(act), stream()), "glu");
  }
  void channel_affine(const Tensor& x, const Tensor& alpha, const Tensor& beta, Tensor& y) override {
    const int64_t C = x.shape().last();
    if (simple_kernels()) {
      cuda::simple::channel_affine(dev(x), dev(alpha), dev(beta), out(y), x.numel(), C, stream());
      return launched("channel_affine");
    }
    ok(k::channel_affine_act(dev(x), dev(alpha), dev(beta), out(y), x.numel() / C, C, k::Act{}, stream()),
       "channel_affine");
  }
  void rfft2(const Tensor& x, float mid_scale, Tensor& y) override {
    cuda::rfft2(dev(x), out(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3), mid_scale);
  }
  void irfft2(const Tensor& x, float mid_scale, Tensor& y) override {
    cuda::irfft2(dev(x), out(y), y.dim(0), y.dim(1), y.dim(2), y.dim(3), mid_scale);
  }
  void complex_mul(const Tensor& a, const Tensor& b, bool conj_b, Tensor& y) override {
    const int64_t C = a.shape().last();
    if (simple_kernels()) {
      cuda::simple::complex_mul(dev(a), dev(b), out(y), a.numel() / (2 * C), b.numel() / (2 * C), C, conj_b, stream());
      return launched("complex_mul");
    }
    ok(k::complex_mul(dev(a), dev(b), out(y), a.numel() / (2 * C), b.numel() / (2 * C), C, conj_b, stream()),
       "complex_mul");
  }
  void haar2d(const Tensor& x, bool inverse, Tensor& y) override {
    const Tensor& img = inverse ? y : x;
    const Tensor& bands = inverse ? x : y;
    if (simple_kernels()) {
      cuda::simple::haar2d(dev(x), out(y), img.dim(0), img.dim(1), img.dim(2), img.dim(3), bands.dim(1), bands.dim(2),
                           inverse, stream());
      return launched("haar2d");
    }
    if (inverse)
      ok(k::haar2d_inverse(dev(x), out(y), img.dim(0), img.dim(1), img.dim(2), img.dim(3), stream()), "haar2d_inverse");
    else
      ok(k::haar2d(dev(x), out(y), img.dim(0), img.dim(1), img.dim(2), img.dim(3), stream()), "haar2d");
  }

 private:
  Precision precision_;
};

}  // namespace

Backend& cuda_backend(Precision precision) {
  MF_CHECK(precision == Precision::fp32, "the cuda backend computes in fp32 only so far (asked for {})",
           precision_name(precision));
  static CudaBackend* backend = new CudaBackend(Precision::fp32);  // never destroyed, like the context
  return *backend;
}

void cuda_select_device(int index) { cuda::select_device(index); }
int cuda_device_count() { return cuda::device_count(); }
std::string cuda_device_description() { return cuda::device_description(); }
size_t cuda_peak_bytes() { return cuda::pool_peak_bytes(); }
void cuda_reset_peak() { cuda::pool_reset_peak(); }

}  // namespace mf
