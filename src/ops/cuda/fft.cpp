// Channels-last tensors are transposed so that each (sample, channel) image is contiguous, which
// lets one batched cuFFT plan cover the whole tensor.
//   forward: [B,H,W,C] -> real [B,C,H,W] -> 2-D R2C -> complex [B,C,H,Wf] -> split [B,H,Wf,2,C]
//   inverse: split -> complex [B,C,Wf,H] -> C2C along H -> [B,C,H,Wf] -> C2R along W -> [B,H,W,C]
// The inverse runs as two 1-D passes on purpose: the last, real pass then reads only the
// Hermitian half along W and ignores the imaginary parts of its self-conjugate bins, exactly as
// torch.fft.irfft2 (and the reference backend) define the inverse of a non-Hermitian input.
#include "ops/cuda/fft.h"

#include <cufft.h>

#include <cmath>
#include <map>
#include <tuple>

#include "core/tensor.h"
#include "ops/cuda/backend_kernels.h"
#include "ops/cuda/cuda_context.h"

namespace mf::cuda {
namespace {

void check_fft(cufftResult r, const char* what) {
  if (r != CUFFT_SUCCESS) fail("cuFFT error {} in {}", static_cast<int>(r), what);
}

enum class PlanKind { r2c_2d, c2c_1d, c2r_1d };
using PlanKey = std::tuple<PlanKind, int64_t, int64_t, int64_t>;

// Plans are made once per shape and kept (each owns its work area: no allocation per call).
cufftHandle plan(PlanKind kind, int64_t n0, int64_t n1, int64_t batch) {
  static std::map<PlanKey, cufftHandle> plans;
  const PlanKey key{kind, n0, n1, batch};
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;
  cufftHandle h;
  check_fft(cufftCreate(&h), "cufftCreate");
  long long n2[2] = {n0, n1}, n1d[1] = {n0};
  size_t work = 0;
  switch (kind) {
    case PlanKind::r2c_2d:
      check_fft(cufftMakePlanMany64(h, 2, n2, nullptr, 1, 0, nullptr, 1, 0, CUFFT_R2C, batch, &work), "plan r2c");
      break;
    case PlanKind::c2c_1d:
      check_fft(cufftMakePlanMany64(h, 1, n1d, nullptr, 1, 0, nullptr, 1, 0, CUFFT_C2C, batch, &work), "plan c2c");
      break;
    case PlanKind::c2r_1d:
      check_fft(cufftMakePlanMany64(h, 1, n1d, nullptr, 1, 0, nullptr, 1, 0, CUFFT_C2R, batch, &work), "plan c2r");
      break;
  }
  plans.emplace(key, h);
  return h;
}

}  // namespace

void rfft2(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, float mid_scale) {
  if (B * H * W * C == 0) return;
  cudaStream_t s = context().stream;
  const int64_t Wf = W / 2 + 1;
  Tensor planes = Tensor::empty({B, C, H, W}, Device::CUDA);
  Tensor spec = Tensor::empty({B, C, H, Wf, 2}, Device::CUDA);
  nhwc_to_nchw_scaled(x, planes.data(), B, H, W, C, 1.f, s);
  MF_CUDA_LAUNCHED("fft transpose");
  cufftHandle h = plan(PlanKind::r2c_2d, H, W, B * C);
  check_fft(cufftSetStream(h, s), "cufftSetStream");
  check_fft(cufftExecR2C(h, planes.data(), reinterpret_cast<cufftComplex*>(spec.data())), "cufftExecR2C");
  spectrum_split(spec.data(), y, B, C, H, Wf, W, 1.f / std::sqrt(static_cast<float>(H * W)), mid_scale, s);
  MF_CUDA_LAUNCHED("spectrum split");
}

void irfft2(const float* x, float* y, int64_t B, int64_t H, int64_t W, int64_t C, float mid_scale) {
  if (B * H * W * C == 0) return;
  cudaStream_t s = context().stream;
  const int64_t Wf = W / 2 + 1;
  Tensor cols = Tensor::empty({B, C, Wf, H, 2}, Device::CUDA);
  Tensor rows = Tensor::empty({B, C, H, Wf, 2}, Device::CUDA);
  Tensor planes = Tensor::empty({B, C, H, W}, Device::CUDA);
  spectrum_join_transposed(x, cols.data(), B, C, H, Wf, W, 1.f / std::sqrt(static_cast<float>(H * W)), mid_scale, s);
  MF_CUDA_LAUNCHED("spectrum join");
  cufftHandle hc = plan(PlanKind::c2c_1d, H, 0, B * C * Wf);
  check_fft(cufftSetStream(hc, s), "cufftSetStream");
  auto* cc = reinterpret_cast<cufftComplex*>(cols.data());
  check_fft(cufftExecC2C(hc, cc, cc, CUFFT_INVERSE), "cufftExecC2C");
  transpose_complex(cols.data(), rows.data(), B * C, Wf, H, s);
  MF_CUDA_LAUNCHED("fft transpose");
  cufftHandle hr = plan(PlanKind::c2r_1d, W, 0, B * C * H);
  check_fft(cufftSetStream(hr, s), "cufftSetStream");
  check_fft(cufftExecC2R(hr, reinterpret_cast<cufftComplex*>(rows.data()), planes.data()), "cufftExecC2R");
  nchw_to_nhwc_scaled(planes.data(), y, B, C, H, W, 1.f, s);
  MF_CUDA_LAUNCHED("fft transpose");
}

}  // namespace mf::cuda
