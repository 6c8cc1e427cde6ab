#include "engine/cuda/cuda_fp8.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "base/error.h"
#include "engine/fp8.h"
#include "engine/fp8_checkpoint.h"
#include "engine/weights.h"
#include "kernels/ops.h"

namespace abridge::engine {
namespace {

void cuda_ok(cudaError_t e, const char* call) {
  if (e != cudaSuccess) throw Error(std::string("CUDA error in ") + call + ": " + cudaGetErrorString(e));
}

// A weight's tile scales as f32 in the device layout: (fp8_blocks(m), fp8_scale_ld(k)), padding zero.
std::vector<float> padded_scales(const TensorView& s, int64_t m, int64_t k) {
  const int64_t rows = kernels::fp8_blocks(static_cast<int>(m)), cols = kernels::fp8_blocks(static_cast<int>(k));
  const int64_t ld = kernels::fp8_scale_ld(static_cast<int>(k));
  std::vector<float> dense(static_cast<size_t>(rows * cols));
  ABRIDGE_CHECK(s.numel() == rows * cols, s.name);  // check_fp8_tensors ran when the model opened
  to_f32(s.dtype, s.data, dense.data(), dense.size());
  std::vector<float> out(static_cast<size_t>(rows * ld), 0.0f);
  for (int64_t r = 0; r < rows; ++r) std::copy_n(dense.data() + r * cols, cols, out.data() + r * ld);
  return out;
}

}  // namespace

CudaFp8::CudaFp8(Alloc alloc, cublasHandle_t blas, void* workspace, size_t workspace_bytes, int64_t max_tokens,
                 bool block_gemm, const kernels::DeviceCaps& dev)
    : alloc_(std::move(alloc)), blas_(blas), dev_(dev), max_tokens_(max_tokens), try_block_gemm_(block_gemm) {
  ABRIDGE_CHECK(max_tokens >= 1);
  try {
    gemm_ = std::make_unique<kernels::Fp8BlockGemm>(workspace, workspace_bytes);
  } catch (const std::exception& e) {
    throw Error(std::string("CUDA backend: ") + e.what());
  }
}

CudaFp8::~CudaFp8() = default;

CudaFp8Linear CudaFp8::upload(const Checkpoint& ckpt, const std::vector<std::string>& names) {
  ABRIDGE_CHECK(!finished_ && !names.empty());
  std::vector<const TensorView*> w, s;
  for (const std::string& name : names) {
    w.push_back(ckpt.find(name));
    s.push_back(ckpt.find(scale_name(name)));
    ABRIDGE_CHECK(w.back() && s.back() && w.back()->dtype == DType::kF8E4M3 && w.back()->shape.size() == 2, name);
  }
  CudaFp8Linear lin;
  lin.k = w[0]->shape[1];
  for (const TensorView* v : w) {
    ABRIDGE_CHECK(v->shape[1] == lin.k, v->name);
    lin.m += v->shape[0];
  }
  if (lin.k % 16 != 0)
    throw Error("CUDA backend: FP8 weight '" + names[0] + "' has " + std::to_string(lin.k) +
                " input features, not a multiple of 16 (the FP8 kernels read 16 codes at a time); use --device cpu");
  const int k = static_cast<int>(lin.k), ld = kernels::fp8_scale_ld(k);
  // Fused when every member but the last ends on a tile boundary.
  bool fuse = true;
  for (size_t i = 0; i + 1 < w.size(); ++i) fuse = fuse && w[i]->shape[0] % kernels::kFp8Block == 0;
  // Members of one allocation: all of them when fused, else one each.
  std::vector<std::vector<size_t>> groups;
  if (fuse) {
    groups.emplace_back();
    for (size_t i = 0; i < w.size(); ++i) groups[0].push_back(i);
  } else {
    for (size_t i = 0; i < w.size(); ++i) groups.push_back({i});
  }
  int64_t col = 0;
  for (const auto& members : groups) {
    int64_t rows = 0;
    std::vector<float> scales;
    for (size_t i : members) {
      const auto part = padded_scales(*s[i], w[i]->shape[0], lin.k);
      scales.insert(scales.end(), part.begin(), part.end());
      rows += w[i]->shape[0];
    }
    auto* codes = static_cast<uint8_t*>(alloc_(static_cast<size_t>(rows * lin.k)));
    int64_t at = 0;
    for (size_t i : members) {
      cuda_ok(cudaMemcpy(codes + at * lin.k, w[i]->data, w[i]->nbytes, cudaMemcpyHostToDevice), "cudaMemcpy (FP8 codes)");
      at += w[i]->shape[0];
    }
    auto* dev_scales = static_cast<float*>(alloc_(scales.size() * sizeof(float)));
    cuda_ok(cudaMemcpy(dev_scales, scales.data(), scales.size() * sizeof(float), cudaMemcpyHostToDevice),
            "cudaMemcpy (FP8 scales)");
    // The members' tile rows stack into the allocation's (every member but the last ends on a tile).
    ABRIDGE_CHECK(static_cast<int64_t>(scales.size()) == kernels::fp8_blocks(static_cast<int>(rows)) * ld, names[0]);
    CudaFp8Linear::Part p;
    p.w.codes = codes;
    p.w.scales = dev_scales;
    p.w.m = static_cast<int>(rows);
    p.w.k = k;
    p.col = col;
    const int ldy = static_cast<int>(lin.m);
    p.block_gemm = try_block_gemm_ && col % 4 == 0 && gemm_->supports(p.w.m, k, 16, ldy) &&
                   gemm_->supports(p.w.m, k, kernels::fp8_gemm_rows(static_cast<int>(max_tokens_)), ldy);
    if (p.block_gemm) {
      ++block_parts_;
    } else {
      ++fallback_parts_;
      max_fallback_weights_ = std::max(max_fallback_weights_, rows * lin.k);
    }
    col += rows;
    lin.parts.push_back(p);
  }
  max_k_ = std::max(max_k_, lin.k);
  return lin;
}

void CudaFp8::finish() {
  ABRIDGE_CHECK(!finished_);
  finished_ = true;
  if (max_k_ == 0) return;
  const int64_t rows = kernels::fp8_gemm_rows(static_cast<int>(max_tokens_));
  act_codes_ = static_cast<uint8_t*>(alloc_(static_cast<size_t>(rows * max_k_)));
  act_scales_ = static_cast<float*>(alloc_(static_cast<size_t>(kernels::fp8_blocks(static_cast<int>(max_k_)) * rows) * 4));
  if (fallback_parts_ > 0) {
    act_dq_ = static_cast<kernels::bf16*>(alloc_(static_cast<size_t>(max_tokens_ * max_k_) * 2));
    weight_dq_ = static_cast<kernels::bf16*>(alloc_(static_cast<size_t>(max_fallback_weights_) * 2));
  }
}

std::string CudaFp8::describe() const {
  std::string s = "FP8 GEMV decode";
  if (block_parts_ > 0) s += ", cuBLASLt block-scaled FP8 GEMM";
  if (fallback_parts_ > 0) s += ", dequantized bf16 GEMM";
  return s;
}

void CudaFp8::quantize(const CudaFp8Input& in, const CudaFp8Linear& w, int64_t n, int64_t n_pad, cudaStream_t s) {
  ABRIDGE_CHECK(finished_ && n <= max_tokens_ && w.k <= max_k_);
  kernels::Fp8QuantizeParams q;
  q.x = in.x, q.x_f32 = in.x_f32, q.norm_w = in.norm_w, q.eps = in.eps;
  q.n = static_cast<int>(n), q.n_pad = static_cast<int>(n_pad), q.k = static_cast<int>(w.k);
  const bool gemv = kernels::fp8_gemv_supports(static_cast<int>(n), static_cast<int>(w.k), dev_);
  bool codes = gemv, dequantized = false;
  if (!gemv)
    for (const auto& p : w.parts) (p.block_gemm ? codes : dequantized) = true;
  if (codes) q.codes = act_codes_, q.scales = act_scales_;
  if (dequantized) q.dequantized = act_dq_;
  kernels::fp8_quantize(q, s);
}

void CudaFp8::linear(const CudaFp8Input& in, const CudaFp8Linear& w, float* y, int64_t ldy, int64_t n, float beta,
                     cudaStream_t s) {
  if (n <= 0) return;
  if (kernels::fp8_gemv_supports(static_cast<int>(n), static_cast<int>(w.k), dev_)) {
    quantize(in, w, n, n, s);
    for (const auto& p : w.parts) {
      kernels::Fp8GemvParams g;
      g.x_codes = act_codes_, g.x_scales = act_scales_, g.w = p.w;
      g.y = y + p.col, g.ldy = static_cast<int>(ldy), g.beta = beta, g.n = static_cast<int>(n);
      kernels::fp8_gemv(g, dev_, s);
    }
    return;
  }
  // cuBLASLt was asked at upload for 16 rows and for max_tokens; should it refuse the rows of this
  // step, the step runs on max_tokens' rows (zero padding: the same products, more work).
  int64_t n_pad = kernels::fp8_gemm_rows(static_cast<int>(n));
  for (const auto& p : w.parts)
    if (p.block_gemm && !gemm_->supports(p.w.m, p.w.k, static_cast<int>(n_pad), static_cast<int>(ldy)))
      n_pad = kernels::fp8_gemm_rows(static_cast<int>(max_tokens_));
  quantize(in, w, n, n_pad, s);
  for (const auto& p : w.parts) {
    if (p.block_gemm) {
      kernels::Fp8GemmArgs a;
      a.x_codes = act_codes_, a.x_scales = act_scales_, a.w = p.w;
      a.y = y + p.col, a.ldy = static_cast<int>(ldy), a.beta = beta, a.n_pad = static_cast<int>(n_pad);
      try {
        gemm_->run(a, s);
      } catch (const std::exception& e) {
        throw Error(std::string("CUDA backend: ") + e.what());
      }
      continue;
    }
    kernels::fp8_dequantize(p.w, weight_dq_, s);
    const float alpha = 1.0f;
    const cublasStatus_t st =
        cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, p.w.m, static_cast<int>(n), p.w.k, &alpha, weight_dq_, CUDA_R_16BF,
                     p.w.k, act_dq_, CUDA_R_16BF, p.w.k, &beta, y + p.col, CUDA_R_32F, static_cast<int>(ldy),
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
      throw Error("cuBLAS error in cublasGemmEx (dequantized FP8): status " + std::to_string(st));
  }
}

void CudaFp8::swiglu(const CudaFp8Input& in, const CudaFp8Linear& w, float* gu, kernels::bf16* act, int64_t n,
                     cudaStream_t s) {
  if (n <= 0) return;
  const int64_t ffn = w.m / 2;
  if (kernels::fp8_gemv_supports(static_cast<int>(n), static_cast<int>(w.k), dev_)) {
    quantize(in, w, n, n, s);
    kernels::Fp8GemvParams g;
    g.x_codes = act_codes_, g.x_scales = act_scales_, g.act = act, g.n = static_cast<int>(n);
    if (w.parts.size() == 1) {  // fused: ffn % 128 == 0, so the up rows start on a tile
      g.w = w.parts[0].w.rows(0, static_cast<int>(ffn));
      g.up = w.parts[0].w.rows(static_cast<int>(ffn), static_cast<int>(ffn));
    } else {
      ABRIDGE_CHECK(w.parts.size() == 2);
      g.w = w.parts[0].w, g.up = w.parts[1].w;
    }
    kernels::fp8_gemv(g, dev_, s);
    return;
  }
  linear(in, w, gu, w.m, n, 0.0f, s);
  kernels::silu_mul(gu, act, static_cast<int>(n), static_cast<int>(ffn), s);
}

std::vector<uint16_t> dequantize_fp8_bf16(const Checkpoint& ckpt, const TensorView& weight) {
  ABRIDGE_CHECK(weight.dtype == DType::kF8E4M3 && weight.shape.size() == 2, weight.name);
  const TensorView* s = ckpt.find(scale_name(weight.name));
  ABRIDGE_CHECK(s != nullptr, weight.name);  // check_fp8_tensors ran when the model opened
  const int64_t rows = weight.shape[0], cols = weight.shape[1];
  std::vector<float> scales(static_cast<size_t>(s->numel()));
  to_f32(s->dtype, s->data, scales.data(), scales.size());
  std::vector<float> f(static_cast<size_t>(rows * cols));
  dequantize_tiles(reinterpret_cast<const uint8_t*>(weight.data), scales.data(), rows, cols, f.data());
  std::vector<uint16_t> out(f.size());
  for (size_t i = 0; i < f.size(); ++i) out[i] = f32_to_bf16(f[i]);
  return out;
}

}  // namespace abridge::engine
