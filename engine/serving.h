// The serving engine: many requests at once on one backend, by continuous batching.
//
// Each step: Scheduler::schedule() -> Backend::forward(plan, logits) -> each logits row is sampled
// with its request's own Sampler -> the token is streamed (on_token), or ends the request: a stop id
// (not part of the output) or max_new_tokens reached (on_finish). Requests arrive from any thread
// (submit(), cancel()); the loop runs either on the engine's own thread (start()/stop()) or in the
// caller's (step(), run_until_idle()), never both. Callbacks run on the loop's thread; they must not
// call run_until_idle()/step()/stop() (submit() and cancel() are fine).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/backend.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"

namespace abridge::engine {

struct Request {
  std::vector<int32_t> prompt;
  int64_t max_new_tokens = 512;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;  // EOS, <|im_end|>: ends the reply, not part of it
  int64_t vocab_limit = 0;        // sample only ids below this (the tokenizer's size); 0: all
  int32_t priority = 0;           // higher is admitted first; arrival order within a priority
};

// Scheduler options that fit a backend: its KV pool and block size where it is paged (a CPU-sized
// virtual pool otherwise), its step limits, and its attention window. step_tokens: tokens per step,
// prefill chunks and decodes together (0: kDefaultStepTokens), at most the backend's limit.
SchedulerOptions scheduler_options_for(const Backend& backend, int32_t max_running = 64,
                                       const AttentionOptions& attention = {}, int64_t step_tokens = 0);

enum class FinishReason { kStopToken, kLength, kCancelled, kError };
const char* to_string(FinishReason reason);

struct RequestResult {
  int64_t id = 0;
  std::vector<int32_t> tokens;  // the reply, without the stop token
  FinishReason reason = FinishReason::kLength;
  std::string error;            // kError: one line saying why
  int64_t prompt_tokens = 0;
  int64_t preemptions = 0;      // times its cache was dropped and recomputed
  double queue_seconds = 0;     // submit -> first step that ran it
  double prefill_seconds = 0;   // first step -> first token (chunks, waiting between them, recomputes)
  double decode_seconds = 0;    // first token -> finish
};

// Decode-only steps of one range of batch sizes: how many, their wall time, the sequences they
// decoded and the KV tokens those read (the sum of their contexts): with the weights read once per
// step, what the copy ceiling allows them (`bench summarize` prints one row per range).
struct DecodeStepBucket {
  int64_t steps = 0;
  double seconds = 0;
  int64_t sequences = 0;
  int64_t kv_tokens = 0;
};
// The ranges: batch 1, 2-4, 5-16, 17-64, 65 and more.
inline constexpr std::array<int64_t, 5> kDecodeBucketFirst{1, 2, 5, 17, 65};
size_t decode_bucket(int64_t batch);

// Monotonic totals for a progress display; a snapshot, read from any thread.
struct EngineCounters {
  int64_t submitted = 0;
  int64_t finished = 0;
  int64_t steps = 0;
  int64_t prefill_tokens = 0;    // prompt tokens computed, recomputes after preemption included
  int64_t decode_tokens = 0;     // decode-step tokens computed
  int64_t decode_only_steps = 0; // steps with decode tokens and no prefill chunk (the weights read for them alone)
  double decode_only_seconds = 0;  // wall time of those steps (plan, forward, sampling)
  double prefill_step_seconds = 0; // wall time of the steps with a prefill chunk
  std::array<DecodeStepBucket, kDecodeBucketFirst.size()> decode_by_batch{};  // decode-only steps by batch size
  int64_t generated_tokens = 0;  // tokens streamed out
  int64_t preemptions = 0;       // sequences sent back to the queue (each time)
  int64_t recomputed_tokens = 0; // tokens computed again after preemption
  int64_t peak_kv_blocks = 0;    // the most KV blocks in use after a step
  int64_t kv_blocks = 0;         // blocks in the pool (of kv_block_tokens tokens each)
  int64_t kv_block_tokens = 0;
  int64_t waiting = 0;           // now, as of the last step
  int64_t running = 0;           // now, as of the last step
};

class ServingEngine {
 public:
  using TokenCallback = std::function<void(int64_t id, int32_t token)>;
  using FinishCallback = std::function<void(int64_t id, const RequestResult& result)>;

  // The backend must outlive the engine; the engine owns its slots [0, options.max_running).
  ServingEngine(Backend& backend, const SchedulerOptions& options, TokenCallback on_token = {},
                FinishCallback on_finish = {});
  ~ServingEngine();  // stop(kCancel)
  ServingEngine(const ServingEngine&) = delete;
  ServingEngine& operator=(const ServingEngine&) = delete;

  // Thread-safe. Returns the request's id (increasing from 0). Throws abridge::Error for a request
  // that can never run: empty prompt, token id outside the vocabulary, max_new_tokens < 1, prompt +
  // max_new_tokens beyond the model's context, or too long for the KV pool even alone.
  int64_t submit(Request request);
  // Thread-safe. Ends a request that is still queued or running with FinishReason::kCancelled
  // (at the start of the next step); no effect on one already finished.
  void cancel(int64_t id);

  // Runs one step in the calling thread; false when there was nothing to do.
  bool step();
  // Steps until every submitted request has finished; returns their results in id order.
  std::vector<RequestResult> run_until_idle();

  // Runs the loop on the engine's own thread until stop().
  void start();
  enum class StopMode { kDrain, kCancel };
  // kDrain: finishes every request submitted before the call; kCancel: ends the rest as cancelled.
  // Returns when the loop thread has exited. No effect when not started.
  void stop(StopMode mode = StopMode::kDrain);

  EngineCounters counters() const;
  // Requests submitted and not yet admitted to a step (the inbox and the scheduler's waiting queue).
  // Call from the loop's thread only (the one calling step()).
  int64_t queued() const;
  // The prompt tokens of those requests (what they still have to prefill). Loop thread only.
  int64_t queued_tokens() const;

 private:
  struct Live {
    Request request;
    Sampler sampler;
    RequestResult result;
    std::chrono::steady_clock::time_point submitted, started, first_token;
    bool started_set = false, first_token_set = false;
  };

  // Moves submitted and cancelled requests into the scheduler; called by the loop only.
  void take_inbox();
  bool step_once();
  void finish(int64_t id, FinishReason reason, std::string error = {});
  void fail_all(const std::string& message);
  void loop();

  Backend& backend_;
  Scheduler scheduler_;
  TokenCallback on_token_;
  FinishCallback on_finish_;
  std::vector<float> logits_;          // (rows of the largest step so far, vocab) float32
  std::map<int64_t, Live> live_;       // loop thread only
  std::vector<RequestResult> done_;    // collected for run_until_idle()
  bool collect_ = false;

  mutable std::mutex mu_;              // guards the fields below
  std::condition_variable cv_;
  std::vector<std::pair<int64_t, Live>> inbox_;
  std::vector<int64_t> cancels_;
  int64_t next_id_ = 0;
  bool running_thread_ = false;
  bool stop_requested_ = false;
  StopMode stop_mode_ = StopMode::kDrain;
  std::thread thread_;
  bool stepping_ = false;              // a caller-thread step()/run_until_idle() is in progress
  EngineCounters counters_;
};

}  // namespace abridge::engine
