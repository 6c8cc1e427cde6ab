#include "pipeline/atomic_file.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ostream>

#include "base/error.h"

namespace abridge::pipeline {
namespace {

[[noreturn]] void fail(const std::string& what, int err) { throw Error(what + ": " + std::strerror(err)); }

std::string random_hex(size_t digits) {
  unsigned char bytes[16];
  const size_t want = (digits + 1) / 2;
  size_t got = 0;
  while (got < want) {
    const ssize_t n = ::getrandom(bytes + got, want - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("getrandom", errno);
    got += static_cast<size_t>(n);
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < digits; ++i) out += hex[(bytes[i / 2] >> (i % 2 ? 0 : 4)) & 15];
  return out;
}

void write_all(int fd, std::string_view bytes, const std::string& shown) {
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(shown + ": write failed", w < 0 ? errno : EIO);
    done += static_cast<size_t>(w);
  }
}

std::string kind_of(mode_t m) {
  if (S_ISDIR(m)) return "a folder";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISREG(m)) return "a regular file";
  return "not a regular file";
}

}  // namespace

bool is_temp_name(std::string_view name) {
  if (name.size() != kTempPrefix.size() + kTempDigits || name.substr(0, kTempPrefix.size()) != kTempPrefix) return false;
  return name.find_first_not_of("0123456789abcdef", kTempPrefix.size()) == std::string_view::npos;
}

void write_atomic_at(int dirfd, const std::string& name, std::string_view bytes, const std::string& shown) {
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    tmp = std::string(kTempPrefix) + random_hex(kTempDigits);
    fd = ::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 && (errno != EEXIST || attempt > 8)) fail(shown + ": cannot create a temporary file", errno);
  }
  try {
    write_all(fd, bytes, shown);
    if (::fsync(fd) != 0) fail(shown + ": cannot flush", errno);
  } catch (...) {
    ::close(fd);
    ::unlinkat(dirfd, tmp.c_str(), 0);
    throw;
  }
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlinkat(dirfd, tmp.c_str(), 0);
    fail(shown + ": cannot flush", e);
  }
  if (::renameat(dirfd, tmp.c_str(), dirfd, name.c_str()) != 0) {
    const int e = errno;
    ::unlinkat(dirfd, tmp.c_str(), 0);
    fail(shown + ": cannot rename into place", e);
  }
  ::fsync(dirfd);
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") throw Error(path + ": not a file name");
  const int dirfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) fail(path + ": cannot open its folder", errno);
  try {
    write_atomic_at(dirfd, name, bytes, path);
  } catch (...) {
    ::close(dirfd);
    throw;
  }
  ::close(dirfd);
}

namespace {

// How --report PATH is written: to standard output, replaced, or written through. Throws for what is
// refused.
enum class ReportTarget { kStdout, kReplace, kWriteThrough };
struct ReportPlan {
  ReportTarget target = ReportTarget::kReplace;
  struct stat lst {}, st {};  // the path itself, and what it leads to (kWriteThrough)
};

ReportPlan plan_report(const std::string& path) {
  ReportPlan p;
  if (path == "-") {
    p.target = ReportTarget::kStdout;
    return p;
  }
  if (::lstat(path.c_str(), &p.lst) != 0) {
    if (errno != ENOENT) fail(path, errno);
    return p;  // created
  }
  if (S_ISREG(p.lst.st_mode)) return p;
  p.st = p.lst;
  if (S_ISLNK(p.lst.st_mode)) {
    if (p.lst.st_uid != 0 && p.lst.st_uid != ::geteuid())
      throw Error(path + ": a symbolic link that belongs to another user: not followed (--report writes a regular "
                         "file, a FIFO or a terminal; give the real path, or - for standard output)");
    if (::stat(path.c_str(), &p.st) != 0) fail(path + ": cannot follow the symbolic link", errno);
    if (S_ISREG(p.st.st_mode) || S_ISDIR(p.st.st_mode))
      throw Error(path + ": a symbolic link to " + kind_of(p.st.st_mode) +
                  ": not replaced or followed (give the real path, or - for standard output)");
  }
  if (!S_ISFIFO(p.st.st_mode) && !S_ISCHR(p.st.st_mode))
    throw Error(path + ": " + kind_of(p.st.st_mode) + ": --report writes a regular file, a FIFO or a terminal");
  p.target = ReportTarget::kWriteThrough;
  return p;
}

}  // namespace

void check_report_file(const std::string& path) { plan_report(path); }

void write_report_file(const std::string& path, std::string_view bytes, std::ostream& out) {
  const ReportPlan p = plan_report(path);
  if (p.target == ReportTarget::kStdout) {
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) throw Error("--report -: cannot write to standard output");
    return;
  }
  if (p.target == ReportTarget::kReplace) return write_file_atomic(path, bytes);
  // Written through: a FIFO or a terminal is the reader's, not ours to replace. O_NONBLOCK so that a
  // FIFO nobody reads fails at once (ENXIO) instead of waiting; then the writes block as usual.
  const bool link = S_ISLNK(p.lst.st_mode);
  const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | (link ? 0 : O_NOFOLLOW));
  if (fd < 0) fail(path + (errno == ENXIO ? ": nobody reads the FIFO" : ": cannot open"), errno);
  // What was opened is what was checked: the same file, reached through the same link.
  struct stat opened {}, again {};
  if (::fstat(fd, &opened) != 0 || opened.st_dev != p.st.st_dev || opened.st_ino != p.st.st_ino ||
      (link && (::lstat(path.c_str(), &again) != 0 || again.st_dev != p.lst.st_dev || again.st_ino != p.lst.st_ino))) {
    ::close(fd);
    throw Error(path + ": changed while it was opened; not written");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  try {
    write_all(fd, bytes, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

}  // namespace abridge::pipeline
