// Which files a run summarizes and where each summary goes: files, directories (--recursive,
// --include/--exclude), "-" (paths on standard input), --shard. Shared by `summarize` and `watch`.
//
// The rules (docs/OPERATIONS.md, "What is read"):
//  - An output is named by the path as given, relative to its input root (a file named itself: its
//    file name), never by where a link points: OUT_DIR/<rel>.summary.<format>.
//  - In a directory, a symbolic link to a file is followed only while it stays inside that directory
//    (checked again when the file is opened, with openat2's RESOLVE_BENEATH); a link that leaves it is a
//    failed input. Links to folders are not descended. A file named on the command line or on standard
//    input is read wherever it points: the user named it.
//  - Hidden folders, OUT_DIR and any folder that holds a `.abridge` state folder (another run's
//    OUT_DIR) are not entered: abridge's outputs are never its inputs. Such a folder named at the top is
//    skipped with a line saying so (DiscoveredInputs::skipped), at any level below silently.
//  - Every problem with one path (a link loop, a broken link, an unreadable folder, a FIFO or device
//    named .txt, a path longer than PATH_MAX, a tree deeper than kMaxFolderDepth, two inputs that would
//    write one output) is one failed input with its reason; discovery itself never throws for a path.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

namespace abridge::pipeline {

struct SummarizeOptions;

// The list of paths read from standard input ("-") is at most this long.
inline constexpr size_t kMaxStdinListBytes = size_t{64} << 20;

// Folders below an input directory that discovery enters at most (each level holds a descriptor).
inline constexpr int kMaxFolderDepth = 128;

// One input and where its summary goes.
struct SummaryInput {
  std::string path;                // as the user named it, or <root>/<rel> as found under a directory
  std::string rel;                 // relative to its input root: names the output
  std::string root;                // the input directory it was found in; "" for a file named itself
  std::filesystem::path output;    // OUT_DIR/<output_rel>, for messages
  std::string output_rel;          // <rel>.summary.<format>, relative to OUT_DIR
  int64_t bytes = 0;               // its size when found (orders the work: smaller documents first)
  dev_t device = 0;                // the file's identity when found: the same file reached twice is
  ino_t inode = 0;                 // summarized once
  // Who may read it, which its summary's permissions mirror (output_dir.h, summary_mode()):
  mode_t mode = 0644;              // its permission bits when found (refreshed from the open file when read)
  mode_t reach = 0011;             // group (0010) and others (0001): set when they can search every folder
                                   // from / down to the file's folder
  // rel's folders, outermost first: each one's group and other read and search bits (& 0055), only those
  // that can reach it.
  std::vector<mode_t> folder_modes{};
};

// A path that is not summarized, and why (one line, without the path).
struct BadInput {
  std::string path;  // as named or found
  std::string rel;   // as SummaryInput::rel (the shard key)
  std::string reason;
};

struct DiscoveredInputs {
  std::vector<SummaryInput> inputs;  // in the order named; sorted by name within each directory
  std::vector<BadInput> bad;         // missing, unsupported type, special files, links, collisions, ...
  // Named on purpose but left out, not failures: a directory named at the top that is another run's
  // OUT_DIR (it holds `.abridge`); `reason` starts with "skipped: ".
  std::vector<BadInput> skipped;
};

// Files, directories (--recursive, --include/--exclude) and "-" (paths on `in`, one a line). When
// options.out_dir exists, it and everything inside it are left out. Two inputs that would write one
// output: the same file (reached twice) is taken once; a different file is a BadInput naming the first.
// Never throws for a path; throws abridge::Error when the list on standard input is longer than
// kMaxStdinListBytes.
DiscoveredInputs discover_inputs(const SummarizeOptions& options, std::istream& in);

// Opens an input for reading (O_RDONLY | O_NONBLOCK: a FIFO is never waited on; the caller checks that
// it is a regular file on the descriptor). A file found under a directory is opened relative to that
// directory with every link on the way kept inside it (openat2 RESOLVE_BENEATH; where the kernel lacks
// it, the opened file's own path is checked), so a file swapped for a link to /etc/shadow or /dev/zero
// after discovery is refused. Returns the descriptor; throws abridge::Error with the reason alone.
int open_input(const SummaryInput& input);

// Parses "K/N" (0 <= K < N); throws abridge::Error otherwise.
std::pair<int64_t, int64_t> parse_shard(const std::string& spec);
// The shard (of n) a document belongs to: a hash of its path relative to its input root, the same on
// every machine, so N independent runs over a shared file system cover every input exactly once.
int64_t shard_of(const std::string& rel, int64_t n);
// Keeps the inputs (and bad paths) of shard `spec` ("K/N"); no-op for an empty spec.
void keep_shard(DiscoveredInputs& found, const std::string& spec);

}  // namespace abridge::pipeline
