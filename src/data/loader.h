// Batches from a dataset, decoded and augmented on worker threads ahead of the model.
//
// Everything random is a pure function of (seed, epoch, position): the epoch's order is a seeded
// permutation and every sample's augmentation draws from its own generator, so batches are the same
// whatever the number of workers or their timing, and a resumed run sees exactly the data the
// interrupted one would have. Batches come out in order. An unreadable sample is left out of its
// batch, counted and reported once.
//
// Workers take samples, not batches: each claims the next position of the oldest batch still
// handing them out, decodes it and writes it straight into its row of the batch (in page-locked
// memory for a GPU run), and the worker that finishes a batch's last sample hands the batch over.
// So every worker is busy while fewer than `prefetch` batches wait, whatever the batch size: with
// one batch a worker, the first version kept at most `prefetch` (4) workers busy, and a GPU training
// on an image folder waited for four cores' worth of JPEG decoding.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "data/dataset.h"

namespace mf {

struct Batch {
  Tensor images;                 // [B, H, W, C]; with packed crops, rows for the backend's augment_crops
  Tensor crop_headers;           // packed crops (LoaderOptions::packed_crops): [B, crops::kHeaderInts] int32 bits
  std::vector<int64_t> labels;   // [B]
  Tensor targets;                // forecasting: [B, horizon, C] (the samples' targets)
  int64_t index = 0;             // position of the batch in the epoch
};

struct LoaderOptions {
  int64_t batch = 64;      // per rank, with world > 1
  bool train = true;       // augmentation
  bool shuffle = true;
  bool drop_last = true;   // training: only full batches
  uint64_t seed = 0;
  int64_t epoch = 0;
  int workers = 2;         // 0: load on the calling thread
  int64_t subset = 0;      // > 0: use only this many samples (a fixed seeded selection)
  int prefetch = 4;        // batches decoded ahead
  bool pinned = false;     // images in the device's page-locked memory, when it gives some (GPU runs)
  // Training samples packed for the backend's augment_crops (data/device_crops.h) instead of
  // finished here; the dataset must support it (Dataset::supports_crops).
  bool packed_crops = false;
  // Data parallelism (docs/distributed.md): the epoch's order is the same on every rank, and its
  // batch k of world * batch positions is split in rank order: rank r takes positions
  // [k*world*batch + r*batch, k*world*batch + (r+1)*batch). N ranks at batch b therefore see, step by
  // step, exactly the samples of one process at batch N*b. With drop_last only whole global batches
  // are used; without it (evaluation) the last global batch is split as far as it goes, and a rank
  // may get a shorter batch, or none.
  int rank = 0;
  int world = 1;
};

class DataLoader {
 public:
  DataLoader(const Dataset& data, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  int64_t num_batches() const { return num_batches_; }
  int64_t num_samples() const { return static_cast<int64_t>(order_.size()); }
  // The next batch in order, or nothing at the end of the epoch.
  std::optional<Batch> next();
  // Unreadable samples skipped so far (in the batches taken), with one message each, in order.
  std::vector<std::string> skipped() const;

  // The samples of an epoch, in order (all ranks alike): exposed for tests.
  static std::vector<int64_t> epoch_order(int64_t dataset_size, const LoaderOptions& o);
  // The positions in epoch_order of this rank's batch `b`: [first, second).
  static std::pair<int64_t, int64_t> batch_positions(int64_t order_size, const LoaderOptions& o, int64_t b);
  // How many batches this rank gets from an order of `order_size` samples.
  static int64_t batches_of_rank(int64_t order_size, const LoaderOptions& o);

 private:
  struct Building;  // a batch whose samples are being decoded
  std::unique_ptr<Building> start(int64_t b) const;
  void decode_into(Building& bb, int64_t slot) const;
  void pack_into(Building& bb, int64_t slot) const;
  template <class F>
  static bool guarded(Building& bb, size_t at, F&& f);
  Batch finish(Building& bb, std::vector<std::string>& errors) const;  // errors: its skipped samples' messages
  Batch build(int64_t b);  // every sample on the calling thread (workers = 0)
  void work();

  const Dataset& data_;
  LoaderOptions o_;
  std::vector<int64_t> order_;
  int64_t num_batches_ = 0;
  int64_t next_to_build_ = 0;  // the next batch to start
  int64_t next_to_take_ = 0;
  Building* filling_ = nullptr;  // the started batch with positions not yet handed out, if any
  std::map<int64_t, std::unique_ptr<Building>> building_;
  std::map<int64_t, Batch> ready_;
  std::map<int64_t, std::vector<std::string>> ready_errors_;  // moved to skipped_ as the batch is taken
  std::vector<std::string> skipped_;
  bool stop_ = false;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
};

}  // namespace mf
