// The arithmetic of the paper networks' CUDA kernels (family_kernels.h), one output element or one
// reduction term at a time, as functions that both nvcc (the kernels) and the host compiler
// (tests/test_family_math.cpp) compile. The kernels are grid-stride loops and fixed-order sums
// (../backward_common.cuh) around these functions, so the host test checks every index and formula
// against the reference backend on any machine, GPU or not; what only a GPU can check is the launch
// around them (tools/device/cuda_check.sh families).
//
// No CUDA header here unless nvcc compiles it: on the host, activations are float.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#define MF_HD __host__ __device__
#else
#define MF_HD
#endif

namespace mf::cuda::families {

// ---- geometry and argument types (the launchers' too) ------------------------------------------
constexpr int kMaxRank = 6;
constexpr int kMaxShiftGroups = 64;
constexpr int kMaxBranches = 4;

// An axis permutation: output axis a has out_dim[a] elements, in_stride[a] apart in x (x's axis perm[a]).
struct PermuteGeometry {
  int rank;
  int64_t out_dim[kMaxRank];
  int64_t in_stride[kMaxRank];
};

struct Shifts {
  int v[kMaxShiftGroups];
};

// torch's bicubic interpolation along one axis, as tables made on the host from the reference's taps
// (ops/bicubic_taps.h):
//   forward: output o reads the input indices index[4·o + k] with weight[4·o + k];
//   adjoint: input i receives from the outputs adj_out[adj_begin[i] .. adj_begin[i+1]) with the
//            weights adj_weight[...] (each output's taps that land on i, summed).
struct BicubicAxis {
  int64_t in = 0, out = 0;
  const int* index = nullptr;      // [out, 4]
  const double* weight = nullptr;  // [out, 4]
  const int* adj_begin = nullptr;  // [in + 1]
  const int* adj_out = nullptr;    // [adj_begin[in]]
  const double* adj_weight = nullptr;
};

struct Window {
  int kh, kw, sh, sw, ph, pw;
};

enum class GateKind : int { full = 0, position = 1, channel = 2 };

template <class T>
struct Branches {
  const T* p[kMaxBranches];
  int K;
};
template <class T>
struct BranchGrads {
  T* p[kMaxBranches];
  int K;
};

namespace math {

// ---- element access: float everywhere, bf16 where nvcc compiles -------------------------------
MF_HD inline float ld(float v) { return v; }
template <class T>
MF_HD inline T narrow(float v);
template <>
MF_HD inline float narrow<float>(float v) {
  return v;
}
#if defined(__CUDACC__)
MF_HD inline float ld(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
MF_HD inline __nv_bfloat16 narrow<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
#endif

MF_HD inline int64_t lmax(int64_t a, int64_t b) { return a > b ? a : b; }
MF_HD inline int64_t lmin(int64_t a, int64_t b) { return a < b ? a : b; }
// Floor division for a possibly negative numerator and a positive divisor.
MF_HD inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// ---- layout ---------------------------------------------------------------------------------------
// The geometry of x.permute(perm) for x of shape dims (rank ≤ kMaxRank); false for a bad rank or axis.
MF_HD inline bool permute_geometry(int rank, const int64_t* dims, const int* perm, PermuteGeometry& g) {
  if (rank < 1 || rank > kMaxRank) return false;
  int64_t stride[kMaxRank], n = 1;
  for (int a = rank - 1; a >= 0; --a) {
    stride[a] = n;
    n *= dims[a];
  }
  g.rank = rank;
  for (int a = 0; a < rank; ++a) {
    if (perm[a] < 0 || perm[a] >= rank) return false;
    g.out_dim[a] = dims[perm[a]];
    g.in_stride[a] = stride[perm[a]];
  }
  return true;
}

// The element of x that output element i of the permutation copies.
MF_HD inline int64_t permute_source(int64_t i, const PermuteGeometry& g) {
  int64_t rest = i, src = 0;
  for (int a = g.rank - 1; a >= 0; --a) {
    src += (rest % g.out_dim[a]) * g.in_stride[a];
    rest /= g.out_dim[a];
  }
  return src;
}

// The element of x [B, H, W, C] that element i of the shifted map copies: channel c of group
// c / group_width rolled by shifts[group] along axis 1 (H) or 2 (W), as torch.roll.
MF_HD inline int64_t shift_source(int64_t i, int64_t H, int64_t W, int64_t C, int axis, int64_t group_width,
                                  const int* shifts) {
  const int64_t c = i % C;
  int64_t r = i / C;
  const int64_t w = r % W;
  r /= W;
  const int64_t h = r % H, b = r / H;
  const int64_t len = axis == 1 ? H : W, at = axis == 1 ? h : w;
  const int64_t s = shifts[c / group_width];
  const int64_t from = ((at - s) % len + len) % len;
  return ((b * H + (axis == 1 ? from : h)) * W + (axis == 1 ? w : from)) * C + c;
}

// Forward: element i of y [B, ay.out, ax.out, C] from x [B, ay.in, ax.in, C] by its 4 × 4 taps.
template <class T>
MF_HD double bicubic_forward_at(const T* x, int64_t i, int64_t C, const BicubicAxis& ay, const BicubicAxis& ax) {
  const int64_t c = i % C;
  int64_t r = i / C;
  const int64_t ox = r % ax.out;
  r /= ax.out;
  const int64_t oy = r % ay.out, b = r / ay.out;
  double sum = 0;
  for (int u = 0; u < 4; ++u) {
    const double wy = ay.weight[oy * 4 + u];
    const int64_t row = (b * ay.in + ay.index[oy * 4 + u]) * ax.in;
    for (int v = 0; v < 4; ++v)
      sum += wy * ax.weight[ox * 4 + v] * static_cast<double>(ld(x[(row + ax.index[ox * 4 + v]) * C + c]));
  }
  return sum;
}

// Adjoint: element i of y [B, ay.in, ax.in, C] gathered from x [B, ay.out, ax.out, C] through the
// transposed tables.
template <class T>
MF_HD double bicubic_adjoint_at(const T* x, int64_t i, int64_t C, const BicubicAxis& ay, const BicubicAxis& ax) {
  const int64_t c = i % C;
  int64_t r = i / C;
  const int64_t ix = r % ax.in;
  r /= ax.in;
  const int64_t iy = r % ay.in, b = r / ay.in;
  double sum = 0;
  for (int u = ay.adj_begin[iy]; u < ay.adj_begin[iy + 1]; ++u) {
    const double wy = ay.adj_weight[u];
    const int64_t row = (b * ay.out + ay.adj_out[u]) * ax.out;
    for (int v = ax.adj_begin[ix]; v < ax.adj_begin[ix + 1]; ++v)
      sum += wy * ax.adj_weight[v] * static_cast<double>(ld(x[(row + ax.adj_out[v]) * C + c]));
  }
  return sum;
}

// ---- pooling ----------------------------------------------------------------------------------------
// The offset in x [B, H, W, C] of the maximum of output (b, oh, ow)'s window for channel c: the first
// in row-major window order among equals, never the padding (PyTorch's rule, as the reference's); -1
// for a window with no pixel inside.
template <class T>
MF_HD int64_t window_argmax(const T* x, int64_t b, int64_t oh, int64_t ow, int64_t c, int64_t H, int64_t W, int64_t C,
                            const Window& g) {
  int64_t best = -1;
  float best_value = -INFINITY;
  for (int ki = 0; ki < g.kh; ++ki) {
    const int64_t i = oh * g.sh - g.ph + ki;
    if (i < 0 || i >= H) continue;
    for (int kj = 0; kj < g.kw; ++kj) {
      const int64_t j = ow * g.sw - g.pw + kj;
      if (j < 0 || j >= W) continue;
      const int64_t at = ((b * H + i) * W + j) * C + c;
      const float v = ld(x[at]);
      if (best < 0 || v > best_value) best = at, best_value = v;
    }
  }
  return best;
}

// The input offset whose value output element e of max pooling takes (-1: none).
template <class T>
MF_HD int64_t max_pool_source(const T* x, int64_t e, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo,
                              const Window& g) {
  const int64_t c = e % C;
  int64_t r = e / C;
  const int64_t ow = r % Wo;
  r /= Wo;
  const int64_t oh = r % Ho, b = r / Ho;
  return window_argmax(x, b, oh, ow, c, H, W, C, g);
}

// dx of input element e: dy of every window holding the pixel whose maximum it is, in window order.
template <class T>
MF_HD double max_pool_backward_at(const T* x, const T* dy, int64_t e, int64_t H, int64_t W, int64_t C, int64_t Ho,
                                  int64_t Wo, const Window& g) {
  const int64_t c = e % C;
  int64_t r = e / C;
  const int64_t j = r % W;
  r /= W;
  const int64_t i = r % H, b = r / H;
  // The windows oh with oh·sh − ph ≤ i ≤ oh·sh − ph + kh − 1.
  const int64_t oh0 = lmax(0, floor_div(i + g.ph - g.kh, g.sh) + 1), oh1 = lmin(Ho - 1, floor_div(i + g.ph, g.sh));
  const int64_t ow0 = lmax(0, floor_div(j + g.pw - g.kw, g.sw) + 1), ow1 = lmin(Wo - 1, floor_div(j + g.pw, g.sw));
  double sum = 0;
  for (int64_t oh = oh0; oh <= oh1; ++oh)
    for (int64_t ow = ow0; ow <= ow1; ++ow)
      if (window_argmax(x, b, oh, ow, c, H, W, C, g) == e) sum += ld(dy[((b * Ho + oh) * Wo + ow) * C + c]);
  return sum;
}

// Element e of y [B, H/f, W/f, C] = scale · the sum of its f×f window of x [B, H, W, C].
template <class T>
MF_HD double sum_pool_at(const T* x, int64_t e, int64_t H, int64_t W, int64_t C, int f, float scale) {
  const int64_t h = H / f, w = W / f;
  const int64_t c = e % C;
  int64_t r = e / C;
  const int64_t j = r % w;
  r /= w;
  const int64_t i = r % h, b = r / h;
  double acc = 0;
  for (int a = 0; a < f; ++a)
    for (int q = 0; q < f; ++q) acc += ld(x[((b * H + i * f + a) * W + j * f + q) * C + c]);
  return scale * acc;
}

// The element of x [B, h, w, C] that element e of y [B, h·f, w·f, C] repeats.
MF_HD inline int64_t upsample_source(int64_t e, int64_t h, int64_t w, int64_t C, int f) {
  const int64_t H = h * f, W = w * f;
  const int64_t c = e % C;
  int64_t r = e / C;
  const int64_t j = r % W;
  r /= W;
  const int64_t i = r % H, b = r / H;
  return ((b * h + i / f) * w + j / f) * C + c;
}

// The element of w [Ci, Co, kh, kw] at element e of the GEMM weight [(ky, kx, co), ci].
MF_HD inline int64_t conv_transpose_weight_source(int64_t e, int64_t Ci, int64_t Co, int kh, int kw) {
  const int64_t ci = e % Ci;
  int64_t r = e / Ci;
  const int64_t co = r % Co;
  r /= Co;
  const int64_t kx = r % kw, ky = r / kw;
  return ((ci * Co + co) * kh + ky) * kw + kx;
}

// ---- Strip-MLP ----------------------------------------------------------------------------------------
// strip_mix's geometry: the mixed axis (length L, index m or o) and the tap axis (length P, index p);
// channel c belongs to group c mod G.
struct Strip {
  int64_t B, H, W, C, L, P, G;
  int axis;
  MF_HD Strip(int64_t b, int64_t h, int64_t w, int64_t c, int a, int64_t g)
      : B(b), H(h), W(w), C(c), L(a == 2 ? w : h), P(a == 2 ? h : w), G(g), axis(a) {}
  // Offset of position (p, m) of sample b, channel 0.
  MF_HD int64_t at(int64_t b, int64_t p, int64_t m) const {
    return (axis == 2 ? (b * H + p) * W + m : (b * H + m) * W + p) * C;
  }
  // The (b, p, m) of pixel r = (b·H + h)·W + w.
  MF_HD void split(int64_t r, int64_t& b, int64_t& p, int64_t& m) const {
    const int64_t w = r % W, h = (r / W) % H;
    b = r / (W * H);
    p = axis == 2 ? h : w;
    m = axis == 2 ? w : h;
  }
  MF_HD int64_t weight(int64_t g, int64_t o, int64_t m, int t) const { return ((g * L + o) * L + m) * 3 + t; }
  // Channels per group, counting a partial last one (the reference walks c = g, g + G, … < C).
  MF_HD int64_t per_group() const { return (C + G - 1) / G; }
};

// Element i of y = b[g·L + o] + Σ_{t, m} w[g, o, m, t] · x[p + t − 1, m].
template <class T>
MF_HD double strip_mix_at(const T* x, const float* w, const float* bias, int64_t i, const Strip& s) {
  const int64_t c = i % s.C;
  int64_t b, p, o;
  s.split(i / s.C, b, p, o);
  const int64_t g = c % s.G;
  double acc = bias ? bias[g * s.L + o] : 0.0;
  for (int t = 0; t < 3; ++t) {
    const int64_t q = p + t - 1;
    if (q < 0 || q >= s.P) continue;
    for (int64_t m = 0; m < s.L; ++m) acc += static_cast<double>(w[s.weight(g, o, m, t)]) * ld(x[s.at(b, q, m) + c]);
  }
  return acc;
}

// Element i of dx: dx[q, m] = Σ_{o, t} w[g, o, m, t] · dy[q − t + 1, o].
template <class T>
MF_HD double strip_mix_dx_at(const float* w, const T* dy, int64_t i, const Strip& s) {
  const int64_t c = i % s.C;
  int64_t b, q, m;
  s.split(i / s.C, b, q, m);
  const int64_t g = c % s.G;
  double acc = 0;
  for (int t = 0; t < 3; ++t) {
    const int64_t p = q - t + 1;
    if (p < 0 || p >= s.P) continue;
    for (int64_t o = 0; o < s.L; ++o) acc += static_cast<double>(w[s.weight(g, o, m, t)]) * ld(dy[s.at(b, p, o) + c]);
  }
  return acc;
}

// dw[g, o, m, t] += Σ_{b, p, channels c of g} dy[b, p, o, c] · x[b, p + t − 1, m, c]: a group sum per
// weight (group = the weight's index), its terms i ordered (b, p, c).
template <class T>
struct StripWeightGrad {
  const T* x;
  const T* dy;
  float* dw;
  Strip s;
  MF_HD void operator()(int64_t group, int64_t i, double* v) const {
    const int t = static_cast<int>(group % 3);
    const int64_t m = (group / 3) % s.L, o = (group / (3 * s.L)) % s.L, g = group / (3 * s.L * s.L);
    const int64_t k = i % s.per_group(), p = (i / s.per_group()) % s.P, b = i / (s.per_group() * s.P);
    const int64_t c = g + k * s.G, q = p + t - 1;
    v[0] =
        c < s.C && q >= 0 && q < s.P ? static_cast<double>(ld(dy[s.at(b, p, o) + c])) * ld(x[s.at(b, q, m) + c]) : 0.0;
  }
  MF_HD void finish(int64_t group, const double* sums) const { dw[group] += static_cast<float>(sums[0]); }
};

// db[g·L + o] += Σ_{b, p, channels c of g} dy[b, p, o, c].
template <class T>
struct StripBiasGrad {
  const T* dy;
  float* db;
  Strip s;
  MF_HD void operator()(int64_t group, int64_t i, double* v) const {
    const int64_t o = group % s.L, g = group / s.L;
    const int64_t k = i % s.per_group(), p = (i / s.per_group()) % s.P, b = i / (s.per_group() * s.P);
    const int64_t c = g + k * s.G;
    v[0] = c < s.C ? static_cast<double>(ld(dy[s.at(b, p, o) + c])) : 0.0;
  }
  MF_HD void finish(int64_t group, const double* sums) const { db[group] += static_cast<float>(sums[0]); }
};

// softmax over the K logits of (sample b, channel c) (at (b·C + c)·K), in double.
MF_HD inline void branch_weights(const float* logits, int64_t b, int64_t c, int64_t C, int K, double* a) {
  const float* l = logits + (b * C + c) * K;
  double mx = l[0], sum = 0;
  for (int k = 1; k < K; ++k) mx = fmax(mx, static_cast<double>(l[k]));
  for (int k = 0; k < K; ++k) sum += a[k] = exp(static_cast<double>(l[k]) - mx);
  for (int k = 0; k < K; ++k) a[k] /= sum;
}

// Element i of the reweighted sum (branches [B, per, C]).
template <class T>
MF_HD double split_attention_at(const Branches<T>& br, const float* logits, int64_t i, int64_t per, int64_t C) {
  double a[kMaxBranches];
  branch_weights(logits, i / (per * C), i % C, C, br.K, a);
  double acc = 0;
  for (int k = 0; k < br.K; ++k) acc += a[k] * ld(br.p[k][i]);
  return acc;
}

// dbranch_k at element i = a_k · dy[i].
template <class T>
MF_HD void split_attention_dbranches_at(const float* logits, const T* dy, const BranchGrads<T>& d, int64_t i,
                                        int64_t per, int64_t C) {
  double a[kMaxBranches];
  branch_weights(logits, i / (per * C), i % C, C, d.K, a);
  const double g = ld(dy[i]);
  for (int k = 0; k < d.K; ++k) d.p[k][i] = narrow<T>(static_cast<float>(a[k] * g));
}

// da_k = Σ over the positions of dy · branch_k for each (sample, channel): a column of the [per, B·C]
// view; then softmax's Jacobian, dl_k = a_k (da_k − Σ_j a_j da_j).
template <class T, int K>
struct SplitLogitGrad {
  Branches<T> br;
  const T* dy;
  const float* logits;
  float* dlogits;
  int64_t per, C;
  MF_HD void operator()(int64_t r, int64_t col, double* v) const {
    const int64_t i = ((col / C) * per + r) * C + col % C;
    const double g = ld(dy[i]);
    for (int k = 0; k < K; ++k) v[k] = g * ld(br.p[k][i]);
  }
  MF_HD void store(int64_t col, const double* da) const {
    double a[kMaxBranches];
    branch_weights(logits, col / C, col % C, C, K, a);
    double dot = 0;
    for (int k = 0; k < K; ++k) dot += a[k] * da[k];
    for (int k = 0; k < K; ++k) dlogits[col * K + k] = static_cast<float>(a[k] * (da[k] - dot));
  }
};

// GRN over x [B, N, C]: column sums over the positions of each (sample, channel), the [N, B·C] view:
// K = 1: Σx²; K = 3: Σx², Σx·dy, Σdy.
template <class T, int K>
struct GrnSums {
  const T* x;
  const T* dy;  // null when K = 1
  double* out;  // [B·C, K]
  int64_t N, C;
  MF_HD void operator()(int64_t r, int64_t col, double* v) const {
    const int64_t i = ((col / C) * N + r) * C + col % C;
    const double xv = ld(x[i]);
    v[0] = xv * xv;
    if constexpr (K == 3) {
      const double g = ld(dy[i]);
      v[1] = xv * g;
      v[2] = g;
    }
  }
  MF_HD void store(int64_t col, const double* s) const {
    for (int k = 0; k < K; ++k) out[col * K + k] = s[k];
  }
};

// Element i of y = γ·x·n + β + x, n = g / (mean_c g + 1e-6) per (sample, channel) in nx.
template <class T>
MF_HD double grn_at(const T* x, const float* gamma, const float* beta, const double* nx, int64_t i, int64_t N,
                    int64_t C) {
  const int64_t c = i % C, b = i / (N * C);
  const double v = ld(x[i]);
  return gamma[c] * v * nx[b * C + c] + beta[c] + v;
}

// GRN's backward per (sample, channel), from S = [Σx², Σx·dy, Σdy], the sample's mean m of g = √Σx²
// (inv = 1 / (m + 1e-6)) and sg = Σ_c γ_c (Σx·dy)_c g_c: with s_c = γ_c (Σx·dy)_c,
// dL/dg_c = s_c·inv − sg·inv² / C. Writes e = [dy's factor 1 + γ g inv, x's factor dL/dg / g (0
// where g = 0), dγ's term (Σx·dy) g inv, dβ's term Σdy].
MF_HD inline void grn_coefficients(const double* S, float gamma, double inv, double sg, int64_t C, double* e) {
  const double g = sqrt(S[0]), sc = gamma * S[1];
  const double dg = sc * inv - sg * inv * inv / static_cast<double>(C);
  e[0] = 1.0 + gamma * g * inv;
  e[1] = g > 0 ? dg / g : 0.0;
  e[2] = S[1] * g * inv;
  e[3] = S[2];
}

// ---- CAS-ViT's gate -------------------------------------------------------------------------------------
// Where element i of x [B, per, C] reads its gate.
MF_HD inline int64_t gate_index(int64_t i, int64_t per, int64_t C, GateKind kind) {
  switch (kind) {
    case GateKind::full:
      return i;
    case GateKind::position:
      return i / C;
    case GateKind::channel:
      return i / (per * C) * C + i % C;
  }
  return i;
}
MF_HD inline double gate_sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }
// f(g) and f'(g).
MF_HD inline double gate_value(double g, bool sig) { return sig ? gate_sigmoid(g) : g; }
MF_HD inline double gate_slope(double g, bool sig) {
  if (!sig) return 1.0;
  const double s = gate_sigmoid(g);
  return s * (1.0 - s);
}

// A gate per position: dg[p] = f'(g[p]) · Σ_c dy · x over the position's C contiguous channels.
template <class T>
struct PositionGateGrad {
  const T *x, *dy, *g;
  T* dg;
  int64_t C;
  bool sig;
  MF_HD void operator()(int64_t p, int64_t c, double* v) const {
    const int64_t i = p * C + c;
    v[0] = static_cast<double>(ld(dy[i])) * ld(x[i]);
  }
  MF_HD void finish(int64_t p, const double* s) const {
    dg[p] = narrow<T>(static_cast<float>(s[0] * gate_slope(ld(g[p]), sig)));
  }
};

// A gate per sample and channel: dg[b, c] = f'(g[b, c]) · Σ over the positions of dy · x, a column of
// the [per, B·C] view.
template <class T>
struct ChannelGateGrad {
  const T *x, *dy, *g;
  T* dg;
  int64_t per, C;
  bool sig;
  MF_HD void operator()(int64_t r, int64_t col, double* v) const {
    const int64_t i = ((col / C) * per + r) * C + col % C;
    v[0] = static_cast<double>(ld(dy[i])) * ld(x[i]);
  }
  MF_HD void store(int64_t col, const double* s) const {
    dg[col] = narrow<T>(static_cast<float>(s[0] * gate_slope(ld(g[col]), sig)));
  }
};

// ---- BatchNorm over x [rows, C] -------------------------------------------------------------------------
// The statistics: the mean first (kept in double for the second pass), then the centred squares.
template <class T>
struct ChannelMean {
  const T* x;
  float* mean;
  double* mean_d;
  int64_t rows, C;
  MF_HD void operator()(int64_t r, int64_t c, double* v) const { v[0] = ld(x[r * C + c]); }
  MF_HD void store(int64_t c, const double* s) const {
    mean_d[c] = s[0] / static_cast<double>(rows);
    mean[c] = static_cast<float>(mean_d[c]);
  }
};
template <class T>
struct ChannelVar {
  const T* x;
  const double* mean_d;
  float* var;
  int64_t rows, C;
  MF_HD void operator()(int64_t r, int64_t c, double* v) const {
    const double d = ld(x[r * C + c]) - mean_d[c];
    v[0] = d * d;
  }
  MF_HD void store(int64_t c, const double* s) const { var[c] = static_cast<float>(s[0] / static_cast<double>(rows)); }
};

MF_HD inline double bn_rstd(const float* var, int64_t c, float eps) {
  return 1.0 / sqrt(static_cast<double>(var[c]) + eps);
}

// Element i of y = (x − mean) · rstd · w + b.
template <class T>
MF_HD double batch_norm_at(const T* x, const float* w, const float* b, const float* mean, const float* var, float eps,
                           int64_t i, int64_t C) {
  const int64_t c = i % C;
  return (ld(x[i]) - static_cast<double>(mean[c])) * bn_rstd(var, c, eps) * w[c] + (b ? b[c] : 0.0);
}

// Σ dy and Σ dy · x̂ per channel, kept for dx ([C, 2]) and added into dw, db.
template <class T>
struct BatchNormSums {
  const T *x, *dy;
  const float *mean, *var;
  float eps;
  double* sums;
  float *dw, *db;
  int64_t C;
  MF_HD void operator()(int64_t r, int64_t c, double* v) const {
    const int64_t i = r * C + c;
    const double g = ld(dy[i]);
    v[0] = g;
    v[1] = g * (ld(x[i]) - static_cast<double>(mean[c])) * bn_rstd(var, c, eps);
  }
  MF_HD void store(int64_t c, const double* s) const {
    sums[c * 2] = s[0];
    sums[c * 2 + 1] = s[1];
    if (dw) dw[c] += static_cast<float>(s[1]);
    if (db) db[c] += static_cast<float>(s[0]);
  }
};

// Element i of dx = rstd · w · (dy − [batch statistics] (Σdy / rows + x̂ · Σdy·x̂ / rows)).
template <class T>
MF_HD double batch_norm_dx_at(const T* x, const float* w, const float* mean, const float* var, float eps,
                              bool batch_stats, const T* dy, const double* sums, int64_t i, int64_t rows, int64_t C) {
  const int64_t c = i % C;
  const double rstd = bn_rstd(var, c, eps);
  double g = ld(dy[i]);
  if (batch_stats) {
    const double xh = (ld(x[i]) - static_cast<double>(mean[c])) * rstd, nr = static_cast<double>(rows);
    g -= sums[c * 2] / nr + xh * sums[c * 2 + 1] / nr;
  }
  return rstd * w[c] * g;
}

}  // namespace math
}  // namespace mf::cuda::families
