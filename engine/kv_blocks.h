// The paged KV cache, host side: a pool of fixed-size blocks and per-sequence block tables.
//
// The pool hands out block ids only; the memory is the backend's: physical block b holds the K and V
// of `block_size` consecutive positions of one sequence, for every layer. A sequence's block table maps
// logical block i (positions [i * block_size, (i + 1) * block_size)) to its physical block.
//
// With an attention window (AttentionOptions::window > 0, StreamingLLM with sinks) the token at
// position p reads [0, sink_end) and [begin(p), p] only, and begin() never decreases. So once the next
// token to be processed is at `next`, a block lying entirely inside [sinks, begin(next)) is never read
// again: it is returned to the pool and its table entry becomes -1. One sequence then holds at most
//   ceil(sinks / bs) + ceil((window + chunk) / bs) + 1
// blocks however long it grows (`chunk`: the most tokens it processes in one step), see
// max_blocks_per_sequence(). With window == 0 nothing is dropped. (A model's own per-layer window,
// ModelConfig::layer_window, drops nothing here: Qwen configs mix windowed and full layers.)
#pragma once

#include <cstdint>
#include <vector>

#include "engine/batch_plan.h"
#include "engine/config.h"

namespace abridge::engine {

class BlockPool {
 public:
  BlockPool(int32_t num_blocks, int32_t block_size);

  // A free block id, or -1 when none is left. The most recently freed block is handed out first
  // (its memory is the likeliest to be in cache); a fresh pool hands out 0, 1, 2, ...
  int32_t allocate();
  // Aborts on an id out of range or a block that is not in use (a double free).
  void free(int32_t block);

  int32_t num_blocks() const { return static_cast<int32_t>(used_.size()); }
  int32_t block_size() const { return block_size_; }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t num_used() const { return num_used_; }
  bool is_used(int32_t block) const;
  // Aborts unless free + used == total, every free id is distinct and marked free, and the used
  // marks add up to num_used(). O(num_blocks): for tests and debug builds.
  void check_invariants() const;

 private:
  int32_t block_size_;
  std::vector<int32_t> free_;  // stack of free ids; allocate() pops the back
  std::vector<uint8_t> used_;  // (num_blocks) 1 while handed out
  int32_t num_used_ = 0;
};

// One sequence's blocks.
struct BlockTable {
  std::vector<int32_t> blocks;  // (logical blocks covered) physical id, or -1 once dropped
  int64_t live = 0;             // entries that are not -1 (blocks this sequence holds)
  int64_t drop_scan = 0;        // logical blocks below this were already considered for dropping

  // Positions [0, covered) have a logical block.
  int64_t covered(int32_t block_size) const { return static_cast<int64_t>(blocks.size()) * block_size; }
};

// The pool plus the rules for growing, dropping and releasing block tables.
class KvBlockManager {
 public:
  KvBlockManager(int32_t num_blocks, int32_t block_size, const AttentionOptions& attention = {});

  // Frees the blocks that no token at position >= next_position can attend to (window > 0 only).
  void drop_unreachable(BlockTable& table, int64_t next_position);
  // Physical blocks to allocate so that the table covers positions [0, end).
  int64_t blocks_to_cover(const BlockTable& table, int64_t end) const;
  // How many of `want` tokens starting at position `begin` the free blocks can hold (0..want), taking at
  // most `max_new_blocks` of them (-1: no limit).
  int64_t tokens_that_fit(const BlockTable& table, int64_t begin, int64_t want, int64_t max_new_blocks = -1) const;
  // Allocates blocks so that the table covers [0, end); false, with nothing changed, when the pool
  // has too few free blocks.
  bool cover(BlockTable& table, int64_t end);
  // Frees every block of the table and empties it.
  void release(BlockTable& table);

  // The most blocks one sequence holds when each step covers at most `chunk` of its tokens (dropping
  // before each step), or -1 when unbounded (no window).
  int64_t max_blocks_per_sequence(int64_t chunk) const;
  // The blocks a sequence of `n_tokens` positions needs at its peak when it advances one token per
  // step: the smallest pool it can run alone in.
  int64_t min_blocks_to_run(int64_t n_tokens) const;

  const BlockPool& pool() const { return pool_; }
  int32_t block_size() const { return pool_.block_size(); }
  const AttentionOptions& attention() const { return attention_; }

 private:
  BlockPool pool_;
  AttentionOptions attention_;
};

// Blocks of `block_size` tokens that `bytes` of KV memory hold for `config` (K and V of every layer in
// `dtype`, ModelConfig::kv_bytes_per_token), capped at INT32_MAX. E.g. the 0.6b shape (28 layers, 8 KV
// heads of 128) in bf16 takes 112 KiB per token, 1.75 MiB per 16-token block: 8 GiB hold 4681 blocks.
int32_t kv_blocks_for_memory(const ModelConfig& config, uint64_t bytes, int32_t block_size,
                             KvCacheDtype dtype = KvCacheDtype::kBf16);

}  // namespace abridge::engine
