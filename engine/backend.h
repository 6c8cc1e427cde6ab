// The interface every backend implements. A backend executes a plain batch plan; it decides nothing:
// which tokens run in a step and which sequence's cache they extend is the caller's (the scheduler's).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/config.h"

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
  // The keys of the token at position p: [0, sink_end) and [begin, p]. `layer_window` is the
  // model's own window for the layer (ModelConfig::layer_window), used when no engine window is set.
  struct Span {
    int64_t sink_end;
    int64_t begin;
  };
  Span span(int64_t p, int64_t layer_window) const {
    const int64_t w = window > 0 ? window : layer_window;
    if (w <= 0) return {0, 0};
    const int64_t begin = p - w + 1 > 0 ? p - w + 1 : 0;
    const int64_t sink_end = window > 0 ? (sinks < begin ? sinks : begin) : 0;
    return {sink_end, begin};
  }
};

// How to pick the token of one logits row on the device (Backend::forward_sampled).
struct RowSampling {
  float temperature = 0.0f;  // <= 0: greedy
  float top_p = 1.0f;
  uint64_t seed = 0;
  uint64_t counter = 0;      // tokens the sequence has generated so far: draw i of a sequence is fixed
  int32_t vocab_limit = 0;   // candidates are ids below this; 0: the whole row
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  // The device in words ("NVIDIA H200", "CPU, 16 threads") and the device memory this backend holds.
  virtual std::string device_description() const { return std::string(name()); }
  virtual size_t device_memory_bytes() const { return 0; }
  virtual const ModelConfig& config() const = 0;
  // Runs the plan; writes (plan.logit_rows.size(), vocab_size) float32 logits, row-major.
  virtual void forward(const BatchPlan& plan, std::span<float> logits) = 0;
  // Backends that sample on the device: runs the plan and writes one token per logits row, so only
  // token ids leave the device. Call only when samples_on_device().
  virtual bool samples_on_device() const { return false; }
  virtual void forward_sampled(const BatchPlan& plan, std::span<const RowSampling> rows, std::span<int32_t> tokens) {
    (void)plan, (void)rows, (void)tokens;
  }
  // Drops a slot's cached tokens (the sequence finished or was preempted).
  virtual void release(int32_t slot) = 0;
  // Tokens a slot holds now.
  virtual int64_t cached_tokens(int32_t slot) const = 0;
  // Paged backends: tokens per KV block and blocks in the pool; 0 for backends that keep their own
  // per-slot caches and ignore BatchPlan::block_tables.
  virtual int64_t kv_block_size() const { return 0; }
  virtual int64_t kv_blocks() const { return 0; }
  // The most tokens, and rows of logits, one forward step takes.
  virtual int64_t max_batch_tokens() const { return int64_t{1} << 30; }
  virtual int64_t max_logit_rows() const { return int64_t{1} << 30; }
};

}  // namespace abridge::engine
