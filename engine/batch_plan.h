// What the scheduler hands a backend each step (BatchPlan) and the attention rule both follow
// (AttentionOptions). Plain data: the scheduler and the KV block pool include this, not backend.h,
// so they know no backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "base/attention_span.h"
#include "engine/defaults.h"

namespace abridge::engine {

// One forward step over tokens of one or more sequences.
// Tokens of one slot appear in position order and extend that slot's cache: the first token of a slot
// in a plan has position == the number of tokens the slot already holds.
struct BatchPlan {
  std::vector<int32_t> tokens;      // (n_tokens) token ids
  std::vector<int32_t> positions;   // (n_tokens) position of each token in its sequence
  std::vector<int32_t> slots;       // (n_tokens) KV slot (sequence) of each token
  std::vector<int32_t> logit_rows;  // indices into tokens whose logits are wanted, in output order
  // Paged backends: each slot's KV blocks by logical block (position / block_size); -1 marks a block
  // dropped because no later token attends to it (outside the sinks and the window). Backends with
  // their own per-slot caches (the CPU reference) ignore it.
  std::map<int32_t, std::vector<int32_t>> block_tables;

  size_t size() const { return tokens.size(); }
  void add(int32_t token, int32_t position, int32_t slot, bool want_logits) {
    if (want_logits) logit_rows.push_back(static_cast<int32_t>(tokens.size()));
    tokens.push_back(token);
    positions.push_back(position);
    slots.push_back(slot);
  }
};

// Engine-wide attention options, fixed when the backend is built.
struct AttentionOptions {
  // StreamingLLM: when window > 0, the token at position p attends to positions [0, sinks) and
  // (p - window, p]; positions stay the original positions. 0: full attention (or the model's own
  // sliding window where its config declares one).
  int64_t window = 0;
  int64_t sinks = 0;
  // The keys of the token at position p: [0, sink_end) and [begin, p] (base/attention_span.h, the rule
  // the CUDA kernels follow too). `layer_window` is the model's own window for the layer
  // (ModelConfig::layer_window), used when no engine window is set.
  using Span = AttentionSpan;
  Span span(int64_t p, int64_t layer_window) const { return attention_span(p, window, sinks, layer_window); }
};

}  // namespace abridge::engine
