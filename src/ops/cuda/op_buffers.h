// The buffers of the CUDA backend's ops that take host or device, fp32 or bf16 tensors (the op
// harness passes host fp32 inputs; a bf16 training run passes bf16 device activations): shared by
// the backward passes (cuda_backward.cpp) and the other families' ops (cuda_family_ops.cpp).
#pragma once

#include <algorithm>
#include <exception>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "ops/cuda/cuda_backward.h"
#include "ops/cuda/cuda_context.h"
#include "ops/cuda/kernels/kernels.h"

namespace mf::cuda::ops {

inline cudaStream_t stream() { return cuda::context().stream; }
inline void ok(cudaError_t e, const char* what) { cuda::check(e, what); }

namespace k = cuda::kernels;
using k::bf16;

// The fp32 view of a backward op's activations. The backward kernels are fp32; on the bf16 backend
// (train --dtype bf16) an op without bf16 kernels of its own reads widened copies of its bf16 inputs
// and writes its bf16 outputs through fp32 temporaries, rounded to bf16 once when the op ends (the
// destructor queues those casts). The copies are the call's own and die with it, never cached with
// the tensor: an activation may later be overwritten in place, and its cached copy would then be
// stale. fp32 tensors pass through (a host one is uploaded, cached by version, as the forward ops do).
class Widened {
 public:
  Widened() : unwinding_(std::uncaught_exceptions()) {}
  Widened(const Widened&) = delete;
  Widened& operator=(const Widened&) = delete;
  ~Widened() {
    if (std::uncaught_exceptions() > unwinding_) return;  // the op failed: its outputs are not used
    for (auto& [target, wide] : pending_)
      (void)k::cast(wide.data(), static_cast<bf16*>(target->raw()), wide.numel(), stream());
  }
  const float* in(const Tensor& t) {
    if (t.dtype() == DType::f32) return cuda::device_f32(t);
    Tensor wide = Tensor::empty(t.shape(), Device::CUDA);
    ok(k::cast(static_cast<const bf16*>(t.raw()), wide.data(), t.numel(), stream()), "widen to fp32");
    kept_.push_back(wide);
    return wide.data();
  }
  const float* in(const Tensor* t) { return t ? in(*t) : nullptr; }
  // An output the dispatcher allocated on the backend's device.
  float* out(Tensor& t) {
    MF_CHECK(t.device() == Device::CUDA, "a GPU backward pass writes device tensors");
    if (t.dtype() == DType::f32) return t.data();
    Tensor wide = Tensor::empty(t.shape(), Device::CUDA);
    pending_.emplace_back(&t, wide);
    return wide.data();
  }
  // The bf16 side, for the kernels that read and write bf16 activations: a bf16 tensor is itself; a
  // host fp32 one (the training batch, the op harness's inputs) is read through its bf16 copy, cached
  // with it as the forward ops cache theirs: the stem's weight gradient then reads the copy its
  // forward made, where a copy of the call's own uploaded the 77 MB batch again each step
  // (poolformer_s12, -9 % images/s; docs/cuda-log.md). A device fp32 one is rounded into the call's own
  // copy (an activation may be overwritten in place later; a copy cached with it would go stale).
  const bf16* in16(const Tensor& t) {
    if (t.dtype() == DType::bf16) return static_cast<const bf16*>(t.raw());
    if (t.device() != Device::CUDA) return cuda::device_bf16(t);
    Tensor narrow = Tensor::empty(t.shape(), Device::CUDA, DType::bf16);
    ok(k::cast(cuda::device_f32(t), static_cast<bf16*>(narrow.raw()), t.numel(), stream()), "round to bf16");
    kept_.push_back(narrow);
    return static_cast<const bf16*>(narrow.raw());
  }
  bf16* out16(Tensor& t) {
    MF_CHECK(t.device() == Device::CUDA && t.dtype() == DType::bf16,
             "a GPU backward pass in bf16 writes bf16 device "
             "tensors, not {}",
             dtype_name(t.dtype()));
    return static_cast<bf16*>(t.raw());
  }
  // An activation (or its gradient) as the kernels' element type T, float or bf16.
  template <class T>
  const T* act(const Tensor& t) {
    if constexpr (std::is_same_v<T, bf16>)
      return in16(t);
    else
      return in(t);
  }
  template <class T>
  T* act_out(Tensor& t) {
    if constexpr (std::is_same_v<T, bf16>)
      return out16(t);
    else
      return out(t);
  }

 private:
  int unwinding_;
  std::vector<Tensor> kept_;
  std::vector<std::pair<Tensor*, Tensor>> pending_;
};

// f(tag) with tag a float or a bf16: the backend's activation type, for the kernels that take either
// (their templates and overloads), as the forward ops' typed() does.
template <class F>
inline void typed_acts(DType activations, F&& f) {
  if (activations == DType::bf16)
    f(bf16{});
  else
    f(float{});
}

// Scratch space for n doubles, from the pool, for one call (freed in stream order with the tensor).
struct Work {
  Tensor t;
  double* p = nullptr;
  explicit Work(int64_t n) : t(Tensor::empty({2 * std::max<int64_t>(n, 1)}, Device::CUDA)) {
    p = reinterpret_cast<double*>(t.data());  // a fresh allocation: 256-byte aligned
  }
};

// A gradient the caller passes in (a parameter's, channel_slice's dx, glu's dc), as a device pointer:
// itself on the GPU; a host tensor (the op harness's zero-initialised gradients) is copied up when it
// is accumulated into, and copied back by finish() (which waits for the GPU).
class DeviceGrad {
 public:
  DeviceGrad(Tensor* t, bool accumulate) : target_(t) {
    if (!t) return;
    MF_CHECK(t->dtype() == DType::f32, "a GPU backward pass writes fp32 gradients, not {}", dtype_name(t->dtype()));
    if (t->device() == Device::CUDA) {
      p_ = t->data();
      return;
    }
    copy_ = accumulate ? t->to(Device::CUDA) : Tensor::empty(t->shape(), Device::CUDA);
    p_ = copy_.data();
  }
  float* get() const { return p_; }
  void finish() {
    if (copy_.defined()) target_->copy_from(copy_);
  }

 private:
  Tensor* target_;
  Tensor copy_;
  float* p_ = nullptr;
};

}  // namespace mf::cuda::ops
