// The CUDA backend's block-scaled FP8 linear layers (checkpoints in the format of engine/quantization.h,
// arithmetic of engine/fp8.h, kernels of kernels/fp8.h): the weights on the device, the scratch of a
// step, and which kernel runs a product.
//
//   decode steps (1-2 rows)   fp8_gemv: the activations quantized per token (RMS norm fused where a
//                             norm precedes), one pass over the weight codes; gate/up writes SwiGLU.
//   larger steps, Hopper      cuBLASLt's block-scaled FP8 GEMM (checked for every weight's shape when
//                             the weights are uploaded, for 16 and for max_tokens rows).
//   larger steps, otherwise   each matrix's tiles dequantized to bf16 into one scratch matrix just
//                             before its bf16 cuBLAS GEMM, whose input is the activations quantized
//                             and dequantized (so the product is the reference's, up to bf16 rounding
//                             of the scaled operands). Compute capability 8.0-8.9, a shape cuBLASLt
//                             refuses, or CudaOptions::fp8_dequantized_gemm.
//
// A group (q/k/v, gate/up) is one fused matrix when each member's rows are a multiple of 128 (tiles
// then line up), else one part per member writing its own columns of the output.
#pragma once

#include <cublas_v2.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "kernels/fp8.h"

namespace abridge::engine {

struct CudaFp8Linear {
  struct Part {
    kernels::Fp8Matrix w;     // the part's rows, (w.m, k)
    int64_t col = 0;          // its first output column
    bool block_gemm = false;  // cuBLASLt runs it (else the dequantized bf16 GEMM)
  };
  std::vector<Part> parts;
  int64_t m = 0, k = 0;       // the group's output and input features
  explicit operator bool() const { return !parts.empty(); }
};

// What an FP8 product reads: bf16 rows x (n, k), or float rows x_f32 (n, k) RMS-normalized with norm_w
// (rounded to bf16, as kernels::rms_norm writes them).
struct CudaFp8Input {
  const kernels::bf16* x = nullptr;
  const float* x_f32 = nullptr;
  const float* norm_w = nullptr;
  float eps = 0.0f;
};

class CudaFp8 {
 public:
  using Alloc = std::function<void*(size_t bytes)>;  // device memory that lives as long as the backend
  // blas: the backend's handle, on its stream. workspace: shared with cuBLAS (stream-ordered).
  // max_tokens: rows of the largest step. block_gemm: try cuBLASLt's block-scaled GEMM at all.
  // dev: the backend's device (grid sizing of the GEMV).
  CudaFp8(Alloc alloc, cublasHandle_t blas, void* workspace, size_t workspace_bytes, int64_t max_tokens, bool block_gemm,
          const kernels::DeviceCaps& dev);
  ~CudaFp8();

  // Uploads the F8_E4M3 weights `names` (checked by check_fp8_tensors; the same in_features) as one
  // group whose output is their rows in order. Throws abridge::Error when in_features is not a
  // multiple of 16 (the kernels' 16-byte loads).
  CudaFp8Linear upload(const Checkpoint& ckpt, const std::vector<std::string>& names);
  // Allocates the step scratch; call once, after the last upload and before the first product.
  void finish();

  // y (n, ldy) f32 = input . W^T + beta * y, columns [0, w.m) of each row. y must hold
  // kernels::fp8_gemm_rows(max_tokens) rows: the GEMM writes its padding rows too (0 + beta * y).
  void linear(const CudaFp8Input& in, const CudaFp8Linear& w, float* y, int64_t ldy, int64_t n, float beta,
              cudaStream_t s);
  // act (n, ffn) bf16 = silu(input . gate^T) * (input . up^T) for w = [gate; up] (2 ffn rows);
  // gu: (fp8_gemm_rows(max_tokens), 2 ffn) f32 scratch for steps the GEMV does not take.
  void swiglu(const CudaFp8Input& in, const CudaFp8Linear& w, float* gu, kernels::bf16* act, int64_t n, cudaStream_t s);

  // "FP8 GEMV decode, cuBLASLt block-scaled FP8 GEMM" or "... dequantized bf16 GEMM".
  std::string describe() const;

 private:
  // Quantizes the input for a step of n rows that `w` will multiply (codes for the GEMV and cuBLASLt,
  // dequantized rows for the fallback).
  void quantize(const CudaFp8Input& in, const CudaFp8Linear& w, int64_t n, int64_t n_pad, cudaStream_t s);

  Alloc alloc_;
  cublasHandle_t blas_;
  kernels::DeviceCaps dev_;
  int64_t max_tokens_;
  bool try_block_gemm_;
  std::unique_ptr<kernels::Fp8BlockGemm> gemm_;
  int64_t max_k_ = 0;
  int64_t max_fallback_weights_ = 0;  // largest m * k among the parts cuBLASLt does not run
  int64_t block_parts_ = 0, fallback_parts_ = 0;
  bool finished_ = false;
  uint8_t* act_codes_ = nullptr;      // (fp8_gemm_rows(max_tokens), max_k)
  float* act_scales_ = nullptr;       // (fp8_blocks(max_k), fp8_gemm_rows(max_tokens))
  kernels::bf16* act_dq_ = nullptr;   // (max_tokens, max_k), the fallback's input
  kernels::bf16* weight_dq_ = nullptr;  // (max_fallback_weights), the fallback's weight
};

// An F8_E4M3 weight dequantized on the host to bf16 (decode(code) * tile scale, rounded): for the
// layers the backend runs in bf16 although they are stored as FP8 (an lm_head, or a q/k/v or gate/up
// group whose members differ in dtype).
std::vector<uint16_t> dequantize_fp8_bf16(const Checkpoint& ckpt, const TensorView& weight);

}  // namespace abridge::engine
