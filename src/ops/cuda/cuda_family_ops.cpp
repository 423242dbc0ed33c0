#include "ops/cuda/cuda_family_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "ops/cuda/backward_kernels.h"
#include "ops/cuda/families/family_kernels.h"
#include "ops/cuda/families/host_tables.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/op_buffers.h"

namespace mf {

namespace cuda {

bool is_family_op(OpKind op) {
  switch (op) {
    case OpKind::Permute:
    case OpKind::SpatialShift:
    case OpKind::ResizeBicubic:
    case OpKind::MaxPool2d:
    case OpKind::AvgPool2d:
    case OpKind::UpsampleNearest:
    case OpKind::ConvTranspose2d:
    case OpKind::StripMix:
    case OpKind::SplitAttention:
    case OpKind::Grn:
    case OpKind::Gate:
    case OpKind::BatchNorm:
    case OpKind::AddPositions:
    case OpKind::Embedding:
    case OpKind::RmsNorm:
    case OpKind::SoftmaxGate:
    case OpKind::CausalConv1d:
    case OpKind::CausalAttention:
    case OpKind::SelectiveScan:
    case OpKind::BidirectionalScan:
    case OpKind::PonetPool:
      return true;
    default:
      return false;
  }
}

bool family_ops_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("METAFORMER_CUDA_FAMILY_OPS");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  return on;
}

}  // namespace cuda

namespace {

namespace fam = cuda::families;
namespace bw = cuda::backward;
using cuda::kernels::bf16;
using cuda::ops::DeviceGrad;
using cuda::ops::ok;
using cuda::ops::stream;
using cuda::ops::typed_acts;
using cuda::ops::Widened;
using cuda::ops::Work;

fam::Window window(const ConvGeometry& g) {
  return fam::Window{g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w};
}

// The bicubic tables of one axis (in -> out), on the GPU: made on the host (host_tables.h) on first
// use, kept for the life of the process (a model has a handful of sizes). They are made during a
// pass's first run, which is eager, so a recorded pass only reads them.
struct BicubicTables {
  Tensor index, weight, adj_begin, adj_out, adj_weight;  // int32 and double stored in fp32 tensors' bytes
  fam::BicubicAxis axis;
};

template <class V>
Tensor upload_bytes(const std::vector<V>& v) {
  const size_t bytes = std::max<size_t>(v.size() * sizeof(V), 4);
  Tensor host = Tensor::zeros({static_cast<int64_t>((bytes + 3) / 4)});
  if (!v.empty()) std::memcpy(host.data(), v.data(), v.size() * sizeof(V));
  return host.to(Device::CUDA);
}

const fam::BicubicAxis& bicubic_axis(int64_t in, int64_t out) {
  static std::mutex mu;
  static auto* tables = new std::map<std::pair<int64_t, int64_t>, std::unique_ptr<BicubicTables>>();
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = (*tables)[{in, out}];
  if (slot) return slot->axis;
  const fam::BicubicHostTables host = fam::bicubic_host_tables(in, out);
  auto t = std::make_unique<BicubicTables>();
  t->index = upload_bytes(host.index);
  t->weight = upload_bytes(host.weight);
  t->adj_begin = upload_bytes(host.adj_begin);
  t->adj_out = upload_bytes(host.adj_out);
  t->adj_weight = upload_bytes(host.adj_weight);
  t->axis = fam::BicubicAxis{in,
                             out,
                             reinterpret_cast<const int*>(t->index.data()),
                             reinterpret_cast<const double*>(t->weight.data()),
                             reinterpret_cast<const int*>(t->adj_begin.data()),
                             reinterpret_cast<const int*>(t->adj_out.data()),
                             reinterpret_cast<const double*>(t->adj_weight.data())};
  slot = std::move(t);
  return slot->axis;
}

// The transposed convolution's GEMM weight [kh·kw·Co, Ci] as T, cached with the weight (remade when
// its version changes).
template <class T>
const T* conv_transpose_weight(const Tensor& w, Widened& f) {
  constexpr bool half = std::is_same_v<T, bf16>;
  static const std::string key = half ? "cuda.convT_gemm_bf16" : "cuda.convT_gemm";
  if (auto d = w.derived(key)) return static_cast<const T*>(static_cast<Tensor*>(d.get())->raw());
  const int64_t Ci = w.dim(0), Co = w.dim(1);
  const int kh = static_cast<int>(w.dim(2)), kw = static_cast<int>(w.dim(3));
  auto t = std::make_shared<Tensor>(Tensor::empty({kh * kw * Co, Ci}, Device::CUDA, half ? DType::bf16 : DType::f32));
  ok(fam::conv_transpose_weight_to_gemm(f.in(w), static_cast<T*>(t->raw()), Ci, Co, kh, kw, stream()),
     "conv_transpose2d: weight layout");
  const T* p = static_cast<const T*>(t->raw());
  w.set_derived(key, t);
  return p;
}

}  // namespace

bool CudaFamilyOps::supports_backward(OpKind op) const {
  // Permute, SpatialShift, ResizeBicubic, AvgPool2d and UpsampleNearest: backward passes made of
  // forward ops (the inverse permutation, the negated shifts, the adjoint, each other).
  if (cuda::is_family_op(op)) return supports(op);
  return CudaBackwardOps::supports_backward(op);
}

void CudaFamilyOps::permute(const Tensor& x, const std::vector<int>& perm, Tensor& y) {
  Widened f;
  const int rank = x.ndim();
  MF_CHECK(rank <= fam::kMaxRank, "permute on the GPU: rank {} (at most {})", rank, fam::kMaxRank);
  int64_t dims[fam::kMaxRank];
  for (int a = 0; a < rank; ++a) dims[a] = x.dim(a);
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::permute(f.act<T>(x), f.act_out<T>(y), rank, dims, perm.data(), stream()), "permute");
  });
}

void CudaFamilyOps::spatial_shift(const Tensor& x, int axis, int64_t group_width, const std::vector<int>& shifts,
                                  Tensor& y) {
  Widened f;
  MF_CHECK(shifts.size() <= static_cast<size_t>(fam::kMaxShiftGroups),
           "spatial_shift on the GPU: {} groups (at most {})", shifts.size(), fam::kMaxShiftGroups);
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::spatial_shift(f.act<T>(x), f.act_out<T>(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3), axis, group_width,
                          shifts.data(), static_cast<int>(shifts.size()), stream()),
       "spatial_shift");
  });
}

void CudaFamilyOps::resize_bicubic(const Tensor& x, bool adjoint, Tensor& y) {
  Widened f;
  const Tensor& from = adjoint ? y : x;  // the forward map's input grid
  const Tensor& to = adjoint ? x : y;    // and its output grid
  const fam::BicubicAxis& ay = bicubic_axis(from.dim(1), to.dim(1));
  const fam::BicubicAxis& ax = bicubic_axis(from.dim(2), to.dim(2));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::resize_bicubic(f.act<T>(x), f.act_out<T>(y), x.dim(0), x.dim(3), ay, ax, adjoint, stream()),
       "resize_bicubic");
  });
}

void CudaFamilyOps::max_pool2d(const Tensor& x, const ConvGeometry& g, Tensor& y) {
  Widened f;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::max_pool2d(f.act<T>(x), f.act_out<T>(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3), y.dim(1), y.dim(2),
                       window(g), stream()),
       "max_pool2d");
  });
}

void CudaFamilyOps::max_pool2d_backward(const Tensor& x, const ConvGeometry& g, const Tensor& dy, Tensor& dx) {
  Widened f;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::max_pool2d_backward(f.act<T>(x), f.act<T>(dy), f.act_out<T>(dx), x.dim(0), x.dim(1), x.dim(2), x.dim(3),
                                dy.dim(1), dy.dim(2), window(g), stream()),
       "max_pool2d backward");
  });
}

void CudaFamilyOps::sum_pool2d(const Tensor& x, int factor, float scale, Tensor& y) {
  Widened f;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::sum_pool2d(f.act<T>(x), f.act_out<T>(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3), factor, scale, stream()),
       "sum_pool2d");
  });
}

void CudaFamilyOps::upsample_nearest(const Tensor& x, int factor, float scale, Tensor& y) {
  Widened f;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::upsample_nearest(f.act<T>(x), f.act_out<T>(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3), factor, scale,
                             stream()),
       "upsample_nearest");
  });
}

void CudaFamilyOps::conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor* b, const ConvGeometry& g,
                                     Tensor& y) {
  Widened f;
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3), Ho = y.dim(1), Wo = y.dim(2), Co = y.dim(3);
  const int kh = g.kernel_h, kw = g.kernel_w;
  const int64_t M = B * H * W, N = kh * kw * Co;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr bool half = std::is_same_v<T, bf16>;
    T* ys = f.act_out<T>(y);
    {
      Tensor cols = Tensor::empty({M, N}, Device::CUDA, half ? DType::bf16 : DType::f32);
      cuda::linear_rows(half ? cuda::GemmType::bf16 : cuda::GemmType::f32, f.act<T>(x), conv_transpose_weight<T>(w, f),
                        nullptr, cols.raw(), M, N, Ci, cuda::Epilogue::none);
      // Column (ky, kx, co) of input pixel (i, j) lands on output pixel (i·s − p + ky, j·s − p + kx):
      // col2im with the geometry of the convolution that maps y's grid onto x's.
      ok(bw::col2im_nhwc<T>(static_cast<const T*>(cols.raw()), ys, B, Ho, Wo, Co, kh, kw, g.stride_h, g.stride_w,
                            g.pad_h, g.pad_w, H, W, stream()),
         "conv_transpose2d: col2im");
    }
    if (b)
      ok(cuda::kernels::channel_affine_act(ys, nullptr, f.in(*b), ys, B * Ho * Wo, Co, cuda::kernels::Act{}, stream()),
         "conv_transpose2d: bias");
  });
}

void CudaFamilyOps::conv_transpose2d_backward(const Tensor& x, const Tensor& w, const ConvGeometry& g, const Tensor& dy,
                                              Tensor* dx, Tensor* dw, Tensor* db) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3), Ho = dy.dim(1), Wo = dy.dim(2), Co = dy.dim(3);
  const int kh = g.kernel_h, kw = g.kernel_w;
  const int64_t M = B * H * W, K2 = kh * kw * Co;
  // dx: the convolution of dy whose weight [out Ci, in Co, kh, kw] is w itself.
  if (dx) conv2d(dy, w, nullptr, g, *dx);
  Widened f;
  if (db) {
    DeviceGrad d(db, true);
    Work work(bw::column_sum_work(B * Ho * Wo, Co));
    typed_acts(activation_dtype(), [&](auto tag) {
      using T = decltype(tag);
      ok(bw::column_sum_add(f.act<T>(dy), d.get(), B * Ho * Wo, Co, work.p, stream()),
         "conv_transpose2d backward: bias");
    });
    d.finish();
  }
  if (dw && M > 0) {
    DeviceGrad d(dw, true);
    Tensor dwk = Tensor::empty({Ci, K2}, Device::CUDA);  // [Ci, (ky, kx, co)]
    typed_acts(activation_dtype(), [&](auto tag) {
      using T = decltype(tag);
      constexpr bool half = std::is_same_v<T, bf16>;
      Tensor cols = Tensor::empty({M, K2}, Device::CUDA, half ? DType::bf16 : DType::f32);
      ok(cuda::kernels::im2col_nhwc_padded(f.act<T>(dy), static_cast<T*>(cols.raw()), K2, B, Ho, Wo, Co, kh, kw,
                                           g.stride_h, g.stride_w, g.pad_h, g.pad_w, H, W, stream()),
         "conv_transpose2d backward: im2col");
      // Row-major dwk [Ci, K2] = xᵀ [Ci, M] · cols [M, K2]: column-major dwkᵀ (K2×Ci) = cols (K2×M) · x (M×Ci
      // stored column-major as Ci×M, so transposed).
      cuda::Gemm p;
      p.type = half ? cuda::GemmType::bf16_f32out : cuda::GemmType::f32;
      p.trans_b = true;
      p.m = K2, p.n = Ci, p.k = M;
      p.a = cols.raw(), p.lda = K2;
      p.b = f.act<T>(x), p.ldb = Ci;
      p.d = dwk.data(), p.ldd = K2;
      cuda::run_gemm(p);
    });
    // dwk [Ci, kh, kw, Co] into dw [Ci, Co, kh, kw]: the dense convolution's reorder with Ci as its
    // output channels.
    ok(bw::conv_weight_grad_add(dwk.data(), K2, d.get(), Ci, Co, kh, kw, stream()), "conv_transpose2d backward: weight");
    d.finish();
  }
}

void CudaFamilyOps::strip_mix(const Tensor& x, const Tensor& w, const Tensor* b, int axis, Tensor& y) {
  Widened f;
  const int64_t L = x.dim(axis), G = w.dim(0) / L;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::strip_mix(f.act<T>(x), f.in(w), f.in(b), f.act_out<T>(y), x.dim(0), x.dim(1), x.dim(2), x.dim(3), axis, G,
                      stream()),
       "strip_mix");
  });
}

void CudaFamilyOps::strip_mix_backward(const Tensor& x, const Tensor& w, int axis, const Tensor& dy, Tensor* dx,
                                       Tensor* dw, Tensor* db) {
  Widened f;
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3), L = x.dim(axis), G = w.dim(0) / L;
  DeviceGrad gw(dw, true), gb(db, true);
  Work work(fam::strip_mix_backward_work(B, H, W, C, axis, G));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::strip_mix_backward(f.act<T>(x), f.in(w), f.act<T>(dy), dx ? f.act_out<T>(*dx) : nullptr, gw.get(), gb.get(),
                               B, H, W, C, axis, G, work.p, stream()),
       "strip_mix backward");
  });
  gw.finish();
  gb.finish();
}

void CudaFamilyOps::split_attention(const std::vector<Tensor>& branches, const Tensor& logits, Tensor& y) {
  Widened f;
  const int K = static_cast<int>(branches.size());
  MF_CHECK(K <= fam::kMaxBranches, "split_attention on the GPU: {} branches (at most {})", K, fam::kMaxBranches);
  const int64_t B = y.dim(0), C = y.shape().last(), per = y.numel() / (B * C);
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    fam::Branches<T> br{};
    br.K = K;
    for (int k = 0; k < K; ++k) br.p[k] = f.act<T>(branches[static_cast<size_t>(k)]);
    ok(fam::split_attention(br, f.in(logits), f.act_out<T>(y), B, per, C, stream()), "split_attention");
  });
}

void CudaFamilyOps::split_attention_backward(const std::vector<Tensor>& branches, const Tensor& logits,
                                             const Tensor& dy, std::vector<Tensor>& dbranches, Tensor& dlogits) {
  Widened f;
  const int K = static_cast<int>(branches.size());
  MF_CHECK(K <= fam::kMaxBranches && dbranches.size() == branches.size(),
           "split_attention backward on the GPU: {} branches (at most {})", K, fam::kMaxBranches);
  const int64_t B = dy.dim(0), C = dy.shape().last(), per = dy.numel() / (B * C);
  Work work(fam::split_attention_backward_work(B, per, C, K));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    fam::Branches<T> br{};
    fam::BranchGrads<T> d{};
    br.K = d.K = K;
    for (int k = 0; k < K; ++k) {
      br.p[k] = f.act<T>(branches[static_cast<size_t>(k)]);
      d.p[k] = f.act_out<T>(dbranches[static_cast<size_t>(k)]);
    }
    ok(fam::split_attention_backward(br, f.in(logits), f.act<T>(dy), d, f.out(dlogits), B, per, C, work.p, stream()),
       "split_attention backward");
  });
}

void CudaFamilyOps::grn(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y) {
  Widened f;
  const int64_t B = x.dim(0), N = x.dim(1) * x.dim(2), C = x.dim(3);
  Work work(fam::grn_work(B, N, C));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::grn(f.act<T>(x), f.in(gamma), f.in(beta), f.act_out<T>(y), B, N, C, work.p, stream()), "grn");
  });
}

void CudaFamilyOps::grn_backward(const Tensor& x, const Tensor& gamma, const Tensor& dy, Tensor& dx, Tensor* dgamma,
                                 Tensor* dbeta) {
  Widened f;
  const int64_t B = x.dim(0), N = x.dim(1) * x.dim(2), C = x.dim(3);
  DeviceGrad gg(dgamma, true), gb(dbeta, true);
  Work work(fam::grn_backward_work(B, N, C));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::grn_backward(f.act<T>(x), f.in(gamma), f.act<T>(dy), f.act_out<T>(dx), gg.get(), gb.get(), B, N, C, work.p,
                         stream()),
       "grn backward");
  });
  gg.finish();
  gb.finish();
}

namespace {
fam::GateKind gate_kind(const Tensor& x, const Tensor& g) {
  if (g.shape() == x.shape()) return fam::GateKind::full;
  return g.ndim() == x.ndim() ? fam::GateKind::position : fam::GateKind::channel;
}
}  // namespace

void CudaFamilyOps::gate(const Tensor& x, const Tensor& g, bool sigmoid, Tensor& y) {
  Widened f;
  const int64_t B = x.dim(0), C = x.shape().last(), per = x.numel() / (B * C);
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::gate(f.act<T>(x), f.act<T>(g), f.act_out<T>(y), B, per, C, gate_kind(x, g), sigmoid, stream()), "gate");
  });
}

void CudaFamilyOps::gate_backward(const Tensor& x, const Tensor& g, bool sigmoid, const Tensor& dy, Tensor& dx,
                                  Tensor& dg) {
  Widened f;
  const int64_t B = x.dim(0), C = x.shape().last(), per = x.numel() / (B * C);
  const fam::GateKind kind = gate_kind(x, g);
  Work work(fam::gate_backward_work(B, per, C, kind));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::gate_backward(f.act<T>(x), f.act<T>(g), f.act<T>(dy), f.act_out<T>(dx), f.act_out<T>(dg), B, per, C, kind,
                          sigmoid, work.p, stream()),
       "gate backward");
  });
}

// The statistics and the per-channel parameters are fp32 (Widened widens them if a bf16 backend's
// dispatcher allocated the statistics in the activations' dtype, and rounds them back once).
void CudaFamilyOps::batch_norm_stats(const Tensor& x, Tensor& mean, Tensor& var) {
  Widened f;
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  Work work(fam::batch_norm_stats_work(rows, C));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::batch_norm_stats(f.act<T>(x), f.out(mean), f.out(var), rows, C, work.p, stream()), "batch_norm statistics");
  });
}

void CudaFamilyOps::batch_norm(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& mean, const Tensor& var,
                               float eps, Tensor& y) {
  Widened f;
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::batch_norm(f.act<T>(x), f.in(w), f.in(b), f.in(mean), f.in(var), eps, f.act_out<T>(y), rows, C, stream()),
       "batch_norm");
  });
}

void CudaFamilyOps::batch_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& var,
                                        float eps, bool batch_stats, const Tensor& dy, Tensor& dx, Tensor* dw,
                                        Tensor* db) {
  Widened f;
  const int64_t C = x.shape().last(), rows = x.shape().rows();
  DeviceGrad gw(dw, true), gb(db, true);
  Work work(fam::batch_norm_backward_work(rows, C));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::batch_norm_backward(f.act<T>(x), f.in(w), f.in(mean), f.in(var), eps, batch_stats, f.act<T>(dy),
                                f.act_out<T>(dx), gw.get(), gb.get(), rows, C, work.p, stream()),
       "batch_norm backward");
  });
  gw.finish();
  gb.finish();
}

void CudaFamilyOps::add_positions(const Tensor& x, const Tensor& pos, Tensor& y) {
  Widened f;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::add_positions(f.act<T>(x), f.in(pos), f.act_out<T>(y), x.dim(0), x.dim(1), x.dim(2), stream()),
       "add_positions");
  });
}

void CudaFamilyOps::add_positions_backward(const Tensor& dy, Tensor& dpos) {
  Widened f;
  DeviceGrad g(&dpos, true);
  Work work(fam::add_positions_backward_work(dy.dim(0), dy.dim(1), dy.dim(2)));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::add_positions_backward(f.act<T>(dy), g.get(), dy.dim(0), dy.dim(1), dy.dim(2), work.p, stream()),
       "add_positions backward");
  });
  g.finish();
}

void CudaFamilyOps::embedding(const Tensor& ids, const Tensor& table, Tensor& y) {
  Widened f;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::embedding(f.in(ids), f.in(table), f.act_out<T>(y), ids.numel(), table.dim(1), stream()), "embedding");
  });
}

void CudaFamilyOps::embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable) {
  // Each id's positions, sorted on the host (the ids are the batch's data: a few KB), so that every
  // row of the gradient is one fixed-order sum.
  const Tensor host = ids.to(Device::CPU);
  const int64_t V = dtable.dim(0), n = host.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float v = host.data()[i];
    MF_CHECK(std::isfinite(v) && v == std::floor(v) && v >= 0 && v < static_cast<float>(V),
             "embedding backward: token id {} at position {} is outside the vocabulary [0, {})", v, i, V);
  }
  const fam::TokenRows rows = fam::token_rows(host.data(), n, V);
  const Tensor order = upload_bytes(rows.order), begin = upload_bytes(rows.begin);
  Widened f;
  DeviceGrad g(&dtable, true);
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::embedding_backward(f.act<T>(dy), reinterpret_cast<const int*>(order.data()),
                               reinterpret_cast<const int*>(begin.data()), g.get(), V, dtable.dim(1), stream()),
       "embedding backward");
  });
  g.finish();
}

void CudaFamilyOps::rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& y) {
  Widened f;
  const int64_t C = x.shape().last(), rows = x.numel() / std::max<int64_t>(C, 1);
  Work work(fam::rms_norm_work(rows, C));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::rms_norm(f.act<T>(x), f.in(w), eps, f.act_out<T>(y), rows, C, work.p, stream()), "rms_norm");
  });
}

void CudaFamilyOps::rms_norm_backward(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx,
                                      Tensor* dw) {
  Widened f;
  const int64_t C = x.shape().last(), rows = x.numel() / std::max<int64_t>(C, 1);
  DeviceGrad g(dw, true);
  Work work(fam::rms_norm_work(rows, C));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::rms_norm_backward(f.act<T>(x), f.in(w), eps, f.act<T>(dy), f.act_out<T>(dx), g.get(), rows, C, work.p,
                              stream()),
       "rms_norm backward");
  });
  g.finish();
}

void CudaFamilyOps::softmax_gate(const Tensor& x, const Tensor& logits, Tensor& y) {
  Widened f;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::softmax_gate(f.act<T>(x), f.act<T>(logits), f.act_out<T>(y), x.dim(0), x.dim(1), x.dim(2), stream()),
       "softmax_gate");
  });
}

void CudaFamilyOps::softmax_gate_backward(const Tensor& x, const Tensor& logits, const Tensor& dy, Tensor& dx,
                                          Tensor& dlogits) {
  Widened f;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::softmax_gate_backward(f.act<T>(x), f.act<T>(logits), f.act<T>(dy), f.act_out<T>(dx), f.act_out<T>(dlogits),
                                  x.dim(0), x.dim(1), x.dim(2), stream()),
       "softmax_gate backward");
  });
}

void CudaFamilyOps::causal_conv1d(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) {
  Widened f;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::causal_conv1d(f.act<T>(x), f.in(w), f.in(b), f.act_out<T>(y), x.dim(0), x.dim(1), x.dim(2), w.dim(2),
                          stream()),
       "causal_conv1d");
  });
}

void CudaFamilyOps::causal_conv1d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor* dw,
                                           Tensor* db) {
  Widened f;
  const int64_t B = x.dim(0), L = x.dim(1), C = x.dim(2), K = w.dim(2);
  DeviceGrad gw(dw, true), gb(db, true);
  Work work(fam::causal_conv1d_backward_work(B, L, C, K));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::causal_conv1d_backward(f.act<T>(x), f.in(w), f.act<T>(dy), dx ? f.act_out<T>(*dx) : nullptr, gw.get(),
                                   gb.get(), B, L, C, K, work.p, stream()),
       "causal_conv1d backward");
  });
  gw.finish();
  gb.finish();
}

void CudaFamilyOps::causal_attention(const Tensor& qkv, int heads, int head_dim, float scale, Tensor& y) {
  MF_CHECK(head_dim <= fam::math::kMaxHeadDim, "causal attention on the GPU: head size {} (at most {})", head_dim,
           fam::math::kMaxHeadDim);
  Widened f;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::causal_attention(f.act<T>(qkv), f.act_out<T>(y), qkv.dim(0), qkv.dim(1), heads, head_dim, scale, stream()),
       "causal_attention");
  });
}

void CudaFamilyOps::causal_attention_backward(const Tensor& qkv, int heads, int head_dim, float scale, const Tensor& dy,
                                              Tensor& dqkv) {
  MF_CHECK(head_dim <= fam::math::kMaxHeadDim, "causal attention on the GPU: head size {} (at most {})", head_dim,
           fam::math::kMaxHeadDim);
  Widened f;
  Work work(fam::causal_attention_backward_work(qkv.dim(0), qkv.dim(1), heads));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::causal_attention_backward(f.act<T>(qkv), f.act<T>(dy), f.act_out<T>(dqkv), qkv.dim(0), qkv.dim(1), heads,
                                      head_dim, scale, work.p, stream()),
       "causal_attention backward");
  });
}

void CudaFamilyOps::selective_scan(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                                   int64_t b_offset, const Tensor& d_skip, const Tensor& z, Tensor& y) {
  MF_CHECK(a_log.dim(1) <= fam::math::kMaxState, "selective scan on the GPU: state size {} (at most {})", a_log.dim(1),
           fam::math::kMaxState);
  Widened f;
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::selective_scan(f.act<T>(u), f.act<T>(dt_raw), f.in(a_log), f.act<T>(bc), b_offset, f.in(d_skip),
                           f.act<T>(z), f.act_out<T>(y), u.dim(0), u.dim(1), u.dim(2), a_log.dim(1), bc.dim(2),
                           stream()),
       "selective_scan");
  });
}

void CudaFamilyOps::selective_scan_backward(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log,
                                            const Tensor& bc, int64_t b_offset, const Tensor& d_skip, const Tensor& z,
                                            const Tensor& dy, int64_t chunk, Tensor& du, Tensor& ddt_raw, Tensor& dbc,
                                            Tensor& dz, Tensor* da_log, Tensor* dd_skip) {
  MF_CHECK(a_log.dim(1) <= fam::math::kMaxState, "selective scan on the GPU: state size {} (at most {})", a_log.dim(1),
           fam::math::kMaxState);
  const int64_t B = u.dim(0), L = u.dim(1), D = u.dim(2), N = a_log.dim(1);
  Widened f;
  DeviceGrad ga(da_log, true), gd(dd_skip, true);
  Work work(fam::selective_scan_backward_work(B, L, D, N, chunk));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::selective_scan_backward(f.act<T>(u), f.act<T>(dt_raw), f.in(a_log), f.act<T>(bc), b_offset, f.in(d_skip),
                                    f.act<T>(z), f.act<T>(dy), chunk, f.act_out<T>(du), f.act_out<T>(ddt_raw),
                                    f.act_out<T>(dbc), f.act_out<T>(dz), ga.get(), gd.get(), B, L, D, N, bc.dim(2),
                                    work.p, stream()),
       "selective_scan backward");
  });
  ga.finish();
  gd.finish();
}

void CudaFamilyOps::bidirectional_scan(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log, const Tensor& bc,
                                       int64_t b_offset, const Tensor& dd, const Tensor& d_skip, Tensor& y) {
  MF_CHECK(a_log.dim(1) <= fam::math::kMaxState, "bidirectional scan on the GPU: state size {} (at most {})",
           a_log.dim(1), fam::math::kMaxState);
  const int64_t B = u.dim(0), L = u.dim(1), D = u.dim(2);
  Widened f;
  Work work(fam::bidirectional_scan_work(B, L, D));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::bidirectional_scan(f.act<T>(u), f.act<T>(dt_raw), f.in(a_log), f.act<T>(bc), b_offset, f.act<T>(dd),
                               f.in(d_skip), f.act_out<T>(y), B, L, D, a_log.dim(1), bc.dim(2), dd.dim(2), work.p,
                               stream()),
       "bidirectional_scan");
  });
}

void CudaFamilyOps::bidirectional_scan_backward(const Tensor& u, const Tensor& dt_raw, const Tensor& a_log,
                                                const Tensor& bc, int64_t b_offset, const Tensor& dd,
                                                const Tensor& d_skip, const Tensor& dy, int64_t chunk, Tensor& du,
                                                Tensor& ddt_raw, Tensor& dbc, Tensor& ddd, Tensor* da_log,
                                                Tensor* dd_skip) {
  MF_CHECK(a_log.dim(1) <= fam::math::kMaxState, "bidirectional scan on the GPU: state size {} (at most {})",
           a_log.dim(1), fam::math::kMaxState);
  const int64_t B = u.dim(0), L = u.dim(1), D = u.dim(2), N = a_log.dim(1);
  Widened f;
  DeviceGrad ga(da_log, true), gd(dd_skip, true);
  Work work(fam::bidirectional_scan_backward_work(B, L, D, N, chunk));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::bidirectional_scan_backward(f.act<T>(u), f.act<T>(dt_raw), f.in(a_log), f.act<T>(bc), b_offset,
                                        f.act<T>(dd), f.in(d_skip), f.act<T>(dy), chunk, f.act_out<T>(du),
                                        f.act_out<T>(ddt_raw), f.act_out<T>(dbc), f.act_out<T>(ddd), ga.get(), gd.get(),
                                        B, L, D, N, bc.dim(2), dd.dim(2), work.p, stream()),
       "bidirectional_scan backward");
  });
  ga.finish();
  gd.finish();
}

void CudaFamilyOps::ponet_pool(const Tensor& p, int heads, int64_t segment, int local_kernel, Tensor& y) {
  Widened f;
  const int64_t B = p.dim(0), L = p.dim(1), C = p.dim(2) / 6;
  Work work(fam::ponet_pool_work(B, L, C, heads));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::ponet_pool(f.act<T>(p), f.act_out<T>(y), B, L, C, heads, segment, local_kernel, work.p, stream()),
       "ponet_pool");
  });
}

void CudaFamilyOps::ponet_pool_backward(const Tensor& p, int heads, int64_t segment, int local_kernel, const Tensor& dy,
                                        Tensor& dp) {
  Widened f;
  const int64_t B = p.dim(0), L = p.dim(1), C = p.dim(2) / 6;
  Work work(fam::ponet_pool_work(B, L, C, heads));
  typed_acts(activation_dtype(), [&](auto tag) {
    using T = decltype(tag);
    ok(fam::ponet_pool_backward(f.act<T>(p), f.act<T>(dy), f.act_out<T>(dp), B, L, C, heads, segment, local_kernel,
                                work.p, stream()),
       "ponet_pool backward");
  });
}

}  // namespace mf
