// The engine's user knobs that several layers name (the CLI's --help, the pipeline's options, the
// backends' and the scheduler's own option structs): one default and one range each, here, so that
// every struct that carries a knob starts from the same value. No includes: cli/ and pipeline/ read it
// without pulling in the engine.
#pragma once

#include <cstdint>

namespace abridge::engine {

// Tokens per engine step (prefill chunks and decodes together; --prefill-chunk). Chosen by `abridge
// bench engine --prefill-chunk` on an H100 (4B shapes): 8,192 prefills an 8K prompt 9% faster than
// 2,048 and is level with 4,096 and 16,384 at 32K and 128K (docs/PERFORMANCE.md).
inline constexpr int64_t kDefaultStepTokens = 8192;
inline constexpr int64_t kMinStepTokens = 64;
inline constexpr int64_t kMaxStepTokens = 65536;

// Share of the GPU's memory the engine may take, weights, buffers and the KV pool included
// (--gpu-memory-fraction); the rest is left to the CUDA context and other processes.
inline constexpr double kDefaultGpuMemoryFraction = 0.90;

// The smallest --gpu-memory-limit (bytes; 0 means none): below it not even a tiny model's buffers fit.
inline constexpr uint64_t kMinGpuMemoryLimit = uint64_t{256} << 20;

// The largest KV pool a user may ask for (--kv-cache-tokens), in tokens.
inline constexpr int64_t kMaxKvCacheTokens = int64_t{1} << 31;

}  // namespace abridge::engine
