// Device helpers the kernels share: warp and block reductions, SiLU, the RMS-norm pieces that the norm
// and GEMV kernels both write, and PTX wrappers (cp.async, ldmatrix, mma.sync). One copy for ops,
// fp8 and the Hopper kernels; include it from .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cfloat>
#include <cstdint>

namespace abridge::kernels {

// ---- reductions (warps of 32 lanes; blocks of up to 32 warps)

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; every thread gets the result. `scratch` holds 32 floats.
__device__ inline float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

// Maximum over the block; every thread gets the result. `scratch` holds 32 floats.
__device__ inline float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : -FLT_MAX;
  return warp_max(v);
}

// ---- element-wise pieces

__device__ __forceinline__ float silu(float x) { return x / (1.0f + __expf(-x)); }

__device__ __forceinline__ float sum_squares(const float4& v) { return v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w; }

// Four elements of an RMS-normalized row as bf16: w * (x * scale), as rms_norm_kernel writes each.
__device__ __forceinline__ void store_normalized(__nv_bfloat162* out, const float4& x, const float4& w, float scale) {
  out[0] = __floats2bfloat162_rn(w.x * (x.x * scale), w.y * (x.y * scale));
  out[1] = __floats2bfloat162_rn(w.z * (x.z * scale), w.w * (x.w * scale));
}

// ---- PTX: shared-memory addresses, ldmatrix, mma.sync m16n8k16 bf16, cp.async (sm_80 and newer)

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void mma_bf16(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const int bytes = valid ? 16 : 0;  // 0: fill with zeros
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(bytes));
}
// Four bytes (cp.async.ca: 4-byte copies go through L1), zeros when !valid.
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(valid ? 4 : 0));
}
// The same for a shared-memory address already converted (smem_u32), as the Hopper kernels compute them.
__device__ __forceinline__ void cp_async16(uint32_t smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ---- the end of a decode GEMV (kernels/gemv.cu, kernels/fp8.cu)

// Each output row is streamed by SPLIT neighbouring warps of the block: every lane holds partial dot
// products with N input rows (acc0; with GLU the up rows' in acc1). Sums them over the warp, then over
// the row's SPLIT warps through `partial` (shared memory) into the row's first warp (warp % SPLIT == 0,
// part 0). Returns false in the other warps, which write nothing. Every thread of the block calls it
// (with SPLIT > 1 it holds a barrier).
template <int N, int SPLIT, bool GLU, int WARPS>
__device__ __forceinline__ bool sum_split_row(float (&acc0)[N], float (&acc1)[N], float (&partial)[WARPS][GLU ? 2 : 1][N],
                                              int warp, int lane, int part) {
#pragma unroll
  for (int t = 0; t < N; ++t) {
    acc0[t] = warp_sum(acc0[t]);
    if constexpr (GLU) acc1[t] = warp_sum(acc1[t]);
  }
  if constexpr (SPLIT > 1) {
    if (lane == 0) {
#pragma unroll
      for (int t = 0; t < N; ++t) {
        partial[warp][0][t] = acc0[t];
        if constexpr (GLU) partial[warp][GLU ? 1 : 0][t] = acc1[t];
      }
    }
    __syncthreads();
    if (part != 0) return false;
#pragma unroll
    for (int t = 0; t < N; ++t) {
      acc0[t] = acc1[t] = 0.0f;
#pragma unroll
      for (int q = 0; q < SPLIT; ++q) {
        acc0[t] += partial[warp + q][0][t];
        if constexpr (GLU) acc1[t] += partial[warp + q][GLU ? 1 : 0][t];
      }
    }
  }
  return true;
}

// ---- e4m3fn (engine/fp8.h's format)

// e4m3fn code of v: round to nearest even, saturating at +-448 (engine/fp8.h's f32_to_e4m3).
__device__ __forceinline__ uint8_t encode_e4m3(float v) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}
__device__ __forceinline__ float decode_e4m3(uint8_t code) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(code, __NV_E4M3)));
}
// Eight codes (one 8-byte load) times s, rounded to bf16: eight bf16 values (16 bytes).
__device__ __forceinline__ uint4 e4m3x8_to_bf16(const uint2& raw, float s) {
  const __nv_fp8x2_storage_t* pairs = reinterpret_cast<const __nv_fp8x2_storage_t*>(&raw);
  uint32_t o[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float2 f = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(pairs[e], __NV_E4M3)));
    const __nv_bfloat162 v = __floats2bfloat162_rn(f.x * s, f.y * s);
    o[e] = *reinterpret_cast<const uint32_t*>(&v);
  }
  return make_uint4(o[0], o[1], o[2], o[3]);
}
// The same on the integer and bf16x2 pipes, for readers of many codes (the FP8 KV cache's attention
// kernels; the conversions above run on a slower pipe): the code's bits moved into a bf16 are its value
// times 2^-120 exactly (e4m3's bias 7 against bf16's 127; its subnormals land on bf16's), and one bf16x2
// multiply by s2 = bf16(s * 2^120) scales them. So the result is bf16(decode(code) * s) up to the
// rounding of s to bf16 (2^-9 relative, the same for every value of the head). s2 must be finite:
// callers take e4m3x8_to_bf16 for s >= 2^7. NaN codes (never written: the encoder saturates) read as
// finite values.
__device__ __forceinline__ uint4 e4m3x8_to_bf16_scaled2(const uint2& raw, __nv_bfloat162 s2) {
  uint32_t o[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const uint32_t word = e < 2 ? raw.x : raw.y;
    const uint32_t a = __byte_perm(word, 0, (e & 1) ? 0x4342 : 0x4140);  // bytes [0, c_hi, 0, c_lo]
    const uint32_t bits = ((a << 4) & 0x07F007F0u) | ((a << 8) & 0x80008000u);
    const __nv_bfloat162 v = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&bits), s2);
    o[e] = *reinterpret_cast<const uint32_t*>(&v);
  }
  return make_uint4(o[0], o[1], o[2], o[3]);
}
// Sixteen codes (one 16-byte load) times s, rounded to bf16, to dst (32 bytes, 16-byte aligned).
__device__ __forceinline__ void e4m3x16_to_bf16(const uint4& raw, float s, __nv_bfloat16* dst) {
  reinterpret_cast<uint4*>(dst)[0] = e4m3x8_to_bf16(make_uint2(raw.x, raw.y), s);
  reinterpret_cast<uint4*>(dst)[1] = e4m3x8_to_bf16(make_uint2(raw.z, raw.w), s);
}

}  // namespace abridge::kernels
