// Block-scaled FP8 (e4m3) linear layers on the GPU: the arithmetic of engine/fp8.h (weights in 128x128
// tiles with one f32 scale each, activations quantized per token in 128-wide groups with scale
// amax / 448, f32 sums with both scales applied once per 128-wide K block), as four pieces:
//
//   fp8_quantize()      activations (bf16, or f32 RMS-normalized on the way) -> e4m3 codes + group
//                       scales, bit for bit the CPU's quantize_activations() on the same bf16 values;
//   fp8_gemv()          decode steps (up to 8 token rows): one pass over the weight codes;
//   Fp8BlockGemm        larger steps on Hopper: cuBLASLt's block-scaled FP8 matmul (1x128 activation
//                       groups, 128x128 weight tiles), float32 accumulation and output;
//   fp8_dequantize()    elsewhere (sm_80..89, or where cuBLASLt has no algorithm): the weight tiles
//                       dequantized to bf16 for a bf16 GEMM, whose input is the activations quantized
//                       and dequantized again (fp8_quantize's `dequantized` output). That product is the
//                       reference's up to bf16 rounding of the two scaled operands (each |error| <=
//                       2^-9 relative), where the reference applies the scales in f32 after each K block.
//
// Layouts (what cuBLASLt's VEC128_32F and BLK128x128_32F modes read, so that one copy serves every path):
//   weight codes    (m, k) row-major, one byte per e4m3fn code; k % 16 == 0
//   weight scales   (fp8_blocks(m), fp8_scale_ld(k)) row-major f32: tile (r / 128, c / 128); the row
//                   stride is rounded up to 4 floats (cuBLASLt wants 16-byte aligned columns there)
//   act codes       (n_pad, k) row-major
//   act scales      (fp8_blocks(k), n_pad) f32, token index fastest: group g of token i at g * n_pad + i
// An all-zero activation group has scale 0 and zero codes (engine/fp8.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "kernels/device.h"

namespace abridge::kernels {

using bf16 = __nv_bfloat16;

inline constexpr int kFp8Block = 128;
inline constexpr int fp8_blocks(int n) { return (n + kFp8Block - 1) / kFp8Block; }
// Row stride of a weight's tile scales: the K blocks rounded up to a multiple of 4.
inline constexpr int fp8_scale_ld(int k) { return (fp8_blocks(k) + 3) / 4 * 4; }
// Token rows the block-scaled GEMM runs on: n rounded up to 16 (cuBLASLt's FP8 kernels want 16-byte
// aligned dimensions); fp8_quantize() zeroes the padding rows, so their products are 0.
inline constexpr int fp8_gemm_rows(int n) { return (n + 15) / 16 * 16; }

// A block-scaled FP8 weight on the device (layouts above). A view: rows [r0, r0 + m) of a larger matrix
// are a matrix too when r0 % 128 == 0 (codes + r0 * k, scales + r0 / 128 * fp8_scale_ld(k)).
struct Fp8Matrix {
  const uint8_t* codes = nullptr;  // (m, k) e4m3fn
  const float* scales = nullptr;   // (fp8_blocks(m), fp8_scale_ld(k)) f32
  int m = 0, k = 0;
  Fp8Matrix rows(int r0, int count) const;  // r0 % 128 == 0
};

// Activations -> FP8, one block per token row. The input is x (n, k) bf16, or, with norm_w set, the RMS
// norm of the float rows x_f32 (n, k) (y = bf16(w * (x * rsqrt(mean(x^2) + eps))), as rms_norm() rounds
// it). Outputs, each optional: codes (n_pad, k) and scales (fp8_blocks(k), n_pad), rows n..n_pad-1 zero;
// dequantized (n, k) bf16 = bf16(decode(code) * scale), the activations as the FP8 product sees them.
struct Fp8QuantizeParams {
  const bf16* x = nullptr;
  const float* x_f32 = nullptr;
  const float* norm_w = nullptr;  // (k)
  float eps = 0.0f;
  int n = 0, n_pad = 0, k = 0;
  uint8_t* codes = nullptr;
  float* scales = nullptr;
  bf16* dequantized = nullptr;
};
void fp8_quantize(const Fp8QuantizeParams& p, cudaStream_t s);

// out (m, k) bf16 = decode(code) * tile scale (rounded to bf16).
void fp8_dequantize(const Fp8Matrix& w, bf16* out, cudaStream_t s);

// Decode-step products over FP8 weights, from activations quantized by fp8_quantize() (n_pad == n):
// y (n, ldy) f32 = x . w^T + beta * y (columns [0, w.m) of each row), or, with act set,
// act (n, w.m) bf16 = silu(x . w^T) * (x . up^T). On compute capability 8.9 and up the tensor cores
// multiply the codes (one warp per 16 rows and a run of K blocks, 16-byte loads, several in flight).
// Elsewhere one warp (or 2 or 4 splitting a row, when the matrix is small) per output row streams the
// row's codes, and the block stages the quantized input rows in shared memory as halves (e4m3 values
// are exact there).
struct Fp8GemvParams {
  const uint8_t* x_codes = nullptr;  // (n, k)
  const float* x_scales = nullptr;   // (fp8_blocks(k), n)
  Fp8Matrix w;
  Fp8Matrix up;                      // GLU only: the up rows (same m, k)
  float* y = nullptr;
  int ldy = 0;                       // 0: w.m
  float beta = 0.0f;
  bf16* act = nullptr;
  int n = 0;
};
inline constexpr int kFp8GemvMaxRows = 2;
// Whether fp8_gemv() of n rows runs on the tensor cores on the current device (2..8 rows on compute
// capability 8.9 and up: mma.sync m16n8k32 over e4m3 codes, the tensor cores' sums within each
// 128-wide K block); else the CUDA-core kernel (up to kFp8GemvMaxRows rows, f32 sums throughout).
bool fp8_gemv_tensor_cores(int n, const DeviceCaps& dev);
// The most token rows fp8_gemv() takes on the current device: 8 on the tensor cores, else 2.
int fp8_gemv_max_rows(const DeviceCaps& dev);
// Whether fp8_gemv() takes n rows of width k (n <= fp8_gemv_max_rows(), k % 16 == 0; the CUDA-core
// kernel also needs the staged rows to fit in shared memory).
bool fp8_gemv_supports(int n, int k, const DeviceCaps& dev);
void fp8_gemv(const Fp8GemvParams& p, const DeviceCaps& dev, cudaStream_t s);

// y (n_pad, ldy) f32 = x . w^T + beta * y on cuBLASLt's block-scaled FP8 matmul (compute capability 9.0
// only; cuBLASLt offers no such algorithm elsewhere). Plans (descriptors and the chosen algorithm) are
// made once per shape and kept; none allocates device memory, so runs may be captured in CUDA graphs.
// Requirements (cuBLASLt's): n_pad % 16 == 0 (fp8_gemm_rows), m % 4 == 0, k % 16 == 0, ldy % 4 == 0,
// pointers 16-byte aligned.
struct Fp8GemmArgs {
  const uint8_t* x_codes = nullptr;  // (n_pad, k)
  const float* x_scales = nullptr;   // (fp8_blocks(k), n_pad)
  Fp8Matrix w;
  float* y = nullptr;
  int ldy = 0;
  float beta = 0.0f;
  int n_pad = 0;
};
class Fp8BlockGemm {
 public:
  // workspace: device memory of `bytes` (256-byte aligned) that runs may use, stream-ordered.
  Fp8BlockGemm(void* workspace, size_t bytes);
  ~Fp8BlockGemm();
  Fp8BlockGemm(const Fp8BlockGemm&) = delete;
  Fp8BlockGemm& operator=(const Fp8BlockGemm&) = delete;

  // Whether cuBLASLt has an algorithm for this shape on the current device (asked once, then kept).
  bool supports(int m, int k, int n_pad, int ldy);
  // Throws std::runtime_error naming the shape when supports() is false or cuBLASLt fails.
  void run(const Fp8GemmArgs& a, cudaStream_t s);

 private:
  struct Plan;
  Plan* plan(int m, int k, int n_pad, int ldy);
  void* handle_ = nullptr;  // cublasLtHandle_t
  void* workspace_;
  size_t workspace_bytes_;
  std::map<std::tuple<int, int, int, int>, std::unique_ptr<Plan>> plans_;
};

}  // namespace abridge::kernels
