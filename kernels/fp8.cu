#include "kernels/fp8.h"

#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <stdexcept>
#include <string>

#include "kernels/device_helpers.cuh"

namespace abridge::kernels {

Fp8Matrix Fp8Matrix::rows(int r0, int count) const {
  if (r0 % kFp8Block != 0 || r0 < 0 || r0 + count > m)
    throw std::invalid_argument("Fp8Matrix::rows: rows [" + std::to_string(r0) + ", " + std::to_string(r0 + count) +
                                ") of " + std::to_string(m) + " do not start on a tile");
  Fp8Matrix v = *this;
  v.codes = codes + static_cast<int64_t>(r0) * k;
  v.scales = scales + static_cast<int64_t>(r0 / kFp8Block) * fp8_scale_ld(k);
  v.m = count;
  return v;
}

namespace {

// ---------------------------------------------------------------------------------------------
// kernels

constexpr float kE4M3Max = 448.0f;


// grid (n_pad, ceil(groups / 8)), block 256 (8 warps). One token row and up to eight 128-wide groups
// per block (a decode step's row is spread over several multiprocessors): with norm_w, the row's RMS
// scale first (each block of the row sums the same squares in the same order); then each warp
// quantizes one group, four elements per lane. Divisions are IEEE (no fast math),
// so scales and codes equal the CPU's for the same inputs.
__global__ void __launch_bounds__(256) fp8_quantize_kernel(Fp8QuantizeParams p) {
  __shared__ float partial[8];
  const int i = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int k = p.k, groups = fp8_blocks(k);
  const bool live = i < p.n;
  float rscale = 0.0f;
  if (p.norm_w && live) {
    const float* xr = p.x_f32 + static_cast<int64_t>(i) * k;
    float ss = 0;
    for (int c = threadIdx.x; c < k; c += blockDim.x) ss += xr[c] * xr[c];
    ss = warp_sum(ss);
    if (lane == 0) partial[warp] = ss;
    __syncthreads();
    ss = lane < 8 ? partial[lane] : 0.0f;
    ss = warp_sum(ss);
    rscale = rsqrtf(ss / static_cast<float>(k) + p.eps);
  }
  for (int g = blockIdx.y * 8 + warp; g < groups; g += 8 * gridDim.y) {
    const int c0 = g * kFp8Block + 4 * lane;
    float v[4];
    float amax = 0.0f;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int c = c0 + e;
      v[e] = 0.0f;
      if (live && c < k) {
        const int64_t o = static_cast<int64_t>(i) * k + c;
        v[e] = p.norm_w ? __bfloat162float(__float2bfloat16(p.norm_w[c] * (p.x_f32[o] * rscale))) : __bfloat162float(p.x[o]);
      }
      amax = fmaxf(amax, fabsf(v[e]));
    }
    amax = warp_max(amax);
    const float s = amax / kE4M3Max;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int c = c0 + e;
      if (c >= k) continue;
      const uint8_t code = amax > 0.0f ? encode_e4m3(v[e] / s) : uint8_t{0};
      const int64_t o = static_cast<int64_t>(i) * k + c;
      if (p.codes) p.codes[o] = code;
      if (p.dequantized && live) p.dequantized[o] = __float2bfloat16(decode_e4m3(code) * s);
    }
    if (lane == 0 && p.scales) p.scales[static_cast<int64_t>(g) * p.n_pad + i] = s;
  }
}

// grid ceil(m * k / 16 / 256), block 256: 16 codes per thread, one 16-byte load, two 16-byte stores.
__global__ void fp8_dequantize_kernel(Fp8Matrix w, bf16* out) {
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int chunks_per_row = w.k / 16;
  if (chunk >= static_cast<int64_t>(w.m) * chunks_per_row) return;
  const int r = static_cast<int>(chunk / chunks_per_row), c0 = static_cast<int>(chunk % chunks_per_row) * 16;
  const float s = w.scales[static_cast<int64_t>(r / kFp8Block) * fp8_scale_ld(w.k) + c0 / kFp8Block];
  const uint4 raw = *reinterpret_cast<const uint4*>(w.codes + static_cast<int64_t>(r) * w.k + c0);
  e4m3x16_to_bf16(raw, s, out + static_cast<int64_t>(r) * w.k + c0);
}

constexpr int kGemvWarps = 8;  // block of 256 threads
constexpr int kGemvDepth = 4;  // 16-byte weight loads (16 weights each) in flight per lane

// Sixteen e4m3 codes (one 16-byte load) as floats.
__device__ __forceinline__ void decode16(const uint4& raw, float (&f)[16]) {
  const __nv_fp8x2_storage_t* pairs = reinterpret_cast<const __nv_fp8x2_storage_t*>(&raw);
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const float2 v = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(pairs[e], __NV_E4M3)));
    f[2 * e] = v.x;
    f[2 * e + 1] = v.y;
  }
}

// Dot product of 16 decoded weights with 16 staged input halves (two 16-byte shared loads).
__device__ __forceinline__ float dot16(const float (&w)[16], const __half* xs) {
  const uint4 a = reinterpret_cast<const uint4*>(xs)[0], b = reinterpret_cast<const uint4*>(xs)[1];
  const __half2* ha = reinterpret_cast<const __half2*>(&a);
  const __half2* hb = reinterpret_cast<const __half2*>(&b);
  float acc = 0.0f;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float2 x0 = __half22float2(ha[e]), x1 = __half22float2(hb[e]);
    acc += w[2 * e] * x0.x + w[2 * e + 1] * x0.y;
    acc += w[8 + 2 * e] * x1.x + w[8 + 2 * e + 1] * x1.y;
  }
  return acc;
}

// grid ceil(m / (8 / SPLIT)), block 256. The block first stages the N quantized input rows as halves
// and their group scales (dynamic shared memory: N * k halves, then N * groups floats), with its first
// weight loads already issued. SPLIT warps share an output row; each lane streams 16-byte chunks of
// the row (16 codes, all in one 128-wide K block g = chunk / 8) and adds each chunk's dot product times
// x_scale[g] * w_scale[row / 128][g]: both scales once per chunk, f32 throughout.
template <int N, int SPLIT, bool GLU>
__global__ void __launch_bounds__(256) fp8_gemv_kernel(Fp8GemvParams p) {
  extern __shared__ __align__(16) unsigned char fp8_gemv_smem[];
  __shared__ float partial[kGemvWarps][GLU ? 2 : 1][N];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int m = p.w.m, k = p.w.k, chunks = k / 16, groups = fp8_blocks(k), sld = fp8_scale_ld(k);
  const int row = blockIdx.x * (kGemvWarps / SPLIT) + warp / SPLIT, part = warp % SPLIT;
  const bool active = row < m;
  const int begin = part * chunks / SPLIT, end = (part + 1) * chunks / SPLIT;
  const int r = active ? row : 0;
  const uint4* w0 = reinterpret_cast<const uint4*>(p.w.codes + static_cast<int64_t>(r) * k);
  const uint4* w1 = GLU ? reinterpret_cast<const uint4*>(p.up.codes + static_cast<int64_t>(r) * k) : w0;
  const float* s0 = p.w.scales + static_cast<int64_t>(r / kFp8Block) * sld;
  const float* s1 = GLU ? p.up.scales + static_cast<int64_t>(r / kFp8Block) * sld : s0;
  __half* xs = reinterpret_cast<__half*>(fp8_gemv_smem);
  float* xsc = reinterpret_cast<float*>(fp8_gemv_smem + static_cast<size_t>(N) * k * sizeof(__half));

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
  int c0 = begin + lane;
  load(c0);

  // Stage the input: codes -> halves (exact), 16 per thread and step; the scales, token index fastest.
  for (int j = threadIdx.x; j < N * chunks; j += blockDim.x) {
    const int t = j / chunks, c = j % chunks;
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p.x_codes + static_cast<int64_t>(t) * k) + c);
    const __nv_fp8x2_storage_t* pairs = reinterpret_cast<const __nv_fp8x2_storage_t*>(&raw);
    __half2 h[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) h[e] = __half2(__nv_cvt_fp8x2_to_halfraw2(pairs[e], __NV_E4M3));
    uint4* dst = reinterpret_cast<uint4*>(xs + static_cast<int64_t>(t) * k + 16 * c);
    dst[0] = *reinterpret_cast<const uint4*>(&h[0]);
    dst[1] = *reinterpret_cast<const uint4*>(&h[4]);
  }
  for (int j = threadIdx.x; j < N * groups; j += blockDim.x) {
    const int t = j / groups, g = j % groups;
    xsc[j] = p.x_scales[static_cast<int64_t>(g) * N + t];
  }
  __syncthreads();

  float acc0[N], acc1[N];
#pragma unroll
  for (int t = 0; t < N; ++t) acc0[t] = acc1[t] = 0.0f;
  for (;;) {
#pragma unroll
    for (int u = 0; u < kGemvDepth; ++u) {
      const int c = c0 + 32 * u;
      if (!active || c >= end) continue;
      const int g = c / (kFp8Block / 16);
      float wf[16];
      decode16(wv0[u], wf);
      const float ws0 = __ldg(s0 + g);
#pragma unroll
      for (int t = 0; t < N; ++t) acc0[t] += dot16(wf, xs + static_cast<int64_t>(t) * k + 16 * c) * (xsc[t * groups + g] * ws0);
      if constexpr (GLU) {
        decode16(wv1[u], wf);
        const float ws1 = __ldg(s1 + g);
#pragma unroll
        for (int t = 0; t < N; ++t) acc1[t] += dot16(wf, xs + static_cast<int64_t>(t) * k + 16 * c) * (xsc[t * groups + g] * ws1);
      }
    }
    c0 += 32 * kGemvDepth;
    if (c0 - lane >= end) break;
    load(c0);
  }

  if (!sum_split_row<N, SPLIT, GLU>(acc0, acc1, partial, warp, lane, part)) return;
  if (!active) return;
  const int ldy = p.ldy > 0 ? p.ldy : m;
#pragma unroll
  for (int t = 0; t < N; ++t) {
    if (lane != t) continue;
    if constexpr (GLU) {
      p.act[static_cast<int64_t>(t) * m + row] = __float2bfloat16(silu(acc0[t]) * acc1[t]);
    } else {
      float* y = p.y + static_cast<int64_t>(t) * ldy + row;
      *y = p.beta == 0.0f ? acc0[t] : p.beta * *y + acc0[t];
    }
  }
}

// ---- tensor-core decode GEMV (compute capability 8.9 and up)
//
// mma.sync m16n8k32 with e4m3 operands and f32 accumulation: the 16 x 32 A tile is 16 weight rows, the
// 32 x 8 B tile is up to 8 token rows of quantized activations (the missing ones zero), so the tensor
// cores multiply the codes as stored and no lane decodes a weight. A warp takes 16 rows and a run of
// whole 128-wide K blocks; per 64-byte slice of K, lane (g = lane / 4, t = lane % 4) loads 16 bytes of
// row g and of row g + 8 at K offset 16 t (each load instruction reads 64 contiguous bytes, two whole
// sectors, of each of 8 rows), and 16 bytes of token g's codes at the same offset. The dot product does
// not depend on the order of K, so the bytes a lane holds stand for the K positions the fragments name
// (A: bytes 0-3 and 4-7 of each row for columns 4t.. and 16+4t.. of the first mma, bytes 8-15 for the
// second; B the same bytes of the token), and every load is a plain 16-byte one. The products of one
// 128-wide block are summed by the tensor cores, then scaled by the token's group scale times the
// weight tile's scale and added in f32, as the reference does.
constexpr int kMmaDepth = 4;    // 64-byte slices in flight per warp
constexpr int kMmaMaxRows = 8;  // the n of m16n8k32

__device__ __forceinline__ void mma_e4m3(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();  // the launcher takes this kernel only on compute capability 8.9 and up
#endif
}

// Two mmas over one 64-byte slice: w0 = row g's 16 bytes, w1 = row g + 8's, x = the token's.
__device__ __forceinline__ void mma_slice(float (&acc)[4], const uint4& w0, const uint4& w1, const uint4& x) {
  const uint32_t a0[4] = {w0.x, w1.x, w0.y, w1.y};
  mma_e4m3(acc, a0, x.x, x.y);
  const uint32_t a1[4] = {w0.z, w1.z, w0.w, w1.w};
  mma_e4m3(acc, a1, x.z, x.w);
}

// grid ceil(row groups * split / 8), block 256: `split` warps share a group of 16 rows, each taking a
// run of K blocks; their sums meet in shared memory.
template <bool GLU>
__global__ void __launch_bounds__(256) fp8_gemv_mma_kernel(Fp8GemvParams p, int split) {
  __shared__ float partial[kGemvWarps][32][GLU ? 8 : 4];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int m = p.w.m, k = p.w.k, n = p.n, groups = fp8_blocks(k), sld = fp8_scale_ld(k), slices = (k + 63) / 64;
  const int rg = (blockIdx.x * kGemvWarps + warp) / split, part = warp % split;
  const int r0 = rg * 16;
  const bool active = r0 < m;
  const int gb = part * groups / split, ge = (part + 1) * groups / split;
  const int s_begin = 2 * gb, s_end = active ? min(2 * ge, slices) : s_begin;
  const bool row0 = active && r0 + g < m, row1 = active && r0 + g + 8 < m, tok = g < n;
  const uint8_t* w0 = p.w.codes + static_cast<int64_t>(row0 ? r0 + g : 0) * k + 16 * t;
  const uint8_t* w1 = p.w.codes + static_cast<int64_t>(row1 ? r0 + g + 8 : 0) * k + 16 * t;
  const uint8_t* u0 = GLU ? p.up.codes + static_cast<int64_t>(row0 ? r0 + g : 0) * k + 16 * t : w0;
  const uint8_t* u1 = GLU ? p.up.codes + static_cast<int64_t>(row1 ? r0 + g + 8 : 0) * k + 16 * t : w1;
  const uint8_t* xr = p.x_codes + static_cast<int64_t>(tok ? g : 0) * k + 16 * t;
  const float* ws = p.w.scales + static_cast<int64_t>(active ? r0 / kFp8Block : 0) * sld;
  const float* us = GLU ? p.up.scales + static_cast<int64_t>(active ? r0 / kFp8Block : 0) * sld : ws;
  const int tok0 = 2 * t, tok1 = 2 * t + 1;

  uint4 wa[kMmaDepth], wb[kMmaDepth], ua[GLU ? kMmaDepth : 1], ub[GLU ? kMmaDepth : 1], xv[kMmaDepth];
  const uint4 zero = make_uint4(0, 0, 0, 0);
  auto load = [&](int u, int slice) {
    const int c = 64 * slice + 16 * t;  // this lane's K offset
    const bool in = slice < s_end && c < k;
    wa[u] = in && row0 ? __ldg(reinterpret_cast<const uint4*>(w0 + 64 * slice)) : zero;
    wb[u] = in && row1 ? __ldg(reinterpret_cast<const uint4*>(w1 + 64 * slice)) : zero;
    if constexpr (GLU) {
      ua[u] = in && row0 ? __ldg(reinterpret_cast<const uint4*>(u0 + 64 * slice)) : zero;
      ub[u] = in && row1 ? __ldg(reinterpret_cast<const uint4*>(u1 + 64 * slice)) : zero;
    }
    xv[u] = in && tok ? __ldg(reinterpret_cast<const uint4*>(xr + 64 * slice)) : zero;
  };
#pragma unroll
  for (int u = 0; u < kMmaDepth; ++u) load(u, s_begin + u);

  float acc[4] = {0, 0, 0, 0}, acc_u[4] = {0, 0, 0, 0};
  float blk[4] = {0, 0, 0, 0}, blk_u[4] = {0, 0, 0, 0};
  for (int s0 = s_begin; s0 < s_end; s0 += kMmaDepth) {
#pragma unroll
    for (int u = 0; u < kMmaDepth; ++u) {
      const int slice = s0 + u;
      if (slice >= s_end) break;
      mma_slice(blk, wa[u], wb[u], xv[u]);
      if constexpr (GLU) mma_slice(blk_u, ua[u], ub[u], xv[u]);
      load(u, slice + kMmaDepth);
      if ((slice & 1) == 1 || slice + 1 == s_end) {  // the end of 128-wide block slice / 2
        const int gi = slice >> 1;
        const float x0 = tok0 < n ? p.x_scales[static_cast<int64_t>(gi) * n + tok0] : 0.0f;
        const float x1 = tok1 < n ? p.x_scales[static_cast<int64_t>(gi) * n + tok1] : 0.0f;
        const float w = __ldg(ws + gi);
        acc[0] += blk[0] * (x0 * w), acc[1] += blk[1] * (x1 * w);
        acc[2] += blk[2] * (x0 * w), acc[3] += blk[3] * (x1 * w);
        blk[0] = blk[1] = blk[2] = blk[3] = 0.0f;
        if constexpr (GLU) {
          const float wu = __ldg(us + gi);
          acc_u[0] += blk_u[0] * (x0 * wu), acc_u[1] += blk_u[1] * (x1 * wu);
          acc_u[2] += blk_u[2] * (x0 * wu), acc_u[3] += blk_u[3] * (x1 * wu);
          blk_u[0] = blk_u[1] = blk_u[2] = blk_u[3] = 0.0f;
        }
      }
    }
  }

  if (split > 1) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      partial[warp][lane][i] = acc[i];
      if constexpr (GLU) partial[warp][lane][GLU ? 4 + i : i] = acc_u[i];
    }
    __syncthreads();
    if (part != 0) return;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      acc[i] = acc_u[i] = 0.0f;
      for (int q = 0; q < split; ++q) {
        acc[i] += partial[warp + q][lane][i];
        if constexpr (GLU) acc_u[i] += partial[warp + q][lane][GLU ? 4 + i : i];
      }
    }
  }
  if (!active) return;
  const int ldy = p.ldy > 0 ? p.ldy : m;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = r0 + g + 8 * (i >> 1), token = 2 * t + (i & 1);
    if (row >= m || token >= n) continue;
    if constexpr (GLU) {
      p.act[static_cast<int64_t>(token) * m + row] = __float2bfloat16(silu(acc[i]) * acc_u[i]);
    } else {
      float* y = p.y + static_cast<int64_t>(token) * ldy + row;
      *y = p.beta == 0.0f ? acc[i] : p.beta * *y + acc[i];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// launchers

// Largest shared-memory stage of the GEMV (the input rows as halves and their scales); above 48 KB
// the kernel is opted in. 96 KB fits every GPU from compute capability 8.0 up.
constexpr size_t kGemvSmemMax = 96 * 1024;

size_t gemv_smem_bytes(int n, int k) {
  return static_cast<size_t>(n) * k * sizeof(__half) + static_cast<size_t>(n) * fp8_blocks(k) * sizeof(float);
}

template <int N, int SPLIT, bool GLU>
void launch_gemv_as(const Fp8GemvParams& p, size_t smem, dim3 grid, cudaStream_t s) {
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(fp8_gemv_kernel<N, SPLIT, GLU>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  fp8_gemv_kernel<N, SPLIT, GLU><<<grid, 32 * kGemvWarps, smem, s>>>(p);
}
template <int N, int SPLIT>
void launch_gemv_glu(const Fp8GemvParams& p, size_t smem, dim3 grid, cudaStream_t s) {
  p.act ? launch_gemv_as<N, SPLIT, true>(p, smem, grid, s) : launch_gemv_as<N, SPLIT, false>(p, smem, grid, s);
}
template <int N>
void launch_gemv_split(const Fp8GemvParams& p, int split, size_t smem, dim3 grid, cudaStream_t s) {
  switch (split) {
    case 1: launch_gemv_glu<N, 1>(p, smem, grid, s); break;
    case 2: launch_gemv_glu<N, 2>(p, smem, grid, s); break;
    case 4: launch_gemv_glu<N, 4>(p, smem, grid, s); break;
    default: throw std::invalid_argument("fp8_gemv: " + std::to_string(split) + " warps per row");
  }
}

void lt_check(cublasStatus_t st, const char* call) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLASLt: ") + call + ": " + cublasGetStatusString(st));
}

}  // namespace

void fp8_quantize(const Fp8QuantizeParams& p, cudaStream_t s) {
  if (p.n_pad <= 0) return;
  if (p.n_pad < p.n) throw std::invalid_argument("fp8_quantize: n_pad < n");
  if (p.k <= 0) throw std::invalid_argument("fp8_quantize: k must be positive");
  if ((p.x == nullptr) == (p.x_f32 == nullptr) || (p.x_f32 != nullptr) != (p.norm_w != nullptr))
    throw std::invalid_argument("fp8_quantize: give x, or x_f32 with norm_w");
  const dim3 grid(static_cast<unsigned>(p.n_pad), static_cast<unsigned>((fp8_blocks(p.k) + 7) / 8));
  fp8_quantize_kernel<<<grid, 256, 0, s>>>(p);
}

void fp8_dequantize(const Fp8Matrix& w, bf16* out, cudaStream_t s) {
  if (w.m <= 0) return;
  if (w.k % 16 != 0) throw std::invalid_argument("fp8_dequantize: k % 16 != 0");
  const int64_t chunks = static_cast<int64_t>(w.m) * (w.k / 16);
  fp8_dequantize_kernel<<<static_cast<unsigned>((chunks + 255) / 256), 256, 0, s>>>(w, out);
}

static bool tensor_core_device(const DeviceCaps& dev) { return dev.sm_major * 10 + dev.sm_minor >= 89; }

int fp8_gemv_max_rows(const DeviceCaps& dev) { return tensor_core_device(dev) ? kMmaMaxRows : kFp8GemvMaxRows; }

// One row streams faster on the CUDA cores (a 16 x 8 tensor-core tile would be one eighth used, and the
// warp's 16 rows read as 64-byte pieces); two and more on the tensor cores, where the device has them.
bool fp8_gemv_tensor_cores(int n, const DeviceCaps& dev) { return n >= 2 && tensor_core_device(dev); }

bool fp8_gemv_supports(int n, int k, const DeviceCaps& dev) {
  if (n < 1 || k <= 0 || k % 16 != 0) return false;
  if (fp8_gemv_tensor_cores(n, dev)) return n <= kMmaMaxRows;
  return n <= kFp8GemvMaxRows && gemv_smem_bytes(n, k) <= kGemvSmemMax;
}

void fp8_gemv(const Fp8GemvParams& p, const DeviceCaps& dev, cudaStream_t s) {
  if (p.n <= 0 || p.w.m <= 0) return;
  if (!fp8_gemv_supports(p.n, p.w.k, dev))
    throw std::invalid_argument("fp8_gemv: " + std::to_string(p.n) + " rows of width " + std::to_string(p.w.k));
  if (p.act && (p.up.m != p.w.m || p.up.k != p.w.k)) throw std::invalid_argument("fp8_gemv: gate and up shapes differ");
  if (fp8_gemv_tensor_cores(p.n, dev)) {
    // Warps split K until the grid holds about eight warps per multiprocessor (a whole K block each).
    const int64_t row_groups = (p.w.m + 15) / 16, target = 8 * static_cast<int64_t>(dev.multiprocessors);
    int split = 1;
    while (split < kGemvWarps && row_groups * split < target && 2 * split <= fp8_blocks(p.w.k)) split *= 2;
    const dim3 grid(static_cast<unsigned>((row_groups * split + kGemvWarps - 1) / kGemvWarps));
    if (p.act) fp8_gemv_mma_kernel<true><<<grid, 32 * kGemvWarps, 0, s>>>(p, split);
    else fp8_gemv_mma_kernel<false><<<grid, 32 * kGemvWarps, 0, s>>>(p, split);
    return;
  }
  const size_t smem = (gemv_smem_bytes(p.n, p.w.k) + 15) / 16 * 16;
  const int64_t target = 4 * static_cast<int64_t>(dev.multiprocessors);
  // Rows split between warps until the grid gives every multiprocessor about four blocks.
  int split = 1;
  while (split < 4 && (static_cast<int64_t>(p.w.m) * split + kGemvWarps - 1) / kGemvWarps < target) split *= 2;
  const int rows_per_block = kGemvWarps / split;
  const dim3 grid((p.w.m + rows_per_block - 1) / rows_per_block);
  switch (p.n) {
    case 1: launch_gemv_split<1>(p, split, smem, grid, s); break;
    case 2: launch_gemv_split<2>(p, split, smem, grid, s); break;
    default: throw std::invalid_argument("fp8_gemv: " + std::to_string(p.n) + " rows");
  }
}

// ---- cuBLASLt block-scaled FP8 GEMM
//
// Row-major y (n, m) = x (n, k) . W (m, k)^T is, column-major, D (m, n) = op(A) B with A = W seen as
// (k, m) and transposed, B = x seen as (k, n): the "TN" form FP8 requires. A's scales are the weight
// tiles (BLK128x128_32F: K blocks fastest, a stride of a multiple of 4), B's the activation groups
// (VEC128_32F: N-major, (L, n)); C = D = y in f32, so beta = 1 adds into the residual stream.

struct Fp8BlockGemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
  ~Plan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

Fp8BlockGemm::Fp8BlockGemm(void* workspace, size_t bytes) : workspace_(workspace), workspace_bytes_(bytes) {
  cublasLtHandle_t h = nullptr;
  lt_check(cublasLtCreate(&h), "cublasLtCreate");
  handle_ = h;
}

Fp8BlockGemm::~Fp8BlockGemm() {
  plans_.clear();
  if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

Fp8BlockGemm::Plan* Fp8BlockGemm::plan(int m, int k, int n_pad, int ldy) {
  const auto key = std::make_tuple(m, k, n_pad, ldy);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();
  auto p = std::make_unique<Plan>();
  Plan* raw = p.get();
  plans_.emplace(key, std::move(p));
  // Shapes cuBLASLt documents as unsupported are refused here without asking.
  if (m <= 0 || k <= 0 || n_pad <= 0 || m % 4 != 0 || k % 16 != 0 || n_pad % 16 != 0 || ldy < m || ldy % 4 != 0)
    return raw;
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess)
    return raw;
  if (major != 9) return raw;  // the 128-element and 128x128 block modes are Hopper's (cuBLAS docs)
  auto h = static_cast<cublasLtHandle_t>(handle_);
  lt_check(cublasLtMatmulDescCreate(&raw->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  lt_check(cublasLtMatmulDescSetAttribute(raw->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "TRANSA");
  lt_check(cublasLtMatmulDescSetAttribute(raw->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "TRANSB");
  const int32_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  lt_check(cublasLtMatmulDescSetAttribute(raw->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof(a_mode)), "A_SCALE_MODE");
  lt_check(cublasLtMatmulDescSetAttribute(raw->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof(b_mode)), "B_SCALE_MODE");
  // Scale pointers must be set for the heuristic to see the block-scaled problem; run() sets the real ones.
  const void* dummy = workspace_;
  lt_check(cublasLtMatmulDescSetAttribute(raw->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dummy, sizeof(dummy)), "A_SCALE_POINTER");
  lt_check(cublasLtMatmulDescSetAttribute(raw->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dummy, sizeof(dummy)), "B_SCALE_POINTER");
  lt_check(cublasLtMatrixLayoutCreate(&raw->a, CUDA_R_8F_E4M3, k, m, k), "layout A");
  lt_check(cublasLtMatrixLayoutCreate(&raw->b, CUDA_R_8F_E4M3, k, n_pad, k), "layout B");
  lt_check(cublasLtMatrixLayoutCreate(&raw->d, CUDA_R_32F, m, n_pad, ldy), "layout D");
  cublasLtMatmulPreference_t pref = nullptr;
  lt_check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  const size_t ws = workspace_bytes_;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(h, raw->desc, raw->a, raw->b, raw->d, raw->d, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    raw->algo = result.algo;
    raw->ok = true;
  }
  return raw;
}

bool Fp8BlockGemm::supports(int m, int k, int n_pad, int ldy) { return plan(m, k, n_pad, ldy)->ok; }

void Fp8BlockGemm::run(const Fp8GemmArgs& a, cudaStream_t s) {
  const int ldy = a.ldy > 0 ? a.ldy : a.w.m;
  Plan* p = plan(a.w.m, a.w.k, a.n_pad, ldy);
  if (!p->ok)
    throw std::runtime_error("cuBLASLt has no block-scaled FP8 algorithm for m=" + std::to_string(a.w.m) + " k=" +
                             std::to_string(a.w.k) + " n=" + std::to_string(a.n_pad) + " ldy=" + std::to_string(ldy));
  lt_check(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a.w.scales, sizeof(a.w.scales)),
           "A_SCALE_POINTER");
  lt_check(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &a.x_scales, sizeof(a.x_scales)),
           "B_SCALE_POINTER");
  const float alpha = 1.0f, beta = a.beta;
  lt_check(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), p->desc, &alpha, a.w.codes, p->a, a.x_codes, p->b, &beta,
                          a.y, p->d, a.y, p->d, &p->algo, workspace_, workspace_bytes_, s),
           "cublasLtMatmul");
}

}  // namespace abridge::kernels
