// CUDA kernels of the Qwen3 forward pass. Each is a function over device pointers, sizes and a stream;
// none knows a model. Shapes are given as (rows, cols) row-major; "bf16" is __nv_bfloat16.
// Every op has a CPU twin in tests/test_cuda.cpp that it is compared with on random inputs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace abridge::kernels {

using bf16 = __nv_bfloat16;

// x (n, d) f32 = table[tokens[i]] (vocab, d) bf16.
void embed(const int32_t* tokens, const bf16* table, float* x, int n, int d, cudaStream_t s);

// y (n, d) bf16 = x[rows[i]] * rsqrt(mean(x[rows[i]]^2) + eps) * w. rows == nullptr: row i.
void rms_norm(const float* x, const int32_t* rows, const float* w, bf16* y, int n, int d, float eps, cudaStream_t s);

// After the fused QKV projection: per token, q heads and k heads get their RMSNorm (q_norm, k_norm:
// (head_dim) f32) and RoPE (rotate-half, angle = position * inv_freq[j]); q goes to q_out, k and v
// are written to the paged cache at row kv_rows[i] (block * block_size + offset).
struct QkvParams {
  const float* qkv;        // (n, (n_heads + 2 n_kv_heads) * head_dim) f32: [q | k | v]
  const float* q_norm;     // (head_dim)
  const float* k_norm;     // (head_dim)
  const float* inv_freq;   // (head_dim / 2)
  const int32_t* positions;  // (n)
  const int32_t* kv_rows;    // (n) cache row of each token
  bf16* q_out;             // (n, n_heads * head_dim)
  bf16* k_cache;           // (cache_rows, n_kv_heads, head_dim)
  bf16* v_cache;           // (cache_rows, n_kv_heads, head_dim)
  int n, n_heads, n_kv_heads, head_dim;
  float eps;
};
void qkv_post(const QkvParams& p, cudaStream_t s);

// Paged grouped-query attention for any mix of prefill and decode tokens. Token i at position p
// attends to keys at positions [0, sink_end) and [begin, p] of its sequence, where
// (sink_end, begin) follow AttentionOptions::span (engine/backend.h): window and sinks here are the
// engine's, layer_window the model's own for this layer. Keys are split across blocks (flash-decoding)
// and the partial results combined, so long contexts fill the GPU at batch 1.
struct AttentionParams {
  const bf16* q;              // (n, n_heads, head_dim)
  const bf16* k_cache;        // (cache_rows, n_kv_heads, head_dim)
  const bf16* v_cache;        // (cache_rows, n_kv_heads, head_dim)
  const int32_t* positions;   // (n)
  const int32_t* table_offsets;  // (n) where token i's block table starts in block_tables
  const int32_t* block_tables;   // flat: physical block per logical block, -1 if dropped
  bf16* out;                  // (n, n_heads * head_dim)
  float* workspace;           // attention_workspace_floats(...) floats
  int n, n_heads, n_kv_heads, head_dim, block_size;
  int64_t window, sinks, layer_window;
  int max_position;           // largest position in this batch (bounds the split count)
  float scale;
};
// Floats of workspace attention() needs for n tokens (at most `max_splits` key splits per token).
size_t attention_workspace_floats(int n, int n_heads, int head_dim, int max_splits);
void attention(const AttentionParams& p, int max_splits, cudaStream_t s);

// out (n, ffn) bf16 = silu(gu[:, :ffn]) * gu[:, ffn:], gu (n, 2 ffn) f32.
void silu_mul(const float* gu, bf16* out, int n, int ffn, cudaStream_t s);

}  // namespace abridge::kernels
