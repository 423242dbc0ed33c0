// The MetaFormer MLP, fc2(act(fc1(x))), in blocks of rows. Unfused, the hidden activations (4× the
// model width) are written to memory by fc1, read and written by the activation, and read by fc2:
// at batch 8 the largest stage's hidden tensor is ~25 MB, far beyond cache. Here each block of rows
// goes through fc1 (activation fused as a oneDNN post-op) into a scratch buffer sized for the cache,
// and straight on through fc2. In bf16 precision fc1 writes that buffer in bf16, which fc2 reads
// as its operand: no separate rounding pass. As the block's second half (mlp_branch) the norm is
// applied to each block of rows on its way into fc1, and the residual to each block of fc2's output
// on its way out: neither the normalised input nor the bare MLP output reaches memory.
#include <vector>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/gemm.h"
#include "ops/cpu/norm_affine.h"
#include "ops/cpu/onednn.h"

namespace mf {

namespace {
bool fusable_kind(ActKind k) { return k == ActKind::Identity || cpu::gemm_fuses(k); }

// Rows per block: a target of a hidden block near kHiddenBytes (at least 64 rows), then blocks of
// equal size (a multiple of 16 rows), and up to 1.5× the target one block: a short tail block would
// be a GEMM of a few rows that streams the whole weight for them (batch 1's stage 2 of
// poolformer_s12, 196 rows, was 192 + 4). Measured on the 2-core machine: blocks of 0.5-2 MB and one
// whole-tensor block are within noise of each other; the blocks keep the working set bounded
// whatever the batch.
constexpr int64_t kHiddenBytes = 1024 * 1024;
int64_t block_rows(int64_t rows, int64_t hidden) {
  const int64_t target = std::max<int64_t>(64, (kHiddenBytes / (hidden * 4)) / 16 * 16);
  if (rows <= target + target / 2) return rows;
  const int64_t blocks = (rows + target - 1) / target;
  return ((rows + blocks - 1) / blocks + 15) / 16 * 16;
}
}  // namespace

void CpuBackend::mlp(const Tensor& x, const Tensor& w1, const Tensor* b1, const Activation& act, const Tensor& w2,
                     const Tensor* b2, Tensor& y) {
  if (!fusable_kind(act.kind)) {
    Backend::mlp(x, w1, b1, act, w2, b2, y);
    return;
  }
  run_mlp(x, nullptr, w1, b1, act, w2, b2, nullptr, y);
}

void CpuBackend::mlp_branch(const Tensor& x, const BranchNorm& norm, const Tensor& w1, const Tensor* b1,
                            const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales& scales,
                            Tensor& y) {
  if (!fusable_kind(act.kind)) {
    Backend::mlp_branch(x, norm, w1, b1, act, w2, b2, scales, y);
    return;
  }
  run_mlp(x, &norm, w1, b1, act, w2, b2, &scales, y);
}

void CpuBackend::run_mlp(const Tensor& x, const BranchNorm* norm, const Tensor& w1, const Tensor* b1,
                         const Activation& act, const Tensor& w2, const Tensor* b2, const BranchScales* scales,
                         Tensor& y) {
  const int64_t M = x.shape().rows(), K = x.shape().last(), H = w1.dim(0), N = w2.dim(0);
  const bool bf16 = precision_ == Precision::bf16;
  const Activation* fused = act.kind == ActKind::Identity ? nullptr : &act;
  const int64_t step = block_rows(M, H);
  void* hidden = onednn::scratch(onednn::Scratch::mlp_hidden, step * H * (bf16 ? 2 : 4));
  float* normed = norm ? static_cast<float*>(onednn::scratch(onednn::Scratch::mlp_normed, step * K * 4)) : nullptr;
  // GroupNorm's statistics span a whole sample: computed first, as a per-sample affine map.
  const bool group = norm && norm->type == BranchNorm::Type::group_norm1;
  const int64_t pixels = group ? M / x.dim(0) : 0;
  std::vector<float> ga, gshift;
  if (group) {
    ga.resize(static_cast<size_t>(x.dim(0) * K));
    gshift.resize(ga.size());
    cpu::group_norm1_affine(x, *norm->weight, norm->bias, norm->eps, ga.data(), gshift.data());
  }
  for (int64_t r0 = 0; r0 < M; r0 += step) {
    const int64_t rows = std::min(step, M - r0);
    const float* xs = x.data() + r0 * K;
    if (norm && !group) {  // this block's rows normalised into cache, then read by fc1 from there
      const Tensor xv = Tensor::borrow(const_cast<float*>(xs), {rows, K}, nullptr);
      Tensor nv = Tensor::borrow(normed, {rows, K}, nullptr);
      layer_norm(xv, *norm->weight, norm->bias, norm->eps, nv);
      xs = normed;
    } else if (group) {  // the same, with the sample's affine map (a block may span two samples)
      cpu::group_norm1_apply_rows(x.data(), r0, rows, pixels, K, ga.data(), gshift.data(), normed);
      xs = normed;
    }
    const void* src = bf16 ? onednn::bf16_scratch(onednn::Scratch::linear_src, xs, rows * K) : xs;
    float* ys = y.data() + r0 * N;
    cpu::gemm_rows({src, bf16, rows, w1, b1, fused, hidden, bf16});
    cpu::gemm_rows({hidden, bf16, rows, w2, b2, nullptr, ys, false});
    // The residual, while this block of fc2's output is still in cache.
    if (scales)
      cpu::scaled_residual_rows(x.data() + r0 * K, scales->res_scale ? scales->res_scale->data() : nullptr, ys,
                                scales->layer_scale ? scales->layer_scale->data() : nullptr, rows, N, ys);
  }
}

// MambaOut's act(g) ⊙ [i, conv(c)] → fc2 in blocks of rows: the gated product of a block is written
// by the glu kernel into a cache-sized scratch buffer (viewed as a tensor), rounded to bf16 there in
// bf16 precision, and multiplied straight away.
void CpuBackend::glu_linear(const Tensor& t, const Tensor* c, int64_t gate_offset, int64_t value_offset, int64_t width,
                            const Activation& act, const Tensor& w, const Tensor* b, Tensor& y) {
  const int64_t M = t.shape().rows(), Ct = t.shape().last(), cw = c ? c->shape().last() : 0, N = w.dim(0);
  const bool bf16 = precision_ == Precision::bf16;
  const int64_t step = block_rows(M, width);
  auto* block = static_cast<float*>(onednn::scratch(onednn::Scratch::glu_block, step * width * 4));
  for (int64_t r0 = 0; r0 < M; r0 += step) {
    const int64_t rows = std::min(step, M - r0);
    // Views of this block's rows (borrowed: no copies).
    const Tensor tv = Tensor::borrow(const_cast<float*>(t.data()) + r0 * Ct, {rows, Ct}, nullptr);
    const Tensor cv = c ? Tensor::borrow(const_cast<float*>(c->data()) + r0 * cw, {rows, cw}, nullptr) : Tensor();
    Tensor hv = Tensor::borrow(block, {rows, width}, nullptr);
    glu(tv, c ? &cv : nullptr, gate_offset, value_offset, act, hv);
    const void* src = bf16 ? onednn::bf16_scratch(onednn::Scratch::linear_src, block, rows * width) : block;
    cpu::gemm_rows({src, bf16, rows, w, b, nullptr, y.data() + r0 * N, false});
  }
}

}  // namespace mf
