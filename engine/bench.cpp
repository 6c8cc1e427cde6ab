#include "engine/bench.h"

#include <algorithm>
#include <chrono>
#include <ostream>

#include "base/error.h"
#include "engine/fp8_checkpoint.h"
#include "engine/generate.h"
#include "engine/weights.h"

namespace abridge::engine {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Prefills sequences 0..n_seqs-1 to `tokens` tokens each (chunked); returns the seconds taken.
double prefill(Backend& b, const std::vector<std::vector<int32_t>>& tables, int64_t tokens, int64_t chunk,
               std::vector<float>& logits) {
  chunk = std::min(chunk, b.max_batch_tokens());
  ABRIDGE_CHECK(chunk > 0, "prefill chunk must be positive");
  const auto t0 = Clock::now();
  for (size_t s = 0; s < tables.size(); ++s) {
    for (int64_t begin = 0; begin < tokens; begin += chunk) {
      const int64_t end = std::min(tokens, begin + chunk);
      BatchPlan plan;
      for (int64_t i = begin; i < end; ++i)
        plan.add(static_cast<int32_t>((i * 7919 + s * 104729) % 150000), static_cast<int32_t>(i),
                 static_cast<int32_t>(s), i == tokens - 1);
      if (!tables[s].empty()) plan.block_tables[static_cast<int32_t>(s)] = tables[s];
      b.forward(plan, std::span<float>(logits.data(), plan.logit_rows.size() * static_cast<size_t>(b.config().vocab_size)));
    }
  }
  return since(t0);
}

}  // namespace

double linear_flops_per_token(const ModelConfig& c) {
  const double embed = static_cast<double>(c.vocab_size) * static_cast<double>(c.hidden_size);
  return 2.0 * (static_cast<double>(c.n_params()) - embed * (c.tie_word_embeddings ? 1 : 2));
}

double attention_flops(const ModelConfig& c, int64_t position) {
  return 4.0 * static_cast<double>(c.num_hidden_layers * c.num_attention_heads * c.head_dim) *
         static_cast<double>(position + 1);
}

double decode_step_bytes(const ModelConfig& c, int64_t batch, int64_t context, double weight_bytes, KvCacheDtype kv) {
  return (weight_bytes > 0 ? weight_bytes : 2.0 * static_cast<double>(c.n_params())) +
         static_cast<double>(batch) * static_cast<double>(context) * static_cast<double>(c.kv_bytes_per_token(kv));
}

double device_weight_bytes(const ModelConfig& c, const Checkpoint& ckpt) {
  double bytes = 0;
  for (const TensorEntry& e : tensor_table(c)) {
    const TensorView* v = ckpt.find(e.name);
    if (!v) continue;
    if (v->dtype != DType::kF8E4M3) {
      bytes += 2.0 * static_cast<double>(v->numel());
      continue;
    }
    bytes += static_cast<double>(v->numel());
    if (const TensorView* s = ckpt.find(scale_name(e.name))) bytes += 4.0 * static_cast<double>(s->numel());
  }
  return bytes;
}

std::vector<EngineBenchRow> run_engine_bench(Backend& b, const EngineBenchOptions& o, std::ostream& progress) {
  const ModelConfig& c = b.config();
  std::vector<EngineBenchRow> rows;
  std::vector<float> logits(static_cast<size_t>(64 * c.vocab_size));  // grown for larger decode batches
  const auto start = Clock::now();

  // Warm-up: kernels loaded, cuBLAS heuristics chosen.
  {
    const auto t = contiguous_block_tables(b, 1, 1024);
    prefill(b, t, 1024, o.prefill_chunk, logits);
    b.release(0);
  }
  const double lm_head = 2.0 * static_cast<double>(c.vocab_size * c.hidden_size);
  double last_seconds = 0;
  int64_t last_n = 0;
  for (int64_t n : o.prefill_lengths) {
    EngineBenchRow r;
    r.what = "prefill " + std::to_string(n);
    double flops = lm_head;
    for (int64_t p = 0; p < n; ++p) flops += linear_flops_per_token(c) + attention_flops(c, p);
    if (o.gemm_tflops > 0) r.ceiling_tokens_per_s = static_cast<double>(n) / (flops / (o.gemm_tflops * 1e12));
    // Attention grows as n^2: predict from the previous length and skip what cannot finish in time.
    const double ratio = last_n > 0 ? static_cast<double>(n) / static_cast<double>(last_n) : 0;
    if (n > c.max_position_embeddings) {
      r.skipped = true;
      r.note = "longer than the model's context";
    } else if (last_n > 0 && last_seconds * ratio * ratio * 0.7 > o.time_limit_s - since(start)) {
      r.skipped = true;
      r.note = "skipped: predicted to exceed the time limit";
    } else {
      try {
        const auto t = contiguous_block_tables(b, 1, n);
        r.seconds = prefill(b, t, n, o.prefill_chunk, logits);
        r.tokens_per_s = static_cast<double>(n) / r.seconds;
        last_seconds = r.seconds;
        last_n = n;
      } catch (const Error& e) {
        r.skipped = true;
        r.note = e.what();
      }
      b.release(0);
    }
    progress << "  " << r.what << ": " << (r.skipped ? r.note : std::to_string(r.seconds) + " s") << std::endl;
    rows.push_back(r);
  }

  for (const auto& d : o.decodes) {
    EngineBenchRow r;
    r.what = "decode b" + std::to_string(d.batch) + " ctx" + std::to_string(d.context);
    if (o.copy_tbps > 0)
      r.ceiling_tokens_per_s =
          static_cast<double>(d.batch) / (decode_step_bytes(c, d.batch, d.context, o.weight_bytes, o.kv_cache_dtype) / (o.copy_tbps * 1e12));
    try {
      const auto tables = contiguous_block_tables(b, d.batch, d.context + o.decode_steps + 2);
      prefill(b, tables, d.context, o.prefill_chunk, logits);
      if (logits.size() < static_cast<size_t>(d.batch * c.vocab_size)) logits.resize(static_cast<size_t>(d.batch * c.vocab_size));
      Clock::time_point t0;
      for (int64_t step = -2; step < o.decode_steps; ++step) {  // two untimed steps first
        if (step == 0) t0 = Clock::now();
        BatchPlan plan;
        for (int64_t s = 0; s < d.batch; ++s) {
          plan.add(static_cast<int32_t>((step + 3) * 31 + s), static_cast<int32_t>(d.context + step + 2),
                   static_cast<int32_t>(s), true);
          if (!tables[s].empty()) plan.block_tables[static_cast<int32_t>(s)] = tables[s];
        }
        if (b.samples_on_device()) {  // as the serving engine runs it: greedy tokens, no logits copied out
          std::vector<RowSampling> how(static_cast<size_t>(d.batch));
          std::vector<int32_t> tokens(static_cast<size_t>(d.batch));
          b.forward_sampled(plan, how, tokens);
        } else {
          b.forward(plan, std::span<float>(logits.data(), static_cast<size_t>(d.batch * c.vocab_size)));
        }
      }
      r.seconds = since(t0) / static_cast<double>(o.decode_steps);
      r.tokens_per_s = static_cast<double>(d.batch) / r.seconds;
    } catch (const Error& e) {
      r.skipped = true;
      r.note = e.what();
    }
    for (int64_t s = 0; s < d.batch; ++s) b.release(static_cast<int32_t>(s));
    progress << "  " << r.what << ": " << (r.skipped ? r.note : std::to_string(r.seconds * 1e3) + " ms/step") << std::endl;
    rows.push_back(r);
  }
  return rows;
}

}  // namespace abridge::engine
