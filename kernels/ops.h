// CUDA kernels of a decoder-only transformer's forward pass (RMSNorm, RoPE, paged grouped-query
// attention, SwiGLU, sampling). Each is a function over device pointers, sizes and a stream; none knows
// a model: the engine maps a model's layers onto them. Shapes are given as (rows, cols) row-major; "bf16" is __nv_bfloat16.
// Every op has a CPU twin in tests/test_cuda.cpp that it is compared with on random inputs.
// Sources, one per op family: misc.cu (embed, silu_mul), norm.cu, rope_kv.cu (qkv_post), attention.cu
// (decode) and attention_prefill.cu (tiles) with their shared pieces in attention_tiles.cuh,
// sampling.cu, gemv.cu; their shared device helpers are in device_helpers.cuh. Launchers that size
// their grids by the device take its DeviceCaps (kernels/device.h), looked up once by the backend.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "base/fp8_kv.h"
#include "kernels/device.h"

namespace abridge::kernels {

using bf16 = __nv_bfloat16;

// x (n, d) f32 = table[tokens[i]] (vocab, d) bf16.
void embed(const int32_t* tokens, const bf16* table, float* x, int n, int d, cudaStream_t s);

// y (n, d) bf16 = x[rows[i]] * rsqrt(mean(x[rows[i]]^2) + eps) * w. rows == nullptr: row i.
void rms_norm(const float* x, const int32_t* rows, const float* w, bf16* y, int n, int d, float eps, const DeviceCaps& dev,
              cudaStream_t s);

// After the fused QKV projection: per token, q heads and k heads get their RMSNorm (q_norm, k_norm:
// (head_dim) f32) and RoPE (rotate-half, angle = position * inv_freq[j]); q goes to q_out, k and v
// are written to the paged cache at row kv_rows[i] (block * block_size + offset).
//
// The FP8 cache (k_fp8 set; engine/config.h KvCacheDtype::kFp8): per token and KV head, K (after norm
// and RoPE) and V in float32 are stored as e4m3fn codes of v / scale, scale the smallest power of two
// with amax(|v|) <= 448 * scale (no value saturates), kept as one byte, its exponent + 127 (0: an
// all-zero head, scale 0; engine/fp8.h fp8_kv_scale_byte); a reader takes decode(code) * scale, within
// max(|v| / 16, scale * 2^-10) of v. Bit for bit engine::fp8_kv_round_trip() on the same floats. Head
// sizes 64, 128 and 256 only (qkv_post throws std::invalid_argument otherwise).
// Scale rows are kv_scale_row_bytes(n_kv_heads) bytes apart (base/fp8_kv.h: 4-byte pieces for the
// readers' copies).
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
  // The FP8 cache, instead of k_cache and v_cache: codes (cache_rows, n_kv_heads, head_dim) and
  // scale bytes (cache_rows, kv_scale_row_bytes(n_kv_heads)), for K and V each.
  uint8_t* k_fp8 = nullptr;
  uint8_t* v_fp8 = nullptr;
  uint8_t* k_scale = nullptr;
  uint8_t* v_scale = nullptr;
};
void qkv_post(const QkvParams& p, cudaStream_t s);

// Prefill tiles: 64 queries for the mma.sync kernel (any GPU); 128 for the Hopper kernel (wgmma,
// head_dim 128, built with sm_90a and run on compute capability 9.0).
inline constexpr int kAttentionTileQueries = 64;
inline constexpr int kAttentionTileQueriesSm90 = 128;
inline constexpr int kMinTileRun = 16;

// Paged grouped-query attention for any mix of prefill and decode tokens.
// Runs of at least kMinTileRun consecutive tokens of one sequence (prefill chunks) go to a
// tensor-core flash-attention kernel in tiles of 64 queries; the other tokens (decodes) go to a
// split-key kernel that spreads long contexts over many blocks. Token i at position p
// attends to keys at positions [0, sink_end) and [begin, p] of its sequence, where
// (sink_end, begin) follow attention_span() (base/attention_span.h): window and sinks here are the
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
  int64_t cache_rows = 0;     // rows in k_cache and v_cache (bounds the Hopper kernel's bulk copies)
  int64_t window, sinks, layer_window;
  int max_position;           // largest position in this batch (bounds the split count)
  float scale;
  // From partition_attention(): query tiles for the tensor-core kernel, (n_tiles, 4) as
  // {first token, count <= tile_queries, first position, table offset}, and the remaining tokens.
  const int32_t* tiles = nullptr;
  int n_tiles = 0;
  int tile_queries = kAttentionTileQueries;  // the size partition_attention() was given
  const int32_t* singles = nullptr;  // (n_singles) token indices
  int n_singles = 0;
  // From plan_decode_items(), for the tensor-core decode kernel (head_dim 64 or 128, GQA group <= 16;
  // attention() checks that a plan is given there): 3 ints per item and n_singles + 1 item offsets.
  const int32_t* decode_items = nullptr;
  const int32_t* decode_first = nullptr;
  int n_decode_items = 0;
  // The FP8 cache (QkvParams states the scheme), instead of k_cache and v_cache: codes
  // (cache_rows, n_kv_heads, head_dim) and scale bytes (cache_rows, kv_scale_row_bytes(n_kv_heads)). Every
  // kernel reads a tile's codes, decodes them times their power-of-two scale into bf16 (exact, but for
  // bf16's subnormal range) in shared memory and runs as on a bf16 cache; head_dim 64 and 128 only.
  // Prefill tiles then take the mma.sync kernel (tile_queries kAttentionTileQueries): the Hopper
  // kernel reads bf16 only.
  const uint8_t* k_fp8 = nullptr;
  const uint8_t* v_fp8 = nullptr;
  const uint8_t* k_scale = nullptr;
  const uint8_t* v_scale = nullptr;
};

// The tile size attention() runs fastest with on the device for this head size (kAttentionTileQueriesSm90
// for head_dim 128 on compute capability 9.0 when the Hopper kernels are built, unless
// dev.prefill_attention is kMma or the cache is FP8).
int attention_tile_queries(int head_dim, const DeviceCaps& dev, bool fp8_cache = false);

// Splits a batch's tokens (host arrays) into tensor-core tiles of up to tile_queries queries and
// single tokens. `tiles` receives 4 ints per tile, `singles` token indices; both must hold n entries
// (tiles: 4 n). Head sizes other than 64 and 128 send every token to the split kernel.
void partition_attention(const int32_t* positions, const int32_t* table_offsets, int n, int head_dim, int tile_queries,
                         int32_t* tiles, int* n_tiles, int32_t* singles, int* n_singles);
// Key splits of a decode token at most (attention() clamps max_splits to it).
inline constexpr int kMaxAttentionSplits = 256;

// Decode work items: the single tokens' keys cut into runs of whole 64-key tiles, each run one block
// per KV head, so that a long context beside short ones is spread over as many multiprocessors as
// its share of the keys (equal splits per token would leave the step waiting on the long one's few).
// decode_item_count() gives the number of items (the grid) from the shape alone, so that a CUDA
// graph captured for a shape fits every step of it: about two thirds of the GPU's block slots, or a
// few per token in large batches, between n_singles and max_items (which must be >= n_singles).
int decode_item_count(int n_singles, int n_kv_heads, int head_dim, int max_items, const DeviceCaps& dev);
// Blocks of the decode kernel for this head size (64, or 128; others count as 64) that the current
// device holds at once: query_device_caps() fills DeviceCaps::decode_slots_* with it.
int attention_decode_slots(int head_dim, int multiprocessors);
// Host arrays: positions of the batch's tokens and singles from partition_attention(); writes
// items (3 ints per item: single index c, first and end virtual key of the run; c = -1 for an unused
// item) and first (n_singles + 1: token c's items are [first[c], first[c + 1]), at least one and at
// most kMaxAttentionSplits each). A token's keys are taken as position + 1 (a window or sinks only
// shorten its span; the kernel clips each run to the span).
void plan_decode_items(const int32_t* positions, const int32_t* singles, int n_singles, int n_items, int32_t* items,
                       int32_t* first);
// Floats of workspace attention() needs for n single tokens (at most `max_splits` key splits or decode
// items each).
size_t attention_workspace_floats(int n, int n_heads, int head_dim, int max_splits);
// Throws std::invalid_argument for tiles of a head size without a tensor-core kernel (64, 128).
void attention(const AttentionParams& p, int max_splits, const DeviceCaps& dev, cudaStream_t s);

// Token sampling on the device, one block per logits row, by the rule of base/sampling.h (whose
// sampling::sample_token() is its host twin, token for token): greedy (temperature <= 0: the first
// maximum), or integer weights of the softmax at the temperature restricted to the top-p nucleus (the
// smallest set of most likely tokens whose mass reaches top_p, ties kept) and a draw from it. The draw's
// uniform number is counter_bits53(seed, counter) (base/rng.h), so a sequence samples the same tokens
// whatever batch it runs in. Only ids below vocab_limit are candidates. Throws std::invalid_argument
// for a vocabulary outside [1, sampling::kMaxCandidates).
struct SampleRow {
  float temperature;
  float top_p;
  uint64_t seed;
  uint64_t counter;     // tokens the sequence has generated so far
  int32_t vocab_limit;  // 0: the whole row
  int32_t pad;
};
void sample(const float* logits, int vocab, const SampleRow* rows, int n_rows, int32_t* out, cudaStream_t s);

// The matrix products of a decode step (n <= kGemvMaxRows rows, k a multiple of 8): one bandwidth-bound
// pass over w. The input is either x (n, k) bf16, or, with norm_w set, the RMS norm of the float rows
// x_f32 (n, k) computed in the kernel (rounded to bf16 as rms_norm() does) so that no separate norm
// kernel runs. The output is either y (n, m) f32 = input . w (m, k)^T + beta * y, or, with act set,
// act (n, m) bf16 = silu(input . gate^T) * (input . up^T), where w holds the m gate rows and then the m
// up rows (SwiGLU without a separate kernel or a float intermediate).
// One or two rows: from three up the scalar multiply-adds and the reads of the input rows, not the
// weight bytes, bound the kernel (H200, 4B shapes: a step of 4 rows took 5.5 ms, of 8 rows 9.2 ms,
// where cuBLAS takes about 3.4 ms for 16), so the backend hands larger steps to cuBLAS.
inline constexpr int kGemvMaxRows = 2;
struct GemvParams {
  const bf16* x = nullptr;
  const float* x_f32 = nullptr;
  const float* norm_w = nullptr;
  float eps = 0.0f;
  const bf16* w = nullptr;
  float* y = nullptr;
  float beta = 0.0f;
  bf16* act = nullptr;
  int n = 0, k = 0, m = 0;
};
void gemv(const GemvParams& p, const DeviceCaps& dev, cudaStream_t s);
// Whether gemv() takes n rows of width k (else it throws std::invalid_argument).
bool gemv_supports(int n, int k);
// Whether gemv() can normalize n rows of width k itself (the rows are staged in shared memory);
// callers check it before setting norm_w.
bool gemv_can_normalize(int n, int k);
// Plain form: y = x . w^T + beta * y.
void gemv_bf16(const bf16* x, const bf16* w, float* y, int n, int k, int m, float beta, const DeviceCaps& dev,
               cudaStream_t s);

// out (n, ffn) bf16 = silu(gu[:, :ffn]) * gu[:, ffn:], gu (n, 2 ffn) f32.
void silu_mul(const float* gu, bf16* out, int n, int ffn, cudaStream_t s);

}  // namespace abridge::kernels
