// Continuous batching with chunked prefill over a paged KV pool, host only (no backend, no GPU).
//
// A sequence is a list of tokens (its prompt, then each token sampled for it) of which the first
// `computed` are in the KV cache. Every step computes some of each chosen sequence's remaining tokens;
// when a step reaches a sequence's last token, that token's logits are wanted and the caller samples
// the next token (append()) or ends the sequence (finish()). Decoding is the case of one remaining
// token; a prompt is prefilled in chunks across steps.
//
// One step, under a budget of max_batch_tokens tokens:
//   1. one token for every running sequence that is decoding, oldest first;
//   2. a chunk of every running sequence still prefilling, oldest first;
//   3. admission from the waiting queue in order while there is budget, a free slot and KV blocks.
// The waiting queue is ordered by priority (higher first), then by arrival; preempted sequences go back
// to its front.
//
// Admission (SchedulerOptions::admission):
//  - kReserve (the default): a sequence is admitted only when the pool can hold everything it will ever
//    need (its reservation: the blocks at its peak, prompt + max_new_tokens - 1 positions, or the
//    window's bound) beside the reservations of every running sequence; each sequence then takes blocks
//    only within its own reservation. The pool can never run short, so nothing is preempted and no
//    token is computed twice. A sequence that finishes early (a stop token) returns its reservation.
//  - kOptimistic: a sequence is admitted as soon as its first chunk fits (vLLM's policy: more sequences
//    at once when most stop early). When the pool is short, a prefill chunk is shortened to what fits;
//    when not even one token fits, the most recently admitted running sequence is preempted (vLLM's
//    "recompute" preemption: its blocks and slot are freed and it goes back to the front of the queue
//    with the tokens generated so far, to be prefilled again). The oldest running sequence is never the
//    victim of another, so the batch always makes progress.
// Blocks for a step's tokens are allocated before it runs. A sequence that cannot run even alone in the
// pool is refused by add() (abridge::Error) or, failing that, reported in ScheduledStep::failed.
//
// The caller runs every scheduled step: schedule() counts its tokens as computed.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/batch_plan.h"
#include "engine/kv_blocks.h"

namespace abridge::engine {

enum class Admission { kReserve, kOptimistic };

struct SchedulerOptions {
  int64_t max_batch_tokens = kDefaultStepTokens;  // tokens per step, decodes and prefill chunks together
  int32_t max_running = 64;         // sequences holding a slot at once; slot ids are [0, max_running)
  int64_t max_prefill_chunk = 0;    // prompt tokens of one sequence per step; 0: up to the budget
  int32_t block_size = 16;          // tokens per KV block
  int32_t num_blocks = 4096;        // blocks in the KV pool
  AttentionOptions attention;       // window > 0: blocks outside the sinks and the window are freed
  Admission admission = Admission::kReserve;

  // Throws abridge::Error naming the bad field.
  void validate() const;
};

enum class SeqState { kWaiting, kRunning };

struct Sequence {
  int64_t id = 0;
  std::vector<int32_t> tokens;  // the prompt, then the tokens appended for it
  int64_t prompt_len = 0;       // of the original prompt
  int64_t max_new_tokens = 0;
  int64_t computed = 0;         // tokens [0, computed) are in the slot's cache (their positions)
  int32_t priority = 0;         // higher is admitted first; arrival order within a priority
  int64_t reservation = 0;      // kReserve: KV blocks set aside for it while running
  int32_t slot = -1;            // backend slot while running
  BlockTable blocks;            // covers [0, computed) and the step's tokens while running; empty when waiting
  SeqState state = SeqState::kWaiting;
  int64_t preemptions = 0;

  int64_t remaining() const { return static_cast<int64_t>(tokens.size()) - computed; }
  int64_t generated() const { return static_cast<int64_t>(tokens.size()) - prompt_len; }
};

struct ScheduledStep {
  struct Failure {
    int64_t id;
    std::string message;
  };
  BatchPlan plan;                        // block_tables: every slot of the plan, covering its last token
  std::vector<int64_t> row_seqs;         // (plan.logit_rows.size()) the sequence of each logits row
  std::vector<int64_t> seq_ids;          // the sequences with tokens in the plan, in plan order
  std::vector<int32_t> released_slots;   // Backend::release these before running the plan
  std::vector<int64_t> preempted;        // sent back to the waiting queue by this step
  std::vector<Failure> failed;           // removed: they cannot run even alone in the pool
  int64_t prefill_tokens = 0;            // tokens of sequences with more than one remaining
  int64_t decode_tokens = 0;             // tokens of sequences with exactly one remaining

  bool empty() const { return plan.size() == 0; }
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerOptions& options);

  // Throws abridge::Error when a sequence of `prompt_len` + `max_new_tokens` tokens could never run,
  // even alone, in this pool (or when either count is < 1). Thread-safe (reads options only).
  void check_fits(int64_t prompt_len, int64_t max_new_tokens) const;
  // Queues a sequence (ids must be unique among live sequences) behind every waiting sequence of the
  // same or a higher priority; throws as check_fits().
  void add(int64_t id, std::vector<int32_t> prompt, int64_t max_new_tokens, int32_t priority = 0);
  // Plans the next step; empty when there is nothing to run.
  ScheduledStep schedule();
  // The token sampled from a sequence's logits row: it becomes the sequence's next token to compute.
  void append(int64_t id, int32_t token);
  // Removes a live sequence (done, stopped or cancelled); frees its blocks. Returns the slot to
  // Backend::release, or -1 when it held none.
  int32_t finish(int64_t id);

  bool idle() const { return running_.empty() && waiting_.empty(); }
  bool contains(int64_t id) const { return seqs_.count(id) != 0; }
  const Sequence& sequence(int64_t id) const;  // aborts when unknown
  const std::vector<Sequence*>& running() const { return running_; }  // in admission order
  const std::deque<Sequence*>& waiting() const { return waiting_; }
  const KvBlockManager& kv() const { return kv_; }
  const SchedulerOptions& options() const { return options_; }
  int64_t total_preemptions() const { return total_preemptions_; }
  // Tokens that had been computed for sequences when they were preempted: computed again later.
  int64_t recomputed_tokens() const { return recomputed_tokens_; }
  // The most KV blocks in use after any step so far.
  int64_t peak_blocks() const { return peak_blocks_; }
  // kReserve: the blocks set aside for the running sequences (at most num_blocks).
  int64_t reserved_blocks() const { return reserved_blocks_; }
  // kReserve: the blocks a sequence of prompt_len + max_new_tokens tokens sets aside while it runs.
  int64_t reservation_for(int64_t prompt_len, int64_t max_new_tokens) const;
  // Aborts unless blocks held by running sequences == blocks in use, waiting sequences hold no
  // block or slot, slots are distinct, and the pool's own invariants hold.
  void check_invariants() const;

 private:
  struct Entry {
    Sequence* seq;
    int64_t begin;  // first position
    int64_t count;  // tokens
  };
  // Reserves blocks for up to `want` tokens of running `s` from s.computed (exactly `want` unless
  // `partial`), preempting younger sequences when not even one token fits. Returns the tokens granted;
  // 0 when `s` itself was preempted or failed.
  int64_t reserve(Sequence& s, int64_t want, bool partial, std::vector<Entry>& entries, int64_t& budget,
                  ScheduledStep& step);
  void preempt(Sequence& s, std::vector<Entry>& entries, int64_t& budget, ScheduledStep& step);
  void remove_running(Sequence& s);
  int64_t chunk_limit(int64_t budget) const;

  SchedulerOptions options_;
  KvBlockManager kv_;
  std::unordered_map<int64_t, std::unique_ptr<Sequence>> seqs_;
  std::vector<Sequence*> running_;  // admission order: back() is the most recently admitted
  std::deque<Sequence*> waiting_;   // arrival order; preempted sequences go back to the front
  std::set<int32_t> free_slots_;    // lowest id first
  int64_t total_preemptions_ = 0;
  int64_t recomputed_tokens_ = 0;
  int64_t peak_blocks_ = 0;
  int64_t reserved_blocks_ = 0;
};

}  // namespace abridge::engine
