// One run per output directory: an exclusive flock on OUT_DIR/.abridge/lock, held for the life of
// the object and released by the kernel however the process ends (so a killed run never leaves a
// stale lock). Cron may start the next run before the last has finished; the second one exits with
// code 3 or, asked to, waits.
#pragma once

#include <filesystem>
#include <functional>
#include <iosfwd>
#include <string>

namespace abridge::pipeline {

class RunLock {
 public:
  // `state_dir` is OUT_DIR/.abridge (created by the caller). With `wait`, waits until the lock is
  // free (saying so on `err`), or until `give_up()` turns true; otherwise returns at once. When the
  // lock was not taken, held_by_other() names the holder. Throws abridge::Error when the lock file
  // cannot be opened.
  RunLock(const std::filesystem::path& state_dir, bool wait, std::ostream& err,
          const std::function<bool()>& give_up = {});
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  // Empty when this process holds the lock; otherwise "another abridge run (pid N)".
  const std::string& held_by_other() const { return held_by_other_; }

 private:
  int fd_ = -1;
  std::string held_by_other_;
};

}  // namespace abridge::pipeline
