#include "pipeline/shared_options.h"

#include <algorithm>
#include <iterator>
#include <ostream>

#include "base/bytes.h"
#include "base/error.h"
#include "base/format.h"
#include "engine/engine.h"

namespace abridge::pipeline {
namespace {

std::string shortest(double v) { return shortest_number(v); }

}  // namespace

void check_range(const std::string& option, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi)
    throw Error(option + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", not " + std::to_string(value));
}

void check_range(const std::string& option, double value, double lo, double hi) {
  if (!(value >= lo && value <= hi))
    throw Error(option + " must be in " + shortest(lo) + ".." + shortest(hi) + ", not " + shortest(value));
}

uint64_t gpu_memory_limit_bytes(const std::string& size) {
  const auto bytes = parse_bytes(size);
  if (!bytes)
    throw Error("--gpu-memory-limit must be a size such as 22GiB or 500MiB (0: no limit), not \"" + size + "\"");
  engine::check_gpu_memory_limit(*bytes);
  return *bytes;
}

engine::EngineOptions engine_options(const EngineFlags& f) {
  engine::EngineOptions e;
  e.device = f.device;
  e.threads = f.threads;
  e.gpu_memory_fraction = f.gpu_memory_fraction;
  e.gpu_memory_limit = gpu_memory_limit_bytes(f.gpu_memory_limit);
  // Checked as given: with no window the sinks are dropped below, so validate() would not see them.
  engine::check_attention(f.attention_window, f.sink_tokens);
  e.attention = {f.attention_window, f.attention_window > 0 ? f.sink_tokens : 0};
  e.kv_cache_tokens = f.kv_cache_tokens;
  e.kv_cache_dtype = f.kv_cache_dtype;
  e.step_tokens = f.prefill_chunk;
  e.validate();
  return e;
}

void check_glob(const std::string& option, const std::string& pattern) {
  auto invalid = [&](const std::string& why) {
    throw Error(pattern + ": invalid pattern (" + option + ": " + why + ")");
  };
  const size_t n = pattern.size();
  if (n == 0) invalid("empty");
  for (size_t i = 0; i < n;) {
    const char c = pattern[i];
    if (c == '\\') {
      if (i + 1 == n) invalid("it ends with a '\\' that escapes nothing");
      i += 2;
      continue;
    }
    if (c != '[') {
      ++i;
      continue;
    }
    size_t j = i + 1;
    if (j < n && (pattern[j] == '!' || pattern[j] == '^')) ++j;
    if (j < n && pattern[j] == ']') ++j;  // a ']' first is one of the set
    while (j < n && pattern[j] != ']') {
      if (pattern[j] == '[' && j + 1 < n && (pattern[j + 1] == ':' || pattern[j + 1] == '=' || pattern[j + 1] == '.')) {
        const char kind = pattern[j + 1];
        const size_t close = pattern.find(std::string{kind, ']'}, j + 2);
        if (close == std::string::npos) invalid(std::string("an unmatched '[") + kind + "'");
        const std::string name = pattern.substr(j + 2, close - j - 2);
        static const char* const kClasses[] = {"alnum", "alpha", "blank", "cntrl", "digit", "graph",
                                               "lower", "print", "punct", "space", "upper", "xdigit"};
        if (kind == ':' && std::find(std::begin(kClasses), std::end(kClasses), name) == std::end(kClasses))
          invalid("no character class [:" + name + ":]");
        j = close + 2;
        continue;
      }
      j += pattern[j] == '\\' && j + 1 < n ? 2 : 1;
    }
    if (j >= n) invalid("an unmatched '[': write \\[ for a literal '['");
    i = j + 1;
  }
}

}  // namespace abridge::pipeline
