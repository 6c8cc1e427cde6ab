#include "pipeline/output_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <Poco/DigestEngine.h>
#include <Poco/SHA2Engine.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <ostream>
#include <thread>
#include <vector>

#include "base/error.h"

namespace abridge::pipeline {
namespace {

using nlohmann::json;

constexpr std::string_view kTempPrefix = ".abridge-tmp-";
constexpr size_t kTempDigits = 12;
constexpr size_t kMaxRecordBytes = size_t{1} << 16;   // a done record or the lock's pid
constexpr size_t kMaxCacheBytes = size_t{64} << 20;   // one cached summary, compressed or not
constexpr size_t kMaxOutputBytes = size_t{256} << 20; // an output read back for its hash
constexpr int kMaxDepth = 256;                        // folders below OUT_DIR the clean-up descends

[[noreturn]] void fail(const std::string& what, int err) { throw Error(what + ": " + std::strerror(err)); }

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = o.release();
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() {
    const int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

// Opens folder `name` under `at` without following a link, creating it first when asked.
int open_dir_at(int at, const std::string& name, bool create, const std::string& shown) {
  if (create && ::mkdirat(at, name.c_str(), 0755) != 0 && errno != EEXIST) fail(shown + ": cannot create the folder", errno);
  const int fd = ::openat(at, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP || errno == ENOTDIR)
      throw Error(shown + ": a symbolic link or not a folder; abridge writes only into real folders inside OUT_DIR");
    fail(shown + ": cannot open the folder", errno);
  }
  return fd;
}

std::string random_hex(size_t digits) {
  unsigned char bytes[16];
  size_t got = 0;
  while (got < (digits + 1) / 2) {
    const ssize_t n = ::getrandom(bytes + got, (digits + 1) / 2 - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("getrandom", errno);
    got += static_cast<size_t>(n);
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < digits; ++i) out += hex[(bytes[i / 2] >> (i % 2 ? 0 : 4)) & 15];
  return out;
}

bool is_temp_name(std::string_view name) {
  if (name.size() != kTempPrefix.size() + kTempDigits || name.substr(0, kTempPrefix.size()) != kTempPrefix) return false;
  return name.find_first_not_of("0123456789abcdef", kTempPrefix.size()) == std::string_view::npos;
}

// Writes `bytes` to `name` in folder `dirfd`: a fresh temporary name, fsync, rename over `name` (a link
// there is replaced, not followed), fsync of the folder.
void write_atomic_at(int dirfd, const std::string& name, std::string_view bytes, const std::string& shown) {
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    tmp = std::string(kTempPrefix) + random_hex(kTempDigits);
    fd = ::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 && (errno != EEXIST || attempt > 8)) fail(shown + ": cannot create a temporary file", errno);
  }
  auto give_up = [&](const char* what, int err) {
    ::close(fd);
    ::unlinkat(dirfd, tmp.c_str(), 0);
    fail(shown + ": " + what, err);
  };
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) give_up("write failed", w < 0 ? errno : EIO);
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) give_up("cannot flush", errno);
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

// Reads regular file `name` in `dirfd` (no link followed, no FIFO waited on), at most `max_bytes`.
std::optional<std::string> read_at(int dirfd, const std::string& name, size_t max_bytes) {
  Fd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (fd.get() < 0) return std::nullopt;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) > max_bytes)
    return std::nullopt;
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd.get(), out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // shrank while read
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

// The components of a relative output path; refuses absolute paths, "." and "..".
std::vector<std::string> components(const std::string& rel) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= rel.size()) {
    const size_t slash = rel.find('/', start);
    const std::string part = rel.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (!part.empty()) {
      if (part == "." || part == "..") throw Error(rel + ": not a path inside OUT_DIR");
      parts.push_back(part);
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (parts.empty() || (!rel.empty() && rel.front() == '/')) throw Error("\"" + rel + "\": not a path inside OUT_DIR");
  return parts;
}

// Removes our temporary files in `dirfd` and below, never through a link.
size_t clean_temp_files(int dirfd, int depth) {
  if (depth > kMaxDepth) return 0;
  const int dup = ::dup(dirfd);
  if (dup < 0) return 0;
  DIR* d = ::fdopendir(dup);
  if (!d) {
    ::close(dup);
    return 0;
  }
  size_t removed = 0;
  std::vector<std::string> subdirs;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISDIR(st.st_mode)) subdirs.push_back(name);
    else if (S_ISREG(st.st_mode) && is_temp_name(name) && ::unlinkat(dirfd, name.c_str(), 0) == 0) ++removed;
  }
  ::closedir(d);
  for (const std::string& s : subdirs) {
    const int fd = ::openat(dirfd, s.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) continue;
    removed += clean_temp_files(fd, depth + 1);
    ::close(fd);
  }
  return removed;
}

std::string done_name(const std::string& rel) { return sha256_hex(rel) + ".json"; }

}  // namespace

std::string sha256_hex(std::string_view bytes) {
  Poco::SHA2Engine engine(Poco::SHA2Engine::SHA_256);
  engine.update(bytes.data(), static_cast<unsigned>(bytes.size()));
  return Poco::DigestEngine::digestToHex(engine.digest());
}

OutputDir::OutputDir(const std::string& path, bool wait, std::ostream& err, const std::function<bool()>& give_up)
    : path_(path) {
  if (path.empty()) throw Error("-o OUT_DIR is required");
  // OUT_DIR itself may be reached through links the user chose (a path they typed); nothing below it is.
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) fail(path + ": cannot create the output directory", errno);
  dir_fd_ = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) fail(path + ": cannot open the output directory", errno);
  state_fd_ = open_dir_at(dir_fd_, ".abridge", true, path + "/.abridge");
  if (::flock(state_fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) fail(path + "/.abridge: flock", errno);
    std::string pid = read_at(state_fd_, "lock", kMaxRecordBytes).value_or("");
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == '\0')) pid.pop_back();
    if (pid.find_first_not_of("0123456789") != std::string::npos || pid.size() > 10) pid.clear();
    const std::string who = pid.empty() ? "another abridge run" : "another abridge run (pid " + pid + ")";
    if (!wait) {
      held_by_other_ = who;
      return;
    }
    err << "abridge: " << path << " is in use by " << who << "; waiting\n";
    // Polling rather than a blocking flock, so a signal to stop is seen while waiting.
    while (::flock(state_fd_, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) fail(path + "/.abridge: flock", errno);
      if (give_up && give_up()) {
        held_by_other_ = who;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  // Who holds it, for the message of a second run (informational: the lock is the flock above).
  write_atomic_at(state_fd_, "lock", std::to_string(::getpid()) + "\n", path + "/.abridge/lock");
  cache_fd_ = open_dir_at(state_fd_, "cache", true, path + "/.abridge/cache");
  done_fd_ = open_dir_at(state_fd_, "done", true, path + "/.abridge/done");
}

OutputDir::~OutputDir() {
  for (int fd : {done_fd_, cache_fd_, state_fd_, dir_fd_})
    if (fd >= 0) ::close(fd);  // closing the .abridge descriptor releases the flock
}

size_t OutputDir::remove_stale_temp_files() const { return clean_temp_files(dir_fd_, 0); }

OutputDir::CacheEntry OutputDir::cache_get(const std::string& key) const {
  CacheEntry e;
  const auto z = read_at(cache_fd_, key + ".zst", kMaxCacheBytes);
  if (!z) return e;
  e.damaged = true;
  // One zstd frame with a content checksum: the Frame_Header_Descriptor byte after the 4-byte magic has
  // the Content_Checksum_flag in bit 2 (RFC 8878, 3.1.1.1.1).
  const bool one_frame = z->size() > 4 && ZSTD_findFrameCompressedSize(z->data(), z->size()) == z->size();
  if (!one_frame || !((static_cast<unsigned char>((*z)[4]) >> 2) & 1)) return e;
  const unsigned long long n = ZSTD_getFrameContentSize(z->data(), z->size());
  if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN || n > kMaxCacheBytes) return e;
  std::string out(static_cast<size_t>(n), '\0');
  const size_t got = ZSTD_decompress(out.data(), out.size(), z->data(), z->size());  // verifies the checksum
  if (ZSTD_isError(got) || got != out.size()) return e;
  e.damaged = false;
  e.value = std::move(out);
  return e;
}

void OutputDir::cache_put(const std::string& key, std::string_view value) const {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  if (!cctx) throw Error("zstd: out of memory");
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 3);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);  // a flipped bit is found on reading
  std::string z(ZSTD_compressBound(value.size()), '\0');
  const size_t n = ZSTD_compress2(cctx, z.data(), z.size(), value.data(), value.size());
  ZSTD_freeCCtx(cctx);
  if (ZSTD_isError(n)) throw Error(std::string("zstd: ") + ZSTD_getErrorName(n));
  z.resize(n);
  write_atomic_at(cache_fd_, key + ".zst", z, path_ + "/.abridge/cache/" + key + ".zst");
}

bool OutputDir::up_to_date(const std::string& rel, const std::string& job_key) const {
  try {
    const auto record = read_at(done_fd_, done_name(rel), kMaxRecordBytes);
    if (!record) return false;
    const json j = json::parse(*record);
    if (!j.is_object() || j.value("key", "") != job_key) return false;
    const std::vector<std::string> parts = components(rel);
    Fd dir(::dup(dir_fd_));
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      Fd next(::openat(dir.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (next.get() < 0) return false;
      dir = std::move(next);
    }
    const auto output = read_at(dir.get(), parts.back(), kMaxOutputBytes);
    return output && j.value("output_sha256", "") == sha256_hex(*output);
  } catch (const std::exception&) {
    return false;  // a damaged record or an odd path: summarize again
  }
}

void OutputDir::write_output(const std::string& rel, std::string_view body, const std::string& job_key,
                             const std::string& source) const {
  const std::vector<std::string> parts = components(rel);
  const json record = {{"key", job_key}, {"source", source}, {"output", rel}, {"output_sha256", sha256_hex(body)}};
  write_atomic_at(done_fd_, done_name(rel), record.dump(-1, ' ', false, json::error_handler_t::replace) + "\n",
                  path_ + "/.abridge/done");
  Fd dir(::dup(dir_fd_));
  std::string shown = path_;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    shown += "/" + parts[i];
    dir = Fd(open_dir_at(dir.get(), parts[i], true, shown));
  }
  write_atomic_at(dir.get(), parts.back(), body, path_ + "/" + rel);
}

}  // namespace abridge::pipeline
