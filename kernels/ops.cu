#include <cuda_bf16.h>

#include <cfloat>
#include <cmath>

#include "kernels/ops.h"

namespace abridge::kernels {
namespace {

// ---------------------------------------------------------------------------------------------
// kernels

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; every thread gets the result. `scratch` holds 32 floats.
__device__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

__global__ void embed_kernel(const int32_t* tokens, const bf16* table, float* x, int d) {
  const int i = blockIdx.x;
  const bf16* row = table + static_cast<int64_t>(tokens[i]) * d;
  for (int j = threadIdx.x; j < d; j += blockDim.x) x[static_cast<int64_t>(i) * d + j] = __bfloat162float(row[j]);
}

__global__ void rms_norm_kernel(const float* x, const int32_t* rows, const float* w, bf16* y, int d, float eps) {
  __shared__ float scratch[32];
  const int i = blockIdx.x;
  const float* xr = x + static_cast<int64_t>(rows ? rows[i] : i) * d;
  float ss = 0;
  for (int j = threadIdx.x; j < d; j += blockDim.x) ss += xr[j] * xr[j];
  ss = block_sum(ss, scratch);
  const float scale = rsqrtf(ss / static_cast<float>(d) + eps);
  for (int j = threadIdx.x; j < d; j += blockDim.x)
    y[static_cast<int64_t>(i) * d + j] = __float2bfloat16(w[j] * (xr[j] * scale));
}

// grid (n, n_heads + 2 n_kv_heads), block head_dim / 2: thread j owns the pair (j, j + head_dim/2).
__global__ void qkv_post_kernel(QkvParams p) {
  __shared__ float scratch[32];
  const int i = blockIdx.x, h = blockIdx.y, j = threadIdx.x, half = p.head_dim / 2;
  const int width = (p.n_heads + 2 * p.n_kv_heads) * p.head_dim;
  const float* src = p.qkv + static_cast<int64_t>(i) * width + h * p.head_dim;
  float a = src[j], b = src[j + half];
  const int64_t row = p.kv_rows[i];
  if (h >= p.n_heads + p.n_kv_heads) {  // v: copied as is
    const int kvh = h - p.n_heads - p.n_kv_heads;
    bf16* dst = p.v_cache + (row * p.n_kv_heads + kvh) * p.head_dim;
    dst[j] = __float2bfloat16(a);
    dst[j + half] = __float2bfloat16(b);
    return;
  }
  const bool is_q = h < p.n_heads;
  const float* w = is_q ? p.q_norm : p.k_norm;
  const float ss = block_sum(a * a + b * b, scratch);
  const float scale = rsqrtf(ss / static_cast<float>(p.head_dim) + p.eps);
  a = w[j] * (a * scale);
  b = w[j + half] * (b * scale);
  // RoPE: the angle is rounded to float32 as transformers computes it; sin/cos in double so that
  // large angles (long contexts) lose nothing more.
  const float angle = static_cast<float>(p.positions[i]) * p.inv_freq[j];
  double sn, cs;
  sincos(static_cast<double>(angle), &sn, &cs);
  const float c = static_cast<float>(cs), s = static_cast<float>(sn);
  const float ra = a * c - b * s, rb = b * c + a * s;
  bf16* dst = is_q ? p.q_out + (static_cast<int64_t>(i) * p.n_heads + h) * p.head_dim
                   : p.k_cache + (row * p.n_kv_heads + (h - p.n_heads)) * p.head_dim;
  dst[j] = __float2bfloat16(ra);
  dst[j + half] = __float2bfloat16(rb);
}

constexpr int kTileKeys = 32;   // keys per shared-memory tile: one per lane when scoring
constexpr int kMaxHeadDim = 256;

struct KeySpan {
  int64_t sink_end, begin, count;  // virtual key v -> position v < sink_end ? v : begin + v - sink_end
};

__device__ __forceinline__ KeySpan key_span(const AttentionParams& p, int64_t pos) {
  const int64_t w = p.window > 0 ? p.window : p.layer_window;
  KeySpan k{0, 0, pos + 1};
  if (w > 0) {
    k.begin = pos - w + 1 > 0 ? pos - w + 1 : 0;
    k.sink_end = p.window > 0 ? (p.sinks < k.begin ? p.sinks : k.begin) : 0;
    k.count = k.sink_end + (pos - k.begin + 1);
  }
  return k;
}

// grid (n, n_kv_heads, splits), block 32 * group: warp g handles query head g of the group that
// shares this KV head, so K and V tiles are loaded once for the whole group. Keys of split s are the virtual keys [s * chunk, (s + 1) * chunk).
// Writes, per (token, head, split): m (max score), l (sum of exp), acc (head_dim, unnormalized).
__global__ void attention_split_kernel(AttentionParams p, int chunk, int splits) {
  extern __shared__ float smem[];
  const int i = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
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
      const int64_t base = (rows[r] * p.n_kv_heads + kvh) * hd + c * 8;
      const uint4 kv = *reinterpret_cast<const uint4*>(p.k_cache + base);
      const uint4 vv = *reinterpret_cast<const uint4*>(p.v_cache + base);
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
  // Partial results: (n, n_heads, splits) m and l, then (n, n_heads, splits, hd) acc.
  const int64_t n_part = static_cast<int64_t>(p.n) * p.n_heads * splits;
  float* ws_m = p.workspace;
  float* ws_l = ws_m + n_part;
  float* ws_acc = ws_l + n_part;
  const int64_t idx = (static_cast<int64_t>(i) * p.n_heads + kvh * group + g) * splits + split;
  if (lane == 0) {
    ws_m[idx] = m;
    ws_l[idx] = l;
  }
#pragma unroll
  for (int e = 0; e < kMaxDimsPerLane; ++e)
    if (e < dims_per_lane) ws_acc[idx * hd + lane * dims_per_lane + e] = acc[e];
}

// grid (n, n_heads), block head_dim.
__global__ void attention_combine_kernel(AttentionParams p, int splits) {
  const int i = blockIdx.x, h = blockIdx.y, d = threadIdx.x, hd = p.head_dim;
  const int64_t n_part = static_cast<int64_t>(p.n) * p.n_heads * splits;
  const float* ws_m = p.workspace;
  const float* ws_l = ws_m + n_part;
  const float* ws_acc = ws_l + n_part;
  const int64_t base = (static_cast<int64_t>(i) * p.n_heads + h) * splits;
  float mx = -FLT_MAX;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, ws_m[base + s]);
  float num = 0, den = 0;
  for (int s = 0; s < splits; ++s) {
    const float l = ws_l[base + s];
    if (l == 0.0f) continue;  // an empty split
    const float w = __expf(ws_m[base + s] - mx);
    num += w * ws_acc[(base + s) * hd + d];
    den += w * l;
  }
  p.out[(static_cast<int64_t>(i) * p.n_heads + h) * hd + d] = __float2bfloat16(num / den);
}

__global__ void silu_mul_kernel(const float* gu, bf16* out, int ffn) {
  const int i = blockIdx.x;
  const float* g = gu + static_cast<int64_t>(i) * 2 * ffn;
  for (int j = threadIdx.x; j < ffn; j += blockDim.x) {
    const float x = g[j];
    out[static_cast<int64_t>(i) * ffn + j] = __float2bfloat16(x / (1.0f + __expf(-x)) * g[ffn + j]);
  }
}

int split_chunk(int max_position, int max_splits) {
  // At least 256 keys per split, and no more splits than the workspace holds.
  const int keys = max_position + 1;
  int chunk = (keys + max_splits - 1) / max_splits;
  if (chunk < 256) chunk = 256;
  return (chunk + kTileKeys - 1) / kTileKeys * kTileKeys;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// launchers

void embed(const int32_t* tokens, const bf16* table, float* x, int n, int d, cudaStream_t s) {
  if (n > 0) embed_kernel<<<n, 256, 0, s>>>(tokens, table, x, d);
}

void rms_norm(const float* x, const int32_t* rows, const float* w, bf16* y, int n, int d, float eps, cudaStream_t s) {
  if (n > 0) rms_norm_kernel<<<n, d >= 1024 ? 1024 : 256, 0, s>>>(x, rows, w, y, d, eps);
}

void qkv_post(const QkvParams& p, cudaStream_t s) {
  if (p.n == 0) return;
  dim3 grid(p.n, p.n_heads + 2 * p.n_kv_heads);
  qkv_post_kernel<<<grid, p.head_dim / 2, 0, s>>>(p);
}

size_t attention_workspace_floats(int n, int n_heads, int head_dim, int max_splits) {
  return static_cast<size_t>(n) * n_heads * max_splits * (head_dim + 2);
}

void attention(const AttentionParams& p, int max_splits, cudaStream_t s) {
  if (p.n == 0) return;
  const int chunk = split_chunk(p.max_position, max_splits);
  const int splits = (p.max_position + 1 + chunk - 1) / chunk;
  const int group = p.n_heads / p.n_kv_heads;
  const size_t smem = sizeof(uint32_t) * kTileKeys * (p.head_dim / 2 + 1) + sizeof(bf16) * kTileKeys * p.head_dim +
                      sizeof(float) * group * p.head_dim + sizeof(int64_t) * kTileKeys;
  attention_split_kernel<<<dim3(p.n, p.n_kv_heads, splits), 32 * group, smem, s>>>(p, chunk, splits);
  attention_combine_kernel<<<dim3(p.n, p.n_heads), p.head_dim, 0, s>>>(p, splits);
}

void silu_mul(const float* gu, bf16* out, int n, int ffn, cudaStream_t s) {
  if (n > 0) silu_mul_kernel<<<n, 256, 0, s>>>(gu, out, ffn);
}

}  // namespace abridge::kernels
