#include "engine/kv_blocks.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "base/error.h"

namespace abridge::engine {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size) : block_size_(block_size) {
  ABRIDGE_CHECK(num_blocks > 0 && block_size > 0,
                "num_blocks " + std::to_string(num_blocks) + ", block_size " + std::to_string(block_size));
  used_.assign(static_cast<size_t>(num_blocks), 0);
  free_.reserve(static_cast<size_t>(num_blocks));
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

int32_t BlockPool::allocate() {
  if (free_.empty()) return -1;
  const int32_t b = free_.back();
  free_.pop_back();
  ABRIDGE_CHECK(!used_[b], "block " + std::to_string(b) + " on the free list is in use");
  used_[b] = 1;
  ++num_used_;
  return b;
}

void BlockPool::free(int32_t block) {
  ABRIDGE_CHECK(block >= 0 && block < num_blocks(), "block id " + std::to_string(block));
  ABRIDGE_CHECK(used_[block], "double free of block " + std::to_string(block));
  used_[block] = 0;
  --num_used_;
  free_.push_back(block);
}

bool BlockPool::is_used(int32_t block) const {
  ABRIDGE_CHECK(block >= 0 && block < num_blocks(), "block id " + std::to_string(block));
  return used_[block] != 0;
}

void BlockPool::check_invariants() const {
  ABRIDGE_CHECK(num_free() + num_used() == num_blocks(),
                "free " + std::to_string(num_free()) + " + used " + std::to_string(num_used()) +
                    " != total " + std::to_string(num_blocks()));
  std::vector<uint8_t> seen(used_.size(), 0);
  for (int32_t b : free_) {
    ABRIDGE_CHECK(b >= 0 && b < num_blocks(), "free list holds id " + std::to_string(b));
    ABRIDGE_CHECK(!seen[b], "block " + std::to_string(b) + " is on the free list twice");
    ABRIDGE_CHECK(!used_[b], "block " + std::to_string(b) + " is both free and in use");
    seen[b] = 1;
  }
  const auto marked = std::count(used_.begin(), used_.end(), uint8_t{1});
  ABRIDGE_CHECK(marked == num_used_, "used marks " + std::to_string(marked) + " != " + std::to_string(num_used_));
}

KvBlockManager::KvBlockManager(int32_t num_blocks, int32_t block_size, const AttentionOptions& attention)
    : pool_(num_blocks, block_size), attention_(attention) {
  ABRIDGE_CHECK(attention.window >= 0 && attention.sinks >= 0);
}

void KvBlockManager::drop_unreachable(BlockTable& table, int64_t next_position) {
  if (attention_.window <= 0) return;
  const int64_t bs = block_size();
  // Positions below `sinks` stay readable forever; the window of every later token starts at or after
  // begin(next_position). Block b lies inside [sinks, begin) when b >= ceil(sinks / bs) and
  // (b + 1) * bs <= begin.
  const int64_t begin = attention_.span(next_position, 0).begin;
  const int64_t limit = std::min<int64_t>(begin / bs, static_cast<int64_t>(table.blocks.size()));
  for (int64_t b = std::max(table.drop_scan, ceil_div(attention_.sinks, bs)); b < limit; ++b) {
    if (table.blocks[b] < 0) continue;
    pool_.free(table.blocks[b]);
    table.blocks[b] = -1;
    --table.live;
  }
  table.drop_scan = std::max(table.drop_scan, limit);
}

int64_t KvBlockManager::blocks_to_cover(const BlockTable& table, int64_t end) const {
  return std::max<int64_t>(0, ceil_div(end, block_size()) - static_cast<int64_t>(table.blocks.size()));
}

int64_t KvBlockManager::tokens_that_fit(const BlockTable& table, int64_t begin, int64_t want,
                                        int64_t max_new_blocks) const {
  int64_t blocks = pool_.num_free();
  if (max_new_blocks >= 0) blocks = std::min(blocks, max_new_blocks);
  const int64_t max_end = table.covered(block_size()) + blocks * block_size();
  return std::clamp<int64_t>(max_end - begin, 0, want);
}

bool KvBlockManager::cover(BlockTable& table, int64_t end) {
  const int64_t need = blocks_to_cover(table, end);
  if (need > pool_.num_free()) return false;
  for (int64_t i = 0; i < need; ++i) {
    const int32_t b = pool_.allocate();
    ABRIDGE_CHECK(b >= 0);
    table.blocks.push_back(b);
    ++table.live;
  }
  return true;
}

void KvBlockManager::release(BlockTable& table) {
  for (int32_t b : table.blocks)
    if (b >= 0) pool_.free(b);
  table = BlockTable{};
}

int64_t KvBlockManager::max_blocks_per_sequence(int64_t chunk) const {
  if (attention_.window <= 0) return -1;
  const int64_t bs = block_size();
  return ceil_div(attention_.sinks, bs) + ceil_div(attention_.window + chunk, bs) + 1;
}

int64_t KvBlockManager::min_blocks_to_run(int64_t n_tokens) const {
  const int64_t bs = block_size();
  if (n_tokens <= 0) return 0;
  if (attention_.window <= 0) return ceil_div(n_tokens, bs);
  // Blocks held while the token at p is processed alone: those covering [0, p], less the dropped ones.
  // held(p + bs) >= held(p), so the peak lies in the last block_size positions.
  const int64_t sink_blocks = ceil_div(attention_.sinks, bs);
  int64_t peak = 0;
  for (int64_t p = std::max<int64_t>(0, n_tokens - bs); p < n_tokens; ++p) {
    const int64_t covered = p / bs + 1;
    const int64_t begin = attention_.span(p, 0).begin;
    const int64_t dropped = std::max<int64_t>(0, std::min(begin / bs, covered) - sink_blocks);
    peak = std::max(peak, covered - dropped);
  }
  return peak;
}

int32_t kv_blocks_for_memory(const ModelConfig& config, uint64_t bytes, int32_t block_size, KvCacheDtype dtype) {
  ABRIDGE_CHECK(block_size > 0);
  const uint64_t per_block = config.kv_bytes_per_token(dtype) * static_cast<uint64_t>(block_size);
  ABRIDGE_CHECK(per_block > 0, "the config has no KV heads");
  return static_cast<int32_t>(std::min<uint64_t>(bytes / per_block, INT32_MAX));
}

}  // namespace abridge::engine
