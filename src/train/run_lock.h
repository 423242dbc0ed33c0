// The run-folder lock: one training process per run folder at a time.
//
// RUN_DIR/.lock is locked with flock(LOCK_EX | LOCK_NB) before anything else in the folder is
// written, and stays locked for the whole run (a fresh run, a --resume, each run of a compare). The
// holder writes its PID into the file so that a second process can say who holds it. The kernel
// drops a flock when its holder exits, however it exits, so a lock left by a killed process (the PID
// still in the file) never blocks: only a live holder does.
#pragma once

#include <string>

namespace mf {

class RunLock {
 public:
  // Creates `run_dir` if needed and takes its lock. mf::Error "RUN_DIR is in use by another
  // training run (PID N) ..." when a live process holds it; other failures carry strerror.
  explicit RunLock(const std::string& run_dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  static std::string lock_path(const std::string& run_dir) { return run_dir + "/.lock"; }

 private:
  int fd_ = -1;
};

}  // namespace mf
