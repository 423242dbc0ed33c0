// Spectral ops in plain loops: the real 2-D DFT and its inverse by direct summation in double (the
// oracle for FFTW), complex products, and the Haar wavelet transform.
#include <cmath>

#include "ops/ref/ref_backend.h"

namespace mf {

namespace {
// Columns of the half spectrum whose conjugate twins are omitted: 1 .. ceil(W/2) - 1.
bool mid_column(int64_t j, int64_t W) { return j >= 1 && j <= (W + 1) / 2 - 1; }
}  // namespace

void RefBackend::rfft2(const Tensor& x, float mid_scale, Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3), Wf = W / 2 + 1;
  const double norm = 1.0 / std::sqrt(static_cast<double>(H * W));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < H; ++k)
      for (int64_t j = 0; j < Wf; ++j)
        for (int64_t c = 0; c < C; ++c) {
          double re = 0, im = 0;
          for (int64_t h = 0; h < H; ++h)
            for (int64_t w = 0; w < W; ++w) {
              const double phase = -2.0 * M_PI * (static_cast<double>(k * h % H) / H + static_cast<double>(j * w % W) / W);
              const double v = x.data()[((b * H + h) * W + w) * C + c];
              re += v * std::cos(phase);
              im += v * std::sin(phase);
            }
          const double s = norm * (mid_column(j, W) ? mid_scale : 1.0);
          float* out = y.data() + ((b * H + k) * Wf + j) * 2 * C;
          out[c] = static_cast<float>(re * s);
          out[C + c] = static_cast<float>(im * s);
        }
}

void RefBackend::irfft2(const Tensor& x, float mid_scale, Tensor& y) {
  const int64_t B = y.dim(0), H = y.dim(1), W = y.dim(2), C = y.dim(3), Wf = W / 2 + 1;
  const double norm = 1.0 / std::sqrt(static_cast<double>(H * W));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w)
        for (int64_t c = 0; c < C; ++c) {
          // Σ over the half spectrum of c_j · Re(X[k, j] e^{+iθ}), c_j = 2 for the columns standing
          // for a conjugate pair, 1 for the self-conjugate ones (0, and W/2 when W is even).
          double acc = 0;
          for (int64_t k = 0; k < H; ++k)
            for (int64_t j = 0; j < Wf; ++j) {
              const float* in = x.data() + ((b * H + k) * Wf + j) * 2 * C;
              const double phase = 2.0 * M_PI * (static_cast<double>(k * h % H) / H + static_cast<double>(j * w % W) / W);
              const double weight = mid_column(j, W) ? 2.0 * mid_scale : 1.0;
              acc += weight * (in[c] * std::cos(phase) - static_cast<double>(in[C + c]) * std::sin(phase));
            }
          y.data()[((b * H + h) * W + w) * C + c] = static_cast<float>(acc * norm);
        }
}

void RefBackend::complex_mul(const Tensor& a, const Tensor& b, bool conj_b, Tensor& y) {
  const int64_t C = a.shape().last(), rows = a.numel() / (2 * C), brows = b.numel() / (2 * C);
  const double sign = conj_b ? -1.0 : 1.0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* pa = a.data() + r * 2 * C;
    const float* pb = b.data() + (r % brows) * 2 * C;
    float* py = y.data() + r * 2 * C;
    for (int64_t c = 0; c < C; ++c) {
      const double ar = pa[c], ai = pa[C + c], br = pb[c], bi = sign * pb[C + c];
      py[c] = static_cast<float>(ar * br - ai * bi);
      py[C + c] = static_cast<float>(ar * bi + ai * br);
    }
  }
}

void RefBackend::complex_mul_backward(const Tensor& a, const Tensor& b, const Tensor& dy, Tensor* da, Tensor* db) {
  const int64_t C = a.shape().last(), rows = a.numel() / (2 * C), brows = b.numel() / (2 * C);
  if (da) complex_mul(dy, b, /*conj_b=*/true, *da);
  if (!db) return;
  for (int64_t br = 0; br < brows; ++br)
    for (int64_t c = 0; c < C; ++c) {
      double re = 0, im = 0;  // Σ over the rows that share this b: dy ⊙ conj(a)
      for (int64_t r = br; r < rows; r += brows) {
        const float* pa = a.data() + r * 2 * C;
        const float* pg = dy.data() + r * 2 * C;
        re += static_cast<double>(pg[c]) * pa[c] + static_cast<double>(pg[C + c]) * pa[C + c];
        im += static_cast<double>(pg[C + c]) * pa[c] - static_cast<double>(pg[c]) * pa[C + c];
      }
      db->data()[br * 2 * C + c] += static_cast<float>(re);
      db->data()[br * 2 * C + C + c] += static_cast<float>(im);
    }
}

void RefBackend::haar2d(const Tensor& x, bool inverse, Tensor& y) {
  const Tensor& img = inverse ? y : x;    // [B, H, W, C]
  const Tensor& bands = inverse ? x : y;  // [B, h, w, 4, C]
  const int64_t B = img.dim(0), H = img.dim(1), W = img.dim(2), C = img.dim(3), h2 = bands.dim(1), w2 = bands.dim(2);
  // The four pixels of a 2×2 block (a b / c d) and the four bands are related by the same symmetric
  // orthogonal matrix: rows (+ + + +), (+ + - -), (+ - + -), (+ - - +), all / 2.
  static constexpr int kSign[4][4] = {{1, 1, 1, 1}, {1, 1, -1, -1}, {1, -1, 1, -1}, {1, -1, -1, 1}};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < h2; ++i)
      for (int64_t j = 0; j < w2; ++j)
        for (int64_t c = 0; c < C; ++c) {
          float* band = (inverse ? const_cast<Tensor&>(x) : y).data() + (((b * h2 + i) * w2 + j) * 4) * C + c;
          int64_t pix[4];
          bool inside[4];
          for (int q = 0; q < 4; ++q) {
            const int64_t r = 2 * i + q / 2, s = 2 * j + q % 2;
            inside[q] = r < H && s < W;
            pix[q] = ((b * H + r) * W + s) * C + c;
          }
          if (!inverse) {
            for (int s = 0; s < 4; ++s) {
              double acc = 0;
              for (int q = 0; q < 4; ++q)
                if (inside[q]) acc += kSign[s][q] * static_cast<double>(x.data()[pix[q]]);
              band[s * C] = static_cast<float>(0.5 * acc);
            }
          } else {
            for (int q = 0; q < 4; ++q) {
              if (!inside[q]) continue;
              double acc = 0;
              for (int s = 0; s < 4; ++s) acc += kSign[s][q] * static_cast<double>(band[s * C]);
              y.data()[pix[q]] = static_cast<float>(0.5 * acc);
            }
          }
        }
}

}  // namespace mf
