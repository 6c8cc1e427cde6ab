// Rules that the options of several commands share, so that the commands agree: one check for a
// numeric range (the range each `--help` line states) and one meaning of `--device` (engine::open_backend
// builds what it names).
#pragma once

#include <cstdint>
#include <string>

namespace abridge::pipeline {

// Throws abridge::Error "OPTION must be in LO..HI, not V" unless lo <= value <= hi (both bounds
// included; NaN is outside every range).
void check_range(const std::string& option, int64_t value, int64_t lo, int64_t hi);
void check_range(const std::string& option, double value, double lo, double hi);

// --device: auto | cpu | cuda; throws abridge::Error otherwise.
void check_device(const std::string& device);

// --gpu-memory-limit SIZE ("22GiB", "500MiB", "0"; base/bytes.h) in bytes, 0 for none; throws
// abridge::Error naming the option for anything else (engine::check_gpu_memory_limit for the range).
uint64_t gpu_memory_limit_bytes(const std::string& size);
inline constexpr const char* kGpuMemoryLimitHelp =
    "CUDA: most device memory the engine may hold, weights, buffers and KV cache together, e.g. 22GiB "
    "(K, M, G, T: powers of 1024; KB, MB, GB, TB: of 1000; 0: no limit, or at least 256MiB); with "
    "--gpu-memory-fraction, the smaller of the two wins. The CUDA context takes about 0.5 GiB on top: "
    "22GiB behaves like a 24 GB card";

// A glob of --include/--exclude as fnmatch(3) reads it (the rules of glob(7)). glibc takes a '[' without
// its ']' as a literal and a trailing '\\' or an unknown [:class:] as matching nothing, all without a
// word; these are refused: abridge::Error("PATTERN: invalid pattern (OPTION: an unmatched '[' ...)").
void check_glob(const std::string& option, const std::string& pattern);

}  // namespace abridge::pipeline
