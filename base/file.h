// Files, the one way abridge touches them: bounded reads of the files it is told to read (documents,
// model JSON, prompts, option files, stdin) and atomic writes that never follow a planted link. Every
// floor above uses these; the kinds of file and their bounds are the callers' (engine/read_file.h).
//
// Reading. A file is opened once; every check is made on that descriptor, never on the path again (a
// file swapped for a link to /dev/zero after a check is not read). O_NONBLOCK on open, so a FIFO is never
// waited on; only regular files are read, and only up to a size bound the caller gives.
//
// Writing. A fresh unpredictable temporary name in the same folder (O_CREAT | O_EXCL | O_NOFOLLOW),
// fsync, rename over the final name, fsync of the folder: a crash never leaves a half-written file and a
// link planted at either name is never written through.
//
// Not for CUDA code: no header that nvcc reads includes this one.
#pragma once

#include <fcntl.h>
#include <sys/types.h>

#include <cstddef>
#include <iosfwd>
#include <string>
#include <string_view>

#include "base/fd.h"

namespace abridge {

// --- Reading -------------------------------------------------------------------------------------

// Reads the regular file `path` (relative to the directory descriptor `dir_fd` when it is not
// AT_FDCWD), at most `max_bytes` bytes. `no_follow`: a symbolic link as the last component is refused
// (O_NOFOLLOW). Throws abridge::Error with the reason alone, without the path (the caller names it
// once): "no such file", "is a directory", "not a regular file (a FIFO, device or socket is not read)",
// "cannot open: Permission denied", "too large (1.9 MiB; the limit is 1.0 MiB)" (too_large_message).
std::string read_regular_file(const std::string& path, size_t max_bytes, bool no_follow = false,
                              int dir_fd = AT_FDCWD);

// The same checks and read on a descriptor already open for reading (left open). Returns the bytes of
// the file as it is now: if it shrinks while read, what is there; it never reads past `max_bytes`, and
// never more than the size fstat() gave (a file that grows is read to that size).
std::string read_regular_fd(int fd, size_t max_bytes);

// Reads `in` (standard input: a pipe, a terminal, /dev/zero) to its end, at most `max_bytes`: one byte
// more is abridge::Error("too large (more than 64.0 MiB)"), so an endless stream is refused at the bound
// instead of filling memory.
std::string read_stream_bounded(std::istream& in, size_t max_bytes);

// "too large (N MiB; the limit is M MiB)", the one wording for size bounds (format_bytes in
// ByteUnit::kMiB, base/bytes.h; both in bytes when they would read the same).
std::string too_large_message(unsigned long long bytes, size_t max_bytes);

// --- Writing -------------------------------------------------------------------------------------

// Temporary files are ".abridge-tmp-" and 12 random lowercase hex digits: a name no user file has, so
// that a clean-up can delete exactly what abridge made.
inline constexpr std::string_view kTempPrefix = ".abridge-tmp-";
inline constexpr size_t kTempDigits = 12;
bool is_temp_name(std::string_view name);

// Writes all of `bytes` to `fd`, again after EINTR or a short write. Throws abridge::Error
// ("SHOWN: write failed: reason").
void write_all(int fd, std::string_view bytes, const std::string& shown);

// One file written atomically, in pieces (a checkpoint larger than memory streams through it): the
// constructor creates the temporary file in the folder `dirfd` (which must outlive the writer),
// write() appends, commit() flushes, closes, renames it over `name` (a link or a file there is
// replaced, not followed) and flushes the folder. A writer destroyed before commit() (an exception
// on the way) removes its temporary file. `shown` names the file in errors, which are abridge::Error
// ("SHOWN: cannot create a temporary file: reason", "SHOWN: write failed: ...", "SHOWN: cannot flush:
// ...", "SHOWN: cannot rename into place: ..."). `mode`: the file's permission bits (the umask applies).
class AtomicWriter {
 public:
  AtomicWriter(int dirfd, std::string name, std::string shown, mode_t mode = 0644);
  ~AtomicWriter();
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;

  void write(std::string_view bytes);
  void commit();

 private:
  int dirfd_;
  std::string name_, shown_, tmp_;
  Fd fd_;
  bool done_ = false;
};

// Writes `bytes` to `name` in the folder `dirfd` at once (AtomicWriter). Throws as AtomicWriter does.
void write_atomic_at(int dirfd, const std::string& name, std::string_view bytes, const std::string& shown,
                     mode_t mode = 0644);

// The folder part of `path` opened as the path says (links in it are the caller's choice), for
// writing `path`'s last component in it; `name` is set to that component. Throws abridge::Error
// ("PATH: not a file name", "PATH: cannot open its folder: reason").
Fd open_parent_folder(const std::string& path, std::string& name);

// write_atomic_at() for a path: its folder is opened as the path says (open_parent_folder), the file
// itself is replaced.
void write_file_atomic(const std::string& path, std::string_view bytes);

}  // namespace abridge
