#include "pipeline/watch.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <Poco/Delegate.h>
#include <Poco/DirectoryWatcher.h>
#include <Poco/Exception.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>

#include "base/error.h"
#include "pipeline/commands.h"
#include "pipeline/memory.h"
#include "pipeline/output_dir.h"
#include "pipeline/run_report.h"
#include "pipeline/shared_options.h"

namespace abridge::pipeline {

// ---- the settle rule -------------------------------------------------------------------------

void SettleTracker::observe(const std::string& path, const FileVersion& v, double now, bool moved_in) {
  auto [it, fresh] = files_.try_emplace(path);
  File& f = it->second;
  if (fresh || !(f.seen == v)) {
    f.seen = v;
    f.since = now;
    f.moved_in = moved_in;
  } else {
    f.moved_in = f.moved_in || moved_in;
  }
  f.last = now;
}

SettleTracker::Forgotten SettleTracker::forget(const std::string& path) {
  const auto it = files_.find(path);
  if (it == files_.end()) return {};
  const Forgotten f{true, it->second.taken_any};
  files_.erase(it);
  return f;
}

std::vector<std::string> SettleTracker::due(double now) const {
  std::vector<std::string> out;
  for (const auto& [path, f] : files_)
    if (f.waiting() && !f.moved_in && f.last - f.since < settle_ && f.since + settle_ <= now) out.push_back(path);
  return out;
}

std::vector<std::string> SettleTracker::take_ready() {
  std::vector<std::string> out;
  for (auto& [path, f] : files_) {
    // An empty file is usually one being created: it waits for its content (or forever).
    if (!f.waiting() || f.seen.size <= 0 || !(f.moved_in || f.last - f.since >= settle_)) continue;
    f.taken_any = true;
    f.taken = f.seen;
    out.push_back(path);
  }
  return out;
}

double SettleTracker::next_due() const {
  double t = std::numeric_limits<double>::infinity();
  for (const auto& [path, f] : files_)
    if (f.waiting() && f.seen.size > 0) t = std::min(t, f.moved_in ? f.last : f.since + settle_);
  return t;
}

size_t SettleTracker::pending() const {
  return static_cast<size_t>(std::count_if(files_.begin(), files_.end(), [](const auto& e) { return e.second.waiting(); }));
}

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxWatchedDirs = 64;     // each Poco watcher is one inotify instance (128 per user by default)
constexpr size_t kMaxQueuedEvents = 65536; // beyond this, events are dropped and a rescan is asked for
constexpr double kScanGap = 0.25;          // seconds between scans that events ask for (a burst makes few)
constexpr double kNewWatchScanDelay = 0.5; // a new watcher's inotify watch starts a moment after it: look again

// ---- log lines -------------------------------------------------------------------------------

// Prefixes every line written through it with an ISO 8601 UTC timestamp, millisecond precision
// ("2026-11-22T01:14:44.123Z "). Only the loop's thread writes to it.
class StampedBuf : public std::streambuf {
 public:
  explicit StampedBuf(std::streambuf* dest) : dest_(dest) {}

 protected:
  int_type overflow(int_type c) override {
    if (traits_type::eq_int_type(c, traits_type::eof())) return sync() == 0 ? traits_type::not_eof(c) : c;
    if (at_line_start_) {
      const std::string stamp = now_stamp();
      dest_->sputn(stamp.data(), static_cast<std::streamsize>(stamp.size()));
      at_line_start_ = false;
    }
    if (traits_type::eq_int_type(dest_->sputc(traits_type::to_char_type(c)), traits_type::eof()))
      return traits_type::eof();
    if (traits_type::to_char_type(c) == '\n') {
      at_line_start_ = true;
      dest_->pubsync();  // whole lines reach the journal as they are written
    }
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    for (std::streamsize i = 0; i < n; ++i)
      if (traits_type::eq_int_type(overflow(traits_type::to_int_type(s[i])), traits_type::eof())) return i;
    return n;
  }
  int sync() override { return dest_->pubsync(); }

 private:
  static std::string now_stamp() {
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[40];
    const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(buf + n, sizeof buf - n, ".%03dZ ", static_cast<int>(ms));
    return buf;
  }
  std::streambuf* dest_;
  bool at_line_start_ = true;
};

// ---- signals ---------------------------------------------------------------------------------

// Set by the handler, read by the loop: the handler does nothing else. A second signal gets the
// default action (SA_RESETHAND), so a stuck stop can still be forced.
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_stop_signal(int sig) { g_stop_signal.store(sig, std::memory_order_relaxed); }

class StopSignals {
 public:
  StopSignals() {
    g_stop_signal.store(0);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
    // SIGHUP (the terminal closed, or `systemctl kill -s HUP`) stops like SIGTERM, with its log line,
    // instead of the default: dying without one.
    ::sigaction(SIGHUP, &sa, &old_hup_);
  }
  ~StopSignals() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
    ::sigaction(SIGHUP, &old_hup_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  static bool requested() { return g_stop_signal.load(std::memory_order_relaxed) != 0; }
  static const char* name() {
    const int sig = g_stop_signal.load();
    return sig == SIGINT ? "SIGINT" : sig == SIGHUP ? "SIGHUP" : "SIGTERM";
  }

 private:
  struct sigaction old_int_ {}, old_term_ {}, old_hup_ {};
};

// ---- events from Poco ------------------------------------------------------------------------

enum class EventKind { kAdded, kRemoved, kModified, kMovedFrom, kMovedTo };
struct Event {
  EventKind kind;
  std::string path;
};

// Receives Poco::DirectoryWatcher events on the watchers' threads and queues them for the loop.
// Bounded: an overflow drops events and asks for a rescan, like the kernel's own queue.
class EventQueue {
 public:
  void on_added(const void*, const Poco::DirectoryWatcher::DirectoryEvent& e) { push(EventKind::kAdded, e); }
  void on_removed(const void*, const Poco::DirectoryWatcher::DirectoryEvent& e) { push(EventKind::kRemoved, e); }
  void on_modified(const void*, const Poco::DirectoryWatcher::DirectoryEvent& e) { push(EventKind::kModified, e); }
  void on_moved_from(const void*, const Poco::DirectoryWatcher::DirectoryEvent& e) { push(EventKind::kMovedFrom, e); }
  void on_moved_to(const void*, const Poco::DirectoryWatcher::DirectoryEvent& e) { push(EventKind::kMovedTo, e); }
  void on_error(const void*, const Poco::Exception& e) {
    std::lock_guard lock(mutex_);
    if (errors_.size() < 16) errors_.push_back(e.displayText());
    overflowed_ = true;  // a watch may be missing: let the rescan look
  }

  // Waits until an event arrives or `seconds` pass.
  void wait(double seconds) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, std::chrono::duration<double>(std::max(0.0, seconds)),
                 [&] { return !events_.empty() || overflowed_; });
  }
  // Takes what has arrived; `overflowed` is true when some events were dropped.
  void drain(std::vector<Event>& events, bool& overflowed, std::vector<std::string>& errors) {
    std::lock_guard lock(mutex_);
    events.swap(events_);
    events_.clear();
    overflowed = overflowed_;
    overflowed_ = false;
    errors.swap(errors_);
    errors_.clear();
  }

 private:
  void push(EventKind kind, const Poco::DirectoryWatcher::DirectoryEvent& e) {
    std::string path = fs::path(e.item.path()).lexically_normal().string();
    std::lock_guard lock(mutex_);
    if (events_.size() >= kMaxQueuedEvents) {
      overflowed_ = true;
      return;
    }
    const bool was_empty = events_.empty();
    events_.push_back({kind, std::move(path)});
    if (was_empty) cv_.notify_one();
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Event> events_;        // guarded by mutex_
  bool overflowed_ = false;          // guarded by mutex_
  std::vector<std::string> errors_;  // guarded by mutex_
};

// One Poco watcher per directory (Poco watches one directory, not a tree).
struct WatchedDir {
  std::unique_ptr<Poco::DirectoryWatcher> watcher;
  dev_t dev = 0;
  ino_t ino = 0;  // a directory removed and made again under the same name needs a new watch
};

// Each watcher's destructor joins its thread, which polls every 200 ms: stop them all at once.
void destroy_watchers(std::vector<std::unique_ptr<Poco::DirectoryWatcher>> watchers) {
  std::vector<std::thread> threads;
  threads.reserve(watchers.size());
  for (auto& w : watchers) {
    try {
      threads.emplace_back([p = std::move(w)]() mutable { p.reset(); });
    } catch (const std::system_error&) {
      w.reset();  // no thread to spare (a task limit): stopped here, one at a time
    }
  }
  for (auto& t : threads) t.join();
}

std::optional<FileVersion> stat_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return FileVersion{static_cast<int64_t>(st.st_size),
                     static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                     static_cast<uint64_t>(st.st_ino)};
}

bool under(const std::string& path, const std::string& dir) {
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/');
}

// ---- the watch -------------------------------------------------------------------------------

struct Root {
  std::string path;     // absolute, normalized, no trailing slash
  std::string out_rel;  // OUT_DIR relative to this root when it lies inside it; empty otherwise
};

class Watch {
 public:
  Watch(const WatchOptions& o, std::vector<Root> roots, Session& session, std::ostream& log)
      : o_(o), roots_(std::move(roots)), session_(session), log_(log), tracker_(o.settle) {
    if (!o.summarize.shard.empty()) shard_ = parse_shard(o.summarize.shard);
  }
  ~Watch() {
    std::vector<std::unique_ptr<Poco::DirectoryWatcher>> ws;
    for (auto& [dir, w] : watched_) ws.push_back(std::move(w.watcher));
    destroy_watchers(std::move(ws));  // before events_, which their delegates point at
  }
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

  int once();
  int forever();

 private:
  double now() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }
  // Every input under the roots; the paths that cannot be taken are logged (once while they stay so)
  // and, when `failed` is given, returned there.
  std::vector<SummaryInput> discover_all(std::vector<BadInput>* failed = nullptr);
  void scan(double now);
  void update_watchers();
  void handle_events(double now);
  void look_at(const std::string& path, double now, bool moved_in);
  void gone(const std::string& path);
  // Hands `paths` to the session, which starts them while earlier ones are still in the engine.
  void summarize(const std::vector<std::string>& paths);
  // Once the session has finished everything it was given: one line for what it did.
  void report_when_idle();
  bool quiet() const { return o_.summarize.quiet; }

  const WatchOptions& o_;
  std::vector<Root> roots_;
  Session& session_;
  std::ostream& log_;
  bool unreported_ = false;  // documents were handed to the session since its last report line
  Clock::time_point t0_ = Clock::now();
  std::optional<std::pair<int64_t, int64_t>> shard_;

  SettleTracker tracker_;
  std::map<std::string, SummaryInput> inputs_;  // every tracked file: where its summary goes
  std::set<std::string> moved_in_;              // renamed-into-place paths (files or directories) the next scan marks
  std::set<std::string> logged_;                // one-time messages already written
  std::set<std::string> bad_logged_;            // path + '\0' + reason of the failures logged, as of the last scan
  bool need_scan_ = true, need_dirs_ = true;
  double last_scan_ = -1e9, extra_scan_at_ = std::numeric_limits<double>::infinity();

  EventQueue events_;                       // declared before watched_: outlives the watchers
  std::map<std::string, WatchedDir> watched_;
};

std::vector<SummaryInput> Watch::discover_all(std::vector<BadInput>* failed) {
  std::vector<SummaryInput> all;
  SummarizeOptions so = o_.summarize;
  so.inputs.clear();
  so.recursive = true;
  for (const Root& r : roots_) {
    const std::string missing_key = "missing:" + r.path;
    struct stat st {};
    if (::stat(r.path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      if (logged_.insert(missing_key).second)
        log_ << "abridge watch: " << shown_path(r.path) << ": "
             << (::stat(r.path.c_str(), &st) != 0 ? "no such directory" : "not a directory")
             << "; watching for it to return\n";
      continue;
    }
    if (logged_.erase(missing_key)) log_ << "abridge watch: " << shown_path(r.path) << ": back\n";
    so.inputs.push_back(r.path);
  }
  if (so.inputs.empty()) return all;
  std::istringstream no_stdin;
  // All roots in one discovery: two files that would write one output are found across roots too.
  DiscoveredInputs found = discover_inputs(so, no_stdin);
  if (shard_) keep_shard(found, o_.summarize.shard);
  // Each path that cannot be taken is logged once while it stays so (and again after it was fixed and
  // broke again); the watch goes on.
  std::set<std::string> bad_now;
  for (const std::vector<BadInput>* list : {&found.bad, &found.skipped})  // a skipped root: said once the same way
    for (const BadInput& b : *list) {
      const std::string key = b.path + '\0' + b.reason;
      bad_now.insert(key);
      if (!bad_logged_.count(key)) log_ << "abridge: " << shown_path(b.path) << ": " << shown_path(b.reason) << "\n";
    }
  bad_logged_ = std::move(bad_now);
  if (failed) *failed = found.bad;
  std::set<std::string> paths;
  for (SummaryInput& i : found.inputs) {
    bool ours = false;
    for (const Root& r : roots_) ours = ours || (!r.out_rel.empty() && i.root == r.path && under(i.rel, r.out_rel));
    if (ours) continue;                          // our own outputs (discovery leaves OUT_DIR out already)
    if (!paths.insert(i.path).second) continue;  // nested roots: the first one names it
    all.push_back(std::move(i));
  }
  return all;
}

// The directories to watch: every root and its subfolders, without hidden ones and OUT_DIR, shallow
// ones first (they get watchers first when there are more than kMaxWatchedDirs).
void Watch::update_watchers() {
  std::vector<std::pair<size_t, std::string>> dirs;  // (depth, path)
  for (const Root& r : roots_) {
    std::error_code ec;
    if (!fs::is_directory(r.path, ec)) continue;
    dirs.emplace_back(0, r.path);
    for (auto it = fs::recursive_directory_iterator(r.path, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      std::error_code dec;
      if (it->is_symlink(dec) || !it->is_directory(dec)) continue;
      const std::string rel = it->path().lexically_relative(r.path).generic_string();
      if (it->path().filename().string().rfind('.', 0) == 0 || (!r.out_rel.empty() && rel == r.out_rel)) {
        it.disable_recursion_pending();
        continue;
      }
      dirs.emplace_back(static_cast<size_t>(it.depth()) + 1, it->path().string());
    }
  }
  std::stable_sort(dirs.begin(), dirs.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::map<std::string, std::pair<dev_t, ino_t>> wanted;
  for (const auto& [depth, path] : dirs) {
    if (wanted.size() >= kMaxWatchedDirs) {
      if (logged_.insert("too-many-dirs").second)
        log_ << "abridge watch: more than " << kMaxWatchedDirs << " directories; changes in the deeper ones are "
             << "found by the rescan every " << o_.rescan << "s\n";
      break;
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) wanted.emplace(path, std::make_pair(st.st_dev, st.st_ino));
  }

  std::vector<std::unique_ptr<Poco::DirectoryWatcher>> stale;
  for (auto it = watched_.begin(); it != watched_.end();) {
    const auto w = wanted.find(it->first);
    if (w == wanted.end() || w->second != std::make_pair(it->second.dev, it->second.ino)) {
      stale.push_back(std::move(it->second.watcher));
      it = watched_.erase(it);
    } else {
      ++it;
    }
  }
  destroy_watchers(std::move(stale));

  bool added = false;
  for (const auto& [path, id] : wanted) {
    if (watched_.count(path)) continue;
    try {
      auto w = std::make_unique<Poco::DirectoryWatcher>(path);
      w->itemAdded += Poco::delegate(&events_, &EventQueue::on_added);
      w->itemRemoved += Poco::delegate(&events_, &EventQueue::on_removed);
      w->itemModified += Poco::delegate(&events_, &EventQueue::on_modified);
      w->itemMovedFrom += Poco::delegate(&events_, &EventQueue::on_moved_from);
      w->itemMovedTo += Poco::delegate(&events_, &EventQueue::on_moved_to);
      w->scanError += Poco::delegate(&events_, &EventQueue::on_error);
      watched_[path] = {std::move(w), id.first, id.second};
      added = true;
      logged_.erase("nowatch:" + path);
    } catch (const Poco::Exception& e) {
      if (logged_.insert("nowatch:" + path).second)
        log_ << "abridge watch: " << shown_path(path) << ": no change events (" << shown_path(e.displayText()) << "); the rescan every "
             << o_.rescan << "s finds its changes\n";
    }
  }
  // A new watcher's thread adds its inotify watch a moment later; what changed in between is found
  // by one more scan.
  if (added) extra_scan_at_ = now() + kNewWatchScanDelay;
}

void Watch::gone(const std::string& path) {
  const SettleTracker::Forgotten f = tracker_.forget(path);
  const auto it = inputs_.find(path);
  if (!f.tracked || it == inputs_.end()) return;
  std::error_code ec;
  if (!quiet()) {
    if (f.was_taken && fs::exists(it->second.output, ec))
      log_ << "abridge watch: " << shown_path(path) << ": deleted; its summary " << shown_path(it->second.output.string())
           << " is kept\n";
    else
      log_ << "abridge watch: " << shown_path(path) << ": deleted before it was summarized\n";
  }
  inputs_.erase(it);
}

// Looks at one tracked file again (an event named it).
void Watch::look_at(const std::string& path, double now, bool moved_in) {
  // A link now (a file swapped for one): whether it is followed is discovery's rule (inside the tree
  // only), and a link that breaks it is logged there, once; the next scan decides, not stat().
  struct stat lst {};
  if (::lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode)) {
    if (moved_in) moved_in_.insert(path);
    need_scan_ = true;
    return;
  }
  if (const auto v = stat_file(path)) tracker_.observe(path, *v, now, moved_in);
  else gone(path);
}

void Watch::scan(double now) {
  std::vector<BadInput> bad;
  const std::vector<SummaryInput> found = discover_all(&bad);
  // A tracked file that has become a bad path (swapped for a link out of the tree, ...) was just logged
  // as one: it is no longer an input, and is not summarized to fail a second time.
  for (const BadInput& b : bad)
    if (tracker_.forget(b.path).tracked) inputs_.erase(b.path);
  std::set<std::string> present;
  for (const SummaryInput& i : found) {
    present.insert(i.path);
    const auto v = stat_file(i.path);
    if (!v) continue;  // gone since the directory was read
    bool moved = false;
    for (const std::string& m : moved_in_) moved = moved || under(i.path, m);
    tracker_.observe(i.path, *v, now, moved);
    inputs_.insert_or_assign(i.path, i);
  }
  moved_in_.clear();
  std::vector<std::string> vanished;
  for (const auto& [path, input] : inputs_)
    if (!present.count(path) && !stat_file(path)) vanished.push_back(path);
  for (const std::string& p : vanished) gone(p);
  last_scan_ = now;
  need_scan_ = false;
}

void Watch::handle_events(double now) {
  std::vector<Event> events;
  bool overflowed = false;
  std::vector<std::string> errors;
  events_.drain(events, overflowed, errors);
  for (const std::string& e : errors)
    if (logged_.insert("error:" + e).second) log_ << "abridge watch: change events: " << shown_path(e) << "\n";
  if (overflowed) need_scan_ = need_dirs_ = true;
  for (const Event& e : events) {
    const bool moved_in = e.kind == EventKind::kMovedTo;
    if (tracker_.tracked(e.path)) {
      look_at(e.path, now, moved_in);
      continue;
    }
    // Not a file we know: a new file, a directory, or something discovery does not take.
    if (moved_in) moved_in_.insert(e.path);
    need_scan_ = true;
    std::error_code ec;
    if (watched_.count(e.path) || fs::is_directory(e.path, ec)) need_dirs_ = true;
  }
}

void Watch::summarize(const std::vector<std::string>& paths) {
  std::vector<SummaryInput> batch;
  for (const std::string& p : paths) {
    const auto it = inputs_.find(p);
    if (it != inputs_.end()) batch.push_back(it->second);
  }
  if (batch.empty()) return;
  session_.add(std::move(batch));
  unreported_ = true;
}

void Watch::report_when_idle() {
  if (!unreported_ || !session_.idle()) return;
  unreported_ = false;
  const BatchReport r = session_.take_report();
  if (!quiet() || r.failed > 0) log_ << final_line(r) << '\n';
}

int Watch::once() {
  const auto t_start = Clock::now();
  std::vector<BadInput> failed;
  std::vector<SummaryInput> all = discover_all(&failed);
  session_.add(std::move(all));
  BatchReport total = session_.wait();
  total.failed += static_cast<int>(failed.size());
  total.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  log_ << final_line(total) << '\n';
  return total.failed > 0 ? kExitInputsFailed : kExitOk;
}

int Watch::forever() {
  double last_full = -1e9;
  std::ostringstream dirs;
  for (size_t k = 0; k < roots_.size(); ++k) dirs << (k ? ", " : "") << shown_path(roots_[k].path);
  log_ << "abridge watch: watching " << dirs.str() << "; summaries in " << shown_path(o_.summarize.out_dir) << " (settle "
       << o_.settle << "s, rescan every " << o_.rescan << "s" << (o_.inotify ? "" : ", no change events") << ")\n";
  bool announced = false;
  while (!StopSignals::requested()) {
    const double t = now();
    if (t - last_full >= o_.rescan) {
      need_scan_ = true;
      need_dirs_ = o_.inotify;
      last_full = t;
    }
    if (t >= extra_scan_at_) {
      need_scan_ = true;
      extra_scan_at_ = std::numeric_limits<double>::infinity();
    }
    handle_events(t);
    if (need_dirs_ && o_.inotify) {
      update_watchers();
      need_dirs_ = false;
    }
    if (need_scan_ && t - last_scan_ >= kScanGap) scan(t);
    if (!announced) {
      announced = true;
      log_ << "abridge watch: " << inputs_.size() << " documents found; " << watched_.size()
           << " directories with change events; waiting for changes\n";
    }
    for (const std::string& p : tracker_.due(t)) look_at(p, t, false);
    const std::vector<std::string> ready = tracker_.take_ready();
    if (!ready.empty()) summarize(ready);
    report_when_idle();
    double wait = 0.1;  // the longest a stop signal waits to be seen
    wait = std::min(wait, tracker_.next_due() - t);
    if (need_scan_) wait = std::min(wait, last_scan_ + kScanGap - t);
    events_.wait(wait);
  }
  // Documents already in the engine are finished; those not started yet wait for the next start (their
  // outputs are not up to date, so the next scan takes them again).
  const size_t left = session_.stop();
  report_when_idle();
  log_ << "abridge watch: " << StopSignals::name() << ": stopped; " << tracker_.pending() + left
       << " changed documents wait for the next start\n";
  return kExitOk;
}

}  // namespace

void write_watch_line(std::ostream& err, const std::string& message) {
  StampedBuf stamped(err.rdbuf());
  std::ostream log(&stamped);
  log << "abridge watch: " << shown_message(message) << '\n' << std::flush;
}

int run_watch(const WatchOptions& options, std::ostream& err) {
  StampedBuf stamped(err.rdbuf());
  std::ostream log(&stamped);
  StopSignals signals;  // first, so that a stop during model loading is seen
  return run_command(log, "abridge watch", [&]() -> int {
    try {
      const SummarizeOptions& so = options.summarize;
      if (so.out_dir.empty()) throw Error("-o OUT_DIR is required");
      if (so.inputs.empty()) throw Error("no DIR given: name one or more directories to watch");
      if (!so.report.empty()) throw Error("--report is not supported by watch (each batch's result is logged)");
      check_range("--settle", options.settle, 0.0, 86400.0);
      check_range("--rescan", options.rescan, 0.1, 86400.0);
      if (!so.shard.empty()) parse_shard(so.shard);
      std::vector<Root> roots;
      for (const std::string& d : so.inputs) {
        std::error_code ec;
        if (d == "-") throw Error("watch takes directories, not - (paths on standard input)");
        if (!fs::exists(d, ec)) throw Error(d + ": no such directory");
        if (!fs::is_directory(d, ec)) throw Error(d + ": not a directory (watch takes directories)");
        std::string p = fs::absolute(d).lexically_normal().string();
        while (p.size() > 1 && p.back() == '/') p.pop_back();
        roots.push_back({p, ""});
      }

      // OUT_DIR (checked before anything is made), its lock, then the engine.
      std::error_code ec;
      const fs::path out_canon = fs::weakly_canonical(fs::absolute(so.out_dir));
      for (Root& r : roots) {
        const fs::path rel = out_canon.lexically_relative(fs::canonical(r.path));
        if (rel == ".") throw Error(r.path + ": OUT_DIR cannot be a watched directory (its summaries would be inputs)");
        if (!rel.empty() && *rel.begin() != "..") r.out_rel = rel.generic_string();
      }
      OutputDir out(so.out_dir, so.wait_lock, log, [] { return StopSignals::requested(); });
      if (!out.held_by_other().empty()) {
        if (StopSignals::requested()) return kExitOk;  // stopped while waiting for the lock
        log << "abridge watch: " << shown_path(so.out_dir) << " is in use by " << out.held_by_other()
            << "; not starting (use --wait-lock to wait for it)\n";
        return kExitLocked;
      }
      out.remove_stale_temp_files();  // left by a run killed mid-write; ours now that we hold the lock
      SummarizeOptions engine_options = so;
      engine_options.recursive = true;
      // The session's threads and this loop both write log lines: whole lines, one at a time.
      std::mutex log_mu;
      SyncedStream engine_log(log, log_mu), watch_log(log, log_mu);
      Summarizer summarizer(engine_options, engine_log);  // loaded once, for the life of the watch
      if (StopSignals::requested()) {
        watch_log << "abridge watch: " << StopSignals::name() << ": stopped before the first scan\n";
        return kExitOk;
      }
      Session session({&summarizer}, out);
      Watch watch(options, std::move(roots), session, watch_log);
      return options.once ? watch.once() : watch.forever();
    } catch (const Error&) {
      throw;  // run_command's line
    } catch (const std::exception& e) {
      // Summarizer::run reports document errors itself; what escapes is the environment (a full disk,
      // a failed device). Exit non-zero so that a service manager restarts the watch, which resumes.
      log << "abridge watch: fatal: " << shown_message(error_text(e)) << '\n';
      return kExitFatal;
    }
  });
}

}  // namespace abridge::pipeline
