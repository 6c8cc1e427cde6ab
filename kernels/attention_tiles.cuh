// The pieces the prefill (attention_prefill.cu) and decode (attention.cu) attention kernels share: the
// mma.sync tile products and the online softmax's bookkeeping, and the FP8 cache's staging and decoding
// (kernels/ops.h AttentionParams). Include from .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/device_helpers.cuh"
#include "kernels/ops.h"

namespace abridge::kernels {

// The prefill half of attention(): p's tiles on the Hopper kernel or the mma.sync one (nothing when
// p.n_tiles is 0). Throws std::invalid_argument for a head size without a tensor-core kernel.
void attention_prefill_tiles(const AttentionParams& p, const DeviceCaps& dev, cudaStream_t s);

namespace attention_tiles {

// The FP8 cache's scale of a scale byte (QkvParams): 2^(byte - 127), 0 for byte 0.
__device__ __forceinline__ float kv_scale(uint8_t byte) { return __uint_as_float(static_cast<uint32_t>(byte) << 23); }

// S (16 rows, 8 NT keys) f32 = Q K^T for one warp: Q as mma A fragments (16 rows, HD), K rows in
// shared memory `stride` elements apart, read as B fragments with ldmatrix.
template <int HD, int NT>
__device__ __forceinline__ void qk_product(float (&sc)[NT][4], const uint32_t (&qf)[HD / 16][4], const bf16* k_s,
                                           int stride, int lane) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0;
#pragma unroll
    for (int ks = 0; ks < HD / 16; ks += 2) {
      uint32_t b0, b1, b2, b3;
      ldmatrix_x4(b0, b1, b2, b3, smem_u32(k_s + (nt * 8 + (lane & 7)) * stride + ks * 16 + (lane >> 3) * 8));
      mma_bf16(sc[nt], qf[ks], b0, b1);
      mma_bf16(sc[nt], qf[ks + 1], b2, b3);
    }
  }
}

// The online softmax's bookkeeping for one warp's two rows (g and g + 8 of its 16): the row sums of
// this tile's probabilities, spread over the four lanes of a row, are summed and added to the running
// sums l rescaled by alpha; rescale_rows() applies the same alpha to the output rows.
__device__ __forceinline__ void add_row_sums(float (&sum)[2], float (&l)[2], const float (&alpha)[2]) {
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    sum[j] += __shfl_xor_sync(0xffffffffu, sum[j], 1);
    sum[j] += __shfl_xor_sync(0xffffffffu, sum[j], 2);
    l[j] = l[j] * alpha[j] + sum[j];
  }
}
template <int HD>
__device__ __forceinline__ void rescale_rows(float (&o)[HD / 8][4], const float (&alpha)[2]) {
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) o[d][0] *= alpha[0], o[d][1] *= alpha[0], o[d][2] *= alpha[1], o[d][3] *= alpha[1];
}

// O (16 rows, HD) f32 += P V for one warp and 16 keys: P from two 8-key accumulator tiles of S (whose
// layout is the A-operand layout once packed to bf16), V rows in shared memory `stride` elements
// apart, read transposed as B fragments with ldmatrix.
template <int HD>
__device__ __forceinline__ void pv_product(float (&o)[HD / 8][4], const float (&p0)[4], const float (&p1)[4],
                                           const bf16* v_s, int stride, int lane) {
  const uint32_t a[4] = {pack_bf16(p0[0], p0[1]), pack_bf16(p0[2], p0[3]), pack_bf16(p1[0], p1[1]),
                         pack_bf16(p1[2], p1[3])};
#pragma unroll
  for (int dt = 0; dt < HD / 8; dt += 2) {
    uint32_t b0, b1, b2, b3;
    ldmatrix_x4_trans(b0, b1, b2, b3,
                      smem_u32(v_s + ((lane & 7) + ((lane >> 3) & 1) * 8) * stride + dt * 8 + (lane >> 4) * 8));
    mma_bf16(o[dt], a, b0, b1);
    mma_bf16(o[dt + 1], a, b2, b3);
  }
}

// The FP8 cache (AttentionParams::k_fp8): `rows` staged rows of HD codes (HD bytes apart) with one
// scale each, decoded times their scale into bf16 rows `stride` elements apart, by threads
// [first, first + count) of those that share the rows.
// Eight codes a thread per pass, so that neighbouring threads read neighbouring 8 bytes and write
// neighbouring 16 (no bank conflicts), on the integer and bf16x2 pipes (e4m3x8_to_bf16_scaled2, whose
// bf16 factor 2^(byte - 7) is exact: a scale byte up to 134, 2^7); larger scales the slow exact way.
// Each staged row's scale is byte `shift / 8` of its 4-byte word.
template <int HD>
__device__ __forceinline__ void decode_fp8_rows(const uint8_t* codes, const uint32_t* scale_words, int shift, bf16* out,
                                                int stride, int rows, int first, int count) {
  constexpr int kChunks = HD / 8;  // 8 codes per 8-byte load
  for (int e = first; e < rows * kChunks; e += count) {
    const int r = e / kChunks, c = e % kChunks;
    const uint2 raw = *reinterpret_cast<const uint2*>(codes + r * HD + c * 8);
    const uint32_t byte = (scale_words[r] >> shift) & 0xFFu;
    uint4 v;
    if (byte <= 134) {
      const uint32_t s2 = ((byte + 120) << 7) * 0x10001u;  // bf16x2 {2^(byte - 7), 2^(byte - 7)}
      v = e4m3x8_to_bf16_scaled2(raw, *reinterpret_cast<const __nv_bfloat162*>(&s2));
    } else {
      v = e4m3x8_to_bf16(raw, kv_scale(static_cast<uint8_t>(byte)));
    }
    *reinterpret_cast<uint4*>(out + r * stride + c * 8) = v;
  }
}

// Starts the copy (cp.async) of one staged FP8 row: `chunk` (16 codes) of the codes at cache row `row`
// (-1: zeros), and with chunk 0 the 4-byte word of its scale row that holds KV head kvh's byte
// (decode_fp8_rows takes byte kvh % 4).
template <int HD>
__device__ __forceinline__ void stage_fp8_chunk(const uint8_t* codes, const uint8_t* scales, int64_t row, int n_kv_heads,
                                                int kvh, int chunk, uint8_t* codes_s, uint32_t* scale_s) {
  const int64_t r = row >= 0 ? row : 0;
  cp_async16(codes_s + chunk * 16, codes + (r * n_kv_heads + kvh) * HD + chunk * 16, row >= 0);
  if (chunk == 0) cp_async4(scale_s, scales + r * kv_scale_row_bytes(n_kv_heads) + (kvh & ~3), row >= 0);
}

}  // namespace attention_tiles
}  // namespace abridge::kernels
