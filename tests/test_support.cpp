#include "tests/test_support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace abridge::testing {

// ABRIDGE_SOURCE_DIR and ABRIDGE_BINARY in the environment override the build's paths, so the test
// binaries can run from a copy of the tree on another machine.
static const char* env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

std::filesystem::path source_path(const std::string& relative) {
  return std::filesystem::path(env_or("ABRIDGE_SOURCE_DIR", ABRIDGE_SOURCE_DIR)) / relative;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + path.string());
  out << bytes;
}

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  path_ = std::filesystem::temp_directory_path() /
          ("abridge-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string quote(const std::filesystem::path& path) {
  std::string s(1, '\'');  // not "'" + ...: g++ 12 warns falsely (-Wrestrict) on that form
  s += path.string();
  s += '\'';
  return s;
}

pid_t spawn_abridge(const std::string& args, const std::filesystem::path& stderr_path) {
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string err = stderr_path.empty() ? std::string("/dev/null") : quote(stderr_path);
    const std::string cmd = std::string("exec ") + quote(env_or("ABRIDGE_BINARY", ABRIDGE_BINARY)) + " " + args +
                            " </dev/null >/dev/null 2>>" + err;
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

RunResult run_abridge(const std::string& args) {
  TempDir dir;
  const auto out_path = dir / "stdout";
  const auto err_path = dir / "stderr";
  const std::string cmd = std::string("'") + env_or("ABRIDGE_BINARY", ABRIDGE_BINARY) + "' " + args + " </dev/null >'" + out_path.string() +
                          "' 2>'" + err_path.string() + "'";
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  return r;
}

}  // namespace abridge::testing
