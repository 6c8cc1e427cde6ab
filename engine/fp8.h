// FP8 e4m3 arithmetic for block-wise quantized checkpoints (engine/quantization.h has the format),
// the CPU reference of what transformers' fine-grained FP8 path, vLLM and SGLang compute:
//
//   weights      W (out, in) ~= decode(Wq) * scale_inv[r / 128][c / 128]   (one scale per 128x128 tile)
//   activations  x (n, k): per token, per 128-wide group g along k, s[i][g] = amax(|x[i][g]|) / 448 (f32),
//                xq = e4m3(x / s)
//   product      y[i][j] = sum over groups g of (sum_{c in g} decode(xq[i][c]) * decode(Wq[j][c]))
//                                              * s[i][g] * scale_inv[j / 128][g]
//                accumulated in f32, both scales applied once per 128-wide K block.
//
// e4m3 here is the "fn" variant (float8_e4m3fn): 1 sign, 4 exponent (bias 7) and 3 mantissa bits, no
// infinities, NaN = S.1111.111, largest finite 448, smallest subnormal 2^-9. Encoding rounds to nearest,
// ties to even; finite values beyond +-448 and +-Inf saturate to +-448 (as CUDA's .satfinite conversion);
// NaN stays NaN.
//
// Error bounds (what the tests check):
//   - encode: |v - decode(encode(v))| <= 2^-4 |v| for 2^-6 <= |v| <= 448 (half an ulp of 3 mantissa
//     bits), <= 2^-10 below 2^-6 (subnormal spacing 2^-9, halved);
//   - a quantized group or tile with scale s = amax / 448: every element's error is at most
//     max(|v| / 16, s * 2^-10), so at most amax / 16;
//   - the product of quantized operands, computed here in f32, differs from the exact (double) sum of the
//     same quantized operands by at most about k * 2^-23 * sum |terms| (f32 accumulation).
// An all-zero activation group gets scale 0 and zero codes (it contributes 0; transformers' kernel would
// divide 0 by 0 here and later zero the NaN).
#pragma once

#include <cstdint>
#include <vector>

#include "base/fp8_kv.h"

namespace abridge::engine {

inline constexpr int64_t kFp8Block = 128;    // the only block size supported (tiles 128x128, groups 128)
inline constexpr float kE4M3Max = 448.0f;    // largest finite e4m3fn value

// Encodes one float as e4m3fn (round to nearest even, saturating at +-448; NaN -> 0x7F with the sign).
uint8_t f32_to_e4m3(float v);
// Decodes one e4m3fn code exactly (0x7F and 0xFF are NaN).
float e4m3_to_f32(uint8_t code);

inline int64_t fp8_blocks(int64_t n) { return (n + kFp8Block - 1) / kFp8Block; }

// Quantizes a (rows, cols) float matrix in 128x128 tiles: q (rows, cols) e4m3 codes and
// scale_inv (fp8_blocks(rows), fp8_blocks(cols)) f32 with W ~= decode(q) * scale_inv. A tile's scale is
// amax / 448, or 1 for an all-zero tile (the format requires positive scales).
void quantize_tiles(const float* w, int64_t rows, int64_t cols, uint8_t* q, float* scale_inv);
// out (rows, cols) = decode(q) * scale_inv of the element's tile.
void dequantize_tiles(const uint8_t* q, const float* scale_inv, int64_t rows, int64_t cols, float* out);

// A linear layer's FP8 weight, held for the CPU backend: the codes decoded to float (exact), unscaled,
// and the tile scales. The decoded form trades bytes for a plain f32 inner loop.
struct Fp8Matrix {
  int64_t rows = 0, cols = 0;     // (out_features, in_features)
  std::vector<float> q;           // (rows, cols) decode(code), unscaled
  std::vector<float> scale_inv;   // (fp8_blocks(rows), fp8_blocks(cols))
  bool empty() const { return rows == 0; }
};

// The activations of n tokens quantized per token in 128-wide groups along k.
struct Fp8Activations {
  int64_t n = 0, k = 0;
  std::vector<float> q;      // (n, k) decode(code), unscaled
  std::vector<float> scale;  // (n, fp8_blocks(k)) amax / 448 of each group, f32
};

// Quantizes x (n, k) into `out` (resized; reuse it to avoid allocation).
void quantize_activations(const float* x, int64_t n, int64_t k, Fp8Activations& out);

// The FP8 KV cache (engine/config.h, KvCacheDtype::kFp8) keeps one scale per token and KV head: the
// smallest power of two 2^E with amax(|v|) <= 448 * 2^E, so no value saturates, stored in one byte as
// its biased exponent E + 127 (base/fp8_kv.h fp8_kv_scale_byte, the rule the CUDA kernels follow too).
// The scale a byte stands for: 2^(byte - 127), or 0 for byte 0 (exact as a float).
float fp8_kv_scale(uint8_t byte);
// One token's values of one KV head as the FP8 cache holds them, in place: v[i] = decode(encode(v[i] /
// scale)) * scale with the scale above; each value within max(|v| / 16, scale * 2^-10) of what it was
// (scale < 2 amax / 448, so never more than amax / 16). Returns the scale's byte, as the CUDA cache
// stores it.
uint8_t fp8_kv_round_trip(float* v, int64_t n);

// out[i * m + j] for every token i and output features j in [j_begin, j_end), m = w.rows; a.k == w.cols.
void fp8_linear(const Fp8Activations& a, const Fp8Matrix& w, float* out, int64_t j_begin, int64_t j_end);

}  // namespace abridge::engine
