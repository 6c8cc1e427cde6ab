// Block-wise FP8 checkpoints (engine/quantization.h has the format): checking them when a model opens,
// reading a quantized linear for the CPU backend, and writing one from a bf16/f16/f32 checkpoint.
#pragma once

#include <cstdint>
#include <string>

#include "engine/config.h"
#include "engine/fp8.h"
#include "engine/safetensors.h"
#include "engine/weights.h"

namespace abridge::engine {

// The linear layers (q, k, v, o, gate, up, down, lm_head): the only tensors that may be F8_E4M3.
bool is_linear(TensorRole role);
// "model.layers.0.mlp.up_proj.weight" -> "model.layers.0.mlp.up_proj.weight_scale_inv"
std::string scale_name(const std::string& weight_name);

// Checks every F8_E4M3 tensor of the table against the config: config.json declares the quantization,
// the tensor is a linear layer that modules_to_not_convert does not keep, and its weight_scale_inv is
// present, BF16/F16/F32, shaped [ceil(out/128), ceil(in/128)], and every scale finite and positive.
// Throws abridge::Error with one line naming the file or checkpoint and the tensor. Called by
// check_checkpoint.
void check_fp8_tensors(const ModelConfig& c, const Checkpoint& ckpt);

// Whether any tensor the model reads is F8_E4M3.
bool has_fp8_weights(const ModelConfig& c, const Checkpoint& ckpt);

// Reads an F8_E4M3 weight and its scales (checked by check_fp8_tensors) for the CPU backend.
Fp8Matrix load_fp8_matrix(const Checkpoint& ckpt, const std::string& weight_name);

// What `quantize_checkpoint` writes: the linear layers of the table that `q.converts`, as F8_E4M3 with
// f32 weight_scale_inv; everything else (embeddings, norms, lm_head when kept) as bf16.
struct QuantizeSummary {
  int64_t fp8_tensors = 0;     // quantized weights
  int64_t bf16_tensors = 0;    // weights kept in bf16
  uint64_t bytes = 0;          // tensor bytes written, scales included
};

// Writes `path` (a .safetensors file, atomically: PATH.tmp, fsync, rename) with the weights of `src`
// quantized for `q`. Deterministic: the same source gives the same bytes. Throws abridge::Error on
// I/O failure or a non-finite source weight.
QuantizeSummary quantize_checkpoint(const ModelConfig& c, const Checkpoint& src, const QuantizationConfig& q,
                                    const std::string& path);

// The configuration an FP8 checkpoint made by quantize_checkpoint declares: lm_head kept in bf16.
QuantizationConfig default_fp8_quantization();

}  // namespace abridge::engine
