// linear on oneDNN's matmul. The weight [N, K] is handed to oneDNN as a K×N matrix with strides
// {1, K}; the primitive is created with a free ("any") weight layout, and the weight is reordered
// into that layout once and cached on the tensor (invalidated when the parameter changes).
#include <memory>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/onednn.h"
#include "ops/cpu/reduce.h"

namespace mf {

namespace {
using dnnl::memory;

struct MatmulPlan {
  dnnl::matmul prim;
  memory::desc weights_md;
};
}  // namespace

void CpuBackend::linear(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) {
  const int64_t K = x.shape().last(), M = x.shape().rows(), N = w.dim(0);
  if (M == 0) return;
  const std::string key = fmt::format("mm:{}:{}:{}:{}", M, K, N, b != nullptr);
  auto& plan = onednn::cached<MatmulPlan>(key, [&] {
    auto src = onednn::plain({M, K}, {K, 1});
    auto wei_any = memory::desc({K, N}, memory::data_type::f32, memory::format_tag::any);
    auto dst = onednn::plain({M, N}, {N, 1});
    dnnl::matmul::primitive_desc pd =
        b ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei_any, onednn::plain({1, N}, {N, 1}), dst),
                                         onednn::engine())
          : dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei_any, dst), onednn::engine());
    return MatmulPlan{dnnl::matmul(pd), pd.weights_desc()};
  });

  // Weights in the primitive's layout, cached per (tensor, M): the layout may depend on M.
  const std::string wkey = fmt::format("onednn_mm_weights:{}", M);
  auto prepared = std::static_pointer_cast<memory>(w.derived(wkey));
  if (!prepared) {
    auto plain_w = onednn::wrap(onednn::plain({K, N}, {1, K}), w.data());
    memory m = onednn::reorder_if_needed(plain_w, plan.weights_md);
    // A reorder that was not needed wraps the parameter's own memory; keeping that is fine because
    // the cache entry lives inside the parameter's storage and is dropped on its next update.
    prepared = std::make_shared<memory>(m);
    w.set_derived(wkey, prepared);
  }

  auto src_m = onednn::wrap(onednn::plain({M, K}, {K, 1}), x.data());
  auto dst_m = onednn::wrap(onednn::plain({M, N}, {N, 1}), y.data());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, *prepared}, {DNNL_ARG_DST, dst_m}};
  if (b) args.emplace(DNNL_ARG_BIAS, onednn::wrap(onednn::plain({1, N}, {N, 1}), b->data()));
  plan.prim.execute(onednn::stream(), args);
  onednn::stream().wait();
}



void CpuBackend::linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                                 Tensor* db) {
  const int64_t K = x.shape().last(), M = x.shape().rows(), N = w.dim(0);
  if (M == 0) return;
  if (dx) {  // dx[M, K] = dy[M, N] · W[N, K]
    auto& mm = onednn::strided_matmul(M, N, K, {N, 1}, {K, 1}, false);
    onednn::run_strided(mm, M, N, K, {N, 1}, {K, 1}, dy.data(), w.data(), dx->data());
  }
  if (dw) {  // dW[N, K] += dyᵀ[N, M] · x[M, K]
    auto& mm = onednn::strided_matmul(N, M, K, {1, N}, {K, 1}, true);
    onednn::run_strided(mm, N, M, K, {1, N}, {K, 1}, dy.data(), x.data(), dw->data());
  }
  if (db) {
    const float* G = dy.data();
    cpu::chunked_sum(M, N, db->data(), [&](float* acc, int64_t r0, int64_t r1) {
      const float* __restrict g = G;  // local copies, so that the loop vectorises
      float* __restrict a = acc;
      const int64_t width = N;
      for (int64_t r = r0; r < r1; ++r) {
#pragma omp simd
        for (int64_t n = 0; n < width; ++n) a[n] += g[r * width + n];
      }
    });
  }
}

}  // namespace mf
