#include "base/file.h"

#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <istream>
#include <utility>

#include "base/bytes.h"
#include "base/error.h"

namespace abridge {
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

}  // namespace

// --- Reading -------------------------------------------------------------------------------------

std::string too_large_message(unsigned long long bytes, size_t max_bytes) {
  std::string size = format_bytes(bytes, 1, ByteUnit::kMiB);
  std::string limit = format_bytes(max_bytes, 1, ByteUnit::kMiB);
  if (size == limit) {  // 1 MiB and one byte against 1 MiB: the bytes tell them apart
    size = std::to_string(bytes) + " bytes";
    limit = std::to_string(max_bytes) + " bytes";
  }
  return "too large (" + size + "; the limit is " + limit + ")";
}

std::string read_regular_fd(int fd, size_t max_bytes) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw Error(std::string("cannot stat: ") + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw Error("is a directory");
  if (!S_ISREG(st.st_mode)) throw Error("not a regular file (a FIFO, device or socket is not read)");
  if (st.st_size < 0 || static_cast<unsigned long long>(st.st_size) > max_bytes)
    throw Error(too_large_message(static_cast<unsigned long long>(st.st_size), max_bytes));
  // A FIFO was opened without blocking; reads of a regular file block as usual.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK)) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(std::string("read error: ") + std::strerror(errno));
    if (n == 0) break;  // it shrank while read: what is there
    got += static_cast<size_t>(n);
  }
  bytes.resize(got);
  return bytes;
}

std::string read_stream_bounded(std::istream& in, size_t max_bytes) {
  std::string bytes;
  char buf[1 << 16];
  while (in) {
    in.read(buf, sizeof buf);
    const auto n = static_cast<size_t>(in.gcount());
    if (n == 0) break;
    if (bytes.size() + n > max_bytes) throw Error("too large (more than " + format_bytes(max_bytes, 1, ByteUnit::kMiB) + ")");
    bytes.append(buf, n);
  }
  if (in.bad()) throw Error("read error");
  return bytes;
}

std::string read_regular_file(const std::string& path, size_t max_bytes, bool no_follow, int dir_fd) {
  const int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | (no_follow ? O_NOFOLLOW : 0);
  const Fd fd(::openat(dir_fd, path.c_str(), flags));
  if (!fd.ok()) {
    const int e = errno;
    if (e == ENOENT) throw Error("no such file");
    if (e == ELOOP && no_follow) throw Error("a symbolic link (not followed here)");
    if (e == ELOOP) throw Error("a symbolic link loop");
    // open(2) of a socket, or of a device node with no driver behind it, fails with ENXIO ("No such
    // device or address"): say what the file is instead (only named here, nothing is opened).
    struct stat st {};
    if (e == ENXIO && ::fstatat(dir_fd, path.c_str(), &st, no_follow ? AT_SYMLINK_NOFOLLOW : 0) == 0 &&
        !S_ISREG(st.st_mode))
      throw Error(S_ISSOCK(st.st_mode) ? "not a regular file (a socket; a FIFO, device or socket is not read)"
                                       : "not a regular file (a FIFO, device or socket is not read)");
    throw Error(std::string("cannot open: ") + std::strerror(e));
  }
  return read_regular_fd(fd.get(), max_bytes);
}

// --- Writing -------------------------------------------------------------------------------------

bool is_temp_name(std::string_view name) {
  if (name.size() != kTempPrefix.size() + kTempDigits || name.substr(0, kTempPrefix.size()) != kTempPrefix) return false;
  return name.find_first_not_of("0123456789abcdef", kTempPrefix.size()) == std::string_view::npos;
}

void write_all(int fd, std::string_view bytes, const std::string& shown) {
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(shown + ": write failed", w < 0 ? errno : EIO);
    done += static_cast<size_t>(w);
  }
}

AtomicWriter::AtomicWriter(int dirfd, std::string name, std::string shown, mode_t mode)
    : dirfd_(dirfd), name_(std::move(name)), shown_(std::move(shown)) {
  for (int attempt = 0; !fd_.ok(); ++attempt) {
    tmp_ = std::string(kTempPrefix) + random_hex(kTempDigits);
    fd_ = Fd(::openat(dirfd_, tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
    if (!fd_.ok() && (errno != EEXIST || attempt > 8)) fail(shown_ + ": cannot create a temporary file", errno);
  }
}

AtomicWriter::~AtomicWriter() {
  if (done_) return;
  fd_.reset();
  ::unlinkat(dirfd_, tmp_.c_str(), 0);
}

void AtomicWriter::write(std::string_view bytes) { write_all(fd_.get(), bytes, shown_); }

void AtomicWriter::commit() {
  if (::fsync(fd_.get()) != 0) fail(shown_ + ": cannot flush", errno);
  if (fd_.close() != 0) fail(shown_ + ": cannot flush", errno);
  if (::renameat(dirfd_, tmp_.c_str(), dirfd_, name_.c_str()) != 0) fail(shown_ + ": cannot rename into place", errno);
  done_ = true;
  ::fsync(dirfd_);
}

void write_atomic_at(int dirfd, const std::string& name, std::string_view bytes, const std::string& shown, mode_t mode) {
  AtomicWriter w(dirfd, name, shown, mode);
  w.write(bytes);
  w.commit();
}

Fd open_parent_folder(const std::string& path, std::string& name) {
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") throw Error(path + ": not a file name");
  Fd dirfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dirfd.ok()) fail(path + ": cannot open its folder", errno);
  return dirfd;
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  std::string name;
  const Fd dirfd = open_parent_folder(path, name);
  write_atomic_at(dirfd.get(), name, bytes, path);
}

}  // namespace abridge
