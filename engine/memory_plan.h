// The CUDA backend's device memory worked out on the host, without a GPU: how many tokens of KV cache
// a card holds for a checkpoint (`abridge model info`, the README's table of context per card).
//
// engine/cuda/cuda_backend.cpp allocates everything when it is built, in this order: the cuBLAS
// workspace; an FP8 checkpoint's step scratch; the weights; the activation buffers of one step of
// max_batch_tokens tokens and max_logit_rows logits rows; the attention partials; then the KV pool,
// which gets what the budget leaves, in whole blocks; then the step's plan metadata (about 1 MB for a 4B
// model, outside the budget). cuda_buffer_bytes() is every allocation before the pool except the weights
// (engine::device_weight_bytes, engine/bench.h), byte for byte as the constructor asks for them (each at
// least 16 bytes; cudaMalloc's own rounding not counted), and cuda_kv_tokens() the pool that is left. With
// --gpu-memory-limit the budget is that limit less those bytes, exactly this arithmetic; with
// --gpu-memory-fraction alone it is the fraction of the card less everything already on it, the CUDA
// context (about 1.2 GiB on an H100 or H200) included. The CUDA backend's real pool is checked against
// this plan on the GPU: a change to the backend's allocations must change this file too.
//
// Worked example, Qwen3-4B (36 layers, d 2560, 8 KV heads of 128, vocab 151,936), bf16 weights
// (8,044,936,192 bytes), steps of 8,192 tokens, 64 logits rows: 2.45 GB of buffers (1.09 GB of them the
// attention partials, 0.64 GB the f32 gate/up output); under --gpu-memory-limit 22GiB the pool gets the
// 13.13 GB left: 1,391 blocks of 64 = 89,024 tokens at 147,456 bytes a token (bf16 KV), or 2,761 blocks
// = 176,704 tokens at 74,304 (FP8 KV). (tests/test_engine.cpp, MemoryPlan.)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/defaults.h"

namespace abridge::engine {

// Tokens per KV block on the GPU (CudaOptions::block_size; engine.cpp's make_backend keeps the default).
inline constexpr int64_t kCudaKvBlockTokens = 64;

// The shapes of one CUDA step, as the commands open the backend.
struct CudaBufferOptions {
  int64_t step_tokens = kDefaultStepTokens;  // CudaOptions::max_batch_tokens (--prefill-chunk)
  int64_t logit_rows = 64;                   // CudaOptions::max_logit_rows: EngineOptions::max_running
                                             // (summarize, watch; generate takes 1)
  bool fp8_weights = false;                  // an FP8 checkpoint (has_fp8_weights): CudaFp8's step scratch
  // FP8 products of 9 or more rows on dequantized bf16 GEMMs (compute capability 8.0-8.9, or a shape
  // cuBLASLt refuses): two more scratch matrices, the step's activations and the largest fused weight
  // (about 0.26 GB for a 4B model). Hopper's block-scaled cuBLASLt GEMM needs neither.
  bool fp8_dequantized_gemm = false;
};

// Bytes the CUDA backend allocates before its KV pool, the weights apart: cuBLAS workspace (32 MiB),
// CudaFp8 scratch, the norms' f32 copies beyond device_weight_bytes' two bytes a value, the RoPE table,
// activations, logits, sampling rows and attention partials.
uint64_t cuda_buffer_bytes(const ModelConfig& c, const CudaBufferOptions& options = {});

// Tokens of KV cache (whole blocks of `block_tokens`) when the engine may hold `memory` bytes in all:
// what is left after `weight_bytes` and `buffer_bytes`, at ModelConfig::kv_bytes_per_token(dtype) (as
// kv_blocks_for_memory), capped at the backend's INT32_MAX blocks; 0 when nothing is left. The backend
// refuses to start below two steps' worth of blocks (2 x ceil(step_tokens / block_tokens)).
int64_t cuda_kv_tokens(const ModelConfig& c, uint64_t memory, uint64_t weight_bytes, uint64_t buffer_bytes,
                       KvCacheDtype dtype, int64_t block_tokens = kCudaKvBlockTokens);

// The cards `abridge model info` and the README size the KV cache for, each with the bytes the engine
// holds there: a 24 GB card as `--gpu-memory-limit 22GiB` (docs/OPERATIONS.md: so an H100 or H200 runs
// as a 24 GB card would); 48, 80 and 141 GB cards at the default --gpu-memory-fraction (0.90) of
// N GiB less 1.2 GiB of CUDA context, which reproduces the 70.6 GiB the engine held on an 80 GB H100
// and the 840,384-token pool of a 4B model on a 141 GB H200 (docs/PERFORMANCE.md) within 1%.
struct GpuCard {
  std::string name;       // "24 GB"
  uint64_t engine_bytes;  // what the engine may hold there: weights, buffers and KV pool
};
std::vector<GpuCard> reference_gpu_cards();

}  // namespace abridge::engine
