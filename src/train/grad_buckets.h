// Gradient buckets for data-parallel training (docs/distributed.md, "Overlap"): the averaging of the
// gradients across ranks starts during the backward pass, as PyTorch DDP's buckets do, instead of
// after it.
//
// Every gradient is a view of one flat buffer, in parameter order (AdamW::flat_gradients), and the
// backward pass finishes the parameters roughly in reverse of that order (head, last stage, ...,
// stem). So the gradients that are final form a growing suffix of the buffer. The model reports each
// module whose backward has returned (Ctx::on_backward_done); a parameter is final once a module that
// owns it has been reported. Whenever the final suffix not yet handed out reaches `bucket_elements`
// (and it starts at a parameter boundary), that range is handed to `reduce`; finish() hands out
// whatever is left. Each range is handed out exactly once a step, and the ranges of one step tile the
// buffer, so averaging each range is averaging the whole buffer. The ranges are the same every step
// (the backward's order does not change), so a run stays reproducible for a given number of ranks.
//
// A parameter reachable from two modules (tied weights) is only ever final at finish(): a later
// backward could still add to it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace mf {

class Module;
struct Parameter;

class GradientBuckets {
 public:
  // reduce(offset, count): average flat[offset, offset + count) across the ranks (or start to).
  using Reduce = std::function<void(int64_t offset, int64_t count)>;

  GradientBuckets(const std::vector<std::pair<std::string, Parameter*>>& params, const Tensor& flat,
                  int64_t bucket_elements, Reduce reduce);

  // A new step: nothing is final.
  void begin_step();
  // Ctx::on_backward_done: `m`'s parameters are final; hands out the buckets this completes.
  void module_done(const Module& m);
  // After the backward pass: hands out the rest (everything not yet handed out).
  void finish();

  // The ranges handed out during the last step, in order (for tests).
  const std::vector<std::pair<int64_t, int64_t>>& last_ranges() const { return ranges_; }

 private:
  struct Slot {
    const Parameter* param;
    int64_t offset;  // into the flat buffer, in elements
    bool shared;     // reachable from two modules: final only at finish()
  };
  std::vector<Slot> slots_;         // by offset
  std::vector<bool> final_;         // per slot, this step
  std::map<const Parameter*, size_t> slot_of_;
  std::map<const Module*, std::vector<size_t>> slots_of_module_;  // cached per reported module
  int64_t total_ = 0, bucket_ = 0;
  int64_t handed_from_ = 0;  // [handed_from_, total_) handed out this step
  size_t boundary_ = 0;      // slots [boundary_, size) are final and contiguous from the end
  Reduce reduce_;
  std::vector<std::pair<int64_t, int64_t>> ranges_;

  void hand_out(int64_t from);
};

}  // namespace mf
