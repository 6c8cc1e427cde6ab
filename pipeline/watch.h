// `abridge watch`: keeps running and summarizes each new or changed document under one or more
// directories, with one engine loaded for the life of the process.
//
// What makes a file "new or changed" is decided from three sources, none trusted alone:
//  - Poco::DirectoryWatcher events (inotify on Linux): fast, but they say nothing about when a writer
//    is done, and a burst can be lost (the kernel queue overflows, a subdirectory is created before
//    its watch is);
//  - a full rescan at start and every --rescan seconds, which finds whatever the events missed;
//  - the state under OUT_DIR/.abridge/ (the Summarizer's up-to-date check), which makes each content
//    version be summarized once, across restarts too.
// A file is taken once its size, mtime and inode have stayed the same for --settle seconds, or at
// once when it was renamed into place (the usual way to publish a finished file).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

#include "pipeline/summarize.h"

namespace abridge::pipeline {

struct WatchOptions {
  SummarizeOptions summarize;  // `inputs` are the watched directories; discovery is always recursive
  double settle = 2;           // seconds a file must stay unchanged before it is taken
  double rescan = 60;          // seconds between full rescans of the tree
  bool once = false;           // scan, summarize what is there (no settling), exit like `summarize`
  bool inotify = true;         // false: the rescan alone finds changes (NFS and other remote file systems)
};

// What stat() says about a file; a different value is a different version.
struct FileVersion {
  int64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t inode = 0;  // a file renamed over another is new even with the same size and mtime
  bool operator==(const FileVersion&) const = default;
};

// The settle rule, kept apart from the file system and the clock so that it can be tested alone.
// Times are seconds on a steady clock. A file is ready when two observations at least `settle`
// seconds apart saw the same non-empty version (or when it was renamed into place), and that version
// has not been taken yet; each version is taken once.
class SettleTracker {
 public:
  explicit SettleTracker(double settle) : settle_(settle) {}
  // Records what a stat() of `path` returned at `now`. `moved_in`: the file was just renamed into place.
  void observe(const std::string& path, const FileVersion& v, double now, bool moved_in = false);
  // The file is gone; returns whether it was tracked and whether some version of it had been taken.
  struct Forgotten {
    bool tracked = false, was_taken = false;
  };
  Forgotten forget(const std::string& path);
  bool tracked(const std::string& path) const { return files_.count(path) != 0; }
  // Files whose settle window has run out without a second look: stat() each and observe() it again.
  std::vector<std::string> due(double now) const;
  // The ready files (sorted by path), marked taken at the version they are ready at.
  std::vector<std::string> take_ready();
  // The earliest time a pending file falls due; +infinity when nothing waits.
  double next_due() const;
  size_t pending() const;  // files whose current version has not been taken

 private:
  struct File {
    FileVersion seen;             // the latest observation
    double since = 0;             // when `seen` was first observed
    double last = 0;              // when `seen` was last observed
    bool moved_in = false;        // `seen` arrived by a rename: no settling needed
    bool taken_any = false;       // some version was handed out
    FileVersion taken;            // the version handed out last (when taken_any)
    bool waiting() const { return !taken_any || !(seen == taken); }
  };
  double settle_;
  std::map<std::string, File> files_;
};

// Runs until SIGINT, SIGTERM or SIGHUP (exit 0; the batch in progress is finished first, so nothing is left
// half done) or, with `once`, after one pass (0 all summarized or up to date, 1 some failed). 2 for
// usage and fatal errors (a missing directory, bad options, an unusable model), 3 when another run
// holds OUT_DIR. Log lines on `err` start with an ISO 8601 UTC timestamp.
int run_watch(const WatchOptions& options, std::ostream& err);

// Writes "STAMP abridge watch: MESSAGE\n" to `err`, STAMP the ISO 8601 UTC time that starts every log
// line of watch: for errors found before run_watch (options the command line or --config got wrong).
void write_watch_line(std::ostream& err, const std::string& message);

}  // namespace abridge::pipeline
