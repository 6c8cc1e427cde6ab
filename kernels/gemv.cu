// Bandwidth-bound matrix products of decode steps, optionally with the RMS norm and SwiGLU fused (kernels/ops.h).
#include <cuda_bf16.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/device_helpers.cuh"
#include "kernels/ops.h"

namespace abridge::kernels {
namespace {

// ---------------------------------------------------------------------------------------------
// kernels

// ---- GEMV for decode steps

constexpr int kGemvWarps = 8;  // block of 256 threads
// 16-byte weight loads in flight per lane. Two, not more: H200, 4B shapes, batch 1 at context 64: 2.80 ms a
// step with 2, 2.88 with 3 or 4, 3.01 with 6, 3.32 with 8, 3.65 with 16 (two rows at 4K: 3.62 against
// 3.86 ms with 4). Measured, not derived: deeper was slower at every batch tried.
constexpr int kGemvDepth = 2;

// grid ceil(m / (8 / SPLIT)), block 256. SPLIT warps share an output row, each streaming its share of
// the row's 16-byte pieces with four loads in flight per lane (a layer's smaller matrices give each
// multiprocessor few rows: splitting them keeps more loads in flight and spreads the rows evenly over
// the multiprocessors). NORM: the block first RMS-normalizes the N input rows into shared memory,
// with its first weight loads already issued. GLU: each warp reads a gate row and the matching up row
// and writes silu(gate) * up.
template <int N, int SPLIT, bool NORM, bool GLU>
__global__ void __launch_bounds__(256) gemv_kernel(GemvParams p) {
  extern __shared__ __align__(16) unsigned char gemv_smem[];  // NORM: the normalized rows, (N, k) bf16
  __shared__ float partial[kGemvWarps][GLU ? 2 : 1][N];
  __shared__ float scratch[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int row = blockIdx.x * (kGemvWarps / SPLIT) + warp / SPLIT, part = warp % SPLIT;
  const bool active = row < p.m;
  const int k = p.k, chunks = k / 8;
  const int begin = part * chunks / SPLIT, end = (part + 1) * chunks / SPLIT;
  const uint4* w0 = reinterpret_cast<const uint4*>(p.w) + static_cast<int64_t>(active ? row : 0) * chunks;
  const uint4* w1 = w0 + static_cast<int64_t>(p.m) * chunks;  // GLU: the up row
  const bf16* xs = NORM ? reinterpret_cast<const bf16*>(gemv_smem) : p.x;

  float acc0[N], acc1[N];
#pragma unroll
  for (int t = 0; t < N; ++t) acc0[t] = acc1[t] = 0;
  uint4 wv0[kGemvDepth], wv1[kGemvDepth];
  auto load = [&](int c0) {
#pragma unroll
    for (int u = 0; u < kGemvDepth; ++u) {
      const int c = c0 + 32 * u;
      if (active && c < end) {
        wv0[u] = __ldg(w0 + c);
        if constexpr (GLU) wv1[u] = __ldg(w1 + c);
      }
    }
  };
  auto dot = [](const uint4& wv, const uint4& xv, float& acc) {
    const __nv_bfloat162* wp = reinterpret_cast<const __nv_bfloat162*>(&wv);
    const __nv_bfloat162* xp = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 wf = __bfloat1622float2(wp[e]), xf = __bfloat1622float2(xp[e]);
      acc += wf.x * xf.x + wf.y * xf.y;
    }
  };
  auto consume = [&](int c0) {
#pragma unroll
    for (int u = 0; u < kGemvDepth; ++u) {
      const int c = c0 + 32 * u;
      if (!active || c >= end) continue;
#pragma unroll
      for (int t = 0; t < N; ++t) {
        const uint4* xr = reinterpret_cast<const uint4*>(xs + static_cast<int64_t>(t) * k) + c;
        const uint4 xv = NORM ? *xr : __ldg(xr);
        dot(wv0[u], xv, acc0[t]);
        if constexpr (GLU) dot(wv1[u], xv, acc1[t]);
      }
    }
  };

  int c0 = begin + lane;
  load(c0);
  if constexpr (NORM) {
    bf16* out = reinterpret_cast<bf16*>(gemv_smem);
    const float4* norm_w = reinterpret_cast<const float4*>(p.norm_w);
    for (int t = 0; t < N; ++t) {
      const float4* xr = reinterpret_cast<const float4*>(p.x_f32 + static_cast<int64_t>(t) * k);
      float ss = 0;
      for (int j = threadIdx.x; j < k / 4; j += blockDim.x) ss += sum_squares(xr[j]);
      const float scale = rsqrtf(block_sum(ss, scratch) / static_cast<float>(k) + p.eps);
      for (int j = threadIdx.x; j < k / 4; j += blockDim.x)
        store_normalized(reinterpret_cast<__nv_bfloat162*>(out + static_cast<int64_t>(t) * k + 4 * j), xr[j], norm_w[j], scale);
    }
    __syncthreads();
  }
  for (;;) {
    consume(c0);
    c0 += 32 * kGemvDepth;
    if (c0 - lane >= end) break;
    load(c0);
  }

  if (!sum_split_row<N, SPLIT, GLU>(acc0, acc1, partial, warp, lane, part)) return;
  if (!active) return;
#pragma unroll
  for (int t = 0; t < N; ++t) {
    if (lane != t) continue;
    const int64_t o = static_cast<int64_t>(t) * p.m + row;
    if constexpr (GLU) {
      p.act[o] = __float2bfloat16(silu(acc0[t]) * acc1[t]);
    } else {
      p.y[o] = p.beta == 0.0f ? acc0[t] : p.beta * p.y[o] + acc0[t];
    }
  }
}

// Largest shared-memory stage of normalized input rows that gemv() takes on (above 48 KB the kernel is
// opted in to more).
constexpr size_t kGemvNormSmemMax = 96 * 1024;

template <int N, int SPLIT, bool NORM, bool GLU>
void launch_gemv_as(const GemvParams& p, size_t smem, dim3 grid, dim3 block, cudaStream_t s) {
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(gemv_kernel<N, SPLIT, NORM, GLU>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  gemv_kernel<N, SPLIT, NORM, GLU><<<grid, block, smem, s>>>(p);
}
template <int N, int SPLIT>
void launch_gemv_split(const GemvParams& p, size_t smem, dim3 grid, dim3 block, cudaStream_t s) {
  if (p.norm_w)
    p.act ? launch_gemv_as<N, SPLIT, true, true>(p, smem, grid, block, s) : launch_gemv_as<N, SPLIT, true, false>(p, smem, grid, block, s);
  else
    p.act ? launch_gemv_as<N, SPLIT, false, true>(p, smem, grid, block, s) : launch_gemv_as<N, SPLIT, false, false>(p, smem, grid, block, s);
}
template <int N>
void launch_gemv_rows(const GemvParams& p, int split, size_t smem, dim3 grid, dim3 block, cudaStream_t s) {
  switch (split) {
    case 1: launch_gemv_split<N, 1>(p, smem, grid, block, s); break;
    case 2: launch_gemv_split<N, 2>(p, smem, grid, block, s); break;
    case 4: launch_gemv_split<N, 4>(p, smem, grid, block, s); break;
    default: throw std::invalid_argument("gemv: " + std::to_string(split) + " warps per row");
  }
}
void launch_gemv(const GemvParams& p, int split, size_t smem, dim3 grid, dim3 block, cudaStream_t s) {
  switch (p.n) {
    case 1: launch_gemv_rows<1>(p, split, smem, grid, block, s); break;
    case 2: launch_gemv_rows<2>(p, split, smem, grid, block, s); break;
    default: throw std::invalid_argument("gemv: " + std::to_string(p.n) + " rows for the scalar kernel");
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// launchers

bool gemv_supports(int n, int k) { return n >= 1 && n <= kGemvMaxRows && k % 8 == 0; }

bool gemv_can_normalize(int n, int k) {
  return gemv_supports(n, k) && static_cast<size_t>(n) * k * sizeof(bf16) <= kGemvNormSmemMax;
}

void gemv(const GemvParams& p, const DeviceCaps& dev, cudaStream_t s) {
  if (p.n <= 0 || p.m <= 0) return;
  if (!gemv_supports(p.n, p.k)) throw std::invalid_argument("gemv: " + std::to_string(p.n) + " rows of width " + std::to_string(p.k));
  const size_t smem = p.norm_w ? static_cast<size_t>(p.n) * p.k * sizeof(bf16) : 0;
  const int64_t target = 4 * static_cast<int64_t>(dev.multiprocessors);
  // Rows split between warps until the grid gives every multiprocessor about four blocks.
  int split = 1;
  while (split < 4 && (static_cast<int64_t>(p.m) * split + kGemvWarps - 1) / kGemvWarps < target) split *= 2;
  const int rows_per_block = kGemvWarps / split;
  const dim3 grid((p.m + rows_per_block - 1) / rows_per_block), block(32 * kGemvWarps);
  launch_gemv(p, split, smem, grid, block, s);
}

void gemv_bf16(const bf16* x, const bf16* w, float* y, int n, int k, int m, float beta, const DeviceCaps& dev,
               cudaStream_t s) {
  GemvParams p;
  p.x = x, p.w = w, p.y = y, p.beta = beta, p.n = n, p.k = k, p.m = m;
  gemv(p, dev, s);
}

}  // namespace abridge::kernels
