// The cuda backend's optimizer ops (Backend::adamw_step, sum_of_squares, scale_, ema_update): each
// list of tensors becomes a table of slots and chunks in device memory (optimizer_kernels.h) and
// one launch. A training run passes the same tensors every step, so the tables are cached by their
// contents: after the first step, an optimizer step is one kernel launch and no copy.
#include <cstring>
#include <deque>
#include <vector>

#include "core/env_switch.h"
#include "ops/cuda/cuda_backward.h"
#include "ops/cuda/cuda_context.h"
#include "ops/cuda/optimizer_kernels.h"

namespace mf {
namespace {

namespace opt = cuda::optim;

cudaStream_t stream() { return cuda::context().stream; }

struct DeviceTable {
  std::vector<char> key;  // the host slots, byte for byte
  Tensor storage;         // slots, then chunks
  const opt::TensorSlot* slots = nullptr;
  const opt::Chunk* chunks = nullptr;
  int64_t num_chunks = 0;
};

// The device table of `slots`: made and uploaded the first time, then found by its contents.
const DeviceTable& table_of(const std::vector<opt::TensorSlot>& slots) {
  static std::deque<DeviceTable> cache;  // a few lists per run: AdamW's, the gradients', the EMA's
  std::vector<char> key(slots.size() * sizeof(opt::TensorSlot));
  if (!slots.empty()) std::memcpy(key.data(), slots.data(), key.size());
  for (const DeviceTable& t : cache)
    if (t.key == key) return t;
  std::vector<opt::Chunk> chunks;
  for (size_t k = 0; k < slots.size(); ++k)
    for (int64_t start = 0; start < slots[k].n; start += opt::kOptimizerChunk)
      chunks.push_back({static_cast<int32_t>(k), start});
  const size_t slot_bytes = (key.size() + 255) / 256 * 256, chunk_bytes = chunks.size() * sizeof(opt::Chunk);
  DeviceTable t;
  t.key = std::move(key);
  t.storage = Tensor::empty({static_cast<int64_t>((slot_bytes + chunk_bytes) / 4 + 1)}, Device::CUDA);
  char* base = reinterpret_cast<char*>(t.storage.data());
  // From pageable memory: the copy has taken the bytes when it returns, so the vectors may go.
  if (!t.key.empty()) MF_CUDA(cudaMemcpyAsync(base, t.key.data(), t.key.size(), cudaMemcpyHostToDevice, stream()));
  if (chunk_bytes) MF_CUDA(cudaMemcpyAsync(base + slot_bytes, chunks.data(), chunk_bytes, cudaMemcpyHostToDevice, stream()));
  MF_CUDA(cudaStreamSynchronize(stream()));
  t.slots = reinterpret_cast<const opt::TensorSlot*>(base);
  t.chunks = reinterpret_cast<const opt::Chunk*>(base + slot_bytes);
  t.num_chunks = static_cast<int64_t>(chunks.size());
  if (cache.size() >= 8) cache.pop_front();
  cache.push_back(std::move(t));
  return cache.back();
}

float* device_f32(Tensor& t) {
  MF_CHECK(t.device() == Device::CUDA && t.dtype() == DType::f32, "the GPU optimizer updates fp32 device tensors");
  return t.data();
}
const float* device_f32(const Tensor& t) {
  MF_CHECK(t.device() == Device::CUDA && t.dtype() == DType::f32, "the GPU optimizer reads fp32 device tensors");
  return t.data();
}

}  // namespace

void CudaBackwardOps::adamw_step(const std::vector<AdamWTensors>& tensors, const AdamWScalars& s) {
  std::vector<opt::TensorSlot> slots;
  // A weight's bf16 copy for the GEMMs (cuda_backend.cpp's converted(), made by the first forward) is
  // rewritten by the step from the new weight, rounded as the cast kernel rounds, and stamped with the
  // weight's new version (op::adamw_step bumped it): the next forward finds it instead of launching a
  // cast per weight (about 75 a convformer_s18 step). METAFORMER_CUDA_ADAMW_COPIES=0 leaves them to the
  // casts (read each step, so that CudaTraining.AdamWRefreshesTheBf16CopiesBitForBit can compare the two
  // in one process; env_choice warns about a bad value once).
  const bool refresh = env_choice("METAFORMER_CUDA_ADAMW_COPIES", {"1", "0"}) != 1;
  std::vector<std::pair<const Tensor*, std::shared_ptr<void>>> copies;
  for (const AdamWTensors& t : tensors) {
    void* bf16_copy = nullptr;
    if (auto d = refresh ? t.weight->derived_any_version(cuda::kBf16CopyKey) : nullptr) {
      const Tensor* c = static_cast<const Tensor*>(d.get());
      if (c->device() == Device::CUDA && c->dtype() == DType::bf16 && c->numel() == t.weight->numel()) {
        bf16_copy = const_cast<void*>(c->raw());
        copies.emplace_back(t.weight, std::move(d));
      }
    }
    slots.push_back({device_f32(*t.weight), device_f32(*t.grad), device_f32(*t.exp_avg), device_f32(*t.exp_avg_sq),
                     bf16_copy, t.weight->numel(), t.decay ? 1 : 0});
  }
  const DeviceTable& table = table_of(slots);
  const opt::AdamW a{s.decay_factor, s.one_minus_beta1,       s.beta2,     s.one_minus_beta2,
                     s.bias_correction2_sqrt, s.eps, s.step_size};
  cuda::check(opt::adamw_step(table.slots, table.chunks, table.num_chunks, a, stream()), "adamw_step");
  for (auto& [w, d] : copies) w->set_derived(cuda::kBf16CopyKey, std::move(d));
}

double CudaBackwardOps::sum_of_squares(const std::vector<const Tensor*>& tensors) {
  std::vector<opt::TensorSlot> slots;
  for (const Tensor* t : tensors)
    slots.push_back({const_cast<float*>(device_f32(*t)), nullptr, nullptr, nullptr, nullptr, t->numel(), 0});
  const DeviceTable& table = table_of(slots);
  Tensor work = Tensor::empty({2 * (table.num_chunks + 1)}, Device::CUDA);  // num_chunks + 1 doubles
  double* partials = reinterpret_cast<double*>(work.data());
  cuda::check(opt::sum_of_squares(table.slots, table.chunks, table.num_chunks, partials + 1, partials, stream()),
              "sum_of_squares");
  double result = 0;
  MF_CUDA(cudaMemcpyAsync(&result, partials, sizeof(double), cudaMemcpyDeviceToHost, stream()));
  MF_CUDA(cudaStreamSynchronize(stream()));
  return result;
}

void CudaBackwardOps::scale_(const std::vector<Tensor*>& tensors, double factor) {
  std::vector<opt::TensorSlot> slots;
  for (Tensor* t : tensors) slots.push_back({device_f32(*t), nullptr, nullptr, nullptr, nullptr, t->numel(), 0});
  const DeviceTable& table = table_of(slots);
  cuda::check(opt::scale(table.slots, table.chunks, table.num_chunks, factor, stream()), "scale_");
}

void CudaBackwardOps::ema_update(const std::vector<Tensor*>& avg, const std::vector<const Tensor*>& w,
                                 const std::vector<bool>& copy, float decay, float one_minus_decay) {
  std::vector<opt::TensorSlot> slots;
  for (size_t k = 0; k < avg.size(); ++k)
    slots.push_back(
        {device_f32(*avg[k]), device_f32(*w[k]), nullptr, nullptr, nullptr, avg[k]->numel(), copy[k] ? 1 : 0});
  const DeviceTable& table = table_of(slots);
  cuda::check(opt::ema_update(table.slots, table.chunks, table.num_chunks, decay, one_minus_decay, stream()),
              "ema_update");
}

}  // namespace mf
