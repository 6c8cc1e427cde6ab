// Paged grouped-query attention (kernels/ops.h): the tensor-core and split-key decode kernels, the
// combination of split partials, the decode work plan and attention() itself, which hands prefill tiles
// to attention_prefill.cu.
#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "base/attention_span.h"
#include "kernels/attention_tiles.cuh"
#include "kernels/device_helpers.cuh"
#include "kernels/ops.h"

namespace abridge::kernels {
namespace {

using namespace attention_tiles;

// ---------------------------------------------------------------------------------------------
// kernels

constexpr int kTileKeys = 32;   // keys per shared-memory tile: one per lane when scoring
constexpr int kMaxHeadDim = 256;

struct KeySpan {
  int64_t sink_end, begin, count;  // virtual key v -> position v < sink_end ? v : begin + v - sink_end
};

__device__ __forceinline__ KeySpan key_span(const AttentionParams& p, int64_t pos) {
  const AttentionSpan a = attention_span(pos, p.window, p.sinks, p.layer_window);
  return {a.sink_end, a.begin, a.sink_end + (pos - a.begin + 1)};
}

// grid (n, n_kv_heads, splits), block 32 * group: warp g handles query head g of the group that
// shares this KV head, so K and V tiles are loaded once for the whole group. Keys of split s are the virtual keys [s * chunk, (s + 1) * chunk).
// Writes, per (token, head, split): m (max score), l (sum of exp), acc (head_dim, unnormalized).
__global__ void attention_split_kernel(AttentionParams p, int chunk, int splits) {
  extern __shared__ float smem[];
  const int c = blockIdx.x, i = p.singles[c], kvh = blockIdx.y, split = blockIdx.z;
  const int hd = p.head_dim, group = p.n_heads / p.n_kv_heads;
  const int lane = threadIdx.x & 31, g = threadIdx.x >> 5;
  const int kstride = hd / 2 + 1;  // words per K row in smem (bf16 pairs + 1 pad word: no bank conflicts)
  uint32_t* k_tile = reinterpret_cast<uint32_t*>(smem);       // (kTileKeys, kstride) bf16x2
  bf16* v_tile = reinterpret_cast<bf16*>(k_tile + kTileKeys * kstride);  // (kTileKeys, hd)
  float* q_sh = reinterpret_cast<float*>(v_tile + kTileKeys * hd);     // (group, hd)
  int64_t* rows = reinterpret_cast<int64_t*>(q_sh + group * hd);       // (kTileKeys)

  const int64_t pos = p.positions[i];
  const KeySpan span = key_span(p, pos);
  const int64_t v_begin = static_cast<int64_t>(split) * chunk;
  const int64_t v_end = span.count < v_begin + chunk ? span.count : v_begin + chunk;
  const int32_t* table = p.block_tables + p.table_offsets[i];

  for (int e = threadIdx.x; e < group * hd; e += blockDim.x) {
    const int g = e / hd, d = e % hd;
    q_sh[e] = __bfloat162float(p.q[(static_cast<int64_t>(i) * p.n_heads + kvh * group + g) * hd + d]) * p.scale;
  }

  constexpr int kMaxDimsPerLane = kMaxHeadDim / 32;
  float m = -FLT_MAX, l = 0, acc[kMaxDimsPerLane];
#pragma unroll
  for (int e = 0; e < kMaxDimsPerLane; ++e) acc[e] = 0;
  const int dims_per_lane = hd / 32;

  for (int64_t t0 = v_begin; t0 < v_end; t0 += kTileKeys) {
    const int n_keys = static_cast<int>((v_end - t0 < kTileKeys ? v_end - t0 : kTileKeys));
    __syncthreads();  // the previous tile is no longer read
    if (threadIdx.x < kTileKeys) {
      int64_t row = -1;
      if (threadIdx.x < n_keys) {
        const int64_t v = t0 + threadIdx.x;
        const int64_t kp = v < span.sink_end ? v : span.begin + (v - span.sink_end);
        const int32_t block = table[kp / p.block_size];
        row = static_cast<int64_t>(block) * p.block_size + kp % p.block_size;
      }
      rows[threadIdx.x] = row;
    }
    __syncthreads();
    // Load K and V rows: 8 bf16 (16 bytes) per access.
    const int vecs_per_row = hd / 8;
    for (int e = threadIdx.x; e < n_keys * vecs_per_row; e += blockDim.x) {
      const int r = e / vecs_per_row, c = e % vecs_per_row;
      const int64_t head = rows[r] * p.n_kv_heads + kvh, base = head * hd + c * 8;
      uint4 kv, vv;
      if (p.k_fp8) {  // the FP8 cache: codes times their head's scale
        const int64_t sc = rows[r] * kv_scale_row_bytes(p.n_kv_heads) + kvh;
        kv = e4m3x8_to_bf16(*reinterpret_cast<const uint2*>(p.k_fp8 + base), kv_scale(p.k_scale[sc]));
        vv = e4m3x8_to_bf16(*reinterpret_cast<const uint2*>(p.v_fp8 + base), kv_scale(p.v_scale[sc]));
      } else {
        kv = *reinterpret_cast<const uint4*>(p.k_cache + base);
        vv = *reinterpret_cast<const uint4*>(p.v_cache + base);
      }
      uint32_t* kd = k_tile + r * kstride + c * 4;
      kd[0] = kv.x, kd[1] = kv.y, kd[2] = kv.z, kd[3] = kv.w;
      *reinterpret_cast<uint4*>(v_tile + r * hd + c * 8) = vv;
    }
    __syncthreads();
    {
      // Lane `lane` scores key `lane` of the tile.
      float score = -FLT_MAX;
      if (lane < n_keys) {
        const float* qg = q_sh + g * hd;
        const uint32_t* kr = k_tile + lane * kstride;
        float s = 0;
        for (int d2 = 0; d2 < hd / 2; ++d2) {
          const float2 kf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(kr + d2));
          s += qg[2 * d2] * kf.x + qg[2 * d2 + 1] * kf.y;
        }
        score = s;
      }
      const float m_new = fmaxf(m, warp_max(score));
      const float alpha = __expf(m - m_new);
      const float pj = lane < n_keys ? __expf(score - m_new) : 0.0f;
      l = l * alpha + warp_sum(pj);
      m = m_new;
#pragma unroll
      for (int e = 0; e < kMaxDimsPerLane; ++e) acc[e] *= alpha;
      for (int k = 0; k < n_keys; ++k) {
        const float pk = __shfl_sync(0xffffffffu, pj, k);
        const bf16* vr = v_tile + k * hd + lane * dims_per_lane;
#pragma unroll
        for (int e = 0; e < kMaxDimsPerLane; ++e)
          if (e < dims_per_lane) acc[e] += pk * __bfloat162float(vr[e]);
      }
    }
  }
  // Partial results: (n_singles, n_heads, splits) m and l, then (n_singles, n_heads, splits, hd) acc.
  const int64_t n_part = static_cast<int64_t>(p.n_singles) * p.n_heads * splits;
  float* ws_m = p.workspace;
  float* ws_l = ws_m + n_part;
  float* ws_acc = ws_l + n_part;
  const int64_t idx = (static_cast<int64_t>(c) * p.n_heads + kvh * group + g) * splits + split;
  if (lane == 0) {
    ws_m[idx] = m;
    ws_l[idx] = l;
  }
#pragma unroll
  for (int e = 0; e < kMaxDimsPerLane; ++e)
    if (e < dims_per_lane) ws_acc[idx * hd + lane * dims_per_lane + e] = acc[e];
}

// grid (n_singles, n_heads), block head_dim; splits <= kMaxAttentionSplits. The splits' maxima and
// weights are read side by side into shared memory, then each thread sums its dimension over the splits with
// several loads in flight (a serial pass over 64 splits costs more than the attention itself).
// splits = 0: the decode kernel's items (token c's partials from p.decode_first[c], see there);
// otherwise the split kernel's layout, `splits` per (token, head).
__global__ void attention_combine_kernel(AttentionParams p, int uniform_splits) {
  __shared__ float weight[kMaxAttentionSplits];
  __shared__ float scratch[32];
  const int c = blockIdx.x, i = p.singles[c], h = blockIdx.y, d = threadIdx.x, hd = p.head_dim;
  int splits = uniform_splits;
  int64_t n_part, base;
  if (uniform_splits > 0) {
    n_part = static_cast<int64_t>(p.n_singles) * p.n_heads * splits;
    base = (static_cast<int64_t>(c) * p.n_heads + h) * splits;
  } else {
    const int first = p.decode_first[c];
    splits = p.decode_first[c + 1] - first;
    n_part = static_cast<int64_t>(p.n_decode_items) * p.n_heads;
    base = static_cast<int64_t>(first) * p.n_heads + static_cast<int64_t>(h) * splits;
  }
  const float* ws_m = p.workspace;
  const float* ws_l = ws_m + n_part;
  const float* ws_acc = ws_l + n_part;
  float mx = -FLT_MAX;
  for (int s = d; s < splits; s += blockDim.x) mx = fmaxf(mx, ws_m[base + s]);
  mx = block_max(mx, scratch);
  float den = 0;
  for (int s = d; s < splits; s += blockDim.x) {
    const float l = ws_l[base + s];
    const float w = l == 0.0f ? 0.0f : __expf(ws_m[base + s] - mx);  // l = 0: an empty split
    weight[s] = w;
    den += w * l;
  }
  den = block_sum(den, scratch);  // its barriers also publish weight[]
  const float* acc = ws_acc + base * hd + d;
  float num[4] = {0, 0, 0, 0};
  int s = 0;
  for (; s + 4 <= splits; s += 4)
#pragma unroll
    for (int u = 0; u < 4; ++u) num[u] += weight[s + u] * acc[static_cast<int64_t>(s + u) * hd];
  for (; s < splits; ++s) num[0] += weight[s] * acc[static_cast<int64_t>(s) * hd];
  p.out[(static_cast<int64_t>(i) * p.n_heads + h) * hd + d] = __float2bfloat16((num[0] + num[1] + num[2] + num[3]) / den);
}


// ---- tensor-core decode attention (flash-decoding with mma.sync, any GPU from sm_80)

constexpr int kDecodeKeys = 64;  // keys per shared-memory tile: 16 per warp, 4 warps

// grid (n_kv_heads, n_decode_items), block 128. One KV head and one work item: a run of whole 64-key
// tiles of one single token's span (plan_decode_items: a long context gets more runs than a short
// one, so the runs are about equal across the batch): the group's query heads are the rows of one 16-row mma tile (rows
// past the group are zeros), so K and V are read once for the whole group and the products run on
// the tensor cores. Each warp keeps its own online softmax over its 16 keys of every tile; the four
// are merged at the end into the split's partial (m, l, acc), the split kernel's format. FP8: the
// copies land as codes and scales, double buffered, and each warp decodes its own 16 keys into one K
// and one V tile of bf16 before use.
template <int HD, bool FP8>
__global__ void __launch_bounds__(128) attention_decode_kernel(AttentionParams p) {
  constexpr int kStride = HD + 8;
  constexpr int kChunks = HD / 8;
  constexpr int kTiles = FP8 ? 1 : 2;
  extern __shared__ __align__(16) unsigned char decode_smem[];
  bf16* q_s = reinterpret_cast<bf16*>(decode_smem);       // (16, kStride)
  bf16* k_buf = q_s + 16 * kStride;                       // kTiles x (kDecodeKeys, kStride)
  bf16* v_buf = k_buf + kTiles * kDecodeKeys * kStride;   // kTiles x (kDecodeKeys, kStride)
  uint8_t* k8_buf = reinterpret_cast<uint8_t*>(v_buf + kTiles * kDecodeKeys * kStride);  // FP8: 2 x (kDecodeKeys, HD)
  uint8_t* v8_buf = k8_buf + 2 * kDecodeKeys * HD;
  uint32_t* k8_scale = reinterpret_cast<uint32_t*>(v8_buf + 2 * kDecodeKeys * HD);  // FP8: 2 x kDecodeKeys
  uint32_t* v8_scale = k8_scale + 2 * kDecodeKeys;

  // The KV heads of one item are neighbours in launch order: they read the same cache rows, which
  // hold every head side by side (a KV head alone is 256 bytes of each 2 KiB row).
  const int kvh = blockIdx.x, item = blockIdx.y;
  const int c = p.decode_items[3 * item];
  if (c < 0) return;  // an unused item of the shape's grid
  const int i = p.singles[c];
  const int first = p.decode_first[c], splits = p.decode_first[c + 1] - first;
  const int group = p.n_heads / p.n_kv_heads;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t pos = p.positions[i];
  const KeySpan span = key_span(p, pos);
  const int64_t v_begin = p.decode_items[3 * item + 1];
  const int64_t v_end = span.count < p.decode_items[3 * item + 2] ? span.count : p.decode_items[3 * item + 2];
  const int32_t* table = p.block_tables + p.table_offsets[i];
  const uint32_t bs = static_cast<uint32_t>(p.block_size);

  for (int e = threadIdx.x; e < 16 * kChunks; e += blockDim.x) {
    const int r = e / kChunks, ch = e % kChunks;
    const bool valid = r < group;
    const bf16* src = p.q + (static_cast<int64_t>(i) * p.n_heads + kvh * group + (valid ? r : 0)) * HD + ch * 8;
    cp_async16(q_s + r * kStride + ch * 8, src, valid);
  }
  cp_async_commit();

  const int64_t n_tiles = v_end > v_begin ? (v_end - v_begin + kDecodeKeys - 1) / kDecodeKeys : 0;
  auto issue = [&](int64_t t, int buf) {
    const int64_t t0 = v_begin + t * kDecodeKeys;
    constexpr int kRowChunks = FP8 ? HD / 16 : kChunks;  // 16-byte copies per row
    for (int e = threadIdx.x; e < kDecodeKeys * kRowChunks; e += blockDim.x) {
      const int r = e / kRowChunks, ch = e % kRowChunks;
      const int64_t v = t0 + r;
      int64_t row = -1;
      if (v < v_end) {
        const uint32_t kp = static_cast<uint32_t>(v < span.sink_end ? v : span.begin + (v - span.sink_end));
        const uint32_t blk = kp / bs;
        row = static_cast<int64_t>(table[blk]) * bs + (kp - blk * bs);
      }
      if constexpr (FP8) {
        const int slot = buf * kDecodeKeys + r;
        stage_fp8_chunk<HD>(p.k_fp8, p.k_scale, row, p.n_kv_heads, kvh, ch, k8_buf + slot * HD, k8_scale + slot);
        stage_fp8_chunk<HD>(p.v_fp8, p.v_scale, row, p.n_kv_heads, kvh, ch, v8_buf + slot * HD, v8_scale + slot);
      } else {
        const int64_t off = ((row >= 0 ? row : 0) * p.n_kv_heads + kvh) * HD + ch * 8;
        cp_async16(k_buf + buf * kDecodeKeys * kStride + r * kStride + ch * 8, p.k_cache + off, row >= 0);
        cp_async16(v_buf + buf * kDecodeKeys * kStride + r * kStride + ch * 8, p.v_cache + off, row >= 0);
      }
    }
    cp_async_commit();
  };
  if (n_tiles > 0) issue(0, 0);

  float o[HD / 8][4];
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0, 0};
  const float scale_log2 = p.scale * 1.4426950408889634f;
  uint32_t qf[HD / 16][4];

  for (int64_t t = 0; t < n_tiles; ++t) {
    const int buf = static_cast<int>(t & 1);
    if (t + 1 < n_tiles) {
      issue(t + 1, buf ^ 1);
      cp_async_wait_group<1>();
    } else {
      cp_async_wait_group<0>();
    }
    __syncthreads();
    if (t == 0) {
#pragma unroll
      for (int ks = 0; ks < HD / 16; ++ks)
        ldmatrix_x4(qf[ks][0], qf[ks][1], qf[ks][2], qf[ks][3],
                    smem_u32(q_s + (lane & 15) * kStride + ks * 16 + (lane >> 4) * 8));
    }
    const bf16* k_s = k_buf + ((FP8 ? 0 : buf) * kDecodeKeys + warp * 16) * kStride;
    const bf16* v_s = v_buf + ((FP8 ? 0 : buf) * kDecodeKeys + warp * 16) * kStride;
    if constexpr (FP8) {  // this warp's 16 keys only: the other warps do theirs
      const int slot = buf * kDecodeKeys + warp * 16;
      const int shift = 8 * (kvh & 3);
      decode_fp8_rows<HD>(k8_buf + slot * HD, k8_scale + slot, shift, k_buf + warp * 16 * kStride, kStride, 16, lane, 32);
      decode_fp8_rows<HD>(v8_buf + slot * HD, v8_scale + slot, shift, v_buf + warp * 16 * kStride, kStride, 16, lane, 32);
      __syncwarp();
    }
    // S (16 rows, this warp's 16 keys) in two 8-key n-tiles.
    float sc[2][4];
    qk_product<HD>(sc, qf, k_s, kStride, lane);
    const int64_t key0 = v_begin + t * kDecodeKeys + warp * 16;
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t v = key0 + nt * 8 + (lane & 3) * 2 + (e & 1);
        sc[nt][e] = v < v_end ? sc[nt][e] * scale_log2 : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], sc[nt][e]);
      }
    float alpha[2], use[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      mx[j] = fmaxf(mx[j], __shfl_xor_sync(0xffffffffu, mx[j], 1));
      mx[j] = fmaxf(mx[j], __shfl_xor_sync(0xffffffffu, mx[j], 2));
      use[j] = mx[j] == -INFINITY ? 0.0f : mx[j];
      alpha[j] = exp2f(m[j] - use[j]);  // m = -inf: 0
      m[j] = mx[j];
    }
    float sum[2] = {0, 0};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        sc[nt][e] = exp2f(sc[nt][e] - use[e >> 1]);
        sum[e >> 1] += sc[nt][e];
      }
    add_row_sums(sum, l, alpha);
    rescale_rows<HD>(o, alpha);
    pv_product<HD>(o, sc[0], sc[1], v_s, kStride, lane);
    __syncthreads();  // buffer `buf` may now be refilled
  }

  // Merge the four warps' partials through shared memory (the K/V buffers, and FP8's staging after
  // them, are free now: decode_smem_bytes() makes room for either use). Rows are
  // query heads; only rows < group exist. m is kept in log2 units until here.
  float* red_o = reinterpret_cast<float*>(k_buf);       // (4, 16, HD)
  float* red_ml = red_o + 4 * 16 * HD;                  // (4, 16, 2)
  const int g = lane >> 2;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int r = g + 8 * j;
    if ((lane & 3) == 0) {
      red_ml[(warp * 16 + r) * 2] = m[j];
      red_ml[(warp * 16 + r) * 2 + 1] = l[j];
    }
#pragma unroll
    for (int d = 0; d < HD / 8; ++d) {
      const int col = d * 8 + (lane & 3) * 2;
      red_o[(warp * 16 + r) * HD + col] = o[d][2 * j];
      red_o[(warp * 16 + r) * HD + col + 1] = o[d][2 * j + 1];
    }
  }
  __syncthreads();
  const int64_t n_part = static_cast<int64_t>(p.n_decode_items) * p.n_heads;
  float* ws_m = p.workspace;
  float* ws_l = ws_m + n_part;
  float* ws_acc = ws_l + n_part;
  for (int e = threadIdx.x; e < group * HD; e += blockDim.x) {
    const int r = e / HD, d = e % HD;
    float mm = -INFINITY;
    for (int w = 0; w < 4; ++w) mm = fmaxf(mm, red_ml[(w * 16 + r) * 2]);
    const float base = mm == -INFINITY ? 0.0f : mm;
    float ll = 0, acc = 0;
    for (int w = 0; w < 4; ++w) {
      const float f = exp2f(red_ml[(w * 16 + r) * 2] - base);
      ll += f * red_ml[(w * 16 + r) * 2 + 1];
      acc += f * red_o[(w * 16 + r) * HD + d];
    }
    // Token c's partials: (n_heads, its items) from offset first * n_heads.
    const int64_t idx = static_cast<int64_t>(first) * p.n_heads + static_cast<int64_t>(kvh * group + r) * splits + (item - first);
    if (d == 0) {
      ws_m[idx] = mm == -INFINITY ? -FLT_MAX : mm * 0.6931471805599453f;  // natural-log units
      ws_l[idx] = ll;
    }
    ws_acc[idx * HD + d] = acc;
  }
}


// Key splits for `blocks` (token, KV head) pairs of up to `keys` keys. A few pairs (batch 1) are split
// until they fill about two thirds of the GPU's block slots: more splits only add partials to merge.
// Where they take more than one round of slots (large batches), the splits make the last round
// mostly full, since the step waits for its slowest multiprocessor. (H100, 4B shapes: batch 1
// ctx 4K runs 33 splits of two tiles, batch 16 three splits, batch 64 at 2K two.)
int decode_splits(int blocks, int keys, int max_splits, int slots) {
  const int most = std::max(1, std::min(max_splits, (keys + kDecodeKeys - 1) / kDecodeKeys));
  int splits = std::clamp((2 * slots / 3 + blocks - 1) / blocks, 1, most);
  while (splits < most && static_cast<int64_t>(blocks) * splits > slots) {
    const double rounds = static_cast<double>(blocks) * splits / slots;
    if (rounds / std::ceil(rounds) >= 0.85) break;
    ++splits;
  }
  return splits;
}

size_t decode_smem_bytes(int head_dim, bool fp8) {
  const size_t tiles = fp8 ? sizeof(bf16) * (16 + 2 * kDecodeKeys) * (head_dim + 8) +
                                 4 * kDecodeKeys * (static_cast<size_t>(head_dim) + sizeof(float))
                           : sizeof(bf16) * (16 + 4 * kDecodeKeys) * (head_dim + 8);
  const size_t reduce = sizeof(float) * 4 * 16 * (head_dim + 2) + sizeof(bf16) * 16 * (head_dim + 8);
  return std::max(tiles, reduce);
}

int split_chunk(int max_position, int max_splits) {
  // At least 64 keys (two tiles) per split, and no more splits than the workspace holds: a decode
  // step at batch 1 then spreads a 4K context over 64 splits x KV heads blocks.
  const int keys = max_position + 1;
  int chunk = (keys + max_splits - 1) / max_splits;
  if (chunk < 64) chunk = 64;
  return (chunk + kTileKeys - 1) / kTileKeys * kTileKeys;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// launchers

int attention_decode_slots(int head_dim, int multiprocessors) {
  // The bf16 kernel's; the FP8 one takes a little less shared memory, so at least as many fit.
  auto kernel = head_dim == 128 ? attention_decode_kernel<128, false> : attention_decode_kernel<64, false>;
  const size_t smem = decode_smem_bytes(head_dim == 128 ? 128 : 64, false);
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 128, smem) != cudaSuccess || per_sm <= 0) per_sm = 1;
  return per_sm * multiprocessors;
}

int decode_item_count(int n_singles, int n_kv_heads, int head_dim, int max_items, const DeviceCaps& dev) {
  if (n_singles <= 0) return 0;
  if (max_items < n_singles) throw std::invalid_argument("decode_item_count: fewer items than tokens");
  const int known = head_dim == 128 ? dev.decode_slots_hd128 : dev.decode_slots_hd64;
  const int slots = known > 0 ? known : dev.multiprocessors;
  // As many items as equal splits per token would make (decode_splits), and one more per token: the
  // room plan_decode_items() needs to round each token's share up to a whole item.
  const int per_token = decode_splits(n_singles * n_kv_heads, std::numeric_limits<int>::max() / 2, kMaxAttentionSplits, slots);
  const int64_t items = static_cast<int64_t>(n_singles) * (per_token + 1);
  return static_cast<int>(std::clamp<int64_t>(items, n_singles, max_items));
}

void plan_decode_items(const int32_t* positions, const int32_t* singles, int n_singles, int n_items, int32_t* items,
                       int32_t* first) {
  auto tiles_of = [&](int c) { return (static_cast<int64_t>(positions[singles[c]]) + kDecodeKeys) / kDecodeKeys; };
  int64_t total = 0;
  for (int c = 0; c < n_singles; ++c) total += tiles_of(c);
  // Tiles per item: with one item per token kept for rounding, ceil(t / chunk) items for a token of t
  // tiles sum to at most n_items.
  const int64_t spare = static_cast<int64_t>(n_items) - n_singles;
  const int64_t chunk = spare > 0 ? std::max<int64_t>(1, (total + spare - 1) / spare) : std::numeric_limits<int64_t>::max();
  int next = 0;
  for (int c = 0; c < n_singles; ++c) {
    const int64_t t = tiles_of(c);
    const int64_t keys = static_cast<int64_t>(positions[singles[c]]) + 1;
    const int64_t want = spare > 0 ? (t + chunk - 1) / chunk : 1;
    const int count = static_cast<int>(std::clamp<int64_t>(want, 1, std::min<int64_t>(t, kMaxAttentionSplits)));
    first[c] = next;
    for (int k = 0; k < count; ++k) {  // tiles [k t / count, (k + 1) t / count): none empty
      int32_t* it = items + 3 * next++;
      it[0] = c;
      it[1] = static_cast<int32_t>(t * k / count * kDecodeKeys);
      it[2] = static_cast<int32_t>(std::min<int64_t>(keys, t * (k + 1) / count * kDecodeKeys));
    }
  }
  first[n_singles] = next;
  for (int j = next; j < n_items; ++j) items[3 * j] = -1, items[3 * j + 1] = items[3 * j + 2] = 0;
}

size_t attention_workspace_floats(int n, int n_heads, int head_dim, int max_splits) {
  return static_cast<size_t>(n) * n_heads * max_splits * (head_dim + 2);
}

void attention(const AttentionParams& p, int max_splits, const DeviceCaps& dev, cudaStream_t s) {
  if (p.n == 0) return;
  const bool fp8 = p.k_fp8 != nullptr;
  if (fp8 && ((p.head_dim != 64 && p.head_dim != 128) || !p.v_fp8 || !p.k_scale || !p.v_scale))
    throw std::invalid_argument("attention: an FP8 cache needs head_dim 64 or 128 and K and V codes and scales, not head_dim " +
                                std::to_string(p.head_dim));
  if (fp8 && p.n_tiles > 0 && p.tile_queries != kAttentionTileQueries)
    throw std::invalid_argument("attention: FP8 prefill tiles take kAttentionTileQueries queries (attention_tile_queries)");
  max_splits = std::clamp(max_splits, 1, kMaxAttentionSplits);
  attention_prefill_tiles(p, dev, s);
  if (p.n_singles == 0) return;
  const int group = p.n_heads / p.n_kv_heads;
  if (group <= 16 && (p.head_dim == 64 || p.head_dim == 128)) {
    // Tensor-core decode over the planned items (plan_decode_items).
    auto kernel = p.head_dim == 128 ? (fp8 ? attention_decode_kernel<128, true> : attention_decode_kernel<128, false>)
                                    : (fp8 ? attention_decode_kernel<64, true> : attention_decode_kernel<64, false>);
    const size_t smem = decode_smem_bytes(p.head_dim, fp8);
    // The shared-memory limit is a per-device attribute: raise it at every launch (a host-side call),
    // so engines on several GPUs in one process all get it.
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (p.decode_items == nullptr || p.decode_first == nullptr || p.n_decode_items < p.n_singles)
      throw std::invalid_argument("attention: decode tokens without a plan_decode_items() plan");
    kernel<<<dim3(p.n_kv_heads, p.n_decode_items), 128, smem, s>>>(p);
    attention_combine_kernel<<<dim3(p.n_singles, p.n_heads), p.head_dim, 0, s>>>(p, 0);
    return;
  }
  const int chunk = split_chunk(p.max_position, max_splits);
  const int splits = (p.max_position + 1 + chunk - 1) / chunk;
  const size_t smem = sizeof(uint32_t) * kTileKeys * (p.head_dim / 2 + 1) + sizeof(bf16) * kTileKeys * p.head_dim +
                      sizeof(float) * group * p.head_dim + sizeof(int64_t) * kTileKeys;
  attention_split_kernel<<<dim3(p.n_singles, p.n_kv_heads, splits), 32 * group, smem, s>>>(p, chunk, splits);
  attention_combine_kernel<<<dim3(p.n_singles, p.n_heads), p.head_dim, 0, s>>>(p, splits);
}

}  // namespace abridge::kernels
