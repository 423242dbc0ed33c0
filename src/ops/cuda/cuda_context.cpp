#include "ops/cuda/cuda_context.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/device_memory.h"
#include "ops/cuda/backend_kernels.h"

namespace mf::cuda {

void check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // clear a sticky-free error so that the next call starts clean
  fail("CUDA error in {}: {}", what, cudaGetErrorString(status));
}

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) fail("cuBLASLt error {} in {}", static_cast<int>(status), what);
}

namespace {

int g_selected = 0;
Context* g_context = nullptr;  // never destroyed: tensors freed during static destruction still need it

size_t parse_limit(const char* s) {
  char* end = nullptr;
  const double v = std::strtod(s, &end);
  MF_CHECK(end != s && v > 0, "METAFORMER_CUDA_MEMORY_LIMIT must be a positive size such as 8G or 512M, got '{}'", s);
  const std::string unit = end;
  double mul = 1;
  if (unit == "K" || unit == "k") mul = 1024.0;
  else if (unit == "M" || unit == "m") mul = 1024.0 * 1024;
  else if (unit == "G" || unit == "g") mul = 1024.0 * 1024 * 1024;
  else MF_CHECK(unit.empty(), "METAFORMER_CUDA_MEMORY_LIMIT: unknown unit '{}' (use K, M or G)", unit);
  return static_cast<size_t>(v * mul);
}

// A default that an A/B can turn off: on unless the variable is set to 0.
bool on_unless_zero(const char* name) {
  const char* e = std::getenv(name);
  return e == nullptr || std::string(e) != "0";
}

// Training batches in page-locked memory (CudaPool::allocate_pinned); METAFORMER_CUDA_PINNED_BATCHES=0
// turns it off.
bool pinned_batches_enabled() {
  static const bool enabled = on_unless_zero("METAFORMER_CUDA_PINNED_BATCHES");
  return enabled;
}

// The page-locked staging of small copies between the host and the device (CudaPool::copy);
// METAFORMER_CUDA_STAGED_COPIES=0 turns it off.
bool staged_copies_enabled() {
  static const bool enabled = on_unless_zero("METAFORMER_CUDA_STAGED_COPIES");
  return enabled;
}

// Whether work queued on `s` now would be captured into a CUDA graph (graphs.cpp): a staged copy
// must not be, as its staging block is reused after the copy.
bool capturing(cudaStream_t s) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  MF_CUDA(cudaStreamIsCapturing(s, &st));
  return st != cudaStreamCaptureStatusNone;
}

// A copy between the host and the GPU inside a recorded pass (graphs.cpp) would be replayed from a
// host buffer that no longer holds that data, and its wait for the stream is not allowed while
// capturing: refused with an error naming the cause, which ends the recording, and the pass then
// runs without a graph.
void refuse_while_capturing(cudaStream_t s) {
  if (capturing(s))
    fail("a copy between the host and the GPU inside a pass being recorded as a CUDA graph (the pass runs without one)");
}

// Stream-ordered caching pool: cudaMallocAsync from the device's default pool with its release
// threshold raised to "never", so freed blocks stay with the pool and later requests of the same
// shapes are served without cudaMalloc. Frees are ordered on the stream, so a block is reused only
// after the kernels that read it.
class CudaPool final : public DeviceMemory {
 public:
  void* allocate(size_t bytes) override {
    Context& c = context();
    if (bytes == 0) bytes = 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (limit_ && in_use_ + bytes > limit_)
        fail("out of GPU memory: {:.1f} MiB requested with {:.1f} MiB in use, over METAFORMER_CUDA_MEMORY_LIMIT ({:.1f} MiB)",
             bytes / 1048576.0, in_use_ / 1048576.0, limit_ / 1048576.0);
    }
    void* p = nullptr;
    const cudaError_t st = cudaMallocAsync(&p, bytes, c.stream);
    if (st != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail("out of GPU memory on cuda:{}: {:.1f} MiB requested, {:.1f} MiB in use by tensors, {:.1f} of {:.1f} MiB free "
           "({})", c.device, bytes / 1048576.0, in_use_ / 1048576.0, free_b / 1048576.0, total_b / 1048576.0,
           cudaGetErrorString(st));
    }
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ += bytes;
    if (trace_blocks_) live_[p] = bytes;
    if (in_use_ > peak_) {
      peak_ = in_use_;
      if (trace_blocks_) snapshot_peak();
    }
    return p;
  }
  void release(void* p, size_t bytes) override {
    if (!p) return;
    // A destructor cannot throw, and an error left behind here would be reported by the next
    // launch's check under that kernel's name (a block allocated inside a graph capture that was
    // abandoned is one way to get here): clear it.
    if (cudaFreeAsync(p, g_context->stream) != cudaSuccess) cudaGetLastError();
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ -= bytes == 0 ? 1 : bytes;
    if (trace_blocks_) live_.erase(p);
  }
  void copy(void* dst, const void* src, size_t bytes, Direction dir) override {
    Context& c = context();
    if (dir != Direction::device_to_device) refuse_while_capturing(c.stream);
    if (dir == Direction::host_to_device && bytes > 0 && pinned_batches_enabled()) {
      // From a pinned block: queued without waiting, the block marked busy until the copy is done.
      std::lock_guard<std::mutex> lock(pin_mu_);
      if (PinnedBlock* b = pinned_block_of(src, bytes)) {
        MF_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c.stream));
        MF_CUDA(cudaEventRecord(b->copied, c.stream));
        b->busy = true;
        return;
      }
    }
    if (dir == Direction::host_to_device && bytes > 0 && bytes <= kStagedCopyMax && staged_copies_enabled() &&
        !capturing(c.stream)) {
      // A small upload (a step's targets, drop-path scales): through a staging block, so the host
      // need not wait for the stream before it may change the source.
      std::lock_guard<std::mutex> lock(pin_mu_);
      Staging st = take_staging(bytes);
      std::memcpy(st.host, src, bytes);
      MF_CUDA(cudaMemcpyAsync(dst, st.host, bytes, cudaMemcpyHostToDevice, c.stream));
      MF_CUDA(cudaEventRecord(st.done, c.stream));
      give_back_staging(st);
      return;
    }
    const cudaMemcpyKind kind = dir == Direction::host_to_device   ? cudaMemcpyHostToDevice
                                : dir == Direction::device_to_host ? cudaMemcpyDeviceToHost
                                                                   : cudaMemcpyDeviceToDevice;
    MF_CUDA(cudaMemcpyAsync(dst, src, bytes, kind, c.stream));
    // The host reads what came back, or may reuse the pageable source: wait either way.
    if (dir != Direction::device_to_device) MF_CUDA(cudaStreamSynchronize(c.stream));
  }
  // copy_ahead (cuda_context.h): on the copy stream, after `after`.
  cudaEvent_t copy_ahead(void* dst, const void* src, size_t bytes, cudaEvent_t after) {
    Context& c = context();
    refuse_while_capturing(c.stream);
    std::lock_guard<std::mutex> lock(pin_mu_);
    PinnedBlock* b = bytes > 0 && pinned_batches_enabled() ? pinned_block_of(src, bytes) : nullptr;
    if (!b) return nullptr;
    if (!copy_stream_) MF_CUDA(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
    MF_CUDA(cudaStreamWaitEvent(copy_stream_, after, 0));
    MF_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, copy_stream_));
    MF_CUDA(cudaEventRecord(b->copied, copy_stream_));
    b->busy = true;
    cudaEvent_t done = nullptr;
    MF_CUDA(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    MF_CUDA(cudaEventRecord(done, copy_stream_));
    return done;
  }
  std::function<void()> copy_to_host_later(void* dst, const void* src, size_t bytes) override {
    Context& c = context();
    refuse_while_capturing(c.stream);
    if (bytes == 0 || bytes > kStagedCopyMax || !staged_copies_enabled() || capturing(c.stream))
      return DeviceMemory::copy_to_host_later(dst, src, bytes);
    std::shared_ptr<Staging> st;
    {
      std::lock_guard<std::mutex> lock(pin_mu_);
      // Held by the waiting function, not by the pool, until the host has read it; given back
      // when that function goes, called or not.
      st = std::shared_ptr<Staging>(new Staging(take_staging(bytes)), [this](Staging* b) {
        std::lock_guard<std::mutex> l(pin_mu_);
        give_back_staging(*b);
        delete b;
      });
    }
    MF_CUDA(cudaMemcpyAsync(st->host, src, bytes, cudaMemcpyDeviceToHost, c.stream));
    MF_CUDA(cudaEventRecord(st->done, c.stream));
    return [st, dst, bytes] {
      MF_CUDA(cudaEventSynchronize(st->done));
      std::memcpy(dst, st->host, bytes);
    };
  }
  void fill(float* p, size_t count, float value) override {
    mf::cuda::fill(p, static_cast<int64_t>(count), value, context().stream);
    MF_CUDA_LAUNCHED("fill");
  }
  void zero(void* p, size_t bytes) override { MF_CUDA(cudaMemsetAsync(p, 0, bytes, context().stream)); }

  // Page-locked blocks for training batches (the loader's workers write the images straight into
  // them; on by default since the A/B of tools/device/cuda_check.sh pinnedab, docs/cuda-log.md: 10-25 %
  // more training images/s on the H200). A free block is reused once its last copy
  // has finished (its event); otherwise a new one is made, so there are about as many as the loader
  // keeps batches ahead, plus the one being uploaded. Never freed (cudaFreeHost waits for the device).
  void* allocate_pinned(size_t bytes) override {
    if (!pinned_batches_enabled() || bytes == 0) return nullptr;
    Context& c = context();
    MF_CUDA(cudaSetDevice(c.device));  // a loader thread: the run's device, not device 0
    std::lock_guard<std::mutex> lock(pin_mu_);
    for (auto& [start, b] : pinned_) {
      if (b.in_use || b.bytes < bytes) continue;
      if (b.busy) {
        const cudaError_t st = cudaEventQuery(b.copied);
        if (st == cudaErrorNotReady) {
          cudaGetLastError();  // not an error (and the last error is this thread's own)
          continue;
        }
        MF_CUDA(st);
        b.busy = false;
      }
      b.in_use = true;
      return b.host;
    }
    PinnedBlock b;
    MF_CUDA(cudaHostAlloc(&b.host, bytes, cudaHostAllocPortable));
    MF_CUDA(cudaEventCreateWithFlags(&b.copied, cudaEventDisableTiming));
    b.bytes = bytes;
    b.in_use = true;
    pinned_.emplace(reinterpret_cast<uintptr_t>(b.host), b);
    return b.host;
  }
  void release_pinned(void* p) override {
    std::lock_guard<std::mutex> lock(pin_mu_);
    auto it = pinned_.find(reinterpret_cast<uintptr_t>(p));
    if (it != pinned_.end()) it->second.in_use = false;
  }

  void set_limit(size_t l) { limit_ = l; }
  size_t in_use() const { return in_use_; }
  size_t peak() const { return peak_; }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    peak_ = in_use_;
    if (trace_blocks_) snapshot_peak();
  }
  // The blocks held at the peak, grouped by size, largest total first: "154.1 MiB x 2, 77.1 MiB x 1,
  // ..." (METAFORMER_CUDA_PEAK_BLOCKS=1; otherwise empty). What a peak is made of: the input and its
  // copies, a wide hidden activation, the weights' copies.
  std::string peak_blocks() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!trace_blocks_) return {};
    std::map<size_t, int> by_size;
    for (size_t b : peak_sizes_) ++by_size[b];
    std::vector<std::pair<size_t, int>> groups(by_size.begin(), by_size.end());
    std::sort(groups.begin(), groups.end(), [](const auto& a, const auto& b) {
      return a.first * static_cast<size_t>(a.second) > b.first * static_cast<size_t>(b.second);
    });
    std::string out;
    size_t shown = 0;
    for (const auto& [bytes, n] : groups) {
      if (shown == 12) {
        out += ", ...";
        break;
      }
      out += fmt::format("{}{:.1f} MiB x {}", shown++ ? ", " : "", bytes / 1048576.0, n);
    }
    return out;
  }

 private:
  struct PinnedBlock {
    void* host = nullptr;
    size_t bytes = 0;
    cudaEvent_t copied = nullptr;  // recorded after each copy from the block
    bool in_use = false;           // a tensor holds it
    bool busy = false;             // a copy from it may still be running
  };
  // Page-locked blocks for the small copies that CudaPool::copy and copy_to_host_later stage, one
  // queue per power-of-two size, oldest first. A block is reused once the event recorded after its
  // last copy has fired (and, for a copy to the host, once the host has read it: it is out of the
  // queue until then). About as many per size as copies are in flight; never freed.
  static constexpr size_t kStagedCopyMax = 4u << 20;
  struct Staging {
    void* host = nullptr;
    cudaEvent_t done = nullptr;
    size_t size_class = 0;
  };
  Staging take_staging(size_t bytes) {  // pin_mu_ held
    size_t size_class = 256;
    while (size_class < bytes) size_class *= 2;
    auto& queue = staging_[size_class];
    if (!queue.empty()) {
      const cudaError_t st = cudaEventQuery(queue.front().done);
      if (st == cudaSuccess) {
        Staging b = queue.front();
        queue.pop_front();
        return b;
      }
      if (st != cudaErrorNotReady) MF_CUDA(st);
      cudaGetLastError();  // not ready is not an error
    }
    Staging b;
    b.size_class = size_class;
    MF_CUDA(cudaHostAlloc(&b.host, size_class, cudaHostAllocPortable));
    MF_CUDA(cudaEventCreateWithFlags(&b.done, cudaEventDisableTiming));
    return b;
  }
  void give_back_staging(const Staging& b) { staging_[b.size_class].push_back(b); }  // pin_mu_ held

  // The block holding [p, p + bytes), if any (pin_mu_ held).
  PinnedBlock* pinned_block_of(const void* p, size_t bytes) {
    if (pinned_.empty()) return nullptr;
    const auto a = reinterpret_cast<uintptr_t>(p);
    auto it = pinned_.upper_bound(a);
    if (it == pinned_.begin()) return nullptr;
    --it;
    return a + bytes <= it->first + it->second.bytes ? &it->second : nullptr;
  }

  void snapshot_peak() {  // mu_ held
    peak_sizes_.clear();
    for (const auto& [p, bytes] : live_) peak_sizes_.push_back(bytes);
  }

  std::mutex mu_;
  size_t in_use_ = 0, peak_ = 0, limit_ = 0;
  // METAFORMER_CUDA_PEAK_BLOCKS=1: every live block's size, and their sizes when the peak was reached.
  const bool trace_blocks_ = [] {
    const char* e = std::getenv("METAFORMER_CUDA_PEAK_BLOCKS");
    return e && std::strcmp(e, "1") == 0;
  }();
  std::unordered_map<void*, size_t> live_;
  std::vector<size_t> peak_sizes_;
  std::mutex pin_mu_;
  std::map<uintptr_t, PinnedBlock> pinned_;
  cudaStream_t copy_stream_ = nullptr;  // copy_ahead's (made on first use, never destroyed)
  std::map<size_t, std::deque<Staging>> staging_;
};

CudaPool& pool() {
  static CudaPool* p = new CudaPool();
  return *p;
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

void select_device(int index) {
  const int n = device_count();
  MF_CHECK(n > 0, "no CUDA GPU is available (cudaGetDeviceCount found none)");
  MF_CHECK(index >= 0 && index < n, "device cuda:{} does not exist ({} CUDA device{}: cuda:0{})", index, n,
           n == 1 ? "" : "s", n > 1 ? fmt::format("..cuda:{}", n - 1) : "");
  MF_CHECK(g_context == nullptr || g_context->device == index,
           "the CUDA backend already runs on cuda:{}; one device per process", g_context ? g_context->device : 0);
  g_selected = index;
}

Context& context() {
  static std::once_flag once;
  std::call_once(once, [] {
    const int n = device_count();
    MF_CHECK(n > 0, "backend cuda needs a GPU, but no CUDA device is available");
    MF_CHECK(g_selected < n, "device cuda:{} does not exist ({} CUDA devices)", g_selected, n);
    auto* c = new Context();
    c->device = g_selected;
    MF_CUDA(cudaSetDevice(c->device));
    MF_CUDA(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    cudaMemPool_t mp;
    MF_CUDA(cudaDeviceGetDefaultMemPool(&mp, c->device));
    uint64_t keep = UINT64_MAX;
    MF_CUDA(cudaMemPoolSetAttribute(mp, cudaMemPoolAttrReleaseThreshold, &keep));
    MF_CUBLAS(cublasLtCreate(&c->lt));
    c->workspace_bytes = 32u << 20;
    MF_CUDA(cudaMalloc(&c->workspace, c->workspace_bytes));
    if (const char* l = std::getenv("METAFORMER_CUDA_MEMORY_LIMIT")) pool().set_limit(parse_limit(l));
    g_context = c;
    set_device_memory(&pool());
  });
  MF_CHECK(g_context != nullptr, "the CUDA context could not be created");
  return *g_context;
}

std::string device_description() {
  Context& c = context();
  cudaDeviceProp p{};
  MF_CUDA(cudaGetDeviceProperties(&p, c.device));
  return fmt::format("cuda:{} {} ({} SMs, {:.0f} GiB)", c.device, p.name, p.multiProcessorCount,
                     p.totalGlobalMem / 1073741824.0);
}

void synchronize() {
  if (g_context) MF_CUDA(cudaStreamSynchronize(g_context->stream));
}

bool upload_ahead_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("METAFORMER_CUDA_UPLOAD_AHEAD");
    return e != nullptr && std::strcmp(e, "1") == 0;
  }();
  return on;
}

cudaEvent_t copy_ahead(void* dst, const void* src, size_t bytes, cudaEvent_t after) {
  return pool().copy_ahead(dst, src, bytes, after);
}

size_t pool_bytes_in_use() { return pool().in_use(); }
size_t pool_peak_bytes() { return pool().peak(); }
std::string pool_peak_blocks() { return pool().peak_blocks(); }
void pool_reset_peak() { pool().reset_peak(); }

}  // namespace mf::cuda
