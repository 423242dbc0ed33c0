// The depthwise convolution's kernel variants against each other, in one process, before one is made
// the default (llm.c's dev/ practice): the forward (METAFORMER_CUDA_DW's variants) and the weight
// gradient (METAFORMER_CUDA_DW_DW's) on ConvFormer-S18's four 7×7 shapes in bf16, each timed with CUDA
// events (median of --reps launches after a warm-up), each output compared with the first variant's.
// The in-process switch (set_depthwise_variant) replaces the environment variable, so one run times
// them all on the same buffers; cuda_check.sh's switch steps still check them (op cases, sanitizers,
// training) before a default changes.
//
//   build/bench/mf_cuda_dw_variants [--batch 128] [--reps 20] [--fwd lean,batchact] [--dw tiled,rows2]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ops/cuda/backward_kernels.h"
#include "ops/cuda/kernels/event_timing.h"
#include "ops/cuda/kernels/kernels.h"

namespace {

using mf::cuda::kernels::Act;
using mf::cuda::kernels::ActKind;
using mf::cuda::kernels::bf16;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "mf_cuda_dw_variants: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

bf16 to_bf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return bf16{static_cast<uint16_t>(u >> 16)};
}
float from_bf16(bf16 b) {
  const uint32_t u = static_cast<uint32_t>(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <class T>
T* upload(const std::vector<T>& h) {
  T* d = nullptr;
  check(cudaMalloc(&d, h.size() * sizeof(T)), "cudaMalloc");
  check(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  return d;
}

template <class T>
std::vector<T> download(const T* d, size_t n) {
  std::vector<T> h(n);
  check(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), "download");
  return h;
}

// Median milliseconds of `reps` runs of f after two warm-up runs.
template <class F>
double median_ms(int reps, F f) {
  return mf::cuda::kernels::median_event_ms(2, reps, f, check);
}

struct Shape {
  const char* name;
  int64_t H, C;  // square maps; C is ConvFormer's expanded width (2 · dim)
};

}  // namespace

int main(int argc, char** argv) {
  int64_t B = 128;
  int reps = 20;
  std::vector<std::string> fwd{"lean", "batchact"}, dw{"tiled", "rows2"};
  // One clear line and exit 1 for an option, value or variant it does not know; the variants are
  // checked here, before any GPU work (setting them needs no device).
  auto refuse = [](const std::string& what) {
    std::fprintf(stderr, "mf_cuda_dw_variants: %s\n", what.c_str());
    std::exit(1);
  };
  auto positive = [&](const std::string& k, const std::string& v) {
    size_t used = 0;
    long long n = 0;
    try {
      n = std::stoll(v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != v.size() || n < 1 || n > 1 << 20)
      refuse(k + " takes a whole number from 1 to 1048576, not '" + v + "'");
    return n;
  };
  if (argc % 2 == 0) refuse(std::string("option ") + argv[argc - 1] + " has no value");
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--batch")
      B = positive(k, v);
    else if (k == "--reps")
      reps = static_cast<int>(positive(k, v));
    else if (k == "--fwd")
      fwd = split(v);
    else if (k == "--dw")
      dw = split(v);
    else
      refuse("unknown option " + k + " (--batch, --reps, --fwd, --dw)");
  }
  for (const std::string& v : fwd)
    if (!mf::cuda::kernels::set_depthwise_variant(v.c_str())) refuse("no forward variant " + v);
  for (const std::string& v : dw)
    if (!mf::cuda::backward::set_depthwise_weight_grad_variant(v.c_str())) refuse("no weight-gradient variant " + v);
  if (fwd.empty() || dw.empty()) refuse("--fwd and --dw each need a variant");
  mf::cuda::kernels::set_depthwise_variant(nullptr);
  mf::cuda::backward::set_depthwise_weight_grad_variant(nullptr);
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) {
    std::fprintf(stderr, "mf_cuda_dw_variants: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "properties");
  std::printf(
      "%s, bf16, batch %lld, 7x7, stride 1, padding 3; median of %d launches (ms); max |diff| against "
      "the first variant\n\n",
      prop.name, static_cast<long long>(B), reps);
  const Shape shapes[] = {{"stage 1", 56, 128}, {"stage 2", 28, 256}, {"stage 3", 14, 640}, {"stage 4", 7, 1024}};
  constexpr int K = 7;
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::printf("| pass | shape | variant | ms | GMAC/s | max diff |\n| --- | --- | --- | ---: | ---: | ---: |\n");
  for (const Shape& sh : shapes) {
    const int64_t n = B * sh.H * sh.H * sh.C, taps = K * K;
    std::vector<bf16> hx(n), hdy(n);
    for (auto& v : hx) v = to_bf16(normal(rng));
    for (auto& v : hdy) v = to_bf16(normal(rng));
    std::vector<float> hw(taps * sh.C);
    for (auto& v : hw) v = 0.1f * normal(rng);
    bf16 *x = upload(hx), *dy = upload(hdy), *y = nullptr;
    float* w = upload(hw);
    check(cudaMalloc(&y, n * sizeof(bf16)), "cudaMalloc");
    const double gmac = static_cast<double>(n) * taps / 1e9;
    // Without an input activation (MambaOut's convolution, every dx) and with ConvFormer's StarReLU before
    // it (its scalars in device memory, as the model passes them).
    float* star_scalars = upload(std::vector<float>{0.8944f, -0.4472f});
    Act star;
    star.kind = ActKind::StarReLU, star.scale_p = star_scalars, star.bias_p = star_scalars + 1;
    for (const Act& pre : {Act{}, star}) {
      std::vector<float> first;
      for (const std::string& v : fwd) {
        mf::cuda::kernels::set_depthwise_variant(v.c_str());  // checked above
        auto run = [&] {
          check(mf::cuda::kernels::depthwise_conv2d(x, sh.C, w, nullptr, y, sh.C, B, sh.H, sh.H, sh.C, sh.H, sh.H, K, K,
                                                    1, 1, K / 2, K / 2, pre, Act{}, nullptr),
                "depthwise_conv2d");
        };
        const double ms = median_ms(reps, run);
        const std::vector<bf16> out = download(y, n);
        double diff = 0;
        if (first.empty()) {
          for (const bf16& o : out) first.push_back(from_bf16(o));
        } else {
          for (int64_t i = 0; i < n; ++i)
            diff = std::max(diff, static_cast<double>(std::fabs(from_bf16(out[i]) - first[i])));
        }
        std::printf("| forward%s | %s (%lld, %lld×%lld) | %s | %.3f | %.0f | %.3g |\n",
                    pre.kind == ActKind::StarReLU ? ", StarReLU first" : "", sh.name, static_cast<long long>(sh.C),
                    static_cast<long long>(sh.H), static_cast<long long>(sh.H), v.c_str(), ms, gmac / (ms / 1e3), diff);
      }
    }
    check(cudaFree(star_scalars), "free");
    mf::cuda::kernels::set_depthwise_variant(nullptr);
    double* work = nullptr;
    float* dwt = nullptr;
    check(cudaMalloc(&work, mf::cuda::backward::depthwise_backward_work(B, sh.H, sh.H, sh.C, K, K) * sizeof(double)),
          "cudaMalloc");
    check(cudaMalloc(&dwt, taps * sh.C * sizeof(float)), "cudaMalloc");
    std::vector<float> first_dw;
    for (const std::string& v : dw) {
      mf::cuda::backward::set_depthwise_weight_grad_variant(v.c_str());  // checked above
      auto run = [&] {
        check(cudaMemset(dwt, 0, taps * sh.C * sizeof(float)), "memset");
        check(mf::cuda::backward::depthwise_conv2d_backward(x, w, dy, static_cast<bf16*>(nullptr), dwt,
                                                            static_cast<float*>(nullptr), B, sh.H, sh.H, sh.C, sh.H,
                                                            sh.H, K, K, 1, 1, K / 2, K / 2, work, nullptr),
              "depthwise_conv2d_backward");
      };
      const double ms = median_ms(reps, run);
      const std::vector<float> out = download(dwt, taps * sh.C);
      double diff = 0;  // relative to the largest |dw|: the variants add in different orders
      if (first_dw.empty()) {
        first_dw = out;
      } else {
        double scale = 0;
        for (size_t i = 0; i < out.size(); ++i) {
          diff = std::max(diff, static_cast<double>(std::fabs(out[i] - first_dw[i])));
          scale = std::max(scale, static_cast<double>(std::fabs(first_dw[i])));
        }
        diff /= std::max(scale, 1e-30);
      }
      std::printf("| weight gradient | %s (%lld, %lld×%lld) | %s | %.3f | %.0f | %.3g%s |\n", sh.name,
                  static_cast<long long>(sh.C), static_cast<long long>(sh.H), static_cast<long long>(sh.H), v.c_str(),
                  ms, gmac / (ms / 1e3), diff, &v == &dw.front() ? "" : " (rel.)");
    }
    mf::cuda::backward::set_depthwise_weight_grad_variant(nullptr);
    check(cudaFree(x), "free");
    check(cudaFree(dy), "free");
    check(cudaFree(y), "free");
    check(cudaFree(w), "free");
    check(cudaFree(work), "free");
    check(cudaFree(dwt), "free");
  }
  return 0;
}
