// linear on oneDNN's matmul. The weight [N, K] is handed to oneDNN as a K×N matrix with strides
// {1, K}; the primitive is created with a free ("any") weight layout, and the weight is reordered
// into that layout once and cached on the tensor (invalidated when the parameter changes).
#include <memory>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/onednn.h"

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

}  // namespace mf
