// `abridge bench engine`: prefill and decode rates of a backend on a checkpoint, each beside its
// ceiling (FLOPs over the measured GEMM rate for prefill, bytes over the measured copy rate for
// decode), printed as a table.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/safetensors.h"

namespace abridge::engine {

struct EngineBenchOptions {
  std::vector<int64_t> prefill_lengths = {8192, 32768, 131072, 262144};
  struct Decode {
    int64_t batch, context;
  };
  std::vector<Decode> decodes = {{1, 4096}, {1, 32768}, {16, 4096}, {64, 2048}};
  int64_t decode_steps = 64;
  int64_t prefill_chunk = kDefaultStepTokens;  // prompt tokens per forward step (at most the backend's limit)
  double gemm_tflops = 0;      // ceiling: bf16 GEMM TFLOP/s of this device (0: not shown)
  double copy_tbps = 0;        // ceiling: device copy TB/s, read + write (0: not shown)
  double weight_bytes = 0;     // bytes of weights a decode step reads (0: 2 per parameter, as bf16)
  KvCacheDtype kv_cache_dtype = KvCacheDtype::kBf16;  // the backend's cache: the KV bytes a decode step reads
  double time_limit_s = 300;   // skip a prefill length whose predicted time exceeds what is left
};

struct EngineBenchRow {
  std::string what;      // "prefill 8192", "decode b1 ctx4096"
  double seconds = 0;    // TTFT for prefill, per step for decode
  double tokens_per_s = 0;
  double ceiling_tokens_per_s = 0;  // 0 when no ceiling was given
  bool skipped = false;
  std::string note;
};

// Runs on a backend with a paged KV cache (kv_block_size() > 0) or the CPU backend.
std::vector<EngineBenchRow> run_engine_bench(Backend& backend, const EngineBenchOptions& options,
                                             std::ostream& progress);

// Linear-layer FLOPs per token (2 x the non-embedding weights) and attention FLOPs for a query at
// position p (4 x layers x heads x head_dim x (p + 1)), as in the project's performance notes.
double linear_flops_per_token(const ModelConfig& c);
double attention_flops(const ModelConfig& c, int64_t position);
// Bytes one decode step must read: every weight once (weight_bytes; 0: 2 bytes per parameter), plus
// each sequence's K and V as the cache stores them.
double decode_step_bytes(const ModelConfig& c, int64_t batch, int64_t context, double weight_bytes = 0,
                         KvCacheDtype kv = KvCacheDtype::kBf16);
// The bytes of the weights the CUDA backend holds for this checkpoint: F8_E4M3 codes at one byte with
// their f32 tile scales, everything else as bf16.
double device_weight_bytes(const ModelConfig& c, const Checkpoint& ckpt);

}  // namespace abridge::engine
