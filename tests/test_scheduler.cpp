// The serving core: KV block pool, continuous-batching scheduler and serving engine.
//
// Most tests drive the scheduler with PagedMock, a backend that behaves as a paged GPU backend would:
// it stores each token's "KV" in the physical block its plan's block table names and, for every token,
// reads back every position the token attends to (the sinks and the window), checking that the block
// holds that very token of that very sequence. Its logits are a hash of what was read, so a wrong
// table, a lost block, a reused block still in use, a position gap or a lost token changes the output
// and is caught. The last tests run the tiny random Qwen3 model on the CPU backend and require the
// batched outputs to be exactly those of engine::generate() run alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>

#include "base/error.h"
#include "engine/cpu_backend.h"
#include "engine/generate.h"
#include "engine/kv_blocks.h"
#include "engine/engine.h"
#include "engine/scheduler.h"
#include "engine/serving.h"
#include "tests/model_fixture.h"

using namespace abridge;
using namespace abridge::engine;
using abridge::testing::random_model_dir;

namespace {

// ---------------------------------------------------------------------------------------------------
// The mock paged backend and its single-sequence reference.

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  h *= 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 31);
}

constexpr int64_t kMockVocab = 50;

// The keys of position p, as every backend computes them.
template <typename F>
void for_each_key(const AttentionOptions& attention, int64_t p, F&& f) {
  const AttentionOptions::Span span = attention.span(p, 0);
  for (int64_t j = 0; j < span.sink_end; ++j) f(j);
  for (int64_t j = span.begin; j <= p; ++j) f(j);
}

// What PagedMock produces for one sequence run alone: token = hash(keys of the last position) % vocab.
std::vector<int32_t> mock_reference(std::vector<int32_t> tokens, int64_t max_new, const AttentionOptions& attention,
                                    const std::vector<int32_t>& stop_ids = {}) {
  std::vector<int32_t> out;
  while (static_cast<int64_t>(out.size()) < max_new) {
    const int64_t p = static_cast<int64_t>(tokens.size()) - 1;
    uint64_t h = 0;
    for_each_key(attention, p, [&](int64_t j) { h = mix(h, static_cast<uint64_t>(j) * 1000003u + tokens[j]); });
    const int32_t t = static_cast<int32_t>(h % kMockVocab);
    if (std::find(stop_ids.begin(), stop_ids.end(), t) != stop_ids.end()) break;
    out.push_back(t);
    tokens.push_back(t);
  }
  return out;
}

// A violated expectation fails the test and aborts the step (the message is built only then).
#define MOCK_EXPECT(cond, what) \
  do {                          \
    if (!(cond)) fail(what);    \
  } while (0)

class PagedMock final : public Backend {
 public:
  PagedMock(int32_t num_blocks, int32_t block_size, const AttentionOptions& attention)
      : block_size_(block_size), attention_(attention), store_(static_cast<size_t>(num_blocks) * block_size) {
    config_.vocab_size = kMockVocab;
    config_.max_position_embeddings = 1 << 20;
  }
  std::string_view name() const override { return "paged-mock"; }
  const ModelConfig& config() const override { return config_; }
  void release(int32_t slot) override {
    history_.erase(slot);
    ++generation_[slot];
  }
  int64_t cached_tokens(int32_t slot) const override {
    auto it = history_.find(slot);
    return it == history_.end() ? 0 : static_cast<int64_t>(it->second.size());
  }

  void forward(const BatchPlan& plan, std::span<float> logits) override {
    ++calls_;
    if (throw_at_call_ == calls_) throw Error("device lost (simulated)");
    const size_t n = plan.size();
    MOCK_EXPECT(plan.positions.size() == n && plan.slots.size() == n, "plan vectors differ in length");
    MOCK_EXPECT(logits.size() == plan.logit_rows.size() * kMockVocab, "logits buffer size");
    // No physical block may belong to two slots.
    std::map<int32_t, int32_t> owner;
    for (const auto& [slot, table] : plan.block_tables)
      for (int32_t b : table)
        if (b >= 0) MOCK_EXPECT(owner.emplace(b, slot).second, "block " + std::to_string(b) + " in two tables");
    std::vector<uint64_t> hash(n);
    for (size_t i = 0; i < n; ++i) {
      const int32_t s = plan.slots[i];
      const int64_t p = plan.positions[i];
      std::vector<int32_t>& hist = history_[s];
      MOCK_EXPECT(p == static_cast<int64_t>(hist.size()), "slot " + std::to_string(s) + " holds " +
                                                          std::to_string(hist.size()) + " tokens, plan gives position " +
                                                          std::to_string(p));
      auto t = plan.block_tables.find(s);
      MOCK_EXPECT(t != plan.block_tables.end(), "no block table for slot " + std::to_string(s));
      const std::vector<int32_t>& table = t->second;
      auto cell = [&](int64_t pos) -> Cell& {
        const size_t lb = static_cast<size_t>(pos / block_size_);
        MOCK_EXPECT(lb < table.size() && table[lb] >= 0, "slot " + std::to_string(s) + " position " + std::to_string(pos) +
                                                        " has no block (table of " + std::to_string(table.size()) + ")");
        return store_[static_cast<size_t>(table[lb]) * block_size_ + static_cast<size_t>(pos % block_size_)];
      };
      cell(p) = Cell{s, generation_[s], p, plan.tokens[i]};
      hist.push_back(plan.tokens[i]);
      uint64_t h = 0;
      for_each_key(attention_, p, [&](int64_t j) {
        const Cell& c = cell(j);
        MOCK_EXPECT(c.slot == s && c.generation == generation_[s] && c.position == j && c.token == hist[j],
               "slot " + std::to_string(s) + " position " + std::to_string(j) + " reads a stale block");
        h = mix(h, static_cast<uint64_t>(j) * 1000003u + hist[j]);
      });
      hash[i] = h;
    }
    for (size_t r = 0; r < plan.logit_rows.size(); ++r) {
      float* row = logits.data() + r * kMockVocab;
      std::fill_n(row, kMockVocab, 0.0f);
      row[hash[static_cast<size_t>(plan.logit_rows[r])] % kMockVocab] = 1.0f;
    }
  }
  int64_t calls() const { return calls_; }
  void throw_at_call(int64_t call) { throw_at_call_ = call; }

 private:
  struct Cell {
    int32_t slot = -1;
    int64_t generation = -1;
    int64_t position = -1;
    int32_t token = -1;
  };
  [[noreturn]] static void fail(const std::string& what) {
    ADD_FAILURE() << "PagedMock: " << what;
    throw std::logic_error(what);
  }

  ModelConfig config_;
  int32_t block_size_;
  AttentionOptions attention_;
  std::vector<Cell> store_;                          // (num_blocks * block_size) one cell per KV row
  std::map<int32_t, std::vector<int32_t>> history_;  // per slot: the tokens it holds
  std::map<int32_t, int64_t> generation_;            // per slot: bumped by release()
  int64_t calls_ = 0;
  int64_t throw_at_call_ = -1;
};

std::vector<int32_t> random_tokens(std::mt19937& rng, int64_t n, int64_t vocab) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab));
  return t;
}

// Drives a Scheduler with a PagedMock as the serving engine would (greedy), checking the scheduler's
// promises at every step.
struct Driver {
  explicit Driver(const SchedulerOptions& o)
      : options(o), sched(o), mock(o.num_blocks, o.block_size, o.attention) {}

  void add(int64_t id, std::vector<int32_t> prompt, int64_t max_new) {
    prompts[id] = prompt;
    max_new_tokens[id] = max_new;
    sched.add(id, std::move(prompt), max_new);
  }

  void step() {
    // Before: the decoders (one token left), in admission order, and the running order.
    std::vector<int64_t> decoders, running_before;
    for (const Sequence* s : sched.running()) {
      running_before.push_back(s->id);
      if (s->remaining() == 1) decoders.push_back(s->id);
    }
    ScheduledStep st = sched.schedule();
    sched.check_invariants();
    ++steps;
    ASSERT_FALSE(st.empty());
    ASSERT_TRUE(st.failed.empty());
    ASSERT_LE(static_cast<int64_t>(st.plan.size()), options.max_batch_tokens);
    // Victims are taken from the most recently admitted end.
    for (size_t k = 0; k < st.preempted.size(); ++k)
      ASSERT_EQ(st.preempted[k], running_before[running_before.size() - 1 - k]) << "preemption " << k;
    preemptions += static_cast<int64_t>(st.preempted.size());
    // Every decoder not preempted runs, and the decoders lead the plan in admission order.
    std::vector<int64_t> kept;
    for (int64_t id : decoders)
      if (std::find(st.preempted.begin(), st.preempted.end(), id) == st.preempted.end()) kept.push_back(id);
    ASSERT_GE(st.seq_ids.size(), kept.size());
    ASSERT_EQ(std::vector<int64_t>(st.seq_ids.begin(), st.seq_ids.begin() + static_cast<long>(kept.size())), kept);
    for (size_t k = 0; k < kept.size(); ++k) ASSERT_EQ(st.plan.slots[k], sched.sequence(kept[k]).slot);
    // Arrivals are admitted first in arrival order.
    for (int64_t id : st.seq_ids)
      if (admitted.insert(id).second) admission_order.push_back(id);
    // Memory per sequence stays under the window bound.
    const int64_t chunk = options.max_prefill_chunk > 0 ? options.max_prefill_chunk : options.max_batch_tokens;
    const int64_t bound = sched.kv().max_blocks_per_sequence(chunk);
    for (const Sequence* s : sched.running()) {
      if (bound >= 0) {
        ASSERT_LE(s->blocks.live, bound) << "sequence " << s->id;
      }
      max_live = std::max(max_live, s->blocks.live);
    }
    max_used = std::max<int64_t>(max_used, sched.kv().pool().num_used());
    if (on_step) on_step(st);

    for (int32_t slot : st.released_slots) mock.release(slot);
    std::vector<float> logits(st.plan.logit_rows.size() * kMockVocab);
    mock.forward(st.plan, logits);
    for (size_t r = 0; r < st.row_seqs.size(); ++r) {
      const int64_t id = st.row_seqs[r];
      const int32_t t = argmax(std::span<const float>(logits.data() + r * kMockVocab, kMockVocab));
      out[id].push_back(t);
      if (static_cast<int64_t>(out[id].size()) == max_new_tokens[id]) {
        const int32_t slot = sched.finish(id);
        ASSERT_GE(slot, 0);
        mock.release(slot);
      } else {
        sched.append(id, t);
      }
    }
  }

  void run(int64_t max_steps = 100000) {
    while (!sched.idle() && !::testing::Test::HasFatalFailure()) {
      step();
      ASSERT_LT(steps, max_steps) << "no progress";
    }
    sched.check_invariants();
    EXPECT_EQ(sched.kv().pool().num_used(), 0);
  }

  void expect_reference_outputs() {
    for (const auto& [id, prompt] : prompts)
      EXPECT_EQ(out[id], mock_reference(prompt, max_new_tokens[id], options.attention)) << "sequence " << id;
  }

  SchedulerOptions options;
  Scheduler sched;
  PagedMock mock;
  std::map<int64_t, std::vector<int32_t>> prompts, out;
  std::map<int64_t, int64_t> max_new_tokens;
  std::function<void(const ScheduledStep&)> on_step;
  std::set<int64_t> admitted;
  std::vector<int64_t> admission_order;
  int64_t steps = 0, preemptions = 0, max_live = 0, max_used = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Block pool

TEST(BlockPool, HandsOutEveryBlockOnceThenReportsExhaustion) {
  BlockPool pool(8, 16);
  std::set<int32_t> got;
  for (int i = 0; i < 8; ++i) {
    const int32_t b = pool.allocate();
    ASSERT_GE(b, 0);
    ASSERT_LT(b, 8);
    EXPECT_TRUE(got.insert(b).second) << "block " << b << " handed out twice";
    pool.check_invariants();
  }
  EXPECT_EQ(pool.num_used(), 8);
  EXPECT_EQ(pool.num_free(), 0);
  EXPECT_EQ(pool.allocate(), -1);  // exhausted: a failure value, not a crash
  EXPECT_EQ(pool.allocate(), -1);
  pool.check_invariants();
}

TEST(BlockPool, ReusesFreedBlocks) {
  BlockPool pool(4, 2);
  std::vector<int32_t> b;
  for (int i = 0; i < 4; ++i) b.push_back(pool.allocate());
  pool.free(b[2]);
  pool.free(b[0]);
  EXPECT_EQ(pool.num_free(), 2);
  EXPECT_FALSE(pool.is_used(b[0]));
  EXPECT_EQ(pool.allocate(), b[0]);  // the most recently freed first
  EXPECT_EQ(pool.allocate(), b[2]);
  EXPECT_EQ(pool.allocate(), -1);
  for (int32_t x : b) pool.free(x);
  EXPECT_EQ(pool.num_free(), 4);
  pool.check_invariants();
}

TEST(BlockPoolDeathTest, DoubleFreeAndForeignIdsAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  BlockPool pool(4, 2);
  const int32_t b = pool.allocate();
  pool.free(b);
  EXPECT_DEATH(pool.free(b), "double free of block");
  EXPECT_DEATH(pool.free(4), "block id 4");
  EXPECT_DEATH(pool.free(-1), "block id -1");
}

TEST(KvBlocks, CoverAllocatesWholeBlocksOrNothing) {
  KvBlockManager kv(5, 4);
  BlockTable a, b;
  EXPECT_EQ(kv.blocks_to_cover(a, 9), 3);
  ASSERT_TRUE(kv.cover(a, 9));  // positions [0, 9): 3 blocks
  EXPECT_EQ(a.blocks.size(), 3u);
  EXPECT_EQ(a.live, 3);
  ASSERT_TRUE(kv.cover(a, 12));  // still inside the third block
  EXPECT_EQ(a.blocks.size(), 3u);
  EXPECT_EQ(kv.tokens_that_fit(b, 0, 100), 8);  // 2 free blocks
  EXPECT_FALSE(kv.cover(b, 9));                 // needs 3: refused, nothing taken
  EXPECT_TRUE(b.blocks.empty());
  EXPECT_EQ(kv.pool().num_free(), 2);
  ASSERT_TRUE(kv.cover(b, 8));
  EXPECT_EQ(kv.pool().num_free(), 0);
  kv.release(a);
  EXPECT_TRUE(a.blocks.empty());
  EXPECT_EQ(kv.pool().num_free(), 3);
  ASSERT_TRUE(kv.cover(b, 20));  // freed blocks serve another table
  kv.release(b);
  EXPECT_EQ(kv.pool().num_used(), 0);
  kv.pool().check_invariants();
}

TEST(KvBlocks, WindowDropsExactlyTheUnreachableBlocksAndBoundsMemory) {
  for (const auto& params : std::vector<std::tuple<int64_t, int64_t, int32_t>>{
           {24, 4, 8}, {16, 0, 4}, {10, 7, 4}, {1, 1, 1}, {33, 16, 16}}) {
    const int64_t window = std::get<0>(params), sinks = std::get<1>(params);
    const int32_t bs = std::get<2>(params);
    SCOPED_TRACE("window " + std::to_string(window) + " sinks " + std::to_string(sinks) + " bs " + std::to_string(bs));
    KvBlockManager kv(1000, bs, AttentionOptions{window, sinks});
    BlockTable t;
    const int64_t n = 50 * window + 37;  // many times the window
    int64_t peak = 0;
    for (int64_t p = 0; p < n; ++p) {  // one token per step
      kv.drop_unreachable(t, p);
      ASSERT_TRUE(kv.cover(t, p + 1));
      peak = std::max(peak, t.live);
      ASSERT_LE(t.live, kv.max_blocks_per_sequence(1));
      ASSERT_EQ(t.live, kv.pool().num_used());
      // Every key of p has its block; every dropped block holds no key of p or of any later token.
      for_each_key(kv.attention(), p, [&](int64_t j) { ASSERT_GE(t.blocks[j / bs], 0) << "p " << p << " key " << j; });
      const int64_t begin = kv.attention().span(p, 0).begin;
      for (size_t b = 0; b < t.blocks.size(); ++b) {
        const int64_t lo = static_cast<int64_t>(b) * bs, hi = lo + bs;
        const bool unreachable = lo >= sinks && hi <= begin;
        ASSERT_EQ(t.blocks[b] < 0, unreachable) << "p " << p << " block " << b;
      }
    }
    EXPECT_EQ(peak, kv.min_blocks_to_run(n));
    kv.release(t);
    kv.pool().check_invariants();
    EXPECT_EQ(kv.pool().num_used(), 0);
  }
}

TEST(KvBlocks, BlocksForMemory) {
  const ModelConfig c = preset_config("0.6b");
  EXPECT_EQ(c.kv_bytes_per_token(), 112u * 1024);
  EXPECT_EQ(kv_blocks_for_memory(c, 8ull << 30, 16), 4681);
  EXPECT_EQ(kv_blocks_for_memory(c, 112u * 1024 * 16 - 1, 16), 0);
  // FP8: 2 x 28 x (8 x 128 + 8) = 57,792 bytes a token, 924,672 a block: 8 GiB hold 9289 (1.98x).
  EXPECT_EQ(kv_blocks_for_memory(c, 8ull << 30, 16, KvCacheDtype::kFp8), 9289);
}

TEST(KvBlocks, NoWindowDropsNothing) {
  KvBlockManager kv(100, 4);
  BlockTable t;
  for (int64_t p = 0; p < 200; ++p) {
    kv.drop_unreachable(t, p);
    ASSERT_TRUE(kv.cover(t, p + 1));
  }
  EXPECT_EQ(t.live, 50);
  EXPECT_EQ(std::count(t.blocks.begin(), t.blocks.end(), -1), 0);
  EXPECT_EQ(kv.max_blocks_per_sequence(1), -1);
  EXPECT_EQ(kv.min_blocks_to_run(200), 50);
  kv.release(t);
}

// ---------------------------------------------------------------------------------------------------
// Scheduler

TEST(Scheduler, MixedBatchKeepsBudgetPositionsAndTablesAndMatchesRunsAlone) {
  SchedulerOptions o;
  o.max_batch_tokens = 256;
  o.max_running = 16;
  o.block_size = 8;
  o.num_blocks = 2000;  // ample: no preemption here
  Driver d(o);
  std::mt19937 rng(1);
  for (int64_t id = 0; id < 40; ++id)
    d.add(id, random_tokens(rng, 1 + rng() % 700, kMockVocab), 1 + static_cast<int64_t>(rng() % 30));
  d.run();
  d.expect_reference_outputs();
  EXPECT_EQ(d.preemptions, 0);
  // FIFO: first admissions in arrival order.
  EXPECT_TRUE(std::is_sorted(d.admission_order.begin(), d.admission_order.end()));
  EXPECT_EQ(d.admission_order.size(), 40u);
  // Continuous batching: far fewer steps than running the sequences one after another.
  int64_t serial_steps = 0;
  for (const auto& [id, p] : d.prompts)
    serial_steps += (static_cast<int64_t>(p.size()) + o.max_batch_tokens - 1) / o.max_batch_tokens +
                    d.max_new_tokens[id] - 1;
  EXPECT_LT(d.steps * 3, serial_steps);
}

TEST(Scheduler, LongPromptIsPrefilledInChunksAcrossSteps) {
  SchedulerOptions o;
  o.max_batch_tokens = 2048;
  o.max_running = 4;
  o.block_size = 16;
  o.num_blocks = 1024;
  Driver d(o);
  std::mt19937 rng(2);
  d.add(0, random_tokens(rng, 10, kMockVocab), 20);    // a short one that decodes meanwhile
  d.add(1, random_tokens(rng, 5000, kMockVocab), 3);   // the long prompt
  std::vector<int64_t> chunks;                          // tokens of sequence 1 per step, while prefilling
  d.on_step = [&](const ScheduledStep& st) {
    if (!d.sched.contains(1)) return;
    const int32_t slot = d.sched.sequence(1).slot;
    int64_t n = 0;
    for (size_t i = 0; i < st.plan.size(); ++i) {
      if (st.plan.slots[i] != slot) continue;
      ++n;
      if (st.plan.positions[i] < 5000) {  // a prompt position
        const bool wants = std::find(st.plan.logit_rows.begin(), st.plan.logit_rows.end(), static_cast<int32_t>(i)) !=
                           st.plan.logit_rows.end();
        EXPECT_EQ(wants, st.plan.positions[i] == 4999) << "position " << st.plan.positions[i];
      }
    }
    if (n > 0 && d.sched.sequence(1).computed <= 5000) chunks.push_back(n);
  };
  d.run();
  d.expect_reference_outputs();
  // Step 1: 10 prompt tokens of sequence 0, the rest of the budget to sequence 1; then one decode
  // of sequence 0 per step beside a chunk of sequence 1.
  EXPECT_EQ(chunks, (std::vector<int64_t>{2038, 2047, 915}));
  int64_t sum = 0;
  for (int64_t c : chunks) sum += c;
  EXPECT_EQ(sum, 5000);

  // With a per-sequence chunk limit the prompt takes more steps, each chunk within the limit.
  o.max_prefill_chunk = 512;
  Driver e(o);
  e.add(0, d.prompts[1], 2);
  std::vector<int64_t> sizes;
  e.on_step = [&](const ScheduledStep& st) { sizes.push_back(static_cast<int64_t>(st.plan.size())); };
  e.run();
  e.expect_reference_outputs();
  ASSERT_EQ(sizes.size(), 11u);  // ceil(5000 / 512) prefill steps, then one decode
  for (size_t i = 0; i + 2 < sizes.size(); ++i) EXPECT_EQ(sizes[i], 512);
  EXPECT_EQ(sizes[9], 5000 - 9 * 512);
  EXPECT_EQ(sizes[10], 1);
}

TEST(Scheduler, AdmitsInArrivalOrderAndReusesSlots) {
  SchedulerOptions o;
  o.max_batch_tokens = 64;
  o.max_running = 2;
  o.block_size = 4;
  o.num_blocks = 256;
  Driver d(o);
  std::mt19937 rng(3);
  for (int64_t id = 0; id < 7; ++id) d.add(id, random_tokens(rng, 3 + id * 5, kMockVocab), 2 + id % 3);
  std::set<int32_t> slots_seen;
  d.on_step = [&](const ScheduledStep& st) {
    EXPECT_LE(d.sched.running().size(), 2u);
    for (int32_t s : st.plan.slots) slots_seen.insert(s);
  };
  d.run();
  d.expect_reference_outputs();
  EXPECT_EQ(d.admission_order, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(slots_seen, (std::set<int32_t>{0, 1}));
}

TEST(Scheduler, PreemptsTheYoungestWhenThePoolIsShortAndTheVictimsComplete) {
  SchedulerOptions o;
  o.max_batch_tokens = 128;
  o.max_running = 8;
  o.block_size = 4;
  o.num_blocks = 24;  // 96 tokens; each sequence grows to 30..60
  o.admission = Admission::kOptimistic;
  Driver d(o);
  std::mt19937 rng(4);
  for (int64_t id = 0; id < 12; ++id) d.add(id, random_tokens(rng, 20 + rng() % 20, kMockVocab), 10 + id % 11);
  d.run();
  EXPECT_GT(d.preemptions, 0);
  EXPECT_EQ(d.preemptions, d.sched.total_preemptions());
  EXPECT_LE(d.max_used, o.num_blocks);
  d.expect_reference_outputs();  // the recomputed sequences continue exactly
}

// Admission by reservation (the default): the same workload that preempts above runs with no
// preemption and no recomputed token, every step keeping the reservations within the pool.
TEST(Scheduler, ReservationAdmissionNeverPreemptsMixedLengths) {
  SchedulerOptions o;
  o.max_batch_tokens = 128;
  o.max_running = 8;
  o.block_size = 4;
  o.num_blocks = 24;  // 96 tokens; each sequence grows to 30..60
  ASSERT_EQ(o.admission, Admission::kReserve);
  Driver d(o);
  std::mt19937 rng(4);
  for (int64_t id = 0; id < 12; ++id) d.add(id, random_tokens(rng, 20 + rng() % 20, kMockVocab), 10 + id % 11);
  int64_t most_running = 0;
  d.on_step = [&](const ScheduledStep& st) {
    EXPECT_TRUE(st.preempted.empty());
    EXPECT_LE(d.sched.reserved_blocks(), o.num_blocks);
    for (const Sequence* s : d.sched.running()) EXPECT_LE(s->blocks.live, s->reservation);
    most_running = std::max<int64_t>(most_running, static_cast<int64_t>(d.sched.running().size()));
  };
  d.run();
  d.expect_reference_outputs();
  EXPECT_EQ(d.preemptions, 0);
  EXPECT_EQ(d.sched.total_preemptions(), 0);
  EXPECT_EQ(d.sched.recomputed_tokens(), 0);
  EXPECT_GE(most_running, 2);  // still a batch: two or more sequences share the pool
  EXPECT_LE(d.sched.peak_blocks(), o.num_blocks);
}

// Random workloads: lengths from 1 token to the whole pool, random budgets, windows or not. Reservation
// admission never preempts and every output is the sequence's output alone.
TEST(Scheduler, ReservationAdmissionRandomWorkloads) {
  std::mt19937 rng(77);
  for (int trial = 0; trial < 40; ++trial) {
    SchedulerOptions o;
    o.block_size = 1 + static_cast<int32_t>(rng() % 8);
    o.num_blocks = 8 + static_cast<int32_t>(rng() % 64);
    o.max_running = 1 + static_cast<int32_t>(rng() % 8);
    o.max_batch_tokens = o.max_running + static_cast<int64_t>(rng() % 64);
    if (trial % 3 == 0) o.attention = AttentionOptions{4 + static_cast<int64_t>(rng() % 16), static_cast<int64_t>(rng() % 4)};
    Driver d(o);
    const int64_t capacity = static_cast<int64_t>(o.num_blocks) * o.block_size;
    for (int64_t id = 0; id < 16; ++id) {
      const int64_t prompt = 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(capacity / 2));
      const int64_t max_new = 1 + static_cast<int64_t>(rng() % static_cast<uint32_t>(capacity / 2));
      try {
        d.sched.check_fits(prompt, max_new);
      } catch (const Error&) {
        continue;  // cannot run even alone: refused up front (tested below)
      }
      d.add(id, random_tokens(rng, prompt, kMockVocab), max_new);
    }
    d.run();
    ASSERT_FALSE(::testing::Test::HasFatalFailure()) << "trial " << trial;
    d.expect_reference_outputs();
    EXPECT_EQ(d.preemptions, 0) << "trial " << trial;
    EXPECT_EQ(d.sched.recomputed_tokens(), 0) << "trial " << trial;
  }
}

// A pool just big enough for the longest sequence: it runs alone, the others before and after it
// share the pool, nothing is preempted.
TEST(Scheduler, APoolJustBigEnoughForTheLongestRunsItAlone) {
  SchedulerOptions o;
  o.max_batch_tokens = 32;
  o.max_running = 4;
  o.block_size = 4;
  o.num_blocks = 25;  // 100 tokens: the long sequence peaks at 90 + 10 - 1 = 99 positions
  Driver d(o);
  std::mt19937 rng(8);
  d.add(0, random_tokens(rng, 10, kMockVocab), 5);
  d.add(1, random_tokens(rng, 90, kMockVocab), 10);
  d.add(2, random_tokens(rng, 12, kMockVocab), 6);
  d.add(3, random_tokens(rng, 8, kMockVocab), 4);
  EXPECT_EQ(d.sched.reservation_for(90, 10), 25);
  bool long_ran_alone = false;
  d.on_step = [&](const ScheduledStep& st) {
    EXPECT_TRUE(st.preempted.empty());
    for (int64_t id : st.seq_ids)
      if (id == 1) long_ran_alone = long_ran_alone || st.seq_ids.size() == 1;
    const auto& running = d.sched.running();
    const bool long_running = std::any_of(running.begin(), running.end(), [](const Sequence* s) { return s->id == 1; });
    if (long_running) {
      EXPECT_EQ(running.size(), 1u);
    }
  };
  d.run();
  d.expect_reference_outputs();
  EXPECT_TRUE(long_ran_alone);
  EXPECT_EQ(d.preemptions, 0);
  EXPECT_EQ(d.admission_order, (std::vector<int64_t>{0, 1, 2, 3}));  // in queue order, no overtaking
}

// A sequence that stops early (its stop token) gives back its whole reservation at once: the next
// waiting sequence is admitted in the very next step.
TEST(Scheduler, AnEarlyFinishReturnsItsReservation) {
  SchedulerOptions o;
  o.max_batch_tokens = 64;
  o.max_running = 4;
  o.block_size = 4;
  o.num_blocks = 20;  // one sequence of 20 + 60 tokens at a time
  Scheduler s(o);
  s.add(0, std::vector<int32_t>(20, 1), 60);
  s.add(1, std::vector<int32_t>(20, 2), 60);
  ScheduledStep st = s.schedule();
  ASSERT_EQ(st.seq_ids, (std::vector<int64_t>{0}));
  EXPECT_EQ(s.reserved_blocks(), 20);
  s.append(0, 5);
  st = s.schedule();  // 0 decodes; 1 waits for the pool
  EXPECT_EQ(st.seq_ids, (std::vector<int64_t>{0}));
  s.finish(0);  // a stop token after two tokens of sixty
  EXPECT_EQ(s.reserved_blocks(), 0);
  st = s.schedule();
  EXPECT_EQ(st.seq_ids, (std::vector<int64_t>{1}));
  s.check_invariants();
}

// A request that arrives while a batch runs (a watched folder's new file) joins the running engine;
// with a higher priority it goes ahead of the batch's waiting sequences, never ahead of running ones.
TEST(Scheduler, ALaterRequestOfHigherPriorityJoinsAheadOfTheWaitingOnes) {
  SchedulerOptions o;
  o.max_batch_tokens = 16;
  o.max_running = 2;
  o.block_size = 4;
  o.num_blocks = 64;
  Driver d(o);
  std::mt19937 rng(9);
  for (int64_t id = 0; id < 6; ++id) d.add(id, random_tokens(rng, 30, kMockVocab), 3);
  d.step();
  d.step();
  const std::vector<int64_t> running_before = {d.sched.running()[0]->id, d.sched.running()[1]->id};
  d.prompts[100] = random_tokens(rng, 10, kMockVocab);
  d.max_new_tokens[100] = 3;
  d.sched.add(100, d.prompts[100], 3, /*priority=*/1);
  EXPECT_EQ(d.sched.waiting().front()->id, 100);
  d.run();
  d.expect_reference_outputs();
  // Admitted right after the two that were running, before the rest of the batch.
  ASSERT_GE(d.admission_order.size(), 3u);
  EXPECT_EQ(std::vector<int64_t>(d.admission_order.begin(), d.admission_order.begin() + 2), running_before);
  EXPECT_EQ(d.admission_order[2], 100);
}

TEST(Scheduler, RefusesASequenceThatCanNeverFitAlone) {
  SchedulerOptions o;
  o.block_size = 16;
  o.num_blocks = 10;  // 160 tokens
  o.max_running = 4;
  Scheduler s(o);
  EXPECT_NO_THROW(s.add(0, std::vector<int32_t>(150, 1), 11));  // 160 positions cached at most
  try {
    s.add(1, std::vector<int32_t>(150, 1), 12);
    FAIL() << "expected abridge::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs 11 KV blocks"), std::string::npos) << e.what();
  }
  EXPECT_THROW(s.add(2, {}, 5), Error);
  EXPECT_THROW(s.add(3, {1}, 0), Error);
  // With a window the same pool runs sequences of any length.
  o.attention = AttentionOptions{32, 4};
  Scheduler w(o);
  EXPECT_NO_THROW(w.add(0, std::vector<int32_t>(10000, 1), 10000));
  o.attention = AttentionOptions{200, 4};  // the window alone needs more than the pool
  Scheduler w2(o);
  EXPECT_THROW(w2.add(0, std::vector<int32_t>(1000, 1), 1), Error);
  SchedulerOptions bad;
  bad.max_batch_tokens = 0;
  EXPECT_THROW(bad.validate(), Error);
  bad.max_batch_tokens = 8;
  bad.max_running = 9;
  EXPECT_THROW(bad.validate(), Error);
  EXPECT_THROW(Scheduler{bad}, Error);
}

TEST(Scheduler, WindowWithSinksKeepsMemoryBoundedAsSequencesGrow) {
  SchedulerOptions o;
  o.max_batch_tokens = 64;
  o.max_running = 4;
  o.block_size = 8;
  o.attention = AttentionOptions{32, 4};
  // Each sequence peaks at 1 + ceil((32 + 64) / 8) + 1 = 14 blocks; 4 of them fit in 56. Without the
  // window, one of these sequences alone would need 160 blocks.
  o.num_blocks = 56;
  Driver d(o);
  std::mt19937 rng(5);
  for (int64_t id = 0; id < 4; ++id) d.add(id, random_tokens(rng, 600 + id * 17, kMockVocab), 700);  // ~40x window
  d.run();
  d.expect_reference_outputs();  // the mock reads only sinks + window: the dropped blocks were unneeded
  EXPECT_EQ(d.preemptions, 0);
  EXPECT_LE(d.max_live, d.sched.kv().max_blocks_per_sequence(64));
  EXPECT_LE(d.max_used, 56);

  // A long sequence alone in a pool far smaller than it: shortened chunks, still exact.
  o.num_blocks = 12;
  Driver e(o);
  e.add(0, random_tokens(rng, 900, kMockVocab), 300);
  e.run();
  e.expect_reference_outputs();
  EXPECT_LE(e.max_used, 12);
}

TEST(Scheduler, PreemptionWithWindowAndTinyPoolStillCompletes) {
  SchedulerOptions o;
  o.max_batch_tokens = 48;
  o.max_running = 6;
  o.block_size = 4;
  o.attention = AttentionOptions{12, 2};
  o.num_blocks = 16;
  o.admission = Admission::kOptimistic;
  Driver d(o);
  std::mt19937 rng(6);
  for (int64_t id = 0; id < 10; ++id) d.add(id, random_tokens(rng, 5 + rng() % 60, kMockVocab), 5 + rng() % 40);
  d.run();
  EXPECT_GT(d.preemptions, 0);
  d.expect_reference_outputs();
}

// ---------------------------------------------------------------------------------------------------
// Serving engine on the mock

TEST(ServingEngine, StopIdsLengthCancelAndBadRequests) {
  SchedulerOptions o;
  o.max_batch_tokens = 64;
  o.max_running = 4;
  o.block_size = 4;
  o.num_blocks = 128;
  PagedMock mock(o.num_blocks, o.block_size, o.attention);
  std::vector<std::pair<int64_t, int32_t>> streamed;
  ServingEngine engine(mock, o, [&](int64_t id, int32_t t) { streamed.emplace_back(id, t); });
  std::mt19937 rng(7);
  const auto p0 = random_tokens(rng, 30, kMockVocab), p1 = random_tokens(rng, 12, kMockVocab);
  const auto ref0 = mock_reference(p0, 10, {});
  Request r0{p0, 10, {}, {}};
  Request r1{p1, 10, {}, {ref0[3]}};  // a stop id that sequence 0 meets; maybe 1 too
  Request r2{p0, 10, {}, {ref0[3]}};
  const int64_t a = engine.submit(r0), b = engine.submit(r1), c = engine.submit(r2);
  const int64_t x = engine.submit(Request{p1, 50, {}, {}});
  engine.cancel(x);
  const auto results = engine.run_until_idle();
  ASSERT_EQ(results.size(), 4u);
  EXPECT_EQ(results[0].id, a);
  EXPECT_EQ(results[0].tokens, ref0);
  EXPECT_EQ(results[0].reason, FinishReason::kLength);
  EXPECT_EQ(results[0].prompt_tokens, 30);
  EXPECT_EQ(results[1].id, b);
  EXPECT_EQ(results[1].tokens, mock_reference(p1, 10, {}, {ref0[3]}));
  EXPECT_EQ(results[2].id, c);
  const auto stop_at = std::find(ref0.begin(), ref0.end(), ref0[3]);
  EXPECT_EQ(results[2].tokens, std::vector<int32_t>(ref0.begin(), stop_at));  // the stop id is not output
  EXPECT_EQ(results[2].reason, FinishReason::kStopToken);
  EXPECT_EQ(results[3].id, x);
  EXPECT_EQ(results[3].reason, FinishReason::kCancelled);
  EXPECT_TRUE(results[3].tokens.empty());
  // Streamed tokens are the outputs, in order per request.
  std::map<int64_t, std::vector<int32_t>> by_id;
  for (auto [id, t] : streamed) by_id[id].push_back(t);
  for (const auto& r : results) EXPECT_EQ(by_id[r.id], r.tokens);
  for (int32_t s = 0; s < o.max_running; ++s) EXPECT_EQ(mock.cached_tokens(s), 0) << "slot " << s;
  const EngineCounters cn = engine.counters();
  EXPECT_EQ(cn.submitted, 4);
  EXPECT_EQ(cn.finished, 4);
  EXPECT_EQ(cn.prefill_tokens, 30 + 12 + 30);
  EXPECT_EQ(cn.generated_tokens,
            static_cast<int64_t>(results[0].tokens.size() + results[1].tokens.size() + results[2].tokens.size()));
  EXPECT_EQ(cn.steps, mock.calls());

  EXPECT_THROW(engine.submit(Request{{}, 4, {}, {}}), Error);                       // empty
  EXPECT_THROW(engine.submit(Request{{1, kMockVocab}, 4, {}, {}}), Error);          // outside the vocabulary
  EXPECT_THROW(engine.submit(Request{{1, 2}, 0, {}, {}}), Error);                   // no tokens wanted
  EXPECT_THROW(engine.submit(Request{std::vector<int32_t>(600, 1), 1, {}, {}}), Error);  // beyond the pool
  EXPECT_TRUE(engine.run_until_idle().empty());
}

TEST(ServingEngine, ConcurrentSubmitsFromThreadsAllFinishCorrectly) {
  SchedulerOptions o;
  o.max_batch_tokens = 96;
  o.max_running = 8;
  o.block_size = 4;
  o.num_blocks = 64;  // small: preemption happens while threads keep submitting
  o.admission = Admission::kOptimistic;
  PagedMock mock(o.num_blocks, o.block_size, o.attention);
  std::mutex mu;
  std::map<int64_t, RequestResult> results;
  std::map<int64_t, std::vector<int32_t>> streamed;
  ServingEngine engine(
      mock, o,
      [&](int64_t id, int32_t t) {
        std::lock_guard lock(mu);
        streamed[id].push_back(t);
      },
      [&](int64_t id, const RequestResult& r) {
        std::lock_guard lock(mu);
        results[id] = r;
      });
  engine.start();
  std::map<int64_t, std::vector<int32_t>> expected;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      for (int i = 0; i < 25; ++i) {
        const auto prompt = random_tokens(rng, 1 + rng() % 50, kMockVocab);
        const int64_t max_new = 1 + rng() % 20;
        const auto ref = mock_reference(prompt, max_new, {});
        const int64_t id = engine.submit(Request{prompt, max_new, {}, {}});
        std::lock_guard lock(mu);
        expected[id] = ref;
      }
    });
  }
  for (auto& th : threads) th.join();
  engine.stop(ServingEngine::StopMode::kDrain);
  ASSERT_EQ(results.size(), 100u);
  for (const auto& [id, ref] : expected) {
    EXPECT_EQ(results[id].tokens, ref) << "request " << id;
    EXPECT_EQ(streamed[id], ref) << "request " << id;
    EXPECT_EQ(results[id].reason, FinishReason::kLength);
  }
  const EngineCounters c = engine.counters();
  EXPECT_EQ(c.finished, 100);
  EXPECT_EQ(c.running + c.waiting, 0);
  for (int32_t s = 0; s < o.max_running; ++s) EXPECT_EQ(mock.cached_tokens(s), 0) << "slot " << s;
}

TEST(ServingEngine, ABackendErrorEndsTheStepsRequestsAndTheEngineGoesOn) {
  SchedulerOptions o;
  o.max_batch_tokens = 32;
  o.max_running = 4;
  o.block_size = 4;
  o.num_blocks = 64;
  PagedMock mock(o.num_blocks, o.block_size, o.attention);
  ServingEngine engine(mock, o);
  mock.throw_at_call(3);
  engine.submit(Request{{1, 2, 3}, 5, {}, {}});
  engine.submit(Request{{4, 5, 6, 7}, 5, {}, {}});
  const auto failed = engine.run_until_idle();
  ASSERT_EQ(failed.size(), 2u);
  for (const auto& r : failed) {
    EXPECT_EQ(r.reason, FinishReason::kError);
    EXPECT_EQ(r.tokens.size(), 2u);  // two steps ran
    EXPECT_NE(r.error.find("device lost"), std::string::npos) << r.error;
  }
  for (int32_t s = 0; s < o.max_running; ++s) EXPECT_EQ(mock.cached_tokens(s), 0) << "slot " << s;
  engine.submit(Request{{1, 2, 3}, 5, {}, {}});
  const auto ok = engine.run_until_idle();
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_EQ(ok[0].tokens, mock_reference({1, 2, 3}, 5, {}));
}

TEST(ServingEngine, StopWithCancelEndsWhatIsLeft) {
  SchedulerOptions o;
  o.max_batch_tokens = 16;
  o.max_running = 2;
  o.block_size = 4;
  o.num_blocks = 64;
  PagedMock mock(o.num_blocks, o.block_size, o.attention);
  std::mutex mu;
  std::map<FinishReason, int> reasons;
  std::atomic<int> finished{0};
  ServingEngine engine(mock, o, {}, [&](int64_t, const RequestResult& r) {
    std::lock_guard lock(mu);
    ++reasons[r.reason];
    ++finished;
  });
  for (int i = 0; i < 20; ++i) engine.submit(Request{std::vector<int32_t>(40, i), 200, {}, {}});
  engine.start();
  engine.stop(ServingEngine::StopMode::kCancel);
  EXPECT_EQ(finished.load(), 20);  // every request is reported exactly once
  EXPECT_GT(reasons[FinishReason::kCancelled], 0);
  for (int32_t s = 0; s < o.max_running; ++s) EXPECT_EQ(mock.cached_tokens(s), 0);
  // The engine can be used again afterwards.
  engine.submit(Request{{1, 2, 3}, 2, {}, {}});
  EXPECT_EQ(engine.run_until_idle().size(), 1u);
}

// ---------------------------------------------------------------------------------------------------
// The tiny random Qwen3 model on the CPU backend: batching does not change a single token.

namespace {

struct Case {
  Request request;
  std::vector<int32_t> alone;  // engine::generate() on the same backend, one sequence at a time
};

class TinyServing : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new ModelDir(open_model_dir(random_model_dir().string()));
    backend_ = new CpuBackend(model_->config, *model_->checkpoint, 2);
    // 64 sequences, prompts of 5..300 tokens, 4..8 new tokens; every 4th samples at temperature 0.8,
    // every 5th (from the 3rd) has a stop id taken from its own unstopped output.
    std::mt19937 rng(2024);
    cases_ = new std::vector<Case>();
    for (int i = 0; i < 64; ++i) {
      Case c;
      c.request.prompt = random_tokens(rng, 5 + static_cast<int64_t>(rng() % 296), model_->config.vocab_size);
      c.request.max_new_tokens = 4 + i % 5;
      if (i % 4 == 3) c.request.sampling = SamplingParams{0.8f, 0.9f, static_cast<uint64_t>(i)};
      GenerationOptions g;
      g.max_new_tokens = c.request.max_new_tokens;
      g.sampling = c.request.sampling;
      c.alone = generate(*backend_, 0, c.request.prompt, g).tokens;
      if (i % 5 == 2) {
        c.request.stop_ids = {c.alone[1]};
        c.alone.erase(std::find(c.alone.begin(), c.alone.end(), c.alone[1]), c.alone.end());
      }
      cases_->push_back(std::move(c));
    }
  }
  static void TearDownTestSuite() {
    delete cases_;
    delete backend_;
    delete model_;
  }
  static void expect_all_released(int32_t max_running) {
    for (int32_t s = 0; s < max_running; ++s) EXPECT_EQ(backend_->cached_tokens(s), 0) << "slot " << s;
  }
  static ModelDir* model_;
  static CpuBackend* backend_;
  static std::vector<Case>* cases_;
};
ModelDir* TinyServing::model_ = nullptr;
CpuBackend* TinyServing::backend_ = nullptr;
std::vector<Case>* TinyServing::cases_ = nullptr;

}  // namespace

TEST_F(TinyServing, Batch64MixedLengthsGivesTheTokensOfEachSequenceAlone) {
  SchedulerOptions o;
  o.max_batch_tokens = 2048;
  o.max_running = 64;
  o.block_size = 16;
  o.num_blocks = 4096;
  ServingEngine engine(*backend_, o);
  for (const Case& c : *cases_) engine.submit(c.request);
  const auto results = engine.run_until_idle();
  ASSERT_EQ(results.size(), cases_->size());
  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(results[i].tokens, (*cases_)[i].alone) << "request " << i;
    EXPECT_EQ(results[i].prompt_tokens, static_cast<int64_t>((*cases_)[i].request.prompt.size()));
  }
  const EngineCounters c = engine.counters();
  EXPECT_EQ(c.preemptions, 0);
  EXPECT_LT(c.steps, 40);  // batched: not one step per token
  expect_all_released(o.max_running);
}

// --prefill-chunk: the scheduler's step budget. One request with its prompt in steps of at most 64
// tokens takes ceil(n / 64) prefill steps (the last samples the first token), then one step per
// further token, and gives the tokens of the request alone.
TEST_F(TinyServing, PrefillChunkSetsTheStepBudget) {
  EXPECT_EQ(scheduler_options_for(*backend_, 64).max_batch_tokens, kDefaultStepTokens);
  const SchedulerOptions small = scheduler_options_for(*backend_, 4, {}, 64);
  EXPECT_EQ(small.max_batch_tokens, 64);
  const auto it = std::find_if(cases_->begin(), cases_->end(),
                               [](const Case& c) { return c.request.stop_ids.empty() && c.request.prompt.size() > 200; });
  ASSERT_NE(it, cases_->end());
  ServingEngine engine(*backend_, small);
  engine.submit(it->request);
  const auto results = engine.run_until_idle();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].tokens, it->alone);
  const int64_t n = static_cast<int64_t>(it->request.prompt.size());
  EXPECT_EQ(engine.counters().steps, (n + 63) / 64 + static_cast<int64_t>(results[0].tokens.size()) - 1);
  expect_all_released(small.max_running);
}

TEST_F(TinyServing, ForcedPreemptionChangesNoToken) {
  SchedulerOptions o;
  o.max_batch_tokens = 512;
  o.max_running = 16;
  o.block_size = 16;
  o.num_blocks = 40;  // 640 tokens: two or three sequences at a time, the longest need 20 blocks
  o.admission = Admission::kOptimistic;
  ServingEngine engine(*backend_, o);
  for (const Case& c : *cases_) engine.submit(c.request);
  const auto results = engine.run_until_idle();
  ASSERT_EQ(results.size(), cases_->size());
  int64_t preempted = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(results[i].tokens, (*cases_)[i].alone) << "request " << i;
    preempted += results[i].preemptions;
  }
  EXPECT_GT(engine.counters().preemptions, 0);
  EXPECT_EQ(preempted, engine.counters().preemptions);
  expect_all_released(o.max_running);
}

TEST_F(TinyServing, RequestsFromSeveralThreadsOnTheEngineThread) {
  SchedulerOptions o;
  o.max_batch_tokens = 1024;
  o.max_running = 16;
  o.block_size = 16;
  o.num_blocks = 1024;
  std::mutex mu;
  std::map<int64_t, std::vector<int32_t>> got;
  ServingEngine engine(*backend_, o, {}, [&](int64_t id, const RequestResult& r) {
    std::lock_guard lock(mu);
    got[id] = r.tokens;
  });
  engine.start();
  std::map<int64_t, size_t> case_of;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = static_cast<size_t>(t); i < 24; i += 4) {
        const int64_t id = engine.submit((*cases_)[i].request);
        std::lock_guard lock(mu);
        case_of[id] = i;
      }
    });
  for (auto& th : threads) th.join();
  engine.stop(ServingEngine::StopMode::kDrain);
  ASSERT_EQ(got.size(), 24u);
  for (const auto& [id, i] : case_of) EXPECT_EQ(got[id], (*cases_)[i].alone) << "case " << i;
  expect_all_released(o.max_running);
}
