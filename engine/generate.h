// Running one sequence through a backend: chunked prefill of the prompt, then token-by-token decode.
// (Serving many sequences at once is the scheduler's job; this is the single-sequence path.)
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "engine/backend.h"
#include "engine/sampler.h"

namespace abridge::engine {

struct GenerationOptions {
  int64_t max_new_tokens = 512;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;  // EOS, <|im_end|>: ends the reply, not part of it
  int64_t prefill_chunk = kDefaultStepTokens;  // prompt tokens per forward step (at most the backend's limit)
  // Sample only ids below this (the tokenizer's size): checkpoints pad the embedding past the
  // vocabulary, and those rows are no tokens. 0: the whole logits row.
  int64_t vocab_limit = 0;
};

enum class StopReason { kStopToken, kLength, kCallback };

struct GenerationResult {
  std::vector<int32_t> tokens;  // the reply, without the stop token
  StopReason stop = StopReason::kLength;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Generates into `slot` (released before returning). on_token is called for each reply token as it
// is produced; returning false stops generation. Throws abridge::Error if prompt + max_new_tokens
// exceeds the model's context.
GenerationResult generate(Backend& backend, int32_t slot, std::span<const int32_t> prompt,
                          const GenerationOptions& options, const std::function<bool(int32_t)>& on_token = {});

// Block tables for `n_seqs` sequences of `tokens` tokens each that own the backend's whole pool (one
// sequence at a time through generate(), the engine benchmark): sequence s gets the contiguous blocks
// [s * per, (s + 1) * per). Empty tables where the backend keeps no blocks (kv_block_size() == 0).
// Throws Error when they do not fit the pool.
std::vector<std::vector<int32_t>> contiguous_block_tables(const Backend& backend, int64_t n_seqs, int64_t tokens);

// Logits at every position of `ids` (n, vocab), prefilled in chunks: the reference comparisons use it.
std::vector<float> all_logits(Backend& backend, int32_t slot, std::span<const int32_t> ids, int64_t chunk = 512);

}  // namespace abridge::engine
