// The ops of the paper mixers' own networks on the GPU (RaftMLP, MS-MLP, Strip-MLP, CAS-ViT, WaveMix,
// iFormer, AFFNet) and the simpler sequence ops (positions, embedding, RMSNorm, PatchTSMixer's gate;
// docs/cuda.md "The other families"), forward and backward: a base class of the
// cuda backend (cuda_backend.cpp), between its backward passes and its forward ops. Kernels in
// families/ (one file per family of ops), the transposed convolution's products through cuBLASLt.
//
// They have passed the op harness, the golden models and training on an H200 (docs/cuda.md) and are
// offered by default. METAFORMER_CUDA_FAMILY_OPS=0 withdraws them: supports() then says no and a
// model that needs them is refused at load time (the tests of that refusal use it).
#pragma once

#include <vector>

#include "ops/cuda/cuda_backward.h"

namespace mf {

namespace cuda {
// True for the ops this file adds (forward and backward).
bool is_family_op(OpKind op);
// Offered unless METAFORMER_CUDA_FAMILY_OPS=0 (see above).
bool family_ops_enabled();
}  // namespace cuda

class CudaFamilyOps : public CudaBackwardOps {
 public:
  bool supports_backward(OpKind op) const override;

  void permute(const Tensor& x, const std::vector<int>& perm, Tensor& y) override;
  void spatial_shift(const Tensor& x, int axis, int64_t group_width, const std::vector<int>& shifts,
                     Tensor& y) override;
  void resize_bicubic(const Tensor& x, bool adjoint, Tensor& y) override;
  void max_pool2d(const Tensor& x, const ConvGeometry& g, Tensor& y) override;
  void max_pool2d_backward(const Tensor& x, const ConvGeometry& g, const Tensor& dy, Tensor& dx) override;
  void sum_pool2d(const Tensor& x, int factor, float scale, Tensor& y) override;
  void upsample_nearest(const Tensor& x, int factor, float scale, Tensor& y) override;
  // The columns x · W (W [Ci, kh·kw·Co], made once per weight version) through cuBLASLt, then
  // col2im adds each column into the output pixels it covers, then the bias.
  void conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g, Tensor& y) override;
  // dx is conv2d(dy) with the same weight (the transposed convolution's adjoint); dw one product of x
  // with dy's columns; db a column sum.
  void conv_transpose2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy, Tensor* dx,
                                 Tensor* dw, Tensor* db) override;
  void strip_mix(const Tensor& x, const Tensor& w, const Tensor* b, int axis, Tensor& y) override;
  void strip_mix_backward(const Tensor& x, const Tensor& w, int axis, const Tensor& dy, Tensor* dx, Tensor* dw,
                          Tensor* db) override;
  void split_attention(const std::vector<Tensor>& branches, const Tensor& logits, Tensor& y) override;
  void split_attention_backward(const std::vector<Tensor>& branches, const Tensor& logits, const Tensor& dy,
                                std::vector<Tensor>& dbranches, Tensor& dlogits) override;
  void grn(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y) override;
  void grn_backward(const Tensor& x, const Tensor& gamma, const Tensor& dy, Tensor& dx, Tensor* dgamma,
                    Tensor* dbeta) override;
  void gate(const Tensor& x, const Tensor& g, bool sigmoid, Tensor& y) override;
  void gate_backward(const Tensor& x, const Tensor& g, bool sigmoid, const Tensor& dy, Tensor& dx, Tensor& dg) override;
  void batch_norm_stats(const Tensor& x, Tensor& mean, Tensor& var) override;
  void batch_norm(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& mean, const Tensor& var, float eps,
                  Tensor& y) override;
  void batch_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& var, float eps,
                           bool batch_stats, const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db) override;
  // Strip-MLP's and iFormer's position embeddings (and the sequence stems'): in place allowed.
  void add_positions(const Tensor& x, const Tensor& pos, Tensor& y) override;
  void add_positions_backward(const Tensor& dy, Tensor& dpos) override;
  // The sequence models' stem, norm and PatchTSMixer's gate. The embedding's gradient sorts the ids'
  // positions on the host (a counting sort of the batch's ids), then sums each row in order.
  void embedding(const Tensor& ids, const Tensor& table, Tensor& y) override;
  void embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable) override;
  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) override;
  void rms_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                         Tensor* dw) override;
  void softmax_gate(const Tensor& x, const Tensor& logits, Tensor& y) override;
  void softmax_gate_backward(const Tensor& x, const Tensor& logits, const Tensor& dy, Tensor& dx,
                             Tensor& dlogits) override;
  // Mamba's causal convolution, and attention with a causal mask: one thread per (sample, head,
  // query) row in double, recomputing P from the rows' statistics in the backward pass (no N×N
  // matrix anywhere). Not fast: the correct first version.
  void causal_conv1d(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) override;
  void causal_conv1d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                              Tensor* db) override;
  void causal_attention(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y) override;
  void causal_attention_backward(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                                 Tensor& dqkv) override;
  // Mamba's S6: one thread per (sequence, channel) walking the recurrence in double; the backward pass
  // recomputes the states chunk by chunk from checkpoints (families/scan.cu).
  void selective_scan(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc, int64_t b_offset,
                      const Tensor& d_skip, const Tensor& z, Tensor& y) override;
  void selective_scan_backward(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                               int64_t b_offset, const Tensor& d_skip, const Tensor& z, const Tensor& dy, int64_t chunk,
                               Tensor& du, Tensor& ddt_raw, Tensor& dbc, Tensor& dz, Tensor* da_log,
                               Tensor* dd_skip) override;
  // Hydra's bidirectional scan: the two directions walked per (sequence, channel) in double; the
  // backward pass runs each direction's adjoint chunk by chunk from checkpoints (families/scan.cu).
  void bidirectional_scan(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                          int64_t b_offset, const Tensor& dd, const Tensor& d_skip, Tensor& y) override;
  void bidirectional_scan_backward(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                                   int64_t b_offset, const Tensor& dd, const Tensor& d_skip, const Tensor& dy,
                                   int64_t chunk, Tensor& du, Tensor& ddt_raw, Tensor& dbc, Tensor& ddd, Tensor* da_log,
                                   Tensor* dd_skip) override;
  // PoNet's pooling: the global attention pooling one thread a sequence, the maxima one thread an
  // element, the backward pass as gathers (families/ponet.cu).
  void ponet_pool(const Tensor& p, int heads, int64_t segment, int local_kernel, Tensor& y) override;
  void ponet_pool_backward(const Tensor& p, int heads, int64_t segment, int local_kernel, const Tensor& dy,
                           Tensor& dp) override;
};

}  // namespace mf
