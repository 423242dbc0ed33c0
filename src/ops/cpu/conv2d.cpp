// Dense convolution (stems, downsampling) on oneDNN with channels-last activations. Weights arrive
// in PyTorch's OIHW layout and are reordered once into the layout the primitive prefers (in bf16
// precision: converted to bf16 by that reorder, the input rounded into a scratch buffer).
#include <memory>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/onednn.h"

namespace mf {

namespace {
using dnnl::memory;
using tag = memory::format_tag;

struct ConvPlan {
  dnnl::convolution_forward prim;
  memory::desc weights_md;
};
}  // namespace

void CpuBackend::conv2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g, Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
  const int64_t Ho = y.dim(1), Wo = y.dim(2), Co = y.dim(3);
  const memory::dims src_dims{B, Ci, H, W}, dst_dims{B, Co, Ho, Wo}, w_dims{Co, Ci, g.kernel_h, g.kernel_w};
  const bool bf16 = precision_ == Precision::bf16;
  const auto type = onednn::operand_type(bf16);
  const std::string key = fmt::format("conv:{}x{}x{}x{}:{}:{}x{}:s{}x{}:p{}x{}:{}:{}", B, H, W, Ci, Co, g.kernel_h,
                                      g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, b != nullptr, bf16);
  auto& plan = onednn::cached<ConvPlan>(key, [&] {
    auto src = memory::desc(src_dims, type, tag::nhwc);
    auto dst = onednn::tagged(dst_dims, tag::nhwc);
    auto wei = memory::desc(w_dims, type, tag::any);
    const memory::dims strides{g.stride_h, g.stride_w}, pad{g.pad_h, g.pad_w};
    // With the right padding equal to the left one, oneDNN's floor division gives PyTorch's size.
    auto desc = b ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                    dnnl::algorithm::convolution_direct, src, wei,
                                                    onednn::tagged({Co}, tag::x), dst, strides, pad, pad)
                  : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                    dnnl::algorithm::convolution_direct, src, wei, dst, strides, pad,
                                                    pad);
    dnnl::convolution_forward::primitive_desc pd(desc, onednn::engine());
    return ConvPlan{dnnl::convolution_forward(pd), pd.weights_desc()};
  });

  const memory& prepared =
      onednn::prepared_weights(w, onednn::wrap(onednn::tagged(w_dims, tag::oihw), w.data()), plan.weights_md);
  auto src_m = bf16 ? memory(memory::desc(src_dims, type, tag::nhwc), onednn::engine(),
                             onednn::bf16_scratch(onednn::Scratch::conv_src, x.data(), x.numel()))
                    : onednn::wrap(onednn::tagged(src_dims, tag::nhwc), x.data());
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src_m},
                                       {DNNL_ARG_WEIGHTS, prepared},
                                       {DNNL_ARG_DST, onednn::wrap(onednn::tagged(dst_dims, tag::nhwc), y.data())}};
  if (b) args.emplace(DNNL_ARG_BIAS, onednn::wrap(onednn::tagged({Co}, tag::x), b->data()));
  plan.prim.execute(onednn::stream(), args);
  onednn::stream().wait();
}


namespace {
struct ConvBackwardPlan {
  dnnl::convolution_backward_data data;
  dnnl::convolution_backward_weights weights;
  memory::desc data_weights_md;     // layout of W that `data` wants
  memory::desc diff_weights_md;     // layout `weights` writes dW in
};
}  // namespace

// dx through oneDNN's backward-data primitive, dW and db through its backward-weights primitive;
// dW comes out in oneDNN's layout and is reordered to OIHW and added to the gradient.
void CpuBackend::conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy, Tensor* dx,
                                 Tensor* dw, Tensor* db) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
  const int64_t Ho = dy.dim(1), Wo = dy.dim(2), Co = dy.dim(3);
  const memory::dims src_dims{B, Ci, H, W}, dst_dims{B, Co, Ho, Wo}, w_dims{Co, Ci, g.kernel_h, g.kernel_w};
  const memory::dims strides{g.stride_h, g.stride_w}, pad{g.pad_h, g.pad_w};
  const std::string key = fmt::format("convbw:{}x{}x{}x{}:{}:{}x{}:s{}x{}:p{}x{}", B, H, W, Ci, Co, g.kernel_h,
                                      g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w);
  auto& plan = onednn::cached<ConvBackwardPlan>(key, [&] {
    auto src = onednn::tagged(src_dims, tag::nhwc);
    auto dst = onednn::tagged(dst_dims, tag::nhwc);
    auto wei = memory::desc(w_dims, memory::data_type::f32, tag::any);
    auto bias = onednn::tagged({Co}, tag::x);
    const auto alg = dnnl::algorithm::convolution_direct;
    dnnl::convolution_forward::primitive_desc hint(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, alg, src, wei, bias, dst, strides, pad, pad),
        onednn::engine());
    dnnl::convolution_backward_data::primitive_desc pd_data(
        dnnl::convolution_backward_data::desc(alg, src, wei, dst, strides, pad, pad), onednn::engine(), hint);
    dnnl::convolution_backward_weights::primitive_desc pd_weights(
        dnnl::convolution_backward_weights::desc(alg, src, wei, bias, dst, strides, pad, pad), onednn::engine(), hint);
    return ConvBackwardPlan{dnnl::convolution_backward_data(pd_data), dnnl::convolution_backward_weights(pd_weights),
                            pd_data.weights_desc(), pd_weights.diff_weights_desc()};
  });
  auto dst_m = onednn::wrap(onednn::tagged(dst_dims, tag::nhwc), dy.data());
  if (dx) {
    auto plain_w = onednn::wrap(onednn::tagged(w_dims, tag::oihw), w.data());
    memory wm = onednn::reorder_if_needed(plain_w, plan.data_weights_md);
    plan.data.execute(onednn::stream(), {{DNNL_ARG_DIFF_DST, dst_m},
                                         {DNNL_ARG_WEIGHTS, wm},
                                         {DNNL_ARG_DIFF_SRC, onednn::wrap(onednn::tagged(src_dims, tag::nhwc), dx->data())}});
    onednn::stream().wait();
  }
  if (dw || db) {
    memory dwm(plan.diff_weights_md, onednn::engine());
    Tensor dbias = Tensor::empty({Co});
    plan.weights.execute(onednn::stream(),
                         {{DNNL_ARG_SRC, onednn::wrap(onednn::tagged(src_dims, tag::nhwc), x.data())},
                          {DNNL_ARG_DIFF_DST, dst_m},
                          {DNNL_ARG_DIFF_WEIGHTS, dwm},
                          {DNNL_ARG_DIFF_BIAS, onednn::wrap(onednn::tagged({Co}, tag::x), dbias.data())}});
    onednn::stream().wait();
    if (dw) {
      Tensor plain = Tensor::empty(w.shape());
      auto out = onednn::wrap(onednn::tagged(w_dims, tag::oihw), plain.data());
      dnnl::reorder(dwm, out).execute(onednn::stream(), dwm, out);
      onednn::stream().wait();
      float* d = dw->data();
      const float* p = plain.data();
      for (int64_t i = 0; i < dw->numel(); ++i) d[i] += p[i];
    }
    if (db)
      for (int64_t i = 0; i < Co; ++i) db->data()[i] += dbias.data()[i];
  }
}

}  // namespace mf
