#include "data/loader.h"

#include <omp.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cstring>
#include <mutex>
#include <numeric>

#include <fmt/format.h>

#include "core/error.h"
#include "data/device_crops.h"

namespace mf {

namespace {
uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t s = a * 0x9E3779B97F4A7C15ULL ^ (b + 0x632BE59BD9B4E019ULL);
  return splitmix64(s);
}

void shuffle(std::vector<int64_t>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(rng.below(i))]);
}
}  // namespace

std::vector<int64_t> DataLoader::epoch_order(int64_t n, const LoaderOptions& o) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  if (o.subset > 0 && o.subset < n) {
    Rng pick(mix(o.seed, 0x5B5E7ULL));  // the same subset every epoch
    shuffle(order, pick);
    order.resize(static_cast<size_t>(o.subset));
    std::sort(order.begin(), order.end());
  }
  if (o.shuffle) {
    Rng rng(mix(o.seed, 1000 + static_cast<uint64_t>(o.epoch)));
    shuffle(order, rng);
  }
  return order;
}

std::pair<int64_t, int64_t> DataLoader::batch_positions(int64_t n, const LoaderOptions& o, int64_t b) {
  const int64_t begin = b * o.world * o.batch + o.rank * o.batch;
  return {std::min(begin, n), std::min(begin + o.batch, n)};
}

int64_t DataLoader::batches_of_rank(int64_t n, const LoaderOptions& o) {
  const int64_t global = o.world * o.batch;
  if (o.drop_last) return n / global;
  // Global batches that reach this rank's slice: those starting at or before n - 1 - rank*batch.
  const int64_t first_position = o.rank * o.batch;
  return n > first_position ? (n - first_position + global - 1) / global : 0;
}

namespace {
// Decoding an image allocates and frees several buffers of a few hundred KB (the file, stb's pixels,
// their copy, the crop, the resize's passes, the sample). glibc serves those with mmap, or from a
// thread's arena that it trims back to the system after each free, so every image paid its pages'
// first-touch faults again: a third of a worker's time (perf, one worker on 451×300 JPEGs). Kept
// in the arenas (allocations under 4 MiB, up to 16 MiB free at an arena's top before it is
// trimmed), the same run took 0.64× the time at the same peak memory (farm-bench, 5 runs each).
// Set once, when a loader first starts threads; it is process-wide, and leaves larger blocks (the
// batches, the model's tensors) as they were.
void keep_decoding_buffers_in_the_arenas() {
#if defined(__GLIBC__)
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 16 << 20);
  });
#endif
}
}  // namespace

DataLoader::DataLoader(const Dataset& data, LoaderOptions options) : data_(data), o_(options) {
  if (o_.workers > 0) keep_decoding_buffers_in_the_arenas();
  MF_CHECK(o_.batch >= 1, "batch size must be at least 1");
  MF_CHECK(!o_.packed_crops || (o_.train && data.supports_crops()),
           "{}: its samples cannot be packed for augmentation by the backend", data.describe());
  MF_CHECK(o_.world >= 1 && o_.rank >= 0 && o_.rank < o_.world, "rank {} of a world of {}", o_.rank, o_.world);
  order_ = epoch_order(data.size(), o_);
  const auto n = static_cast<int64_t>(order_.size());
  num_batches_ = batches_of_rank(n, o_);
  MF_CHECK(num_batches_ > 0 || n == 0 || !o_.drop_last, "{}: {} samples make no batch of {}", data.describe(), n,
           o_.batch * o_.world);
  for (int w = 0; w < o_.workers; ++w) workers_.emplace_back([this] { work(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

// A started batch: positions [begin, end) of the epoch's order. `claimed` and `finished` count
// positions handed out and done (under the loader's lock). Rows are written by the workers that
// decoded them, concurrently (each its own row); the first sample to arrive allocates the tensors,
// under `mu`.
struct DataLoader::Building {
  int64_t index = 0, begin = 0, end = 0;
  int64_t claimed = 0, finished = 0;
  std::mutex mu;
  Tensor images, targets;
  Tensor headers;                   // packed crops: [size, crops::kHeaderInts]
  std::vector<int64_t> labels;      // per position
  std::vector<char> placed;         // per position: its sample is in its row
  std::vector<std::string> errors;  // per position: why it is not (an unreadable sample)
  std::string failure;              // the whole batch is dropped (samples of different sizes, ...)
  int64_t size() const { return end - begin; }
};

std::unique_ptr<DataLoader::Building> DataLoader::start(int64_t b) const {
  auto bb = std::make_unique<Building>();
  const auto [begin, end] = batch_positions(static_cast<int64_t>(order_.size()), o_, b);
  bb->index = b;
  bb->begin = begin;
  bb->end = end;
  bb->labels.assign(static_cast<size_t>(bb->size()), 0);
  bb->placed.assign(static_cast<size_t>(bb->size()), 0);
  bb->errors.resize(static_cast<size_t>(bb->size()));
  return bb;
}

// Runs f, which reads sample `at`: false when it threw. An mf::Error is an unreadable sample, left
// out of its batch with its message; anything else drops the whole batch.
template <class F>
bool DataLoader::guarded(Building& bb, size_t at, F&& f) {
  try {
    f();
    return true;
  } catch (const Error& e) {
    bb.errors[at] = e.what();
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(bb.mu);
    if (bb.failure.empty()) bb.failure = e.what();
  }
  return false;
}

// A training sample packed for augment_crops: the box's bytes and tables in its row, or the
// finished image when they do not fit, and its header saying which.
void DataLoader::pack_into(Building& bb, int64_t slot) const {
  const int64_t index = order_[static_cast<size_t>(bb.begin + slot)];
  const auto at = static_cast<size_t>(slot);
  Rng rng(mix(mix(o_.seed, static_cast<uint64_t>(o_.epoch)), static_cast<uint64_t>(index)));
  const int64_t S = data_.image_size(), C = data_.channels(), per = S * S * C;
  {
    std::lock_guard<std::mutex> lock(bb.mu);
    if (!bb.images.defined()) {
      const Shape shape{bb.size(), S, S, C};
      bb.images = o_.pinned ? Tensor::empty_pinned(shape) : Tensor::empty(shape);
      bb.headers = Tensor::zeros({bb.size(), crops::kHeaderInts});
    }
  }
  float* row = bb.images.data() + slot * per;
  int32_t header[crops::kHeaderInts] = {};
  Sample finished;
  const bool ok = guarded(bb, at, [&] {
    if (!data_.get_packed(index, rng, row, per, header, finished)) {
      MF_CHECK(finished.image.numel() == per, "{}: a finished sample of {} values in a row of {}", data_.describe(),
               finished.image.numel(), per);
      std::copy_n(finished.image.data(), per, row);
      std::fill(header, header + crops::kHeaderInts, 0);
      header[crops::kMode] = crops::kFinished;
    }
  });
  if (!ok) return;
  std::memcpy(bb.headers.data() + slot * crops::kHeaderInts, header, sizeof header);
  bb.labels[at] = data_.label(index);
  bb.placed[at] = 1;
}

void DataLoader::decode_into(Building& bb, int64_t slot) const {
  if (o_.packed_crops) return pack_into(bb, slot);
  const int64_t index = order_[static_cast<size_t>(bb.begin + slot)];
  const auto at = static_cast<size_t>(slot);
  Rng rng(mix(mix(o_.seed, static_cast<uint64_t>(o_.epoch)), static_cast<uint64_t>(index)));
  Sample s;
  if (!guarded(bb, at, [&] { s = data_.get(index, o_.train, rng); })) return;
  {
    std::lock_guard<std::mutex> lock(bb.mu);
    const Shape is = s.image.shape();
    if (!bb.images.defined()) {
      const Shape shape{bb.size(), is[0], is[1], is[2]};
      bb.images = o_.pinned ? Tensor::empty_pinned(shape) : Tensor::empty(shape);
      if (s.target.defined()) bb.targets = Tensor::empty({bb.size(), s.target.dim(0), s.target.dim(1)});
    }
    const bool same = is.ndim() == 3 && is[0] == bb.images.dim(1) && is[1] == bb.images.dim(2) &&
                      is[2] == bb.images.dim(3) && s.target.defined() == bb.targets.defined() &&
                      (!s.target.defined() || (s.target.dim(0) == bb.targets.dim(1) && s.target.dim(1) == bb.targets.dim(2)));
    if (!same) {
      if (bb.failure.empty()) bb.failure = fmt::format("{}: samples of different sizes in one batch", data_.describe());
      return;
    }
  }
  const int64_t per = s.image.numel();
  std::copy_n(s.image.data(), per, bb.images.data() + slot * per);
  if (s.target.defined()) {
    const int64_t t = s.target.numel();
    std::copy_n(s.target.data(), t, bb.targets.data() + slot * t);
  }
  bb.labels[at] = s.label;
  bb.placed[at] = 1;
}

Batch DataLoader::finish(Building& bb, std::vector<std::string>& errors) const {
  Batch batch;
  batch.index = bb.index;
  if (!bb.failure.empty()) {
    errors.push_back(fmt::format("batch {}: {}", bb.index, bb.failure));
  } else {
    for (const auto& e : bb.errors)
      if (!e.empty()) errors.push_back(e);
    const int64_t kept = std::count(bb.placed.begin(), bb.placed.end(), char{1});
    if (kept == bb.size()) {
      batch.images = std::move(bb.images);
      batch.targets = std::move(bb.targets);
      batch.crop_headers = std::move(bb.headers);
      batch.labels = std::move(bb.labels);
    } else if (kept > 0) {  // unreadable samples left out: the others, in order, in a batch of their own
      Shape shape = bb.images.shape();
      shape[0] = kept;
      batch.images = o_.pinned ? Tensor::empty_pinned(shape) : Tensor::empty(shape);
      const int64_t per = bb.images.numel() / bb.size();
      const int64_t tper = bb.targets.defined() ? bb.targets.numel() / bb.size() : 0;
      if (bb.targets.defined()) {
        Shape ts = bb.targets.shape();
        ts[0] = kept;
        batch.targets = Tensor::empty(ts);
      }
      if (bb.headers.defined()) batch.crop_headers = Tensor::empty({kept, crops::kHeaderInts});
      int64_t row = 0;
      for (int64_t slot = 0; slot < bb.size(); ++slot) {
        if (!bb.placed[static_cast<size_t>(slot)]) continue;
        std::copy_n(bb.images.data() + slot * per, per, batch.images.data() + row * per);
        if (bb.headers.defined())
          std::copy_n(bb.headers.data() + slot * crops::kHeaderInts, crops::kHeaderInts,
                      batch.crop_headers.data() + row * crops::kHeaderInts);
        if (tper) std::copy_n(bb.targets.data() + slot * tper, tper, batch.targets.data() + row * tper);
        batch.labels.push_back(bb.labels[static_cast<size_t>(slot)]);
        ++row;
      }
    }
  }
  return batch;
}

Batch DataLoader::build(int64_t b) {
  std::unique_ptr<Building> bb = start(b);
  for (int64_t slot = 0; slot < bb->size(); ++slot) decode_into(*bb, slot);
  std::vector<std::string> errors;
  Batch batch = finish(*bb, errors);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& e : errors) skipped_.push_back(std::move(e));
  return batch;
}

void DataLoader::work() {
  omp_set_num_threads(1);  // the cores' OpenMP team belongs to the model
  while (true) {
    Building* bb = nullptr;
    int64_t slot = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // A position of the batch being handed out, or the next batch, while fewer than `prefetch`
      // batches are started and not yet taken.
      cv_.wait(lock, [&] {
        return stop_ || filling_ != nullptr || next_to_build_ < std::min(num_batches_, next_to_take_ + o_.prefetch);
      });
      if (stop_) return;
      if (filling_ == nullptr) {
        auto started = start(next_to_build_++);
        filling_ = started.get();
        building_.emplace(filling_->index, std::move(started));
      }
      bb = filling_;
      slot = bb->claimed++;
      if (bb->claimed >= bb->size()) filling_ = nullptr;
    }
    if (slot < bb->size()) {
      try {
        decode_into(*bb, slot);
      } catch (const std::exception& e) {  // out of (page-locked) memory for the batch, ...
        std::lock_guard<std::mutex> lock(bb->mu);
        if (bb->failure.empty()) bb->failure = e.what();
      }
    }
    bool last = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last = ++bb->finished >= bb->size();
    }
    if (!last) continue;
    // This worker finished the batch's last sample (every other row is written: each was counted
    // under the lock after its copy), so it hands the batch over.
    Batch batch;
    std::vector<std::string> errors;
    try {
      batch = finish(*bb, errors);
    } catch (const std::exception& e) {
      batch = Batch{};
      batch.index = bb->index;
      errors.push_back(fmt::format("batch {}: {}", bb->index, e.what()));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_errors_.emplace(batch.index, std::move(errors));
      ready_.emplace(batch.index, std::move(batch));
      building_.erase(bb->index);
    }
    cv_.notify_all();
  }
}

std::optional<Batch> DataLoader::next() {
  if (next_to_take_ >= num_batches_) return std::nullopt;
  if (workers_.empty()) return build(next_to_take_++);
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return ready_.count(next_to_take_) != 0; });
  Batch b = std::move(ready_.at(next_to_take_));
  ready_.erase(next_to_take_);
  // Messages in batch order (batches may finish in any order).
  for (auto& e : ready_errors_[next_to_take_]) skipped_.push_back(std::move(e));
  ready_errors_.erase(next_to_take_);
  ++next_to_take_;
  lock.unlock();
  cv_.notify_all();
  return b;
}

std::vector<std::string> DataLoader::skipped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return skipped_;
}

}  // namespace mf
