// --report FILE: where a run's report goes (a regular file replaced atomically, a FIFO, a terminal, an
// inherited descriptor). The atomic, no-follow write itself is base/file.h's, which OUT_DIR's files
// (output_dir.h), the report and the checkpoints abridge writes all go through.
#pragma once

#include <sys/stat.h>

#include <iosfwd>
#include <string>
#include <string_view>

#include "base/fd.h"
#include "base/file.h"

namespace abridge::pipeline {

// --report FILE: checked and opened before the run's work, written at its end, so that a report that
// cannot be written stops the run before it starts (exit 2), not after hours of work.
//  - "-" writes to `out` (standard output).
//  - /dev/stdout, /dev/stderr, /dev/fd/N and /proc/self/fd/N write to that descriptor of this process,
//    as it is (a pipe, a terminal, the journal's socket, a log file opened by the shell's `>>`): at its
//    offset, appended when it is O_APPEND, never truncated or replaced. It must be open for writing.
//  - Any other path is walked with walk_path(): a link in its folder part is followed only when it
//    belongs to root or to the user running abridge, and none at all once inside `out_dir` (OUT_DIR's
//    own rule; null when there is no OUT_DIR). Then, at the last component:
//    - nothing there or a regular file: replaced atomically at the end (write_atomic_at() in the folder
//      opened now). A new report is made 0600 (before the umask: it names every document, private
//      ones too); one that replaces a regular file keeps that file's permission bits (& 0666).
//    - a FIFO or a character device (a terminal, /dev/null): opened now (O_NONBLOCK: a FIFO that nobody
//      reads is refused at once, "nobody reads the FIFO") and written through at the end.
//    - a symbolic link: followed only to a FIFO or a character device, and only under the owner rule.
//    - anything else (a folder, a block device, a socket, a link to a regular file or folder) is refused.
// Throws abridge::Error naming the path and what it is.
class ReportFile {
 public:
  explicit ReportFile(const std::string& path, const struct stat* out_dir = nullptr);

  // Writes the report. A reader of a FIFO that has gone away is an error, not a SIGPIPE. Throws
  // abridge::Error.
  void write(std::string_view bytes, std::ostream& out);

 private:
  enum class Kind { kStdout, kReplace, kDescriptor };
  std::string path_;
  Kind kind_ = Kind::kReplace;
  Fd dir_;                 // kReplace: the folder it goes in
  std::string name_;       // kReplace: its name there
  mode_t mode_ = 0600;     // kReplace: its permission bits
  Fd fd_;                  // kDescriptor: open for writing
  bool stdout_fd_ = false; // kDescriptor: it is standard output (`out` is flushed first)
};

// ReportFile(path).write(bytes, out), for callers that have nothing to do in between.
void write_report_file(const std::string& path, std::string_view bytes, std::ostream& out);

}  // namespace abridge::pipeline
