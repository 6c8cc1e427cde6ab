#include "pipeline/shared_options.h"

#include <charconv>
#include <ostream>

#include "base/bytes.h"
#include "base/error.h"
#include "engine/engine.h"

namespace abridge::pipeline {
namespace {

// The shortest text that reads back as `v`: 0.01, 86400, 1e+06.
std::string shortest(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

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

void check_device(const std::string& device) {
  if (device != "auto" && device != "cpu" && device != "cuda")
    throw Error("--device must be auto, cpu or cuda, not \"" + device + "\"");
}

}  // namespace abridge::pipeline
