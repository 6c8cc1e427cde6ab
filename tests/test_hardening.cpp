// abridge over directories that other people and programs fill, run as root from cron and as a service
// (docs/OPERATIONS.md, "What abridge reads, writes and deletes"). Every case is made here, in a temp
// directory, by the test itself: symbolic links in inputs and planted in OUT_DIR, link loops, links out
// of the tree, FIFOs and device nodes, names that are not UTF-8 or hold control characters, 255-byte
// names, trees deeper than PATH_MAX, unreadable folders (as the user nobody when the tests run as root),
// JSON nested 100,000 deep, thread limits. Each test names the guarantee it checks.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "base/bytes.h"
#include "base/rng.h"
#include "engine/embedded_data.h"
#include "base/error.h"
#include "engine/read_file.h"
#include "engine/thread_pool.h"
#include "engine/tokenizer.h"
#include "pipeline/discovery.h"
#include "pipeline/memory.h"
#include "pipeline/output_dir.h"
#include "pipeline/summarize.h"
#include "tests/model_fixture.h"
#include "tests/test_support.h"

using namespace abridge::testing;
namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

const std::string kText =
    "The harbour board met on Tuesday. It approved the budget for the new pier. The vote was close, and "
    "the chair thanked the engineers for their survey of the old moorings.\n";
const std::string kOtherText =
    "Rain fell on the valley for three days. The river rose above its banks near the mill. Farmers moved "
    "their sheep to the high pastures before the bridge closed.\n";

std::string sq(const fs::path& p) { return shell_quote(p.string()); }
std::string bin() { return shell_quote(abridge_binary()); }

// `abridge ARGS` under a wall-clock limit, so that a hang fails the test (exit 124) instead of stopping it.
RunResult abridge_within(int seconds, const std::string& args) {
  return run_shell("timeout -k 5 " + std::to_string(seconds) + " " + bin() + " " + args);
}

bool running_as_root() { return ::geteuid() == 0; }

// A shell command as the user nobody (uid 65534) when the tests run as root, so that file permissions
// apply; as it is otherwise.
std::string as_nobody(const std::string& command) {
  if (!running_as_root()) return command;
  return "setpriv --reuid=65534 --regid=65534 --clear-groups -- /bin/sh -c " + shell_quote(command);
}

// Every path under `dir` (relative), links not followed.
std::set<std::string> tree(const fs::path& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec))
    out.insert(fs::relative(it->path(), dir).string());
  return out;
}

size_t count(const std::string& s, const std::string& n) {
  size_t c = 0;
  for (size_t p = s.find(n); p != std::string::npos; p = s.find(n, p + n.size())) ++c;
  return c;
}

// Removes a tree that may be deeper than PATH_MAX (std::filesystem::remove_all gives up there).
void remove_deep(const fs::path& dir) { std::system(("rm -rf " + sq(dir)).c_str()); }

// Makes `levels` nested folders named `name` under `dir` (openat from descriptors, so deeper than
// PATH_MAX is fine) and a text file `leaf` at the bottom.
void make_deep(const fs::path& dir, const std::string& name, int levels, const std::string& leaf) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 0);
  for (int i = 0; i < levels; ++i) {
    ASSERT_EQ(::mkdirat(fd, name.c_str(), 0755), 0) << std::strerror(errno);
    const int next = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY);
    ::close(fd);
    ASSERT_GE(next, 0);
    fd = next;
  }
  const int f = ::openat(fd, leaf.c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(f, 0);
  ASSERT_EQ(::write(f, kText.data(), kText.size()), static_cast<ssize_t>(kText.size()));
  ::close(f);
  ::close(fd);
}

void make_fifo(const fs::path& p) { ASSERT_EQ(::mkfifo(p.c_str(), 0644), 0) << p; }

struct stat lstat_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st;
}

// The first line of `text` that mentions `needle` (for messages in failures).
std::string line_with(const std::string& text, const std::string& needle) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (contains(line, needle)) return line;
  return "";
}

}  // namespace

// ---- 1. links in inputs ---------------------------------------------------------------------------

// An output is named by the path given, relative to its input root; inside a directory a link is
// followed only while it stays inside it; nothing is ever written outside OUT_DIR.
TEST(HardeningLinks, OutputsAreNamedByThePathGivenAndLinksLeavingTheTreeAreNotFollowed) {
  TempDir t;
  const fs::path docs = t / "docs", secret = t / "elsewhere" / "secret";
  fs::create_directories(docs / "sub");
  fs::create_directories(secret);
  write_file(secret / "creds.txt", "The password is swordfish. The account is root. Nobody may read this file.\n");
  write_file(docs / "good.txt", kText);
  write_file(docs / "sub" / "real.txt", kOtherText);
  fs::create_symlink("../elsewhere/secret/creds.txt", docs / "evil.txt");  // relative, out of the tree
  fs::create_symlink(secret / "creds.txt", docs / "sub" / "evil-abs.txt");  // absolute, out of the tree
  fs::create_symlink("sub/real.txt", docs / "alias.txt");                   // relative, inside: followed
  fs::create_symlink(docs / "sub" / "real.txt", docs / "alias-abs.txt");    // absolute, inside: followed
  const std::set<std::string> elsewhere_before = tree(t / "elsewhere"), docs_before = tree(docs);

  for (const std::string mode : {"", " -r", "watch"}) {
    SCOPED_TRACE(mode.empty() ? "summarize" : mode);
    TempDir out;
    const RunResult r = mode == "watch" ? abridge_within(120, "watch " + sq(docs) + " -o " + sq(out.path()) + " --once")
                                        : abridge_within(120, "summarize " + sq(docs) + mode + " -o " + sq(out.path()));
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_TRUE(contains(r.err, "evil.txt: a symbolic link to a file outside " + docs.string())) << r.err;
    EXPECT_TRUE(fs::is_regular_file(out / "good.txt.summary.md"));
    EXPECT_TRUE(fs::is_regular_file(out / "alias.txt.summary.md")) << r.err;      // named by the link
    EXPECT_TRUE(fs::is_regular_file(out / "alias-abs.txt.summary.md")) << r.err;
    EXPECT_FALSE(fs::exists(out / "evil.txt.summary.md"));
    EXPECT_FALSE(fs::exists(out / "creds.txt.summary.md"));
    if (mode != "") {
      EXPECT_TRUE(contains(r.err, "sub/evil-abs.txt: a symbolic link to a file outside")) << r.err;
      EXPECT_TRUE(fs::is_regular_file(out / "sub" / "real.txt.summary.md"));
    }
    for (const std::string& f : tree(out.path()))
      if (fs::is_regular_file(out / f)) {
        EXPECT_FALSE(contains(read_file(out / f), "swordfish")) << f;
      }
    // Nothing was written next to the targets or in the input tree.
    EXPECT_EQ(tree(t / "elsewhere"), elsewhere_before);
    EXPECT_EQ(tree(docs), docs_before);
  }

  // A link named on the command line is read where it points (the user named it) and its output is
  // named by the link, inside OUT_DIR.
  TempDir out;
  const RunResult r = abridge_within(60, "summarize " + sq(docs / "evil.txt") + " -o " + sq(out.path()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::is_regular_file(out / "evil.txt.summary.md"));
  EXPECT_EQ(tree(t / "elsewhere"), elsewhere_before);
}

// A file is read through the descriptor opened with the links checked: swapped after discovery for a
// link out of the tree (or to /dev/zero, or to a FIFO), it is refused, never read.
TEST(HardeningLinks, AFileSwappedForALinkAfterDiscoveryIsNotRead) {
  using abridge::pipeline::open_input;
  TempDir t;
  const fs::path docs = t / "docs";
  fs::create_directories(docs);
  write_file(docs / "a.txt", kText);
  write_file(t / "outside.txt", "a file outside the input directory");
  abridge::pipeline::SummarizeOptions o;
  o.inputs = {docs.string()};
  o.out_dir = (t / "out").string();
  std::istringstream no_stdin;
  const auto found = abridge::pipeline::discover_inputs(o, no_stdin);
  ASSERT_EQ(found.inputs.size(), 1u);
  const abridge::pipeline::SummaryInput input = found.inputs[0];
  EXPECT_EQ(input.rel, "a.txt");
  EXPECT_EQ(input.root, docs.string());

  auto why = [&] {
    try {
      const int fd = open_input(input);
      struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
      } closer{fd};
      abridge::read_regular_fd(fd, 1 << 20);
      return std::string();
    } catch (const abridge::Error& e) {
      return std::string(e.what());
    }
  };
  EXPECT_EQ(why(), "");
  for (const fs::path& target : {t / "outside.txt", fs::path("/dev/zero"), fs::path("../outside.txt")}) {
    fs::remove(docs / "a.txt");
    fs::create_symlink(target, docs / "a.txt");
    EXPECT_TRUE(contains(why(), "a symbolic link to a file outside")) << target << ": " << why();
  }
  // A link inside the tree to a FIFO: opened without waiting, then refused as not a regular file.
  make_fifo(docs / "pipe");
  fs::remove(docs / "a.txt");
  fs::create_symlink("pipe", docs / "a.txt");
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(contains(why(), "not a regular file")) << why();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

// ---- 2. links planted in OUT_DIR --------------------------------------------------------------------

TEST(HardeningOutDir, LinksPlantedInsideAreNeverWrittenThrough) {
  TempDir t;
  const fs::path docs = t / "docs", victim = t / "victim", out = t / "out";
  fs::create_directories(docs / "sub");
  fs::create_directories(victim / "folder");
  fs::create_directories(out / ".abridge" / "done");
  write_file(docs / "a.txt", kText);
  write_file(docs / "sub" / "b.txt", kOtherText);
  for (const char* v : {"lock", "output", "record"}) write_file(victim / v, std::string("precious ") + v);
  fs::create_symlink(victim / "lock", out / ".abridge" / "lock");          // the lock's pid file
  fs::create_symlink(victim / "output", out / "a.txt.summary.md");         // an output's own name
  fs::create_symlink(victim / "folder", out / "sub");                      // a folder of outputs
  const std::string record = abridge::pipeline::sha256_hex("a.txt.summary.md") + ".json";
  fs::create_symlink(victim / "record", out / ".abridge" / "done" / record);  // a done record
  const std::set<std::string> victim_before = tree(victim);

  const RunResult r = abridge_within(60, "summarize " + sq(docs) + " -r -o " + sq(out));
  EXPECT_EQ(r.exit_code, 1) << r.err;  // sub/b.txt: its folder is a link
  EXPECT_TRUE(contains(r.err, "sub/b.txt: ")) << r.err;
  EXPECT_TRUE(contains(line_with(r.err, "sub/b.txt"), "a symbolic link or not a folder")) << r.err;
  for (const char* v : {"lock", "output", "record"}) EXPECT_EQ(read_file(victim / v), std::string("precious ") + v);
  EXPECT_EQ(tree(victim), victim_before);
  // The links were replaced by abridge's own files, not followed.
  EXPECT_TRUE(S_ISREG(lstat_of(out / "a.txt.summary.md").st_mode));
  EXPECT_TRUE(S_ISREG(lstat_of(out / ".abridge" / "lock").st_mode));
  EXPECT_TRUE(S_ISREG(lstat_of(out / ".abridge" / "done" / record).st_mode));
  EXPECT_TRUE(S_ISLNK(lstat_of(out / "sub").st_mode));
  // No temporary file is left, and none has a predictable name.
  for (const std::string& f : tree(out)) EXPECT_FALSE(contains(f, ".tmp.")) << f;

  // OUT_DIR's own state folders as links: the run stops before writing anything through them.
  for (const std::string state : {".abridge", ".abridge/cache", ".abridge/done"}) {
    SCOPED_TRACE(state);
    TempDir o, v;
    fs::create_directories(o / ".abridge");
    if (state == ".abridge") fs::remove(o / ".abridge");
    fs::create_symlink(v.path(), o.path() / state);
    const RunResult s = abridge_within(60, "summarize " + sq(docs / "a.txt") + " -o " + sq(o.path()));
    EXPECT_EQ(s.exit_code, 2) << s.err;
    EXPECT_TRUE(contains(s.err, "a symbolic link or not a folder")) << s.err;
    EXPECT_TRUE(tree(v.path()).empty());
  }

  // `model make-random` replaces a link at a file's name too.
  TempDir m;
  fs::create_directories(m / "model");
  fs::create_symlink(victim / "lock", m / "model" / "config.json");
  ASSERT_EQ(abridge_within(120, "model make-random " + sq(m / "model")).exit_code, 0);
  EXPECT_EQ(read_file(victim / "lock"), "precious lock");
  EXPECT_TRUE(S_ISREG(lstat_of(m / "model" / "config.json").st_mode));
}

// OUT_DIR's path is followed through a link only when the link is root's or the running user's (Linux's
// protected_symlinks rule, whatever the sysctl says): a link another user planted in a sticky shared
// folder, as OUT_DIR or on its way, is refused before anything is written; so is an OUT_DIR owned by
// another user.
TEST(HardeningOutDir, AnotherUsersLinkOrFolderAsOutDirIsRefused) {
  if (!running_as_root()) GTEST_SKIP() << "needs root to make files owned by another user (nobody)";
  TempDir t;
  const fs::path shared = t / "shared", victim = t / "victim";
  fs::create_directories(shared);
  fs::create_directories(victim);
  fs::permissions(shared, fs::perms::all | fs::perms::sticky_bit);  // 1777, like /tmp
  write_file(shared / "a.txt", kText);
  auto plant = [&](const fs::path& link) {  // a link made by nobody
    fs::create_symlink(victim, link);
    ASSERT_EQ(::lchown(link.c_str(), 65534, 65534), 0) << std::strerror(errno);
  };
  plant(shared / "summaries");
  plant(shared / "drop");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"summarize " + sq(shared / "a.txt") + " -o " + sq(shared / "summaries"), (shared / "summaries").string()},
      {"watch " + sq(shared) + " -o " + sq(shared / "summaries") + " --once", (shared / "summaries").string()},
      {"summarize " + sq(shared / "a.txt") + " -o " + sq(shared / "drop" / "out"), (shared / "drop").string()},
  };
  for (const auto& [args, link] : cases) {
    const RunResult r = abridge_within(60, args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.err;
    EXPECT_TRUE(contains(r.err, link + ": a symbolic link that belongs to another user (uid 65534): not followed")) << r.err;
    EXPECT_EQ(count(r.err, "\n"), 1u) << r.err;
    EXPECT_TRUE(tree(victim).empty()) << args;
  }
  // The same links made by root (or by the user running abridge) are followed.
  fs::create_symlink(victim, t / "mine");
  RunResult r = abridge_within(60, "summarize " + sq(shared / "a.txt") + " -o " + sq(t / "mine" / "out"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::is_regular_file(victim / "out" / "a.txt.summary.md"));
  // An OUT_DIR that belongs to another user (not root) is refused, with one line naming both users.
  const fs::path theirs = shared / "theirs";
  fs::create_directories(theirs);
  ASSERT_EQ(::chown(theirs.c_str(), 65534, 65534), 0);
  for (const std::string& cmd : {"summarize " + sq(shared / "a.txt"), "watch " + sq(t / "victim") + " --once"}) {
    r = abridge_within(60, cmd + " -o " + sq(theirs));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(contains(r.err, theirs.string() + ": OUT_DIR is owned by uid 65534, not by the user running abridge (uid 0)")) << r.err;
    EXPECT_EQ(count(r.err, "\n"), 1u) << r.err;
    EXPECT_TRUE(tree(theirs).empty());
  }
}

// ---- 3. --report ------------------------------------------------------------------------------------

TEST(HardeningReport, SpecialFilesAreWrittenThroughOrRefusedNeverReplaced) {
  TempDir t;
  write_file(t / "a.txt", kText);
  const std::string run = "summarize " + sq(t / "a.txt") + " --force -q -o " + sq(t / "out");

  // A character device: written through, still the device.
  const struct stat null_before = lstat_of("/dev/null");
  RunResult r = abridge_within(60, run + " --report /dev/null");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const struct stat null_after = lstat_of("/dev/null");
  EXPECT_TRUE(S_ISCHR(null_after.st_mode));
  EXPECT_EQ(null_after.st_ino, null_before.st_ino);

  // "-" and /dev/stdout into a pipe: the JSON on standard output.
  r = abridge_within(60, run + " --report -");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["summarized"], 1);
  r = run_shell("timeout 60 " + bin() + " " + run + " --report /dev/stdout | cat");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["summarized"], 1);
  EXPECT_TRUE(S_ISLNK(lstat_of("/dev/stdout").st_mode));

  // A FIFO someone reads: written through, still a FIFO.
  make_fifo(t / "fifo");
  std::string received;
  std::thread reader([&] { received = read_file(t / "fifo"); });
  r = abridge_within(60, run + " --report " + sq(t / "fifo"));
  if (r.exit_code != 0) {  // let the reader go
    const int fd = ::open((t / "fifo").c_str(), O_WRONLY | O_NONBLOCK);
    if (fd >= 0) ::close(fd);
  }
  reader.join();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(received)["summarized"], 1);
  EXPECT_TRUE(S_ISFIFO(lstat_of(t / "fifo").st_mode));
  // A FIFO nobody reads: an error at once, not a wait.
  r = abridge_within(60, run + " --report " + sq(t / "fifo"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "nobody reads the FIFO")) << r.err;
  EXPECT_TRUE(S_ISFIFO(lstat_of(t / "fifo").st_mode));

  // Refused before any work: a link to a regular file, a folder.
  write_file(t / "target.json", "the target");
  fs::create_symlink(t / "target.json", t / "link.json");
  for (const fs::path& bad : {t / "link.json", t.path()}) {
    TempDir o;
    r = abridge_within(60, "summarize " + sq(t / "a.txt") + " -o " + sq(o.path()) + " --report " + sq(bad));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(contains(r.err, bad.string() + ": ")) << r.err;
    EXPECT_FALSE(fs::exists(o / "a.txt.summary.md")) << "refused after the work";
  }
  EXPECT_EQ(read_file(t / "target.json"), "the target");
  EXPECT_TRUE(S_ISLNK(lstat_of(t / "link.json").st_mode));
  // Another user's link to a device is not followed (root can make one to try).
  if (running_as_root()) {
    fs::create_symlink("/dev/null", t / "planted");
    ASSERT_EQ(::lchown((t / "planted").c_str(), 65534, 65534), 0);
    r = abridge_within(60, run + " --report " + sq(t / "planted"));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(contains(r.err, "belongs to another user")) << r.err;
  }
  // A regular file is replaced atomically.
  write_file(t / "last.json", "old");
  r = abridge_within(60, run + " --report " + sq(t / "last.json"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(read_file(t / "last.json"))["summarized"], 1);
}

// The folder part of --report is walked a folder at a time: inside OUT_DIR no link is followed (a link
// there to an outside folder would have a file outside replaced); elsewhere a link is followed only when
// it belongs to root or to the user running abridge. Refused before any work.
TEST(HardeningReport, LinksInItsFolderPartFollowTheOutDirAndOwnerRules) {
  TempDir t;
  write_file(t / "a.txt", kText);
  const fs::path out = t / "o", outside = t / "outside";
  fs::create_directories(out / "real");
  fs::create_directories(outside);
  write_file(outside / "r.json", "precious");
  fs::create_symlink(outside, out / "sub");  // root's own link, but inside OUT_DIR
  const std::string run = "summarize " + sq(t / "a.txt") + " -o " + sq(out) + " --report ";
  RunResult r = abridge_within(60, run + sq(out / "sub" / "r.json"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, (out / "sub").string() + ": a symbolic link inside OUT_DIR: not followed")) << r.err;
  EXPECT_EQ(read_file(outside / "r.json"), "precious");
  EXPECT_FALSE(fs::exists(out / "a.txt.summary.md")) << "refused after the work";
  // A real folder inside OUT_DIR, and root's link outside it, are fine.
  r = abridge_within(60, run + sq(out / "real" / "r.json"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(read_file(out / "real" / "r.json"))["summarized"], 1);
  fs::create_symlink(outside, t / "mine");
  r = abridge_within(60, run + sq(t / "mine" / "new.json") + " --force");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(read_file(outside / "new.json"))["summarized"], 1);
  // Another user's link in a shared sticky folder is not followed.
  if (running_as_root()) {
    const fs::path shared = t / "shared";
    fs::create_directories(shared);
    fs::permissions(shared, fs::perms::all | fs::perms::sticky_bit);
    fs::create_symlink(outside, shared / "reports");
    ASSERT_EQ(::lchown((shared / "reports").c_str(), 65534, 65534), 0);
    r = abridge_within(60, run + sq(shared / "reports" / "r.json") + " --force");
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(contains(r.err, (shared / "reports").string() + ": a symbolic link that belongs to another user (uid 65534)")) << r.err;
    EXPECT_EQ(read_file(outside / "r.json"), "precious");
  }
}

// A FIFO nobody reads is refused before the work, not after it; /dev/stdout and /dev/fd/N are the
// descriptors as the shell opened them: a cron job's `>> log` is appended to, never truncated or replaced.
TEST(HardeningReport, CheckedBeforeTheWorkAndDescriptorsWrittenAsTheyAre) {
  TempDir t;
  write_file(t / "a.txt", kText);
  make_fifo(t / "fifo");
  const std::string run = "summarize " + sq(t / "a.txt") + " -q --force -o ";
  RunResult r = abridge_within(60, run + sq(t / "o1") + " --report " + sq(t / "fifo"));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "fifo: nobody reads the FIFO")) << r.err;
  EXPECT_EQ(count(r.err, "\n"), 1u) << r.err;
  EXPECT_FALSE(fs::exists(t / "o1" / "a.txt.summary.md")) << "refused after the work";
  EXPECT_TRUE(S_ISFIFO(lstat_of(t / "fifo").st_mode));

  // `>> log`: what the log held stays, the report follows it.
  write_file(t / "log", "an earlier line\n");
  r = run_shell("timeout 60 " + bin() + " " + run + sq(t / "o2") + " --report /dev/stdout >> " + sq(t / "log"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string log = read_file(t / "log");
  ASSERT_EQ(log.rfind("an earlier line\n", 0), 0u) << log;
  EXPECT_EQ(json::parse(log.substr(16))["summarized"], 1);
  EXPECT_TRUE(S_ISLNK(lstat_of("/dev/stdout").st_mode));
  r = run_shell("timeout 60 " + bin() + " " + run + sq(t / "o2") + " --report /dev/fd/3 3>> " + sq(t / "log"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(t / "log").rfind(log, 0), 0u);
  EXPECT_GT(read_file(t / "log").size(), log.size());
  // `> file`: written where the shell opened it.
  r = run_shell("timeout 60 " + bin() + " " + run + sq(t / "o2") + " --report /dev/stdout > " + sq(t / "plain"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(read_file(t / "plain"))["summarized"], 1);
  // A descriptor that is not open, or not for writing: refused before the work.
  for (const std::string& bad : {std::string("/dev/fd/9"), std::string("/dev/stdout 1</dev/null")}) {
    r = run_shell("timeout 60 " + bin() + " " + run + sq(t / "o3") + " --report " + bad);
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "is not open")) << r.err;
    EXPECT_FALSE(fs::exists(t / "o3" / "a.txt.summary.md")) << bad;
  }
}

// ---- 4 and 5. clean-up and the lock -----------------------------------------------------------------

// The lock holds while a cleaner deletes .abridge/lock or all of .abridge; temporary files are deleted
// only by a run that holds the lock and goes ahead (not by one stopped by the lock, an option or the
// model), and only abridge's own.
TEST(HardeningOutDir, TheLockHoldsWhenItsFilesAreDeletedAndOnlyTheHolderCleansUp) {
  TempDir in, out, logs;
  write_file(in / "a.txt", kText);
  const fs::path tmp = out / ".abridge-tmp-0123456789ab", thesis = out / "thesis.tmp.3";
  const std::string summarize = "summarize " + sq(in / "a.txt") + " -o " + sq(out.path());
  {
    WatchProcess w(quote(in.path()) + " -o " + quote(out.path()), logs / "log");
    ASSERT_TRUE(w.started()) << w.log();
    write_file(tmp, "half a summa");
    write_file(thesis, "a user's file");
    RunResult r = abridge_within(60, summarize);
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_TRUE(contains(r.err, "(pid " + std::to_string(w.pid()) + ")")) << r.err;
    fs::remove(out / ".abridge" / "lock");
    r = abridge_within(60, summarize);
    EXPECT_EQ(r.exit_code, 3) << r.err;
    fs::remove_all(out / ".abridge");
    r = abridge_within(60, summarize);
    EXPECT_EQ(r.exit_code, 3) << r.err;
    EXPECT_TRUE(fs::exists(tmp)) << "deleted by a run that does not hold the lock";
    EXPECT_EQ(w.stop(SIGTERM), 0) << w.log();
  }
  // Runs stopped by an option, a --report it cannot write or the model delete nothing.
  EXPECT_EQ(abridge_within(60, summarize + " --model /nonexistent").exit_code, 2);
  EXPECT_EQ(abridge_within(60, summarize + " --report " + sq(in.path())).exit_code, 2);
  EXPECT_EQ(abridge_within(60, summarize + " --summary-tokens 3").exit_code, 2);
  EXPECT_TRUE(fs::exists(tmp));
  // The run that goes ahead deletes its own kind of file only.
  const RunResult r = abridge_within(60, summarize);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_EQ(read_file(thesis), "a user's file");
}

// `rm -rf OUT_DIR/.abridge` (or of its done/ or cache/) while a watch runs: the next document makes
// them again and is summarized, and the lock still holds (a second run is refused).
TEST(HardeningOutDir, AWatchGoesOnAfterItsStateFolderIsDeleted) {
  TempDir in, out, logs;
  write_file(in / "a.txt", kText);
  WatchProcess w(quote(in.path()) + " -o " + quote(out.path()) + " --settle 0.2 --rescan 0.5", logs / "log");
  ASSERT_TRUE(w.started()) << w.log();
  ASSERT_TRUE(wait_until([&] { return fs::exists(out / "a.txt.summary.md"); }, 90s)) << w.log();
  int n = 0;
  for (const std::string deleted : {".abridge", ".abridge/done", ".abridge"}) {
    SCOPED_TRACE(deleted);
    fs::remove_all(out / deleted);
    const std::string name = "doc" + std::to_string(++n) + ".txt";
    write_file(in / name, n % 2 ? kOtherText : kText);
    ASSERT_TRUE(wait_until([&] { return fs::exists(out / (name + ".summary.md")); }, 90s)) << w.log();
    EXPECT_TRUE(fs::is_regular_file(out / ".abridge" / "done" / (abridge::pipeline::sha256_hex(name + ".summary.md") + ".json")));
    EXPECT_TRUE(fs::is_directory(out / ".abridge" / "cache"));
    EXPECT_EQ(read_file(out / ".abridge" / "lock"), std::to_string(w.pid()) + "\n");
    const RunResult r = abridge_within(60, "summarize " + sq(in / "a.txt") + " -o " + sq(out.path()));
    EXPECT_EQ(r.exit_code, 3) << r.err;
  }
  EXPECT_FALSE(contains(w.log(), ", 1 failed")) << w.log();
  EXPECT_FALSE(contains(w.log(), "No such file or directory")) << w.log();
  EXPECT_EQ(w.stop(SIGTERM), 0) << w.log();
}

// An OUT_DIR inside another run's OUT_DIR is that run's: the outer run's clean-up leaves its temporary
// files alone (another process may hold its lock and be about to rename them into place).
TEST(HardeningOutDir, TheCleanUpNeverEntersAnotherOutDir) {
  TempDir in, out, logs;
  write_file(in / "a.txt", kText);
  const fs::path inner = out / "nested";
  const fs::path inner_tmp = inner / ".abridge-tmp-0123456789ab", inner_state_tmp = inner / ".abridge" / "done" / ".abridge-tmp-abcdefabcdef";
  const fs::path outer_tmp = out / "sub" / ".abridge-tmp-fedcba987654";
  WatchProcess w(quote(in.path()) + " -o " + quote(inner), logs / "log");
  ASSERT_TRUE(w.started()) << w.log();
  ASSERT_TRUE(wait_until([&] { return fs::exists(inner / ".abridge" / "done"); }, 60s)) << w.log();
  write_file(inner_tmp, "being written by the watch");
  write_file(inner_state_tmp, "a done record on its way");
  fs::create_directories(outer_tmp.parent_path());
  write_file(outer_tmp, "left by a killed run of the outer OUT_DIR");
  const RunResult r = abridge_within(60, "summarize " + sq(in / "a.txt") + " -o " + sq(out.path()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(inner_tmp)) << "the clean-up entered another OUT_DIR";
  EXPECT_TRUE(fs::exists(inner_state_tmp)) << "the clean-up entered another OUT_DIR's state";
  EXPECT_FALSE(fs::exists(outer_tmp)) << "its own OUT_DIR's leftovers stay";
  EXPECT_EQ(w.stop(SIGTERM), 0) << w.log();
}

// ---- 6. OUT_DIR inside an input --------------------------------------------------------------------

TEST(HardeningOutDir, OutDirInsideAnInputIsNeverAnInput) {
  TempDir t;
  const fs::path docs = t / "docs";
  fs::create_directories(docs / "b");
  write_file(docs / "a.txt", kText);
  write_file(docs / "b" / "c.txt", kOtherText);
  const std::string run = "summarize " + sq(docs) + " -r -o ";
  RunResult r = abridge_within(60, run + sq(docs / "summaries"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "2 summarized, 0 failed")) << r.err;
  // Again, and with other spellings of the same OUT_DIR: nothing new, nothing one level deeper.
  for (const std::string& o : std::vector<std::string>{sq(docs / "summaries"), sq(docs) + "/./summaries/", "summaries"}) {
    r = run_shell("cd " + sq(docs) + " && timeout 60 " + bin() + " " + run + o);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(contains(r.err, "0 summarized, 2 up to date, 0 failed")) << o << ": " << r.err;
  }
  for (const std::string& f : tree(docs)) EXPECT_FALSE(contains(f, ".summary.md.summary")) << f;
  EXPECT_FALSE(fs::exists(docs / "summaries" / "summaries"));
  // Another run's OUT_DIR (a folder holding .abridge) is not entered either.
  r = abridge_within(60, run + sq(t / "other"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "2 summarized, 0 failed")) << r.err;
  EXPECT_FALSE(fs::exists(t / "other" / "summaries"));
  // Named outright, a file inside OUT_DIR, or OUT_DIR itself, is refused.
  r = abridge_within(60, "summarize " + sq(docs / "summaries" / "a.txt.summary.md") + " " + sq(docs / "summaries") +
                             " -o " + sq(docs / "summaries"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "a.txt.summary.md: lies inside OUT_DIR")) << r.err;
  EXPECT_TRUE(contains(r.err, "summaries: is OUT_DIR or inside it")) << r.err;
}

// Another run's OUT_DIR (a folder holding .abridge) named at the top is skipped with one line, as it is
// below the top: summaries are never summarized again. It is not a failure.
TEST(HardeningOutDir, AnotherRunsOutDirNamedAtTheTopIsSkipped) {
  TempDir t;
  const fs::path docs = t / "docs", prev = t / "prev";
  fs::create_directories(docs);
  write_file(docs / "a.txt", kText);
  RunResult r = abridge_within(60, "summarize " + sq(docs) + " -o " + sq(prev));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(fs::is_directory(prev / ".abridge"));
  const std::string line = "abridge: " + prev.string() + ": skipped: an abridge output folder (holds .abridge)\n";
  r = abridge_within(60, "summarize " + sq(prev) + " " + sq(docs) + " -r -o " + sq(t / "new") + " --report " +
                             sq(t / "r.json"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count(r.err, line), 1u) << r.err;
  EXPECT_TRUE(contains(r.err, "1 summarized, 0 failed")) << r.err;
  EXPECT_FALSE(fs::exists(t / "new" / "a.txt.summary.md.summary.md"));
  EXPECT_EQ(json::parse(read_file(t / "r.json"))["failed"], 0);
  // watch: the same line once, nothing taken from it.
  r = abridge_within(60, "watch " + sq(prev) + " -o " + sq(t / "new2") + " --once");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count(r.err, line), 1u) << r.err;
  EXPECT_TRUE(contains(r.err, "0 summarized, 0 failed")) << r.err;
}

namespace {
mode_t mode_of(const fs::path& p) { return lstat_of(p).st_mode & 07777; }
}  // namespace

// A summary is never readable by more people than its input: it mirrors the input's read bits for group
// and others, and only where they can search every folder on the input's way; folders made for outputs
// mirror their input folders; OUT_DIR/.abridge is the running user's alone; a new --report is 0600.
TEST(HardeningOutDir, SummariesAreNoMoreReadableThanTheirInputs) {
  TempDir t;
  const fs::path docs = t / "docs", out = t / "out";
  fs::permissions(t.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                fs::perms::others_read | fs::perms::others_exec);
  fs::create_directories(docs / "closed");
  fs::create_directories(docs / "team");
  const std::vector<std::pair<std::string, mode_t>> files = {
      {"public.txt", 0644}, {"private.txt", 0600}, {"group.txt", 0640}, {"writable.txt", 0666},
      {"closed/open.txt", 0644}, {"team/open.txt", 0644}};
  for (const auto& [f, m] : files) {
    write_file(docs / f, f == "group.txt" ? kOtherText : kText);
    fs::permissions(docs / f, static_cast<fs::perms>(m));
  }
  fs::permissions(docs, static_cast<fs::perms>(0755));
  fs::permissions(docs / "closed", static_cast<fs::perms>(0700));
  fs::permissions(docs / "team", static_cast<fs::perms>(0750));
  const std::string sh = "umask 022; timeout 60 " + bin() + " summarize ";
  RunResult r = run_shell(sh + sq(docs) + " -r -q -o " + sq(out) + " --report " + sq(t / "r.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::map<std::string, mode_t> want = {
      {"public.txt", 0644},  {"private.txt", 0600},     {"group.txt", 0640},
      {"writable.txt", 0644},  // read bits only: a summary is written by abridge alone
      {"closed/open.txt", 0600}, {"team/open.txt", 0640}};
  for (const auto& [f, m] : want) EXPECT_EQ(mode_of(out / (f + ".summary.md")), m) << f;
  EXPECT_EQ(mode_of(out / "closed"), 0700u);
  EXPECT_EQ(mode_of(out / "team"), 0750u);
  EXPECT_EQ(mode_of(out / ".abridge"), 0700u);
  EXPECT_EQ(mode_of(out / ".abridge" / "lock"), 0600u);
  for (const auto& e : fs::directory_iterator(out / ".abridge" / "done")) EXPECT_EQ(mode_of(e.path()), 0600u) << e.path();
  EXPECT_EQ(mode_of(t / "r.json"), 0600u);  // a new report: it names every document

  // A folder above the input directory closes it: its summaries stay private.
  fs::create_directories(t / "shut" / "docs");
  write_file(t / "shut" / "docs" / "a.txt", kText);
  fs::permissions(t / "shut" / "docs" / "a.txt", static_cast<fs::perms>(0644));
  fs::permissions(t / "shut", static_cast<fs::perms>(0700));
  r = run_shell(sh + sq(t / "shut" / "docs") + " " + sq(docs / "closed" / "open.txt") + " -q -o " + sq(t / "out2"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(mode_of(t / "out2" / "a.txt.summary.md"), 0600u);
  EXPECT_EQ(mode_of(t / "out2" / "open.txt.summary.md"), 0600u);  // named itself, in a closed folder

  // An input made private after it was summarized: the up-to-date summary is narrowed on the next run;
  // a report that replaces one keeps the permission bits it had.
  fs::permissions(docs / "public.txt", static_cast<fs::perms>(0600));
  fs::permissions(t / "r.json", static_cast<fs::perms>(0644));
  r = run_shell(sh + sq(docs) + " -r -q -o " + sq(out) + " --report " + sq(t / "r.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "0 summarized, 6 up to date")) << r.err;
  EXPECT_EQ(mode_of(out / "public.txt.summary.md"), 0600u);
  EXPECT_EQ(mode_of(t / "r.json"), 0644u);
}

// ---- 7. cache integrity ----------------------------------------------------------------------------

TEST(HardeningOutDir, AFlippedBitInACacheEntryIsFoundAndSummarizedAgain) {
  TempDir in, out;
  write_file(in / "long.txt", read_file(source_path("tests/data/texts/R-intro.txt")).substr(0, 12000));
  const std::string run = "summarize " + sq(in / "long.txt") + " -o " + sq(out.path()) + " --model " +
                          sq(random_model_dir()) +
                          " --device cpu --summary-tokens 24 --context-tokens 1024 --chunk-tokens 256 --format json";
  RunResult r = abridge_within(600, run + " -q");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string summary = json::parse(read_file(out / "long.txt.summary.json"))["summary"];
  size_t flipped = 0;
  for (const auto& e : fs::directory_iterator(out / ".abridge" / "cache")) {
    std::string z = read_file(e.path());
    ASSERT_GT(z.size(), 12u);
    z[z.size() / 2] = static_cast<char>(z[z.size() / 2] ^ 0x10);  // one bit inside the payload
    write_file(e.path(), z);
    ++flipped;
  }
  ASSERT_GT(flipped, 4u);
  r = abridge_within(600, run + " --force");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GE(count(r.err, "a damaged cache entry (checksum) is summarized again"), 1u) << r.err;
  EXPECT_EQ(json::parse(read_file(out / "long.txt.summary.json"))["summary"], summary);
  // The entries were written again: a third run finds them whole.
  r = abridge_within(600, run + " --force");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "damaged")) << r.err;
  EXPECT_EQ(json::parse(read_file(out / "long.txt.summary.json"))["summary"], summary);
}

// ---- 8. one bad path is one failed document ----------------------------------------------------------

namespace {

// A tree of every kind of bad path beside two good documents.
struct BadTree {
  TempDir t;
  fs::path docs = t / "docs";
  std::string long_name = std::string(251, 'n') + ".txt";  // 255 bytes: legal; its output name is not
  BadTree() {
    fs::create_directories(docs / "long");
    write_file(docs / "good.txt", kText);
    write_file(docs / "long" / "fine.txt", kOtherText);
    fs::create_symlink("self.txt", docs / "self.txt");
    fs::create_symlink("pong.txt", docs / "ping.txt");
    fs::create_symlink("ping.txt", docs / "pong.txt");
    fs::create_symlink("nowhere.txt", docs / "broken.txt");
    fs::create_symlink("/dev/null", docs / "null.txt");
    fs::create_symlink("/", docs / "root-link");  // a link to a folder: not descended
    make_fifo(docs / "fifo.txt");
    if (running_as_root()) {
      EXPECT_EQ(::mknod((docs / "zero.txt").c_str(), S_IFCHR | 0644, makedev(1, 5)), 0);
    }
    write_file(docs / "long" / long_name, kText);
    make_deep(docs, "d", kDepth, "deep.txt");
    make_deep(docs, std::string(200, 'w'), 25, "wide.txt");  // 25 x 201 bytes: beyond PATH_MAX
  }
  ~BadTree() { remove_deep(t.path()); }
  static constexpr int kDepth = abridge::pipeline::kMaxFolderDepth + 3;

  // Each bad path is named once with its reason; the good documents are summarized.
  void expect_reported(const std::string& err) const {
    EXPECT_EQ(count(err, "self.txt: a symbolic link loop"), 1u) << err;
    EXPECT_EQ(count(err, "ping.txt: a symbolic link loop"), 1u) << err;
    EXPECT_EQ(count(err, "pong.txt: a symbolic link loop"), 1u) << err;
    EXPECT_EQ(count(err, "broken.txt: a broken symbolic link"), 1u) << err;
    EXPECT_EQ(count(err, "null.txt: a symbolic link to a file outside"), 1u) << err;
    EXPECT_EQ(count(err, "fifo.txt: not a regular file (a FIFO, device or socket is not read)"), 1u) << err;
    if (running_as_root()) {
      EXPECT_EQ(count(err, "zero.txt: not a regular file"), 1u) << err;
    }
    EXPECT_EQ(count(err, long_name + ": "), 1u) << err;
    EXPECT_TRUE(contains(line_with(err, long_name), "File name too long")) << err;
    EXPECT_EQ(count(err, ": more than 128 folders deep: not entered"), 1u) << err;
    EXPECT_EQ(count(err, "longer than PATH_MAX"), 1u) << err;
    EXPECT_FALSE(contains(err, "filesystem error")) << err;
  }
};

}  // namespace

TEST(HardeningBadPaths, EachIsOneFailedDocumentAndTheRestGoOn) {
  BadTree b;
  TempDir out;
  const RunResult r = abridge_within(120, "summarize " + sq(b.docs) + " -r -o " + sq(out.path()) + " --report " +
                                              sq(out / "report.json"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  b.expect_reported(r.err);
  EXPECT_TRUE(fs::is_regular_file(out / "good.txt.summary.md"));
  EXPECT_TRUE(fs::is_regular_file(out / "long" / "fine.txt.summary.md"));
  const json report = json::parse(read_file(out / "report.json"));
  EXPECT_EQ(report["summarized"], 2);
  EXPECT_EQ(report["failed"], running_as_root() ? 10 : 9);
  for (const auto& d : report["documents"])
    if (d["status"] == "failed") {
      EXPECT_FALSE(d["error"].get<std::string>().empty()) << d;
    }

  // Without -r only the top level, with the same per-path failures there.
  TempDir out2;
  const RunResult flat = abridge_within(120, "summarize " + sq(b.docs) + " -o " + sq(out2.path()));
  EXPECT_EQ(flat.exit_code, 1) << flat.err;
  EXPECT_TRUE(contains(flat.err, "self.txt: a symbolic link loop")) << flat.err;
  EXPECT_TRUE(contains(flat.err, "1 summarized")) << flat.err;

  // watch --once: the same failures, exit 1.
  TempDir out3;
  const RunResult once = abridge_within(120, "watch " + sq(b.docs) + " -o " + sq(out3.path()) + " --once");
  EXPECT_EQ(once.exit_code, 1) << once.err;
  b.expect_reported(once.err);
  EXPECT_TRUE(fs::is_regular_file(out3 / "good.txt.summary.md"));
}

// A watch over a tree with bad paths logs each once and keeps serving.
TEST(HardeningBadPaths, AWatchLogsEachOnceAndKeepsServing) {
  BadTree b;
  TempDir out, logs;
  WatchProcess w(quote(b.docs) + " -o " + quote(out.path()) + " --settle 0.2 --rescan 0.5", logs / "log");
  ASSERT_TRUE(w.started()) << w.log();
  ASSERT_TRUE(wait_until([&] { return fs::exists(out / "good.txt.summary.md"); }, 90s)) << w.log();
  write_file(b.docs / "new.txt", kOtherText);
  ASSERT_TRUE(wait_until([&] { return fs::exists(out / "new.txt.summary.md"); }, 90s)) << w.log();
  std::this_thread::sleep_for(1500ms);  // a few rescans
  const std::string log = w.log();
  EXPECT_EQ(count(log, "self.txt: a symbolic link loop"), 1u) << log;
  EXPECT_EQ(count(log, "null.txt: a symbolic link to a file outside"), 1u) << log;
  EXPECT_EQ(count(log, "more than 128 folders deep"), 1u) << log;
  EXPECT_EQ(w.stop(SIGTERM), 0) << w.log();
}

// A file replaced by a link out of the tree while a watch runs (one summarized, one still settling) is
// one bad path, logged once: not also taken and failed when it is opened.
TEST(HardeningBadPaths, AWatchLogsAFileSwappedForALinkOnce) {
  TempDir t, out, logs;
  const fs::path docs = t / "docs";
  fs::create_directories(docs);
  write_file(t / "secret.txt", kOtherText);
  write_file(docs / "a.txt", kText);
  WatchProcess w(quote(docs) + " -o " + quote(out.path()) + " --settle 0.5 --rescan 0.3", logs / "log");
  ASSERT_TRUE(w.started()) << w.log();
  ASSERT_TRUE(wait_until([&] { return fs::exists(out / "a.txt.summary.md"); }, 90s)) << w.log();
  // a.txt: swapped as `ln -sf` does (a link renamed over it); b.txt: swapped before it settled.
  fs::create_symlink(t / "secret.txt", docs / ".swap");
  fs::rename(docs / ".swap", docs / "a.txt");
  write_file(docs / "b.txt", kOtherText);
  std::this_thread::sleep_for(100ms);
  fs::remove(docs / "b.txt");
  fs::create_symlink(t / "secret.txt", docs / "b.txt");
  const std::string outside = ": a symbolic link to a file outside";
  ASSERT_TRUE(wait_until([&] { return count(w.log(), outside) >= 2; }, 60s)) << w.log();
  std::this_thread::sleep_for(2500ms);  // several rescans and settle windows
  const std::string log = w.log();
  EXPECT_EQ(count(log, "a.txt" + outside), 1u) << log;
  EXPECT_EQ(count(log, "b.txt" + outside), 1u) << log;
  EXPECT_FALSE(contains(log, ", 1 failed") || contains(log, ", 2 failed")) << log;  // no batch failed on them
  EXPECT_FALSE(fs::exists(out / "b.txt.summary.md"));
  EXPECT_EQ(w.stop(SIGTERM), 0) << log;
}

// Two inputs that would write one output: the same file is summarized once; a different one fails,
// naming the first, and the rest go on.
TEST(HardeningBadPaths, TwoInputsForOneOutput) {
  TempDir t, out, out2;
  fs::create_directories(t / "a");
  fs::create_directories(t / "b");
  write_file(t / "a" / "x.txt", kText);
  write_file(t / "b" / "x.txt", kOtherText);
  write_file(t / "good.txt", kText);
  RunResult r = abridge_within(60, "summarize " + sq(t / "a" / "x.txt") + " " + sq(t / "b" / "x.txt") + " " +
                                       sq(t / "good.txt") + " -o " + sq(out.path()));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, (t / "b" / "x.txt").string() + ": would write the same output as " +
                                  (t / "a" / "x.txt").string()))
      << r.err;
  EXPECT_TRUE(contains(r.err, "2 summarized, 1 failed")) << r.err;
  EXPECT_TRUE(contains(read_file(out / "x.txt.summary.md"), "harbour"));  // the first one's
  // The same file named three ways is one document.
  r = run_shell("cd " + sq(t.path()) + " && timeout 60 " + bin() + " summarize good.txt ./good.txt " +
                sq(t / "good.txt") + " . -o " + sq(out2.path()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "1 summarized, 0 failed")) << r.err;
}

// An unreadable folder, a link into it and an unreadable file (as the user nobody when run as root).
TEST(HardeningBadPaths, UnreadableFoldersAndFilesAreNamedWithTheReason) {
  TempDir t;
  const fs::path docs = t / "docs", out = t / "out";
  fs::create_directories(docs / "private");
  fs::create_directories(out);
  write_file(docs / "good.txt", kText);
  write_file(docs / "private" / "secret.txt", kOtherText);
  write_file(docs / "noread.txt", kOtherText);
  fs::create_symlink("private/secret.txt", docs / "link.txt");
  fs::permissions(docs / "private", fs::perms::none);
  fs::permissions(docs / "noread.txt", fs::perms::none);
  fs::permissions(out, fs::perms::all);
  const RunResult r = run_shell(as_nobody("timeout 60 " + bin() + " summarize " + sq(docs) + " -r -o " + sq(out)));
  fs::permissions(docs / "private", fs::perms::owner_all);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, (docs / "private").string() + ": cannot open the folder: Permission denied")) << r.err;
  EXPECT_TRUE(contains(r.err, "link.txt: cannot follow the symbolic link: Permission denied")) << r.err;
  EXPECT_TRUE(contains(r.err, "noread.txt: cannot open: Permission denied")) << r.err;
  EXPECT_TRUE(fs::exists(out / "good.txt.summary.md"));
  EXPECT_TRUE(contains(r.err, "1 summarized, 3 failed")) << r.err;
}

// ---- 9. names that are not UTF-8 --------------------------------------------------------------------

TEST(HardeningNames, BytesOnDiskEscapedInMessagesLogsAndJson) {
  TempDir t, out;
  const fs::path docs = t / "docs";
  fs::create_directories(docs);
  const std::vector<std::string> names = {"caf\xE9.txt", "two\nlines.txt", "esc\x1B[31mred.txt", "back\\slash.txt"};
  for (size_t i = 0; i < names.size(); ++i) write_file(docs / names[i], i % 2 ? kText : kOtherText);
  const std::string run = "summarize " + sq(docs) + " -o " + sq(out.path()) + " --format json --report " +
                          sq(t / "report.json");
  RunResult r = abridge_within(60, run);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const std::string& n : names) {
    const fs::path output = out / (n + ".summary.json");
    ASSERT_TRUE(fs::is_regular_file(output)) << n;  // the exact bytes on disk
    const json j = json::parse(read_file(output));
    EXPECT_FALSE(j["summary"].get<std::string>().empty());
  }
  // Messages: one line per document, no raw control character, the bytes shown as \xNN.
  EXPECT_EQ(r.err.find('\x1B'), std::string::npos) << r.err;
  std::istringstream lines(r.err);
  std::string line;
  size_t n_lines = 0;
  while (std::getline(lines, line)) {
    EXPECT_EQ(line.rfind("abridge: ", 0), 0u) << line;
    ++n_lines;
  }
  EXPECT_EQ(n_lines, names.size() + 1) << r.err;
  EXPECT_TRUE(contains(r.err, "caf\\xE9.txt")) << r.err;
  EXPECT_TRUE(contains(r.err, "two\\x0Alines.txt")) << r.err;
  EXPECT_TRUE(contains(r.err, "esc\\x1B[31mred.txt")) << r.err;
  EXPECT_TRUE(contains(r.err, "back\\\\slash.txt")) << r.err;
  const json report = json::parse(read_file(t / "report.json"));
  EXPECT_EQ(report["summarized"], 4);
  std::set<std::string> paths;
  for (const auto& d : report["documents"]) paths.insert(fs::path(d["path"].get<std::string>()).filename().string());
  EXPECT_TRUE(paths.count("caf\\xE9.txt")) << report.dump();
  // Run records are kept: the next run finds every output up to date.
  r = abridge_within(60, run);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "0 summarized, 4 up to date, 0 failed")) << r.err;
  // A fatal error that names one is escaped the same way (a model folder, a tokenizer file).
  for (const std::string& cmd : {"model info " + sq(docs / names[2]),
                                 "tokenize --tokenizer " + sq(docs / names[2]) + " " + sq(docs / names[3])}) {
    r = abridge_within(60, cmd);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err.find('\x1B'), std::string::npos) << r.err;
    EXPECT_TRUE(contains(r.err, "esc\\x1B[31mred.txt")) << r.err;
    EXPECT_EQ(count(r.err, "\n"), 1u) << r.err;
  }
  // watch logs them escaped too.
  TempDir out2;
  r = abridge_within(60, "watch " + sq(docs) + " -o " + sq(out2.path()) + " --once");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find('\x1B'), std::string::npos) << r.err;
}

// C1 controls (U+009B CSI, U+0085 NEL), the line and paragraph separators and the bidi controls are
// valid UTF-8 but change how what follows is shown: each of their bytes is escaped like a C0 control, in
// messages, the JSON report, watch's log and a fatal error naming the file.
TEST(HardeningNames, C1ControlsSeparatorsAndBidiControlsAreEscaped) {
  TempDir t, out, out2;
  const fs::path docs = t / "docs";
  fs::create_directories(docs);
  // name on disk -> how it is shown
  const std::vector<std::pair<std::string, std::string>> names = {
      {"csi\xC2\x9B" "31m.txt", "csi\\xC2\\x9B31m.txt"},      {"nel\xC2\x85x.txt", "nel\\xC2\\x85x.txt"},
      {"st\xC2\x9Cx.txt", "st\\xC2\\x9Cx.txt"},               {"ls\xE2\x80\xA8x.txt", "ls\\xE2\\x80\\xA8x.txt"},
      {"ps\xE2\x80\xA9x.txt", "ps\\xE2\\x80\\xA9x.txt"},      {"rlo\xE2\x80\xAEtxt.exe.txt", "rlo\\xE2\\x80\\xAEtxt.exe.txt"},
      {"lri\xE2\x81\xA6x.txt", "lri\\xE2\\x81\\xA6x.txt"},    {"rlm\xE2\x80\x8Fx.txt", "rlm\\xE2\\x80\\x8Fx.txt"},
      {"caf\xC3\xA9-\xE4\xB8\xAD.txt", "caf\xC3\xA9-\xE4\xB8\xAD.txt"}};  // letters stay as they are
  for (const auto& [n, shown] : names) write_file(docs / n, kText);
  const RunResult r = abridge_within(60, "summarize " + sq(docs) + " -o " + sq(out.path()) + " --report " + sq(t / "r.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string report = read_file(t / "r.json");
  std::set<std::string> reported;
  const json parsed = json::parse(report);
  for (const auto& d : parsed["documents"]) reported.insert(d["path"].get<std::string>());
  for (const auto& [n, shown] : names) {
    EXPECT_TRUE(fs::is_regular_file(out / (n + ".summary.md"))) << shown;  // the exact bytes on disk
    EXPECT_TRUE(contains(r.err, shown + " -> ")) << shown << "\n" << r.err;
    EXPECT_TRUE(reported.count((docs / shown).string())) << shown << "\n" << report;
  }
  for (const char* raw : {"\xC2\x9B", "\xC2\x85", "\xC2\x9C", "\xE2\x80\xA8", "\xE2\x80\xA9", "\xE2\x80\xAE",
                                 "\xE2\x81\xA6", "\xE2\x80\x8F"}) {
    EXPECT_FALSE(contains(r.err, raw)) << r.err;
    EXPECT_FALSE(contains(report, raw));
  }
  // watch's log, and a fatal error naming the file.
  const RunResult w = abridge_within(60, "watch " + sq(docs) + " -o " + sq(out2.path()) + " --once");
  EXPECT_EQ(w.exit_code, 0) << w.err;
  EXPECT_TRUE(contains(w.err, names[0].second)) << w.err;
  EXPECT_FALSE(contains(w.err, "\xC2\x9B")) << w.err;
  const RunResult m = abridge_within(60, "model info " + sq(docs / names[5].first));
  EXPECT_EQ(m.exit_code, 2) << m.err;
  EXPECT_TRUE(contains(m.err, names[5].second)) << m.err;
  EXPECT_FALSE(contains(m.err, "\xE2\x80\xAE")) << m.err;
}

// ---- 10. long names, spellings of OUT_DIR -----------------------------------------------------------

TEST(HardeningNames, LongNamesWhoseOutputFitsAndOneUpToDateKeyPerOutDir) {
  TempDir t;
  const fs::path docs = t / "docs";
  fs::create_directories(docs);
  // 244 bytes + ".summary.md" = 255: the longest legal output name; the temporary name is short.
  const std::string fits = std::string(240, 'a') + ".txt", too_long = std::string(241, 'b') + ".txt";
  write_file(docs / fits, kText);
  write_file(docs / too_long, kOtherText);
  RunResult r = run_shell("cd " + sq(t.path()) + " && timeout 60 " + bin() + " summarize docs -o out");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(fs::is_regular_file(t / "out" / (fits + ".summary.md"))) << r.err;
  EXPECT_TRUE(contains(line_with(r.err, too_long), "File name too long")) << r.err;
  fs::remove(docs / too_long);
  // -o out, -o ./out, -o /abs/out (and docs/, ./docs): one OUT_DIR, one set of records.
  for (const std::string& args : std::vector<std::string>{"docs -o ./out", "./docs/ -o " + sq(t / "out"), sq(docs) + " -o out/"}) {
    r = run_shell("cd " + sq(t.path()) + " && timeout 60 " + bin() + " summarize " + args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(contains(r.err, "0 summarized, 1 up to date, 0 failed")) << args << ": " << r.err;
  }
}

// ---- 11. bounded reads and no waits ------------------------------------------------------------------

TEST(HardeningReads, FifosDevicesAndHugeFilesAreRefusedNotWaitedOnOrReadWhole) {
  TempDir t;
  write_file(t / "a.txt", kText);
  make_fifo(t / "fifo");
  fs::create_symlink("/dev/zero", t / "zero.txt");
  int made = 0;
  // A model directory whose files are FIFOs, /dev/zero or too large, one at a time.
  auto model_with = [&](const std::string& file, const std::function<void(const fs::path&)>& make) {
    const fs::path dir = t / ("model-" + std::to_string(++made) + "-" + file);  // one folder per call
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(random_model_dir()))
      if (e.path().filename() != file) fs::create_symlink(e.path(), dir / e.path().filename());
    make(dir / file);
    return dir;
  };
  auto fifo = [](const fs::path& p) { make_fifo(p); };
  auto zero = [](const fs::path& p) { fs::create_symlink("/dev/zero", p); };
  auto huge = [](const fs::path& p) {  // 1 GiB, sparse: the size is refused before a byte is read
    const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_EQ(::ftruncate(fd, off_t{1} << 30), 0);
    ::close(fd);
  };
  struct Case {
    std::string args, expect;
  };
  std::vector<Case> cases = {
      {"model info " + sq(model_with("config.json", fifo)), "config.json: not a regular file"},
      {"model info " + sq(model_with("tokenizer.json", fifo)), "tokenizer.json: not a regular file"},
      {"model info " + sq(model_with("model.safetensors", fifo)), "model.safetensors: not a regular file"},
      {"model info " + sq(model_with("config.json", zero)), "config.json: not a regular file"},
      {"model info " + sq(model_with("config.json", huge)), "config.json: too large (1024.0 MiB; the limit is 16.0 MiB)"},
      {"model info " + sq(model_with("tokenizer.json", huge)), "tokenizer.json: too large (1024.0 MiB; the limit is 64.0 MiB)"},
      {"summarize " + sq(t / "a.txt") + " -o " + sq(t / "o1") + " --config " + sq(t / "fifo"), "--config: "},
      {"summarize " + sq(t / "a.txt") + " -o " + sq(t / "o2") + " --config " + sq(t.path()), "is a directory"},
      {"summarize " + sq(t / "a.txt") + " -o " + sq(t / "o3") + " --prompt " + sq(t / "fifo"), "--prompt: "},
      {"summarize " + sq(t / "a.txt") + " -o " + sq(t / "o4") + " --prompt /dev/zero", "--prompt: /dev/zero: not a regular file"},
      {"tokenize /dev/zero", "/dev/zero: not a regular file"},
      {"tokenize " + sq(t / "fifo"), "fifo: not a regular file"},
      {"tokenize --tokenizer /dev/zero " + sq(t / "a.txt"), "/dev/zero: not a regular file"},
      {"chunk /dev/zero --max-tokens 64", "/dev/zero: not a regular file"},
      {"chunk " + sq(t / "fifo") + " --max-tokens 64", "fifo: not a regular file"},
      {"summarize " + sq(t / "zero.txt") + " " + sq(t / "fifo") + ".txt -o " + sq(t / "o5"), "zero.txt: not a regular file"},
  };
  // Standard input is read up to a bound: an endless stream of NULs is refused there.
  cases.push_back({"summarize - -o " + sq(t / "o6") + " </dev/zero", "the paths on standard input: too large (more than 64.0 MiB)"});
  make_fifo(t / "fifo.txt");
  for (const Case& c : cases) {
    const auto t0 = std::chrono::steady_clock::now();
    const RunResult r = abridge_within(60, c.args);
    EXPECT_NE(r.exit_code, 124) << c.args << ": hung";
    EXPECT_TRUE(r.exit_code == 1 || r.exit_code == 2) << c.args << ": " << r.exit_code << " " << r.err;
    EXPECT_TRUE(contains(r.err, c.expect)) << c.args << ":\n" << r.err;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s) << c.args;
  }
}

// ---- 12. text of NUL bytes ---------------------------------------------------------------------------

// A 300 MB file of NUL bytes is refused in seconds, in memory proportional to it.
// A socket cannot even be opened (open(2) says "No such device or address"): as --prompt, --config, a
// model's config.json or a document to tokenize it is refused as what it is, with one line.
TEST(HardeningReads, SocketsAreRefusedAsNotRegularFiles) {
  TempDir t;
  write_file(t / "a.txt", kText);
  const fs::path sock = t / "sock";
  const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(sock.string().size(), sizeof addr.sun_path);
  std::strcpy(addr.sun_path, sock.c_str());
  ASSERT_EQ(::bind(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  const fs::path model = t / "model";
  fs::create_directories(model);
  for (const auto& e : fs::directory_iterator(random_model_dir()))
    if (e.path().filename() != "config.json") fs::create_symlink(e.path(), model / e.path().filename());
  fs::create_symlink(sock, model / "config.json");
  const std::string run = "summarize " + sq(t / "a.txt") + " -o " + sq(t / "out");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {run + " --prompt " + sq(sock), "--prompt: " + sock.string() + ": not a regular file (a socket"},
      {run + " --config " + sq(sock), "--config: " + sock.string() + ": not a regular file (a socket"},
      {"model info " + sq(model), "config.json: not a regular file (a socket"},
      {"tokenize " + sq(sock), "sock: not a regular file (a socket"},
  };
  for (const auto& [args, expect] : cases) {
    const RunResult r = abridge_within(60, args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.err;
    EXPECT_TRUE(contains(r.err, expect)) << args << ":\n" << r.err;
    EXPECT_FALSE(contains(r.err, "No such device or address")) << r.err;
    EXPECT_EQ(count(r.err, "\n"), 1u) << r.err;
  }
  EXPECT_FALSE(fs::exists(t / "out" / "a.txt.summary.md"));
  ::close(s);
}

TEST(HardeningReads, ThreeHundredMegabytesOfNulsAreRefusedFastInBoundedMemory) {
  TempDir t;
  const size_t bytes = size_t{300} << 20;
  {
    const int fd = ::open((t / "zeros.txt").c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(bytes)), 0);  // reads as NULs
    ::close(fd);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 1);
    ::dup2(::open((t / "err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), 2);
    const std::string binary = abridge_binary(), in = (t / "zeros.txt").string(), out = (t / "out").string();
    ::execl(binary.c_str(), "abridge", "summarize", in.c_str(), "-o", out.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  struct rusage usage {};
  ASSERT_EQ(::wait4(pid, &status, 0, &usage), pid);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double peak_mib = static_cast<double>(usage.ru_maxrss) / 1024.0;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1);
  EXPECT_TRUE(contains(read_file(t / "err"), "zeros.txt: not text: 100% of its bytes are NUL or control characters"))
      << read_file(t / "err");
  EXPECT_LT(seconds, 30.0);
  // The bytes are read once (300 MiB) and looked at in place: at most the file again beside them.
  EXPECT_LT(peak_mib, 2.0 * 300 + 200) << peak_mib << " MiB";
  std::printf("[ measured ] 300 MiB of NULs refused in %.1f s, peak RSS %.0f MiB\n", seconds, peak_mib);
}

// ---- 13. nested JSON ---------------------------------------------------------------------------------

TEST(HardeningJson, NestingIsBoundedAndErrorsAreOneShortLine) {
  TempDir t;
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  int made = 0;
  auto model_with = [&](const std::string& file, const std::string& text) {
    const fs::path dir = t / ("model-" + std::to_string(++made) + "-" + file);  // one folder per call
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(random_model_dir()))
      if (e.path().filename() != file) fs::create_symlink(e.path(), dir / e.path().filename());
    write_file(dir / file, text);
    return dir;
  };
  const fs::path tok_deep = model_with("tokenizer.json", "{\"model\": " + deep + "}");
  const fs::path cfg_deep = model_with("config.json", "{\"model_type\": \"qwen3\", \"rope_scaling\": " + deep + "}");
  const fs::path long_token = model_with("tokenizer.json", "{\"model\": \"" + std::string(10 << 20, 'x'));
  write_file(t / "a.txt", kText);
  for (const std::string& args :
       {"model info " + sq(tok_deep), "model info " + sq(cfg_deep), "model info " + sq(long_token),
        "tokenize --tokenizer " + sq(tok_deep / "tokenizer.json") + " " + sq(t / "a.txt"),
        "summarize " + sq(t / "a.txt") + " -o " + sq(t / "out") + " --model " + sq(tok_deep)}) {
    const RunResult r = abridge_within(60, args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "not valid JSON")) << args << ": " << r.err;
    EXPECT_LT(r.err.size(), 700u) << args << ": " << r.err.substr(0, 700);
    EXPECT_EQ(count(r.err, "\n"), 1u) << args << ": " << r.err.substr(0, 700);
  }
  EXPECT_TRUE(contains(abridge_within(60, "model info " + sq(tok_deep)).err, "nested more than 64 levels deep"));
  // A value of bytes that are all escaped in the message (found by fuzz_config_json): still one short line.
  try {
    abridge::engine::parse_json_bounded("\"" + std::string(1000, '\x7f') + std::string(200, '\xff') + "\x0f");
    ADD_FAILURE() << "parsed";
  } catch (const abridge::Error& e) {
    EXPECT_LT(std::strlen(e.what()), 400u) << e.what();
    EXPECT_EQ(std::strchr(e.what(), '\n'), nullptr);
  }
  // The parser itself, on every depth around the bound.
  for (const int depth : {63, 64, 65, 1000}) {
    const std::string text = std::string(static_cast<size_t>(depth), '[') + std::string(static_cast<size_t>(depth), ']');
    bool ok = true;
    try {
      abridge::engine::parse_json_bounded(text);
    } catch (const abridge::Error&) {
      ok = false;
    }
    EXPECT_EQ(ok, depth <= abridge::engine::kMaxJsonDepth) << depth;
  }
}

// ---- 14. threads -------------------------------------------------------------------------------------

// A thread that cannot start (here: no address space left for its stack, in a child process) is an
// error from the pool's constructor, after the threads already started are joined: not a hang, not an
// abort.
TEST(HardeningThreads, AThreadThatCannotStartIsAnErrorNotAHang) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    // The address space in use now, plus room for a few 8 MiB thread stacks only.
    std::ifstream statm("/proc/self/statm");
    size_t pages = 0;
    statm >> pages;
    const rlim_t limit = static_cast<rlim_t>(pages) * static_cast<rlim_t>(::sysconf(_SC_PAGESIZE)) + (rlim_t{48} << 20);
    const struct rlimit as {limit, limit};
    if (::setrlimit(RLIMIT_AS, &as) != 0) ::_exit(3);
    try {
      abridge::engine::ThreadPool pool(256);
      ::_exit(1);  // all 256 started: the limit did not bite
    } catch (const abridge::Error& e) {
      ::_exit(contains(e.what(), "cannot start CPU thread") && contains(e.what(), "of 256") ? 0 : 2);
    }
  }
  int status = 0;
  const bool ended = wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 30s);
  if (!ended) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  ASSERT_TRUE(ended) << "the pool's constructor hung";
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// The same through the command: a task limit (RLIMIT_NPROC set with prlimit, as nobody when run as root) makes
// `generate --threads 64` fail with one line; --threads out of range is refused before anything loads.
TEST(HardeningThreads, ATaskLimitIsAnErrorAndThreadsAreBounded) {
  const std::string generate = bin() + " generate --model " + sq(random_model_dir()) +
                               " --device cpu --prompt hello --max-new-tokens 2 --threads 64";
  // RLIMIT_NPROC counts every task of the user: only as nobody (tests run as root) is the count known.
  if (running_as_root()) {
    const RunResult r = run_shell(as_nobody("exec prlimit --nproc=4 timeout 60 " + generate));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(contains(r.err, "cannot start CPU thread")) << r.err;
    // summarize's own worker threads: no task to spare beside timeout and abridge itself.
    TempDir t;
    write_file(t / "a.txt", kText);
    fs::create_directories(t / "out");
    fs::permissions(t / "out", fs::perms::all);
    const RunResult s = run_shell(as_nobody("exec prlimit --nproc=2 timeout 60 " + bin() + " summarize " +
                                            sq(t / "a.txt") + " -o " + sq(t / "out")));
    EXPECT_EQ(s.exit_code, 2) << s.err;
    EXPECT_TRUE(contains(s.err, "cannot start a worker thread")) << s.err;
    EXPECT_EQ(count(s.err, "\n"), 1u) << s.err;
  }
  for (const std::string bad : {"--threads 100000", "--threads=-5", "--threads 1025"}) {
    for (const std::string& cmd : {"generate --model " + sq(random_model_dir()) + " --prompt hi " + bad,
                                  "summarize x.txt -o /nonexistent/out " + bad}) {
      const RunResult b = abridge_within(60, cmd);
      EXPECT_EQ(b.exit_code, 2) << cmd;
      EXPECT_TRUE(contains(b.err, "--threads must be in 0..1024")) << cmd << ": " << b.err;
    }
  }
}

// ---- 15. every loop ends -------------------------------------------------------------------------------

// A prompt so long that merges cannot shrink a level: the document fails with the reason, the run ends.
TEST(HardeningLoops, MergesThatCannotShrinkFailTheDocumentAndTheRunEnds) {
  TempDir t, out;
  const abridge::engine::Tokenizer tok = abridge::engine::Tokenizer::from_json(abridge::engine::bundled_tokenizer_json());
  std::string prompt;
  while (tok.encode(prompt).size() < 770) prompt += "Summarize this part of the report carefully and completely. ";
  write_file(t / "prompt.txt", prompt);
  write_file(t / "doc.txt", read_file(source_path("tests/data/texts/R-intro.txt")).substr(0, 2500));
  const auto t0 = std::chrono::steady_clock::now();
  const RunResult r = abridge_within(500, "summarize " + sq(t / "doc.txt") + " -o " + sq(out.path()) + " --model " +
                                              sq(random_model_dir()) + " --device cpu --prompt " + sq(t / "prompt.txt") +
                                              " --context-tokens 1024 --summary-tokens 64");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "doc.txt: ")) << r.err;
  EXPECT_TRUE(contains(r.err, "cannot be merged") || contains(r.err, "does not fit the context")) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 400s);
  // The cache holds at most one entry per request the plan could make (the chunks), not a growing pile.
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(out / ".abridge" / "cache")) ++entries;
  EXPECT_LT(entries, 64u);
}

// ---- 16. options and model fields against their ranges -------------------------------------------------

TEST(HardeningOptions, EveryOutOfRangeValueIsRefusedNamingTheOption) {
  TempDir t;
  write_file(t / "a.txt", kText);
  const std::string s = "summarize " + sq(t / "a.txt") + " -o " + sq(t / "out") + " ";
  const std::string w = "watch " + sq(t.path()) + " -o " + sq(t / "wout") + " --once ";
  const std::string g = "generate --model " + sq(random_model_dir()) + " --prompt hi --device cpu ";
  const std::string c = "chunk " + sq(t / "a.txt") + " ";
  const std::string b = "bench engine --model " + sq(random_model_dir()) + " --device cpu ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {s + "--pdf-max-memory=-1", "--pdf-max-memory"},
      {s + "--pdf-max-memory 0", "--pdf-max-memory"},
      {s + "--pdf-timeout=-10", "--pdf-timeout"},
      {s + "--pdf-timeout nan", "--pdf-timeout"},
      {s + "--threads=-5", "--threads"},
      {s + "--threads 100000", "--threads"},
      {s + "--config " + sq(t.path()), "--config"},
      {s + "--summary-tokens 0", "--summary-tokens"},
      {s + "--context-tokens 100", "--context-tokens"},
      {s + "--chunk-tokens 5", "--chunk-tokens"},
      {s + "--gpu-memory-fraction 0", "--gpu-memory-fraction"},
      {s + "--gpu-memory-fraction 1.5", "--gpu-memory-fraction"},
      {s + "--kv-cache-tokens=-1", "--kv-cache-tokens"},
      {s + "--prefill-chunk 10", "--prefill-chunk"},
      {s + "--shard 3/2", "--shard"},
      {w + "--settle=-1", "--settle"},
      {w + "--rescan 0", "--rescan"},
      {g + "--temperature nan", "--temperature"},
      {g + "--temperature=-1", "--temperature"},
      {g + "--top-p 0", "--top-p"},
      {g + "--max-new-tokens 0", "--max-new-tokens"},
      {g + "--threads 2000", "--threads"},
      {g + "--gpu-memory-fraction 0", "--gpu-memory-fraction"},
      {c + "--max-tokens 5", "--max-tokens"},
      {c + "--max-tokens 64 --overlap=-1", "--overlap"},
      {b + "--steps 0", "--steps"},
      {b + "--time-limit=-1", "--time-limit"},
      {b + "--gemm-tflops inf", "--gemm-tflops"},
  };
  for (const auto& [args, option] : cases) {
    const RunResult r = abridge_within(60, args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.err;
    EXPECT_TRUE(contains(r.err, option)) << args << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(t / "out" / "a.txt.summary.md"));

  // Model fields: checked before they are narrowed or used.
  const json base = json::parse(read_file(random_model_dir() / "config.json"));
  // (field, its value as JSON text, what the message must name: the field, or the value the JSON
  // parser cannot hold)
  const std::vector<std::tuple<std::string, std::string, std::string>> fields = {
      {"eos_token_id", "1099511627776", "eos_token_id"},
      {"eos_token_id", "[151645, 1099511627776]", "eos_token_id"},
      {"eos_token_id", "-1", "eos_token_id"},
      {"bos_token_id", "1099511627776", "bos_token_id"},
      {"sliding_window", "1099511627776", "sliding_window"},
      {"max_window_layers", "-1", "max_window_layers"},
      {"rope_theta", "0.5", "rope_theta"},
      {"rope_theta", "1e400", "number overflow parsing '1e400'"},
      {"vocab_size", "1099511627776", "vocab_size"},
      {"num_hidden_layers", "0", "num_hidden_layers"},
  };
  int made = 0;
  for (const auto& [field, value, expect] : fields) {
    json config = base;
    config[field] = "@VALUE@";
    std::string text = config.dump();
    text.replace(text.find("\"@VALUE@\""), 9, value);
    const fs::path dir = t / ("model-" + std::to_string(++made));
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(random_model_dir()))
      if (e.path().filename() != "config.json") fs::create_symlink(e.path(), dir / e.path().filename());
    write_file(dir / "config.json", text);
    const RunResult r = abridge_within(60, "model info " + sq(dir));
    EXPECT_EQ(r.exit_code, 2) << field << " = " << value << ": " << r.err;
    EXPECT_TRUE(contains(r.err, expect)) << field << " = " << value << ": " << r.err;
    EXPECT_EQ(count(r.err, "\n"), 1u) << r.err;
  }
}

// ---- 17. messages -------------------------------------------------------------------------------------

TEST(HardeningMessages, ThePathOnceAndTheReasonAlways) {
  TempDir t;
  write_file(t / "latin1.txt", "caf\xE9 au lait, encore une fois, s'il vous pla\xEEt.");
  make_fifo(t / "pipe.txt");
  const std::string missing = (t / "missing.txt").string();
  for (const auto& [args, path, reason] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"tokenize " + sq(missing), missing, "no such file"},
           {"tokenize " + sq(t / "latin1.txt"), (t / "latin1.txt").string(), "invalid UTF-8 at byte 3"},
           {"tokenize " + sq(t / "pipe.txt"), (t / "pipe.txt").string(), "not a regular file"},
           {"chunk " + sq(t / "pipe.txt") + " --max-tokens 64", (t / "pipe.txt").string(), "not a regular file"},
           {"summarize " + sq(t / "pipe.txt") + " -o " + sq(t / "out"), (t / "pipe.txt").string(),
            "not a regular file (a FIFO, device or socket is not read)"},
           {"summarize " + sq(missing) + " -o " + sq(t / "out"), missing, "no such file or directory"},
       }) {
    const RunResult r = abridge_within(60, args);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_EQ(count(r.err, path), 1u) << args << ": " << r.err;
    EXPECT_TRUE(contains(r.err, path + ": " + reason)) << args << ": " << r.err;
    EXPECT_FALSE(contains(r.err, "Operation not supported")) << r.err;
  }
  // An unreadable file: "cannot open" with the reason (as the user nobody when run as root).
  write_file(t / "secret.txt", kText);
  fs::permissions(t / "secret.txt", fs::perms::none);
  fs::create_directories(t / "out2");
  fs::permissions(t / "out2", fs::perms::all);
  const RunResult r =
      run_shell(as_nobody("timeout 60 " + bin() + " summarize " + sq(t / "secret.txt") + " -o " + sq(t / "out2")));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, (t / "secret.txt").string() + ": cannot open: Permission denied")) << r.err;
}

// ---- 18. signals, empty summaries ------------------------------------------------------------------------

TEST(HardeningSignals, WatchStopsOnSighupWithALogLine) {
  TempDir in, out, logs;
  write_file(in / "a.txt", kText);
  WatchProcess w(quote(in.path()) + " -o " + quote(out.path()), logs / "log");
  ASSERT_TRUE(w.started()) << w.log();
  EXPECT_EQ(w.stop(SIGHUP), 0) << w.log();
  EXPECT_TRUE(contains(w.log(), "abridge watch: SIGHUP: stopped")) << w.log();
}

// A summary that comes back empty from the model fails its document. The tiny model is made to stop at
// once: its config lists as end-of-sequence every token it could have begun its reply with.
TEST(HardeningSignals, AnEmptySummaryFromTheModelFailsTheDocument) {
  TempDir t, out, out2;
  write_file(t / "a.txt", kText);
  const std::string args = " -o " + sq(out.path()) + " --device cpu --summary-tokens 32 --context-tokens 1024 --format json";
  RunResult r = abridge_within(300, "summarize " + sq(t / "a.txt") + " --model " + sq(random_model_dir()) + args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string summary = json::parse(read_file(out / "a.txt.summary.json"))["summary"];
  ASSERT_FALSE(summary.empty());
  // The reply was trimmed: its first token is blanks, or blanks and then the start of the summary.
  const abridge::engine::Tokenizer tok = abridge::engine::Tokenizer::from_json(abridge::engine::bundled_tokenizer_json());
  std::vector<int32_t> first;
  for (int32_t id = 0; id < tok.n_tokens(); ++id) {
    const std::string b = tok.token_bytes(id);
    const size_t start = b.find_first_not_of(" \t\r\n");
    if (b.empty()) continue;
    if (start == std::string::npos || summary.compare(0, b.size() - start, b, start) == 0) first.push_back(id);
  }
  ASSERT_LT(first.size(), 1024u);
  const fs::path model = t / "model";
  fs::create_directories(model);
  for (const auto& e : fs::directory_iterator(random_model_dir()))
    if (e.path().filename() != "config.json") fs::create_symlink(e.path(), model / e.path().filename());
  json config = json::parse(read_file(random_model_dir() / "config.json"));
  config["eos_token_id"] = first;
  write_file(model / "config.json", config.dump());
  r = abridge_within(300, "summarize " + sq(t / "a.txt") + " --model " + sq(model) + " -o " + sq(out2.path()) +
                              " --device cpu --summary-tokens 32 --context-tokens 1024 --format json");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "a.txt: the model returned an empty summary")) << r.err;
  EXPECT_FALSE(fs::exists(out2 / "a.txt.summary.json"));
}

// ---- 19. memory -----------------------------------------------------------------------------------------

namespace {

// Prose of `bytes` bytes (about), the same on every run: sentences of 8 to 30 words drawn from a
// vocabulary of 20,000 made-up words with Zipf's law (word r with probability ~ 1/r, as in real text),
// paragraphs of 3 to 8 sentences, lines broken at 72 columns. Every word is a content term, so the
// extractive engine's vectors and graph are as large as prose makes them.
std::string zipf_prose(size_t bytes, uint64_t seed) {
  abridge::Xoshiro256 rng(seed);
  auto uniform = [&] { return static_cast<double>(rng.next() >> 11) * 0x1.0p-53; };
  const char* const syllables[] = {"ka", "lo", "mi", "ten", "ra", "vo", "sel", "du", "pa", "ri", "gon", "be",
                                   "an", "tor", "sis", "el", "mu", "ne", "hal", "qui", "fe", "dor", "ba", "wen"};
  std::vector<std::string> vocab;
  for (int k = 0; k < 20000; ++k) {
    std::string w;
    for (int s = 0, n = 1 + static_cast<int>(rng.next() % 3); s < n; ++s) w += syllables[rng.next() % 24];
    vocab.push_back(w);
  }
  std::string text, line;
  text.reserve(bytes + 4096);
  while (text.size() < bytes) {
    for (int s = 0, n = 3 + static_cast<int>(rng.next() % 6); s < n; ++s) {
      for (int w = 0, m = 8 + static_cast<int>(rng.next() % 23); w < m; ++w) {
        // Rank r = e^(u ln V) - 1 has density ~ 1/r: Zipf's law.
        const auto r = static_cast<size_t>(std::exp(uniform() * std::log(20000.0)) - 1.0);
        std::string word = vocab[std::min<size_t>(r, 19999)];
        if (w == 0) word[0] = static_cast<char>(word[0] - 32);
        if (w + 1 == m) word += '.';
        if (!line.empty() && line.size() + 1 + word.size() > 72) {
          text += line + '\n';
          line.clear();
        }
        line += (line.empty() ? "" : " ") + word;
      }
    }
    text += line + "\n\n";
    line.clear();
  }
  return text;
}

// abridge ARGS in a child process: its exit code, standard error, peak resident memory (ru_maxrss of
// wait4, the child's own) and wall time. `as_limit`: RLIMIT_AS set in the child before exec (0: none).
// `tunables`: GLIBC_TUNABLES for the child ("" leaves the environment alone).
struct MeasuredRun {
  int exit_code = -1;
  std::string err;
  double peak_mib = 0;
  double seconds = 0;
};
MeasuredRun run_measured(const std::vector<std::string>& args, const fs::path& err_file, rlim_t as_limit = 0,
                         const std::string& tunables = "") {
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), 2);
    if (!tunables.empty()) ::setenv("GLIBC_TUNABLES", tunables.c_str(), 1);
    if (as_limit > 0) {
      const struct rlimit as {as_limit, as_limit};
      if (::setrlimit(RLIMIT_AS, &as) != 0) ::_exit(126);
    }
    const std::string binary = abridge_binary();
    std::vector<char*> argv = {const_cast<char*>("abridge")};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  MeasuredRun r;
  int status = 0;
  struct rusage usage {};
  if (::wait4(pid, &status, 0, &usage) != pid) return r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.peak_mib = static_cast<double>(usage.ru_maxrss) / 1024.0;
  r.err = read_file(err_file);
  return r;
}

}  // namespace

// The figure docs/OPERATIONS.md states: a document's peak memory is abridge's own (what a one-line
// document takes: the tokenizer's tables) plus at most kDocumentMemoryFactor times its text. Prose of
// 12 MiB, with the extractive engine and with `abridge chunk`.
TEST(HardeningMemory, PeakMemoryOfALongDocumentIsWithinTheStatedFactor) {
  TempDir t;
  write_file(t / "tiny.txt", kText);
  const std::string prose = zipf_prose(size_t{12} << 20, 1);
  write_file(t / "long.txt", prose);
  const double mib = static_cast<double>(prose.size()) / (1 << 20);
  const double factor = abridge::pipeline::kDocumentMemoryFactor;
  struct Command {
    std::string name;
    std::vector<std::string> tiny, long_;
  };
  const std::vector<Command> commands = {
      {"summarize --engine extractive",
       {"summarize", "-q", "--engine", "extractive", (t / "tiny.txt").string(), "-o", (t / "o1").string()},
       {"summarize", "-q", "--engine", "extractive", (t / "long.txt").string(), "-o", (t / "o2").string()}},
      {"chunk", {"chunk", "--max-tokens", "2048", (t / "tiny.txt").string()},
       {"chunk", "--max-tokens", "2048", (t / "long.txt").string()}},
  };
  for (const Command& c : commands) {
    const MeasuredRun base = run_measured(c.tiny, t / "err");
    ASSERT_EQ(base.exit_code, 0) << c.name << ": " << base.err;
    const MeasuredRun run = run_measured(c.long_, t / "err");
    ASSERT_EQ(run.exit_code, 0) << c.name << ": " << run.err;
    EXPECT_LE(run.peak_mib, base.peak_mib + factor * mib)
        << c.name << ": " << run.peak_mib << " MiB for " << mib << " MiB of text, " << base.peak_mib << " MiB alone";
    std::printf("[ measured ] %s, %.1f MiB of prose: peak %.0f MiB (%.0f MiB for a one-line document; %.1f x the "
                "text on top), %.1f s\n",
                c.name.c_str(), mib, run.peak_mib, base.peak_mib, (run.peak_mib - base.peak_mib) / mib, run.seconds);
  }
}

// The bytes of the shared libraries `binary` loads (ldd's list): the address space they map before
// main(), which a build with CUDA makes far larger (cuBLAS) than one without.
static uint64_t shared_library_bytes(const std::string& binary) {
  const RunResult r = run_shell("ldd " + shell_quote(binary));
  uint64_t bytes = 0;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    const size_t arrow = line.find("=> /");
    if (arrow == std::string::npos) continue;
    const std::string path = line.substr(arrow + 3, line.find(" (", arrow) - arrow - 3);
    std::error_code ec;
    const uintmax_t size = fs::file_size(path, ec);
    if (!ec) bytes += size;
  }
  return bytes;
}

// A document larger than the memory abridge may take (RLIMIT_AS, as `ulimit -v` or a container sets
// it): one line "PATH: out of memory (the document is N MiB; ...)", never a bare std::bad_alloc or an
// abort, and the batch goes on (the other documents are summarized; two such documents, two lines).
// The limit leaves room for abridge itself and for 1.5 times a document, far less than it needs. Per
// thread arenas are turned off (glibc.malloc.arena_max=1) so that the address space abridge takes at
// start does not grow with the machine's cores; each thread's stack is counted.
TEST(HardeningMemory, ADocumentBeyondTheMemoryLimitIsOneLineAndTheBatchGoesOn) {
  TempDir t;
  fs::create_directories(t / "docs");
  write_file(t / "docs" / "a.txt", kText);
  write_file(t / "docs" / "c.txt", kOtherText);
  const std::string prose = zipf_prose(size_t{24} << 20, 2);
  write_file(t / "docs" / "big1.txt", prose);
  write_file(t / "docs" / "big2.txt", prose + "\nThe end.\n");
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const rlim_t limit = (rlim_t{200} << 20) + cores * (rlim_t{10} << 20) + shared_library_bytes(abridge_binary()) +
                       prose.size() * 3 / 2;
  const std::string tunables = "glibc.malloc.arena_max=1";

  MeasuredRun r = run_measured({"summarize", "--engine", "extractive", (t / "docs").string(), "-o", (t / "out").string()},
                               t / "err", limit, tunables);
  EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.exit_code << ": " << r.err;
  EXPECT_FALSE(contains(r.err, "bad_alloc")) << r.err;
  EXPECT_FALSE(contains(r.err, "terminate")) << r.err;
  EXPECT_TRUE(fs::exists(t / "out" / "a.txt.summary.md")) << r.err;
  EXPECT_TRUE(fs::exists(t / "out" / "c.txt.summary.md")) << r.err;
  size_t out_of_memory = 0;
  for (const std::string big : {"big1.txt", "big2.txt"}) {
    const fs::path path = t / "docs" / big;
    const std::string line = "abridge: " + path.string() + ": out of memory (the document is " +
                             abridge::format_bytes(fs::file_size(path), 1, abridge::ByteUnit::kMiB) +
                             "; reading it takes up to about 6 times that: give abridge more memory or split the "
                             "document)\n";
    const bool failed = contains(r.err, line);
    EXPECT_TRUE(failed || fs::exists(t / "out" / (big + ".summary.md"))) << big << ": " << r.err;
    EXPECT_LE(count(r.err, path.string()), 1u) << r.err;
    out_of_memory += failed;
  }
  EXPECT_EQ(r.exit_code, out_of_memory > 0 ? 1 : 0) << r.err;
  std::printf("[ measured ] under RLIMIT_AS %.0f MiB: %zu of 2 documents of %.0f MiB out of memory, %.1f s\n",
              static_cast<double>(limit) / (1 << 20), out_of_memory, static_cast<double>(prose.size()) / (1 << 20),
              r.seconds);

  // `abridge chunk` (one document): the same line, exit 2.
  const fs::path big = t / "docs" / "big1.txt";
  r = run_measured({"chunk", "--max-tokens", "2048", big.string()}, t / "err", limit - cores * (rlim_t{10} << 20),
                   tunables);
  EXPECT_FALSE(contains(r.err, "bad_alloc")) << r.err;
  if (r.exit_code != 0) {
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err, "abridge: " + big.string() + ": out of memory (the document is " +
                         abridge::format_bytes(fs::file_size(big), 1, abridge::ByteUnit::kMiB) +
                         "; reading it takes up to about 6 times that: give abridge more memory or split the "
                         "document)\n");
  }
}

// ---- 20. option messages --------------------------------------------------------------------------------

// Each a line of its own, exactly: sizes that tell the file from the limit, a value as it was given, one
// line for an option that the option library refuses (stamped in watch), the advice that names the
// option at fault, globs that cannot match as meant, an empty --prompt, and inputs in a --config file.
TEST(HardeningMessages, OptionErrorsAreOneExactLine) {
  TempDir t;
  write_file(t / "a.txt", kText);
  write_file(t / "big.prompt", std::string(2000000, 'x'));
  write_file(t / "edge.prompt", std::string((1 << 20) + 1, 'x'));
  write_file(t / "empty.prompt", "");
  write_file(t / "blank.prompt", " \n\t\n");
  write_file(t / "empty.conf", "");
  write_file(t / "input.conf", "input = " + (t / "other.txt").string() + "\n");
  write_file(t / "other.txt", kOtherText);
  write_file(t / "dir.conf", "dir = " + t.path().string() + "\n");
  write_file(t / "bogus.conf", "summary-tokens = 100\nbogus = 1\n");
  const std::string a = sq(t / "a.txt"), p = t.path().string();
  const std::string s = "summarize " + a + " -o " + sq(t / "out") + " ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {s + "--prompt " + sq(t / "big.prompt"),
       "abridge summarize: --prompt: " + p + "/big.prompt: too large (1.9 MiB; the limit is 1.0 MiB)\n"},
      {s + "--prompt " + sq(t / "edge.prompt"),
       "abridge summarize: --prompt: " + p + "/edge.prompt: too large (1048577 bytes; the limit is 1048576 bytes)\n"},
      {s + "--config " + sq(t / "big.prompt"), "abridge: --config: " + p + "/big.prompt: too large (1.9 MiB; the limit is 1.0 MiB)\n"},
      {s + "--gpu-memory-fraction 1.0000001",
       "abridge summarize: --gpu-memory-fraction must be in 0.01..1, not 1.0000001\n"},
      {s + "--pdf-max-memory -1", "abridge: --pdf-max-memory must be in 64..1048576, not -1\n"},
      {s + "--summary-tokens abc", "abridge: --summary-tokens: invalid value 'abc'\n"},
      {s + "--no-such-option", "abridge: --no-such-option: unknown option (abridge summarize --help lists them)\n"},
      {s + "-o", "abridge: --output: needs a value\n"},
      {s + "--outline=yes", "abridge: --outline: takes no value\n"},
      {"chunk --max-tokens 64", "abridge: FILE is missing (abridge chunk FILE --max-tokens N [--tokenizer PATH] "
                                "[--overlap N] [--format jsonl|text])\n"},
      {s + "--include '[abc'", "abridge: [abc: invalid pattern (--include: an unmatched '[': write \\[ for a literal '[')\n"},
      {s + "--exclude '*.txt\\'", "abridge: *.txt\\: invalid pattern (--exclude: it ends with a '\\' that escapes nothing)\n"},
      {s + "--include '[[:letter:]]*'", "abridge: [[:letter:]]*: invalid pattern (--include: no character class [:letter:])\n"},
      {s + "--prompt " + sq(t / "empty.prompt"),
       "abridge summarize: --prompt: " + p + "/empty.prompt: empty (an instruction is needed; without --prompt the "
       "built-in prompts are used)\n"},
      {s + "--prompt " + sq(t / "blank.prompt"),
       "abridge summarize: --prompt: " + p + "/blank.prompt: only blanks (an instruction is needed; without --prompt "
       "the built-in prompts are used)\n"},
      {s + "--config " + sq(t / "input.conf"), "abridge: --config " + p + "/input.conf: 'input' is not allowed in a "
                                               "config file (inputs are given on the command line)\n"},
      {s + "--config " + sq(t / "bogus.conf"), "abridge: --config " + p + "/bogus.conf: 'bogus' is no option\n"},
      {"summarize " + a + " -o " + sq(t / "out") + " -m " + sq(random_model_dir()) + " --device cpu --kv-cache-tokens 1",
       "abridge summarize: the context (16 tokens) is too small for summaries of 400 tokens (at least 4 x "
       "--summary-tokens + 512 = 2112); the KV cache is capped at 16 tokens: raise --kv-cache-tokens (0: as much as "
       "memory allows) or lower --summary-tokens\n"},
  };
  for (const auto& [args, line] : cases) {
    const RunResult r = abridge_within(120, args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.err;
    EXPECT_EQ(r.err, line) << args;
  }
  // A bad glob is refused before OUT_DIR is made or a directory is read.
  EXPECT_EQ(abridge_within(60, "summarize " + sq(t.path()) + " -o " + sq(t / "gout") + " --include '*.[tx'").exit_code, 2);
  EXPECT_FALSE(fs::exists(t / "gout"));

  // Watch: the same lines, stamped as its other log lines are.
  const std::string w = "watch " + sq(t.path()) + " -o " + sq(t / "wout") + " --once ";
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {w + "--no-such-option", "--no-such-option: unknown option (abridge watch --help lists them)"},
           {w + "--settle abc", "--settle: invalid value 'abc'"},
           {w + "--exclude '[x'", "[x: invalid pattern (--exclude: an unmatched '[': write \\[ for a literal '[')"},
           {w + "--config " + sq(t / "dir.conf"), "--config " + p + "/dir.conf: 'dir' is not allowed in a config file "
                                                  "(the directories to watch are given on the command line)"},
       }) {
    const RunResult r = abridge_within(60, args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.err;
    EXPECT_EQ(count(r.err, "\n"), 1u) << args << ": " << r.err;
    const size_t z = r.err.find("Z abridge watch: ");
    EXPECT_EQ(z, 23u) << r.err;  // 2024-05-01T12:00:00.000Z
    EXPECT_EQ(r.err.substr(z == std::string::npos ? 0 : z + 17), message + "\n") << args;
  }

  // An empty --config sets nothing, and is accepted; an input it named would not have been read.
  const RunResult r = abridge_within(60, s + "--config " + sq(t / "empty.conf"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(t / "out" / "a.txt.summary.md")) << r.err;
  EXPECT_FALSE(fs::exists(t / "out" / "other.txt.summary.md"));
}

// --max-document-size: a larger document is refused before it is read, in one line that tells its size
// from the limit, and the others are summarized.
TEST(HardeningMemory, MaxDocumentSizeRefusesLargerDocumentsUnread) {
  TempDir t;
  fs::create_directories(t / "docs");
  write_file(t / "docs" / "a.txt", kText);
  write_file(t / "docs" / "b.txt", zipf_prose(2000000, 3));
  const RunResult r = abridge_within(120, "summarize " + sq(t / "docs") + " -o " + sq(t / "out") + " --max-document-size 1");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "abridge: " + (t / "docs" / "b.txt").string() + ": too large (" +
                                  abridge::format_bytes(fs::file_size(t / "docs" / "b.txt"), 1, abridge::ByteUnit::kMiB) +
                                  "; the limit is 1.0 MiB)\n"))
      << r.err;
  EXPECT_TRUE(fs::exists(t / "out" / "a.txt.summary.md")) << r.err;
  EXPECT_FALSE(fs::exists(t / "out" / "b.txt.summary.md"));
}
