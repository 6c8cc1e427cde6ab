// Paged grouped-query attention for prefill tiles (kernels/ops.h): the mma.sync FlashAttention-2-style
// kernel (64 queries a tile, any GPU from sm_80, bf16 or FP8 caches), the dispatch to the Hopper kernel
// (kernels/sm90/), and the partition of a batch into tiles and single tokens.
#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "base/attention_span.h"
#include "kernels/attention_tiles.cuh"
#include "kernels/device_helpers.cuh"
#include "kernels/ops.h"
#ifdef ABRIDGE_HAVE_SM90A
#include "kernels/sm90/attention_sm90.h"
#endif

namespace abridge::kernels {
namespace {

using namespace attention_tiles;

constexpr int kFlashQ = kAttentionTileQueries;  // queries per block: 16 per warp, 4 warps
constexpr int kFlashK = 64;                     // keys per tile

// grid (n_tiles, n_heads), block 128. Shared memory: a Q tile and two K and two V tiles (double
// buffered: the next tile's copy runs while this one is computed) of (64, HD + 8) bf16 (the pad keeps
// ldmatrix free of bank conflicts), and the cache rows of both key tiles. FP8: the copies land as
// codes and scales, double buffered, and are decoded into one K and one V tile of bf16 before use.
template <int HD, bool FP8>
__global__ void __launch_bounds__(128) attention_flash_kernel(AttentionParams p) {
  constexpr int kStride = HD + 8;
  constexpr int kTiles = FP8 ? 1 : 2;
  extern __shared__ __align__(16) unsigned char flash_smem[];
  bf16* q_s = reinterpret_cast<bf16*>(flash_smem);
  bf16* k_buf = q_s + kFlashQ * kStride;                // kTiles x (kFlashK, kStride)
  bf16* v_buf = k_buf + kTiles * kFlashK * kStride;     // kTiles x (kFlashK, kStride)
  uint8_t* k8_buf = reinterpret_cast<uint8_t*>(v_buf + kTiles * kFlashK * kStride);  // FP8: 2 x (kFlashK, HD)
  uint8_t* v8_buf = k8_buf + (FP8 ? 2 * kFlashK * HD : 0);
  uint32_t* k8_scale = reinterpret_cast<uint32_t*>(v8_buf + (FP8 ? 2 * kFlashK * HD : 0));  // FP8: 2 x kFlashK
  uint32_t* v8_scale = k8_scale + (FP8 ? 2 * kFlashK : 0);
  int64_t* rows_buf = reinterpret_cast<int64_t*>(v8_scale + (FP8 ? 2 * kFlashK : 0));  // 2 x kFlashK

  const int tile = blockIdx.x, h = blockIdx.y, kvh = h / (p.n_heads / p.n_kv_heads);
  const int t0 = p.tiles[4 * tile], count = p.tiles[4 * tile + 1], table_offset = p.tiles[4 * tile + 3];
  const int64_t p0 = p.tiles[4 * tile + 2];
  const int32_t* table = p.block_tables + table_offset;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr int kChunks = HD / 8;  // 16-byte pieces per row

  // Q tile -> shared memory (rows past `count` are zeros).
  for (int e = threadIdx.x; e < kFlashQ * kChunks; e += blockDim.x) {
    const int r = e / kChunks, c = e % kChunks;
    const bool valid = r < count;
    const bf16* src = p.q + (static_cast<int64_t>(t0 + (valid ? r : 0)) * p.n_heads + h) * HD + c * 8;
    cp_async16(q_s + r * kStride + c * 8, src, valid);
  }
  cp_async_commit();

  // Key range of the tile: sinks [0, sink_hi) then the main range [lo, hi).
  const int64_t last = p0 + count - 1;
  const AttentionSpan first_span = attention_span(p0, p.window, p.sinks, p.layer_window);
  const int64_t lo = first_span.begin, sink_hi = first_span.sink_end;
  const int64_t n_sink_tiles = (sink_hi + kFlashK - 1) / kFlashK;
  const int64_t n_main_tiles = (last + 1 - lo + kFlashK - 1) / kFlashK;

  // Per thread: rows r = lane/4 and r + 8 of this warp's 16 queries.
  const int row0 = warp * 16 + (lane >> 2);
  const int64_t qpos[2] = {p0 + row0, p0 + row0 + 8};
  int64_t q_sink_end[2], q_begin[2];
  for (int j = 0; j < 2; ++j) {
    const AttentionSpan q_span = attention_span(qpos[j], p.window, p.sinks, p.layer_window);
    q_begin[j] = q_span.begin, q_sink_end[j] = q_span.sink_end;
  }

  float o[HD / 8][4];
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0;
  float m[2] = {-FLT_MAX, -FLT_MAX}, l[2] = {0, 0};
  const float scale_log2 = p.scale * 1.4426950408889634f;  // exp(x) = exp2(x log2 e)
  uint32_t qf[HD / 16][4];
  bool q_loaded = false;

  const int64_t n_key_tiles = n_sink_tiles + n_main_tiles;
  auto tile_start = [&](int64_t t) { return t < n_sink_tiles ? t * kFlashK : lo + (t - n_sink_tiles) * kFlashK; };
  auto tile_end = [&](int64_t t) { return t < n_sink_tiles ? sink_hi : last + 1; };
  // Starts the copy of key tile t into buffer `buf` (one commit group).
  auto issue = [&](int64_t t, int buf) {
    const int64_t k0 = tile_start(t), k_end = tile_end(t);
    int64_t* rows = rows_buf + buf * kFlashK;
    if (threadIdx.x < kFlashK) {
      const int64_t kp = k0 + threadIdx.x;
      int64_t row = -1;
      if (kp < k_end) {
        const int32_t block = table[kp / p.block_size];
        if (block >= 0) row = static_cast<int64_t>(block) * p.block_size + kp % p.block_size;
      }
      rows[threadIdx.x] = row;
    }
    __syncthreads();
    if constexpr (FP8) {
      for (int e = threadIdx.x; e < kFlashK * (HD / 16); e += blockDim.x) {
        const int r = e / (HD / 16), c = e % (HD / 16), slot = buf * kFlashK + r;
        stage_fp8_chunk<HD>(p.k_fp8, p.k_scale, rows[r], p.n_kv_heads, kvh, c, k8_buf + slot * HD, k8_scale + slot);
        stage_fp8_chunk<HD>(p.v_fp8, p.v_scale, rows[r], p.n_kv_heads, kvh, c, v8_buf + slot * HD, v8_scale + slot);
      }
    } else {
      bf16* k_s = k_buf + buf * kFlashK * kStride;
      bf16* v_s = v_buf + buf * kFlashK * kStride;
      for (int e = threadIdx.x; e < kFlashK * kChunks; e += blockDim.x) {
        const int r = e / kChunks, c = e % kChunks;
        const int64_t row = rows[r];
        const int64_t off = ((row >= 0 ? row : 0) * p.n_kv_heads + kvh) * HD + c * 8;
        cp_async16(k_s + r * kStride + c * 8, p.k_cache + off, row >= 0);
        cp_async16(v_s + r * kStride + c * 8, p.v_cache + off, row >= 0);
      }
    }
    cp_async_commit();
  };
  if (n_key_tiles > 0) issue(0, 0);

  for (int64_t t = 0; t < n_key_tiles; ++t) {
    const int buf = static_cast<int>(t & 1);
    const int64_t k0 = tile_start(t), k_end = tile_end(t);
    if (t + 1 < n_key_tiles) {
      issue(t + 1, buf ^ 1);
      cp_async_wait_group<1>();  // all but the newest group: Q and tile t have landed
    } else {
      cp_async_wait_group<0>();
    }
    __syncthreads();
    const bf16* k_s = k_buf + (FP8 ? 0 : buf) * kFlashK * kStride;
    const bf16* v_s = v_buf + (FP8 ? 0 : buf) * kFlashK * kStride;
    if constexpr (FP8) {
      const int shift = 8 * (kvh & 3);
      decode_fp8_rows<HD>(k8_buf + buf * kFlashK * HD, k8_scale + buf * kFlashK, shift, k_buf, kStride, kFlashK, threadIdx.x, blockDim.x);
      decode_fp8_rows<HD>(v8_buf + buf * kFlashK * HD, v8_scale + buf * kFlashK, shift, v_buf, kStride, kFlashK, threadIdx.x, blockDim.x);
      __syncthreads();
    }
    if (!q_loaded) {
#pragma unroll
      for (int ks = 0; ks < HD / 16; ++ks)
        ldmatrix_x4(qf[ks][0], qf[ks][1], qf[ks][2], qf[ks][3],
                    smem_u32(q_s + (warp * 16 + (lane & 15)) * kStride + ks * 16 + (lane >> 4) * 8));
      q_loaded = true;
    }

    // S = Q K^T for this warp's 16 rows and the tile's 64 keys: 8 n-tiles of 8 keys.
    float sc[kFlashK / 8][4];
    qk_product<HD>(sc, qf, k_s, kStride, lane);
    // Mask, then the online softmax per row (the 4 lanes of a row share it through shuffles).
    float tile_max[2] = {-FLT_MAX, -FLT_MAX};
    const int64_t k_last = k0 + kFlashK - 1;
    // Most tiles are wholly visible to both of this thread's rows: no per-element mask then.
    const bool whole = k_last < k_end && k_last <= qpos[0] && (k0 >= q_begin[0] || k_last < q_sink_end[0]) &&
                       (k0 >= q_begin[1] || k_last < q_sink_end[1]);
#pragma unroll
    for (int nt = 0; nt < kFlashK / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = e >> 1;
        if (whole) {
          sc[nt][e] *= scale_log2;
        } else {
          const int64_t kp = k0 + nt * 8 + (lane & 3) * 2 + (e & 1);
          const bool ok = kp < k_end && kp <= qpos[j] && (kp < q_sink_end[j] || kp >= q_begin[j]);
          sc[nt][e] = ok ? sc[nt][e] * scale_log2 : -FLT_MAX;
        }
        tile_max[j] = fmaxf(tile_max[j], sc[nt][e]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      tile_max[j] = fmaxf(tile_max[j], __shfl_xor_sync(0xffffffffu, tile_max[j], 1));
      tile_max[j] = fmaxf(tile_max[j], __shfl_xor_sync(0xffffffffu, tile_max[j], 2));
      const float m_new = fmaxf(m[j], tile_max[j]);
      alpha[j] = m_new == -FLT_MAX ? 1.0f : exp2f(m[j] - m_new);
      m[j] = m_new;
    }
    float row_sum[2] = {0, 0};
#pragma unroll
    for (int nt = 0; nt < kFlashK / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = e >> 1;
        const float pv = sc[nt][e] == -FLT_MAX ? 0.0f : exp2f(sc[nt][e] - m[j]);
        sc[nt][e] = pv;
        row_sum[j] += pv;
      }
    }
    add_row_sums(row_sum, l, alpha);
    rescale_rows<HD>(o, alpha);
    // O += P V, 16 keys per k-step.
#pragma unroll
    for (int ks = 0; ks < kFlashK / 16; ++ks) pv_product<HD>(o, sc[2 * ks], sc[2 * ks + 1], v_s + ks * 16 * kStride, kStride, lane);
    __syncthreads();  // buffer `buf` may now be refilled by the issue of tile t + 2 (FP8: the tiles redecoded)
  }
  // Normalize and write this thread's rows.
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int r = row0 + 8 * j;
    if (r >= count) continue;
    const float inv = l[j] > 0 ? 1.0f / l[j] : 0.0f;
    bf16* dst = p.out + (static_cast<int64_t>(t0 + r) * p.n_heads + h) * HD;
#pragma unroll
    for (int d = 0; d < HD / 8; ++d) {
      const int col = d * 8 + (lane & 3) * 2;
      *reinterpret_cast<__nv_bfloat162*>(dst + col) = __floats2bfloat162_rn(o[d][2 * j] * inv, o[d][2 * j + 1] * inv);
    }
  }
}

size_t flash_smem_bytes(int head_dim, bool fp8) {
  const size_t tiles = sizeof(bf16) * (kFlashQ + (fp8 ? 2 : 4) * kFlashK) * (head_dim + 8);
  const size_t staged = fp8 ? 4 * kFlashK * (static_cast<size_t>(head_dim) + sizeof(float)) : 0;
  return tiles + staged + sizeof(int64_t) * 2 * kFlashK;
}

}  // namespace

void attention_prefill_tiles(const AttentionParams& p, const DeviceCaps& dev, cudaStream_t s) {
  const bool fp8 = p.k_fp8 != nullptr;
#ifdef ABRIDGE_HAVE_SM90A
  if (!fp8 && p.n_tiles > 0 && p.tile_queries == kAttentionTileQueriesSm90 && p.head_dim == 128) {
    sm90::attention_tiles(p, dev.prefill_attention == PrefillAttention::kWgmmaCpAsync, s);
  } else
#else
  (void)dev;
#endif
  if (p.n_tiles > 0) {
    const size_t smem = flash_smem_bytes(p.head_dim, fp8);
    const dim3 grid(p.n_tiles, p.n_heads);
    void (*kernel)(AttentionParams) = nullptr;
    switch (p.head_dim) {
      case 128: kernel = fp8 ? attention_flash_kernel<128, true> : attention_flash_kernel<128, false>; break;
      case 64: kernel = fp8 ? attention_flash_kernel<64, true> : attention_flash_kernel<64, false>; break;
      default:
        throw std::invalid_argument("attention: prefill tiles of head_dim " + std::to_string(p.head_dim) +
                                    " (partition_attention() tiles 64 and 128 only)");
    }
    // The shared-memory limit is a per-device attribute: raise it at every launch (a host-side call),
    // so engines on several GPUs in one process all get it.
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    kernel<<<grid, 128, smem, s>>>(p);
  }
}

int attention_tile_queries(int head_dim, const DeviceCaps& dev, bool fp8_cache) {
#ifdef ABRIDGE_HAVE_SM90A
  if (head_dim == 128 && !fp8_cache && dev.prefill_attention != PrefillAttention::kMma && dev.sm_major == 9 &&
      dev.sm_minor == 0)
    return kAttentionTileQueriesSm90;
#else
  (void)head_dim, (void)dev, (void)fp8_cache;
#endif
  return kAttentionTileQueries;
}

void partition_attention(const int32_t* positions, const int32_t* table_offsets, int n, int head_dim, int tile_queries,
                         int32_t* tiles, int* n_tiles, int32_t* singles, int* n_singles) {
  const bool tiles_ok = head_dim == 64 || head_dim == 128;  // the tensor-core kernel's instantiations
  *n_tiles = 0;
  *n_singles = 0;
  int i = 0;
  while (i < n) {
    int j = i + 1;  // a run: same sequence (table), consecutive positions
    while (j < n && table_offsets[j] == table_offsets[i] && positions[j] == positions[j - 1] + 1) ++j;
    if (tiles_ok && j - i >= kMinTileRun) {
      for (int b = i; b < j; b += tile_queries) {
        int32_t* t = tiles + 4 * (*n_tiles)++;
        t[0] = b;
        t[1] = std::min(tile_queries, j - b);
        t[2] = positions[b];
        t[3] = table_offsets[b];
      }
    } else {
      for (int k = i; k < j; ++k) singles[(*n_singles)++] = k;
    }
    i = j;
  }
}

}  // namespace abridge::kernels
