// The Qwen3 dense model configuration, read and validated once from config.json and passed by const&.
// Derived sizes are methods. User knobs (token budgets, memory fractions) live elsewhere.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/fp8_kv.h"  // kv_scale_row_bytes
#include "engine/quantization.h"

namespace abridge::engine {

// How the KV cache stores keys and values (--kv-cache-dtype). kBf16: two bytes a value. kFp8: e4m3fn
// codes (engine/fp8.h), one byte a value, with one scale per token and KV head for K and V each, the
// smallest power of two with amax <= 448 * scale over that head's head_dim values, so every value is in
// range (nothing saturates), stored as a one-byte exponent (base/fp8_kv.h fp8_kv_scale_byte); the
// value read back is decode(code) * scale, off by at most max(|v| / 16, scale * 2^-10) <= amax / 16.
enum class KvCacheDtype { kBf16, kFp8 };

struct ModelConfig {
  std::string model_type = "qwen3";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;          // d_model
  int64_t intermediate_size = 0;    // FFN width
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;  // query heads
  int64_t num_key_value_heads = 0;  // KV heads (GQA: query heads share them in groups)
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rope_theta = 1e6;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  // Sliding-window attention, as Qwen2/Qwen3 configs declare it: when use_sliding_window is set,
  // layers with index >= max_window_layers attend to the last `sliding_window` positions only.
  bool use_sliding_window = false;
  std::optional<int64_t> sliding_window;
  int64_t max_window_layers = 0;
  std::vector<int32_t> eos_token_ids;
  std::optional<int32_t> bos_token_id;
  std::string torch_dtype = "bfloat16";
  // Set for FP8 checkpoints (config.json's quantization_config); absent for bf16/f16/f32 ones.
  std::optional<QuantizationConfig> quantization;

  // Parses and validates config.json text; throws abridge::Error("SOURCE: ...") naming the field.
  static ModelConfig from_json(std::string_view json_text, std::string_view source = "config.json");
  static ModelConfig from_file(const std::string& path);
  // A config.json that Hugging Face transformers loads as Qwen3ForCausalLM.
  std::string to_json() const;
  // Checks ranges and divisibility; throws abridge::Error("SOURCE: ...").
  void validate(std::string_view source) const;

  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  int64_t gqa_group() const { return num_attention_heads / num_key_value_heads; }
  // Bytes of KV cache a token takes, K and V of every layer: bf16 2 bytes a value; FP8 1 byte a value
  // plus its row of one-byte scales (for 8 KV heads of 128: 0.504 of bf16, the pool holds 1.98x the tokens).
  uint64_t kv_bytes_per_token(KvCacheDtype dtype = KvCacheDtype::kBf16) const {
    const uint64_t sides = 2ull * static_cast<uint64_t>(num_hidden_layers);  // K and V of every layer
    const uint64_t values = static_cast<uint64_t>(num_key_value_heads * head_dim);
    return dtype == KvCacheDtype::kFp8 ? sides * (values + static_cast<uint64_t>(kv_scale_row_bytes(num_key_value_heads)))
                                       : sides * values * 2;
  }
  // The window of layer `layer`, or 0 for full attention.
  int64_t layer_window(int64_t layer) const {
    return use_sliding_window && sliding_window && layer >= max_window_layers ? *sliding_window : 0;
  }
  int64_t n_params() const;
};

// The shapes of the Qwen3 family with the real vocabulary: "tiny" (for tests), "0.6b", "1.7b", "4b".
ModelConfig preset_config(std::string_view preset);

}  // namespace abridge::engine
