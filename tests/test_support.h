// Shared helpers for the GoogleTest suites.
#pragma once

#include <filesystem>
#include <string>
#include <sys/types.h>

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

}  // namespace abridge::testing
