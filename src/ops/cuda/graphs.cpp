#include "ops/cuda/graphs.h"

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "ops/cuda/cuda_backend.h"
#include "ops/cuda/cuda_context.h"

namespace mf::cuda {
namespace {

bool graphs_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("METAFORMER_CUDA_GRAPHS");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  return on;
}

// One recorded pass. The graph allocates its intermediates from its own memory (stream-ordered
// allocations captured as graph nodes, at fixed addresses); `output` is the one it leaves allocated,
// freed by the next replay (cudaGraphInstantiateFlagAutoFreeOnLaunch), so callers get a copy.
struct Recording {
  int calls = 0;
  bool eager = false;       // recording failed, or replays were slower than eager passes
  double eager_ms = 0;      // the second (eager, warm) pass, timed
  Tensor input, output;
  cudaGraphExec_t exec = nullptr;
  // The host tensor whose contents `input` holds (its storage, version and data pointer): a replay of
  // the same unchanged tensor copies nothing, as an eager pass reuses its cached upload.
  uint64_t source_id = 0, source_version = 0;
  const void* source_data = nullptr;
};

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

size_t bytes_of(const Tensor& t) { return static_cast<size_t>(t.numel()) * dtype_size(t.dtype()); }

bool holds(const Recording& r, const Tensor& x) {
  return x.device() != Device::CUDA && r.source_data == x.raw() && r.source_id == x.storage_id() &&
         r.source_version == x.version();
}

void copy_into(Tensor& dst, const Tensor& src) {
  Context& c = context();
  const bool from_host = src.device() != Device::CUDA;
  MF_CUDA(cudaMemcpyAsync(dst.raw(), src.raw(), bytes_of(src), from_host ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice,
                          c.stream));
  if (from_host) MF_CUDA(cudaStreamSynchronize(c.stream));  // the host buffer may change after we return
}

// Ends a capture that cannot become a graph and leaves the stream and the thread's last error as
// they were before it: the pass then runs eagerly, and no error of the abandoned capture may be
// reported later under another kernel's name. METAFORMER_CUDA_GRAPHS=1 says why, once a process.
void abandon(const std::string& why) {
  Context& c = context();
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(c.stream, &st) == cudaSuccess && st != cudaStreamCaptureStatusNone) {
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(c.stream, &graph);
    if (graph) cudaGraphDestroy(graph);
  }
  cudaGetLastError();
  MF_CUDA(cudaStreamSynchronize(c.stream));
  const char* e = std::getenv("METAFORMER_CUDA_GRAPHS");
  static bool said = false;
  if (e && std::strcmp(e, "1") == 0 && !said) {
    said = true;
    std::fprintf(stderr, "metaformer: note: a pass could not be recorded as a CUDA graph and runs without one: %s\n",
                 why.c_str());
  }
}

// Records pass(r.input) into r.exec; false (the capture abandoned) when the pass did something a
// graph cannot hold, such as a copy from or to the host (refused by the pool while capturing).
bool record(Recording& r, const std::function<Tensor(const Tensor&)>& pass) {
  Context& c = context();
  MF_CUDA(cudaStreamSynchronize(c.stream));
  MF_CUDA(cudaStreamBeginCapture(c.stream, cudaStreamCaptureModeThreadLocal));
  cudaGraph_t graph = nullptr;
  try {
    r.output = pass(r.input);
  } catch (const std::exception& e) {
    r.output = Tensor();
    abandon(e.what());
    return false;
  } catch (...) {
    r.output = Tensor();
    abandon("an exception that is not a std::exception");
    return false;
  }
  const cudaError_t ended = cudaStreamEndCapture(c.stream, &graph);
  if (ended != cudaSuccess || graph == nullptr) {
    if (graph) cudaGraphDestroy(graph);
    r.output = Tensor();  // allocated inside the capture: freed while nothing is being captured
    abandon(std::string("ending the capture: ") + cudaGetErrorString(ended));
    return false;
  }
  const cudaError_t st = cudaGraphInstantiateWithFlags(&r.exec, graph, cudaGraphInstantiateFlagAutoFreeOnLaunch);
  cudaGraphDestroy(graph);
  if (st != cudaSuccess) {
    r.exec = nullptr;
    r.output = Tensor();
    abandon(std::string("instantiating the graph: ") + cudaGetErrorString(st));
    return false;
  }
  MF_CUDA(cudaGraphUpload(r.exec, c.stream));  // the one-time upload is not part of the first replay
  // The eager passes' blocks stay cached in the stream pool, but the graph has memory of its own
  // now: hand the unused cached blocks back, so the replays do not hold two copies.
  cudaMemPool_t mp;
  if (cudaDeviceGetDefaultMemPool(&mp, c.device) == cudaSuccess) cudaMemPoolTrimTo(mp, 0);
  return true;
}

using Key = std::tuple<const void*, std::vector<int64_t>, int>;
std::map<Key, Recording>& recordings() {
  static auto* r = new std::map<Key, Recording>();  // never destroyed, like the context
  return *r;
}

}  // namespace

void release_recorded(const void* owner) {
  auto& all = recordings();
  bool any = false;
  for (auto it = all.begin(); it != all.end();) {
    if (std::get<0>(it->first) != owner) {
      ++it;
      continue;
    }
    if (it->second.exec) MF_CUDA(cudaGraphExecDestroy(it->second.exec));
    any = any || it->second.exec != nullptr;
    it = all.erase(it);
  }
  if (any) MF_CUDA(cudaDeviceGraphMemTrim(context().device));
}

Tensor run_recorded(const void* owner, const Tensor& x, const std::function<Tensor(const Tensor&)>& pass) {
  if (!graphs_enabled()) return pass(x);
  auto& all = recordings();
  Recording& r = all[Key{owner, x.shape().vec(), static_cast<int>(x.dtype())}];
  Context& c = context();
  ++r.calls;
  if (r.eager || r.calls == 1) return pass(x);  // the first pass fills the caches
  if (r.calls == 2) {  // a warm eager pass, timed: what a replay has to beat
    MF_CUDA(cudaStreamSynchronize(c.stream));
    const auto t0 = std::chrono::steady_clock::now();
    Tensor y = pass(x);
    MF_CUDA(cudaStreamSynchronize(c.stream));
    r.eager_ms = ms_since(t0);
    return y;
  }
  const bool first_replay = r.exec == nullptr;
  if (first_replay) {
    r.input = Tensor::empty(x.shape(), Device::CUDA, x.dtype());
    if (x.device() != Device::CUDA) {
      // A host input: its upload, cached by the eager passes, becomes the graph's input and is
      // dropped with the bf16 copy made from it, before the capture allocates anything (each was
      // held beside the graph's own: 514 MiB of input copies at poolformer_s12's bf16 batch-256
      // peak, docs/cuda-log.md).
      const auto up = x.derived(kUploadKey);
      copy_into(r.input, up ? *static_cast<const Tensor*>(up.get()) : x);
      x.drop_derived(kUploadKey);
      x.drop_derived(kBf16CopyKey);
      r.source_id = x.storage_id(), r.source_version = x.version(), r.source_data = x.raw();
    } else {
      copy_into(r.input, x);
    }
    if (!record(r, pass)) {
      r.eager = true;
      r.input = Tensor();
      return pass(x);
    }
  } else if (!holds(r, x)) {
    copy_into(r.input, x);  // from the host: a synchronous copy from pageable memory
    r.source_data = nullptr;
    if (x.device() != Device::CUDA)
      r.source_id = x.storage_id(), r.source_version = x.version(), r.source_data = x.raw();
  }
  const auto t0 = std::chrono::steady_clock::now();
  MF_CUDA(cudaGraphLaunch(r.exec, c.stream));
  Tensor y = Tensor::empty(r.output.shape(), Device::CUDA, r.output.dtype());
  MF_CUDA(cudaMemcpyAsync(y.raw(), r.output.raw(), bytes_of(y), cudaMemcpyDeviceToDevice, c.stream));
  if (first_replay) {
    // Keep the graph only if it is faster: it saves launches (small batches), but at large batches
    // it was measured slower than the eager pass (docs/cuda.md), so the choice is measured here.
    MF_CUDA(cudaStreamSynchronize(c.stream));
    const double replay_ms = ms_since(t0);
    if (replay_ms > r.eager_ms) {
      MF_CUDA(cudaGraphExecDestroy(r.exec));
      r.exec = nullptr;
      r.output = Tensor();
      r.input = Tensor();
      r.eager = true;
      MF_CUDA(cudaDeviceGraphMemTrim(c.device));
    }
  }
  return y;
}

}  // namespace mf::cuda
