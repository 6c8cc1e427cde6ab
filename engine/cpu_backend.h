// The CPU backend: the reference implementation of the Qwen3 forward pass, in float32, threaded.
// New model features land here first; the CUDA backend is checked against it.
// FP8 checkpoints run their F8_E4M3 linear layers as transformers' fine-grained FP8 path does
// (engine/fp8.h): activations quantized per token in 128-wide groups, 128x128 weight tiles, f32 sums
// with both scales applied per K block. Activations enter that quantization in f32 here (transformers
// quantizes bf16 activations).
#pragma once

#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/backend.h"
#include "engine/fp8.h"
#include "engine/safetensors.h"
#include "engine/thread_pool.h"

namespace abridge::engine {

class CpuBackend final : public Backend {
 public:
  // Copies the weights out of the checkpoint as float32 (the checkpoint may be closed afterwards).
  // `ckpt` is an already-checked checkpoint: check_checkpoint(config, ckpt) has passed (open_model_dir()
  // runs it once per model open; make_backend() takes the ModelDir it made). Not checked again here.
  // kv_dtype kFp8: each token's K and V per KV head are stored as FP8 would hold them (engine/config.h:
  // e4m3 codes times amax / 448, here decoded back to f32 at once), the reference of the CUDA FP8 cache.
  CpuBackend(const ModelConfig& config, const Checkpoint& ckpt, int n_threads = 0,
             const AttentionOptions& attention = {}, KvCacheDtype kv_dtype = KvCacheDtype::kBf16);

  std::string_view name() const override { return "cpu"; }
  const ModelConfig& config() const override { return config_; }
  void forward(const BatchPlan& plan, std::span<float> logits) override;
  void release(int32_t slot) override { caches_.erase(slot); }
  int64_t cached_tokens(int32_t slot) const override;

 private:
  // A linear layer's weight (out, in): float32, or FP8 codes with tile scales; exactly one is set.
  struct Linear {
    std::vector<float> w;  // (out, in) f32; empty for FP8
    Fp8Matrix fp8;         // (out, in) FP8; empty for f32
  };
  struct Layer {
    std::vector<float> input_norm;  // (d)
    Linear wq;                      // (n_heads * head_dim, d)
    Linear wk;                      // (n_kv_heads * head_dim, d)
    Linear wv;                      // (n_kv_heads * head_dim, d)
    Linear wo;                      // (d, n_heads * head_dim)
    std::vector<float> q_norm;      // (head_dim)
    std::vector<float> k_norm;      // (head_dim)
    std::vector<float> post_norm;   // (d)
    Linear w_gate;                  // (ffn, d)
    Linear w_up;                    // (ffn, d)
    Linear w_down;                  // (d, ffn)
  };
  struct SlotCache {
    int64_t n = 0;                       // tokens held
    std::vector<std::vector<float>> k;   // per layer: (n, n_kv_heads * head_dim), after k-norm and RoPE
    std::vector<std::vector<float>> v;   // per layer: (n, n_kv_heads * head_dim)
  };

  // out (n, m) = x (n, k) . w (m, k)^T
  void matmul(const float* x, const float* w, float* out, int64_t n, int64_t k, int64_t m);
  // out (n, m) = x (n, k) . w (m, k)^T for either kind of weight.
  void linear(const float* x, const Linear& w, float* out, int64_t n, int64_t k, int64_t m);

  ModelConfig config_;
  AttentionOptions attention_;
  KvCacheDtype kv_dtype_;
  ThreadPool pool_;
  std::vector<float> embed_;      // (vocab, d)
  Linear lm_head_;                // (vocab, d); both empty when tied to embed_
  std::vector<float> final_norm_; // (d)
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_;   // (head_dim / 2) RoPE frequencies
  std::unordered_map<int32_t, SlotCache> caches_;
  Fp8Activations fp8_act_;        // (n, k) scratch of the FP8 linears
  std::vector<float> fp8_in_;     // (n, k) the FP8 linears' input rounded to bf16
};

}  // namespace abridge::engine
