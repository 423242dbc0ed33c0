// The cuda backend's all-reduce across the ranks of a data-parallel job: NCCL (docs/distributed.md,
// "On GPUs"). One communicator per process, made on the first call: rank 0 draws NCCL's unique id
// and the job's own transport (MPI, through RankGroup::broadcast_from_root) carries it to the other
// ranks, as llm.c does. The gradients are averaged in place on the backend's stream, so the
// all-reduce is ordered after the backward kernels that wrote them and before the optimizer step,
// with no synchronisation; the tensors of one call form one NCCL group (fused by NCCL into few
// launches). ncclAvg divides by the world size inside the reduction.
//
// Without NCCL in the build (MF_HAVE_NCCL unset) the backend says so in supports_allreduce(), and
// the trainer refuses a multi-rank GPU run at start.
#include "ops/cuda/cuda_backward.h"
#include "ops/cuda/cuda_context.h"
#include "ops/cuda/kernels/kernels.h"

#ifdef MF_HAVE_NCCL
#include <nccl.h>
#endif

namespace mf {

#ifdef MF_HAVE_NCCL
namespace {

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) fail("{} failed: {} ({})", what, ncclGetErrorString(r), static_cast<int>(r));
}

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("{} failed: {}", what, cudaGetErrorString(e));
}

struct Communicator {
  ncclComm_t comm = nullptr;
  int rank = -1, world = 0;
};

Communicator& communicator(const RankGroup& group) {
  static Communicator c;
  if (c.comm) {
    MF_CHECK(c.rank == group.rank && c.world == group.world, "NCCL: the job changed from rank {} of {} to rank {} of {}",
             c.rank, c.world, group.rank, group.world);
    return c;
  }
  ncclUniqueId id{};
  if (group.rank == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  if (group.world > 1) {
    MF_CHECK(static_cast<bool>(group.broadcast_from_root), "NCCL: no way to share the communicator's id");
    group.broadcast_from_root(&id, sizeof id);
  }
  check_nccl(ncclCommInitRank(&c.comm, group.world, id, group.rank), "ncclCommInitRank");
  c.rank = group.rank;
  c.world = group.world;
  return c;
}

}  // namespace

bool CudaBackwardOps::supports_allreduce() const { return true; }

void CudaBackwardOps::allreduce_mean(const std::vector<Tensor*>& tensors, const RankGroup& group) {
  Communicator& c = communicator(group);
  cudaStream_t stream = cuda::context().stream;
  for (Tensor* t : tensors)
    MF_CHECK(t->device() == Device::CUDA && t->dtype() == DType::f32, "NCCL all-reduce of a {} {} tensor",
             device_name(t->device()), dtype_name(t->dtype()));
  // bf16 (RankGroup::bf16): each gradient narrowed into a pooled bf16 copy, reduced as ncclBfloat16,
  // widened back; all on the same stream, so still no synchronisation.
  std::vector<Tensor> low;
  if (group.bf16) {
    low.reserve(tensors.size());
    for (Tensor* t : tensors) {
      low.push_back(Tensor::empty(t->shape(), Device::CUDA, DType::bf16));
      cuda_ok(cuda::kernels::cast(t->data(), static_cast<cuda::kernels::bf16*>(low.back().raw()), t->numel(), stream),
              "cast a gradient to bf16");
    }
  }
  check_nccl(ncclGroupStart(), "ncclGroupStart");
  for (size_t i = 0; i < tensors.size(); ++i) {
    void* data = group.bf16 ? low[i].raw() : tensors[i]->data();
    check_nccl(ncclAllReduce(data, data, static_cast<size_t>(tensors[i]->numel()),
                             group.bf16 ? ncclBfloat16 : ncclFloat32, ncclAvg, c.comm, stream),
               "ncclAllReduce");
  }
  check_nccl(ncclGroupEnd(), "ncclGroupEnd");
  for (size_t i = 0; i < low.size(); ++i)
    cuda_ok(cuda::kernels::cast(static_cast<const cuda::kernels::bf16*>(low[i].raw()), tensors[i]->data(),
                                tensors[i]->numel(), stream),
            "widen a gradient from bf16");
  for (Tensor* t : tensors) t->bump_version();
}

namespace {
// The stream the started all-reduces run on, and the events that order it against the backend's.
struct CommStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t ready = nullptr, done = nullptr;
  bool pending = false;
};
CommStream& comm_stream() {
  static CommStream s;
  if (!s.stream) {
    cuda_ok(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    cuda_ok(cudaEventCreateWithFlags(&s.ready, cudaEventDisableTiming), "cudaEventCreate");
    cuda_ok(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "cudaEventCreate");
  }
  return s;
}
}  // namespace

// A bucket of gradients: the communication stream waits for what the backend's stream has queued so
// far (the backward kernels that wrote the bucket), then NCCL averages it there while the backend's
// stream goes on with the rest of the backward pass. fp32 only (the trainer keeps bf16 all-reduces
// on the single call after the backward pass).
void CudaBackwardOps::allreduce_mean_start(Tensor& t, const RankGroup& group) {
  MF_CHECK(!group.bf16, "bucketed all-reduce is fp32 only");
  MF_CHECK(t.device() == Device::CUDA && t.dtype() == DType::f32, "NCCL all-reduce of a {} {} tensor",
           device_name(t.device()), dtype_name(t.dtype()));
  Communicator& c = communicator(group);
  CommStream& s = comm_stream();
  cuda_ok(cudaEventRecord(s.ready, cuda::context().stream), "cudaEventRecord");
  cuda_ok(cudaStreamWaitEvent(s.stream, s.ready, 0), "cudaStreamWaitEvent");
  check_nccl(ncclAllReduce(t.data(), t.data(), static_cast<size_t>(t.numel()), ncclFloat32, ncclAvg, c.comm, s.stream),
             "ncclAllReduce");
  s.pending = true;
}

// The backend's stream waits for every started all-reduce (no host synchronisation).
void CudaBackwardOps::allreduce_wait() {
  CommStream& s = comm_stream();
  if (!s.pending) return;
  cuda_ok(cudaEventRecord(s.done, s.stream), "cudaEventRecord");
  cuda_ok(cudaStreamWaitEvent(cuda::context().stream, s.done, 0), "cudaStreamWaitEvent");
  s.pending = false;
}

#else

bool CudaBackwardOps::supports_allreduce() const { return false; }

void CudaBackwardOps::allreduce_mean_start(Tensor&, const RankGroup&) {
  fail("this build has no NCCL: the cuda backend cannot all-reduce across ranks (docs/distributed.md)");
}
void CudaBackwardOps::allreduce_wait() {}

void CudaBackwardOps::allreduce_mean(const std::vector<Tensor*>&, const RankGroup&) {
  fail("this build has no NCCL: the cuda backend cannot all-reduce across ranks (docs/distributed.md)");
}

#endif

}  // namespace mf
