// The machine's GEMM ceiling, measured through the library the engine's GEMMs run on (oneDNN), so
// that a model's achieved GFLOP/s can be read as a fraction of what this CPU can do.
#pragma once

#include <string>
#include <vector>

namespace mf {

struct GemmPeak {
  std::string name;  // "fp32" or "bf16 (fp32 out)"
  int size = 0;      // M = N = K
  double gflops = 0; // 2 FLOPs per multiply-accumulate, best of the timed repetitions
};

// Square matmuls at the current thread count: fp32, and bf16 inputs with fp32 output when the CPU
// has a bf16 GEMM kernel (skipped otherwise); then the cores' fp32 FMA issue rate from a loop on
// registers (size 0), the hardware bound that no GEMM exceeds.
std::vector<GemmPeak> measure_gemm_peak(int size = 2048);

}  // namespace mf
