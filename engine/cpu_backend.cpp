#include "engine/cpu_backend.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "engine/cpu_math.h"
#include "engine/fp8_checkpoint.h"
#include "engine/weights.h"

namespace abridge::engine {
namespace {

// y = x * rsqrt(mean(x^2) + eps) * w, as Hugging Face's Qwen3RMSNorm does in float32.
inline void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps) {
  float ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = w[i] * (x[i] * scale);
}

std::vector<float> load(const Checkpoint& ckpt, const std::string& name) {
  const TensorView* v = ckpt.find(name);
  ABRIDGE_CHECK(v != nullptr, name);  // check_checkpoint ran when the model was opened
  std::vector<float> out(static_cast<size_t>(v->numel()));
  to_f32(v->dtype, v->data, out.data(), out.size());
  return out;
}

}  // namespace

CpuBackend::CpuBackend(const ModelConfig& config, const Checkpoint& ckpt, int n_threads,
                       const AttentionOptions& attention, KvCacheDtype kv_dtype)
    : config_(config), attention_(attention), kv_dtype_(kv_dtype), pool_(n_threads) {
  ABRIDGE_CHECK(attention.window >= 0 && attention.sinks >= 0);
  layers_.resize(static_cast<size_t>(config_.num_hidden_layers));
  for (const TensorEntry& e : tensor_table(config_)) {
    if (e.optional && !ckpt.find(e.name)) continue;
    Layer* L = e.layer >= 0 ? &layers_[static_cast<size_t>(e.layer)] : nullptr;
    if (is_linear(e.role)) {
      Linear lin;
      if (ckpt.find(e.name)->dtype == DType::kF8E4M3) lin.fp8 = load_fp8_matrix(ckpt, e.name);
      else lin.w = load(ckpt, e.name);
      switch (e.role) {
        case TensorRole::kLmHead: lm_head_ = std::move(lin); break;
        case TensorRole::kQ: L->wq = std::move(lin); break;
        case TensorRole::kK: L->wk = std::move(lin); break;
        case TensorRole::kV: L->wv = std::move(lin); break;
        case TensorRole::kO: L->wo = std::move(lin); break;
        case TensorRole::kGate: L->w_gate = std::move(lin); break;
        case TensorRole::kUp: L->w_up = std::move(lin); break;
        case TensorRole::kDown: L->w_down = std::move(lin); break;
        default: ABRIDGE_CHECK(false, e.name);
      }
      continue;
    }
    std::vector<float> w = load(ckpt, e.name);
    switch (e.role) {
      case TensorRole::kEmbedding: embed_ = std::move(w); break;
      case TensorRole::kFinalNorm: final_norm_ = std::move(w); break;
      case TensorRole::kInputNorm: L->input_norm = std::move(w); break;
      case TensorRole::kQNorm: L->q_norm = std::move(w); break;
      case TensorRole::kKNorm: L->k_norm = std::move(w); break;
      case TensorRole::kPostNorm: L->post_norm = std::move(w); break;
      default: ABRIDGE_CHECK(false, e.name);
    }
  }
  // inv_freq[i] = theta^(-2i / head_dim), rounded to float32 as transformers computes it.
  const int64_t half = config_.head_dim / 2;
  inv_freq_.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv_freq_[i] = static_cast<float>(
        1.0 / std::pow(config_.rope_theta, static_cast<double>(2 * i) / static_cast<double>(config_.head_dim)));
}

int64_t CpuBackend::cached_tokens(int32_t slot) const {
  auto it = caches_.find(slot);
  return it == caches_.end() ? 0 : it->second.n;
}

void CpuBackend::matmul(const float* x, const float* w, float* out, int64_t n, int64_t k, int64_t m) {
  pool_.parallel_for(m, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const float* wj = w + j * k;
      for (int64_t i = 0; i < n; ++i) out[i * m + j] = dot(x + i * k, wj, k);
    }
  });
}

void CpuBackend::linear(const float* x, const Linear& w, float* out, int64_t n, int64_t k, int64_t m) {
  if (w.fp8.empty()) {
    matmul(x, w.w.data(), out, n, k, m);
    return;
  }
  ABRIDGE_CHECK(w.fp8.rows == m && w.fp8.cols == k);
  // The model's activations are bf16 where an FP8 product reads them (transformers runs FP8 checkpoints
  // with bf16 activations, and so does the CUDA backend): each is rounded to bf16 before it is quantized.
  // Quantizing the float32 value instead moves an activation near an e4m3 rounding edge to the
  // neighbouring code whenever the two backends' float32 values differ in the last bits.
  fp8_in_.resize(static_cast<size_t>(n * k));
  for (size_t i = 0; i < fp8_in_.size(); ++i) fp8_in_[i] = bf16_to_f32(f32_to_bf16(x[i]));
  quantize_activations(fp8_in_.data(), n, k, fp8_act_);
  pool_.parallel_for(m, [&](int64_t begin, int64_t end) { fp8_linear(fp8_act_, w.fp8, out, begin, end); });
}

void CpuBackend::forward(const BatchPlan& plan, std::span<float> logits) {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(plan.size());
  const int64_t d = c.hidden_size, hd = c.head_dim, nh = c.num_attention_heads, nkv = c.num_key_value_heads;
  const int64_t qd = c.q_dim(), kvd = c.kv_dim(), ffn = c.intermediate_size, vocab = c.vocab_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  ABRIDGE_CHECK(plan.positions.size() == plan.tokens.size() && plan.slots.size() == plan.tokens.size());
  ABRIDGE_CHECK(logits.size() == plan.logit_rows.size() * static_cast<size_t>(vocab),
                "logits buffer " + std::to_string(logits.size()));
  if (n == 0) return;

  // Each slot's tokens must continue its cache in order; reserve their rows.
  std::unordered_map<int32_t, int64_t> next_pos;
  std::vector<int64_t> cache_row(static_cast<size_t>(n));  // (n) row of each token in its slot's cache
  for (int64_t i = 0; i < n; ++i) {
    const int32_t s = plan.slots[i];
    auto [it, fresh] = next_pos.try_emplace(s, cached_tokens(s));
    ABRIDGE_CHECK(plan.positions[i] == it->second, "slot " + std::to_string(s) + " expects position " +
                                                       std::to_string(it->second) + ", got " +
                                                       std::to_string(plan.positions[i]));
    ABRIDGE_CHECK(plan.tokens[i] >= 0 && plan.tokens[i] < vocab, "token id " + std::to_string(plan.tokens[i]));
    cache_row[i] = it->second++;
  }
  for (auto& [s, end] : next_pos) {
    SlotCache& sc = caches_[s];
    sc.k.resize(static_cast<size_t>(c.num_hidden_layers));
    sc.v.resize(static_cast<size_t>(c.num_hidden_layers));
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      sc.k[l].resize(static_cast<size_t>(end * kvd));
      sc.v[l].resize(static_cast<size_t>(end * kvd));
    }
    sc.n = end;
  }

  std::vector<float> x(n * d), h(n * d), q(n * qd), k(n * kvd), v(n * kvd), att(n * qd), o(n * d);
  std::vector<float> gate(n * ffn), up(n * ffn);
  for (int64_t i = 0; i < n; ++i)
    std::copy_n(embed_.data() + static_cast<int64_t>(plan.tokens[i]) * d, d, x.data() + i * d);

  // RoPE (rotate-half form): for pair (j, j + hd/2), angle = position * inv_freq[j].
  auto rope = [&](float* vec, int64_t pos) {
    const int64_t half = hd / 2;
    for (int64_t j = 0; j < half; ++j) {
      const float angle = static_cast<float>(pos) * inv_freq_[j];
      const float cs = static_cast<float>(std::cos(static_cast<double>(angle)));
      const float sn = static_cast<float>(std::sin(static_cast<double>(angle)));
      const float a = vec[j], b = vec[j + half];
      vec[j] = a * cs - b * sn;
      vec[j + half] = b * cs + a * sn;
    }
  };
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const Layer& L = layers_[l];
    for (int64_t i = 0; i < n; ++i) rms_norm(&x[i * d], L.input_norm.data(), &h[i * d], d, eps);
    linear(h.data(), L.wq, q.data(), n, d, qd);
    linear(h.data(), L.wk, k.data(), n, d, kvd);
    linear(h.data(), L.wv, v.data(), n, d, kvd);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t hh = 0; hh < nh; ++hh) {
        float* qh = &q[i * qd + hh * hd];
        rms_norm(qh, L.q_norm.data(), qh, hd, eps);
        rope(qh, plan.positions[i]);
      }
      for (int64_t hh = 0; hh < nkv; ++hh) {
        float* kh = &k[i * kvd + hh * hd];
        rms_norm(kh, L.k_norm.data(), kh, hd, eps);
        rope(kh, plan.positions[i]);
      }
      if (kv_dtype_ == KvCacheDtype::kFp8) {
        for (int64_t hh = 0; hh < nkv; ++hh) {
          fp8_kv_round_trip(&k[i * kvd + hh * hd], hd);
          fp8_kv_round_trip(&v[i * kvd + hh * hd], hd);
        }
      }
      SlotCache& sc = caches_[plan.slots[i]];
      std::copy_n(&k[i * kvd], kvd, sc.k[l].data() + cache_row[i] * kvd);
      std::copy_n(&v[i * kvd], kvd, sc.v[l].data() + cache_row[i] * kvd);
    }

    // Attention: token i at position p sees its slot's rows [0, sink_end) and [begin, p].
    const int64_t layer_window = c.layer_window(l);
    pool_.parallel_for(n * nh, [&](int64_t begin, int64_t end) {
      std::vector<float> scores;
      std::vector<int64_t> keys;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t i = t / nh, hh = t % nh, kvh = hh / c.gqa_group();
        const SlotCache& sc = caches_.find(plan.slots[i])->second;
        const int64_t p = cache_row[i];
        const AttentionOptions::Span span = attention_.span(p, layer_window);
        keys.clear();
        for (int64_t j = 0; j < span.sink_end; ++j) keys.push_back(j);
        for (int64_t j = span.begin; j <= p; ++j) keys.push_back(j);
        const float* qh = &q[i * qd + hh * hd];
        scores.resize(keys.size());
        float mx = -INFINITY;
        for (size_t kk = 0; kk < keys.size(); ++kk) {
          const float s = dot(qh, sc.k[l].data() + keys[kk] * kvd + kvh * hd, hd) * scale;
          scores[kk] = s;
          mx = std::max(mx, s);
        }
        float sum = 0;
        for (float& s : scores) {
          s = std::exp(s - mx);
          sum += s;
        }
        float* out = &att[i * qd + hh * hd];
        std::fill_n(out, hd, 0.0f);
        for (size_t kk = 0; kk < keys.size(); ++kk) {
          const float w = scores[kk] / sum;
          const float* vj = sc.v[l].data() + keys[kk] * kvd + kvh * hd;
          for (int64_t e = 0; e < hd; ++e) out[e] += w * vj[e];
        }
      }
    });
    linear(att.data(), L.wo, o.data(), n, qd, d);
    for (int64_t e = 0; e < n * d; ++e) x[e] += o[e];

    for (int64_t i = 0; i < n; ++i) rms_norm(&x[i * d], L.post_norm.data(), &h[i * d], d, eps);
    linear(h.data(), L.w_gate, gate.data(), n, d, ffn);
    linear(h.data(), L.w_up, up.data(), n, d, ffn);
    for (int64_t e = 0; e < n * ffn; ++e) {
      const float g = gate[e];
      gate[e] = g / (1.0f + std::exp(-g)) * up[e];  // SiLU(gate) * up
    }
    linear(gate.data(), L.w_down, o.data(), n, ffn, d);
    for (int64_t e = 0; e < n * d; ++e) x[e] += o[e];
  }

  // Final norm and LM head only on the rows that need logits.
  const int64_t nl = static_cast<int64_t>(plan.logit_rows.size());
  std::vector<float> hl(nl * d);
  for (int64_t r = 0; r < nl; ++r) {
    const int64_t i = plan.logit_rows[r];
    ABRIDGE_CHECK(i >= 0 && i < n, "logit row " + std::to_string(i));
    rms_norm(&x[i * d], final_norm_.data(), &hl[r * d], d, eps);
  }
  if (lm_head_.w.empty() && lm_head_.fp8.empty()) matmul(hl.data(), embed_.data(), logits.data(), nl, d, vocab);
  else linear(hl.data(), lm_head_, logits.data(), nl, d, vocab);
}

}  // namespace abridge::engine
