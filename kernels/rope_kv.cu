// After the QKV projection: q/k RMSNorm, RoPE, and the write of k and v to the paged cache (qkv_post, kernels/ops.h).
#include <cuda_bf16.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "base/fp8_kv.h"
#include "kernels/device_helpers.cuh"
#include "kernels/ops.h"

namespace abridge::kernels {
namespace {

// ---------------------------------------------------------------------------------------------
// kernels

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

// The FP8 cache's write of one KV head's values (QkvParams): lane l holds a[u] = value l + 32 u and
// b[u] = value l + 32 u + head_dim / 2.
template <int PAIRS>
__device__ __forceinline__ void store_fp8_head(const float (&a)[PAIRS], const float (&b)[PAIRS], uint8_t* codes,
                                               uint8_t* scale, int lane) {
  float amax = 0;
#pragma unroll
  for (int u = 0; u < PAIRS; ++u) amax = fmaxf(amax, fmaxf(fabsf(a[u]), fabsf(b[u])));
  const uint8_t byte = fp8_kv_scale_byte(warp_max(amax));
  const float s = ldexpf(1.0f, static_cast<int>(byte) - 127);
  constexpr int half = 32 * PAIRS;
#pragma unroll
  for (int u = 0; u < PAIRS; ++u) {
    codes[lane + 32 * u] = byte != 0 ? encode_e4m3(a[u] / s) : uint8_t{0};
    codes[lane + 32 * u + half] = byte != 0 ? encode_e4m3(b[u] / s) : uint8_t{0};
  }
  if (lane == 0) *scale = byte;
}

// The same for head_dim / 2 a multiple of 32 (PAIRS = head_dim / 64): grid (n, ceil(heads / 8)),
// block 256, one warp per head, lane l owning the pairs (l + 32 u, l + 32 u + head_dim/2), so the
// norm is a warp sum and a block does eight heads.
template <int PAIRS>
__global__ void __launch_bounds__(256) qkv_post_warps_kernel(QkvParams p) {
  const int i = blockIdx.x, lane = threadIdx.x & 31, h = blockIdx.y * 8 + (threadIdx.x >> 5);
  if (h >= p.n_heads + 2 * p.n_kv_heads) return;
  const int hd = p.head_dim, half = hd / 2;
  const float* src = p.qkv + static_cast<int64_t>(i) * (p.n_heads + 2 * p.n_kv_heads) * hd + h * hd;
  const int64_t row = p.kv_rows[i];
  float a[PAIRS], b[PAIRS];
#pragma unroll
  for (int u = 0; u < PAIRS; ++u) a[u] = src[lane + 32 * u], b[u] = src[lane + 32 * u + half];
  bf16* dst;
  if (h >= p.n_heads + p.n_kv_heads) {  // v: copied as is
    const int kvh = h - p.n_heads - p.n_kv_heads;
    const int64_t head = row * p.n_kv_heads + kvh;
    if (p.v_fp8) {
      store_fp8_head<PAIRS>(a, b, p.v_fp8 + head * hd, p.v_scale + row * kv_scale_row_bytes(p.n_kv_heads) + kvh, lane);
      return;
    }
    dst = p.v_cache + head * hd;
  } else {
    const bool is_q = h < p.n_heads;
    const float* w = is_q ? p.q_norm : p.k_norm;
    float ss = 0;
#pragma unroll
    for (int u = 0; u < PAIRS; ++u) ss += a[u] * a[u] + b[u] * b[u];
    const float scale = rsqrtf(warp_sum(ss) / static_cast<float>(hd) + p.eps);
#pragma unroll
    for (int u = 0; u < PAIRS; ++u) {
      const int j = lane + 32 * u;
      // As in qkv_post_kernel: the angle rounded to float32, sin/cos in double.
      const float angle = static_cast<float>(p.positions[i]) * p.inv_freq[j];
      double sn, cs;
      sincos(static_cast<double>(angle), &sn, &cs);
      const float c = static_cast<float>(cs), s = static_cast<float>(sn);
      const float na = w[j] * (a[u] * scale), nb = w[j + half] * (b[u] * scale);
      a[u] = na * c - nb * s;
      b[u] = nb * c + na * s;
    }
    const int64_t head = row * p.n_kv_heads + (h - p.n_heads);
    if (!is_q && p.k_fp8) {
      store_fp8_head<PAIRS>(a, b, p.k_fp8 + head * hd, p.k_scale + row * kv_scale_row_bytes(p.n_kv_heads) + (h - p.n_heads), lane);
      return;
    }
    dst = is_q ? p.q_out + (static_cast<int64_t>(i) * p.n_heads + h) * hd : p.k_cache + head * hd;
  }
#pragma unroll
  for (int u = 0; u < PAIRS; ++u) {
    dst[lane + 32 * u] = __float2bfloat16(a[u]);
    dst[lane + 32 * u + half] = __float2bfloat16(b[u]);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// launchers

void qkv_post(const QkvParams& p, cudaStream_t s) {
  if (p.k_fp8 && p.head_dim != 64 && p.head_dim != 128 && p.head_dim != 256)
    throw std::invalid_argument("qkv_post: an FP8 cache for head_dim " + std::to_string(p.head_dim) + " (64, 128, 256 only)");
  if (p.n == 0) return;
  const dim3 warps_grid(p.n, (p.n_heads + 2 * p.n_kv_heads + 7) / 8);
  switch (p.head_dim) {
    case 64: qkv_post_warps_kernel<1><<<warps_grid, 256, 0, s>>>(p); break;
    case 128: qkv_post_warps_kernel<2><<<warps_grid, 256, 0, s>>>(p); break;
    case 256: qkv_post_warps_kernel<4><<<warps_grid, 256, 0, s>>>(p); break;
    default: qkv_post_kernel<<<dim3(p.n, p.n_heads + 2 * p.n_kv_heads), p.head_dim / 2, 0, s>>>(p); break;
  }
}

}  // namespace abridge::kernels
