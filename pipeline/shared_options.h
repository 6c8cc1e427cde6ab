// Rules that the options of several commands share, so that the commands agree: one check for a
// numeric range (the range each `--help` line states) and the engine knobs of every command that opens
// an engine (engine::open_backend gives `--device` its one meaning).
#pragma once

#include <cstdint>
#include <string>

#include "engine/defaults.h"

namespace abridge::engine {
struct EngineOptions;
}

namespace abridge::pipeline {

// Throws abridge::Error "OPTION must be in LO..HI, not V" unless lo <= value <= hi (both bounds
// included; NaN is outside every range).
void check_range(const std::string& option, int64_t value, int64_t lo, int64_t hi);
void check_range(const std::string& option, double value, double lo, double hi);

// The engine knobs, as given on the command line, of every command that opens an engine (summarize,
// watch, bench summarize, generate, bench engine): one set of defaults (engine/defaults.h), registered
// once with their --help lines by cli::add_engine_options and checked once by engine_options(). A
// command's options struct derives from it; a knob a command does not offer keeps its default.
struct EngineFlags {
  std::string device = "auto";          // auto | cpu | cuda (auto: the GPU when its engine opens, else the CPU)
  int threads = 0;                      // CPU backend threads; 0: one per core
  double gpu_memory_fraction = engine::kDefaultGpuMemoryFraction;
  std::string gpu_memory_limit = "0";   // --gpu-memory-limit as given (gpu_memory_limit_bytes parses it); "0": none
  int64_t kv_cache_tokens = 0;          // caps the KV pool (0: as memory allows)
  std::string kv_cache_dtype = "auto";  // auto | bf16 | fp8
  int64_t prefill_chunk = 0;            // tokens per engine step (0: the engine's default)
  int64_t attention_window = 0;         // StreamingLLM window in tokens (0: full attention)
  int64_t sink_tokens = 4;              // with a window: the first tokens every token still attends to
};

// The knobs as the engine takes them, every range checked (engine::EngineOptions::validate, the one
// place they are checked; the window and sinks as given, before sinks without a window are dropped).
// model, gpu and max_running are the caller's to set. Throws abridge::Error naming the option.
engine::EngineOptions engine_options(const EngineFlags& flags);

// --gpu-memory-limit SIZE ("22GiB", "500MiB", "0"; base/bytes.h) in bytes, 0 for none; throws
// abridge::Error naming the option for anything else (engine::check_gpu_memory_limit for the range).
uint64_t gpu_memory_limit_bytes(const std::string& size);

// A glob of --include/--exclude as fnmatch(3) reads it (the rules of glob(7)). glibc takes a '[' without
// its ']' as a literal and a trailing '\\' or an unknown [:class:] as matching nothing, all without a
// word; these are refused: abridge::Error("PATTERN: invalid pattern (OPTION: an unmatched '[' ...)").
void check_glob(const std::string& option, const std::string& pattern);

}  // namespace abridge::pipeline
