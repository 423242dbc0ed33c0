// The backward passes of the "cuda" backend (issue 13; docs/cuda.md "Backward passes"): a base class
// of the backend (cuda_backend.cpp), so that they live apart from its forward ops. The matrix
// products (linear, the dense convolution's im2col GEMMs) are cuBLASLt's with fp32 compute (TF32
// off); the rest are the kernels of backward_kernels.cu and conv_backward.cu. On the bf16 backend
// (bf16 activations, train --dtype bf16) the products take bf16 operands, and an op without bf16
// kernels runs its fp32 ones on widened copies (cuda_backward.cpp, Widened). Semantics as the reference backend's:
// input gradients overwritten, parameter gradients accumulated. A gradient the caller passes in (a
// parameter's, or channel_slice's dx) may live on the host: it is copied up, updated and copied back.
#pragma once

#include "ops/backend.h"
#include "ops/cuda/kernels/kernels.h"

namespace mf {

namespace cuda {
// t's fp32 elements on the GPU: t itself, its cached upload (a host tensor) or its cached fp32 copy
// (a bf16 tensor). Defined in cuda_backend.cpp, next to the forward ops' uploads.
const float* device_f32(const Tensor& t);
// t's elements as bf16 on the GPU: t itself (a bf16 activation) or its cached bf16 copy (a parameter:
// remade when its version changes, i.e. once after each optimizer step).
const kernels::bf16* device_bf16(const Tensor& t);
// A Linear's weight [N, K(, 1, 1)] as [N, K] and its bias with a layer scale ls [N] folded in (each
// output row times ls; b undefined without a bias), on the GPU in fp32, cached with w until w, ls or
// b changes (cuda_backend.cpp): what inference's residual GEMMs and training's
// linear_scaled_residual and its backward read.
struct LayerScaled {
  Tensor w, b;
  std::string versions;  // ls's and b's version keys when made
};
const LayerScaled& layer_scaled(const Tensor& w, const Tensor* b, const Tensor& ls);
}  // namespace cuda

class CudaBackwardOps : public Backend {
 public:
  // The ops whose backward runs on the GPU (in either precision); the others throw "not supported".
  bool supports_backward(OpKind op) const override;

  void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                       Tensor* db) override;
  // Where linear_act_train fused the GELU (gelu_epilogue_in_training): dpre = (dy · W) ⊙ GELU'(pre)
  // as one GEMM with cuBLASLt's DGELU epilogue; dw and db as linear_backward's.
  void linear_act_backward(const Tensor& h, const Tensor& pre, const Activation& act, const Tensor& w,
                           const Tensor& dy, Tensor& dpre, Tensor* dw, Tensor* db, Tensor* dscale,
                           Tensor* dbias) override;
  // Through the folded weight ls ⊙ w (cuda::layer_scaled), as the forward's GEMM ran it: see cuda_backward.cpp.
  void linear_act_scaled_backward(const Tensor& h, const Tensor& pre, const Activation& act, const Tensor& w,
                                  const Tensor* b, const Tensor& ls, const Tensor& dy, Tensor& dpre, Tensor* dw,
                                  Tensor* db, Tensor* dls, Tensor* dscale, Tensor* dbias) override;
  // Through the norm's weight with the layer scale folded in: see cuda_backward.cpp.
  void pool_branch_backward(const Tensor& x, const BranchNorm& norm, int kernel, const Tensor& ls, const Tensor& dy,
                            Tensor& dx, Tensor* dw, Tensor* db, Tensor* dls) override;
  void conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy, Tensor* dx,
                       Tensor* dw, Tensor* db) override;
  void depthwise_conv2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy,
                                 Tensor* dx, Tensor* dw, Tensor* db) override;
  // dt's conv channels written by the flipped forward kernel where they lie, and dw from t's slice
  // where it lies, where the kernels apply (stride 1, square 3×3 to 7×7): see cuda_backward.cpp.
  void gated_conv_backward(const Tensor& t, const Tensor& c, int64_t hidden, int64_t offset, const Activation& act,
                           const Tensor& w, const ConvGeometry& g, const Tensor& dz, Tensor& dt, Tensor* dw,
                           Tensor* db) override;
  // Without act(pre) in memory where the tiled dW kernel applies: see cuda_backward.cpp.
  void act_depthwise_conv2d_backward(const Tensor& pre, const Activation& act, const Tensor& w, const ConvGeometry& g,
                                     const Tensor& dy, Tensor& dpre, Tensor* dw, Tensor* db, Tensor* dscale,
                                     Tensor* dbias) override;
  void pool_minus_input_backward(const Tensor& dy, int kernel, Tensor& dx) override;
  void layer_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw,
                           Tensor* db) override;
  void group_norm1_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw,
                            Tensor* db) override;
  void layer_norm_backward_add(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, const Tensor& residual,
                               const Tensor* res_scale, Tensor& dx, Tensor* dw, Tensor* db,
                               Tensor* d_res_scale) override;
  void group_norm1_backward_add(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, const Tensor& residual,
                                const Tensor* res_scale, Tensor& dx, Tensor* dw, Tensor* db,
                                Tensor* d_res_scale) override;
  void activation_backward(const Tensor& x, const Activation& act, const Tensor& dy, Tensor& dx,
                           Tensor* dscale, Tensor* dbias) override;
  void scaled_residual_backward(const Tensor& x, const Tensor* res_scale, const Tensor& branch,
                                const Tensor* layer_scale, const Tensor& dy, Tensor& dx, Tensor& dbranch,
                                Tensor* d_res_scale, Tensor* d_layer_scale) override;
  void global_avg_pool_backward(const Tensor& dy, Tensor& dx) override;
  // P and dS materialised (N×N per sample and head, in double), the batch cut into chunks of at most
  // 1 GiB of them: the straightforward version, before a flash-style backward.
  // The mma kernel without its first pass, where it runs (bf16, head size 32): see cuda_backward.cpp.
  void attention_backward_stats(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                                const Tensor& y, const Tensor& stats, Tensor& dqkv) override;
  void attention_backward(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                          Tensor& dqkv) override;
  void channel_slice_backward(const Tensor& dy, int64_t offset, Tensor& dx) override;
  // RandFormer's and the token MLPs' y[b] = R · x[b] (+ bias): dx[b] = Rᵀ · dy[b] as one strided
  // batch of cuBLASLt products; dR += Σ_b dy[b] · x[b]ᵀ and dbias += Σ_b dy[b] · 1 as one product per
  // sample, accumulated in order (deterministic, no atomics).
  void token_mix_backward(const Tensor& r, const Tensor& x, const Tensor& dy, Tensor* dx, Tensor* dr,
                          Tensor* dbias) override;
  void channel_affine_backward(const Tensor& x, const Tensor& alpha, const Tensor& dy, Tensor& dx, Tensor* dalpha,
                               Tensor* dbeta) override;
  // GFNet's and AFF's filter: da = dy ⊙ conj(b) by the forward kernel, db by column sums in double.
  void complex_mul_backward(const Tensor& a, const Tensor& b, const Tensor& dy, Tensor* da, Tensor* db) override;
  void glu_backward(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset,
                    const Activation& act, const Tensor& dy, Tensor& dt, Tensor* dc) override;
  // The loss and its gradient (a forward op, for training only; fp32).
  void cross_entropy(const Tensor& logits, const Tensor& target, float grad_scale, Tensor& loss,
                     Tensor& dlogits) override;

  // The optimizer's ops (cuda_optimizer.cpp): multi-tensor kernels, one launch per list.
  void adamw_step(const std::vector<AdamWTensors>& tensors, const AdamWScalars& s) override;
  double sum_of_squares(const std::vector<const Tensor*>& tensors) override;
  void scale_(const std::vector<Tensor*>& tensors, double factor) override;
  void ema_update(const std::vector<Tensor*>& avg, const std::vector<const Tensor*>& w, const std::vector<bool>& copy,
                  float decay, float one_minus_decay) override;
  // NCCL (collectives.cpp): one communicator per process, made on first use; true when built with it.
  bool supports_allreduce() const override;
  void allreduce_mean(const std::vector<Tensor*>& tensors, const RankGroup& group) override;
  void allreduce_mean_start(Tensor& t, const RankGroup& group) override;
  void allreduce_wait() override;

 private:
  void norm_backward_on_gpu(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, const Tensor* residual,
                            const Tensor* res_scale, Tensor& dx, Tensor* dw, Tensor* db, Tensor* d_res_scale,
                            bool group);
};

}  // namespace mf
