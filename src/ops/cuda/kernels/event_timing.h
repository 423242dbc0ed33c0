// Kernel timing for the developer tools (selftest.cu's --perf, bench/cuda_dev): the median of `reps`
// runs of `launch`, each between two CUDA events on the default stream, after `warmup` untimed runs.
// Header-only with the caller's error handler, `check(cudaError_t, const char* what)`: the kernels'
// self-test links no library (tools/device/cudak_selftest.sh).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

namespace mf::cuda::kernels {

template <class F, class Check>
double median_event_ms(int warmup, int reps, F&& launch, Check&& check) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  for (int i = 0; i < warmup; ++i) launch();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(a), "record");
    launch();
    check(cudaEventRecord(b), "record");
    check(cudaEventSynchronize(b), "sync");
    float t = 0;
    check(cudaEventElapsedTime(&t, a, b), "elapsed");
    ms.push_back(t);
  }
  check(cudaEventDestroy(a), "event");
  check(cudaEventDestroy(b), "event");
  std::sort(ms.begin(), ms.end());
  return ms.empty() ? 0.0 : ms[ms.size() / 2];
}

}  // namespace mf::cuda::kernels
