// CUDA kernels of the ops that only the paper mixers' own networks (RaftMLP, MS-MLP, Strip-MLP,
// CAS-ViT, WaveMix, iFormer, AFFNet) and the sequence models use (docs/cuda.md "The other families"),
// forward and backward beside each other, one file per family of ops:
//   layout.cu      permute, spatial_shift, resize_bicubic (and its adjoint)
//   pool2d.cu      max_pool2d (+ backward), sum_pool2d, upsample_nearest, conv_transpose2d's helpers
//   strip.cu       strip_mix, split_attention, grn (+ backward)
//   gate_bn.cu     gate, batch_norm_stats, batch_norm (+ backward)
//   sequence.cu    add_positions, embedding, rms_norm, softmax_gate, causal_conv1d, causal_attention
//                  (+ backward)
//   scan.cu        selective_scan, bidirectional_scan (+ backward)
//   ponet.cu       ponet_pool (+ backward)
// (launch.cuh: the helpers every one of those files uses.)
// The per-element arithmetic is family_math.h's and sequence_math.h's, which the host compiler also
// builds for tests/test_family_math.cpp. Written to be obviously right before fast, like the backward
// kernels (../backward_kernels.h): one thread per output element (gathers, never scatters), sums of
// more than a few terms in double, and every reduction in a fixed order without atomics
// (../backward_common.cuh), so that training stays deterministic. The semantics are the reference
// backend's (src/ops/ref/*.cpp), including which gradients are overwritten and which accumulated (+=).
//
// Activations (x, y, dy, dx) are float, or bf16 on the bf16 backend (T); parameters and their
// gradients are float. Raw device pointers and one stream; compiled by nvcc as C++17. Each function
// returns cudaGetLastError() after its launches, or cudaErrorInvalidValue for arguments it does not
// handle (said per function). Functions that reduce take a device workspace `work` of the number
// of doubles their *_work function gives.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "ops/cuda/families/family_math.h"
#include "ops/cuda/families/sequence_math.h"
#include "ops/cuda/kernels/kernels.h"

namespace mf::cuda::families {

using kernels::bf16;

// ---- layout.cu ------------------------------------------------------------------------------------
// y = x.permute(perm) made contiguous; rank ≤ 6 (cudaErrorInvalidValue otherwise). dims: x's shape.
template <class T>
cudaError_t permute(const T* x, T* y, int rank, const int64_t* dims, const int* perm, cudaStream_t s);

// MS-MLP's shift, x and y [B, H, W, C]: channel c of group g = c / group_width rolled by shifts[g]
// along axis 1 (H) or 2 (W), as torch.roll. At most kMaxShiftGroups groups.
template <class T>
cudaError_t spatial_shift(const T* x, T* y, int64_t B, int64_t H, int64_t W, int64_t C, int axis, int64_t group_width,
                          const int* shifts, int groups, cudaStream_t s);

// torch's bicubic interpolation along both axes, through the tables of family_math.h's BicubicAxis.
// Forward: x [B, ay.in, ax.in, C] -> y [B, ay.out, ax.out, C]. Adjoint: x [B, ay.out, ax.out, C] ->
// y [B, ay.in, ax.in, C]. Sums in double.
template <class T>
cudaError_t resize_bicubic(const T* x, T* y, int64_t B, int64_t C, const BicubicAxis& ay, const BicubicAxis& ax,
                           bool adjoint, cudaStream_t s);

// ---- pool2d.cu ------------------------------------------------------------------------------------
// nn.MaxPool2d, x [B, H, W, C] -> y [B, Ho, Wo, C]: the first maximum in row-major window order over
// the pixels inside the map (the padding never wins).
template <class T>
cudaError_t max_pool2d(const T* x, T* y, int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, Window g,
                       cudaStream_t s);
// dx (overwritten) = Σ of dy over the windows whose maximum is that pixel (recomputed from x).
template <class T>
cudaError_t max_pool2d_backward(const T* x, const T* dy, T* dx, int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho,
                                int64_t Wo, Window g, cudaStream_t s);
// x [B, H, W, C] -> y [B, H/f, W/f, C] = scale · the sum of each f×f window.
template <class T>
cudaError_t sum_pool2d(const T* x, T* y, int64_t B, int64_t H, int64_t W, int64_t C, int f, float scale,
                       cudaStream_t s);
// x [B, h, w, C] -> y [B, h·f, w·f, C] = scale · x[i / f, j / f].
template <class T>
cudaError_t upsample_nearest(const T* x, T* y, int64_t B, int64_t h, int64_t w, int64_t C, int f, float scale,
                             cudaStream_t s);
// nn.ConvTranspose2d's weight [Ci, Co, kh, kw] as the GEMM operand [kh·kw·Co, Ci] (row (ky, kx, co)
// holds the Ci weights that input channels give output channel co at tap (ky, kx)): the column order
// of col2im_nhwc.
cudaError_t conv_transpose_weight_to_gemm(const float* w, float* wg, int64_t Ci, int64_t Co, int kh, int kw,
                                          cudaStream_t s);
cudaError_t conv_transpose_weight_to_gemm(const float* w, bf16* wg, int64_t Ci, int64_t Co, int kh, int kw,
                                          cudaStream_t s);

// ---- strip.cu -------------------------------------------------------------------------------------
// Strip-MLP's strip projection (Backend::strip_mix), x and y [B, H, W, C], w [G·L, L, 1, 3], b [G·L]
// or null; axis 2 mixes rows (L = W), axis 1 columns (L = H). Sums in double.
template <class T>
cudaError_t strip_mix(const T* x, const float* w, const float* b, T* y, int64_t B, int64_t H, int64_t W, int64_t C,
                      int axis, int64_t G, cudaStream_t s);
// dx overwritten (may be null); dw, db accumulated (either may be null).
int64_t strip_mix_backward_work(int64_t B, int64_t H, int64_t W, int64_t C, int axis, int64_t G);
template <class T>
cudaError_t strip_mix_backward(const T* x, const float* w, const T* dy, T* dx, float* dw, float* db, int64_t B,
                               int64_t H, int64_t W, int64_t C, int axis, int64_t G, double* work, cudaStream_t s);

// Strip-MLP's reweighting of K ≤ kMaxBranches (family_math.h) branches [B, per, C] by softmax over logits [B, C·K]
// (logit k of channel c at c·K + k).
template <class T>
cudaError_t split_attention(Branches<T> branches, const float* logits, T* y, int64_t B, int64_t per, int64_t C,
                            cudaStream_t s);
int64_t split_attention_backward_work(int64_t B, int64_t per, int64_t C, int K);
// dbranches and dlogits overwritten.
template <class T>
cudaError_t split_attention_backward(Branches<T> branches, const float* logits, const T* dy, BranchGrads<T> dbranches,
                                     float* dlogits, int64_t B, int64_t per, int64_t C, double* work, cudaStream_t s);

// ConvNeXt-V2's GRN over x [B, N, C] (N = H·W): g = ‖x[b, :, c]‖₂, y = γ·x·g / (mean_c g + 1e-6) + β + x.
int64_t grn_work(int64_t B, int64_t N, int64_t C);
template <class T>
cudaError_t grn(const T* x, const float* gamma, const float* beta, T* y, int64_t B, int64_t N, int64_t C, double* work,
                cudaStream_t s);
// dx overwritten; dgamma, dbeta accumulated (either may be null).
int64_t grn_backward_work(int64_t B, int64_t N, int64_t C);
template <class T>
cudaError_t grn_backward(const T* x, const float* gamma, const T* dy, T* dx, float* dgamma, float* dbeta, int64_t B,
                         int64_t N, int64_t C, double* work, cudaStream_t s);

// ---- gate_bn.cu -----------------------------------------------------------------------------------
// CAS-ViT's y = x ⊙ f(g) (f sigmoid or the identity) over x [B, per, C] (per positions a sample): g
// full (x's shape), per position ([B, per, 1]) or per sample and channel ([B, C]).
// g comes out of a layer in all three forms, so it has the activations' type T.
template <class T>
cudaError_t gate(const T* x, const T* g, T* y, int64_t B, int64_t per, int64_t C, GateKind kind, bool sigmoid,
                 cudaStream_t s);
// dx and dg (g's shape, summed over what it is broadcast to, in double) overwritten.
int64_t gate_backward_work(int64_t B, int64_t per, int64_t C, GateKind kind);
template <class T>
cudaError_t gate_backward(const T* x, const T* g, const T* dy, T* dx, T* dg, int64_t B, int64_t per, int64_t C,
                          GateKind kind, bool sigmoid, double* work, cudaStream_t s);

// BatchNorm over x [rows, C] (channel = last dimension): mean and biased variance [C] in double, two
// passes (mean, then centred squares), stored as float.
int64_t batch_norm_stats_work(int64_t rows, int64_t C);
template <class T>
cudaError_t batch_norm_stats(const T* x, float* mean, float* var, int64_t rows, int64_t C, double* work,
                             cudaStream_t s);
// y = (x − mean) / sqrt(var + eps) · w + b (b may be null), in double per element; in place allowed.
template <class T>
cudaError_t batch_norm(const T* x, const float* w, const float* b, const float* mean, const float* var, float eps, T* y,
                       int64_t rows, int64_t C, cudaStream_t s);
// dx overwritten; dw, db accumulated (either may be null). batch_stats: the statistics were x's own
// (training mode), so dx includes their dependence on x.
int64_t batch_norm_backward_work(int64_t rows, int64_t C);
template <class T>
cudaError_t batch_norm_backward(const T* x, const float* w, const float* mean, const float* var, float eps,
                                bool batch_stats, const T* dy, T* dx, float* dw, float* db, int64_t rows, int64_t C,
                                double* work, cudaStream_t s);

// ---- sequence.cu ------------------------------------------------------------------------------------
// y [B, N, D] = x + pos[:N] (pos [T ≥ N, D]); in place allowed.
template <class T>
cudaError_t add_positions(const T* x, const float* pos, T* y, int64_t B, int64_t N, int64_t D, cudaStream_t s);
// dpos[:N] += Σ_b dy[b] (the input's gradient is dy itself).
int64_t add_positions_backward_work(int64_t B, int64_t N, int64_t D);
template <class T>
cudaError_t add_positions_backward(const T* dy, float* dpos, int64_t B, int64_t N, int64_t D, double* work,
                                   cudaStream_t s);

// table [V, D], ids [n] (exact integers in float) -> y [n, D].
template <class T>
cudaError_t embedding(const float* ids, const float* table, T* y, int64_t n, int64_t D, cudaStream_t s);
// dtable[v] += Σ of dy over the positions of id v (order, begin: host_tables.h's TokenRows, on the
// device), in increasing position order.
template <class T>
cudaError_t embedding_backward(const T* dy, const int* order, const int* begin, float* dtable, int64_t V, int64_t D,
                               cudaStream_t s);
// RMSNorm over rows of C: y = x · w / √(mean(x²) + eps); in place allowed. Workspace: rows · 2
// doubles (the rows' statistics) and the group sums'.
int64_t rms_norm_work(int64_t rows, int64_t C);
template <class T>
cudaError_t rms_norm(const T* x, const float* w, float eps, T* y, int64_t rows, int64_t C, double* work,
                     cudaStream_t s);
// dx overwritten, dw accumulated (may be null).
template <class T>
cudaError_t rms_norm_backward(const T* x, const float* w, float eps, const T* dy, T* dx, float* dw, int64_t rows,
                              int64_t C, double* work, cudaStream_t s);
// PatchTSMixer's gate over [A, N, I]: y = x ⊙ softmax over N of the logits; dx, dlogits overwritten.
template <class T>
cudaError_t softmax_gate(const T* x, const T* logits, T* y, int64_t A, int64_t N, int64_t I, cudaStream_t s);
template <class T>
cudaError_t softmax_gate_backward(const T* x, const T* logits, const T* dy, T* dx, T* dlogits, int64_t A, int64_t N,
                                  int64_t I, cudaStream_t s);

// Mamba's causal depthwise convolution, x, y [B, L, C], w [C, 1, K], b [C] or null.
template <class T>
cudaError_t causal_conv1d(const T* x, const float* w, const float* b, T* y, int64_t B, int64_t L, int64_t C, int64_t K,
                          cudaStream_t s);
// dx overwritten (may be null); dw, db accumulated (either may be null).
int64_t causal_conv1d_backward_work(int64_t B, int64_t L, int64_t C, int64_t K);
template <class T>
cudaError_t causal_conv1d_backward(const T* x, const float* w, const T* dy, T* dx, float* dw, float* db, int64_t B,
                                   int64_t L, int64_t C, int64_t K, double* work, cudaStream_t s);
// Attention in which token i sees tokens j ≤ i: one thread per (sample, head, query) row, sums in
// double (head_dim ≤ math::kMaxHeadDim; cudaErrorInvalidValue otherwise).
template <class T>
cudaError_t causal_attention(const T* qkv, T* y, int64_t B, int64_t N, int heads, int head_dim, float scale,
                             cudaStream_t s);
// dqkv overwritten: the rows' statistics (max, normaliser, Σ P·dP) into `work`, then dq by query rows
// and dk, dv by key rows.
int64_t causal_attention_backward_work(int64_t B, int64_t N, int heads);
template <class T>
cudaError_t causal_attention_backward(const T* qkv, const T* dy, T* dqkv, int64_t B, int64_t N, int heads, int head_dim,
                                      float scale, double* work, cudaStream_t s);

// ---- scan.cu --------------------------------------------------------------------------------------
// Mamba's S6 with its skip and gate (Backend::selective_scan): one thread per (sequence, channel), the
// state in double (N ≤ math::kMaxState; cudaErrorInvalidValue otherwise).
template <class T>
cudaError_t selective_scan(const T* u, const T* dt_raw, const float* a_log, const T* bc, int64_t b_offset,
                           const float* d_skip, const T* z, T* y, int64_t B, int64_t L, int64_t D, int64_t N, int64_t W,
                           cudaStream_t s);
// du, ddt_raw, dz overwritten; dbc overwritten (zero outside B and C); da_log, dd_skip accumulated
// (either may be null). The states are recomputed from checkpoints every min(chunk, kMaxScanChunk)
// steps; B's and C's gradients are added over the channels in order, chunk by chunk.
int64_t selective_scan_backward_work(int64_t B, int64_t L, int64_t D, int64_t N, int64_t chunk);
template <class T>
cudaError_t selective_scan_backward(const T* u, const T* dt_raw, const float* a_log, const T* bc, int64_t b_offset,
                                    const float* d_skip, const T* z, const T* dy, int64_t chunk, T* du, T* ddt_raw,
                                    T* dbc, T* dz, float* da_log, float* dd_skip, int64_t B, int64_t L, int64_t D,
                                    int64_t N, int64_t W, double* work, cudaStream_t s);

// Hydra's bidirectional scan (Backend::bidirectional_scan), dt_raw [B, L, 2D], dd [B, L, H], d_skip [H].
// Workspace: a double per element (the backward scan's terms).
int64_t bidirectional_scan_work(int64_t B, int64_t L, int64_t D);
template <class T>
cudaError_t bidirectional_scan(const T* u, const T* dt_raw, const float* a_log, const T* bc, int64_t b_offset,
                               const T* dd, const float* d_skip, T* y, int64_t B, int64_t L, int64_t D, int64_t N,
                               int64_t W, int64_t H, double* work, cudaStream_t s);
// du, ddt_raw, ddd overwritten; dbc overwritten (zero outside B_f .. C_b); da_log, dd_skip accumulated.
int64_t bidirectional_scan_backward_work(int64_t B, int64_t L, int64_t D, int64_t N, int64_t chunk);
template <class T>
cudaError_t bidirectional_scan_backward(const T* u, const T* dt_raw, const float* a_log, const T* bc, int64_t b_offset,
                                        const T* dd, const float* d_skip, const T* dy, int64_t chunk, T* du, T* ddt_raw,
                                        T* dbc, T* ddd, float* da_log, float* dd_skip, int64_t B, int64_t L, int64_t D,
                                        int64_t N, int64_t W, int64_t H, double* work, cudaStream_t s);

// ---- ponet.cu -------------------------------------------------------------------------------------
// PoNet's pooling, p [B, L, 6C] -> y [B, L, C] (Backend::ponet_pool); dp overwritten. Workspace: B
// sequences' global statistics (math::Ponet::work_per_sequence doubles each).
int64_t ponet_pool_work(int64_t B, int64_t L, int64_t C, int heads);
template <class T>
cudaError_t ponet_pool(const T* p, T* y, int64_t B, int64_t L, int64_t C, int heads, int64_t segment, int local,
                       double* work, cudaStream_t s);
template <class T>
cudaError_t ponet_pool_backward(const T* p, const T* dy, T* dp, int64_t B, int64_t L, int64_t C, int heads,
                                int64_t segment, int local, double* work, cudaStream_t s);

}  // namespace mf::cuda::families
