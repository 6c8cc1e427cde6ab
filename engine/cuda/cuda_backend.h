// The CUDA backend: the Qwen3 forward pass on one GPU, on a paged KV cache.
//
// Weights are bf16 on the device, with q/k/v and gate/up fused into single GEMMs (cuBLAS, bf16 inputs,
// float32 accumulation and output); FP8 checkpoints keep their linear layers as block-scaled FP8
// (engine/cuda/cuda_fp8.h) and embeddings, norms and the LM head in bf16. The residual stream stays float32; o_proj and down_proj add into
// it directly (beta = 1). Everything is allocated when the backend is built: activation buffers for
// `max_batch_tokens` tokens and `max_logit_rows` logits rows, the attention workspace, and a KV pool
// of fixed-size blocks sized from the free memory (`gpu_memory_fraction` of the card in all). The
// per-step path allocates nothing.
//
// The KV pool is addressed through the plan's block tables (BatchPlan::block_tables), which the
// scheduler's block manager owns; this backend never decides where a token's K and V go.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>

#include "engine/backend.h"
#include "engine/safetensors.h"

namespace abridge::engine {

struct CudaOptions {
  int device = 0;
  double gpu_memory_fraction = kDefaultGpuMemoryFraction;  // of the card's total memory, weights and buffers included
  // Bytes this backend may hold in all (weights, buffers, KV pool: what device_memory_bytes() reports);
  // 0: no limit. The CUDA context and cuBLAS's own state come on top (about 0.5 GiB).
  uint64_t gpu_memory_limit = 0;
  int64_t max_batch_tokens = kDefaultStepTokens;  // tokens per forward step (prefill chunk + decodes)
  int64_t max_logit_rows = 256;       // rows of logits per step
  // Tokens per KV block. 64: the Hopper prefill kernel copies whole blocks with TMA, and fewer, larger
  // boxes ran 128K prefill 1.4x faster than blocks of 16 (H200); decode is indifferent.
  int64_t block_size = 64;
  int64_t max_kv_blocks = 0;          // 0: as many as the memory fraction allows
  // kFp8: keys and values as e4m3 codes with a f32 scale per token and KV head (engine/config.h); needs
  // head_dim 64 or 128. The Hopper prefill kernel reads bf16 only: FP8 prefill tiles run on the mma.sync one.
  KvCacheDtype kv_cache_dtype = KvCacheDtype::kBf16;
  bool cuda_graphs = true;            // replay decode steps as CUDA graphs
  // FP8 checkpoints: run steps of more than two tokens as dequantized bf16 GEMMs even where cuBLASLt's
  // block-scaled FP8 GEMM exists (Hopper), as on compute capability 8.0-8.9; for tests and comparisons.
  bool fp8_dequantized_gemm = false;
  AttentionOptions attention;
};

class CudaBackend final : public Backend {
 public:
  // Uploads the weights; throws abridge::Error when there is no device or too little memory, or the
  // shapes are ones the kernels do not support. `ckpt` is an already-checked checkpoint:
  // check_checkpoint(config, ckpt) has passed (open_model_dir() runs it once per model open;
  // make_backend() takes the ModelDir it made). Not checked again here.
  CudaBackend(const ModelConfig& config, const Checkpoint& ckpt, const CudaOptions& options = {});
  ~CudaBackend() override;

  std::string_view name() const override { return "cuda"; }
  const ModelConfig& config() const override;
  void forward(const BatchPlan& plan, std::span<float> logits) override;
  bool samples_on_device() const override { return true; }
  void forward_sampled(const BatchPlan& plan, std::span<const RowSampling> rows, std::span<int32_t> tokens) override;
  void release(int32_t slot) override;
  int64_t cached_tokens(int32_t slot) const override;

  int64_t kv_block_size() const override;
  int64_t kv_blocks() const override;
  int64_t max_batch_tokens() const override;
  int64_t max_logit_rows() const override;
  std::string device_description() const override;
  size_t device_memory_bytes() const override;
  // FP8 checkpoints: which kernels run the products (CudaFp8::describe); empty otherwise.
  std::string fp8_paths() const;

 private:
  // Enqueues the plan's forward pass up to the logits (on the device); does not wait for it.
  void run(const BatchPlan& plan);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace abridge::engine
