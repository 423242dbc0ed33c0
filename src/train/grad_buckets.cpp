#include "train/grad_buckets.h"

#include <algorithm>

#include "core/error.h"
#include "nn/module.h"

namespace mf {

GradientBuckets::GradientBuckets(const std::vector<std::pair<std::string, Parameter*>>& params, const Tensor& flat,
                                 int64_t bucket_elements, Reduce reduce)
    : total_(flat.numel()), bucket_(std::max<int64_t>(bucket_elements, 1)), reduce_(std::move(reduce)) {
  std::map<const Parameter*, int> seen;
  for (const auto& [name, p] : params) ++seen[p];
  const auto* base = static_cast<const char*>(flat.raw());
  for (const auto& [p, count] : seen) {
    if (!p->grad.defined() || !p->grad.shares_storage(flat)) continue;  // frozen, or not in the buffer
    const int64_t offset = (static_cast<const char*>(p->grad.raw()) - base) / static_cast<int64_t>(sizeof(float));
    MF_CHECK(offset >= 0 && offset + p->grad.numel() <= total_, "gradient buckets: a gradient outside the flat buffer");
    slots_.push_back({p, offset, count > 1});
  }
  std::sort(slots_.begin(), slots_.end(), [](const Slot& a, const Slot& b) { return a.offset < b.offset; });
  for (size_t i = 0; i < slots_.size(); ++i) slot_of_[slots_[i].param] = i;
  begin_step();
}

void GradientBuckets::begin_step() {
  final_.assign(slots_.size(), false);
  handed_from_ = total_;
  boundary_ = slots_.size();
  ranges_.clear();
}

void GradientBuckets::module_done(const Module& m) {
  auto it = slots_of_module_.find(&m);
  if (it == slots_of_module_.end()) {
    std::vector<size_t> mine;
    for (const auto& [name, p] : m.named_parameters()) {
      auto s = slot_of_.find(p);
      if (s != slot_of_.end() && !slots_[s->second].shared) mine.push_back(s->second);
    }
    it = slots_of_module_.emplace(&m, std::move(mine)).first;
  }
  for (size_t i : it->second) final_[i] = true;
  while (boundary_ > 0 && final_[boundary_ - 1]) --boundary_;
  // The final suffix starts at slot boundary_ (the buffer's end when none is final yet).
  const int64_t from = boundary_ < slots_.size() ? slots_[boundary_].offset : total_;
  if (handed_from_ - from >= bucket_) hand_out(from);
}

void GradientBuckets::finish() {
  if (handed_from_ > 0) hand_out(0);
}

void GradientBuckets::hand_out(int64_t from) {
  ranges_.emplace_back(from, handed_from_ - from);
  reduce_(from, handed_from_ - from);
  handed_from_ = from;
}

}  // namespace mf
