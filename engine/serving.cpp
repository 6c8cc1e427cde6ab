#include "engine/serving.h"

#include <algorithm>
#include <exception>

#include "base/error.h"

namespace abridge::engine {
namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

}  // namespace

const char* to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStopToken: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "?";
}

ServingEngine::ServingEngine(Backend& backend, const SchedulerOptions& options, TokenCallback on_token,
                             FinishCallback on_finish)
    : backend_(backend), scheduler_(options), on_token_(std::move(on_token)), on_finish_(std::move(on_finish)) {
  counters_.kv_blocks = options.num_blocks;
  counters_.kv_block_tokens = options.block_size;
}

ServingEngine::~ServingEngine() { stop(StopMode::kCancel); }

int64_t ServingEngine::submit(Request request) {
  const ModelConfig& c = backend_.config();
  const int64_t n = static_cast<int64_t>(request.prompt.size());
  scheduler_.check_fits(n, request.max_new_tokens);  // empty prompt, max_new_tokens < 1, KV pool
  if (n + request.max_new_tokens > c.max_position_embeddings)
    throw Error("prompt (" + std::to_string(n) + " tokens) + max new tokens (" +
                std::to_string(request.max_new_tokens) + ") exceeds the model's context of " +
                std::to_string(c.max_position_embeddings) + " tokens");
  for (int32_t t : request.prompt)
    if (t < 0 || t >= c.vocab_size)
      throw Error("prompt token id " + std::to_string(t) + " is outside the vocabulary of " +
                  std::to_string(c.vocab_size));
  Sampler sampler(request.sampling);
  Live live{std::move(request), std::move(sampler), {}, Clock::now(), {}, {}, false, false};
  live.result.prompt_tokens = n;
  std::lock_guard lock(mu_);
  const int64_t id = next_id_++;
  live.result.id = id;
  inbox_.emplace_back(id, std::move(live));
  ++counters_.submitted;
  cv_.notify_all();
  return id;
}

void ServingEngine::cancel(int64_t id) {
  std::lock_guard lock(mu_);
  cancels_.push_back(id);
  cv_.notify_all();
}

void ServingEngine::take_inbox() {
  std::vector<std::pair<int64_t, Live>> inbox;
  std::vector<int64_t> cancels;
  {
    std::lock_guard lock(mu_);
    inbox.swap(inbox_);
    cancels.swap(cancels_);
  }
  for (auto& [id, live] : inbox) {
    scheduler_.add(id, live.request.prompt, live.request.max_new_tokens, live.request.priority);
    live_.emplace(id, std::move(live));
  }
  for (int64_t id : cancels)
    if (live_.count(id)) finish(id, FinishReason::kCancelled);
}

void ServingEngine::finish(int64_t id, FinishReason reason, std::string error) {
  auto it = live_.find(id);
  ABRIDGE_CHECK(it != live_.end(), "unknown request " + std::to_string(id));
  if (scheduler_.contains(id)) {
    const int32_t slot = scheduler_.finish(id);
    if (slot >= 0) backend_.release(slot);
  }
  Live& L = it->second;
  const auto now = Clock::now();
  RequestResult result = std::move(L.result);
  result.reason = reason;
  result.error = std::move(error);
  if (L.started_set) {
    result.queue_seconds = seconds(L.submitted, L.started);
    result.prefill_seconds = seconds(L.started, L.first_token_set ? L.first_token : now);
  } else {
    result.queue_seconds = seconds(L.submitted, now);
  }
  if (L.first_token_set) result.decode_seconds = seconds(L.first_token, now);
  live_.erase(it);
  {
    std::lock_guard lock(mu_);
    ++counters_.finished;
  }
  if (collect_) done_.push_back(result);
  if (on_finish_) on_finish_(id, result);
}

void ServingEngine::fail_all(const std::string& message) {
  std::vector<int64_t> ids;
  for (const auto& [id, live] : live_) ids.push_back(id);
  for (int64_t id : ids) finish(id, FinishReason::kError, message);
}

size_t decode_bucket(int64_t batch) {
  size_t b = 0;
  while (b + 1 < kDecodeBucketFirst.size() && batch >= kDecodeBucketFirst[b + 1]) ++b;
  return b;
}

bool ServingEngine::step() {
  {
    std::lock_guard lock(mu_);
    ABRIDGE_CHECK(!running_thread_, "step() while the engine's own thread runs");
  }
  return step_once();
}

bool ServingEngine::step_once() {
  take_inbox();
  if (scheduler_.idle()) return false;
  const auto step_start = Clock::now();

  ScheduledStep st = scheduler_.schedule();
  for (int32_t slot : st.released_slots) backend_.release(slot);
  for (const auto& f : st.failed) finish(f.id, FinishReason::kError, f.message);
  for (int64_t id : st.preempted) ++live_.at(id).result.preemptions;
  // Only a sequence that cannot fit at all leaves a non-idle scheduler with nothing to run.
  ABRIDGE_CHECK(!st.empty() || !st.failed.empty() || scheduler_.idle());

  const auto now = Clock::now();
  for (int64_t id : st.seq_ids) {
    Live& L = live_.at(id);
    if (!L.started_set) L.started = now, L.started_set = true;
  }

  const size_t vocab = static_cast<size_t>(backend_.config().vocab_size);
  const size_t rows = st.plan.logit_rows.size();
  const bool on_device = backend_.samples_on_device();
  std::vector<int32_t> device_tokens;
  if (!on_device && logits_.size() < rows * vocab) logits_.resize(rows * vocab);
  if (!st.empty()) {
    try {
      if (on_device) {
        std::vector<RowSampling> how(rows);
        for (size_t r = 0; r < rows; ++r) {
          const Live& L = live_.at(st.row_seqs[r]);
          how[r] = {L.request.sampling.temperature, L.request.sampling.top_p, L.request.sampling.seed,
                    static_cast<uint64_t>(L.result.tokens.size()), static_cast<int32_t>(L.request.vocab_limit)};
        }
        device_tokens.resize(rows);
        backend_.forward_sampled(st.plan, how, device_tokens);
      } else {
        backend_.forward(st.plan, std::span<float>(logits_.data(), rows * vocab));
      }
    } catch (const std::exception& e) {
      // The step's caches are in an unknown state: end every request (releasing its slot) and go on
      // with the ones submitted later.
      fail_all(std::string(backend_.name()) + " backend: " + e.what());
      return true;
    }
  }

  int64_t generated = 0;
  for (size_t r = 0; r < rows; ++r) {
    const int64_t id = st.row_seqs[r];
    Live& L = live_.at(id);
    const size_t limit = L.request.vocab_limit > 0 ? std::min(vocab, static_cast<size_t>(L.request.vocab_limit)) : vocab;
    const int32_t token =
        on_device ? device_tokens[r] : L.sampler.sample(std::span<const float>(logits_.data() + r * vocab, limit));
    const auto& stop = L.request.stop_ids;
    if (std::find(stop.begin(), stop.end(), token) != stop.end()) {
      finish(id, FinishReason::kStopToken);
      continue;
    }
    L.result.tokens.push_back(token);
    ++generated;
    if (!L.first_token_set) L.first_token = Clock::now(), L.first_token_set = true;
    if (on_token_) on_token_(id, token);
    if (static_cast<int64_t>(L.result.tokens.size()) >= L.request.max_new_tokens)
      finish(id, FinishReason::kLength);
    else
      scheduler_.append(id, token);
  }

  std::lock_guard lock(mu_);
  ++counters_.steps;
  counters_.prefill_tokens += st.prefill_tokens;
  counters_.decode_tokens += st.decode_tokens;
  counters_.generated_tokens += generated;
  const bool decode_only = st.decode_tokens > 0 && st.prefill_tokens == 0;
  const double step_seconds = seconds(step_start, Clock::now());
  counters_.decode_only_steps += decode_only;
  (decode_only ? counters_.decode_only_seconds : counters_.prefill_step_seconds) += step_seconds;
  if (decode_only) {
    DecodeStepBucket& b = counters_.decode_by_batch[decode_bucket(static_cast<int64_t>(st.plan.size()))];
    ++b.steps;
    b.seconds += step_seconds;
    b.sequences += static_cast<int64_t>(st.plan.size());
    for (int32_t p : st.plan.positions) b.kv_tokens += p + 1;
  }
  counters_.preemptions += static_cast<int64_t>(st.preempted.size());
  counters_.recomputed_tokens = scheduler_.recomputed_tokens();
  counters_.peak_kv_blocks = scheduler_.peak_blocks();
  counters_.waiting = static_cast<int64_t>(scheduler_.waiting().size());
  counters_.running = static_cast<int64_t>(scheduler_.running().size());
  return true;
}

std::vector<RequestResult> ServingEngine::run_until_idle() {
  {
    std::lock_guard lock(mu_);
    ABRIDGE_CHECK(!running_thread_, "run_until_idle() while the engine's own thread runs");
  }
  collect_ = true;
  done_.clear();
  for (;;) {
    if (step_once()) continue;
    std::lock_guard lock(mu_);
    if (inbox_.empty() && cancels_.empty()) break;
  }
  collect_ = false;
  std::vector<RequestResult> out = std::move(done_);
  done_.clear();
  std::sort(out.begin(), out.end(), [](const RequestResult& a, const RequestResult& b) { return a.id < b.id; });
  return out;
}

void ServingEngine::start() {
  std::lock_guard lock(mu_);
  ABRIDGE_CHECK(!running_thread_, "start() twice");
  running_thread_ = true;
  stop_requested_ = false;
  thread_ = std::thread([this] { loop(); });
}

void ServingEngine::loop() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      // scheduler_ is only touched by this thread, so the predicate may read it under our lock.
      cv_.wait(lock, [&] { return stop_requested_ || !inbox_.empty() || !cancels_.empty() || !scheduler_.idle(); });
      if (stop_requested_ && stop_mode_ == StopMode::kCancel) break;
      if (stop_requested_ && inbox_.empty() && cancels_.empty() && scheduler_.idle()) break;
    }
    step_once();
  }
  if (stop_mode_ == StopMode::kCancel) {
    take_inbox();
    std::vector<int64_t> ids;
    for (const auto& [id, live] : live_) ids.push_back(id);
    for (int64_t id : ids) finish(id, FinishReason::kCancelled);
  }
}

void ServingEngine::stop(StopMode mode) {
  {
    std::lock_guard lock(mu_);
    if (!running_thread_) return;
    stop_requested_ = true;
    stop_mode_ = mode;
    cv_.notify_all();
  }
  thread_.join();
  std::lock_guard lock(mu_);
  running_thread_ = false;
  stop_requested_ = false;
}

int64_t ServingEngine::queued() const {
  std::lock_guard lock(mu_);
  return static_cast<int64_t>(inbox_.size() + scheduler_.waiting().size());
}

int64_t ServingEngine::queued_tokens() const {
  std::lock_guard lock(mu_);
  int64_t n = 0;
  for (const auto& [id, live] : inbox_) n += static_cast<int64_t>(live.request.prompt.size());
  for (const Sequence* s : scheduler_.waiting()) n += s->remaining();
  return n;
}

EngineCounters ServingEngine::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

SchedulerOptions scheduler_options_for(const Backend& backend, int32_t max_running, const AttentionOptions& attention,
                                       int64_t step_tokens) {
  SchedulerOptions o;
  o.attention = attention;
  o.max_running = static_cast<int32_t>(std::min<int64_t>(max_running, backend.max_logit_rows()));
  o.max_batch_tokens = std::min<int64_t>(backend.max_batch_tokens(), step_tokens > 0 ? step_tokens : kDefaultStepTokens);
  o.max_batch_tokens = std::max<int64_t>(o.max_batch_tokens, o.max_running);
  if (backend.kv_block_size() > 0) {
    o.block_size = static_cast<int32_t>(backend.kv_block_size());
    o.num_blocks = static_cast<int32_t>(std::min<int64_t>(backend.kv_blocks(), INT32_MAX));
  } else {
    // The CPU backend keeps its own caches; the pool only paces admission. Room for every running
    // sequence at the model's full context.
    o.block_size = 16;
    const int64_t per_seq = (backend.config().max_position_embeddings + 15) / 16 + 1;
    o.num_blocks = static_cast<int32_t>(std::min<int64_t>(per_seq * o.max_running, INT32_MAX));
  }
  return o;
}

}  // namespace abridge::engine
