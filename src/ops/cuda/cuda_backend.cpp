#include "ops/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <type_traits>
#include <vector>

#include "core/env_switch.h"
#include "data/device_crops.h"
#include "ops/cuda/backend_kernels.h"
#include "ops/cuda/cuda_backward.h"
#include "ops/cuda/cuda_context.h"
#include "ops/cuda/cuda_family_ops.h"
#include "ops/cuda/fft.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/graphs.h"
#include "ops/cuda/kernels/kernels.h"
#include "ops/cuda/simple_kernels.h"

namespace mf {
namespace {

using cuda::context;

cudaStream_t stream() { return context().stream; }

// Uploads queued by upload_ahead on the copy stream, by device address: the event that completes
// with each. The first use of such an upload makes the compute stream wait for it (dev()).
std::mutex g_ahead_mu;
std::map<const void*, cudaEvent_t> g_ahead;

void wait_for_upload_ahead(const void* device_data) {
  // dev() runs for every parameter an op reads: without the switch there is nothing to look up.
  if (!cuda::upload_ahead_enabled()) return;
  std::lock_guard<std::mutex> lock(g_ahead_mu);
  auto it = g_ahead.find(device_data);
  if (it == g_ahead.end()) return;
  MF_CUDA(cudaStreamWaitEvent(cuda::context().stream, it->second, 0));
  MF_CUDA(cudaEventDestroy(it->second));  // released once the wait is satisfied
  g_ahead.erase(it);
}

// A device pointer to t's data: t itself when it is on the GPU, else its upload, cached with t's
// storage (parameters are uploaded once; the cache follows their version).
const float* dev(const Tensor& t) {
  if (t.device() == Device::CUDA) return t.data();
  static const std::string key = cuda::kUploadKey;
  if (auto d = t.derived(key)) {
    const float* p = static_cast<Tensor*>(d.get())->data();
    wait_for_upload_ahead(p);
    return p;
  }
  auto up = std::make_shared<Tensor>(t.to(Device::CUDA));
  const float* p = up->data();
  t.set_derived(key, up);
  return p;
}
const float* dev(const Tensor* t) { return t ? dev(*t) : nullptr; }

void launched(const char* what) { MF_CUDA_LAUNCHED(what); }

int act_code(const Activation& a) { return static_cast<int>(a.kind); }
namespace k = cuda::kernels;
k::Act kact(const Activation& a) {
  return k::Act{static_cast<k::ActKind>(static_cast<int>(a.kind)), a.scale, a.bias, a.threshold, a.scale_on_device,
                a.bias_on_device};
}
// The activation with StarReLU's scalars as values, for the plain kernels that take them so (a
// debugging path: this copies them down, a synchronising copy each).
Activation with_host_scalars(Activation a) {
  if (a.scale_on_device) cuda::check(cudaMemcpy(&a.scale, a.scale_on_device, sizeof(float), cudaMemcpyDeviceToHost), "scale");
  if (a.bias_on_device) cuda::check(cudaMemcpy(&a.bias, a.bias_on_device, sizeof(float), cudaMemcpyDeviceToHost), "bias");
  a.scale_on_device = a.bias_on_device = nullptr;
  return a;
}
void ok(cudaError_t e, const char* what) { cuda::check(e, what); }

// METAFORMER_CUDA_KERNELS=simple runs the plain one-thread-per-output kernels (simple_kernels.cu)
// instead of the tuned ones (kernels/): a second GPU implementation to tell a kernel's bug from
// the backend's, op by op, with the op harness.
bool simple_kernels() {
  static const bool v = [] {
    return env_choice("METAFORMER_CUDA_KERNELS", {"tuned", "simple"}) == 1;
  }();
  return v;
}

// Scratch space in the pool, for one call (freed in stream order when it goes out of scope).
Tensor scratch(size_t bytes) { return Tensor::empty({static_cast<int64_t>((bytes + 3) / 4) + 1}, Device::CUDA); }

// GroupNorm partial statistics of an activation ([B][chunks][3], k::group_norm1_partials_bytes),
// kept with it under cuda::kGn1PartialsKey: the samples' count and size they were made for.
struct Gn1Partials {
  Tensor partials;
  int64_t B = 0, per = 0;
};

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

// A dense convolution's GEMM weight: [Co, Ci, kh, kw] as [Co, kh, kw, Ci] (im2col_nhwc's column
// order), each row ldk ≥ K elements long and zero past K, as T; made on the GPU and cached with the
// weight. Training changes the weight each step, so this runs once a step: a copy through the host
// here made every step wait for the GPU to finish the previous one (docs/cuda.md). One key per type
// (each type has one row length: K in fp32, K padded to 8 in bf16), made once rather than a string
// built on every call; the cached copy's row length is checked.
template <class T>
const T* conv_weight_gemm(const Tensor& w, int64_t ldk) {
  static const std::string key = std::is_same_v<T, float> ? "cuda.conv_khwc" : "cuda.conv_khwc_bf16";
  if (auto d = w.derived(key)) {
    const Tensor& t = *static_cast<Tensor*>(d.get());
    if (t.dim(1) == ldk) return static_cast<const T*>(t.raw());
  }
  const int64_t Co = w.dim(0), Ci = w.dim(1), kh = w.dim(2), kw = w.dim(3);
  auto t = std::make_shared<Tensor>(
      Tensor::empty({Co, ldk}, Device::CUDA, std::is_same_v<T, float> ? DType::f32 : DType::bf16));
  ok(k::conv_weight_to_gemm(dev(w), static_cast<T*>(t->raw()), ldk, Co, Ci, static_cast<int>(kh), static_cast<int>(kw),
                            context().stream),
     "conv_weight_to_gemm");
  const T* p = static_cast<const T*>(t->raw());
  w.set_derived(key, t);
  return p;
}

// METAFORMER_CUDA_CHUNK_MB (a candidate, off by default until the device has measured it): the
// fused branches (mlp, sepconv, gated CNN, pool) run over chunks of whole samples whose intermediates (the
// norm's output, the 2-4x wide hidden activations) take at most this many MiB. A chunk's
// intermediates are then written and read back while they are still in the GPU's L2 cache (50 MB on
// an H100/H200) instead of making a round trip through memory, which at batch 256 is most of a
// MetaFormer block's traffic; and the pass's peak memory holds one chunk's of them, not the batch's.
// The price is more, smaller launches (docs/cuda-log.md, "Sample-chunked branches").
int64_t chunk_budget_bytes() {
  static const int64_t bytes = [] {
    const char* e = std::getenv("METAFORMER_CUDA_CHUNK_MB");  // a fraction is fine: tests chunk tiny cases
    const double mb = e ? std::atof(e) : 0.0;
    return mb > 0 ? std::max<int64_t>(1, static_cast<int64_t>(mb * 1048576.0)) : int64_t{0};
  }();
  return bytes;
}

using k::bf16;
template <class T>
constexpr DType dtype_of() {
  return std::is_same_v<T, bf16> ? DType::bf16 : DType::f32;
}

// t converted to the other dtype on the GPU, cached with t's storage (a parameter or an input is
// converted once; an activation's copy dies with it). A host tensor's fp32 upload made only for the
// cast is not kept: in bf16 inference the GEMMs read the weights' bf16 copies alone, and the fp32
// uploads beside them were 45 MiB of poolformer_s12's peak (an op that reads the fp32 values too
// uploads them again, once, and keeps them).
const void* converted(const Tensor& t, DType to) {
  const std::string key = to == DType::bf16 ? cuda::kBf16CopyKey : "cuda.as_f32";
  if (auto d = t.derived(key)) return static_cast<Tensor*>(d.get())->raw();
  auto c = std::make_shared<Tensor>(Tensor::empty(t.shape(), Device::CUDA, to));
  if (to == DType::bf16) {
    const bool transient = t.device() != Device::CUDA && !t.derived(cuda::kUploadKey);
    ok(k::cast(dev(t), static_cast<bf16*>(c->raw()), t.numel(), stream()), "cast to bf16");
    if (transient) t.drop_derived(cuda::kUploadKey);  // freed in stream order, after the cast has read it
  } else {
    ok(k::cast(static_cast<const bf16*>(t.raw()), static_cast<float*>(c->raw()), t.numel(), stream()), "cast to fp32");
  }
  const void* p = c->raw();
  t.set_derived(key, c);
  return p;
}

// An activation (or any input) as the kernels' element type T, on the GPU.
template <class T>
const T* in(const Tensor& t) {
  if (t.device() == Device::CUDA && t.dtype() == dtype_of<T>()) return static_cast<const T*>(t.raw());
  if constexpr (std::is_same_v<T, float>) {
    if (t.dtype() == DType::f32) return dev(t);  // on the host: uploaded
  }
  return static_cast<const T*>(converted(t, dtype_of<T>()));
}
template <class T>
const T* in(const Tensor* t) {
  return t ? in<T>(*t) : nullptr;
}

// Every kernel's output pointer: statistics that described y's old contents go (kGn1PartialsKey).
template <class T>
T* out(Tensor& y) {
  MF_ASSERT(y.device() == Device::CUDA && y.dtype() == dtype_of<T>());
  static const std::string stats_key = cuda::kGn1PartialsKey;
  y.drop_derived(stats_key);
  return static_cast<T*>(y.raw());
}

}  // namespace

// A Linear's weight [N, K(, 1, 1)] and bias [N] with a layer scale ls [N] folded in (each output
// row times ls), so that y = x + ls ⊙ (h·wᵀ + b) is one GEMM with the residual in its epilogue.
// Made on the GPU and cached with w under one key per scale (and bias) storage, remade when w, ls
// or b changes version: a key with the versions in it would leave one stale copy a training step.
namespace cuda {
const LayerScaled& layer_scaled(const Tensor& w, const Tensor* b, const Tensor& ls) {
  const std::string key = "cuda.layer_scaled." + std::to_string(ls.storage_id()) +
                          (b ? "." + std::to_string(b->storage_id()) : "");
  const std::string versions = ls.version_key() + (b ? b->version_key() : "");
  if (auto d = w.derived(key)) {
    const auto* f = static_cast<const LayerScaled*>(d.get());
    if (f->versions == versions) return *f;
  }
  const int64_t N = w.dim(0), K = w.numel() / N;
  auto f = std::make_shared<LayerScaled>();
  f->versions = versions;
  // On the GPU: each row of w (and each bias) times its output's scale.
  f->w = Tensor::empty({N, K}, Device::CUDA);
  ok(k::sample_scale(dev(w), dev(ls), f->w.data(), N, K, stream()), "layer-scaled weight");
  if (b) {
    f->b = Tensor::empty({N}, Device::CUDA);
    ok(k::sample_scale(dev(*b), dev(ls), f->b.data(), N, 1, stream()), "layer-scaled bias");
  }
  const LayerScaled& r = *f;
  w.set_derived(key, f);
  return r;
}
}  // namespace cuda

namespace {

class CudaBackend final : public CudaFamilyOps {
 public:
  explicit CudaBackend(Precision p) : precision_(p), bf16_(p == Precision::bf16) {
    context();
    MF_CHECK(!(bf16_ && simple_kernels()), "METAFORMER_CUDA_KERNELS=simple has fp32 kernels only (asked for bf16)");
  }
  std::string name() const override { return "cuda"; }
  Device device() const override { return Device::CUDA; }
  Precision precision() const override { return precision_; }
  DType activation_dtype() const override { return bf16_ ? DType::bf16 : DType::f32; }
  // Every op has a CUDA kernel. METAFORMER_CUDA_FAMILY_OPS=0 withdraws the ops of the paper mixers'
  // own networks and of the sequence models (cuda_family_ops.h); models that need them are then
  // refused at load time (MetaFormer::check_backend). The cross-entropy (training only) reads bf16 logits widened, and its
  // loss is fp32 (cuda_backward.cpp).
  bool supports(OpKind op) const override {
    if (cuda::is_family_op(op)) return cuda::family_ops_enabled();
    return true;
  }
  // Training's layer-scaled halves as one op each (the MLP's: one GEMM with the scale folded into fc2
  // and the residual in its epilogue; the pooling's: one kernel): on unless METAFORMER_CUDA_FOLD_LS=0.
  // The default since its H100 run of 2026-12-07 (docs/cuda-log-2.md: poolformer_s12's bf16 training
  // +7-8 % images/s, op cases and the PyTorch golden passing); read on each call, so that a test can
  // train with and without it in one process.
  bool folds_layer_scales() const override { return env_choice("METAFORMER_CUDA_FOLD_LS", {"0", "1"}) != 0; }
  // Training's activation → depthwise convolution (ConvFormer's StarReLU → dwconv) as one op: the
  // depthwise kernel applies the activation as it stages its input, as inference's sepconv_branch does,
  // and its dW kernel does the same (cuda_backward.cpp), so act(pre), 2x the block's width, is neither
  // written nor read back. The default since its H100 runs of 2026-12-07 (docs/cuda-log-2.md:
  // convformer_s18's bf16 training +1.4-2.2 % images/s, every op case passing once StarReLU's scalar
  // gradients are judged against Σ|terms|); METAFORMER_CUDA_ACT_DW=0 turns it off. Read on each call,
  // so that a test can train with and without it in one process. The plain kernels have no input
  // activation: off with METAFORMER_CUDA_KERNELS=simple.
  bool fuses_act_into_depthwise() const override {
    return !simple_kernels() && env_choice("METAFORMER_CUDA_ACT_DW", {"0", "1"}) != 0;
  }
  void linear_scaled_residual(const Tensor& h, const Tensor& w, const Tensor* b, const Tensor* ls,
                              const Tensor& skip, Tensor& y) override {
    residual_linear(h, w, b, ls, skip, y);
  }
  // METAFORMER_CUDA_RES_LINEAR (on by default since 2026-12-07: +0.6 % mambaout_femto, +1.4 %
  // caformer_s18 training on an H100; read on each call so that a test can train with and without
  // it): training's unscaled halves run their last Linear with the residual as the GEMM's C
  // (docs/cuda.md), so the branch output is neither written nor read by a residual kernel:
  // ConvFormer's and CAFormer's stages 1–2, every MambaOut block. `0` keeps the residual kernel.
  bool fuses_residual_into_linear() const override { return env_choice("METAFORMER_CUDA_RES_LINEAR", {"0", "1"}) != 0; }
  void synchronize() override { cuda::synchronize(); }
  Tensor run_pass(const void* owner, const Tensor& x, const std::function<Tensor(const Tensor&)>& pass) override {
    return cuda::run_recorded(owner, x, pass);
  }
  void release_passes(const void* owner) override { cuda::release_recorded(owner); }
  bool uploads_ahead() const override { return cuda::upload_ahead_enabled(); }
  // The next batch's device copy is allocated here, in the compute stream's order before the step
  // about to be queued, so none of that step's work can be given its memory; an event marks the
  // point. upload_ahead's copy (on the copy stream) waits for it, which completes when the previous
  // step is done, and the first use of the upload waits for the copy (dev()).
  void reserve_upload(const Shape& shape) override {
    if (!cuda::upload_ahead_enabled()) return;
    reserved_ = Tensor::empty(shape, Device::CUDA);  // an unused earlier one is freed in stream order
    if (!reserved_at_) MF_CUDA(cudaEventCreateWithFlags(&reserved_at_, cudaEventDisableTiming));
    MF_CUDA(cudaEventRecord(reserved_at_, stream()));
  }
  // A batch of another shape, or not in page-locked memory, is left to the usual upload.
  void upload_ahead(const Tensor& x) override {
    Tensor up = std::move(reserved_);
    reserved_ = Tensor();
    if (!up.defined() || x.device() == Device::CUDA || x.dtype() != DType::f32 || x.shape() != up.shape() ||
        x.derived(cuda::kUploadKey))
      return;
    cudaEvent_t copied =
        cuda::copy_ahead(up.raw(), x.raw(), static_cast<size_t>(x.numel()) * sizeof(float), reserved_at_);
    if (!copied) return;
    {
      std::lock_guard<std::mutex> lock(g_ahead_mu);
      auto [it, fresh] = g_ahead.emplace(up.raw(), copied);
      if (!fresh) {  // an upload at this address was never read: its copy is long done
        MF_CUDA(cudaEventDestroy(it->second));
        it->second = copied;
      }
    }
    x.set_derived(cuda::kUploadKey, std::make_shared<Tensor>(std::move(up)));
  }

  void linear(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) override {
    gemm_rows(x, w, b, y, x.shape().rows(), w.dim(1), cuda::Epilogue::bias);
  }
  void linear_act(const Tensor& x, const Tensor& w, const Tensor* b, const Activation& act, Tensor& y) override {
    // ReLU is fused into the GEMM. cuBLASLt's GELU epilogue is the tanh approximation, not timm's erf
    // GELU: fused only in bf16, where the difference (≤ 4.8e-4) is far below the bf16 rounding of
    // the stored output (docs/cuda.md); in fp32 GELU runs as its own kernel.
    cuda::Epilogue e = cuda::Epilogue::bias;
    if (act.kind == ActKind::ReLU) e = cuda::Epilogue::relu_bias;
    if (act.kind == ActKind::GELU && bf16_) e = cuda::Epilogue::gelu_bias;
    gemm_rows(x, w, b, y, x.shape().rows(), w.dim(1), e);
    if (e == cuda::Epilogue::bias && act.kind != ActKind::Identity) activation(y, act, y);
  }
  // A training step's fc1 → GELU: where gelu_epilogue_in_training holds, one GEMM writes both the
  // GELU's output and its input (cuBLASLt's GELU_AUX_BIAS; linear_act_backward then applies the
  // derivative in fc2's dx product). Elsewhere linear, then the activation kernel.
  void linear_act_train(const Tensor& x, const Tensor& w, const Tensor* b, const Activation& act, Tensor& pre,
                        Tensor& y) override {
    const int64_t N = w.dim(0);
    if (act.kind != ActKind::GELU || !cuda::gelu_epilogue_in_training(bf16_, N)) {
      Backend::linear_act_train(x, w, b, act, pre, y);
      return;
    }
    cuda::Gemm g;
    g.type = cuda::GemmType::bf16;
    g.trans_a = true;  // as linear_rows: yᵀ = W · xᵀ
    g.m = N, g.n = x.shape().rows(), g.k = x.shape().last();
    g.a = in<bf16>(w), g.lda = g.k;
    g.b = in<bf16>(x), g.ldb = g.k;
    g.d = out<bf16>(y), g.ldd = N;
    g.bias = in<bf16>(b);
    g.epilogue = cuda::Epilogue::gelu_aux_bias;
    g.aux = out<bf16>(pre);
    cuda::run_gemm(g);
  }
  void conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g, Tensor& y) override {
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3), Co = w.dim(0);
    const int64_t Ho = y.dim(1), Wo = y.dim(2), K = Ci * g.kernel_h * g.kernel_w;
    if (g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0) {
      gemm_rows(x, w, b, y, B * H * W, Ci, cuda::Epilogue::bias);
      return;
    }
    if (bf16_) {
      // Rows padded to a multiple of 8 elements (16 bytes), which cuBLASLt's fast kernels need.
      // The columns are made for a few images at a time (at most 32 M elements, 64 MiB): the stem's
      // columns for a whole batch of 256 would be 244 MiB, the largest buffer of the pass.
      const int64_t ldk = (K + 7) / 8 * 8, per_image = Ho * Wo * ldk;
      const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(B, (int64_t{32} << 20) / std::max<int64_t>(per_image, 1)));
      Tensor cols = Tensor::empty({chunk * Ho * Wo, ldk}, Device::CUDA, DType::bf16);
      const bf16* wg = conv_weight_gemm<bf16>(w, ldk);
      const bf16* bias = in<bf16>(b);
      const bf16* xs = in<bf16>(x);
      bf16* ys = out<bf16>(y);
      for (int64_t b0 = 0; b0 < B; b0 += chunk) {
        const int64_t n = std::min(chunk, B - b0);
        ok(k::im2col_nhwc_padded(xs + b0 * H * W * Ci, out<bf16>(cols), ldk, n, H, W, Ci, g.kernel_h, g.kernel_w,
                                 g.stride_h, g.stride_w, g.pad_h, g.pad_w, Ho, Wo, stream()),
           "im2col");
        cuda::linear_rows(cuda::GemmType::bf16, cols.raw(), wg, bias, ys + b0 * Ho * Wo * Co, n * Ho * Wo, Co, ldk);
      }
      return;
    }
    Tensor cols = Tensor::empty({B * Ho * Wo, K}, Device::CUDA);
    ok(k::im2col_nhwc_padded(in<float>(x), out<float>(cols), K, B, H, W, Ci, g.kernel_h, g.kernel_w, g.stride_h,
                             g.stride_w, g.pad_h, g.pad_w, Ho, Wo, stream()),
       "im2col");
    cuda::linear_rows(cuda::GemmType::f32, cols.raw(), conv_weight_gemm<float>(w, K), dev(b), out<float>(y), B * Ho * Wo,
                      Co, K);
  }
  void depthwise_conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g, Tensor& y) override {
    if (simple_kernels()) {
      cuda::simple::depthwise_conv2d(dev(x), dev(w), dev(b), out<float>(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3),
                                     g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, y.dim(1),
                                     y.dim(2), stream());
      return launched("depthwise_conv2d");
    }
    const int64_t C = x.dim(3);
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::depthwise_conv2d(in<T>(x), C, depthwise_weight(w), dev(b), out<T>(y), C, x.dim(0), x.dim(1), x.dim(2), C,
                             y.dim(1), y.dim(2), g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                             k::Act{}, k::Act{}, stream()),
         "depthwise_conv2d");
    });
  }
  // The slice read where it lies (x stride t's channels), as inference's gated_cnn_branch does.
  void depthwise_conv2d_slice(const Tensor& t, int64_t offset, const Tensor& w, const Tensor* b, const ConvGeometry& g,
                              Tensor& y) override {
    if (simple_kernels()) return Backend::depthwise_conv2d_slice(t, offset, w, b, g, y);
    const int64_t Ct = t.dim(3), C = w.dim(0);
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::depthwise_conv2d(in<T>(t) + offset, Ct, depthwise_weight(w), dev(b), out<T>(y), C, t.dim(0), t.dim(1),
                             t.dim(2), C, y.dim(1), y.dim(2), g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h,
                             g.pad_w, k::Act{}, k::Act{}, stream()),
         "depthwise_conv2d_slice");
    });
  }
  // METAFORMER_CUDA_SLICE_DW (on by default since 2026-12-07: +5.0 % mambaout_femto training on an
  // H100; read on each call so that a test can train with and without it): MambaOut's training gated
  // CNN runs through depthwise_conv2d_slice and gated_conv_backward (docs/cuda.md); `0` copies the
  // conv channels out and adds their gradient back. The plain kernels read no slices.
  bool convolves_channel_slices() const override {
    return !simple_kernels() && env_choice("METAFORMER_CUDA_SLICE_DW", {"0", "1"}) != 0;
  }
  void act_depthwise_conv2d(const Tensor& pre, const Activation& act, const Tensor& w, const Tensor* b,
                            const ConvGeometry& g, Tensor& y) override {
    if (simple_kernels()) return Backend::act_depthwise_conv2d(pre, act, w, b, g, y);
    const int64_t C = pre.dim(3);
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::depthwise_conv2d(in<T>(pre), C, depthwise_weight(w), dev(b), out<T>(y), C, pre.dim(0), pre.dim(1),
                             pre.dim(2), C, y.dim(1), y.dim(2), g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h,
                             g.pad_w, kact(act), k::Act{}, stream()),
         "act_depthwise_conv2d");
    });
  }
  void pool_minus_input(const Tensor& x, int kernel, Tensor& y) override {
    if (simple_kernels()) {
      cuda::simple::pool_minus_input(dev(x), out<float>(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3), kernel, stream());
      return launched("pool_minus_input");
    }
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::pool_minus_input(in<T>(x), out<T>(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3), kernel, stream()),
         "pool_minus_input");
    });
  }
  // PoolFormer's first half: one kernel after the GroupNorm statistics, which read x once before it
  // (so in sample chunks its second read of x can come from L2).
  void pool_branch(const Tensor& x, const BranchNorm& norm, int kernel, const BranchScales& scales, Tensor& y) override {
    if (simple_kernels()) return Backend::pool_branch(x, norm, kernel, scales, y);
    if (x.ndim() == 4 && by_sample_chunks(x, y, x.shape().last(), [&](const Tensor& xc, Tensor& yc) {
          pool_branch_whole(xc, norm, kernel, scales, yc, false);
        }))
      return;
    pool_branch_whole(x, norm, kernel, scales, y, true);
  }
  // with_stats: y's GroupNorm partial statistics are written with it and kept with y
  // (kGn1PartialsKey), for the MLP half's norm of y (group_norm1 below), which then reads y once.
  void pool_branch_whole(const Tensor& x, const BranchNorm& norm, int kernel, const BranchScales& scales, Tensor& y,
                         bool with_stats) {
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
    Tensor ws = scratch(k::group_norm1_workspace_bytes(B, H * W * C));
    std::shared_ptr<Gn1Partials> stats;
    if (with_stats)
      stats = std::make_shared<Gn1Partials>(
          Gn1Partials{scratch(k::group_norm1_partials_bytes(B, H * W * C)), B, H * W * C});
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::pool_branch(in<T>(x), dev(norm.weight), dev(norm.bias), norm.eps, kernel, dev(scales.res_scale),
                        dev(scales.layer_scale), out<T>(y), B, H, W, C, ws.data(), stream(),
                        stats ? stats->partials.data() : nullptr),
         "pool_branch");
    });
    if (stats) y.set_derived(cuda::kGn1PartialsKey, stats);
  }
  // The block's second half with its residual (and layer scale, folded into fc2) in fc2's epilogue;
  // with a res scale, the skip term x ⊙ rs from the LayerNorm's kernel (branch_norm_skip), or with a
  // GroupNorm the default composition. In chunks of samples where METAFORMER_CUDA_CHUNK_MB
  // asks for them (the norm's output and the hidden activation a sample).
  // y may be x: the norm reads each chunk of rows before fc2's residual epilogue (C = D, one layout,
  // as cuBLASLt allows) writes over it. Not on the default composition (res scale, simple kernels).
  // The product with C = D did not repeat the bits of the same plan with C ≠ D (H100, 2026-12-06):
  // equal to the op's bar, not bit for bit (test_cuda.cpp).
  bool mlp_branch_in_place(const BranchScales& scales) const override {
    return !scales.res_scale && !simple_kernels();
  }
  void mlp_branch(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1, const Activation& act,
                  const Tensor& w2, const Tensor* b2, const BranchScales& scales, Tensor& y) override {
    if (by_sample_chunks(x, y, x.shape().last() + w1.dim(0), [&](const Tensor& xc, Tensor& yc) {
          mlp_branch_whole(xc, norm, w1, b1, act, w2, b2, scales, yc);
        }))
      return;
    mlp_branch_whole(x, norm, w1, b1, act, w2, b2, scales, y);
  }
  void mlp_branch_whole(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                        const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales& scales,
                        Tensor& y) {
    if (simple_kernels() || (scales.res_scale && norm.type != BranchNorm::Type::layer_norm))
      return Backend::mlp_branch(x, norm, w1, b1, act, w2, b2, scales, y);
    Shape hs = x.shape();
    hs[-1] = w1.dim(0);
    Tensor h = Tensor::empty(hs, Device::CUDA, activation_dtype());
    Tensor skip;
    {
      Tensor n = Tensor::empty(x.shape(), Device::CUDA, activation_dtype());
      skip = branch_norm_skip(x, norm, scales.res_scale, n);
      linear_act(n, w1, b1, act, h);
    }
    residual_linear(h, w2, b2, scales.layer_scale, skip.defined() ? skip : x, y);
  }
  // The branch's norm into n; with a res scale and a LayerNorm also the scaled skip term x ⊙ rs, from
  // the same read of x (returned; undefined otherwise), for the branch's last GEMM to add in its
  // epilogue in place of the separate scaled-residual pass (which read x and the branch output and
  // wrote the sum: one pass over the stream and one launch a branch more).
  Tensor branch_norm_skip(const Tensor& x, const BranchNorm& norm, const Tensor* res_scale, Tensor& n) {
    if (!res_scale || norm.type != BranchNorm::Type::layer_norm) {
      branch_norm(x, norm, n);
      return Tensor();
    }
    Tensor skip = Tensor::empty(x.shape(), Device::CUDA, activation_dtype());
    const int64_t C = x.shape().last();
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::layer_norm_scaled_skip(in<T>(x), dev(res_scale), out<T>(skip), dev(norm.weight), dev(norm.bias), norm.eps,
                                   out<T>(n), x.numel() / C, C, stream()),
         "layer_norm");
    });
    return skip;
  }
  // ConvFormer's first half: pwconv1 without its activation, which the depthwise kernel applies as it
  // stages its input (the 2x-wide activation never makes a round trip through memory for it), and
  // the residual in pwconv2's epilogue.
  void sepconv_branch(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                      const Activation& act, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                      const Tensor& w2, const Tensor* b2, const BranchScales& scales, Tensor& y) override {
    if (!simple_kernels() && x.ndim() == 4 &&
        by_sample_chunks(x, y, x.shape().last() + 2 * w1.dim(0), [&](const Tensor& xc, Tensor& yc) {
          sepconv_branch_whole(xc, norm, w1, b1, act, dw_w, dw_b, g, w2, b2, scales, yc);
        }))
      return;
    sepconv_branch_whole(x, norm, w1, b1, act, dw_w, dw_b, g, w2, b2, scales, y);
  }
  void sepconv_branch_whole(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                            const Activation& act, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                            const Tensor& w2, const Tensor* b2, const BranchScales& scales, Tensor& y) {
    if (simple_kernels())
      return Backend::sepconv_branch(x, norm, w1, b1, act, dw_w, dw_b, g, w2, b2, scales, y);
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), M = w1.dim(0);
    Tensor d = Tensor::empty({B, H, W, M}, Device::CUDA, activation_dtype());
    Tensor skip;
    {
      Tensor h = Tensor::empty({B, H, W, M}, Device::CUDA, activation_dtype());
      {
        Tensor n = Tensor::empty(x.shape(), Device::CUDA, activation_dtype());
        skip = branch_norm_skip(x, norm, scales.res_scale, n);
        linear(n, w1, b1, h);
      }
      typed([&](auto tag) {
        using T = decltype(tag);
        ok(k::depthwise_conv2d(in<T>(h), M, depthwise_weight(dw_w), dev(dw_b), out<T>(d), M, B, H, W, M, H, W,
                               g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, kact(act), k::Act{},
                               stream()),
           "depthwise_conv2d");
      });
    }
    if (skip.defined()) return residual_linear(d, w2, b2, scales.layer_scale, skip, y);
    if (!scales.res_scale) return residual_linear(d, w2, b2, scales.layer_scale, x, y);
    Tensor m = Tensor::empty(y.shape(), Device::CUDA, activation_dtype());
    linear(d, w2, b2, m);
    scaled_residual(x, scales.res_scale, m, scales.layer_scale, y);
  }
  // MambaOut's block: the depthwise convolution reads its channels where fc1 wrote them (no slice
  // copy), and the residual is added in fc2's epilogue.
  void gated_cnn_branch(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1, int64_t hidden,
                        const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g, const Activation& act,
                        const Tensor& w2, const Tensor* b2, const BranchScales& scales, Tensor& y) override {
    // A sample's intermediates: the norm's output, fc1's (2·hidden), the convolved channels, the
    // gated product.
    if (!simple_kernels() && x.ndim() == 4 &&
        by_sample_chunks(x, y, x.shape().last() + 3 * hidden + dw_w.dim(0), [&](const Tensor& xc, Tensor& yc) {
          gated_cnn_branch_whole(xc, norm, w1, b1, hidden, dw_w, dw_b, g, act, w2, b2, scales, yc);
        }))
      return;
    gated_cnn_branch_whole(x, norm, w1, b1, hidden, dw_w, dw_b, g, act, w2, b2, scales, y);
  }
  void gated_cnn_branch_whole(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                              int64_t hidden, const Tensor& dw_w, const Tensor* dw_b, const ConvGeometry& g,
                              const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales& scales,
                              Tensor& y) {
    if (simple_kernels())
      return Backend::gated_cnn_branch(x, norm, w1, b1, hidden, dw_w, dw_b, g, act, w2, b2, scales, y);
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), T2 = 2 * hidden, conv = dw_w.dim(0);
    Tensor z = Tensor::empty({B, H, W, hidden}, Device::CUDA, activation_dtype());
    {
      Tensor t = Tensor::empty({B, H, W, T2}, Device::CUDA, activation_dtype());
      {
        Tensor n = Tensor::empty(x.shape(), Device::CUDA, activation_dtype());
        branch_norm(x, norm, n);
        linear(n, w1, b1, t);
      }
      Tensor c = Tensor::empty({B, H, W, conv}, Device::CUDA, activation_dtype());
      typed([&](auto tag) {
        using T = decltype(tag);
        ok(k::depthwise_conv2d(in<T>(t) + (T2 - conv), T2, depthwise_weight(dw_w), dev(dw_b), out<T>(c), conv, B, H, W,
                               conv, H, W, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, k::Act{},
                               k::Act{}, stream()),
           "depthwise_conv2d");
      });
      glu(t, &c, 0, hidden, act, z);
    }
    if (!scales.res_scale) return residual_linear(z, w2, b2, scales.layer_scale, x, y);
    Tensor m = Tensor::empty(y.shape(), Device::CUDA, activation_dtype());
    linear(z, w2, b2, m);
    scaled_residual(x, scales.res_scale, m, scales.layer_scale, y);
  }
  void layer_norm(const Tensor& x, const Tensor& w, const Tensor* b, float eps, Tensor& y) override {
    const int64_t C = x.shape().last();
    if (simple_kernels()) {
      cuda::simple::layer_norm(dev(x), dev(w), dev(b), eps, out<float>(y), x.numel() / C, C, stream());
      return launched("layer_norm");
    }
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::layer_norm(in<T>(x), dev(w), dev(b), eps, out<T>(y), x.numel() / C, C, stream()), "layer_norm");
    });
  }
  void group_norm1(const Tensor& x, const Tensor& w, const Tensor* b, float eps, Tensor& y) override {
    const int64_t B = x.dim(0);
    if (simple_kernels()) {
      cuda::simple::group_norm1(dev(x), dev(w), dev(b), eps, out<float>(y), B, x.numel() / B, x.shape().last(),
                                stream());
      return launched("group_norm1");
    }
    Tensor ws = scratch(k::group_norm1_workspace_bytes(B, x.numel() / B));
    // x's statistics, where the kernel that wrote x left them (pool_branch): taken, so used once.
    auto stats = std::static_pointer_cast<Gn1Partials>(x.derived(cuda::kGn1PartialsKey));
    if (stats) x.drop_derived(cuda::kGn1PartialsKey);
    if (stats && (stats->B != B || stats->per != x.numel() / B)) stats = nullptr;  // made for other samples
    typed([&](auto tag) {
      using T = decltype(tag);
      if (stats)
        ok(k::group_norm1_from_partials(in<T>(x), stats->partials.data(), dev(w), dev(b), eps, out<T>(y), B,
                                        x.numel() / B, x.shape().last(), ws.data(), stream()),
           "group_norm1");
      else
        ok(k::group_norm1(in<T>(x), dev(w), dev(b), eps, out<T>(y), B, x.numel() / B, x.shape().last(), ws.data(),
                          stream()),
           "group_norm1");
    });
  }
  void activation(const Tensor& x, const Activation& act, Tensor& y) override {
    if (simple_kernels()) {
      const Activation h = with_host_scalars(act);
      cuda::simple::activation(dev(x), out<float>(y), x.numel(), act_code(h), h.scale, h.bias, h.threshold, stream());
      return launched("activation");
    }
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::activation(in<T>(x), out<T>(y), x.numel(), kact(act), stream()), "activation");
    });
  }
  void scaled_residual(const Tensor& x, const Tensor* res_scale, const Tensor& branch, const Tensor* layer_scale,
                       Tensor& y) override {
    const int64_t C = x.shape().last();
    if (simple_kernels()) {
      cuda::simple::scaled_residual(dev(x), dev(res_scale), dev(branch), dev(layer_scale), out<float>(y), x.numel(), C,
                                    stream());
      return launched("scaled_residual");
    }
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::scaled_residual(in<T>(x), dev(res_scale), in<T>(branch), dev(layer_scale), out<T>(y), x.numel() / C, C,
                            stream()),
         "scaled_residual");
    });
  }
  void global_avg_pool(const Tensor& x, Tensor& y) override {
    const int64_t B = x.dim(0), C = x.shape().last();
    if (simple_kernels()) {
      cuda::simple::global_avg_pool(dev(x), out<float>(y), B, x.numel() / (B * C), C, stream());
      return launched("global_avg_pool");
    }
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::global_avg_pool(in<T>(x), out<T>(y), B, x.numel() / (B * C), C, stream()), "global_avg_pool");
    });
  }
  void attention(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y) override {
    MF_CHECK(head_dim <= 128, "attention: head_dim {} is over the CUDA kernels' 128", head_dim);
    if (simple_kernels()) {
      cuda::simple::attention(dev(qkv), out<float>(y), qkv.dim(0), qkv.dim(1), heads, head_dim, scale, stream());
      return launched("attention");
    }
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::attention(in<T>(qkv), out<T>(y), qkv.dim(0), qkv.dim(1), heads, head_dim, scale, stream()), "attention");
    });
  }
  // METAFORMER_CUDA_ATTN_STATS (on by default since 2026-12-07: +3.3 % caformer_s18 training on an
  // H100; read on each call so that a test can run both): the tensor-core forward keeps its
  // log-sum-exps in training, which the mma backward then reads instead of its first pass over the
  // scores (attention_backward_mma.cu); `0` recomputes them there.
  void attention_training_stats(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y,
                                Tensor& stats) override {
    const bool keep = bf16_ && !simple_kernels() && env_choice("METAFORMER_CUDA_ATTN_STATS", {"0", "1"}) != 0 &&
                      k::attention_writes_lse(in<bf16>(qkv), out<bf16>(y), head_dim);
    if (!keep) return Backend::attention_training_stats(qkv, heads, head_dim, scale, y, stats);
    stats = Tensor::empty({qkv.dim(0), heads, qkv.dim(1)}, Device::CUDA);
    ok(k::attention(in<bf16>(qkv), out<bf16>(y), qkv.dim(0), qkv.dim(1), heads, head_dim, scale, stream(),
                    stats.data()),
       "attention");
  }
  void token_mix(const Tensor& r, const Tensor& x, const Tensor* bias, Tensor& y) override {
    // y[b] (M×C row-major) = r (M×N) · x[b] (N×C): column-major y[b]ᵀ = x[b]ᵀ · rᵀ, one strided batch.
    const int64_t B = x.dim(0), N = x.dim(1), C = x.dim(2), M = r.dim(0);
    cuda::Gemm g;
    g.type = bf16_ ? cuda::GemmType::bf16 : cuda::GemmType::f32;
    g.m = C, g.n = M, g.k = N;
    g.a = bf16_ ? static_cast<const void*>(in<bf16>(x)) : in<float>(x), g.lda = C, g.stride_a = N * C;
    g.b = bf16_ ? static_cast<const void*>(in<bf16>(r)) : in<float>(r), g.ldb = N, g.stride_b = 0;
    g.d = y.raw(), g.ldd = C, g.stride_d = M * C;
    g.batch = B;
    cuda::run_gemm(g);
    if (bias) {
      if (bf16_)
        cuda::add_token_bias_bf16(y.raw(), dev(bias), B, M, C, stream());
      else
        cuda::add_token_bias(out<float>(y), dev(bias), B, M, C, stream());
      launched("token bias");
    }
  }
  void nchw_to_nhwc(const Tensor& x, Tensor& y) override {
    const int64_t B = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
    if (simple_kernels()) {
      cuda::nchw_to_nhwc_scaled(dev(x), out<float>(y), B, C, H, W, 1.f, stream());
      return launched("nchw_to_nhwc");
    }
    if (!bf16_) return ok(k::nchw_to_nhwc(in<float>(x), out<float>(y), B, C, H, W, stream()), "nchw_to_nhwc");
    // The images arrive in fp32 and are rounded to bf16 on the way in.
    if (x.dtype() == DType::f32)
      ok(k::nchw_to_nhwc(in<float>(x), out<bf16>(y), B, C, H, W, stream()), "nchw_to_nhwc");
    else
      ok(k::nchw_to_nhwc(in<bf16>(x), out<bf16>(y), B, C, H, W, stream()), "nchw_to_nhwc");
  }
  void sample_scale(const Tensor& x, const Tensor& s, Tensor& y) override {
    const int64_t B = x.dim(0);
    if (simple_kernels()) {
      cuda::simple::sample_scale(dev(x), dev(s), out<float>(y), B, B ? x.numel() / B : 0, stream());
      return launched("sample_scale");
    }
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::sample_scale(in<T>(x), dev(s), out<T>(y), B, B ? x.numel() / B : 0, stream()), "sample_scale");
    });
  }
  // The rows come up as they are (their bytes: the box's pixels and tables, or a finished image),
  // through the usual upload or upload_ahead's copy; the headers and the table are small uploads.
  void augment_crops(const Tensor& rows, const Tensor& headers, const Tensor& table, Tensor& y) override {
    const int64_t B = rows.dim(0);
    const int S = static_cast<int>(rows.dim(1));
    int max_rows = 0;
    for (int64_t b = 0; b < B; ++b) {
      int32_t h[crops::kHeaderInts];
      std::memcpy(h, headers.data() + b * crops::kHeaderInts, sizeof h);
      if (h[crops::kMode] == crops::kPacked) max_rows = std::max(max_rows, h[crops::kRowEnd] - h[crops::kRowBegin]);
    }
    const int64_t tmp_bytes = B * max_rows * int64_t{S} * 3;
    Tensor tmp = Tensor::empty({std::max<int64_t>(1, (tmp_bytes + 3) / 4)}, Device::CUDA);
    const auto* hdr = reinterpret_cast<const int32_t*>(dev(headers));
    auto* t = reinterpret_cast<uint8_t*>(tmp.data());
    // fp32 when asked (op::augment_crops's keep_fp32: Mixup then rounds once), else the activations'
    if (y.dtype() == DType::bf16)
      ok(k::augment_crops(dev(rows), hdr, B, S, max_rows, t, dev(table), out<k::bf16>(y), stream()), "augment_crops");
    else
      ok(k::augment_crops(dev(rows), hdr, B, S, max_rows, t, dev(table), out<float>(y), stream()), "augment_crops");
  }
  // x is fp32 (a host batch through its cached upload, or augment_crops's fp32 output).
  void mix_images(const Tensor& x, const MixPlan& p, Tensor& y) override {
    const int mode = p.mode == MixPlan::Mode::blend ? 1 : p.mode == MixPlan::Mode::box ? 2 : 0;
    const int64_t box[4] = {p.y0, p.y1, p.x0, p.x1};
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
    if (y.dtype() == DType::bf16)
      ok(k::mix_images(dev(x), out<k::bf16>(y), B, H, W, C, mode, p.keep, p.take, box, stream()), "mix_images");
    else
      ok(k::mix_images(dev(x), out<float>(y), B, H, W, C, mode, p.keep, p.take, box, stream()), "mix_images");
  }
  void channel_slice(const Tensor& x, int64_t offset, Tensor& y) override {
    const int64_t C = x.shape().last();
    if (simple_kernels()) {
      cuda::simple::channel_slice(dev(x), out<float>(y), x.numel() / C, C, offset, y.shape().last(), stream());
      return launched("channel_slice");
    }
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::channel_slice(in<T>(x), out<T>(y), x.numel() / C, C, offset, y.shape().last(), stream()), "channel_slice");
    });
  }
  void glu(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset, const Activation& act,
           Tensor& y) override {
    const int64_t Ct = t.shape().last(), width = y.shape().last(), rows = t.numel() / Ct;
    const int64_t cw = c ? c->shape().last() : 0;
    if (simple_kernels()) {
      const Activation h = with_host_scalars(act);
      cuda::simple::glu(dev(t), dev(c), out<float>(y), rows, Ct, cw, gate_offset, value_offset, width, act_code(h),
                        h.scale, h.bias, h.threshold, stream());
      return launched("glu");
    }
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::glu(in<T>(t), Ct, in<T>(c), cw, gate_offset, value_offset, out<T>(y), rows, width, kact(act), stream()),
         "glu");
    });
  }
  void channel_affine(const Tensor& x, const Tensor& alpha, const Tensor& beta, Tensor& y) override {
    const int64_t C = x.shape().last();
    if (simple_kernels()) {
      cuda::simple::channel_affine(dev(x), dev(alpha), dev(beta), out<float>(y), x.numel(), C, stream());
      return launched("channel_affine");
    }
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::channel_affine_act(in<T>(x), dev(alpha), dev(beta), out<T>(y), x.numel() / C, C, k::Act{}, stream()),
         "channel_affine");
    });
  }
  // cuFFT has no bf16 transforms of arbitrary sizes: in bf16 the spectrum is computed in fp32
  // between two conversions (the spectral mixers are a small part of any model's time).
  void rfft2(const Tensor& x, float mid_scale, Tensor& y) override {
    Tensor y32 = bf16_ ? Tensor::empty(y.shape(), Device::CUDA) : y;
    cuda::rfft2(in<float>(x), out<float>(y32), x.dim(0), x.dim(1), x.dim(2), x.dim(3), mid_scale);
    if (bf16_) ok(k::cast(y32.data(), out<bf16>(y), y.numel(), stream()), "cast spectrum to bf16");
  }
  void irfft2(const Tensor& x, float mid_scale, Tensor& y) override {
    Tensor y32 = bf16_ ? Tensor::empty(y.shape(), Device::CUDA) : y;
    cuda::irfft2(in<float>(x), out<float>(y32), y.dim(0), y.dim(1), y.dim(2), y.dim(3), mid_scale);
    if (bf16_) ok(k::cast(y32.data(), out<bf16>(y), y.numel(), stream()), "cast image to bf16");
  }
  void complex_mul(const Tensor& a, const Tensor& b, bool conj_b, Tensor& y) override {
    const int64_t C = a.shape().last();
    if (simple_kernels()) {
      cuda::simple::complex_mul(dev(a), dev(b), out<float>(y), a.numel() / (2 * C), b.numel() / (2 * C), C, conj_b,
                                stream());
      return launched("complex_mul");
    }
    typed([&](auto tag) {
      using T = decltype(tag);
      ok(k::complex_mul(in<T>(a), in<T>(b), out<T>(y), a.numel() / (2 * C), b.numel() / (2 * C), C, conj_b, stream()),
         "complex_mul");
    });
  }
  void haar2d(const Tensor& x, bool inverse, Tensor& y) override {
    const Tensor& img = inverse ? y : x;
    const Tensor& bands = inverse ? x : y;
    if (simple_kernels()) {
      cuda::simple::haar2d(dev(x), out<float>(y), img.dim(0), img.dim(1), img.dim(2), img.dim(3), bands.dim(1),
                           bands.dim(2), inverse, stream());
      return launched("haar2d");
    }
    typed([&](auto tag) {
      using T = decltype(tag);
      if (inverse)
        ok(k::haar2d_inverse(in<T>(x), out<T>(y), img.dim(0), img.dim(1), img.dim(2), img.dim(3), stream()),
           "haar2d_inverse");
      else
        ok(k::haar2d(in<T>(x), out<T>(y), img.dim(0), img.dim(1), img.dim(2), img.dim(3), stream()), "haar2d");
    });
  }

 private:
  // f(x_chunk, y_chunk) over chunks of whole samples (rows of the first dimension) whose
  // intermediates, `per_pixel` elements for each of a sample's pixels (tokens), fit the budget of
  // METAFORMER_CUDA_CHUNK_MB. False (nothing run) when the budget is off, one chunk would hold the
  // whole batch, or x and y are not device activations (a chunk is a view of their storage, and
  // conversions are cached per storage, not per view).
  template <class F>
  bool by_sample_chunks(const Tensor& x, Tensor& y, int64_t per_pixel, F&& f) {
    const int64_t budget = chunk_budget_bytes();
    if (budget <= 0 || x.ndim() < 2 || x.dim(0) < 2 || y.ndim() < 1 || y.dim(0) != x.dim(0)) return false;
    if (x.device() != Device::CUDA || x.dtype() != activation_dtype() || y.device() != Device::CUDA ||
        y.dtype() != activation_dtype())
      return false;
    const int64_t B = x.dim(0), pixels = x.numel() / B / std::max<int64_t>(x.shape().last(), 1);
    const int64_t sample_bytes = pixels * per_pixel * (bf16_ ? 2 : 4);
    const int64_t n = std::max<int64_t>(1, budget / std::max<int64_t>(sample_bytes, 1));
    if (n >= B) return false;
    for (int64_t b0 = 0; b0 < B; b0 += n) {
      const int64_t b1 = std::min(B, b0 + n);
      Tensor yc = y.slice0(b0, b1);
      f(x.slice0(b0, b1), yc);
    }
    return true;
  }
  // Runs f(float{}) or f(bf16{}) for the storage type of this backend's activations.
  template <class F>
  void typed(F&& f) const {
    if (bf16_)
      f(bf16{});
    else
      f(float{});
  }
  // y[rows, N] = x[rows, K] · w[N, K]ᵀ + b through cuBLASLt in the activations' type (w may be
  // [N, K, 1, 1]; its bf16 copy is made once and cached with it, as is the bias's).
  void gemm_rows(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y, int64_t rows, int64_t K,
                 cuda::Epilogue e) {
    const int64_t N = w.dim(0);
    if (bf16_)
      cuda::linear_rows(cuda::GemmType::bf16, in<bf16>(x), in<bf16>(w), in<bf16>(b), out<bf16>(y), rows, N, K, e);
    else
      cuda::linear_rows(cuda::GemmType::f32, in<float>(x), dev(w), dev(b), out<float>(y), rows, N, K, e);
  }

  // y = x + ls ⊙ (h · wᵀ + b) (ls null: 1), the residual added in the GEMM's epilogue.
  void residual_linear(const Tensor& h, const Tensor& w, const Tensor* b, const Tensor* ls, const Tensor& x,
                       Tensor& y) {
    const Tensor* wp = &w;
    const Tensor* bp = b;
    if (ls) {
      const cuda::LayerScaled& f = cuda::layer_scaled(w, b, *ls);
      wp = &f.w;
      bp = f.b.defined() ? &f.b : nullptr;
    }
    const int64_t rows = h.shape().rows(), N = w.dim(0), K = h.shape().last();
    if (bf16_)
      cuda::linear_rows(cuda::GemmType::bf16, in<bf16>(h), in<bf16>(*wp), in<bf16>(bp), out<bf16>(y), rows, N, K,
                        cuda::Epilogue::bias, in<bf16>(x));
    else
      cuda::linear_rows(cuda::GemmType::f32, in<float>(h), dev(*wp), dev(bp), out<float>(y), rows, N, K,
                        cuda::Epilogue::bias, in<float>(x));
  }

  Precision precision_;
  bool bf16_;
  Tensor reserved_;                   // reserve_upload's room for the next training batch
  cudaEvent_t reserved_at_ = nullptr;  // the compute stream's point where it was made
};

}  // namespace

Backend& cuda_backend(Precision precision) {
  // Never destroyed, like the context. Made on first use, so that a bf16 refusal (simple kernels)
  // does not stop the fp32 backend.
  if (precision == Precision::bf16) {
    static CudaBackend* bf16_backend = new CudaBackend(Precision::bf16);
    return *bf16_backend;
  }
  static CudaBackend* backend = new CudaBackend(Precision::fp32);
  return *backend;
}

namespace cuda {
const float* device_f32(const Tensor& t) { return in<float>(t); }
const kernels::bf16* device_bf16(const Tensor& t) { return in<bf16>(t); }
}  // namespace cuda

void cuda_select_device(int index) { cuda::select_device(index); }
int cuda_device_count() { return cuda::device_count(); }
std::string cuda_device_description() { return cuda::device_description(); }
size_t cuda_peak_bytes() { return cuda::pool_peak_bytes(); }
std::string cuda_peak_blocks() { return cuda::pool_peak_blocks(); }
void cuda_reset_peak() { cuda::pool_reset_peak(); }

void cuda_set_fp32_matmul(const std::string& mode) {
  cuda::set_fp32_math(mode == "tf32" ? cuda::Fp32Math::tf32 : mode == "bf16" ? cuda::Fp32Math::bf16 : cuda::Fp32Math::exact);
}

}  // namespace mf
