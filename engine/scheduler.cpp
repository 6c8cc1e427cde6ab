#include "engine/scheduler.h"

#include <algorithm>

#include "base/error.h"

namespace abridge::engine {

void SchedulerOptions::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw Error("scheduler options: " + what);
  };
  need(max_batch_tokens >= 1, "max_batch_tokens must be >= 1, got " + std::to_string(max_batch_tokens));
  need(max_running >= 1, "max_running must be >= 1, got " + std::to_string(max_running));
  // Every running sequence may need its decode token in one step.
  need(max_running <= max_batch_tokens, "max_running (" + std::to_string(max_running) +
                                            ") must not exceed max_batch_tokens (" +
                                            std::to_string(max_batch_tokens) + ")");
  need(max_prefill_chunk >= 0, "max_prefill_chunk must be >= 0, got " + std::to_string(max_prefill_chunk));
  need(block_size >= 1, "block_size must be >= 1, got " + std::to_string(block_size));
  need(num_blocks >= 1, "num_blocks must be >= 1, got " + std::to_string(num_blocks));
  need(attention.window >= 0 && attention.sinks >= 0, "attention window and sinks must be >= 0");
}

namespace {

const SchedulerOptions& validated(const SchedulerOptions& o) {
  o.validate();
  return o;
}

}  // namespace

Scheduler::Scheduler(const SchedulerOptions& options)
    : options_(validated(options)), kv_(options.num_blocks, options.block_size, options.attention) {
  for (int32_t s = 0; s < options_.max_running; ++s) free_slots_.insert(s);
}

void Scheduler::check_fits(int64_t prompt_len, int64_t max_new_tokens) const {
  if (prompt_len < 1) throw Error("the prompt is empty");
  if (max_new_tokens < 1) throw Error("max_new_tokens must be >= 1, got " + std::to_string(max_new_tokens));
  // The last generated token is never fed back, so the cache peaks at prompt + max_new - 1 positions.
  const int64_t need = kv_.min_blocks_to_run(prompt_len + max_new_tokens - 1);
  if (need > options_.num_blocks)
    throw Error("a sequence of " + std::to_string(prompt_len) + " prompt + " + std::to_string(max_new_tokens) +
                " new tokens needs " + std::to_string(need) + " KV blocks of " +
                std::to_string(options_.block_size) + " tokens, the pool has " +
                std::to_string(options_.num_blocks) +
                " (give the KV cache more memory, ask for fewer tokens or set an attention window)");
}

int64_t Scheduler::reservation_for(int64_t prompt_len, int64_t max_new_tokens) const {
  // The last generated token is never fed back: the cache peaks at prompt + max_new - 1 positions.
  const int64_t n = prompt_len + max_new_tokens - 1;
  const int64_t whole = (n + options_.block_size - 1) / options_.block_size;
  const int64_t windowed = kv_.max_blocks_per_sequence(chunk_limit(options_.max_batch_tokens));
  if (windowed < 0) return whole;
  // With a window: room for full chunks where the pool allows it, else the least it can run in (one
  // token a step), which check_fits() has seen to fit.
  const int64_t r = std::min(whole, windowed);
  return r <= options_.num_blocks ? r : kv_.min_blocks_to_run(n);
}

void Scheduler::add(int64_t id, std::vector<int32_t> prompt, int64_t max_new_tokens, int32_t priority) {
  check_fits(static_cast<int64_t>(prompt.size()), max_new_tokens);
  ABRIDGE_CHECK(!contains(id), "sequence id " + std::to_string(id) + " is already live");
  auto s = std::make_unique<Sequence>();
  s->id = id;
  s->prompt_len = static_cast<int64_t>(prompt.size());
  s->tokens = std::move(prompt);
  s->max_new_tokens = max_new_tokens;
  s->priority = priority;
  s->reservation = options_.admission == Admission::kReserve ? reservation_for(s->prompt_len, max_new_tokens) : 0;
  // Behind every waiting sequence of the same or a higher priority (preempted ones at the front stay there).
  auto at = std::find_if(waiting_.begin(), waiting_.end(), [&](const Sequence* w) { return w->priority < priority; });
  waiting_.insert(at, s.get());
  seqs_.emplace(id, std::move(s));
}

const Sequence& Scheduler::sequence(int64_t id) const {
  auto it = seqs_.find(id);
  ABRIDGE_CHECK(it != seqs_.end(), "unknown sequence " + std::to_string(id));
  return *it->second;
}

int64_t Scheduler::chunk_limit(int64_t budget) const {
  return options_.max_prefill_chunk > 0 ? std::min(budget, options_.max_prefill_chunk) : budget;
}

void Scheduler::remove_running(Sequence& s) {
  auto it = std::find(running_.begin(), running_.end(), &s);
  ABRIDGE_CHECK(it != running_.end(), "sequence " + std::to_string(s.id) + " is not running");
  running_.erase(it);
  reserved_blocks_ -= s.reservation;
  kv_.release(s.blocks);
  free_slots_.insert(s.slot);
  s.slot = -1;
}

void Scheduler::preempt(Sequence& s, std::vector<Entry>& entries, int64_t& budget, ScheduledStep& step) {
  for (auto it = entries.begin(); it != entries.end();) {
    if (it->seq == &s) {
      budget += it->count;
      it = entries.erase(it);
    } else {
      ++it;
    }
  }
  step.released_slots.push_back(s.slot);
  remove_running(s);
  // Recompute: the tokens generated so far stay in `tokens` and are prefilled again with the prompt.
  recomputed_tokens_ += s.computed;
  s.computed = 0;
  s.state = SeqState::kWaiting;
  ++s.preemptions;
  ++total_preemptions_;
  waiting_.push_front(&s);
  step.preempted.push_back(s.id);
}

int64_t Scheduler::reserve(Sequence& s, int64_t want, bool partial, std::vector<Entry>& entries,
                           int64_t& budget, ScheduledStep& step) {
  kv_.drop_unreachable(s.blocks, s.computed);
  if (options_.admission == Admission::kReserve) {
    // Within its own reservation, which the pool always has free: at least one token fits (the
    // reservation covers the sequence's peak when it advances a token at a time).
    const int64_t fit = kv_.tokens_that_fit(s.blocks, s.computed, want, s.reservation - s.blocks.live);
    ABRIDGE_CHECK(fit >= 1 && (fit == want || partial),
                  "sequence " + std::to_string(s.id) + " outgrew its reservation of " + std::to_string(s.reservation) +
                      " blocks at position " + std::to_string(s.computed));
    ABRIDGE_CHECK(kv_.cover(s.blocks, s.computed + fit));
    return fit;
  }
  for (;;) {
    const int64_t fit = kv_.tokens_that_fit(s.blocks, s.computed, want);
    if (fit == want || (partial && fit > 0)) {
      ABRIDGE_CHECK(kv_.cover(s.blocks, s.computed + fit));
      return fit;
    }
    Sequence& victim = *running_.back();
    if (&victim != &s) {
      preempt(victim, entries, budget, step);
      continue;
    }
    if (running_.size() > 1) {
      preempt(s, entries, budget, step);
      return 0;
    }
    // Alone with every other block free: it will never fit. (check_fits() refuses such sequences
    // up front; this is the net under it.)
    const int64_t id = s.id;
    step.failed.push_back({id, "sequence " + std::to_string(id) + " does not fit in the KV pool (" +
                                   std::to_string(options_.num_blocks) + " blocks of " +
                                   std::to_string(options_.block_size) + " tokens) at position " +
                                   std::to_string(s.computed)});
    step.released_slots.push_back(s.slot);
    remove_running(s);
    seqs_.erase(id);
    return 0;
  }
}

ScheduledStep Scheduler::schedule() {
  ScheduledStep step;
  int64_t budget = options_.max_batch_tokens;
  std::vector<Entry> entries;

  for (const Sequence* s : running_)
    ABRIDGE_CHECK(s->remaining() >= 1, "sequence " + std::to_string(s->id) +
                                           " has no token to compute: append() or finish() it after its logits");

  // 1. Decodes. A sequence that leaves running_ in reserve() was its last element, which ends the loop.
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Sequence& s = *running_[i];
    if (s.remaining() != 1) continue;
    if (reserve(s, 1, false, entries, budget, step) == 0) continue;
    entries.push_back({&s, s.computed, 1});
    budget -= 1;
  }
  // 2. Running prefills; their chunks shrink to the free blocks before anyone is preempted.
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Sequence& s = *running_[i];
    if (s.remaining() <= 1) continue;
    const int64_t got = reserve(s, std::min(s.remaining(), chunk_limit(budget)), true, entries, budget, step);
    if (got == 0) continue;
    entries.push_back({&s, s.computed, got});
    budget -= got;
  }
  // 3. Admission, strictly in queue order. kReserve: the pool must hold the sequence's reservation beside
  // those of the running ones. kOptimistic: room for its whole first chunk, unless nothing runs (then
  // no blocks will come back, and a shorter chunk is the only way forward).
  const bool reserve = options_.admission == Admission::kReserve;
  while (!waiting_.empty() && !free_slots_.empty() && budget > 0) {
    Sequence& s = *waiting_.front();
    if (reserve && reserved_blocks_ + s.reservation > options_.num_blocks) break;
    const int64_t want = std::min(s.remaining(), chunk_limit(budget));
    const int64_t fit = kv_.tokens_that_fit(s.blocks, s.computed, want, reserve ? s.reservation : -1);
    if (fit == 0 || (fit < want && !running_.empty() && !reserve)) break;
    reserved_blocks_ += s.reservation;
    waiting_.pop_front();
    s.state = SeqState::kRunning;
    s.slot = *free_slots_.begin();
    free_slots_.erase(free_slots_.begin());
    running_.push_back(&s);
    ABRIDGE_CHECK(kv_.cover(s.blocks, s.computed + fit));
    entries.push_back({&s, s.computed, fit});
    budget -= fit;
  }

  for (const Entry& e : entries) {
    Sequence& s = *e.seq;
    const bool reaches_end = e.begin + e.count == static_cast<int64_t>(s.tokens.size());
    for (int64_t i = 0; i < e.count; ++i) {
      const int64_t pos = e.begin + i;
      step.plan.add(s.tokens[pos], static_cast<int32_t>(pos), s.slot, reaches_end && i == e.count - 1);
    }
    if (reaches_end) step.row_seqs.push_back(s.id);
    step.seq_ids.push_back(s.id);
    (s.remaining() == 1 ? step.decode_tokens : step.prefill_tokens) += e.count;
    step.plan.block_tables[s.slot] = s.blocks.blocks;
    s.computed += e.count;
  }
  ABRIDGE_CHECK(static_cast<int64_t>(step.plan.size()) <= options_.max_batch_tokens);
  peak_blocks_ = std::max<int64_t>(peak_blocks_, kv_.pool().num_used());
  return step;
}

void Scheduler::append(int64_t id, int32_t token) {
  auto it = seqs_.find(id);
  ABRIDGE_CHECK(it != seqs_.end(), "unknown sequence " + std::to_string(id));
  Sequence& s = *it->second;
  ABRIDGE_CHECK(s.state == SeqState::kRunning && s.remaining() == 0,
                "sequence " + std::to_string(id) + " has no logits to append to (remaining " +
                    std::to_string(s.remaining()) + ")");
  s.tokens.push_back(token);
}

int32_t Scheduler::finish(int64_t id) {
  auto it = seqs_.find(id);
  ABRIDGE_CHECK(it != seqs_.end(), "unknown sequence " + std::to_string(id));
  Sequence& s = *it->second;
  int32_t slot = -1;
  if (s.state == SeqState::kRunning) {
    slot = s.slot;
    remove_running(s);
  } else {
    auto w = std::find(waiting_.begin(), waiting_.end(), &s);
    ABRIDGE_CHECK(w != waiting_.end());
    waiting_.erase(w);
  }
  seqs_.erase(it);
  return slot;
}

void Scheduler::check_invariants() const {
  kv_.pool().check_invariants();
  int64_t held = 0;
  std::set<int32_t> slots;
  for (const Sequence* s : running_) {
    ABRIDGE_CHECK(s->state == SeqState::kRunning);
    ABRIDGE_CHECK(s->slot >= 0 && s->slot < options_.max_running && !free_slots_.count(s->slot),
                  "slot " + std::to_string(s->slot));
    ABRIDGE_CHECK(slots.insert(s->slot).second, "slot " + std::to_string(s->slot) + " held twice");
    ABRIDGE_CHECK(s->blocks.covered(options_.block_size) >= s->computed);
    int64_t live = 0;
    for (int32_t b : s->blocks.blocks) {
      if (b < 0) continue;
      ABRIDGE_CHECK(kv_.pool().is_used(b), "sequence " + std::to_string(s->id) + " holds free block " +
                                               std::to_string(b));
      ++live;
    }
    ABRIDGE_CHECK(live == s->blocks.live);
    held += live;
  }
  int64_t reserved = 0;
  for (const Sequence* s : running_) {
    reserved += s->reservation;
    ABRIDGE_CHECK(options_.admission != Admission::kReserve || s->blocks.live <= s->reservation,
                  "sequence " + std::to_string(s->id) + " holds more than its reservation");
  }
  ABRIDGE_CHECK(reserved == reserved_blocks_ && reserved_blocks_ <= options_.num_blocks);
  ABRIDGE_CHECK(held == kv_.pool().num_used(),
                "running sequences hold " + std::to_string(held) + " blocks, the pool has " +
                    std::to_string(kv_.pool().num_used()) + " in use");
  for (const Sequence* s : waiting_) {
    ABRIDGE_CHECK(s->state == SeqState::kWaiting && s->slot == -1 && s->blocks.blocks.empty() && s->computed == 0);
  }
  ABRIDGE_CHECK(running_.size() + waiting_.size() == seqs_.size());
  ABRIDGE_CHECK(static_cast<int64_t>(free_slots_.size() + running_.size()) == options_.max_running);
}

}  // namespace abridge::engine
