// RandFormer's token mixing on oneDNN: a fixed [N, N] matrix applied over the tokens of each sample.
#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/onednn.h"

namespace mf {

void CpuBackend::token_mix(const Tensor& r, const Tensor& x, Tensor& y) {
  const int64_t B = x.dim(0), N = x.dim(1), C = x.dim(2);
  // y[b] = R · x[b]: one [N, N] × [N, C] product per sample.
  auto& mm = onednn::cached<dnnl::matmul>(fmt::format("tokmix:{}:{}", N, C), [&] {
    return dnnl::matmul(dnnl::matmul::primitive_desc(
        dnnl::matmul::desc(onednn::plain({N, N}, {N, 1}), onednn::plain({N, C}, {C, 1}), onednn::plain({N, C}, {C, 1})),
        onednn::engine()));
  });
  for (int64_t b = 0; b < B; ++b) {
    auto src = onednn::wrap(onednn::plain({N, N}, {N, 1}), r.data());
    auto wei = onednn::wrap(onednn::plain({N, C}, {C, 1}), x.data() + b * N * C);
    auto dst = onednn::wrap(onednn::plain({N, C}, {C, 1}), y.data() + b * N * C);
    mm.execute(onednn::stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
  }
  onednn::stream().wait();
}


void CpuBackend::token_mix_backward(const Tensor& r, const Tensor& x, const Tensor& dy, Tensor* dx, Tensor* dr) {
  const int64_t B = x.dim(0), N = x.dim(1), C = x.dim(2);
  if (dx) {  // dx[b] = Rᵀ · dy[b]: R read through transposed strides
    auto& mm = onednn::cached<dnnl::matmul>(fmt::format("tokmixT:{}:{}", N, C), [&] {
      return dnnl::matmul(dnnl::matmul::primitive_desc(
          dnnl::matmul::desc(onednn::plain({N, N}, {1, N}), onednn::plain({N, C}, {C, 1}), onednn::plain({N, C}, {C, 1})),
          onednn::engine()));
    });
    for (int64_t b = 0; b < B; ++b)
      mm.execute(onednn::stream(), {{DNNL_ARG_SRC, onednn::wrap(onednn::plain({N, N}, {1, N}), r.data())},
                                    {DNNL_ARG_WEIGHTS, onednn::wrap(onednn::plain({N, C}, {C, 1}), dy.data() + b * N * C)},
                                    {DNNL_ARG_DST, onednn::wrap(onednn::plain({N, C}, {C, 1}), dx->data() + b * N * C)}});
    onednn::stream().wait();
  }
  if (dr) RefBackend::token_mix_backward(r, x, dy, nullptr, dr);  // RandFormer's matrix is frozen: rarely needed
}

}  // namespace mf
