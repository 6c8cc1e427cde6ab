// Shared helpers for the GoogleTest suites.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace abridge::testing {

// A path inside the source tree, e.g. source_path("tests/data/texts/tang300.txt").
std::filesystem::path source_path(const std::string& relative);
std::string read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::string& bytes);

// A fresh directory under the system temp dir, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A small valid PDF from its objects (numbered 1.. in order; 1 must be the catalog), with a correct
// cross-reference table.
std::string make_pdf(const std::vector<std::string>& objects);
// A PDF stream object holding `data`.
std::string pdf_stream(const std::string& data);

// A PDF whose text layer says `pages` (each a list of lines, top to bottom, 12 pt on a Letter page),
// drawn in a Type0 font that is not embedded: each distinct character gets a glyph id whose text comes
// only from the ToUnicode CMap, as producers write ligatures (U+FB01), soft hyphens and CJK text. Han,
// kana and full-width characters are 1 em wide, others 1/2 em. A '\t' in a line is no character but a gap
// of 0.3 em between its neighbours (justified lines are set so; poppler reads such a gap as a space).
std::string make_text_layer_pdf(const std::vector<std::vector<std::string>>& pages);

// Whether a program is on the PATH (for tests that make files with Debian's tools).
bool have_program(const std::string& name);

// A path in single quotes, for a shell command line.
std::string quote(const std::filesystem::path& path);
inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Starts `abridge ARGS` in the background (stdin from /dev/null, stdout discarded, stderr appended to
// `stderr_path`, or discarded when it is empty); returns its pid.
pid_t spawn_abridge(const std::string& args, const std::filesystem::path& stderr_path = {});

// Runs the abridge binary with `args` (a shell-quoted string), stdin from /dev/null.
struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
RunResult run_abridge(const std::string& args);

// The abridge binary under test (ABRIDGE_BINARY in the environment overrides the build's).
std::string abridge_binary();
// `s` as one word for /bin/sh, whatever bytes it holds (quotes included).
std::string shell_quote(const std::string& s);
// Runs `command` with /bin/sh -c, stdin from /dev/null; its stdout and stderr captured.
RunResult run_shell(const std::string& command);

// Polls `done` every 20 ms; false when `timeout` passes first.
bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout);

// `abridge watch ARGS` in the background, standard error in a log file; killed when destroyed.
class WatchProcess {
 public:
  WatchProcess(const std::string& args, const std::filesystem::path& log);
  ~WatchProcess();
  WatchProcess(const WatchProcess&) = delete;
  WatchProcess& operator=(const WatchProcess&) = delete;

  std::string log() const;
  pid_t pid() const { return pid_; }
  // Waits for the first scan to be done (the engine is loaded and the watchers are in place).
  bool started() const;
  // Sends `sig` and returns the exit code (128 + signal when killed by one), or -1 after 30 s.
  int stop(int sig);

 private:
  std::filesystem::path log_;
  pid_t pid_ = -1;
};

}  // namespace abridge::testing
