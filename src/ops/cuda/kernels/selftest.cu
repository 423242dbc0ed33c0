// Standalone check of every kernel in kernels.h against a plain host reference in double (the
// reference backend's semantics, src/ops/ref), on awkward shapes, in float and bf16 storage. Not
// part of the library: tools/device/cudak_selftest.sh builds it with its own main.
//
// Each case prints one line (PASS/FAIL, name, dtype, relative Frobenius error ‖y − ref‖ / ‖ref‖,
// tolerance); a summary follows; the exit status is 1 when any case fails. Outputs are poisoned
// (all bytes 0xFF: NaN in both dtypes) before each launch, so an unwritten element fails the case.
//
// Tolerances (docs/tolerances.md's rules; a case also needs max |y − ref| ≤ 10 · tol · max |ref|):
//   float: 1e-6 for elementwise ops, 9-term pools and 4-term Haar sums; 1e-5 for reductions (norms,
//          global pooling, depthwise sums of up to 49 terms, attention); 0 for copies.
//   bf16:  1e-2: the reference gets the same bf16-rounded inputs, so what remains is the rounding of
//          the stored output (≤ 2^-9 relative per element) and, in fused ops, of one intermediate
//          (the residual before its norm, attention's probabilities before P·V); 0 for copies.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "event_timing.h"
#include "kernels.h"

namespace k = mf::cuda::kernels;
using k::Act;
using k::ActKind;
using k::bf16;

namespace {

int g_pass = 0, g_fail = 0;

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "selftest: %s failed: %s\n", what, cudaGetErrorString(e));
    std::exit(2);
  }
}

// ---- host storage conversions ----
float bf16_to_float(bf16 v) {
  uint32_t u = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
bf16 float_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}
template <typename T> T store(float v);
template <> float store<float>(float v) { return v; }
template <> bf16 store<bf16>(float v) { return float_to_bf16(v); }
float load(float v) { return v; }
float load(bf16 v) { return bf16_to_float(v); }
template <typename T> const char* dtype_name();
template <> const char* dtype_name<float>() { return "f32"; }
template <> const char* dtype_name<bf16>() { return "bf16"; }
template <typename T> double tol_for(double f32_tol) { return std::is_same<T, float>::value ? f32_tol : (f32_tol == 0 ? 0 : 1e-2); }

// A device array of T made from host floats (rounded to T; the host vector is updated to the
// rounded values so that the reference sees exactly what the kernel reads).
template <typename T> struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) {
    cuda_check(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc");
    poison();
  }
  explicit Dev(std::vector<float>& host) : Dev(host.size()) {
    std::vector<T> tmp(n);
    for (size_t i = 0; i < n; ++i) {
      tmp[i] = store<T>(host[i]);
      host[i] = load(tmp[i]);
    }
    cuda_check(cudaMemcpy(p, tmp.data(), n * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  void poison() { cuda_check(cudaMemset(p, 0xFF, std::max<size_t>(n, 1) * sizeof(T)), "poison"); }
  std::vector<float> get() const {
    std::vector<T> tmp(n);
    cuda_check(cudaMemcpy(tmp.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "download");
    std::vector<float> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = load(tmp[i]);
    return out;
  }
};

// A fixed-seed 64-bit LCG (not <random>: nvcc 11.8's front end rejects libstdc++ 12's <random>).
uint64_t g_rng = 0x9E3779B97F4A7C15ull;
float uniform01() {
  g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
  return static_cast<float>(g_rng >> 40) * (1.f / 16777216.f);  // 24 random bits
}
std::vector<float> randv(size_t n, float lo = -1.f, float hi = 1.f) {
  std::vector<float> v(n);
  for (auto& x : v) x = lo + (hi - lo) * uniform01();
  return v;
}

void launched(cudaError_t e, const std::string& name) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "selftest: launch of %s returned %s\n", name.c_str(), cudaGetErrorString(e));
    std::exit(2);
  }
  cuda_check(cudaDeviceSynchronize(), name.c_str());
}

void report(const std::string& name, const char* dtype, const std::vector<float>& got, const std::vector<double>& ref,
            double tol) {
  double num = 0, den = 0, maxerr = 0, maxref = 0;
  bool finite = got.size() == ref.size();
  for (size_t i = 0; i < ref.size() && finite; ++i) {
    if (!std::isfinite(got[i])) {
      finite = false;
      break;
    }
    const double d = got[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
    maxerr = std::max(maxerr, std::fabs(d));
    maxref = std::max(maxref, std::fabs(ref[i]));
  }
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  const bool ok = finite && rel <= tol && maxerr <= 10 * tol * std::max(maxref, 1e-30);
  (ok ? g_pass : g_fail)++;
  if (finite)
    std::printf("%s  %-58s %-4s rel %.2e  max %.2e  tol %.0e\n", ok ? "PASS" : "FAIL", name.c_str(), dtype, rel, maxerr,
                tol);
  else
    std::printf("FAIL  %-58s %-4s non-finite or unwritten output\n", name.c_str(), dtype);
}

// ---- host references (double) ----
double act_ref(const Act& a, double x) {
  switch (a.kind) {
    case ActKind::Identity: return x;
    case ActKind::GELU: return 0.5 * x * (1.0 + std::erf(x * M_SQRT1_2));
    case ActKind::StarReLU: { const double r = x > 0 ? x : 0; return a.scale * r * r + a.bias; }
    case ActKind::SquaredReLU: { const double r = x > 0 ? x : 0; return r * r; }
    case ActKind::ReLU: return x > 0 ? x : 0;
    case ActKind::SiLU: return x / (1.0 + std::exp(-x));
    case ActKind::SoftShrink: return x > a.threshold ? x - a.threshold : x < -a.threshold ? x + a.threshold : 0.0;
  }
  return x;
}
const char* act_str(ActKind a) {
  static const char* n[] = {"id", "gelu", "starrelu", "sqrelu", "relu", "silu", "softshrink"};
  return n[static_cast<int>(a)];
}
Act star() { return Act{ActKind::StarReLU, 0.8944f, -0.4472f, 0.f}; }
Act act_of(ActKind kind) {
  Act a{kind};
  if (kind == ActKind::StarReLU) a = star();
  if (kind == ActKind::SoftShrink) a.threshold = 0.5f;
  return a;
}

// ================================ cases ================================

template <typename T> void t_binary(int64_t n) {
  auto a = randv(n), b = randv(n);
  Dev<T> da(a), db(b), dy(n);
  for (int op = 0; op < 2; ++op) {
    dy.poison();
    launched(op == 0 ? k::add(da.p, db.p, dy.p, n, 0) : k::mul(da.p, db.p, dy.p, n, 0), "binary");
    std::vector<double> ref(n);
    for (int64_t i = 0; i < n; ++i) ref[i] = op == 0 ? double(a[i]) + b[i] : double(a[i]) * b[i];
    report(std::string(op == 0 ? "add" : "mul") + "/n" + std::to_string(n), dtype_name<T>(), dy.get(), ref,
           tol_for<T>(1e-6));
  }
}

template <typename T> void t_activation(int64_t n) {
  for (int kind = 0; kind <= 6; ++kind) {
    const Act a = act_of(static_cast<ActKind>(kind));
    auto x = randv(n, -4.f, 4.f);
    Dev<T> dx(x), dy(n);
    launched(k::activation(dx.p, dy.p, n, a, 0), "activation");
    std::vector<double> ref(n);
    for (int64_t i = 0; i < n; ++i) ref[i] = act_ref(a, x[i]);
    report(std::string("activation/") + act_str(a.kind) + " n" + std::to_string(n), dtype_name<T>(), dy.get(), ref,
           tol_for<T>(1e-6));
  }
}

template <typename T> void t_channel_affine(int64_t rows, int64_t C, bool scale, bool bias, ActKind kind,
                                            bool inplace) {
  const Act a = act_of(kind);
  auto x = randv(rows * C, -3.f, 3.f), s = randv(C, 0.3f, 1.5f), b = randv(C);
  Dev<T> dx(x), dy(rows * C);
  std::vector<float> s_copy = s, b_copy = b;
  Dev<float> ds(s_copy), dbias(b_copy);
  T* out = inplace ? dx.p : dy.p;
  launched(k::channel_affine_act(dx.p, scale ? ds.p : nullptr, bias ? dbias.p : nullptr, out, rows, C, a, 0),
           "channel_affine_act");
  std::vector<double> ref(rows * C);
  for (int64_t i = 0; i < rows * C; ++i) {
    const int64_t c = i % C;
    ref[i] = act_ref(a, double(x[i]) * (scale ? s[c] : 1.0) + (bias ? b[c] : 0.0));
  }
  char name[128];
  std::snprintf(name, sizeof name, "channel_affine_act/r%lld C%lld%s%s %s%s", (long long)rows, (long long)C,
                scale ? " scale" : "", bias ? " bias" : "", act_str(kind), inplace ? " in-place" : "");
  report(name, dtype_name<T>(), inplace ? dx.get() : dy.get(), ref, tol_for<T>(1e-6));
}

template <typename T> void t_scaled_residual(int64_t rows, int64_t C) {
  for (int mode = 0; mode < 4; ++mode) {
    auto x = randv(rows * C), br = randv(rows * C), rs = randv(C, 0.3f, 1.f), ls = randv(C, 0.3f, 1.f);
    Dev<T> dx(x), dbr(br);
    Dev<float> drs(rs), dls(ls);
    const bool use_rs = mode & 1, use_ls = mode & 2;
    // y written over the branch (Backend::scaled_residual's usual aliasing)
    launched(k::scaled_residual(dx.p, use_rs ? drs.p : nullptr, dbr.p, use_ls ? dls.p : nullptr, dbr.p, rows, C, 0),
             "scaled_residual");
    std::vector<double> ref(rows * C);
    for (int64_t i = 0; i < rows * C; ++i) {
      const int64_t c = i % C;
      ref[i] = double(x[i]) * (use_rs ? rs[c] : 1.0) + double(br[i]) * (use_ls ? ls[c] : 1.0);
    }
    char name[128];
    std::snprintf(name, sizeof name, "scaled_residual/r%lld C%lld rs%d ls%d (y = branch)", (long long)rows,
                  (long long)C, int(use_rs), int(use_ls));
    report(name, dtype_name<T>(), dbr.get(), ref, tol_for<T>(1e-6));
  }
}

template <typename T> void t_sample_scale(int64_t B, int64_t per) {
  auto x = randv(B * per), s = randv(B, 0.f, 2.f);
  Dev<T> dx(x), dy(B * per);
  Dev<float> ds(s);
  launched(k::sample_scale(dx.p, ds.p, dy.p, B, per, 0), "sample_scale");
  std::vector<double> ref(B * per);
  for (int64_t i = 0; i < B * per; ++i) ref[i] = double(x[i]) * s[i / per];
  report("sample_scale/B" + std::to_string(B) + " per" + std::to_string(per), dtype_name<T>(), dy.get(), ref,
         tol_for<T>(1e-6));
}

template <typename T> void t_channel_slice(int64_t rows, int64_t C, int64_t off, int64_t w) {
  auto x = randv(rows * C);
  Dev<T> dx(x), dy(rows * w);
  launched(k::channel_slice(dx.p, dy.p, rows, C, off, w, 0), "channel_slice");
  std::vector<double> ref(rows * w);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < w; ++j) ref[r * w + j] = x[r * C + off + j];
  report("channel_slice/r" + std::to_string(rows) + " C" + std::to_string(C) + " [" + std::to_string(off) + "+" +
             std::to_string(w) + "]",
         dtype_name<T>(), dy.get(), ref, 0);
}

template <typename T> void t_glu(int64_t rows, int64_t Ct, int64_t cw, int64_t gate, int64_t value, int64_t width,
                                 ActKind kind) {
  const Act a = act_of(kind);
  auto t = randv(rows * Ct, -3.f, 3.f), c = randv(rows * std::max<int64_t>(cw, 1));
  Dev<T> dt(t), dc(c), dy(rows * width);
  launched(k::glu(dt.p, Ct, cw ? dc.p : nullptr, cw, gate, value, dy.p, rows, width, a, 0), "glu");
  std::vector<double> ref(rows * width);
  const int64_t from_t = width - cw;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < width; ++j) {
      const double g = act_ref(a, t[r * Ct + gate + j]);
      const double v = j < from_t ? t[r * Ct + value + j] : c[r * cw + j - from_t];
      ref[r * width + j] = g * v;
    }
  char name[128];
  std::snprintf(name, sizeof name, "glu/r%lld Ct%lld cw%lld gate%lld value%lld w%lld %s", (long long)rows,
                (long long)Ct, (long long)cw, (long long)gate, (long long)value, (long long)width, act_str(kind));
  report(name, dtype_name<T>(), dy.get(), ref, tol_for<T>(1e-6));
}

void t_cast(int64_t n) {
  auto x = randv(n, -100.f, 100.f);
  Dev<float> dx(x);
  Dev<bf16> db(n);
  launched(k::cast(dx.p, db.p, n, 0), "cast");
  std::vector<double> ref(n);
  for (int64_t i = 0; i < n; ++i) ref[i] = bf16_to_float(float_to_bf16(x[i]));
  report("cast/f32->bf16 n" + std::to_string(n), "bf16", db.get(), ref, 0);
  Dev<float> back(n);
  launched(k::cast(db.p, back.p, n, 0), "cast");
  report("cast/bf16->f32 n" + std::to_string(n), "f32", back.get(), ref, 0);
}

// LayerNorm reference over rows of C (x already as the kernel reads it).
std::vector<double> ln_ref(const std::vector<double>& x, const std::vector<float>& w, const std::vector<float>* b,
                           float eps, int64_t rows, int64_t C) {
  std::vector<double> y(rows * C);
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mean += x[r * C + c];
    mean /= C;
    for (int64_t c = 0; c < C; ++c) var += (x[r * C + c] - mean) * (x[r * C + c] - mean);
    var /= C;
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t c = 0; c < C; ++c) y[r * C + c] = (x[r * C + c] - mean) * inv * w[c] + (b ? (*b)[c] : 0.0);
  }
  return y;
}

template <typename TI, typename TO> void t_layer_norm(int64_t rows, int64_t C, bool bias, bool inplace) {
  auto x = randv(rows * C, -2.f, 4.f), w = randv(C, 0.5f, 1.5f), b = randv(C);  // mean ≈ 1: two-pass matters
  Dev<TI> dx(x);
  Dev<TO> dy(rows * C);
  Dev<float> dw(w), db(b);
  TO* out = dy.p;
  if constexpr (std::is_same<TI, TO>::value)
    if (inplace) out = dx.p;
  launched(k::layer_norm(dx.p, dw.p, bias ? db.p : nullptr, 1e-6f, out, rows, C, 0), "layer_norm");
  std::vector<double> xd(x.begin(), x.end());
  auto ref = ln_ref(xd, w, bias ? &b : nullptr, 1e-6f, rows, C);
  std::vector<float> got;
  if constexpr (std::is_same<TI, TO>::value)
    got = inplace ? dx.get() : dy.get();
  else
    got = dy.get();
  char name[128];
  std::snprintf(name, sizeof name, "layer_norm/r%lld C%lld%s%s%s", (long long)rows, (long long)C, bias ? " bias" : "",
                inplace ? " in-place" : "", std::is_same<TI, TO>::value ? "" : " f32->bf16");
  report(name, dtype_name<TO>(), got, ref, tol_for<TO>(1e-5));
}

template <typename T> void t_residual_layer_norm(int64_t rows, int64_t C, bool scales) {
  auto x = randv(rows * C, -2.f, 4.f), br = randv(rows * C), rs = randv(C, 0.3f, 1.f), ls = randv(C, 0.3f, 1.f);
  auto w = randv(C, 0.5f, 1.5f), b = randv(C);
  Dev<T> dx(x), dbr(br), dy(rows * C);
  Dev<float> drs(rs), dls(ls), dw(w), db(b);
  // residual written over x (in place), as the block boundary does
  launched(k::residual_layer_norm(dx.p, scales ? drs.p : nullptr, dbr.p, scales ? dls.p : nullptr, dx.p, dw.p, db.p,
                                  1e-5f, dy.p, rows, C, 0),
           "residual_layer_norm");
  std::vector<double> r(rows * C), rstored(rows * C);
  for (int64_t i = 0; i < rows * C; ++i) {
    const int64_t c = i % C;
    r[i] = double(x[i]) * (scales ? rs[c] : 1.0) + double(br[i]) * (scales ? ls[c] : 1.0);
    rstored[i] = load(store<T>(static_cast<float>(r[i])));  // what the kernel normalises
  }
  auto ref = ln_ref(rstored, w, &b, 1e-5f, rows, C);
  char name[128];
  std::snprintf(name, sizeof name, "residual_layer_norm/r%lld C%lld%s: residual", (long long)rows, (long long)C,
                scales ? " scales" : "");
  report(name, dtype_name<T>(), dx.get(), r, tol_for<T>(1e-6));
  std::snprintf(name, sizeof name, "residual_layer_norm/r%lld C%lld%s: norm", (long long)rows, (long long)C,
                scales ? " scales" : "");
  report(name, dtype_name<T>(), dy.get(), ref, tol_for<T>(1e-5));
}

template <typename TI, typename TO> void t_group_norm1(int64_t B, int64_t H, int64_t W, int64_t C, bool bias) {
  const int64_t per = H * W * C;
  auto x = randv(B * per, -1.f, 3.f), w = randv(C, 0.5f, 1.5f), b = randv(C);
  Dev<TI> dx(x);
  Dev<TO> dy(B * per);
  Dev<float> dw(w), db(b);
  Dev<char> ws(k::group_norm1_workspace_bytes(B, per));
  launched(k::group_norm1(dx.p, dw.p, bias ? db.p : nullptr, 1e-5f, dy.p, B, per, C, ws.p, 0), "group_norm1");
  std::vector<double> ref(B * per);
  for (int64_t n = 0; n < B; ++n) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < per; ++i) mean += x[n * per + i];
    mean /= per;
    for (int64_t i = 0; i < per; ++i) var += (x[n * per + i] - mean) * (x[n * per + i] - mean);
    var /= per;
    const double inv = 1.0 / std::sqrt(var + 1e-5);
    for (int64_t i = 0; i < per; ++i)
      ref[n * per + i] = (x[n * per + i] - mean) * inv * w[i % C] + (bias ? b[i % C] : 0.0);
  }
  char name[128];
  std::snprintf(name, sizeof name, "group_norm1/B%lld %lldx%lldx%lld%s%s", (long long)B, (long long)H, (long long)W,
                (long long)C, bias ? " bias" : "", std::is_same<TI, TO>::value ? "" : " f32->bf16");
  report(name, dtype_name<TO>(), dy.get(), ref, tol_for<TO>(1e-5));
}

struct Geo {
  int kh, kw, sh, sw, ph, pw;
};

template <typename T> void t_depthwise(int64_t B, int64_t H, int64_t W, int64_t C, Geo g, bool bias, Act pre,
                                       Act post, int64_t x_extra = 0, int64_t x_off = 0, int64_t y_extra = 0) {
  const int64_t Ho = (H + 2 * g.ph - g.kh) / g.sh + 1, Wo = (W + 2 * g.pw - g.kw) / g.sw + 1;
  const int64_t xs = C + x_extra, ys = C + y_extra;
  auto x = randv(B * H * W * xs, -2.f, 2.f), w = randv(C * g.kh * g.kw), b = randv(C);
  Dev<T> dx(x), dy(B * Ho * Wo * ys);
  Dev<float> dw(w), dwh(w.size()), db(b);
  launched(k::depthwise_weight_to_hwc(dw.p, dwh.p, C, g.kh, g.kw, 0), "depthwise_weight_to_hwc");
  launched(k::depthwise_conv2d(dx.p + x_off, xs, dwh.p, bias ? db.p : nullptr, dy.p, ys, B, H, W, C, Ho, Wo, g.kh,
                               g.kw, g.sh, g.sw, g.ph, g.pw, pre, post, 0),
           "depthwise_conv2d");
  auto got_all = dy.get();
  std::vector<float> got;
  std::vector<double> ref;
  for (int64_t n = 0; n < B; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow)
        for (int64_t c = 0; c < C; ++c) {
          double acc = bias ? b[c] : 0.0;
          for (int ki = 0; ki < g.kh; ++ki) {
            const int64_t ih = oh * g.sh - g.ph + ki;
            if (ih < 0 || ih >= H) continue;
            for (int kj = 0; kj < g.kw; ++kj) {
              const int64_t iw = ow * g.sw - g.pw + kj;
              if (iw < 0 || iw >= W) continue;
              acc += act_ref(pre, x[((n * H + ih) * W + iw) * xs + x_off + c]) * w[(c * g.kh + ki) * g.kw + kj];
            }
          }
          ref.push_back(act_ref(post, acc));
          got.push_back(got_all[((n * Ho + oh) * Wo + ow) * ys + c]);
        }
  char name[160];
  std::snprintf(name, sizeof name, "depthwise/%lldx%lldx%lldx%lld k%dx%d s%d p%d%s pre %s post %s%s", (long long)B,
                (long long)H, (long long)W, (long long)C, g.kh, g.kw, g.sh, g.ph, bias ? " bias" : "",
                act_str(pre.kind), act_str(post.kind), (x_extra || y_extra) ? " strided" : "");
  report(name, dtype_name<T>(), got, ref, tol_for<T>(1e-5));
}

double pool_minus_ref(const std::vector<float>& x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t H, int64_t W,
                      int64_t C, int k) {
  const int64_t pad = k / 2;
  const int64_t h0 = std::max<int64_t>(0, h - pad), h1 = std::min<int64_t>(H, h - pad + k);
  const int64_t w0 = std::max<int64_t>(0, w - pad), w1 = std::min<int64_t>(W, w - pad + k);
  double acc = 0;
  for (int64_t i = h0; i < h1; ++i)
    for (int64_t j = w0; j < w1; ++j) acc += x[((n * H + i) * W + j) * C + c];
  return acc / double((h1 - h0) * (w1 - w0)) - x[((n * H + h) * W + w) * C + c];
}

template <typename T> void t_pool_minus(int64_t B, int64_t H, int64_t W, int64_t C, int kern) {
  auto x = randv(B * H * W * C);
  Dev<T> dx(x), dy(x.size());
  launched(k::pool_minus_input(dx.p, dy.p, B, H, W, C, kern, 0), "pool_minus_input");
  std::vector<double> ref(x.size());
  for (int64_t n = 0; n < B; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w)
        for (int64_t c = 0; c < C; ++c) ref[((n * H + h) * W + w) * C + c] = pool_minus_ref(x, n, h, w, c, H, W, C, kern);
  char name[128];
  std::snprintf(name, sizeof name, "pool_minus_input/%lldx%lldx%lldx%lld k%d", (long long)B, (long long)H,
                (long long)W, (long long)C, kern);
  report(name, dtype_name<T>(), dy.get(), ref, tol_for<T>(1e-6));
}

template <typename T> void t_pool_branch(int64_t B, int64_t H, int64_t W, int64_t C, bool scales) {
  const int64_t per = H * W * C;
  auto x = randv(B * per, -1.f, 3.f), w = randv(C, 0.5f, 1.5f), b = randv(C), rs = randv(C, 0.3f, 1.f),
       ls = randv(C, 0.3f, 1.f);
  Dev<T> dx(x), dy(B * per);
  Dev<float> dw(w), db(b), drs(rs), dls(ls);
  Dev<char> ws(k::group_norm1_workspace_bytes(B, per));
  launched(k::pool_branch(dx.p, dw.p, db.p, 1e-5f, 3, scales ? drs.p : nullptr, scales ? dls.p : nullptr, dy.p, B, H,
                          W, C, ws.p, 0),
           "pool_branch");
  // The unfused chain in double: n = group_norm1(x), pool(n) − n, scaled residual.
  std::vector<float> nrm(B * per);
  std::vector<double> ref(B * per);
  for (int64_t s = 0; s < B; ++s) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < per; ++i) mean += x[s * per + i];
    mean /= per;
    for (int64_t i = 0; i < per; ++i) var += (x[s * per + i] - mean) * (x[s * per + i] - mean);
    var /= per;
    const double inv = 1.0 / std::sqrt(var + 1e-5);
    for (int64_t i = 0; i < per; ++i) nrm[s * per + i] = float((x[s * per + i] - mean) * inv * w[i % C] + b[i % C]);
  }
  // (the norm is kept in float, as the reference backend's unfused chain stores it)
  for (int64_t n = 0; n < B; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t ww = 0; ww < W; ++ww)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t i = ((n * H + h) * W + ww) * C + c;
          const double br = pool_minus_ref(nrm, n, h, ww, c, H, W, C, 3);
          ref[i] = double(x[i]) * (scales ? rs[c] : 1.0) + br * (scales ? ls[c] : 1.0);
        }
  char name[128];
  std::snprintf(name, sizeof name, "pool_branch/%lldx%lldx%lldx%lld k3%s", (long long)B, (long long)H, (long long)W,
                (long long)C, scales ? " scales" : "");
  report(name, dtype_name<T>(), dy.get(), ref, tol_for<T>(1e-5));
}

template <typename TI, typename TO> void t_global_avg_pool(int64_t B, int64_t HW, int64_t C) {
  auto x = randv(B * HW * C);
  Dev<TI> dx(x);
  Dev<TO> dy(B * C);
  launched(k::global_avg_pool(dx.p, dy.p, B, HW, C, 0), "global_avg_pool");
  std::vector<double> ref(B * C);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t p = 0; p < HW; ++p) acc += x[(n * HW + p) * C + c];
      ref[n * C + c] = acc / HW;
    }
  char name[128];
  std::snprintf(name, sizeof name, "global_avg_pool/B%lld HW%lld C%lld%s", (long long)B, (long long)HW, (long long)C,
                std::is_same<TI, TO>::value ? "" : " bf16->f32");
  report(name, dtype_name<TI>(), dy.get(), ref, tol_for<TI>(1e-5));
}

template <typename T> void t_im2col(int64_t B, int64_t H, int64_t W, int64_t C, Geo g) {
  const int64_t Ho = (H + 2 * g.ph - g.kh) / g.sh + 1, Wo = (W + 2 * g.pw - g.kw) / g.sw + 1;
  const int64_t K = int64_t(g.kh) * g.kw * C;
  auto x = randv(B * H * W * C);
  Dev<T> dx(x), dc(B * Ho * Wo * K);
  launched(k::im2col_nhwc(dx.p, dc.p, B, H, W, C, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, Ho, Wo, 0), "im2col");
  std::vector<double> ref(B * Ho * Wo * K);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow)
        for (int ky = 0; ky < g.kh; ++ky)
          for (int kx = 0; kx < g.kw; ++kx)
            for (int64_t c = 0; c < C; ++c) {
              const int64_t ih = oh * g.sh - g.ph + ky, iw = ow * g.sw - g.pw + kx;
              ref[((n * Ho + oh) * Wo + ow) * K + (ky * g.kw + kx) * C + c] =
                  (ih >= 0 && ih < H && iw >= 0 && iw < W) ? x[((n * H + ih) * W + iw) * C + c] : 0.0;
            }
  char name[128];
  std::snprintf(name, sizeof name, "im2col/%lldx%lldx%lldx%lld k%d s%d p%d", (long long)B, (long long)H, (long long)W,
                (long long)C, g.kh, g.sh, g.ph);
  report(name, dtype_name<T>(), dc.get(), ref, 0);
}

template <typename T> void t_im2col_nchw(int64_t B, int64_t C, int64_t H, int64_t W, Geo g) {
  const int64_t Ho = (H + 2 * g.ph - g.kh) / g.sh + 1, Wo = (W + 2 * g.pw - g.kw) / g.sw + 1;
  const int64_t K = int64_t(g.kh) * g.kw * C;
  auto x = randv(B * C * H * W);
  Dev<float> dx(x);
  Dev<T> dc(B * Ho * Wo * K);
  launched(k::im2col_nchw(dx.p, dc.p, B, C, H, W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, Ho, Wo, 0), "im2col_nchw");
  std::vector<double> ref(B * Ho * Wo * K);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow)
        for (int ky = 0; ky < g.kh; ++ky)
          for (int kx = 0; kx < g.kw; ++kx)
            for (int64_t c = 0; c < C; ++c) {
              const int64_t ih = oh * g.sh - g.ph + ky, iw = ow * g.sw - g.pw + kx;
              ref[((n * Ho + oh) * Wo + ow) * K + (ky * g.kw + kx) * C + c] =
                  (ih >= 0 && ih < H && iw >= 0 && iw < W) ? load(store<T>(x[((n * C + c) * H + ih) * W + iw])) : 0.0;
            }
  char name[128];
  std::snprintf(name, sizeof name, "im2col_nchw/%lldx%lldx%lldx%lld k%d s%d p%d", (long long)B, (long long)C,
                (long long)H, (long long)W, g.kh, g.sh, g.ph);
  report(name, dtype_name<T>(), dc.get(), ref, 0);
}

template <typename T> void t_conv_weight(int64_t Co, int64_t Ci, int kh, int kw, int64_t ldk) {
  auto w = randv(Co * Ci * kh * kw);
  Dev<float> dw(w);
  Dev<T> dg(static_cast<size_t>(Co * ldk));
  launched(k::conv_weight_to_gemm(dw.p, dg.p, ldk, Co, Ci, kh, kw, 0), "conv_weight_to_gemm");
  std::vector<double> ref(static_cast<size_t>(Co * ldk), 0.0);  // zero past K
  for (int64_t co = 0; co < Co; ++co)
    for (int64_t ci = 0; ci < Ci; ++ci)
      for (int t = 0; t < kh * kw; ++t) ref[co * ldk + t * Ci + ci] = load(store<T>(w[(co * Ci + ci) * kh * kw + t]));
  report("conv_weight_to_gemm/" + std::to_string(Co) + "x" + std::to_string(Ci) + "x" + std::to_string(kh) + "x" +
             std::to_string(kw) + " ldk" + std::to_string(ldk),
         dtype_name<T>(), dg.get(), ref, 0);
}

template <typename TI, typename TO> void t_nchw(int64_t B, int64_t C, int64_t H, int64_t W) {
  auto x = randv(B * C * H * W);
  Dev<TI> dx(x);
  Dev<TO> dy(x.size());
  launched(k::nchw_to_nhwc(dx.p, dy.p, B, C, H, W, 0), "nchw_to_nhwc");
  std::vector<double> ref(x.size());
  for (int64_t n = 0; n < B; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < H * W; ++p) ref[(n * H * W + p) * C + c] = load(store<TO>(x[(n * C + c) * H * W + p]));
  char name[128];
  std::snprintf(name, sizeof name, "nchw_to_nhwc/%lldx%lldx%lldx%lld%s", (long long)B, (long long)C, (long long)H,
                (long long)W, std::is_same<TI, TO>::value ? "" : " f32->bf16");
  report(name, dtype_name<TO>(), dy.get(), ref, 0);
  if constexpr (std::is_same<TI, TO>::value) {  // and back
    Dev<TI> back(x.size());
    launched(k::nhwc_to_nchw(dy.p, back.p, B, H, W, C, 0), "nhwc_to_nchw");
    std::vector<double> xr(x.begin(), x.end());
    std::snprintf(name, sizeof name, "nhwc_to_nchw/%lldx%lldx%lldx%lld", (long long)B, (long long)H, (long long)W,
                  (long long)C);
    report(name, dtype_name<TI>(), back.get(), xr, 0);
  }
}

template <typename T> void t_attention(int64_t B, int64_t N, int heads, int d) {
  const int64_t A = int64_t(heads) * d;
  auto qkv = randv(B * N * 3 * A, -2.f, 2.f);
  Dev<T> dq(qkv), dy(B * N * A);
  const float scale = 1.f / std::sqrt(float(d));
  launched(k::attention(dq.p, dy.p, B, N, heads, d, scale, 0), "attention");
  std::vector<double> ref(B * N * A), logits(N);
  for (int64_t b = 0; b < B; ++b)
    for (int h = 0; h < heads; ++h)
      for (int64_t i = 0; i < N; ++i) {
        const float* q = &qkv[(b * N + i) * 3 * A + h * d];
        double mx = -INFINITY;
        for (int64_t j = 0; j < N; ++j) {
          const float* kk = &qkv[(b * N + j) * 3 * A + A + h * d];
          double s = 0;
          for (int e = 0; e < d; ++e) s += double(q[e]) * kk[e];
          logits[j] = s * scale;
          mx = std::max(mx, logits[j]);
        }
        double den = 0;
        for (int64_t j = 0; j < N; ++j) den += (logits[j] = std::exp(logits[j] - mx));
        for (int e = 0; e < d; ++e) {
          double acc = 0;
          for (int64_t j = 0; j < N; ++j) acc += logits[j] * qkv[(b * N + j) * 3 * A + 2 * A + h * d + e];
          ref[(b * N + i) * A + h * d + e] = acc / den;
        }
      }
  char name[128];
  std::snprintf(name, sizeof name, "attention/B%lld N%lld heads%d d%d%s", (long long)B, (long long)N, heads, d,
                (std::is_same<T, bf16>::value && d == 32) ? " (tensor cores)" : "");
  report(name, dtype_name<T>(), dy.get(), ref, tol_for<T>(1e-5));
}

template <typename T> void t_complex_mul(int64_t rows, int64_t brows, int64_t C, bool conj, bool inplace) {
  auto a = randv(rows * 2 * C), b = randv(brows * 2 * C);
  Dev<T> da(a), db(b), dy(rows * 2 * C);
  T* out = inplace ? da.p : dy.p;
  launched(k::complex_mul(da.p, db.p, out, rows, brows, C, conj, 0), "complex_mul");
  std::vector<double> ref(rows * 2 * C);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const double ar = a[r * 2 * C + c], ai = a[r * 2 * C + C + c];
      const double br = b[(r % brows) * 2 * C + c], bi = (conj ? -1.0 : 1.0) * b[(r % brows) * 2 * C + C + c];
      ref[r * 2 * C + c] = ar * br - ai * bi;
      ref[r * 2 * C + C + c] = ar * bi + ai * br;
    }
  char name[128];
  std::snprintf(name, sizeof name, "complex_mul/rows%lld brows%lld C%lld%s%s", (long long)rows, (long long)brows,
                (long long)C, conj ? " conj" : "", inplace ? " in-place" : "");
  report(name, dtype_name<T>(), inplace ? da.get() : dy.get(), ref, tol_for<T>(1e-6));
}

template <typename T> void t_haar(int64_t B, int64_t H, int64_t W, int64_t C) {
  static const int kSign[4][4] = {{1, 1, 1, 1}, {1, 1, -1, -1}, {1, -1, 1, -1}, {1, -1, -1, 1}};
  const int64_t h2 = (H + 1) / 2, w2 = (W + 1) / 2, nb = B * h2 * w2 * 4 * C;
  auto x = randv(B * H * W * C), bands = randv(nb);
  Dev<T> dx(x), dbands(nb), dbin(bands), dxout(x.size());
  launched(k::haar2d(dx.p, dbands.p, B, H, W, C, 0), "haar2d");
  launched(k::haar2d_inverse(dbin.p, dxout.p, B, H, W, C, 0), "haar2d_inverse");
  std::vector<double> fwd(nb), inv(x.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < h2; ++i)
      for (int64_t j = 0; j < w2; ++j)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t band = ((b * h2 + i) * w2 + j) * 4 * C + c;
          for (int s = 0; s < 4; ++s) {
            double acc = 0;
            for (int q = 0; q < 4; ++q) {
              const int64_t r = 2 * i + q / 2, cc = 2 * j + q % 2;
              if (r < H && cc < W) acc += kSign[s][q] * double(x[((b * H + r) * W + cc) * C + c]);
            }
            fwd[band + s * C] = 0.5 * acc;
          }
          for (int q = 0; q < 4; ++q) {
            const int64_t r = 2 * i + q / 2, cc = 2 * j + q % 2;
            if (r >= H || cc >= W) continue;
            double acc = 0;
            for (int s = 0; s < 4; ++s) acc += kSign[s][q] * double(bands[band + s * C]);
            inv[((b * H + r) * W + cc) * C + c] = 0.5 * acc;
          }
        }
  char name[128];
  std::snprintf(name, sizeof name, "haar2d/%lldx%lldx%lldx%lld", (long long)B, (long long)H, (long long)W, (long long)C);
  report(name, dtype_name<T>(), dbands.get(), fwd, tol_for<T>(1e-6));
  std::snprintf(name, sizeof name, "haar2d_inverse/%lldx%lldx%lldx%lld", (long long)B, (long long)H, (long long)W,
                (long long)C);
  report(name, dtype_name<T>(), dxout.get(), inv, tol_for<T>(1e-6));
}

void t_bad_arguments() {
  // Arguments a launcher refuses come back as cudaErrorInvalidValue, with nothing launched.
  struct Bad {
    const char* name;
    cudaError_t got;
  };
  Dev<float> a(64), b(64);
  const Bad bad[] = {
      {"attention head_dim 129", k::attention(a.p, b.p, 1, 1, 1, 129, 1.f, 0)},
      {"glu window past Ct", k::glu(a.p, 8, nullptr, 0, 4, 0, b.p, 1, 5, Act{}, 0)},
      {"channel_slice past C", k::channel_slice(a.p, b.p, 1, 8, 6, 3, 0)},
      {"group_norm1 per % C != 0", k::group_norm1(a.p, a.p, nullptr, 1e-5f, b.p, 1, 10, 3, b.p, 0)},
      {"pool_minus_input even kernel", k::pool_minus_input(a.p, b.p, 1, 2, 2, 2, 2, 0)},
      {"complex_mul rows % brows != 0", k::complex_mul(a.p, a.p, b.p, 3, 2, 4, false, 0)},
      {"depthwise Ho mismatch", k::depthwise_conv2d(a.p, 1, a.p, nullptr, b.p, 1, 1, 4, 4, 1, 3, 4, 3, 3, 1, 1, 1, 1,
                                                    Act{}, Act{}, 0)},
  };
  for (const Bad& x : bad) {
    const bool ok = x.got == cudaErrorInvalidValue;
    (ok ? g_pass : g_fail)++;
    std::printf("%s  refuses: %-50s -> %s\n", ok ? "PASS" : "FAIL", x.name, cudaGetErrorName(x.got));
  }
  cuda_check(cudaGetLastError(), "after refused launches");
}

template <typename T> void run_all() {
  t_binary<T>(1);
  t_binary<T>(100003);
  t_activation<T>(10007);
  t_channel_affine<T>(3 * 7 * 7, 37, true, true, ActKind::GELU, false);
  t_channel_affine<T>(5, 130, false, true, ActKind::Identity, true);
  t_channel_affine<T>(1, 7, true, false, ActKind::StarReLU, false);
  t_scaled_residual<T>(3 * 5 * 5, 37);
  t_sample_scale<T>(3, 1001);
  t_channel_slice<T>(49, 37, 5, 19);
  t_glu<T>(13, 40, 7, 0, 20, 17, ActKind::GELU);
  t_glu<T>(9, 32, 0, 0, 16, 16, ActKind::SiLU);
  t_layer_norm<T, T>(3 * 7 * 7, 37, true, false);
  t_layer_norm<T, T>(1, 64, false, true);
  t_layer_norm<T, T>(3, 1030, true, false);  // wider than the register cache
  t_residual_layer_norm<T>(3 * 5 * 5, 37, true);
  t_residual_layer_norm<T>(2, 1100, false);
  t_group_norm1<T, T>(3, 7, 9, 37, true);
  t_group_norm1<T, T>(1, 56, 56, 64, false);  // 98 chunks merged
  t_group_norm1<T, T>(1, 1, 1, 5, true);
  const Act id{}, gelu{ActKind::GELU};
  t_depthwise<T>(3, 7, 7, 37, {7, 7, 1, 1, 3, 3}, false, id, id);
  t_depthwise<T>(1, 14, 14, 130, {7, 7, 1, 1, 3, 3}, true, id, id);
  t_depthwise<T>(2, 5, 9, 3, {3, 3, 2, 2, 1, 1}, true, id, id);
  t_depthwise<T>(1, 1, 1, 65, {7, 7, 1, 1, 3, 3}, false, id, id);
  t_depthwise<T>(2, 11, 13, 48, {7, 7, 1, 1, 3, 3}, true, star(), gelu);
  t_depthwise<T>(1, 6, 10, 35, {3, 3, 1, 1, 1, 1}, false, id, id);
  t_depthwise<T>(2, 9, 10, 11, {5, 5, 1, 1, 2, 2}, true, gelu, id);
  t_depthwise<T>(3, 8, 9, 21, {7, 7, 1, 1, 3, 3}, true, id, id, 50, 17, 5);  // a channel window of a wider tensor
  // 4 channels per thread (vector loads): C, strides and offsets multiples of 4
  t_depthwise<T>(1, 3, 30, 16, {7, 7, 1, 1, 3, 3}, false, id, id);
  t_depthwise<T>(2, 6, 10, 36, {3, 3, 1, 1, 1, 1}, true, star(), id);
  t_depthwise<T>(2, 8, 9, 24, {7, 7, 1, 1, 3, 3}, true, id, gelu, 32, 8, 4);  // MambaOut's conv-channel window
  t_pool_minus<T>(3, 7, 9, 37, 3);
  t_pool_minus<T>(1, 1, 1, 5, 3);
  t_pool_minus<T>(2, 4, 5, 3, 5);
  t_pool_branch<T>(3, 7, 9, 37, true);
  t_pool_branch<T>(1, 13, 11, 16, false);
  t_global_avg_pool<T, T>(3, 49, 37);
  t_global_avg_pool<T, T>(1, 1, 5);
  t_im2col<T>(2, 9, 11, 5, {7, 7, 4, 4, 2, 2});
  t_im2col<T>(1, 8, 8, 3, {4, 4, 4, 4, 0, 0});
  t_im2col<T>(3, 5, 7, 21, {3, 3, 2, 2, 1, 1});
  t_conv_weight<T>(7, 5, 3, 3, 45);
  t_conv_weight<T>(7, 3, 7, 7, 152);  // the stem: K = 147 padded to a multiple of 8
  t_im2col_nchw<T>(3, 3, 17, 19, {7, 7, 4, 4, 2, 2});  // the stem's geometry on an odd image
  t_nchw<T, T>(3, 37, 7, 9);
  t_nchw<T, T>(1, 3, 33, 35);
  t_attention<T>(3, 49, 5, 8);
  t_attention<T>(1, 196, 10, 32);
  t_attention<T>(2, 7, 1, 3);
  t_attention<T>(1, 1, 2, 4);
  t_attention<T>(3, 130, 2, 32);  // tiles with a ragged last key tile and query tile
  t_attention<T>(2, 50, 3, 64);
  t_attention<T>(1, 20, 1, 100);
  t_complex_mul<T>(3 * 5 * 4, 5 * 4, 37, false, false);
  t_complex_mul<T>(6, 6, 9, true, true);
  t_haar<T>(3, 7, 9, 37);
  t_haar<T>(1, 8, 6, 4);
}

// ---- --perf: times at the sizes of a batch-256 224² model (bf16 storage), each kernel's median of
// 20 launches with CUDA events, against the fewest bytes it must move (inputs read once, outputs
// written once) or, for attention, its two products' FLOPs. Informative only: no pass/fail.
template <typename F> float median_ms(F&& launch) {
  return static_cast<float>(k::median_event_ms(3, 20, launch, cuda_check));
}
void perf_line(const char* name, float ms, double bytes, double flops = 0) {
  if (flops > 0)
    std::printf("perf  %-52s %8.3f ms  %7.1f TFLOP/s\n", name, ms, flops / (ms * 1e-3) / 1e12);
  else
    std::printf("perf  %-52s %8.3f ms  %7.0f GB/s\n", name, ms, bytes / (ms * 1e-3) / 1e9);
}
template <typename T> T* dev_random(size_t n) {
  std::vector<float> h = randv(n);
  std::vector<T> tmp(n);
  for (size_t i = 0; i < n; ++i) tmp[i] = store<T>(h[i]);
  T* p = nullptr;
  cuda_check(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
  cuda_check(cudaMemcpy(p, tmp.data(), n * sizeof(T), cudaMemcpyHostToDevice), "upload");
  return p;
}
void run_perf() {
  const int64_t B = 256, H = 56, W = 56, C = 64, rows = B * H * W, per = H * W * C;
  const size_t e = 2;  // bytes per bf16
  bf16* x = dev_random<bf16>(rows * C * 4);
  bf16* y = dev_random<bf16>(rows * C * 4);
  bf16* z = dev_random<bf16>(rows * C * 4);
  float* w = dev_random<float>(65536);
  float* bb = dev_random<float>(65536);
  void* ws = nullptr;
  cuda_check(cudaMalloc(&ws, k::group_norm1_workspace_bytes(B, per)), "cudaMalloc");
  const Act id{}, gelu{ActKind::GELU};
  perf_line("layer_norm 802816x64", median_ms([&] { k::layer_norm(x, w, bb, 1e-6f, y, rows, C, 0); }), 2.0 * rows * C * e);
  perf_line("residual_layer_norm 802816x64",
            median_ms([&] { k::residual_layer_norm(x, w, y, w, x, w, bb, 1e-6f, z, rows, C, 0); }), 4.0 * rows * C * e);
  perf_line("group_norm1 256x56x56x64",
            median_ms([&] { k::group_norm1(x, w, bb, 1e-5f, y, B, per, C, ws, 0); }), 2.0 * rows * C * e);
  perf_line("pool_branch 256x56x56x64",
            median_ms([&] { k::pool_branch(x, w, bb, 1e-5f, 3, w, w, y, B, H, W, C, ws, 0); }), 2.0 * rows * C * e);
  perf_line("pool_minus_input 256x56x56x64", median_ms([&] { k::pool_minus_input(x, y, B, H, W, C, 3, 0); }),
            2.0 * rows * C * e);
  perf_line("scaled_residual 802816x64", median_ms([&] { k::scaled_residual(x, w, y, w, z, rows, C, 0); }),
            3.0 * rows * C * e);
  perf_line("activation gelu 802816x256", median_ms([&] { k::activation(x, y, rows * 256, gelu, 0); }),
            2.0 * rows * 256 * e);
  perf_line("depthwise 7x7 256x56x56x128 starrelu-in",
            median_ms([&] { k::depthwise_conv2d(x, 128, w, nullptr, y, 128, B, H, W, 128, H, W, 7, 7, 1, 1, 3, 3, star(), id, 0); }),
            2.0 * rows * 128 * e);
  perf_line("depthwise 7x7 256x28x28x256 (stage 2)",
            median_ms([&] { k::depthwise_conv2d(x, 256, w, nullptr, y, 256, B, 28, 28, 256, 28, 28, 7, 7, 1, 1, 3, 3, star(), id, 0); }),
            2.0 * B * 784 * 256 * e);
  perf_line("depthwise 7x7 256x14x14x640 (stage 3)",
            median_ms([&] { k::depthwise_conv2d(x, 640, w, nullptr, y, 640, B, 14, 14, 640, 14, 14, 7, 7, 1, 1, 3, 3, id, id, 0); }),
            2.0 * B * 196 * 640 * e);
  perf_line("depthwise 7x7 256x7x7x1024 (stage 4)",
            median_ms([&] { k::depthwise_conv2d(x, 1024, w, nullptr, y, 1024, B, 7, 7, 1024, 7, 7, 7, 7, 1, 1, 3, 3, id, id, 0); }),
            2.0 * B * 49 * 1024 * e);
  perf_line("global_avg_pool 256x49x512", median_ms([&] { k::global_avg_pool(x, y, B, 49, 512, 0); }),
            double(B) * 49 * 512 * e);
  float* img = dev_random<float>(B * 3 * 224 * 224);
  perf_line("nchw_to_nhwc f32->bf16 256x3x224x224", median_ms([&] { k::nchw_to_nhwc(img, y, B, 3, 224, 224, 0); }),
            double(B) * 3 * 224 * 224 * 6);
  for (const std::pair<int64_t, int>& shape : {std::pair<int64_t, int>{196, 10}, std::pair<int64_t, int>{49, 16}}) {
    const int64_t n = shape.first;
    const int heads = shape.second;
    char name[96];
    const double flops = 4.0 * B * heads * n * n * 32;
    std::snprintf(name, sizeof name, "attention bf16 B256 N%lld heads%d d32 (mma)", (long long)n, heads);
    perf_line(name, median_ms([&] { k::attention(x, y, B, n, heads, 32, 0.17677f, 0); }), 0, flops);
    std::snprintf(name, sizeof name, "attention f32 B256 N%lld heads%d d32 (scalar)", (long long)n, heads);
    perf_line(name, median_ms([&] { k::attention(reinterpret_cast<float*>(x), reinterpret_cast<float*>(z), B / 2, n, heads, 32, 0.17677f, 0); }),
              0, flops / 2);
  }
  cuda_check(cudaDeviceSynchronize(), "perf");
  for (void* p : {(void*)x, (void*)y, (void*)z, (void*)w, (void*)bb, ws, (void*)img}) cudaFree(p);
}

}  // namespace

int main(int argc, char** argv) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "selftest: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  cuda_check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  run_all<float>();
  run_all<bf16>();
  t_layer_norm<float, bf16>(3 * 7 * 7, 37, true, false);
  t_group_norm1<float, bf16>(3, 7, 9, 37, true);
  t_global_avg_pool<bf16, float>(3, 49, 37);
  t_nchw<float, bf16>(3, 3, 17, 19);
  t_cast(10007);
  t_bad_arguments();
  std::printf("summary: %d passed, %d failed\n", g_pass, g_fail);
  if (argc > 1 && std::strcmp(argv[1], "--perf") == 0) run_perf();
  return g_fail == 0 ? 0 : 1;
}
