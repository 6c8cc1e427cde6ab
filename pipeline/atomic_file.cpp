#include "pipeline/atomic_file.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ostream>

#include "base/error.h"
#include "pipeline/path_walk.h"

namespace abridge::pipeline {
namespace {

[[noreturn]] void fail(const std::string& what, int err) { throw Error(what + ": " + std::strerror(err)); }

std::string kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a folder";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISREG(m)) return "a regular file";
  return "not a regular file";
}

// "/dev/stdout", "/dev/stderr", "/dev/fd/N", "/proc/self/fd/N": the descriptor N; -1 for other paths.
int descriptor_named(const std::string& path) {
  if (path == "/dev/stdout") return 1;
  if (path == "/dev/stderr") return 2;
  for (const std::string_view prefix : {"/dev/fd/", "/proc/self/fd/"}) {
    if (path.size() <= prefix.size() || path.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = path.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
    return std::stoi(digits);
  }
  return -1;
}

// Writes to a FIFO, a terminal or an inherited descriptor with SIGPIPE held back: a reader that has gone
// away is EPIPE, an error line, instead of the signal killing the run at its very end.
void write_no_sigpipe(int fd, std::string_view bytes, const std::string& shown) {
  sigset_t pipe_only, old;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  sigset_t pending;
  sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  int error = 0;
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      error = w < 0 ? errno : EIO;
      break;
    }
    done += static_cast<size_t>(w);
  }
  if (error == EPIPE && !was_pending) {
    const timespec zero{0, 0};
    while (sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (error != 0) fail(shown + (error == EPIPE ? ": its reader has gone away" : ": write failed"), error);
}

}  // namespace

ReportFile::ReportFile(const std::string& path, const struct stat* out_dir) : path_(path) {
  if (path.empty()) throw Error("--report: an empty path");
  if (path == "-") {
    kind_ = Kind::kStdout;
    return;
  }
  if (const int n = descriptor_named(path); n >= 0) {
    // The descriptor the caller gave (a shell's `>> log`): used as it is, never looked up by name (the
    // name leads to the file's path, which a rename would replace, truncating or losing the log).
    const int flags = ::fcntl(n, F_GETFL);
    if (flags < 0) throw Error(path + ": descriptor " + std::to_string(n) + " is not open");
    if ((flags & O_ACCMODE) == O_RDONLY) throw Error(path + ": descriptor " + std::to_string(n) + " is not open for writing");
    struct stat st {};
    if (::fstat(n, &st) == 0 && S_ISDIR(st.st_mode)) throw Error(path + ": a folder");
    fd_ = Fd(::fcntl(n, F_DUPFD_CLOEXEC, 3));
    if (!fd_.ok()) fail(path + ": cannot use the descriptor", errno);
    kind_ = Kind::kDescriptor;
    stdout_fd_ = n == 1;
    return;
  }
  WalkedPath w = walk_path(path, /*follow_last=*/false, out_dir);
  if (!w.exists || S_ISREG(w.st.st_mode)) {
    kind_ = Kind::kReplace;
    mode_ = w.exists ? (w.st.st_mode & 0666) : 0600;
    dir_ = std::move(w.dir);
    name_ = w.name;
    return;
  }
  if (S_ISLNK(w.st.st_mode)) {
    w = walk_path(path, /*follow_last=*/true, out_dir);  // the owner rule for the link itself too
    if (!w.exists) throw Error(path + ": a broken symbolic link");
    if (S_ISREG(w.st.st_mode) || S_ISDIR(w.st.st_mode))
      throw Error(path + ": a symbolic link to " + kind_of(w.st.st_mode) +
                  ": not replaced or followed (give the real path, or - for standard output)");
  }
  if (!S_ISFIFO(w.st.st_mode) && !S_ISCHR(w.st.st_mode))
    throw Error(path + ": " + kind_of(w.st.st_mode) + ": --report writes a regular file, a FIFO or a terminal");
  // Written through: a FIFO or a terminal is the reader's, not ours to replace. O_NONBLOCK so that a
  // FIFO nobody reads fails now (ENXIO) instead of waiting; held open until the end, so its reader sees
  // the whole report and then its end.
  fd_ = Fd(::openat(w.dir.get(), w.name.c_str(), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd_.ok()) fail(path + (errno == ENXIO && S_ISFIFO(w.st.st_mode) ? ": nobody reads the FIFO" : ": cannot open"), errno);
  struct stat opened {};
  if (::fstat(fd_.get(), &opened) != 0 || opened.st_dev != w.st.st_dev || opened.st_ino != w.st.st_ino)
    throw Error(path + ": changed while it was opened; not written");
  const int flags = ::fcntl(fd_.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd_.get(), F_SETFL, flags & ~O_NONBLOCK);  // then the writes wait for the reader
  kind_ = Kind::kDescriptor;
}

void ReportFile::write(std::string_view bytes, std::ostream& out) {
  switch (kind_) {
    case Kind::kStdout:
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      out.flush();
      if (!out) throw Error("--report -: cannot write to standard output");
      return;
    case Kind::kReplace:
      write_atomic_at(dir_.get(), name_, bytes, path_, mode_);
      return;
    case Kind::kDescriptor:
      if (stdout_fd_) out.flush();  // what was written to standard output before comes first
      write_no_sigpipe(fd_.get(), bytes, path_);
      if (fd_.close() != 0) fail(path_ + ": cannot flush", errno);
      return;
  }
}

void write_report_file(const std::string& path, std::string_view bytes, std::ostream& out) {
  ReportFile(path).write(bytes, out);
}

}  // namespace abridge::pipeline
