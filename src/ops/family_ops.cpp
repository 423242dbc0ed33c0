// The dispatchers of the sequence models' ops and of WaveMix's and iFormer's (ops.h), apart from
// ops.cpp's for size: the same checks (op_checks.h), then the backend.
#include <cmath>

#include "core/error.h"
#include "ops/op_checks.h"
#include "ops/ops.h"
#include "ops/timed.h"

namespace mf::op {
using detail::check_grad;
using detail::check_rank;
using detail::check_vec;
using detail::out;

// ---------------------------------------------------------------------------------- sequence ops
Tensor embedding(const Exec& e, const Tensor& ids, const Tensor& table) {
  check_rank(ids, 2, OpKind::Embedding);
  check_rank(table, 2, OpKind::Embedding);
  const int64_t V = table.dim(0);
  // Ids are data: checked here, on the host, so that every backend gets only valid rows.
  if (ids.device() == Device::CPU) {
    const float* p = ids.data();
    for (int64_t i = 0; i < ids.numel(); ++i) {
      const float v = p[i];
      MF_CHECK(std::isfinite(v) && v == std::floor(v) && v >= 0 && v < static_cast<float>(V),
               "token id {} at position {} of sequence {} is outside the vocabulary: ids must be integers in [0, {})",
               v, i % ids.dim(1), i / ids.dim(1), V);
    }
  }
  Tensor y = out(e, {ids.dim(0), ids.dim(1), table.dim(1)});
  Timed t(e, OpKind::Embedding, 0);
  e.backend->embedding(ids, table, y);
  return y;
}

Tensor add_positions(const Exec& e, const Tensor& x, const Tensor& pos) {
  check_rank(x, 3, OpKind::AddPositions);
  check_rank(pos, 2, OpKind::AddPositions);
  MF_CHECK(pos.dim(1) == x.dim(2), "add_positions: a position table of width {} for {} channels", pos.dim(1), x.dim(2));
  MF_CHECK(x.dim(1) <= pos.dim(0), "a sequence of {} tokens is longer than the position table ({} positions)",
           x.dim(1), pos.dim(0));
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::AddPositions, 0);
  e.backend->add_positions(x, pos, y);
  return y;
}

Tensor softmax_gate(const Exec& e, const Tensor& x, const Tensor& logits) {
  check_rank(x, 3, OpKind::SoftmaxGate);
  MF_CHECK(logits.shape() == x.shape(), "softmax_gate: logits {} for x {}", logits.shape().str(), x.shape().str());
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::SoftmaxGate, 0);
  e.backend->softmax_gate(x, logits, y);
  return y;
}

std::pair<Tensor, Tensor> softmax_gate_backward(const Exec& e, const Tensor& x, const Tensor& logits, const Tensor& dy) {
  check_rank(x, 3, OpKind::SoftmaxGate);
  MF_CHECK(logits.shape() == x.shape() && dy.shape() == x.shape(), "softmax_gate backward: logits {}, dy {} for x {}",
           logits.shape().str(), dy.shape().str(), x.shape().str());
  Tensor dx = out(e, x.shape()), dl = out(e, x.shape());
  Timed t(e, OpKind::SoftmaxGate, 0);
  e.backend->softmax_gate_backward(x, logits, dy, dx, dl);
  return {dx, dl};
}

Tensor causal_attention(const Exec& e, const Tensor& qkv, int heads, int head_dim, float scale) {
  check_rank(qkv, 3, OpKind::CausalAttention);
  const int64_t A = static_cast<int64_t>(heads) * head_dim;
  MF_CHECK(heads > 0 && head_dim > 0 && qkv.dim(2) == 3 * A,
           "causal attention: qkv has {} channels, expected 3 x {} heads x {}", qkv.dim(2), heads, head_dim);
  Tensor y = out(e, {qkv.dim(0), qkv.dim(1), A});
  const int64_t N = qkv.dim(1);
  Timed t(e, OpKind::CausalAttention, qkv.dim(0) * N * (N + 1) * A);  // half of attention's products
  e.backend->causal_attention(qkv, heads, head_dim, scale, y);
  return y;
}

namespace {
void check_conv1d(const Tensor& x, const Tensor& w, const Tensor* b) {
  check_rank(x, 3, OpKind::CausalConv1d);
  MF_CHECK(w.ndim() == 3 && w.dim(0) == x.dim(2) && w.dim(1) == 1 && w.dim(2) >= 1,
           "causal_conv1d: weight {} for {} channels (expected [C, 1, K])", w.shape().str(), x.dim(2));
  check_vec(b, x.dim(2), "bias", OpKind::CausalConv1d);
}

void check_scan(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc, int64_t b_offset,
                const Tensor& d_skip, const Tensor& z) {
  check_rank(u, 3, OpKind::SelectiveScan);
  MF_CHECK(dt_raw.shape() == u.shape() && z.shape() == u.shape(), "selective_scan: u {}, dt {} and z {} differ",
           u.shape().str(), dt_raw.shape().str(), z.shape().str());
  MF_CHECK(a_log.ndim() == 2 && a_log.dim(0) == u.dim(2), "selective_scan: A_log {} for {} channels",
           a_log.shape().str(), u.dim(2));
  const int64_t N = a_log.dim(1);
  MF_CHECK(bc.ndim() == 3 && bc.dim(0) == u.dim(0) && bc.dim(1) == u.dim(1) && b_offset >= 0 &&
               b_offset + 2 * N <= bc.dim(2),
           "selective_scan: B and C at channel {} of {} do not fit {} states each", b_offset, bc.shape().str(), N);
  check_vec(&d_skip, u.dim(2), "D", OpKind::SelectiveScan);
}
}  // namespace

Tensor causal_conv1d(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b) {
  check_conv1d(x, w, b);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::CausalConv1d, x.numel() * w.dim(2));
  e.backend->causal_conv1d(x, w, b, y);
  return y;
}

Tensor selective_scan(const Exec& e, const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                      int64_t b_offset, const Tensor& d_skip, const Tensor& z) {
  check_scan(u, dt_raw, a_log, bc, b_offset, d_skip, z);
  Tensor y = out(e, u.shape());
  Timed t(e, OpKind::SelectiveScan, 3 * u.numel() * a_log.dim(1));
  e.backend->selective_scan(u, dt_raw, a_log, bc, b_offset, d_skip, z, y);
  return y;
}

Tensor rms_norm(const Exec& e, const Tensor& x, const Tensor& w, float eps) {
  check_vec(&w, x.shape().last(), "weight", OpKind::RmsNorm);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::RmsNorm, 0);
  e.backend->rms_norm(x, w, eps, y);
  return y;
}

Tensor rms_norm_backward(const Exec& e, const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor* dw) {
  check_vec(&w, x.shape().last(), "weight", OpKind::RmsNorm);
  MF_CHECK(dy.shape() == x.shape(), "rms_norm backward: dy {} for x {}", dy.shape().str(), x.shape().str());
  check_grad(dw, w, "weight", OpKind::RmsNorm);
  Tensor dx = out(e, x.shape());
  Timed t(e, OpKind::RmsNorm, 0);
  e.backend->rms_norm_backward(x, w, eps, dy, dx, dw);
  return dx;
}

void embedding_backward_(const Exec& e, const Tensor& ids, const Tensor& dy, Tensor& dtable) {
  MF_CHECK(ids.ndim() == 2 && dy.ndim() == 3 && dy.dim(0) == ids.dim(0) && dy.dim(1) == ids.dim(1) &&
               dtable.ndim() == 2 && dtable.dim(1) == dy.dim(2),
           "embedding backward: dy {} for ids {} and table {}", dy.shape().str(), ids.shape().str(),
           dtable.shape().str());
  Timed t(e, OpKind::Embedding, 0);
  e.backend->embedding_backward(ids, dy, dtable);
}

void add_positions_backward_(const Exec& e, const Tensor& dy, Tensor& dpos) {
  MF_CHECK(dy.ndim() == 3 && dpos.ndim() == 2 && dpos.dim(1) == dy.dim(2) && dpos.dim(0) >= dy.dim(1),
           "add_positions backward: dy {} for a table {}", dy.shape().str(), dpos.shape().str());
  Timed t(e, OpKind::AddPositions, 0);
  e.backend->add_positions_backward(dy, dpos);
}

Tensor causal_attention_backward(const Exec& e, const Tensor& qkv, int heads, int head_dim, float scale,
                                 const Tensor& dy) {
  const int64_t A = static_cast<int64_t>(heads) * head_dim;
  MF_CHECK(qkv.ndim() == 3 && qkv.dim(2) == 3 * A && dy.ndim() == 3 && dy.dim(0) == qkv.dim(0) &&
               dy.dim(1) == qkv.dim(1) && dy.dim(2) == A,
           "causal attention backward: dy {} for qkv {}", dy.shape().str(), qkv.shape().str());
  Tensor dqkv = out(e, qkv.shape());
  const int64_t N = qkv.dim(1);
  Timed t(e, OpKind::CausalAttention, 5 * qkv.dim(0) * N * (N + 1) / 2 * A);
  e.backend->causal_attention_backward(qkv, heads, head_dim, scale, dy, dqkv);
  return dqkv;
}

Tensor causal_conv1d_backward(const Exec& e, const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dw,
                              Tensor* db) {
  check_conv1d(x, w, nullptr);
  MF_CHECK(dy.shape() == x.shape(), "causal_conv1d backward: dy {} for x {}", dy.shape().str(), x.shape().str());
  check_grad(dw, w, "weight", OpKind::CausalConv1d);
  check_vec(db, x.dim(2), "bias gradient", OpKind::CausalConv1d);
  Tensor dx = out(e, x.shape());
  Timed t(e, OpKind::CausalConv1d, 2 * x.numel() * w.dim(2));
  e.backend->causal_conv1d_backward(x, w, dy, &dx, dw, db);
  return dx;
}

SelectiveScanGrads selective_scan_backward(const Exec& e, const Tensor& u, const Tensor& dt_raw, const Tensor& a_log,
                                           const Tensor& bc, int64_t b_offset, const Tensor& d_skip, const Tensor& z,
                                           const Tensor& dy, int64_t chunk, Tensor* da_log, Tensor* dd_skip) {
  check_scan(u, dt_raw, a_log, bc, b_offset, d_skip, z);
  MF_CHECK(dy.shape() == u.shape(), "selective_scan backward: dy {} for u {}", dy.shape().str(), u.shape().str());
  MF_CHECK(chunk >= 1, "selective_scan backward: chunk must be positive, got {}", chunk);
  check_grad(da_log, a_log, "A_log", OpKind::SelectiveScan);
  check_grad(dd_skip, d_skip, "D", OpKind::SelectiveScan);
  SelectiveScanGrads g{out(e, u.shape()), out(e, u.shape()), out(e, bc.shape()), out(e, u.shape())};
  Timed t(e, OpKind::SelectiveScan, 9 * u.numel() * a_log.dim(1));
  e.backend->selective_scan_backward(u, dt_raw, a_log, bc, b_offset, d_skip, z, dy, chunk, g.du, g.ddt_raw, g.dbc,
                                     g.dz, da_log, dd_skip);
  return g;
}

namespace {
void check_bidirectional(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                         int64_t b_offset, const Tensor& dd, const Tensor& d_skip) {
  check_rank(u, 3, OpKind::BidirectionalScan);
  const int64_t B = u.dim(0), L = u.dim(1), D = u.dim(2);
  MF_CHECK(dt_raw.shape() == Shape({B, L, 2 * D}), "bidirectional_scan: dt {} for u {} (expected [B, L, 2D])",
           dt_raw.shape().str(), u.shape().str());
  MF_CHECK(a_log.ndim() == 2 && a_log.dim(0) == D, "bidirectional_scan: A_log {} for {} channels",
           a_log.shape().str(), D);
  const int64_t N = a_log.dim(1);
  MF_CHECK(bc.ndim() == 3 && bc.dim(0) == B && bc.dim(1) == L && b_offset >= 0 && b_offset + 4 * N <= bc.dim(2),
           "bidirectional_scan: B and C of both directions at channel {} of {} do not fit {} states each", b_offset,
           bc.shape().str(), N);
  MF_CHECK(dd.ndim() == 3 && dd.dim(0) == B && dd.dim(1) == L && dd.dim(2) >= 1 && D % dd.dim(2) == 0,
           "bidirectional_scan: the diagonal {} must be [B, L, heads] with heads dividing {} channels",
           dd.shape().str(), D);
  check_vec(&d_skip, dd.dim(2), "D", OpKind::BidirectionalScan);
}

void check_ponet(const Tensor& p, int heads, int64_t segment, int local_kernel) {
  check_rank(p, 3, OpKind::PonetPool);
  MF_CHECK(p.dim(2) % 6 == 0 && heads >= 1 && (p.dim(2) / 6) % heads == 0,
           "ponet_pool: {} channels are not 6 projections of a width divisible by {} heads", p.dim(2), heads);
  MF_CHECK(segment >= 1, "ponet_pool: the segment length must be positive, got {}", segment);
  MF_CHECK(local_kernel >= 1 && local_kernel % 2 == 1, "ponet_pool: the local window must be odd, got {}",
           local_kernel);
}
}  // namespace

Tensor bidirectional_scan(const Exec& e, const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                          int64_t b_offset, const Tensor& dd, const Tensor& d_skip) {
  check_bidirectional(u, dt_raw, a_log, bc, b_offset, dd, d_skip);
  Tensor y = out(e, u.shape());
  Timed t(e, OpKind::BidirectionalScan, 6 * u.numel() * a_log.dim(1));
  e.backend->bidirectional_scan(u, dt_raw, a_log, bc, b_offset, dd, d_skip, y);
  return y;
}

BidirectionalScanGrads bidirectional_scan_backward(const Exec& e, const Tensor& u, const Tensor& dt_raw,
                                                   const Tensor& a_log, const Tensor& bc, int64_t b_offset,
                                                   const Tensor& dd, const Tensor& d_skip, const Tensor& dy,
                                                   int64_t chunk, Tensor* da_log, Tensor* dd_skip) {
  check_bidirectional(u, dt_raw, a_log, bc, b_offset, dd, d_skip);
  MF_CHECK(dy.shape() == u.shape(), "bidirectional_scan backward: dy {} for u {}", dy.shape().str(), u.shape().str());
  MF_CHECK(chunk >= 1, "bidirectional_scan backward: chunk must be positive, got {}", chunk);
  check_grad(da_log, a_log, "A_log", OpKind::BidirectionalScan);
  check_grad(dd_skip, d_skip, "D", OpKind::BidirectionalScan);
  BidirectionalScanGrads g{out(e, u.shape()), out(e, dt_raw.shape()), out(e, bc.shape()), out(e, dd.shape())};
  Timed t(e, OpKind::BidirectionalScan, 18 * u.numel() * a_log.dim(1));
  e.backend->bidirectional_scan_backward(u, dt_raw, a_log, bc, b_offset, dd, d_skip, dy, chunk, g.du, g.ddt_raw,
                                         g.dbc, g.ddd, da_log, dd_skip);
  return g;
}

Tensor ponet_pool(const Exec& e, const Tensor& p, int heads, int64_t segment, int local_kernel) {
  check_ponet(p, heads, segment, local_kernel);
  Tensor y = out(e, {p.dim(0), p.dim(1), p.dim(2) / 6});
  // the global attention's two passes over the tokens, and the two maxima's windows
  Timed t(e, OpKind::PonetPool, p.numel() / 6 * (4 + local_kernel));
  e.backend->ponet_pool(p, heads, segment, local_kernel, y);
  return y;
}

Tensor ponet_pool_backward(const Exec& e, const Tensor& p, int heads, int64_t segment, int local_kernel,
                           const Tensor& dy) {
  check_ponet(p, heads, segment, local_kernel);
  MF_CHECK(dy.shape() == Shape({p.dim(0), p.dim(1), p.dim(2) / 6}), "ponet_pool backward: dy {} for p {}",
           dy.shape().str(), p.shape().str());
  Tensor dp = out(e, p.shape());
  Timed t(e, OpKind::PonetPool, p.numel() / 6 * (8 + local_kernel));
  e.backend->ponet_pool_backward(p, heads, segment, local_kernel, dy, dp);
  return dp;
}

Tensor batch_norm(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& mean,
                  const Tensor& var, float eps) {
  MF_CHECK(x.ndim() >= 2, "batch_norm: input must have a batch dimension, got {}", x.shape().str());
  const int64_t C = x.shape().last();
  check_vec(&w, C, "weight", OpKind::BatchNorm);
  check_vec(b, C, "bias", OpKind::BatchNorm);
  check_vec(&mean, C, "mean", OpKind::BatchNorm);
  check_vec(&var, C, "variance", OpKind::BatchNorm);
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::BatchNorm, 0);
  e.backend->batch_norm(x, w, b, mean, var, eps, y);
  return y;
}

Tensor batch_norm_train(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, float eps,
                        Tensor& batch_mean, Tensor& batch_var) {
  MF_CHECK(x.ndim() >= 2, "batch_norm: input must have a batch dimension, got {}", x.shape().str());
  const int64_t C = x.shape().last();
  MF_CHECK(x.shape().rows() > 1, "batch_norm: training needs more than one value per channel, got input {}",
           x.shape().str());
  check_vec(&w, C, "weight", OpKind::BatchNorm);
  check_vec(b, C, "bias", OpKind::BatchNorm);
  // The statistics stay fp32 on every backend (a bf16 backend's activations are bf16; its norm
  // statistics are not: docs/bf16.md).
  batch_mean = Tensor::empty({C}, e.backend->device());
  batch_var = Tensor::empty({C}, e.backend->device());
  Tensor y = out(e, x.shape());
  Timed t(e, OpKind::BatchNorm, 0);
  e.backend->batch_norm_stats(x, batch_mean, batch_var);
  e.backend->batch_norm(x, w, b, batch_mean, batch_var, eps, y);
  return y;
}

Tensor batch_norm_backward(const Exec& e, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& var,
                           float eps, bool batch_stats, const Tensor& dy, Tensor* dw, Tensor* db) {
  MF_CHECK(dy.shape() == x.shape(), "batch_norm backward: dy {} for x {}", dy.shape().str(), x.shape().str());
  const int64_t C = x.shape().last();
  check_vec(&w, C, "weight", OpKind::BatchNorm);
  check_vec(&mean, C, "mean", OpKind::BatchNorm);
  check_vec(&var, C, "variance", OpKind::BatchNorm);
  check_grad(dw, w, "weight", OpKind::BatchNorm);
  check_grad(db, w, "bias", OpKind::BatchNorm);
  Tensor dx = out(e, x.shape());
  Timed t(e, OpKind::BatchNorm, 0);
  e.backend->batch_norm_backward(x, w, mean, var, eps, batch_stats, dy, dx, dw, db);
  return dx;
}

// ---- WaveMix's and iFormer's ops (after check_grad, which their backward uses)
Tensor conv_transpose2d(const Exec& e, const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g) {
  check_rank(x, 4, OpKind::ConvTranspose2d);
  MF_CHECK(w.ndim() == 4 && w.dim(0) == x.dim(3) && w.dim(2) == g.kernel_h && w.dim(3) == g.kernel_w,
           "conv_transpose2d: weight {} does not fit input {} with a {}x{} kernel", w.shape().str(), x.shape().str(),
           g.kernel_h, g.kernel_w);
  MF_CHECK(!b || (b->ndim() == 1 && b->dim(0) == w.dim(1)), "conv_transpose2d: bias {} does not fit weight {}",
           b ? b->shape().str() : "", w.shape().str());
  MF_CHECK(g.stride_h >= 1 && g.stride_w >= 1 && g.pad_h >= 0 && g.pad_w >= 0, "conv_transpose2d: bad geometry");
  const int64_t Ho = (x.dim(1) - 1) * g.stride_h - 2 * g.pad_h + g.kernel_h;
  const int64_t Wo = (x.dim(2) - 1) * g.stride_w - 2 * g.pad_w + g.kernel_w;
  MF_CHECK(Ho > 0 && Wo > 0, "conv_transpose2d: input {} gives an empty output", x.shape().str());
  Tensor y = out(e, {x.dim(0), Ho, Wo, w.dim(1)});
  Timed t(e, OpKind::ConvTranspose2d, x.numel() * w.dim(1) * g.kernel_h * g.kernel_w);
  e.backend->conv_transpose2d(x, w, b, g, y);
  return y;
}

Tensor conv_transpose2d_backward(const Exec& e, const Tensor& x, const Tensor& w, const ConvGeometry& g,
                                 const Tensor& dy, bool need_dx, Tensor* dw, Tensor* db) {
  MF_CHECK(dy.ndim() == 4 && dy.dim(0) == x.dim(0) && dy.dim(3) == w.dim(1) &&
               dy.dim(1) == (x.dim(1) - 1) * g.stride_h - 2 * g.pad_h + g.kernel_h &&
               dy.dim(2) == (x.dim(2) - 1) * g.stride_w - 2 * g.pad_w + g.kernel_w,
           "conv_transpose2d backward: dy {} does not fit x {}", dy.shape().str(), x.shape().str());
  check_grad(dw, w, "weight", OpKind::ConvTranspose2d);
  check_vec(db, w.dim(1), "bias gradient", OpKind::ConvTranspose2d);
  Tensor dx = need_dx ? out(e, x.shape()) : Tensor();
  const int64_t macs = x.numel() * w.dim(1) * g.kernel_h * g.kernel_w;
  Timed t(e, OpKind::ConvTranspose2d, macs * ((need_dx ? 1 : 0) + (dw ? 1 : 0)));
  e.backend->conv_transpose2d_backward(x, w, g, dy, need_dx ? &dx : nullptr, dw, db);
  return dx;
}

namespace {
Shape max_pool_shape(const Tensor& x, const ConvGeometry& g) {
  check_rank(x, 4, OpKind::MaxPool2d);
  MF_CHECK(g.kernel_h >= 1 && g.kernel_w >= 1 && g.stride_h >= 1 && g.stride_w >= 1 && 2 * g.pad_h <= g.kernel_h &&
               2 * g.pad_w <= g.kernel_w && g.pad_h >= 0 && g.pad_w >= 0,
           "max_pool2d: padding must be at most half the kernel (PyTorch's rule), kernel {}x{}, padding {}x{}",
           g.kernel_h, g.kernel_w, g.pad_h, g.pad_w);
  const int64_t Ho = g.out_h(x.dim(1)), Wo = g.out_w(x.dim(2));
  MF_CHECK(Ho > 0 && Wo > 0, "max_pool2d: input {} is too small for a {}x{} window", x.shape().str(), g.kernel_h,
           g.kernel_w);
  return {x.dim(0), Ho, Wo, x.dim(3)};
}

void check_factor(const Tensor& x, int factor, OpKind op, bool divides) {
  check_rank(x, 4, op);
  MF_CHECK(factor >= 1 && factor <= 64, "{}: factor {} is out of range [1, 64]", op_name(op), factor);
  MF_CHECK(!divides || (x.dim(1) % factor == 0 && x.dim(2) % factor == 0),
           "{}: a {}x{} map does not divide into {}x{} windows", op_name(op), x.dim(1), x.dim(2), factor, factor);
}
}  // namespace

Tensor max_pool2d(const Exec& e, const Tensor& x, const ConvGeometry& g) {
  Tensor y = out(e, max_pool_shape(x, g));
  Timed t(e, OpKind::MaxPool2d, 0);
  e.backend->max_pool2d(x, g, y);
  return y;
}

Tensor max_pool2d_backward(const Exec& e, const Tensor& x, const ConvGeometry& g, const Tensor& dy) {
  MF_CHECK(dy.shape() == max_pool_shape(x, g), "max_pool2d backward: dy {} does not fit x {}", dy.shape().str(),
           x.shape().str());
  Tensor dx = out(e, x.shape());
  Timed t(e, OpKind::MaxPool2d, 0);
  e.backend->max_pool2d_backward(x, g, dy, dx);
  return dx;
}

Tensor avg_pool2d(const Exec& e, const Tensor& x, int factor) {
  check_factor(x, factor, OpKind::AvgPool2d, true);
  Tensor y = out(e, {x.dim(0), x.dim(1) / factor, x.dim(2) / factor, x.dim(3)});
  Timed t(e, OpKind::AvgPool2d, 0);
  e.backend->sum_pool2d(x, factor, 1.f / static_cast<float>(factor * factor), y);
  return y;
}

Tensor avg_pool2d_backward(const Exec& e, const Tensor& dy, int factor) {
  check_factor(dy, factor, OpKind::AvgPool2d, false);
  Tensor dx = out(e, {dy.dim(0), dy.dim(1) * factor, dy.dim(2) * factor, dy.dim(3)});
  Timed t(e, OpKind::AvgPool2d, 0);
  e.backend->upsample_nearest(dy, factor, 1.f / static_cast<float>(factor * factor), dx);
  return dx;
}

Tensor upsample_nearest(const Exec& e, const Tensor& x, int factor) {
  check_factor(x, factor, OpKind::UpsampleNearest, false);
  Tensor y = out(e, {x.dim(0), x.dim(1) * factor, x.dim(2) * factor, x.dim(3)});
  Timed t(e, OpKind::UpsampleNearest, 0);
  e.backend->upsample_nearest(x, factor, 1.f, y);
  return y;
}

Tensor upsample_nearest_backward(const Exec& e, const Tensor& dy, int factor) {
  check_factor(dy, factor, OpKind::UpsampleNearest, true);
  Tensor dx = out(e, {dy.dim(0), dy.dim(1) / factor, dy.dim(2) / factor, dy.dim(3)});
  Timed t(e, OpKind::UpsampleNearest, 0);
  e.backend->sum_pool2d(dy, factor, 1.f, dx);
  return dx;
}

}  // namespace mf::op
