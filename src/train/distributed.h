// Data-parallel training across processes: who this process is among the ranks of an MPI job, and
// the few collectives the trainer needs (docs/distributed.md). This is the only part of the engine
// that sees MPI (mpi.h is included by distributed.cpp alone).
//
// The same binary runs alone or under a launcher. A process started without one (no
// OMPI_COMM_WORLD_SIZE or PMI_SIZE above 1 in its environment) is a world of one and never calls
// MPI_Init, which outside mpirun is slow and noisy; under `mpirun -np N` (or another PMI launcher)
// MPI is initialised the first time distributed() is called. A build without MPI is always a world
// of one, and refuses to run as one rank of several with one line saying so.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace mf {

struct Parameter;

// An error that every rank raises alike at the same point (a check that all ranks make together,
// such as check_same): rank 0 alone prints it, and the ranks end normally, together.
class CollectiveError : public Error {
 public:
  using Error::Error;
};

class Distributed {
 public:
  int rank() const { return rank_; }
  int world() const { return world_; }
  // The rank among the ranks of this host (a GPU rank takes the GPU of its local rank).
  int local_rank() const { return local_rank_; }
  int local_world() const { return local_world_; }
  bool is_root() const { return rank_ == 0; }
  // Whether this binary was built with MPI (-DMETAFORMER_MPI; docs/distributed.md).
  static bool compiled_with_mpi();

  // Sums `n` floats over the ranks (MPI_Allreduce, MPI_SUM), then divides by world() on every rank.
  // The sum's association is the MPI library's, fixed for a given world size and message size (so a
  // run is reproducible for a given N), and with OpenMPI every rank receives the same bits (the
  // trainer checks the ranks' weights at every epoch's end: check_same_parameters). It is not the
  // order of a single process summing the whole batch, so N ranks match 1 rank to float tolerance,
  // not bit for bit. Nothing happens in a world of one.
  void allreduce_mean(float* data, int64_t n) const;
  // The same mean with the values on the wire in bf16 (train --allreduce bf16): half the bytes. Each
  // rank's values are rounded to bf16 (to nearest, ties to even), every partial sum is rounded to
  // bf16 again (a user MPI_Op adding in float), and the sum is divided by world() in float.
  void allreduce_mean_bf16(float* data, int64_t n) const;
  // The sum of allreduce_mean split in two, so that the ranks exchange while the caller computes
  // (gradient buckets during the backward pass, train/grad_buckets.h): start_allreduce_sum starts an
  // in-place sum over the ranks (MPI_Iallreduce) and returns at once; the range must not be touched
  // until finish_allreduce_mean, which waits for every started sum and then divides data[0, n) by
  // world(), as allreduce_mean does. Nothing happens in a world of one.
  void start_allreduce_sum(float* data, int64_t n) const;
  void finish_allreduce_mean(float* data, int64_t n) const;
  void allreduce_sum(float* data, int64_t n) const;
  // Sums in float64: evaluation sums, losses and counts.
  void allreduce_sum(double* data, int64_t n) const;
  // Every rank must hold the same `value` (a model description, the options, the data...): a 64-bit
  // digest of it is gathered from every rank, and if any differs from rank 0's, every rank throws
  // CollectiveError "the ranks disagree on WHAT: rank 1's differs from rank 0's; HINT". Nothing happens
  // in a world of one.
  static constexpr const char* kSameStartHint = "start every rank with the same command, data and files";
  void check_same(const std::string& what, const std::string& value, const std::string& hint = kSameStartHint) const;
  void check_same_digest(const std::string& what, uint64_t digest, const std::string& hint = kSameStartHint) const;
  void barrier() const;
  // Rank 0's `bytes` bytes at `data` to every rank (MPI_Bcast): how a GPU communicator's id travels
  // (the cuda backend's NCCL all-reduce). Nothing happens in a world of one.
  void broadcast(void* data, int64_t bytes) const;

  ~Distributed();
  Distributed(const Distributed&) = delete;
  Distributed& operator=(const Distributed&) = delete;

 private:
  Distributed();
  friend Distributed& distributed();
  friend int exit_after_error(const std::exception& e);
  int rank_ = 0, world_ = 1, local_rank_ = 0, local_world_ = 1;
  bool mpi_ = false;  // MPI_Init was called by this process
};

// The process's place in the job, initialising MPI on the first call when launched by mpirun.
// mf::Error when launched as one of several ranks by a build without MPI.
Distributed& distributed();

// Averages the gradients over the ranks in place: one MPI_Allreduce over the flat buffer that every
// gradient views (AdamW::flat_gradients, on the host), then a division by the world size: the mean
// of the ranks' batch means; with `bf16`, allreduce_mean_bf16. Nothing happens in a world of one.
void average_gradients(const Distributed& dist, Tensor& flat_gradients, bool bf16 = false);

// BatchNorm's running statistics (the float buffers among `params`) are each rank's own, from its
// share of every batch: this sets them to their mean over the ranks (timm's --dist-bn reduce), with one
// MPI_Allreduce. Nothing happens in a world of one or without such buffers.
void average_buffers(const Distributed& dist, const std::vector<std::pair<std::string, Parameter*>>& params);

// Every rank must hold bit for bit the same parameters (they start alike and take the same averaged
// steps): check_same over a 64-bit digest of their values, naming `what` ("the weights after epoch 3").
void check_same_parameters(const Distributed& dist, const std::vector<std::pair<std::string, Parameter*>>& params,
                           const std::string& what);

// The threads a rank computes with when --threads is not given: the CPUs it may run on (its affinity
// mask, which mpirun narrows to one core per rank by default for 2 ranks or fewer), shared with the
// other ranks of its host when the mask is the whole machine (mpirun --bind-to none). 0 (the engine's
// default, every core) in a world of one.
int default_rank_threads(const Distributed& dist);

// What the CLI does with the error that ends a command: prints "metaformer: error: MESSAGE" on stderr
// and returns the exit status, 1. In a job of several ranks, rank 0 prints as a single process does;
// another rank names itself ("rank R: ") and prints only if rank 0 has not ended the job first (an
// error every rank raises alike is said once), and not at all for a CollectiveError. An error that is
// not a CollectiveError then ends the whole job at once (MPI_Abort): the other ranks may be waiting
// for this one in a collective, and would wait forever.
int exit_after_error(const std::exception& e);

}  // namespace mf
