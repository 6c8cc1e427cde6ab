// Writing files so that a crash never leaves a half-written one and a planted link is never written
// through: a fresh unpredictable temporary name in the same folder (O_CREAT | O_EXCL | O_NOFOLLOW), fsync,
// rename over the final name, fsync of the folder. OUT_DIR's files (output_dir.h), --report and the
// files of `model make-random` all go through here.
#pragma once

#include <iosfwd>
#include <string>
#include <string_view>

namespace abridge::pipeline {

// Temporary files are ".abridge-tmp-" and 12 random lowercase hex digits: a name no user file has, so
// that a clean-up can delete exactly what abridge made.
inline constexpr std::string_view kTempPrefix = ".abridge-tmp-";
inline constexpr size_t kTempDigits = 12;
bool is_temp_name(std::string_view name);

// Writes `bytes` to `name` in the folder `dirfd`: a fresh temporary name, fsync, rename over `name` (a
// link or a file there is replaced, not followed), fsync of the folder. `shown` names it in errors.
// Throws abridge::Error ("SHOWN: what: reason"); the temporary file is removed then.
void write_atomic_at(int dirfd, const std::string& name, std::string_view bytes, const std::string& shown);

// The same for a path: its folder is opened as the path says (links in it are the caller's choice),
// the file itself is replaced.
void write_file_atomic(const std::string& path, std::string_view bytes);

// --report FILE. "-" writes to `out` (standard output). A path that does not exist or is a regular file
// is replaced atomically (write_file_atomic). A FIFO or a character device (a terminal, /dev/null) is
// written through, never replaced. A symbolic link is followed to a FIFO or a character device only when
// the link belongs to root or to the user abridge runs as (the rule of Linux's fs.protected_symlinks:
// /dev/stdout is root's; a link someone else planted in a shared folder is not followed). Anything else
// (a folder, a block device, a socket, a link to a regular file, another user's link) is refused:
// abridge::Error naming the path and what it is.
void write_report_file(const std::string& path, std::string_view bytes, std::ostream& out);
// The same checks without writing, so that a run refuses a bad --report before its work, not after.
void check_report_file(const std::string& path);

}  // namespace abridge::pipeline
