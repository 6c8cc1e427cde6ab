// The interface every backend implements. A backend executes a plain batch plan; it decides nothing:
// which tokens run in a step and which sequence's cache they extend is the caller's (the scheduler's).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "engine/batch_plan.h"
#include "engine/config.h"

namespace abridge::engine {

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
