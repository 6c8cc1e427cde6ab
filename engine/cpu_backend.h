// The CPU backend: the reference implementation of the Qwen3 forward pass, in float32, threaded.
// New model features land here first; the CUDA backend is checked against it.
#pragma once

#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/backend.h"
#include "engine/safetensors.h"
#include "engine/thread_pool.h"

namespace abridge::engine {

class CpuBackend final : public Backend {
 public:
  // Copies the weights out of the checkpoint as float32 (the checkpoint may be closed afterwards).
  // Throws abridge::Error when a tensor is missing or has the wrong shape.
  CpuBackend(const ModelConfig& config, const Checkpoint& ckpt, int n_threads = 0,
             const AttentionOptions& attention = {});

  std::string_view name() const override { return "cpu"; }
  const ModelConfig& config() const override { return config_; }
  void forward(const BatchPlan& plan, std::span<float> logits) override;
  void release(int32_t slot) override { caches_.erase(slot); }
  int64_t cached_tokens(int32_t slot) const override;

 private:
  struct Layer {
    std::vector<float> input_norm;  // (d)
    std::vector<float> wq;          // (n_heads * head_dim, d)
    std::vector<float> wk;          // (n_kv_heads * head_dim, d)
    std::vector<float> wv;          // (n_kv_heads * head_dim, d)
    std::vector<float> wo;          // (d, n_heads * head_dim)
    std::vector<float> q_norm;      // (head_dim)
    std::vector<float> k_norm;      // (head_dim)
    std::vector<float> post_norm;   // (d)
    std::vector<float> w_gate;      // (ffn, d)
    std::vector<float> w_up;        // (ffn, d)
    std::vector<float> w_down;      // (d, ffn)
  };
  struct SlotCache {
    int64_t n = 0;                       // tokens held
    std::vector<std::vector<float>> k;   // per layer: (n, n_kv_heads * head_dim), after k-norm and RoPE
    std::vector<std::vector<float>> v;   // per layer: (n, n_kv_heads * head_dim)
  };

  // out (n, m) = x (n, k) . w (m, k)^T
  void matmul(const float* x, const float* w, float* out, int64_t n, int64_t k, int64_t m);

  ModelConfig config_;
  AttentionOptions attention_;
  ThreadPool pool_;
  std::vector<float> embed_;      // (vocab, d)
  std::vector<float> lm_head_;    // (vocab, d); empty when tied to embed_
  std::vector<float> final_norm_; // (d)
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_;   // (head_dim / 2) RoPE frequencies
  std::unordered_map<int32_t, SlotCache> caches_;
};

}  // namespace abridge::engine
