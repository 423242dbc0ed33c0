// The global and structured linear mixers against their explicit token matrices, and AFF against an
// explicit global circular depthwise convolution and against PyTorch (tools/golden/make_aff_golden.py).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <filesystem>

#include "io/safetensors.h"
#include "mixers/mixer.h"
#include "test_util.h"

namespace mf::test {
namespace {

using cd = std::complex<double>;

std::unique_ptr<TokenMixer> make(const std::string& name, int64_t dim, int64_t h, int64_t w,
                                 nlohmann::json options = nlohmann::json::object()) {
  auto m = MixerRegistry::get().create(name, MixerContext{dim, 0, h, w, options});
  m->assign_paths("mixer");
  uint64_t seed = 11;
  for (auto& [n, p] : m->named_parameters()) p->value.copy_from(random_tensor(p->value.shape(), seed++, -0.5f, 0.5f));
  return m;
}

Tensor run(TokenMixer& m, const Tensor& x) {
  Ctx ctx;
  ctx.exec.backend = &get_backend("cpu");
  return m.run(ctx, x);
}

// y[b, n, c] = Σ_m M_c[n, m] x[b, m, c] + bias_c[n] with per-channel N×N matrices (bias may be empty).
Tensor apply_token_matrices(const std::vector<std::vector<double>>& M, const std::vector<std::vector<double>>& bias,
                            const Tensor& x) {
  const int64_t B = x.dim(0), N = x.dim(1) * x.dim(2), C = x.dim(3);
  Tensor y = Tensor::zeros(x.shape());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t n = 0; n < N; ++n) {
        double acc = bias.empty() ? 0.0 : bias[static_cast<size_t>(c)][static_cast<size_t>(n)];
        for (int64_t k = 0; k < N; ++k)
          acc += M[static_cast<size_t>(c)][static_cast<size_t>(n * N + k)] * x.data()[(b * N + k) * C + c];
        y.data()[(b * N + n) * C + c] = static_cast<float>(acc);
      }
  return y;
}

// The effective full spectrum of a half spectrum F[k][j] (j < W/2+1) as irfft2 reads it: columns whose
// twins are omitted are extended by conjugate symmetry, self-conjugate columns keep their Hermitian part.
std::vector<cd> hermitian_full(const std::vector<cd>& half, int64_t H, int64_t W) {
  const int64_t Wf = W / 2 + 1;
  std::vector<cd> full(static_cast<size_t>(H * W));
  for (int64_t k = 0; k < H; ++k)
    for (int64_t j = 0; j < W; ++j) {
      const int64_t kk = (H - k) % H;
      cd v;
      if (j < Wf && (j == 0 || 2 * j == W))
        v = 0.5 * (half[static_cast<size_t>(k * Wf + j)] + std::conj(half[static_cast<size_t>(kk * Wf + j)]));
      else if (j < Wf)
        v = half[static_cast<size_t>(k * Wf + j)];
      else
        v = std::conj(half[static_cast<size_t>(kk * Wf + (W - j))]);
      full[static_cast<size_t>(k * W + j)] = v;
    }
  return full;
}

// The circulant token matrix of a filter with full spectrum F: y = ifft(F · fft(x)).
std::vector<double> circulant(const std::vector<cd>& full, int64_t H, int64_t W) {
  const int64_t N = H * W;
  std::vector<double> kernel(static_cast<size_t>(N));
  for (int64_t p = 0; p < H; ++p)
    for (int64_t q = 0; q < W; ++q) {
      cd acc = 0;
      for (int64_t k = 0; k < H; ++k)
        for (int64_t j = 0; j < W; ++j)
          acc += full[static_cast<size_t>(k * W + j)] *
                 std::polar(1.0, 2 * M_PI * (static_cast<double>(k * p % H) / H + static_cast<double>(j * q % W) / W));
      kernel[static_cast<size_t>(p * W + q)] = acc.real() / static_cast<double>(N);
    }
  std::vector<double> M(static_cast<size_t>(N * N));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t w = 0; w < W; ++w)
      for (int64_t h2 = 0; h2 < H; ++h2)
        for (int64_t w2 = 0; w2 < W; ++w2)
          M[static_cast<size_t>((h * W + w) * N + h2 * W + w2)] =
              kernel[static_cast<size_t>(((h - h2 + H) % H) * W + (w - w2 + W) % W)];
  return M;
}

TEST(LinearMixers, GlobalFilterIsACirculantTokenMatrixPerChannel) {
  for (auto [H, W] : {std::pair<int64_t, int64_t>{5, 6}, {7, 7}}) {
    const int64_t C = 3, Wf = W / 2 + 1;
    auto m = make("global_filter", C, H, W);
    const Tensor& K = m->named_parameters()[0].second->value;  // [H, Wf, 2, C]
    std::vector<std::vector<double>> M;
    for (int64_t c = 0; c < C; ++c) {
      std::vector<cd> half(static_cast<size_t>(H * Wf));
      for (int64_t k = 0; k < H; ++k)
        for (int64_t j = 0; j < Wf; ++j) {
          const float* p = K.data() + (k * Wf + j) * 2 * C;
          half[static_cast<size_t>(k * Wf + j)] = cd(p[c], p[C + c]);
        }
      M.push_back(circulant(hermitian_full(half, H, W), H, W));
    }
    const Tensor x = random_tensor({2, H, W, C}, 5);
    EXPECT_LE(rel_error(run(*m, x), apply_token_matrices(M, {}, x)), 1e-5) << H << "x" << W;
  }
}

TEST(LinearMixers, AxialMlpIsAKroneckerTokenMatrix) {
  const int64_t H = 4, W = 5, C = 3, N = H * W;
  auto m = make("axial_mlp", C, H, W);
  auto params = m->named_parameters();  // vertical.weight, vertical.bias, horizontal.weight, horizontal.bias
  const float *Wv = params[0].second->value.data(), *bv = params[1].second->value.data();
  const float *Wh = params[2].second->value.data(), *bh = params[3].second->value.data();
  // y = Wh-over-columns(Wv-over-rows(x) + bv) + bh: M[(h,w), (h',w')] = Wh[w, w'] · Wv[h, h'] and
  // bias[(h,w)] = Σ_w' Wh[w, w'] · bv[h] + bh[w].
  std::vector<double> M(static_cast<size_t>(N * N)), bias(static_cast<size_t>(N));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t w = 0; w < W; ++w) {
      double rowsum = 0;
      for (int64_t w2 = 0; w2 < W; ++w2) rowsum += Wh[w * W + w2];
      bias[static_cast<size_t>(h * W + w)] = rowsum * bv[h] + bh[w];
      for (int64_t h2 = 0; h2 < H; ++h2)
        for (int64_t w2 = 0; w2 < W; ++w2)
          M[static_cast<size_t>((h * W + w) * N + h2 * W + w2)] = static_cast<double>(Wh[w * W + w2]) * Wv[h * H + h2];
    }
  const Tensor x = random_tensor({2, H, W, C}, 6);
  EXPECT_LE(rel_error(run(*m, x), apply_token_matrices({M, M, M}, {bias, bias, bias}, x)), 1e-5);
}

TEST(LinearMixers, WaveletIsItsHaarTokenMatrix) {
  for (auto [H, W] : {std::pair<int64_t, int64_t>{4, 6}, {5, 3}}) {
    const int64_t C = 2, N = H * W, h2 = (H + 1) / 2, w2 = (W + 1) / 2;
    auto m = make("wavelet", C, H, W);
    const float* mix = m->named_parameters()[0].second->value.data();  // [4, 4]
    const float* mb = m->named_parameters()[1].second->value.data();   // [4]
    // Haar analysis matrix A [4·h2·w2, N] of the zero-padded map (synthesis = Aᵀ restricted to the map).
    static const int sign[4][4] = {{1, 1, 1, 1}, {1, 1, -1, -1}, {1, -1, 1, -1}, {1, -1, -1, 1}};
    const int64_t Nb = 4 * h2 * w2;
    std::vector<double> A(static_cast<size_t>(Nb * N), 0.0);
    auto band = [&](int64_t i, int64_t j, int s) { return (i * w2 + j) * 4 + s; };
    for (int64_t i = 0; i < h2; ++i)
      for (int64_t j = 0; j < w2; ++j)
        for (int s = 0; s < 4; ++s)
          for (int q = 0; q < 4; ++q) {
            const int64_t r = 2 * i + q / 2, col = 2 * j + q % 2;
            if (r < H && col < W) A[static_cast<size_t>(band(i, j, s) * N + r * W + col)] = 0.5 * sign[s][q];
          }
    // M = Aᵀ · (I ⊗ mix) · A, bias = Aᵀ · (mix bias at every position).
    std::vector<double> M(static_cast<size_t>(N * N), 0.0), bias(static_cast<size_t>(N), 0.0);
    for (int64_t i = 0; i < h2; ++i)
      for (int64_t j = 0; j < w2; ++j)
        for (int so = 0; so < 4; ++so) {
          const int64_t bo = band(i, j, so);
          for (int64_t n = 0; n < N; ++n) {
            const double a = A[static_cast<size_t>(bo * N + n)];
            if (a == 0) continue;
            bias[static_cast<size_t>(n)] += a * mb[so];
            for (int si = 0; si < 4; ++si)
              for (int64_t k = 0; k < N; ++k)
                M[static_cast<size_t>(n * N + k)] += a * mix[so * 4 + si] * A[static_cast<size_t>(band(i, j, si) * N + k)];
          }
        }
    const Tensor x = random_tensor({2, H, W, C}, 7);
    EXPECT_LE(rel_error(run(*m, x), apply_token_matrices({M, M}, {bias, bias}, x)), 1e-5) << H << "x" << W;
  }
}

// AFF for a fixed input: y − x is a global circular depthwise convolution whose kernel is the inverse
// transform of the (Hermitian part of the) mask — the mask computed here independently, in double.
TEST(LinearMixers, AffFilterIsACircularDepthwiseConvolutionForAFixedInput) {
  const int64_t H = 6, W = 5, C = 4, nb = 2, bs = C / nb, Wf = W / 2 + 1;
  auto m = make("aff", C, H, W, {{"num_blocks", nb}});
  auto params = m->named_parameters();  // w1, b1, w2, b2
  const float *w1 = params[0].second->value.data(), *b1 = params[1].second->value.data();
  const float *w2 = params[2].second->value.data(), *b2 = params[3].second->value.data();
  const Tensor x = random_tensor({1, H, W, C}, 8);
  // Orthonormal half spectrum of x per channel.
  std::vector<std::vector<cd>> X(static_cast<size_t>(C), std::vector<cd>(static_cast<size_t>(H * Wf)));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < H; ++k)
      for (int64_t j = 0; j < Wf; ++j) {
        cd acc = 0;
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w)
            acc += static_cast<double>(x.data()[(h * W + w) * C + c]) *
                   std::polar(1.0, -2 * M_PI * (static_cast<double>(k * h % H) / H + static_cast<double>(j * w % W) / W));
        X[static_cast<size_t>(c)][static_cast<size_t>(k * Wf + j)] = acc / std::sqrt(static_cast<double>(H * W));
      }
  auto W_at = [&](const float* w, int part, int64_t k, int64_t i, int64_t o) {
    return static_cast<double>(w[((part * nb + k) * bs + i) * bs + o]);
  };
  auto shrink = [](double v) { return v > 0.01 ? v - 0.01 : v < -0.01 ? v + 0.01 : 0.0; };
  std::vector<std::vector<double>> M;
  for (int64_t c = 0; c < C; ++c) {
    const int64_t k = c / bs, o = c % bs;
    std::vector<cd> mask(static_cast<size_t>(H * Wf));
    for (int64_t bin = 0; bin < H * Wf; ++bin) {
      std::vector<double> r1(static_cast<size_t>(bs)), i1(static_cast<size_t>(bs));
      for (int64_t oo = 0; oo < bs; ++oo) {
        double re = b1[(0 * nb + k) * bs + oo], im = b1[(1 * nb + k) * bs + oo];
        for (int64_t i = 0; i < bs; ++i) {
          const cd z = X[static_cast<size_t>(k * bs + i)][static_cast<size_t>(bin)];
          re += z.real() * W_at(w1, 0, k, i, oo) - z.imag() * W_at(w1, 1, k, i, oo);
          im += z.imag() * W_at(w1, 0, k, i, oo) + z.real() * W_at(w1, 1, k, i, oo);
        }
        r1[static_cast<size_t>(oo)] = std::max(re, 0.0);
        i1[static_cast<size_t>(oo)] = std::max(im, 0.0);
      }
      double re = b2[(0 * nb + k) * bs + o], im = b2[(1 * nb + k) * bs + o];
      for (int64_t i = 0; i < bs; ++i) {
        re += r1[static_cast<size_t>(i)] * W_at(w2, 0, k, i, o) - i1[static_cast<size_t>(i)] * W_at(w2, 1, k, i, o);
        im += i1[static_cast<size_t>(i)] * W_at(w2, 0, k, i, o) + r1[static_cast<size_t>(i)] * W_at(w2, 1, k, i, o);
      }
      mask[static_cast<size_t>(bin)] = cd(shrink(re), shrink(im));
    }
    M.push_back(circulant(hermitian_full(mask, H, W), H, W));
  }
  Tensor filtered = run(*m, x);
  for (int64_t i = 0; i < x.numel(); ++i) filtered.data()[i] -= x.data()[i];
  EXPECT_LE(rel_error(filtered, apply_token_matrices(M, {}, x)), 1e-5);
}

// The cpu backend's FFTW transforms against the ref backend's at the feature maps of AFFNet-ET at
// 224×224 and 192×256 (layer_3 .. layer_5), both directions and the round trip. The inverse's
// complex pass once ran a plan made for ii = ri + C on swapped pointers (ii = ri − C), which FFTW
// does not allow: at 28×28×64 it gave values off by 1e9, at 24×32×64 it wrote C floats past the
// spectrum and the process aborted in malloc (the full-size AFFNet logits test met both). The small
// op-harness shapes happened to get FFTW solvers that never used that separation.
TEST(SpectralOps, CpuTransformsMatchTheReferenceAtAffNetMapSizes) {
  const Exec cpu{&get_backend("cpu"), nullptr}, ref{&get_backend("ref"), nullptr};
  uint64_t seed = 31;
  for (const Shape& x_shape : {Shape{1, 28, 28, 64}, Shape{1, 24, 32, 64}, Shape{1, 14, 14, 104},
                               Shape{1, 12, 16, 104}, Shape{1, 7, 7, 144}, Shape{1, 6, 8, 144}}) {
    const int64_t W = x_shape[2];
    const Tensor x = random_tensor(x_shape, seed++);
    EXPECT_LE(rel_error(op::rfft2(cpu, x), op::rfft2(ref, x)), 1e-5) << "rfft2 " << x_shape.str();
    // A spectrum that is not Hermitian, as AFF's masked ones are not.
    const Tensor spectrum = random_tensor({x_shape[0], x_shape[1], W / 2 + 1, 2, x_shape[3]}, seed++);
    EXPECT_LE(rel_error(op::irfft2(cpu, spectrum, W), op::irfft2(ref, spectrum, W)), 1e-5)
        << "irfft2 " << x_shape.str();
    EXPECT_LE(rel_error(op::irfft2(cpu, op::rfft2(cpu, x), W), x), 1e-5) << "round trip " << x_shape.str();
  }
}

TEST(Aff, MatchesPyTorchForwardAndGradients) {
  const std::string path = data_path("aff/aff.safetensors");
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is missing (tools/golden/make_aff_golden.py)";
  const SafeTensors f = SafeTensors::open(path);
  double worst_y = 0, worst_grad = 0;
  for (int k = 0; f.contains("case" + std::to_string(k) + ".x"); ++k) {
    const std::string p = "case" + std::to_string(k) + ".";
    const Tensor x = f.load(p + "x"), w1 = f.load(p + "w1");
    const int64_t nb = w1.dim(1), C = x.dim(3);
    for (const char* backend : {"cpu", "ref"}) {
      auto m = MixerRegistry::get().create("aff", MixerContext{C, 0, x.dim(1), x.dim(2), {{"num_blocks", nb}}});
      m->assign_paths("mixer");
      for (auto& [name, param] : m->named_parameters()) {
        param->value.copy_from(f.load(p + name));
        param->grad = Tensor::zeros(param->value.shape());
      }
      Ctx ctx;
      ctx.exec.backend = &get_backend(backend);
      ctx.training = true;
      const Tensor y = m->run(ctx, x);
      const double ey = rel_error(y, f.load(p + "y"));
      EXPECT_LE(ey, 1e-4) << p << backend;
      const Tensor dx = m->backward(ctx, f.load(p + "g"));
      const double ex = rel_error(dx, f.load(p + "grad.x"));
      EXPECT_LE(ex, 1e-4) << p << backend << " grad x";
      worst_y = std::max(worst_y, ey);
      worst_grad = std::max(worst_grad, ex);
      for (auto& [name, param] : m->named_parameters()) {
        const double e = rel_error(param->grad, f.load(p + "grad." + name));
        EXPECT_LE(e, 1e-4) << p << backend << " grad " << name;
        worst_grad = std::max(worst_grad, e);
      }
    }
  }
  RecordProperty("worst_output_rel_error", fmt::format("{:.3g}", worst_y));
  RecordProperty("worst_gradient_rel_error", fmt::format("{:.3g}", worst_grad));
}

}  // namespace
}  // namespace mf::test
