#include "engine/weights.h"

#include <cmath>
#include <cstring>

#include "base/error.h"
#include "base/hash.h"
#include "base/rng.h"
#include "engine/fp8.h"
#include "engine/fp8_checkpoint.h"

namespace abridge::engine {
namespace {


}  // namespace

std::vector<TensorEntry> tensor_table(const ModelConfig& c) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  std::vector<TensorEntry> t;
  t.push_back({"model.embed_tokens.weight", {c.vocab_size, d}, TensorRole::kEmbedding});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {d}, TensorRole::kInputNorm, l});
    t.push_back({p + "self_attn.q_proj.weight", {c.q_dim(), d}, TensorRole::kQ, l});
    t.push_back({p + "self_attn.k_proj.weight", {c.kv_dim(), d}, TensorRole::kK, l});
    t.push_back({p + "self_attn.v_proj.weight", {c.kv_dim(), d}, TensorRole::kV, l});
    t.push_back({p + "self_attn.o_proj.weight", {d, c.q_dim()}, TensorRole::kO, l});
    t.push_back({p + "self_attn.q_norm.weight", {c.head_dim}, TensorRole::kQNorm, l});
    t.push_back({p + "self_attn.k_norm.weight", {c.head_dim}, TensorRole::kKNorm, l});
    t.push_back({p + "post_attention_layernorm.weight", {d}, TensorRole::kPostNorm, l});
    t.push_back({p + "mlp.gate_proj.weight", {f, d}, TensorRole::kGate, l});
    t.push_back({p + "mlp.up_proj.weight", {f, d}, TensorRole::kUp, l});
    t.push_back({p + "mlp.down_proj.weight", {d, f}, TensorRole::kDown, l});
  }
  t.push_back({"model.norm.weight", {d}, TensorRole::kFinalNorm});
  t.push_back({"lm_head.weight", {c.vocab_size, d}, TensorRole::kLmHead, -1, c.tie_word_embeddings});
  return t;
}

void check_checkpoint(const ModelConfig& c, const Checkpoint& ckpt) {
  for (const TensorEntry& e : tensor_table(c)) {
    const TensorView* v = ckpt.find(e.name);
    if (!v) {
      if (e.optional) continue;
      throw Error("checkpoint: missing tensor '" + e.name + "' (expected shape " + shape_str(e.shape) + ")");
    }
    if (v->shape != e.shape)
      throw Error(v->file + ": tensor '" + e.name + "' has shape " + shape_str(v->shape) + ", the config needs " +
                  shape_str(e.shape));
  }
  check_fp8_tensors(c, ckpt);
}

float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void to_f32(DType dtype, const std::byte* src, float* dst, size_t n) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    case DType::kF8E4M3:  // the codes' values; the tile scales are applied by the FP8 paths (engine/fp8.h)
      for (size_t i = 0; i < n; ++i) dst[i] = e4m3_to_f32(static_cast<uint8_t>(src[i]));
      return;
  }
  ABRIDGE_CHECK(false, "unknown dtype");
}

namespace {

// Uniform float in [-1, 1) from 24 bits, exact arithmetic (no libm), so every platform gets the same bytes.
float symmetric(Xoshiro256& rng) {
  const uint64_t r = rng.next() >> 40;
  return static_cast<float>(static_cast<int64_t>(r) - (int64_t{1} << 23)) * 0x1.0p-23f;
}

}  // namespace

void write_random_weights(const std::string& path, const ModelConfig& config, uint64_t seed, DType dtype) {
  ABRIDGE_CHECK(dtype == DType::kBF16 || dtype == DType::kF32, "random weights are bf16 or f32");
  std::vector<TensorSpec> specs;
  for (const TensorEntry& e : tensor_table(config)) {
    if (e.optional) continue;  // tied lm_head: not written, as transformers saves it
    specs.push_back({e.name, dtype, e.shape});
  }
  const float kUniformHalfWidth = 0.02f * std::sqrt(3.0f);  // uniform(-a, a) has std a / sqrt(3)
  write_safetensors(
      path, specs,
      [&](const TensorSpec& spec, std::span<std::byte> out) {
        Xoshiro256 rng(seed ^ fnv1a64(spec.name));
        const bool norm = spec.shape.size() == 1;
        const size_t n = out.size() / dtype_size(dtype);
        for (size_t i = 0; i < n; ++i) {
          const float u = symmetric(rng);
          const float value = norm ? 1.0f + 0.5f * u : kUniformHalfWidth * u;
          if (dtype == DType::kBF16) {
            const uint16_t h = f32_to_bf16(value);
            std::memcpy(out.data() + 2 * i, &h, 2);
          } else {
            std::memcpy(out.data() + 4 * i, &value, 4);
          }
        }
      },
      {{"format", "pt"}});
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace abridge::engine
