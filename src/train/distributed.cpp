#include "train/distributed.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "core/bf16_bits.h"
#include "nn/module.h"

#ifdef MF_HAVE_MPI
// Only the C API is used: OpenMPI's deprecated C++ bindings would need libmpi_cxx at link time.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace mf {

namespace {

Distributed* g_instance = nullptr;  // set once distributed() has built it, for exit_after_error

// The world size and rank a launcher gives its processes before MPI_Init: OpenMPI's mpirun sets
// OMPI_COMM_WORLD_*, PMI launchers (MPICH's hydra, Slurm's srun --mpi=pmi2) PMI_*. 1 and 0 when
// neither is there: a process started on its own.
int launcher_value(const char* ompi, const char* pmi, int otherwise) {
  for (const char* name : {ompi, pmi})
    if (const char* v = std::getenv(name); v && *v) return std::atoi(v);
  return otherwise;
}
int launcher_world() { return launcher_value("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", 1); }
int launcher_rank() { return launcher_value("OMPI_COMM_WORLD_RANK", "PMI_RANK", 0); }

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ULL;
  return h;
}

#ifdef MF_HAVE_MPI
void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fail("{} failed: {}", what, std::string(text, static_cast<size_t>(len)));
}

// MPI counts are int: long buffers go in pieces.
constexpr int64_t kMaxCount = int64_t{1} << 30;
#endif

}  // namespace

bool Distributed::compiled_with_mpi() {
#ifdef MF_HAVE_MPI
  return true;
#else
  return false;
#endif
}

Distributed::Distributed() {
  const int launched = launcher_world();
  if (launched <= 1) return;  // a world of one: MPI is never initialised
#ifdef MF_HAVE_MPI
  int provided = 0;
  // Only the main thread calls MPI; loader threads and OpenMP teams never do.
  check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  mpi_ = true;
  // Errors come back as return codes (check_mpi), so that they reach the one-line error path.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &world_), "MPI_Comm_size");
  MPI_Comm local;
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
            "MPI_Comm_split_type");
  check_mpi(MPI_Comm_rank(local, &local_rank_), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(local, &local_world_), "MPI_Comm_size");
  MPI_Comm_free(&local);
#else
  throw CollectiveError(fmt::format(
      "started as one of {} ranks (by mpirun or another launcher), but this build has no MPI: rebuild with "
      "libopenmpi-dev installed (scripts/deps.sh; docs/distributed.md), or run without mpirun",
      launched));
#endif
}

Distributed::~Distributed() {
#ifdef MF_HAVE_MPI
  if (mpi_) MPI_Finalize();
#endif
  g_instance = nullptr;
}

Distributed& distributed() {
  static Distributed instance;
  g_instance = &instance;
  return instance;
}

void Distributed::allreduce_sum(float* data, int64_t n) const {
  if (world_ == 1) return;
#ifdef MF_HAVE_MPI
  for (int64_t at = 0; at < n; at += kMaxCount)
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + at, static_cast<int>(std::min(kMaxCount, n - at)), MPI_FLOAT, MPI_SUM,
                            MPI_COMM_WORLD),
              "MPI_Allreduce");
#endif
}

namespace {
// The sum over the ranks made a mean, in float32 as every rank does it alike.
void divide_by(float* data, int64_t n, int world) {
  const auto count = static_cast<float>(world);
  for (int64_t i = 0; i < n; ++i) data[i] /= count;
}
}  // namespace

void Distributed::allreduce_mean(float* data, int64_t n) const {
  if (world_ == 1) return;
  allreduce_sum(data, n);
  divide_by(data, n, world_);
}

#ifdef MF_HAVE_MPI
namespace {
std::vector<MPI_Request> g_pending;  // started sums (one trainer per process)
}  // namespace
#endif

void Distributed::start_allreduce_sum(float* data, int64_t n) const {
  if (world_ == 1) return;
#ifdef MF_HAVE_MPI
  for (int64_t at = 0; at < n; at += kMaxCount) {
    g_pending.emplace_back();
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data + at, static_cast<int>(std::min(kMaxCount, n - at)), MPI_FLOAT,
                             MPI_SUM, MPI_COMM_WORLD, &g_pending.back()),
              "MPI_Iallreduce");
  }
#endif
}

void Distributed::finish_allreduce_mean(float* data, int64_t n) const {
  if (world_ == 1) return;
#ifdef MF_HAVE_MPI
  if (!g_pending.empty()) {
    check_mpi(MPI_Waitall(static_cast<int>(g_pending.size()), g_pending.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
    g_pending.clear();
  }
#endif
  divide_by(data, n, world_);
}

namespace {
#ifdef MF_HAVE_MPI
// MPI has no bf16 type: 16-bit words with a sum of our own, each addition rounded to bf16.
void sum_bf16(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = float_to_bf16_bits(bf16_bits_to_float(a[i]) + bf16_bits_to_float(b[i]));
}
#endif
}  // namespace

void Distributed::allreduce_mean_bf16(float* data, int64_t n) const {
  if (world_ == 1) return;
  std::vector<uint16_t> low(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) low[static_cast<size_t>(i)] = float_to_bf16_bits(data[i]);
#ifdef MF_HAVE_MPI
  static const MPI_Op op = [] {  // made once: the reduction runs every step
    MPI_Op o;
    check_mpi(MPI_Op_create(&sum_bf16, /*commute=*/1, &o), "MPI_Op_create");
    return o;
  }();
  for (int64_t at = 0; at < n; at += kMaxCount)
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, low.data() + at, static_cast<int>(std::min(kMaxCount, n - at)),
                            MPI_UINT16_T, op, MPI_COMM_WORLD),
              "MPI_Allreduce (bf16)");
#endif
  const float inv = 1.f / static_cast<float>(world_);
  for (int64_t i = 0; i < n; ++i) data[i] = bf16_bits_to_float(low[static_cast<size_t>(i)]) * inv;
}

void Distributed::allreduce_sum(double* data, int64_t n) const {
  if (world_ == 1) return;
#ifdef MF_HAVE_MPI
  for (int64_t at = 0; at < n; at += kMaxCount)
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + at, static_cast<int>(std::min(kMaxCount, n - at)), MPI_DOUBLE,
                            MPI_SUM, MPI_COMM_WORLD),
              "MPI_Allreduce");
#endif
}

void Distributed::check_same(const std::string& what, const std::string& value, const std::string& hint) const {
  check_same_digest(what, fnv1a64(value), hint);
}

void Distributed::check_same_digest(const std::string& what, uint64_t digest, const std::string& hint) const {
  if (world_ == 1) return;
#ifdef MF_HAVE_MPI
  const unsigned long long mine = digest;
  std::vector<unsigned long long> all(static_cast<size_t>(world_));
  check_mpi(MPI_Allgather(&mine, 1, MPI_UNSIGNED_LONG_LONG, all.data(), 1, MPI_UNSIGNED_LONG_LONG, MPI_COMM_WORLD),
            "MPI_Allgather");
  std::string differ;
  int count = 0;
  for (int r = 1; r < world_; ++r)
    if (all[static_cast<size_t>(r)] != all[0]) {
      if (++count <= 4) differ += fmt::format("{}{}", differ.empty() ? "" : ", ", r);
    }
  if (count > 4) differ += fmt::format(" and {} more", count - 4);
  if (count > 0)
    throw CollectiveError(fmt::format("the ranks disagree on {}: rank{} {}'s differ{} from rank 0's; {}", what,
                                      count > 1 ? "s" : "", differ, count > 1 ? "" : "s", hint));
#endif
}

void Distributed::barrier() const {
  if (world_ == 1) return;
#ifdef MF_HAVE_MPI
  check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#endif
}

void Distributed::broadcast(void* data, int64_t bytes) const {
  if (world_ == 1) return;
#ifdef MF_HAVE_MPI
  for (int64_t at = 0; at < bytes; at += kMaxCount)
    check_mpi(MPI_Bcast(static_cast<char*>(data) + at, static_cast<int>(std::min(kMaxCount, bytes - at)), MPI_BYTE, 0,
                        MPI_COMM_WORLD),
              "MPI_Bcast");
#else
  static_cast<void>(data);
  static_cast<void>(bytes);
#endif
}

void average_gradients(const Distributed& dist, Tensor& flat_gradients, bool bf16) {
  if (dist.world() == 1 || !flat_gradients.defined()) return;
  MF_CHECK(flat_gradients.device() == Device::CPU, "MPI averages gradients on the host (a GPU run uses NCCL)");
  if (bf16) {
    dist.allreduce_mean_bf16(flat_gradients.data(), flat_gradients.numel());
  } else {
    dist.allreduce_mean(flat_gradients.data(), flat_gradients.numel());
  }
}

void average_buffers(const Distributed& dist, const std::vector<std::pair<std::string, Parameter*>>& params) {
  if (dist.world() == 1) return;
  std::vector<Parameter*> buffers;
  int64_t total = 0;
  for (const auto& [name, p] : params)
    if (p->buffer && !p->integer) {  // num_batches_tracked counts alike on every rank
      MF_CHECK(p->value.device() == Device::CPU, "data-parallel training across ranks runs on the CPU backend only");
      buffers.push_back(p);
      total += p->value.numel();
    }
  if (total == 0) return;
  std::vector<float> bucket(static_cast<size_t>(total));
  int64_t at = 0;
  for (Parameter* p : buffers) {
    std::copy_n(p->value.data(), p->value.numel(), bucket.data() + at);
    at += p->value.numel();
  }
  dist.allreduce_mean(bucket.data(), total);
  at = 0;
  for (Parameter* p : buffers) {
    std::copy_n(bucket.data() + at, p->value.numel(), p->value.data());
    p->value.bump_version();  // cached derivations (a folded BatchNorm) are stale
    at += p->value.numel();
  }
}

void check_same_parameters(const Distributed& dist, const std::vector<std::pair<std::string, Parameter*>>& params,
                           const std::string& what) {
  if (dist.world() == 1) return;
  uint64_t h = 0xCBF29CE484222325ULL;
  for (const auto& [name, p] : params) {
    const Tensor host = p->value.to(Device::CPU);  // a GPU run's weights: a copy
    const auto* bytes = reinterpret_cast<const unsigned char*>(host.data());
    for (int64_t i = 0; i < host.numel() * static_cast<int64_t>(sizeof(float)); ++i)
      h = (h ^ bytes[i]) * 0x100000001B3ULL;
  }
  // Identical gradients and identical steps cannot make different weights: this is a bug, not a user's.
  dist.check_same_digest(what, h, "the ranks' training diverged (a bug in metaformer.cpp: please report it)");
}

int default_rank_threads(const Distributed& dist) {
  if (dist.world() == 1) return 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int allowed = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : hardware;
  // A rank bound to some cores uses them; an unbound rank shares the host with its local ranks.
  const int share = allowed >= hardware ? hardware / std::max(1, dist.local_world()) : allowed;
  return std::max(1, share);
}

int exit_after_error(const std::exception& e) {
  const Distributed* d = g_instance;
  const int world = d ? d->world() : launcher_world(), rank = d ? d->rank() : launcher_rank();
  const bool collective = dynamic_cast<const CollectiveError*>(&e) != nullptr;
  if (world > 1 && rank > 0) {
    if (collective) return 1;  // rank 0 says it
    // Most errors are the same on every rank (a bad option, a missing file): rank 0's line, and its
    // MPI_Abort, come first and end this rank before it repeats the line. An error of this rank alone
    // is printed a moment later, naming the rank.
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  fmt::print(stderr, "metaformer: error: {}{}\n", world > 1 && rank > 0 ? fmt::format("rank {}: ", rank) : "",
             e.what());
  std::fflush(stdout);
  std::fflush(stderr);
#ifdef MF_HAVE_MPI
  // One rank's own error: the others may be blocked in a collective, waiting for it. MPI_Abort ends
  // every rank of the job now (mpirun then exits non-zero).
  if (d && d->mpi_ && !collective) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
  return 1;
}

}  // namespace mf
