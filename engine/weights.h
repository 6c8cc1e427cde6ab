// The tensor table: every weight of a Qwen3 checkpoint with its name, shape and whether it may be
// absent. Loading, byte counting, random checkpoints and error messages all read this one table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/safetensors.h"

namespace abridge::engine {

enum class TensorRole : uint8_t {
  kEmbedding, kLmHead, kFinalNorm,
  kInputNorm, kQ, kK, kV, kO, kQNorm, kKNorm, kPostNorm, kGate, kUp, kDown,
};

struct TensorEntry {
  std::string name;
  std::vector<int64_t> shape;  // as stored: linear weights are (out_features, in_features)
  TensorRole role;
  int64_t layer = -1;          // -1 for the global tensors
  bool optional = false;       // lm_head with tied embeddings
};

std::vector<TensorEntry> tensor_table(const ModelConfig& c);

// Checks that the checkpoint has every tensor the config needs with the right shape, and FP8 weights
// with their scales (check_fp8_tensors); throws abridge::Error naming the file and tensor, with expected
// vs actual shape. (Dtypes are checked when the checkpoint is read: safetensors.h accepts BF16, F16, F32
// and F8_E4M3.)
void check_checkpoint(const ModelConfig& c, const Checkpoint& ckpt);

// Converts `n` values of `dtype` at `src` to float32 (F8_E4M3: the code values, without tile scales).
void to_f32(DType dtype, const std::byte* src, float* dst, size_t n);
// Rounds float32 to bfloat16 (round to nearest even; NaN stays NaN).
uint16_t f32_to_bf16(float f);
float bf16_to_f32(uint16_t h);
float f16_to_f32(uint16_t h);

// Writes model.safetensors with deterministic random weights for `config` (same seed, same bytes):
// linear and embedding weights uniform with standard deviation 0.02, norm weights uniform in
// [0.5, 1.5] so that a wrong norm shows in comparisons. Each tensor's stream is seeded from the seed
// and the tensor's name, so values do not depend on the order of the table.
void write_random_weights(const std::string& path, const ModelConfig& config, uint64_t seed, DType dtype);

// A tensor shape for messages: "[2560, 9728]".
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace abridge::engine
