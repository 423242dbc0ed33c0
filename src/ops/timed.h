// The dispatcher's timing of one op (ops.cpp, optimizer_ops.cpp): with a profile attached, counts
// the call and its multiply-accumulates and adds the op's wall time, waiting for the device first
// (unless the profile counts host time only: OpProfile::host_only).
#pragma once

#include <chrono>

#include "core/error.h"
#include "ops/ops.h"

namespace mf::op {

// Times one op into the profile (if any) for the lifetime of the object.
class Timed {
 public:
  Timed(const Exec& e, OpKind op, int64_t macs) : e_(e), op_(op) {
    MF_ASSERT(e.backend != nullptr);
    if (e_.profile) {
      e_.profile->calls[static_cast<size_t>(op)] += 1;
      e_.profile->macs[static_cast<size_t>(op)] += macs;
      if (!e_.profile->host_only) e_.backend->synchronize();  // a GPU's earlier ops must not be counted here
      start_ = std::chrono::steady_clock::now();
    }
  }
  ~Timed() {
    if (!e_.profile) return;
    try {
      if (!e_.profile->host_only) e_.backend->synchronize();
    } catch (...) {  // a destructor must not throw; the next op reports the device's error
    }
    e_.profile->seconds[static_cast<size_t>(op_)] +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  const Exec& e_;
  OpKind op_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace mf::op
