// linear on oneDNN's matmul. The weight [N, K] is handed to oneDNN as a K×N matrix with strides
// {1, K}; the primitive is created with a free ("any") weight layout, and the weight is reordered
// into that layout once and cached on the tensor (invalidated when the parameter changes).
// In bf16 precision the cached weight is bf16 and the activation is rounded to bf16 into a scratch
// buffer before the product; oneDNN accumulates in fp32 and writes fp32.
#include <memory>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/onednn.h"
#include "ops/cpu/reduce.h"

namespace mf {

namespace {
using dnnl::memory;

struct MatmulPlan {
  dnnl::matmul prim;
  memory::desc weights_md;
};

// StarReLU's post-ops are relu, square, then s·y + b with its two scalars baked into the primitive,
// so they are part of the cache key.
dnnl::post_ops post_ops_for(const Activation& act) {
  using alg = dnnl::algorithm;
  dnnl::post_ops po;
  switch (act.kind) {
    case ActKind::GELU: po.append_eltwise(1.f, alg::eltwise_gelu_erf, 0.f, 0.f); break;
    case ActKind::ReLU: po.append_eltwise(1.f, alg::eltwise_relu, 0.f, 0.f); break;
    case ActKind::SiLU: po.append_eltwise(1.f, alg::eltwise_swish, 1.f, 0.f); break;
    case ActKind::SquaredReLU:
    case ActKind::StarReLU:
      po.append_eltwise(1.f, alg::eltwise_relu, 0.f, 0.f);
      po.append_eltwise(1.f, alg::eltwise_square, 0.f, 0.f);
      if (act.kind == ActKind::StarReLU) po.append_eltwise(1.f, alg::eltwise_linear, act.scale, act.bias);
      break;
    default: break;
  }
  return po;
}
}  // namespace

void CpuBackend::linear(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) {
  run_linear(x, w, b, nullptr, y);
}

void CpuBackend::linear_act(const Tensor& x, const Tensor& w, const Tensor* b, const Activation& act, Tensor& y) {
  if (!cpu::gemm_fuses(act.kind)) {
    run_linear(x, w, b, nullptr, y);
    activation(y, act, y);
    return;
  }
  run_linear(x, w, b, &act, y);
}

void CpuBackend::run_linear(const Tensor& x, const Tensor& w, const Tensor* b, const Activation* act, Tensor& y) {
  const int64_t K = x.shape().last(), M = x.shape().rows();
  if (M == 0) return;
  const bool bf16 = precision_ == Precision::bf16;
  const void* src = bf16 ? onednn::bf16_scratch(onednn::Scratch::linear_src, x.data(), M * K) : x.data();
  cpu::gemm_rows({src, bf16, M, w, b, act, y.data(), false});
}

namespace cpu {

bool gemm_fuses(ActKind k) {
  switch (k) {
    case ActKind::GELU:
    case ActKind::ReLU:
    case ActKind::SiLU:
    case ActKind::SquaredReLU:
    case ActKind::StarReLU:
      return true;
    default:
      return false;
  }
}

void gemm_rows(const GemmRows& g) {
  const int64_t M = g.rows, K = g.w.dim(1), N = g.w.dim(0);
  if (M == 0) return;
  const auto src_type = onednn::operand_type(g.bf16);
  const auto dst_type = onednn::operand_type(g.dst_bf16);
  std::string key = fmt::format("mm:{}:{}:{}:{}:{}:{}", M, K, N, g.b != nullptr, g.bf16, g.dst_bf16);
  if (g.act) key += fmt::format(":act{}:{:a}:{:a}", static_cast<int>(g.act->kind), g.act->scale, g.act->bias);
  auto& plan = onednn::cached<MatmulPlan>(key, [&] {
    dnnl::primitive_attr attr;
    if (g.act) attr.set_post_ops(post_ops_for(*g.act));
    auto src = onednn::plain({M, K}, {K, 1}, src_type);
    auto wei_any = memory::desc({K, N}, src_type, memory::format_tag::any);
    auto dst = onednn::plain({M, N}, {N, 1}, dst_type);
    dnnl::matmul::primitive_desc pd =
        g.b ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei_any, onednn::plain({1, N}, {N, 1}), dst), attr,
                                           onednn::engine())
            : dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei_any, dst), attr, onednn::engine());
    return MatmulPlan{dnnl::matmul(pd), pd.weights_desc()};
  });

  // The weight in the primitive's layout (one cached copy per layout, shared across row counts).
  const memory& prepared =
      onednn::prepared_weights(g.w, onednn::wrap(onednn::plain({K, N}, {1, K}), g.w.data()), plan.weights_md);

  memory src_m(onednn::plain({M, K}, {K, 1}, src_type), onednn::engine(), const_cast<void*>(g.src));
  memory dst_m(onednn::plain({M, N}, {N, 1}, dst_type), onednn::engine(), g.dst);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, prepared}, {DNNL_ARG_DST, dst_m}};
  if (g.b) args.emplace(DNNL_ARG_BIAS, onednn::wrap(onednn::plain({1, N}, {N, 1}), g.b->data()));
  plan.prim.execute(onednn::stream(), args);
  onednn::stream().wait();
}

}  // namespace cpu

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
