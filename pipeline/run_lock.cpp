#include "pipeline/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>
#include <cstring>
#include <ostream>

#include "engine/error.h"

namespace abridge::pipeline {

RunLock::RunLock(const std::filesystem::path& state_dir, bool wait, std::ostream& err,
                 const std::function<bool()>& give_up) {
  const std::string path = (state_dir / "lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(path + ": cannot open the lock file: " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) throw Error(path + ": flock: " + std::strerror(errno));
    std::string holder(64, '\0');
    const ssize_t n = ::pread(fd_, holder.data(), holder.size() - 1, 0);
    holder.resize(n > 0 ? static_cast<size_t>(n) : 0);
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\0')) holder.pop_back();
    const std::string who = holder.empty() ? "another abridge run" : "another abridge run (pid " + holder + ")";
    if (!wait) {
      held_by_other_ = who;
      return;
    }
    err << "abridge: " << state_dir.parent_path().string() << " is in use by " << who << "; waiting\n";
    // Polling rather than a blocking flock, so a signal to stop is seen while waiting.
    while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) throw Error(path + ": flock: " + std::strerror(errno));
      if (give_up && give_up()) {
        held_by_other_ = who;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0) (void)!::pwrite(fd_, pid.data(), pid.size(), 0);
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

}  // namespace abridge::pipeline
