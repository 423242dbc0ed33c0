#include "data/loader.h"

#include <omp.h>

#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "core/error.h"

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

DataLoader::DataLoader(const Dataset& data, LoaderOptions options) : data_(data), o_(options) {
  MF_CHECK(o_.batch >= 1, "batch size must be at least 1");
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

Batch DataLoader::build(int64_t b) {
  const auto [begin, end] = batch_positions(static_cast<int64_t>(order_.size()), o_, b);
  std::vector<Sample> samples;
  std::vector<std::string> errors;
  for (int64_t p = begin; p < end; ++p) {
    const int64_t index = order_[static_cast<size_t>(p)];
    Rng rng(mix(mix(o_.seed, static_cast<uint64_t>(o_.epoch)), static_cast<uint64_t>(index)));
    try {
      samples.push_back(data_.get(index, o_.train, rng));
    } catch (const Error& e) {
      errors.push_back(e.what());
    }
  }
  Batch batch;
  batch.index = b;
  if (!samples.empty()) {
    const Shape s = samples[0].image.shape();
    const Shape shape{static_cast<int64_t>(samples.size()), s[0], s[1], s[2]};
    batch.images = o_.pinned ? Tensor::empty_pinned(shape) : Tensor::empty(shape);
    for (size_t i = 0; i < samples.size(); ++i) {
      MF_CHECK(samples[i].image.shape() == s, "{}: samples of different sizes in one batch", data_.describe());
      std::copy_n(samples[i].image.data(), s.numel(), batch.images.data() + static_cast<int64_t>(i) * s.numel());
      batch.labels.push_back(samples[i].label);
    }
    if (samples[0].target.defined()) {
      const Shape t = samples[0].target.shape();
      batch.targets = Tensor::empty({static_cast<int64_t>(samples.size()), t[0], t[1]});
      for (size_t i = 0; i < samples.size(); ++i) {
        MF_CHECK(samples[i].target.shape() == t, "{}: targets of different sizes in one batch", data_.describe());
        std::copy_n(samples[i].target.data(), t.numel(), batch.targets.data() + static_cast<int64_t>(i) * t.numel());
      }
    }
  }
  if (!errors.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& e : errors) skipped_.push_back(std::move(e));
  }
  return batch;
}

void DataLoader::work() {
  omp_set_num_threads(1);  // the cores' OpenMP team belongs to the model
  while (true) {
    int64_t b;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || next_to_build_ < std::min(num_batches_, next_to_take_ + o_.prefetch); });
      if (stop_) return;
      b = next_to_build_++;
    }
    Batch batch;
    try {
      batch = build(b);
    } catch (const std::exception& e) {
      batch = Batch{};
      batch.index = b;
      std::lock_guard<std::mutex> lock(mu_);
      skipped_.push_back(fmt::format("batch {}: {}", b, e.what()));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_.emplace(b, std::move(batch));
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
