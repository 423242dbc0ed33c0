#include "ops/gemm_peak.h"

#include <algorithm>
#include <chrono>

#include "core/threading.h"
#include "ops/cpu/onednn.h"

namespace mf {

namespace {
using dnnl::memory;

// Best time of several repetitions, after two warm-up runs: the ceiling, not the typical case.
double best_gflops(memory::data_type in_type, int n) {
  const memory::dims dims{n, n};
  auto a_md = memory::desc(dims, in_type, memory::format_tag::ab);
  auto b_any = memory::desc(dims, in_type, memory::format_tag::any);
  auto c_md = memory::desc(dims, memory::data_type::f32, memory::format_tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_any, c_md), onednn::engine());
  dnnl::matmul mm(pd);
  memory a(a_md, onednn::engine()), b(pd.weights_desc(), onednn::engine()), c(c_md, onednn::engine());
  // Fill with small values (zero would let a kernel skip work on denormal-free data just as well,
  // but real operands are not zero); bf16 1.0 is 0x3F80.
  if (in_type == memory::data_type::f32) {
    std::fill_n(static_cast<float*>(a.get_data_handle()), n * n, 1.0f);
    std::fill_n(static_cast<float*>(b.get_data_handle()), b.get_desc().get_size() / 4, 1.0f);
  } else {
    std::fill_n(static_cast<uint16_t*>(a.get_data_handle()), n * n, uint16_t{0x3F80});
    std::fill_n(static_cast<uint16_t*>(b.get_data_handle()), b.get_desc().get_size() / 2, uint16_t{0x3F80});
  }
  const std::unordered_map<int, memory> args{{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}};
  double best = 1e30;
  for (int i = 0; i < 8; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    mm.execute(onednn::stream(), args);
    onednn::stream().wait();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i >= 2) best = std::min(best, s);
  }
  return 2.0 * n * n * static_cast<double>(n) / best / 1e9;
}
// The cores' fp32 multiply-add issue rate, with no memory traffic at all: every thread runs
// independent fused multiply-adds on 16 vector accumulators (enough to cover the FMA latency on two
// pipes). No GEMM can beat this number; the library GEMM's fraction of it says how close the
// library already is to the hardware.
double fma_loop_gflops() {
  using vf = float __attribute__((vector_size(64)));
  constexpr int kAcc = 16;
  constexpr int64_t kIters = 4'000'000;
  double best = 1e30;
  float sink = 0.f;
  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel reduction(+ : sink)
    {
      vf acc[kAcc];
      for (int i = 0; i < kAcc; ++i) acc[i] = vf{} + static_cast<float>(i) * 1e-3f;
      const vf a = vf{} + 0.999999f, b = vf{} + 1e-7f;
      for (int64_t it = 0; it < kIters; ++it)
#pragma GCC unroll 16
        for (int i = 0; i < kAcc; ++i) acc[i] = acc[i] * a + b;
      for (int i = 0; i < kAcc; ++i) sink += acc[i][0];
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rep >= 1) best = std::min(best, s);
  }
  volatile float keep = sink;  // the accumulators are used, so the loop is not optimised away
  (void)keep;
  const double flops = 2.0 * kAcc * 16 * static_cast<double>(kIters) * static_cast<double>(num_threads());
  return flops / best / 1e9;
}
}  // namespace

std::vector<GemmPeak> measure_gemm_peak(int size) {
  std::vector<GemmPeak> out{{"fp32", size, best_gflops(memory::data_type::f32, size)}};
  try {
    out.push_back({"bf16 in, fp32 out", size, best_gflops(memory::data_type::bf16, size)});
  } catch (const dnnl::error&) {
    // No bf16 matmul implementation on this CPU: report fp32 only.
  }
  out.push_back({"fp32 FMA loop (registers only, not a GEMM)", 0, fma_loop_gflops()});
  return out;
}

}  // namespace mf
