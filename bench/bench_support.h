// Shared helpers of the benchmark programs.
#pragma once

#include <chrono>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "base/error.h"
#include "chunker/chunker.h"

namespace abridge::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The file's bytes; with strip_bom, a leading UTF-8 byte-order mark is dropped.
inline std::string read_file(const std::string& path, bool strip_bom = false) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (strip_bom && text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);
  return text;
}

inline std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Four bytes a token: to time the rest of a pipeline without the tokenizer.
class FreeCounter final : public chunker::TokenCounter {
 public:
  size_t count(std::string_view text) const override { return (text.size() + 3) / 4; }
};

}  // namespace abridge::bench
