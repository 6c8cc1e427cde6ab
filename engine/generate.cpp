#include "engine/generate.h"

#include <algorithm>
#include <chrono>

#include "base/error.h"

namespace abridge::engine {

std::vector<std::vector<int32_t>> contiguous_block_tables(const Backend& backend, int64_t n_seqs, int64_t tokens) {
  std::vector<std::vector<int32_t>> tables(static_cast<size_t>(n_seqs));
  const int64_t bs = backend.kv_block_size();
  if (bs == 0) return tables;
  const int64_t per = (tokens + bs - 1) / bs;
  if (per * n_seqs > backend.kv_blocks())
    throw Error(std::to_string(n_seqs) + " x " + std::to_string(tokens) + " tokens do not fit the KV cache (" +
                std::to_string(backend.kv_blocks() * bs) + " tokens)");
  for (int64_t s = 0; s < n_seqs; ++s)
    for (int64_t i = 0; i < per; ++i) tables[static_cast<size_t>(s)].push_back(static_cast<int32_t>(s * per + i));
  return tables;
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Releases the slot however the function exits.
struct SlotGuard {
  Backend& backend;
  int32_t slot;
  ~SlotGuard() { backend.release(slot); }
};

// One sequence alone on a paged backend: blocks 0, 1, 2, ... in order, enough for `tokens` tokens.
void add_single_sequence_table(Backend& backend, BatchPlan& plan, int32_t slot, int64_t tokens) {
  if (backend.kv_block_size() == 0) return;
  auto tables = contiguous_block_tables(backend, 1, tokens);
  plan.block_tables[slot] = std::move(tables[0]);
}

}  // namespace

std::vector<float> all_logits(Backend& backend, int32_t slot, std::span<const int32_t> ids, int64_t chunk) {
  const int64_t vocab = backend.config().vocab_size, n = static_cast<int64_t>(ids.size());
  std::vector<float> out(static_cast<size_t>(n * vocab));
  SlotGuard guard{backend, slot};
  chunk = std::min({chunk, backend.max_batch_tokens(), backend.max_logit_rows()});
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t end = std::min(n, begin + chunk);
    BatchPlan plan;
    for (int64_t i = begin; i < end; ++i) plan.add(ids[i], static_cast<int32_t>(i), slot, true);
    add_single_sequence_table(backend, plan, slot, end);
    backend.forward(plan, std::span<float>(out).subspan(static_cast<size_t>(begin * vocab),
                                                        static_cast<size_t>((end - begin) * vocab)));
  }
  return out;
}

GenerationResult generate(Backend& backend, int32_t slot, std::span<const int32_t> prompt,
                          const GenerationOptions& options, const std::function<bool(int32_t)>& on_token) {
  const ModelConfig& c = backend.config();
  const int64_t n = static_cast<int64_t>(prompt.size());
  if (n == 0) throw Error("the prompt is empty");
  if (n + options.max_new_tokens > c.max_position_embeddings)
    throw Error("prompt (" + std::to_string(n) + " tokens) + max new tokens (" +
                std::to_string(options.max_new_tokens) + ") exceeds the model's context of " +
                std::to_string(c.max_position_embeddings) + " tokens");
  ABRIDGE_CHECK(options.prefill_chunk > 0);
  ABRIDGE_CHECK(backend.cached_tokens(slot) == 0, "slot " + std::to_string(slot) + " is in use");

  SlotGuard guard{backend, slot};
  GenerationResult result;
  result.prompt_tokens = n;
  Sampler sampler(options.sampling);
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));

  auto t0 = std::chrono::steady_clock::now();
  const int64_t chunk = std::min(options.prefill_chunk, backend.max_batch_tokens());
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t end = std::min(n, begin + chunk);
    BatchPlan plan;
    for (int64_t i = begin; i < end; ++i) plan.add(prompt[i], static_cast<int32_t>(i), slot, i == n - 1);
    add_single_sequence_table(backend, plan, slot, end);
    backend.forward(plan, std::span<float>(logits.data(), plan.logit_rows.size() * logits.size()));
  }
  result.prefill_seconds = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const size_t limit = options.vocab_limit > 0 ? std::min(logits.size(), static_cast<size_t>(options.vocab_limit))
                                                 : logits.size();
    const int32_t token = sampler.sample(std::span<const float>(logits).first(limit));
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), token) != options.stop_ids.end()) {
      result.stop = StopReason::kStopToken;
      break;
    }
    result.tokens.push_back(token);
    if (on_token && !on_token(token)) {
      result.stop = StopReason::kCallback;
      break;
    }
    if (step + 1 == options.max_new_tokens) break;
    BatchPlan plan;
    plan.add(token, static_cast<int32_t>(n + step), slot, true);
    add_single_sequence_table(backend, plan, slot, n + step + 1);
    backend.forward(plan, logits);
  }
  result.decode_seconds = seconds_since(t0);
  return result;
}

}  // namespace abridge::engine
