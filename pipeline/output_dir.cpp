#include "pipeline/output_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <Poco/DigestEngine.h>
#include <Poco/SHA2Engine.h>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <cstring>
#include <nlohmann/json.hpp>
#include <ostream>
#include <thread>
#include <vector>

#include "base/error.h"
#include "base/fd.h"
#include "engine/read_file.h"
#include "pipeline/atomic_file.h"
#include "pipeline/path_walk.h"
#include "pipeline/run_report.h"

namespace abridge::pipeline {
namespace {

using nlohmann::json;

constexpr size_t kMaxRecordBytes = size_t{1} << 16;   // a done record or the lock's pid
constexpr size_t kMaxCacheBytes = size_t{64} << 20;   // one cached summary, compressed or not
constexpr size_t kMaxOutputBytes = size_t{256} << 20; // an output read back for its hash
constexpr int kMaxDepth = 256;                        // folders below OUT_DIR the clean-up descends

[[noreturn]] void fail(const std::string& what, int err) { throw Error(what + ": " + std::strerror(err)); }

// Opens folder `name` under `at` without following a link, creating it first (with `mode`) when asked.
int open_dir_at(int at, const std::string& name, bool create, const std::string& shown, mode_t mode = 0755) {
  if (create && ::mkdirat(at, name.c_str(), mode) != 0 && errno != EEXIST) fail(shown + ": cannot create the folder", errno);
  const int fd = ::openat(at, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP || errno == ENOTDIR)
      throw Error(shown + ": a symbolic link or not a folder; abridge writes only into real folders inside OUT_DIR");
    fail(shown + ": cannot open the folder", errno);
  }
  return fd;
}

// Reads regular file `name` in `dirfd` (no link followed, no FIFO waited on), at most `max_bytes`;
// nothing when it is not there or not such a file.
std::optional<std::string> read_at(int dirfd, const std::string& name, size_t max_bytes) {
  try {
    return read_regular_file(name, max_bytes, /*no_follow=*/true, dirfd);
  } catch (const Error&) {
    return std::nullopt;
  }
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

// Removes our temporary files in `dirfd` and below, never through a link, never on another file
// system and never inside a folder that is itself an OUT_DIR (it holds `.abridge`: another run may
// hold its lock and be writing those files now).
size_t clean_temp_files(int dirfd, int depth, dev_t device) {
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
    struct stat st {}, state {};
    const bool other_out_dir = ::fstatat(fd, ".abridge", &state, AT_SYMLINK_NOFOLLOW) == 0;
    if (::fstat(fd, &st) == 0 && st.st_dev == device && !other_out_dir) removed += clean_temp_files(fd, depth + 1, device);
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
  try {
    open_and_lock(wait, err, give_up);
  } catch (...) {
    close_all();
    throw;
  }
}

void OutputDir::open_and_lock(bool wait, std::ostream& err, const std::function<bool()>& give_up) {
  const std::string& path = path_;
  if (path.empty()) throw Error("-o OUT_DIR is required");
  // OUT_DIR itself may be reached through links of root or of the user running abridge (a path they
  // typed, /srv -> /data), never through another user's (one planted in a shared folder); nothing below
  // it is followed at all.
  const WalkedPath w = walk_path(path, /*follow_last=*/true);
  if (!w.exists && ::mkdirat(w.dir.get(), w.name.c_str(), 0755) != 0 && errno != EEXIST)
    fail(path + ": cannot create the output directory", errno);
  dir_fd_ = ::openat(w.dir.get(), w.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir_fd_ < 0) {
    if (errno == ELOOP) throw Error(path + ": became a symbolic link while it was opened: not followed");
    if (errno == ENOTDIR) throw Error(path + ": not a folder (OUT_DIR must be one)");
    fail(path + ": cannot open the output directory", errno);
  }
  // Another user's OUT_DIR: they could replace anything abridge writes there (and read what it keeps).
  struct stat own {};
  if (::fstat(dir_fd_, &own) != 0) fail(path + ": cannot open the output directory", errno);
  if (own.st_uid != ::geteuid() && own.st_uid != 0)
    throw Error(path + ": OUT_DIR is owned by uid " + std::to_string(own.st_uid) + ", not by the user running abridge (uid " +
                std::to_string(::geteuid()) + ")");

  // Takes an exclusive flock on `fd`; false when another run holds it and we do not (or no longer) wait.
  bool told = false;
  auto lock = [&](int fd, const std::string& shown) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return true;
    if (errno != EWOULDBLOCK) fail(shown + ": flock", errno);
    std::string pid = read_at(dir_fd_, ".abridge/lock", kMaxRecordBytes).value_or("");
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == '\0')) pid.pop_back();
    if (pid.find_first_not_of("0123456789") != std::string::npos || pid.size() > 10) pid.clear();
    const std::string who = pid.empty() ? "another abridge run" : "another abridge run (pid " + pid + ")";
    if (!wait) {
      held_by_other_ = who;
      return false;
    }
    if (!told) err << "abridge: " << shown_path(path) << " is in use by " << who << "; waiting\n";
    told = true;
    // Polling rather than a blocking flock, so a signal to stop is seen while waiting.
    while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) fail(shown + ": flock", errno);
      if (give_up && give_up()) {
        held_by_other_ = who;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return true;
  };
  // The lock is OUT_DIR's own directory, which a cleaner cannot unlink while it holds files, and then
  // OUT_DIR/.abridge (the lock of earlier versions): deleting .abridge/lock, or all of .abridge, from
  // under a run does not let a second one start beside it.
  if (!lock(dir_fd_, path)) return;
  for (int attempt = 0;; ++attempt) {
    state_fd_ = open_dir_at(dir_fd_, ".abridge", true, path + "/.abridge", 0700);
    if (!lock(state_fd_, path + "/.abridge")) return;
    // The folder locked must still be the one at OUT_DIR/.abridge (a cleaner may have replaced it
    // between the open and the lock).
    struct stat held {}, now {};
    if (::fstat(state_fd_, &held) == 0 && ::fstatat(dir_fd_, ".abridge", &now, AT_SYMLINK_NOFOLLOW) == 0 &&
        held.st_dev == now.st_dev && held.st_ino == now.st_ino)
      break;
    ::close(state_fd_);
    state_fd_ = -1;
    if (attempt >= 8) throw Error(path + "/.abridge: replaced again and again while it was being locked");
  }
  open_state_children();
}

void OutputDir::open_state_children() const {
  // The state is the running user's alone: the cache holds summaries of every input, private ones too,
  // and the records name them. (A folder made by an older version, 0755, is narrowed; opened without
  // following a link, so only abridge's own folder is changed.)
  ::fchmod(state_fd_, 0700);
  // Who holds it, for the message of a second run (informational: the lock is the flock above).
  write_atomic_at(state_fd_, "lock", std::to_string(::getpid()) + "\n", path_ + "/.abridge/lock", 0600);
  for (int* fd : {&cache_fd_, &done_fd_})
    if (*fd >= 0) ::close(*fd), *fd = -1;
  cache_fd_ = open_dir_at(state_fd_, "cache", true, path_ + "/.abridge/cache", 0700);
  done_fd_ = open_dir_at(state_fd_, "done", true, path_ + "/.abridge/done", 0700);
}

namespace {

// Whether the folder open as `fd` is still the one named `name` in `at`.
bool still_at(int fd, int at, const char* name) {
  struct stat held {}, now {};
  return fd >= 0 && ::fstat(fd, &held) == 0 && ::fstatat(at, name, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
         held.st_dev == now.st_dev && held.st_ino == now.st_ino;
}

}  // namespace

bool OutputDir::state_intact() const {
  return still_at(state_fd_, dir_fd_, ".abridge") && still_at(cache_fd_, state_fd_, "cache") &&
         still_at(done_fd_, state_fd_, "done");
}

void OutputDir::restore_state() const {
  {
    std::shared_lock lock(state_mu_);
    if (state_intact()) return;
  }
  std::unique_lock lock(state_mu_);
  if (state_intact()) return;  // another thread has made them again
  if (!still_at(state_fd_, dir_fd_, ".abridge")) {
    // .abridge itself was deleted: a new one, locked like the first (no other run can hold it: this
    // one holds OUT_DIR's own lock, which every run takes first).
    Fd state(open_dir_at(dir_fd_, ".abridge", true, path_ + "/.abridge", 0700));
    if (::flock(state.get(), LOCK_EX | LOCK_NB) != 0)
      fail(path_ + "/.abridge: made again after it was deleted, but another process locks it", errno);
    if (!still_at(state.get(), dir_fd_, ".abridge")) throw Error(path_ + "/.abridge: replaced while it was made again");
    if (state_fd_ >= 0) ::close(state_fd_);
    state_fd_ = state.release();
  }
  open_state_children();
}

// Runs `write` (which uses the state folders) with them in place: made again first when a cleaner has
// deleted them, and once more when they were deleted while it wrote.
template <class Write>
void OutputDir::with_state(const Write& write) const {
  restore_state();
  {
    std::shared_lock lock(state_mu_);
    try {
      write();
      return;
    } catch (const Error&) {
      if (state_intact()) throw;
    }
  }
  restore_state();
  std::shared_lock lock(state_mu_);
  write();
}

void OutputDir::close_all() {
  for (int* fd : {&done_fd_, &cache_fd_, &state_fd_, &dir_fd_}) {
    if (*fd >= 0) ::close(*fd);  // closing the descriptors releases the flocks
    *fd = -1;
  }
}

OutputDir::~OutputDir() { close_all(); }

struct stat OutputDir::folder_stat() const {
  struct stat st {};
  if (::fstat(dir_fd_, &st) != 0) fail(path_ + ": cannot stat the output directory", errno);
  return st;
}

size_t OutputDir::remove_stale_temp_files() const {
  struct stat st {};
  if (::fstat(dir_fd_, &st) != 0) return 0;
  return clean_temp_files(dir_fd_, 0, st.st_dev);
}

OutputDir::CacheEntry OutputDir::cache_get(const std::string& key) const {
  CacheEntry e;
  std::optional<std::string> z;
  {
    std::shared_lock lock(state_mu_);
    z = read_at(cache_fd_, key + ".zst", kMaxCacheBytes);
  }
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
  with_state([&] { write_atomic_at(cache_fd_, key + ".zst", z, path_ + "/.abridge/cache/" + key + ".zst", 0600); });
}

mode_t summary_mode(mode_t input_mode, mode_t reach) {
  return 0600 | (input_mode & (((reach & 0010) ? 0040 : 0) | ((reach & 0001) ? 0004 : 0)));
}

bool OutputDir::up_to_date(const std::string& rel, const std::string& job_key, mode_t mode) const {
  try {
    std::optional<std::string> record;
    {
      std::shared_lock lock(state_mu_);
      record = read_at(done_fd_, done_name(rel), kMaxRecordBytes);
    }
    if (!record) return false;
    const json j = engine::parse_json_bounded(*record, 4);  // {"key": ..., "output_sha256": ...}
    if (!j.is_object() || j.value("key", "") != job_key) return false;
    const std::vector<std::string> parts = components(rel);
    Fd dir(::dup(dir_fd_));
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      Fd next(::openat(dir.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (next.get() < 0) return false;
      dir = std::move(next);
    }
    const Fd file(::openat(dir.get(), parts.back().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!file.ok()) return false;
    const std::string output = read_regular_fd(file.get(), kMaxOutputBytes);  // a regular file
    if (j.value("output_sha256", "") != sha256_hex(output)) return false;
    struct stat st {};
    if (::fstat(file.get(), &st) == 0 && (st.st_mode & 07777 & ~mode) != 0) ::fchmod(file.get(), st.st_mode & mode & 07777);
    return true;
  } catch (const std::exception&) {
    return false;  // a damaged record or an odd path: summarize again
  }
}

void OutputDir::write_output(const std::string& rel, std::string_view body, const std::string& job_key,
                             const std::string& source, mode_t mode, const std::vector<mode_t>& folder_modes) const {
  const std::vector<std::string> parts = components(rel);
  const json record = {{"key", job_key}, {"source", source}, {"output", rel}, {"output_sha256", sha256_hex(body)}};
  with_state([&] {
    write_atomic_at(done_fd_, done_name(rel), record.dump(-1, ' ', false, json::error_handler_t::replace) + "\n",
                    path_ + "/.abridge/done", 0600);
  });
  Fd dir(::dup(dir_fd_));
  std::string shown = path_;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    shown += "/" + parts[i];
    dir = Fd(open_dir_at(dir.get(), parts[i], true, shown, i < folder_modes.size() ? 0700 | (folder_modes[i] & 0055) : 0755));
  }
  write_atomic_at(dir.get(), parts.back(), body, path_ + "/" + rel, mode & 0666);
}

}  // namespace abridge::pipeline
