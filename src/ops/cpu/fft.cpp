// Real 2-D FFTs on FFTW (single precision), directly on channels-last tensors in the split re/im
// layout: FFTW's guru split interface takes separate real and imaginary arrays with any strides, so
// no transposes or interleaving copies are needed. A 2-D transform is done as two 1-D passes — the
// real one along W and the complex one along H — which makes the handling of non-Hermitian input
// explicit: the inverse runs the complex pass first and the c2r pass then ignores the imaginary parts
// of the self-conjugate columns, exactly as torch.fft.irfft2 does.
//
// Plans are built with FFTW_ESTIMATE (no timing: the same plan, hence the same arithmetic, on every
// run) and FFTW_UNALIGNED (they are executed on other arrays than planned), cached per shape behind a
// mutex because FFTW's planner is not thread-safe; executing a plan is.
#include <fftw3.h>

#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "core/error.h"
#include "ops/cpu/cpu_backend.h"

namespace mf {

namespace {

struct Plans {
  fftwf_plan real = nullptr;     // along W: r2c (forward) or c2r (inverse)
  fftwf_plan complex = nullptr;  // along H: c2c (the inverse swaps re/im pointers)
};

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, bool>;

// The cached plans live for the process; they are destroyed at exit (with FFTW's own planner state)
// so that a leak checker sees nothing outstanding.
struct PlanCache {
  std::map<Key, Plans> plans;
  ~PlanCache() {
    for (auto& [key, p] : plans) {
      fftwf_destroy_plan(p.real);
      fftwf_destroy_plan(p.complex);
    }
    fftwf_cleanup();
  }
};

const Plans& plans_for(int64_t B, int64_t H, int64_t W, int64_t C, bool inverse) {
  static std::mutex mutex;
  static PlanCache store;
  auto& cache = store.plans;
  std::lock_guard<std::mutex> lock(mutex);
  const Key key{B, H, W, C, inverse};
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;

  const int64_t Wf = W / 2 + 1;
  // Scratch arrays only for planning (FFTW_ESTIMATE does not touch them).
  std::vector<float> real(static_cast<size_t>(B * H * W * C) + 1), spec(static_cast<size_t>(B * H * Wf * 2 * C) + 1);
  float* re = spec.data();
  float* im = spec.data() + C;
  const unsigned flags = FFTW_ESTIMATE | FFTW_UNALIGNED;
  Plans p;
  // Along W, for every (b, h, c): n = W, real stride C, spectrum stride 2C.
  fftwf_iodim dim_w{static_cast<int>(W), static_cast<int>(C), static_cast<int>(2 * C)};
  fftwf_iodim loops_w[3] = {{static_cast<int>(B), static_cast<int>(H * W * C), static_cast<int>(H * Wf * 2 * C)},
                           {static_cast<int>(H), static_cast<int>(W * C), static_cast<int>(Wf * 2 * C)},
                           {static_cast<int>(C), 1, 1}};
  if (!inverse) {
    p.real = fftwf_plan_guru_split_dft_r2c(1, &dim_w, 3, loops_w, real.data(), re, im, flags);
  } else {
    fftwf_iodim dim_c2r{static_cast<int>(W), static_cast<int>(2 * C), static_cast<int>(C)};
    fftwf_iodim loops_c2r[3] = {{static_cast<int>(B), static_cast<int>(H * Wf * 2 * C), static_cast<int>(H * W * C)},
                               {static_cast<int>(H), static_cast<int>(Wf * 2 * C), static_cast<int>(W * C)},
                               {static_cast<int>(C), 1, 1}};
    p.real = fftwf_plan_guru_split_dft_c2r(1, &dim_c2r, 3, loops_c2r, re, im, real.data(), flags);
  }
  // Along H, in place on the spectrum, for every (b, j, c). The inverse is the forward transform
  // with real and imaginary parts swapped, and it is planned on swapped pointers: FFTW executes a
  // plan on new arrays only when their ii - ri and io - ro are those it was planned with (FFTW
  // manual, "New-array Execute Functions"). A plan made for ii = ri + C and run with ii = ri - C
  // computed wrong values for some sizes (a 28×28 map of 64 channels) and wrote past the spectrum
  // for others (24×32), corrupting the heap.
  fftwf_iodim dim_h{static_cast<int>(H), static_cast<int>(Wf * 2 * C), static_cast<int>(Wf * 2 * C)};
  fftwf_iodim loops_h[3] = {{static_cast<int>(B), static_cast<int>(H * Wf * 2 * C), static_cast<int>(H * Wf * 2 * C)},
                           {static_cast<int>(Wf), static_cast<int>(2 * C), static_cast<int>(2 * C)},
                           {static_cast<int>(C), 1, 1}};
  p.complex = inverse ? fftwf_plan_guru_split_dft(1, &dim_h, 3, loops_h, im, re, im, re, flags)
                      : fftwf_plan_guru_split_dft(1, &dim_h, 3, loops_h, re, im, re, im, flags);
  MF_CHECK(p.real && p.complex, "FFTW could not plan a {}x{} transform of {} channels", H, W, C);
  return cache.emplace(key, p).first->second;
}

// Multiplies columns 1 .. ceil(W/2)-1 of a [B, H, Wf, 2, C] spectrum by s, and everything by norm.
void scale_spectrum(float* spec, int64_t rows, int64_t Wf, int64_t W, int64_t C, float s, float norm) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < Wf; ++j) {
      const float f = (j >= 1 && j <= (W + 1) / 2 - 1 ? s : 1.f) * norm;
      float* p = spec + (r * Wf + j) * 2 * C;
      for (int64_t c = 0; c < 2 * C; ++c) p[c] *= f;
    }
}

}  // namespace

void CpuBackend::rfft2(const Tensor& x, float mid_scale, Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3), Wf = W / 2 + 1;
  const Plans& p = plans_for(B, H, W, C, false);
  float* re = y.data();
  float* im = y.data() + C;
  fftwf_execute_split_dft_r2c(p.real, const_cast<float*>(x.data()), re, im);
  fftwf_execute_split_dft(p.complex, re, im, re, im);
  scale_spectrum(y.data(), B * H, Wf, W, C, mid_scale, static_cast<float>(1.0 / std::sqrt(static_cast<double>(H * W))));
}

void CpuBackend::irfft2(const Tensor& x, float mid_scale, Tensor& y) {
  const int64_t B = y.dim(0), H = y.dim(1), W = y.dim(2), C = y.dim(3), Wf = W / 2 + 1;
  const Plans& p = plans_for(B, H, W, C, true);
  // The transforms work in place on a copy (c2r overwrites its input).
  Tensor spec = x.clone();
  scale_spectrum(spec.data(), B * H, Wf, W, C, mid_scale, static_cast<float>(1.0 / std::sqrt(static_cast<double>(H * W))));
  float* re = spec.data();
  float* im = spec.data() + C;
  // The inverse complex transform is the forward one with real and imaginary parts swapped (planned
  // so: plans_for).
  fftwf_execute_split_dft(p.complex, im, re, im, re);
  fftwf_execute_split_dft_c2r(p.real, re, im, y.data());
}

void CpuBackend::complex_mul(const Tensor& a, const Tensor& b, bool conj_b, Tensor& y) {
  const int64_t C = a.shape().last(), rows = a.numel() / (2 * C), brows = b.numel() / (2 * C);
  const float sign = conj_b ? -1.f : 1.f;
  const float *A = a.data(), *Bv = b.data();
  float* Y = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* pa = A + r * 2 * C;
    const float* pb = Bv + (r % brows) * 2 * C;
    float* py = Y + r * 2 * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float ar = pa[c], ai = pa[C + c], br = pb[c], bi = sign * pb[C + c];
      py[c] = ar * br - ai * bi;
      py[C + c] = ar * bi + ai * br;
    }
  }
}

void CpuBackend::haar2d(const Tensor& x, bool inverse, Tensor& y) {
  const Tensor& img = inverse ? y : x;    // [B, H, W, C]
  const Tensor& bands = inverse ? x : y;  // [B, h, w, 4, C]
  const int64_t B = img.dim(0), H = img.dim(1), W = img.dim(2), C = img.dim(3), h2 = bands.dim(1), w2 = bands.dim(2);
  const float* in = x.data();
  float* out = y.data();
  // Per 2×2 block (a b / c d): LL = (a+b+c+d)/2, (a+b-c-d)/2, (a-b+c-d)/2, (a-b-c+d)/2, and back with
  // the same matrix; missing pixels of an odd border are zeros (forward) or dropped (inverse).
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < h2; ++i)
      for (int64_t j = 0; j < w2; ++j) {
        const int64_t r0 = 2 * i, c0 = 2 * j;
        const bool has_r1 = r0 + 1 < H, has_c1 = c0 + 1 < W;
        const int64_t p00 = ((b * H + r0) * W + c0) * C, p01 = p00 + C, p10 = p00 + W * C, p11 = p10 + C;
        const int64_t q = (((b * h2 + i) * w2 + j) * 4) * C;
        if (!inverse) {
          for (int64_t c = 0; c < C; ++c) {
            const float a = in[p00 + c], bb = has_c1 ? in[p01 + c] : 0.f, cc = has_r1 ? in[p10 + c] : 0.f,
                        d = has_r1 && has_c1 ? in[p11 + c] : 0.f;
            out[q + c] = 0.5f * (a + bb + cc + d);
            out[q + C + c] = 0.5f * (a + bb - cc - d);
            out[q + 2 * C + c] = 0.5f * (a - bb + cc - d);
            out[q + 3 * C + c] = 0.5f * (a - bb - cc + d);
          }
        } else {
          for (int64_t c = 0; c < C; ++c) {
            const float s0 = in[q + c], s1 = in[q + C + c], s2 = in[q + 2 * C + c], s3 = in[q + 3 * C + c];
            out[p00 + c] = 0.5f * (s0 + s1 + s2 + s3);
            if (has_c1) out[p01 + c] = 0.5f * (s0 + s1 - s2 - s3);
            if (has_r1) out[p10 + c] = 0.5f * (s0 - s1 + s2 - s3);
            if (has_r1 && has_c1) out[p11 + c] = 0.5f * (s0 - s1 - s2 + s3);
          }
        }
      }
}

}  // namespace mf
