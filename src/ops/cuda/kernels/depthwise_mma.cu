// The tensor-core depthwise convolution (bf16, stride 1, square K ≤ 9): the kernel around the body in
// depthwise_mma.h, and its launcher. conv.cu's depthwise_launch picks it (METAFORMER_CUDA_DW=mma, or
// mma2 for the tall blocks; candidates until the device has measured them).
#include "common.cuh"
#include "depthwise_mma.h"

#include <atomic>

namespace mf::cuda::kernels {
namespace {

struct ActF {
  Act act;
  __device__ __forceinline__ float operator()(float v) const { return act_apply(act, v); }
};

// One warp's mma.sync on its own lane's fragments (S = 1).
struct DeviceMma {
  __device__ __forceinline__ void operator()(float (&d)[4][1], const uint32_t (&a)[4][1], const uint32_t (&b0)[1],
                                             const uint32_t (&b1)[1]) const {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0][0]), "+f"(d[1][0]), "+f"(d[2][0]), "+f"(d[3][0])
        : "r"(a[0][0]), "r"(a[1][0]), "r"(a[2][0]), "r"(a[3][0]), "r"(b0[0]), "r"(b1[0]));
  }
};

// Three blocks an SM (24 warps to hide the staging loads' latency): left free, ptxas gave the 16×16
// blocks 128 registers and the 32×16 ones 94 (sm_90, K = 7: two blocks an SM); capped, both take 80
// with 12–48 bytes of spills.
constexpr int kMinBlocks = 3;

template <class G>
__global__ void __launch_bounds__(dwmma::kThreads, kMinBlocks) dw_mma_kernel(dwmma::Args a, Act pre, Act post) {
  extern __shared__ __align__(16) uint32_t smem[];
  uint32_t* in_s = smem;
  uint32_t* out_s = smem + G::CB * G::kInPlane;
  const dwmma::BlockPos at{blockIdx.z, int64_t(blockIdx.y) * G::CB, int64_t(blockIdx.x / a.tiles_w) * G::TR,
                           int64_t(blockIdx.x % a.tiles_w) * G::TC};
  const int tid = threadIdx.x;
  dwmma::stage<G>(tid, dwmma::kThreads, a, at, in_s, ActF{pre});
  __syncthreads();
  dwmma::compute<G, 1>(tid >> 5, tid & 31, a, at, in_s, out_s, DeviceMma{}, ActF{post});
  __syncthreads();
  dwmma::copy_out<G>(tid, dwmma::kThreads, a, at, out_s);
}

template <class G>
cudaError_t launch(const dwmma::Args& a, int64_t B, Act pre, Act post, cudaStream_t s) {
  static_assert(G::kSmemBytes <= 100 * 1024, "two blocks an SM at least");
  // Above 48 KiB of dynamic shared memory a kernel must opt in, once per device (not a stream
  // operation: a graph being recorded is not disturbed by it).
  static std::atomic<uint64_t> opted_in{0};
  int device = 0;
  if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  const uint64_t bit = uint64_t(1) << (device & 63);
  if (!(opted_in.load() & bit)) {
    const cudaError_t e =
        cudaFuncSetAttribute(dw_mma_kernel<G>, cudaFuncAttributeMaxDynamicSharedMemorySize, G::kSmemBytes);
    if (e != cudaSuccess) return e;
    opted_in.fetch_or(bit);
  }
  const int64_t tiles = int64_t(a.tiles_w) * ((a.Ho + G::TR - 1) / G::TR);
  const int64_t cblocks = (a.C + G::CB - 1) / G::CB;
  if (tiles > 0x7fffffff || cblocks > 65535 || B > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(cblocks), static_cast<unsigned>(B));
  dw_mma_kernel<G><<<grid, dwmma::kThreads, G::kSmemBytes, s>>>(a, pre, post);
  return cudaGetLastError();
}

template <int K>
cudaError_t launch_k(dwmma::Args a, int64_t B, bool tall, Act pre, Act post, cudaStream_t s) {
  return dwmma::with_geometry<K>(dwmma::choose_shape(a.Ho, a.Wo, tall), [&](auto geometry) {
    using G = decltype(geometry);
    a.tiles_w = static_cast<int>((a.Wo + G::TC - 1) / G::TC);
    return launch<G>(a, B, pre, post, s);
  });
}

}  // namespace

bool depthwise_mma_supported(int64_t B, int64_t C, int kh, int kw, int sh, int sw) {
  return sh == 1 && sw == 1 && kh == kw && (kh == 3 || kh == 5 || kh == 7) && B <= 65535 && (C + 15) / 16 <= 65535;
}

cudaError_t depthwise_mma(const bf16* x, int64_t xs, const float* w_hwc, const float* bias, bf16* y, int64_t ys,
                          int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, int k, int ph, int pw,
                          bool tall, Act pre, Act post, cudaStream_t s) {
  if (Wo > int64_t(0x7fffffff) - 16) return cudaErrorInvalidValue;
  dwmma::Args a{};
  a.x = reinterpret_cast<const uint16_t*>(x);
  a.xs = xs;
  a.w = w_hwc;
  a.bias = bias;
  a.y = reinterpret_cast<uint16_t*>(y);
  a.ys = ys;
  a.H = H, a.W = W, a.C = C, a.Ho = Ho, a.Wo = Wo;
  a.ph = ph, a.pw = pw;
  a.vec_in = C % 8 == 0 && xs % 8 == 0 && aligned16(x);
  a.vec_out = C % 8 == 0 && ys % 8 == 0 && aligned16(y);
  switch (k) {
    case 3: return launch_k<3>(a, B, tall, pre, post, s);
    case 5: return launch_k<5>(a, B, tall, pre, post, s);
    case 7: return launch_k<7>(a, B, tall, pre, post, s);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace mf::cuda::kernels
