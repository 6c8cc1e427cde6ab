// `abridge watch`: the settle rule alone (a fake clock), then the command as a service runs it — a
// child process on real directories, stopped with SIGTERM or SIGKILL — with the extractive engine and
// once with a tiny random-weight model on the CPU.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <Poco/DigestEngine.h>
#include <Poco/SHA2Engine.h>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "pipeline/watch.h"
#include "tests/model_fixture.h"
#include "tests/test_support.h"

using namespace abridge::testing;
using abridge::pipeline::FileVersion;
using abridge::pipeline::SettleTracker;
namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

size_t count(const std::string& s, const std::string& n) {
  size_t c = 0;
  for (size_t p = s.find(n); p != std::string::npos; p = s.find(n, p + n.size())) ++c;
  return c;
}

size_t count_files(const fs::path& dir, const std::string& suffix) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    const std::string p = it->path().string();
    if (it->is_regular_file(ec) && p.size() >= suffix.size() && p.compare(p.size() - suffix.size(), suffix.size(), suffix) == 0)
      ++n;
  }
  return n;
}

size_t count_tmp_files(const fs::path& dir) {
  size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += contains(e.path().filename().string(), ".abridge-tmp-");
  return n;
}

std::string sha256_hex(const std::string& bytes) {
  Poco::SHA2Engine engine(Poco::SHA2Engine::SHA_256);
  engine.update(bytes.data(), static_cast<unsigned>(bytes.size()));
  return Poco::DigestEngine::digestToHex(engine.digest());
}

// A small document whose sentences all fit the default summary length, so each word of it shows up
// in the extractive summary.
std::string doc(int i) {
  return "Report " + std::to_string(i) + " covers the harbour district. The survey counted " + std::to_string(i * 7) +
         " boats at anchor. Inspectors found the moorings sound.\n";
}

}  // namespace

// ---- the settle rule, on a fake clock ----------------------------------------------------------

TEST(SettleTracker, AFileWrittenInPiecesIsTakenOnceAfterItSettles) {
  SettleTracker t(1.0);
  FileVersion v{10, 1000, 7};
  for (int k = 0; k < 5; ++k) {  // a write every 0.3 s: the version changes each time
    const double now = 0.3 * k;
    v.size += 10;
    v.mtime_ns += 300000000;
    for (const auto& p : t.due(now)) t.observe(p, v, now);
    t.observe("a.txt", v, now);
    EXPECT_TRUE(t.take_ready().empty()) << "taken while being written, at " << now;
  }
  EXPECT_DOUBLE_EQ(t.next_due(), 1.2 + 1.0);
  EXPECT_TRUE(t.due(2.1).empty());
  ASSERT_EQ(t.due(2.25), std::vector<std::string>{"a.txt"});
  t.observe("a.txt", v, 2.25);  // the second look: unchanged for 1 s
  EXPECT_EQ(t.take_ready(), std::vector<std::string>{"a.txt"});
  // Seen again and again unchanged (rescans, stray events): never taken twice.
  for (double now = 2.5; now < 10; now += 0.5) {
    t.observe("a.txt", v, now);
    EXPECT_TRUE(t.take_ready().empty());
  }
  EXPECT_EQ(t.pending(), 0u);
  // A new version is a new job.
  v.size += 1;
  t.observe("a.txt", v, 10);
  EXPECT_TRUE(t.take_ready().empty());
  t.observe("a.txt", v, 11);
  EXPECT_EQ(t.take_ready(), std::vector<std::string>{"a.txt"});
}

TEST(SettleTracker, RenamedIntoPlaceIsReadyAtOnceButEmptyFilesWait) {
  SettleTracker t(30.0);
  t.observe("moved.txt", {100, 5, 1}, 0, /*moved_in=*/true);
  t.observe("written.txt", {100, 5, 2}, 0);
  t.observe("empty.txt", {0, 5, 3}, 0, /*moved_in=*/true);
  EXPECT_EQ(t.take_ready(), std::vector<std::string>{"moved.txt"});
  EXPECT_DOUBLE_EQ(t.next_due(), 30.0);
  t.observe("written.txt", {100, 5, 2}, 30);
  t.observe("empty.txt", {0, 5, 3}, 30);
  EXPECT_EQ(t.take_ready(), std::vector<std::string>{"written.txt"});
  // Another file renamed over a taken one (same size and mtime, new inode) is new.
  t.observe("moved.txt", {100, 5, 9}, 31, true);
  EXPECT_EQ(t.take_ready(), std::vector<std::string>{"moved.txt"});
  EXPECT_TRUE(t.forget("moved.txt").was_taken);
  EXPECT_FALSE(t.forget("empty.txt").was_taken);
  EXPECT_FALSE(t.forget("never.txt").tracked);
}

// ---- the command ----------------------------------------------------------------------------

TEST(Watch, AFileWrittenSlowlyIsSummarizedOnceWhenComplete) {
  TempDir in, out, logs;
  WatchProcess w(quote(in.path()) + " -o " + quote(out.path()) + " --settle 1 --format json", logs / "log");
  ASSERT_TRUE(w.started()) << w.log();
  const fs::path doc_path = in / "slow.txt";
  const std::vector<std::string> pieces = {"The ferry left the harbour at dawn. ", "Gulls followed it out. ",
                                           "The captain logged calm seas. ", "Passengers slept below deck. ",
                                           "At noon the lookout sighted Quillomere island.\n"};
  for (const std::string& piece : pieces) {
    std::ofstream(doc_path, std::ios::app) << piece;
    std::this_thread::sleep_for(300ms);
  }
  const fs::path summary = out / "slow.txt.summary.json";
  ASSERT_TRUE(wait_until([&] { return fs::exists(summary); }, 10s)) << w.log();
  std::this_thread::sleep_for(1500ms);  // longer than --settle: a second pass would show by now
  EXPECT_EQ(w.stop(SIGTERM), 0) << w.log();
  const json j = json::parse(read_file(summary));
  EXPECT_EQ(j["sha256"], sha256_hex(read_file(doc_path)));  // the final content, not a prefix of it
  EXPECT_TRUE(contains(j["summary"].get<std::string>(), "Quillomere")) << j["summary"];
  EXPECT_EQ(count(w.log(), doc_path.string() + " -> "), 1u) << w.log();
}

TEST(Watch, ABurstOf500FilesIsEachSummarizedOnce) {
  TempDir in, logs;
  const fs::path out = in / "summaries";  // OUT_DIR inside the watched tree: its files are never inputs
  WatchProcess w(quote(in.path()) + " -o " + quote(out) + " --settle 1", logs / "log");
  ASSERT_TRUE(w.started()) << w.log();
  // Five new subdirectories (each needs its own watch), 100 files in each, as fast as they can be made.
  std::vector<fs::path> files;
  for (int d = 0; d < 5; ++d) {
    fs::create_directories(in / ("batch" + std::to_string(d)));
    for (int i = 0; i < 100; ++i) {
      files.push_back(in / ("batch" + std::to_string(d)) / ("doc" + std::to_string(i) + ".txt"));
      write_file(files.back(), doc(d * 100 + i));
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return count_files(out, ".summary.md") == 500; }, 40s))
      << count_files(out, ".summary.md") << " outputs\n" << w.log();
  std::cerr << "500 files summarized " << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
            << " s after the last was written\n";
  std::this_thread::sleep_for(1500ms);  // a second pass over any of them would show by now
  EXPECT_EQ(w.stop(SIGTERM), 0) << w.log();
  const std::string log = w.log();
  for (const fs::path& f : files) EXPECT_EQ(count(log, f.string() + " -> "), 1u) << f;
  EXPECT_EQ(count(log, " -> "), 500u);
  EXPECT_EQ(count_files(out / ".abridge" / "done", ".json"), 500u);
  EXPECT_EQ(count_files(out, ".summary.md.summary.md"), 0u);
  // A restart finds all of them up to date.
  const RunResult r = run_abridge("watch " + quote(in.path()) + " -o " + quote(out) + " --once");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "0 summarized, 500 up to date, 0 failed")) << r.err;
}

TEST(Watch, FilesRenamedIntoPlaceAreTakenWithoutSettling) {
  TempDir in, out, staging, logs;
  fs::create_directories(in / "sub");
  // --settle 30: only a rename can make a file ready within this test.
  WatchProcess w(quote(in.path()) + " -o " + quote(out.path()) + " --settle 30", logs / "log");
  ASSERT_TRUE(w.started()) << w.log();
  write_file(staging / "outside.txt", doc(1));  // written outside the tree, then moved in
  fs::rename(staging / "outside.txt", in / "sub" / "outside.txt");
  write_file(in / "inside.txt.part", doc(2));  // written under a name discovery ignores, then renamed
  fs::rename(in / "inside.txt.part", in / "inside.txt");
  write_file(in / "plain.txt", doc(3));  // written in place: waits 30 s
  EXPECT_TRUE(wait_until([&] { return fs::exists(out / "sub" / "outside.txt.summary.md") &&
                                      fs::exists(out / "inside.txt.summary.md"); }, 5s))
      << w.log();
  EXPECT_FALSE(fs::exists(out / "plain.txt.summary.md"));
  EXPECT_FALSE(fs::exists(out / "inside.txt.part.summary.md"));
  EXPECT_EQ(w.stop(SIGTERM), 0) << w.log();
  EXPECT_TRUE(contains(w.log(), "1 changed documents wait for the next start")) << w.log();
}

TEST(Watch, SigtermFinishesTheBatchWithTheModelAndLeavesNothingPartial) {
  TempDir in, out, logs;
  const std::string text = read_file(source_path("tests/data/texts/R-intro.txt"));
  for (int i = 0; i < 3; ++i) write_file(in / ("part" + std::to_string(i) + ".txt"), text.substr(i * 9000, 9000));
  WatchProcess w(quote(in.path()) + " -o " + quote(out.path()) + " --model " + quote(random_model_dir()) +
                     " --device cpu --summary-tokens 24 --context-tokens 1024 --chunk-tokens 256 --format json"
                     " --settle 0.2",
                 logs / "log");
  // Stop once the batch is under way: some chunk summaries are cached.
  ASSERT_TRUE(wait_until([&] { return count_files(out.path(), ".zst") >= 2; }, 60s)) << w.log();
  const size_t outputs_at_stop = count_files(out.path(), ".summary.json");
  const int code = w.stop(SIGTERM);
  EXPECT_EQ(code, 0) << w.log();
  EXPECT_LT(outputs_at_stop, 3u) << "the batch finished before the signal; the test proves less";
  // The batch in progress was finished: every document has its whole output and its done record.
  for (int i = 0; i < 3; ++i) {
    const fs::path p = out / ("part" + std::to_string(i) + ".txt.summary.json");
    ASSERT_TRUE(fs::exists(p)) << p << "\n" << w.log();
    EXPECT_FALSE(json::parse(read_file(p))["summary"].get<std::string>().empty());
  }
  EXPECT_EQ(count_files(out / ".abridge" / "done", ".json"), 3u);
  EXPECT_EQ(count_tmp_files(out.path()), 0u);
  EXPECT_TRUE(contains(w.log(), "SIGTERM: stopped")) << w.log();
}

// A document that arrives while others are in the engine joins the running engine: it does not wait
// for them to end (here its summary is written while a long document's chunks are still running; steps
// of 64 tokens make the long one take hundreds of steps).
TEST(Watch, ADocumentArrivingDuringABatchJoinsTheRunningEngine) {
  TempDir in, out, logs;
  const std::string text = read_file(source_path("tests/data/texts/R-intro.txt"));
  write_file(in / "long.txt", text.substr(0, 60000));  // ~17K tokens: dozens of chunks, then merges
  WatchProcess w(quote(in.path()) + " -o " + quote(out.path()) + " --model " + quote(random_model_dir()) +
                     " --device cpu --threads 2 --summary-tokens 16 --context-tokens 1024 --chunk-tokens 256"
                     " --prefill-chunk 64 --settle 0.2",
                 logs / "log");
  ASSERT_TRUE(wait_until([&] { return count_files(out.path(), ".zst") >= 1; }, 120s)) << w.log();
  ASSERT_FALSE(fs::exists(out / "long.txt.summary.md")) << "the long document finished too soon; the test proves less";
  write_file(in / "short.txt", doc(11));
  ASSERT_TRUE(wait_until([&] { return fs::exists(out / "short.txt.summary.md"); }, 120s)) << w.log();
  EXPECT_FALSE(fs::exists(out / "long.txt.summary.md")) << w.log();  // written before the long one
  ASSERT_TRUE(wait_until([&] { return fs::exists(out / "long.txt.summary.md"); }, 300s)) << w.log();
  EXPECT_EQ(w.stop(SIGTERM), 0) << w.log();
  const std::string log = w.log();
  EXPECT_LT(log.find("short.txt -> "), log.find("long.txt -> ")) << log;
}

TEST(Watch, AfterKill9ARestartDoesWhatIsNewAndNothingTwice) {
  TempDir in, out, logs;
  write_file(in / "a.txt", doc(1));
  write_file(in / "b.txt", doc(2));
  {
    WatchProcess w(quote(in.path()) + " -o " + quote(out.path()) + " --settle 0.3", logs / "first");
    ASSERT_TRUE(wait_until([&] { return count_files(out.path(), ".summary.md") == 2; }, 20s)) << w.log();
    EXPECT_EQ(w.stop(SIGKILL), 128 + SIGKILL);
  }
  write_file(in / "c.txt", doc(3));  // arrives while nothing watches
  write_file(in / "a.txt", doc(4));  // changes while nothing watches
  WatchProcess w(quote(in.path()) + " -o " + quote(out.path()) + " --settle 0.3", logs / "second");
  ASSERT_TRUE(wait_until([&] { return contains(w.log(), "c.txt -> ") && contains(w.log(), "a.txt -> "); }, 20s))
      << w.log();
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(w.stop(SIGTERM), 0) << w.log();
  const std::string log = w.log();
  EXPECT_TRUE(contains(log, (in / "b.txt").string() + ": up to date")) << log;
  EXPECT_EQ(count(log, " -> "), 2u) << log;  // a (changed) and c (new), b not again
  EXPECT_TRUE(contains(read_file(out / "a.txt.summary.md"), "Report 4 ")) << read_file(out / "a.txt.summary.md");
  EXPECT_EQ(count_tmp_files(out.path()), 0u);
}

TEST(Watch, ADeletedInputKeepsItsSummaryAndIsLogged) {
  TempDir in, out, logs;
  WatchProcess w(quote(in.path()) + " -o " + quote(out.path()) + " --settle 0.3", logs / "log");
  ASSERT_TRUE(w.started()) << w.log();
  write_file(in / "gone.txt", doc(5));
  ASSERT_TRUE(wait_until([&] { return fs::exists(out / "gone.txt.summary.md"); }, 10s)) << w.log();
  const std::string summary = read_file(out / "gone.txt.summary.md");
  fs::remove(in / "gone.txt");
  EXPECT_TRUE(wait_until([&] { return contains(w.log(), "gone.txt: deleted; its summary"); }, 5s)) << w.log();
  EXPECT_EQ(w.stop(SIGTERM), 0) << w.log();
  ASSERT_TRUE(fs::exists(out / "gone.txt.summary.md"));
  EXPECT_EQ(read_file(out / "gone.txt.summary.md"), summary);
  // Every line is timestamped: ISO 8601 in UTC.
  const std::regex stamped(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z abridge)");
  std::istringstream lines(w.log());
  for (std::string line; std::getline(lines, line);) EXPECT_TRUE(std::regex_search(line, stamped)) << line;
}

TEST(Watch, AWatchHoldsItsOutputDirectory) {
  TempDir in, out, logs;
  write_file(in / "a.txt", doc(10));
  WatchProcess w(quote(in.path()) + " -o " + quote(out.path()), logs / "log");
  ASSERT_TRUE(w.started()) << w.log();
  // The lock `abridge summarize` takes: neither a summarize nor a second watch runs on this OUT_DIR.
  auto r = run_abridge("summarize " + quote(in.path()) + " -o " + quote(out.path()));
  EXPECT_EQ(r.exit_code, 3) << r.err;
  r = run_abridge("watch " + quote(in.path()) + " -o " + quote(out.path()) + " --once");
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(contains(r.err, "is in use by another abridge run (pid ")) << r.err;
  EXPECT_EQ(w.stop(SIGTERM), 0) << w.log();
  r = run_abridge("watch " + quote(in.path()) + " -o " + quote(out.path()) + " --once");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(Watch, TheRescanAloneFindsChangesWithoutEvents) {
  TempDir in, out, logs;
  WatchProcess w(quote(in.path()) + " -o " + quote(out.path()) + " --no-inotify --rescan 0.5 --settle 0.3", logs / "log");
  ASSERT_TRUE(w.started()) << w.log();
  EXPECT_TRUE(contains(w.log(), "0 directories with change events")) << w.log();
  fs::create_directories(in / "deep" / "er");
  write_file(in / "deep" / "er" / "found.md", "# Notes\n\n" + doc(6));
  EXPECT_TRUE(wait_until([&] { return fs::exists(out / "deep" / "er" / "found.md.summary.md"); }, 10s)) << w.log();
  EXPECT_EQ(w.stop(SIGINT), 0) << w.log();
}

TEST(Watch, OnceHasTheExitCodesOfSummarize) {
  TempDir in, out;
  fs::create_directories(in / "d");
  write_file(in / "d" / "good.txt", doc(7));
  fs::create_directories(in / ".hidden");
  write_file(in / ".hidden" / "x.txt", doc(8));  // hidden folders are skipped
  auto r = run_abridge("watch " + quote(in.path()) + " -o " + quote(in / "out") + " --once");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(in / "out" / "d" / "good.txt.summary.md"));
  EXPECT_TRUE(contains(r.err, "1 summarized, 0 failed")) << r.err;
  // Again: the outputs inside the tree are not inputs, the file is up to date.
  r = run_abridge("watch " + quote(in.path()) + " -o " + quote(in / "out") + " --once");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "0 summarized, 1 up to date, 0 failed")) << r.err;
  // A bad document: exit 1, the rest done.
  write_file(in / "d" / "latin1.txt", "caf\xE9 au lait");
  write_file(in / "d" / "more.txt", doc(9));
  r = run_abridge("watch " + quote(in.path()) + " -o " + quote(in / "out") + " --once");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "latin1.txt: invalid UTF-8")) << r.err;
  EXPECT_TRUE(fs::exists(in / "out" / "d" / "more.txt.summary.md"));
  // Usage errors: 2.
  EXPECT_EQ(run_abridge("watch " + quote(in / "missing") + " -o " + quote(out.path()) + " --once").exit_code, 2);
  EXPECT_EQ(run_abridge("watch " + quote(in / "d" / "good.txt") + " -o " + quote(out.path()) + " --once").exit_code, 2);
  EXPECT_EQ(run_abridge("watch " + quote(in.path()) + " --once").exit_code, 2);  // no -o
  EXPECT_EQ(run_abridge("watch " + quote(in.path()) + " -o " + quote(in.path()) + " --once").exit_code, 2);
  EXPECT_EQ(run_abridge("watch " + quote(in.path()) + " -o " + quote(out.path()) + " --settle -1").exit_code, 2);
  EXPECT_EQ(run_abridge("watch " + quote(in.path()) + " -o " + quote(out.path()) + " --rescan x").exit_code, 2);
  EXPECT_EQ(run_abridge("watch " + quote(in.path()) + " -o " + quote(out.path()) + " --format pdf --once").exit_code, 2);
  EXPECT_FALSE(fs::exists(out / "d"));
}
