#include "engine/config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "engine/read_file.h"

namespace abridge::engine {
namespace {

using nlohmann::json;

[[noreturn]] void fail(std::string_view source, const std::string& msg) {
  throw Error(std::string(source) + ": " + msg);
}

int64_t get_int(const json& j, std::string_view source, const char* key, std::optional<int64_t> fallback = {}) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    fail(source, std::string("missing field \"") + key + "\"");
  }
  if (!it->is_number_integer()) fail(source, std::string("field \"") + key + "\" must be an integer");
  return it->get<int64_t>();
}

double get_number(const json& j, std::string_view source, const char* key, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) fail(source, std::string("field \"") + key + "\" must be a number");
  return it->get<double>();
}

bool get_bool(const json& j, std::string_view source, const char* key, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail(source, std::string("field \"") + key + "\" must be true or false");
  return it->get<bool>();
}

}  // namespace

ModelConfig ModelConfig::from_json(std::string_view text, std::string_view source) {
  json j;
  try {
    j = parse_json_bounded(text);
  } catch (const Error& e) {
    fail(source, e.what());
  }
  if (!j.is_object()) fail(source, "expected a JSON object");
  ModelConfig c;
  if (auto it = j.find("model_type"); it != j.end() && it->is_string()) c.model_type = it->get<std::string>();
  if (c.model_type != "qwen3")
    fail(source, "model_type \"" + one_line(c.model_type, 64) + "\" is not supported (abridge runs the Qwen3 dense family: \"qwen3\")");
  if (auto it = j.find("hidden_act"); it != j.end() && !(it->is_string() && *it == "silu"))
    fail(source, "hidden_act must be \"silu\"");
  if (get_bool(j, source, "attention_bias", false)) fail(source, "attention_bias=true is not supported");
  c.vocab_size = get_int(j, source, "vocab_size");
  c.hidden_size = get_int(j, source, "hidden_size");
  c.intermediate_size = get_int(j, source, "intermediate_size");
  c.num_hidden_layers = get_int(j, source, "num_hidden_layers");
  c.num_attention_heads = get_int(j, source, "num_attention_heads");
  c.num_key_value_heads = get_int(j, source, "num_key_value_heads", c.num_attention_heads);
  c.head_dim = get_int(j, source, "head_dim",
                       c.num_attention_heads > 0 ? std::optional<int64_t>(c.hidden_size / c.num_attention_heads)
                                                 : std::nullopt);
  c.max_position_embeddings = get_int(j, source, "max_position_embeddings", 32768);
  c.rms_norm_eps = get_number(j, source, "rms_norm_eps", 1e-6);
  c.tie_word_embeddings = get_bool(j, source, "tie_word_embeddings", false);

  // rope_theta at the top level (transformers 4) or inside rope_parameters (transformers 5).
  c.rope_theta = get_number(j, source, "rope_theta", 10000.0);
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_object()) fail(source, std::string("field \"") + key + "\" must be an object or null");
    std::string type = "default";
    for (const char* tkey : {"rope_type", "type"})
      if (auto t = it->find(tkey); t != it->end() && t->is_string()) type = t->get<std::string>();
    if (type != "default")
      fail(source, std::string(key) + " type \"" + type + "\" is not supported (only default RoPE)");
    c.rope_theta = get_number(*it, source, "rope_theta", c.rope_theta);
  }

  c.use_sliding_window = get_bool(j, source, "use_sliding_window", false);
  if (auto it = j.find("sliding_window"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer()) fail(source, "field \"sliding_window\" must be an integer or null");
    c.sliding_window = it->get<int64_t>();
  }
  c.max_window_layers = get_int(j, source, "max_window_layers", c.num_hidden_layers);

  // Token ids are checked against the vocabulary before they are narrowed to 32 bits (2^40 must not
  // become 0).
  auto token_id = [&](const json& v, const char* key) -> int32_t {
    if (!v.is_number_integer()) fail(source, std::string("field \"") + key + "\" must hold integers");
    const bool negative = v.is_number_unsigned() ? false : v.get<int64_t>() < 0;
    const uint64_t id = v.is_number_unsigned() ? v.get<uint64_t>() : static_cast<uint64_t>(v.get<int64_t>());
    if (negative || id >= static_cast<uint64_t>(c.vocab_size))
      fail(source, std::string("\"") + key + "\" = " + v.dump() + " is outside the vocabulary (0.." +
                       std::to_string(c.vocab_size - 1) + ")");
    return static_cast<int32_t>(id);
  };
  if (c.vocab_size <= 0 || c.vocab_size > (int64_t{1} << 22)) c.validate(source);  // the range of vocab_size first
  if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
    if (it->is_number_integer()) {
      c.eos_token_ids.push_back(token_id(*it, "eos_token_id"));
    } else if (it->is_array()) {
      if (it->size() > 1024) fail(source, "field \"eos_token_id\" lists more than 1024 ids");
      for (const auto& e : *it) c.eos_token_ids.push_back(token_id(e, "eos_token_id"));
    } else {
      fail(source, "field \"eos_token_id\" must be an integer or a list of integers");
    }
  }
  if (auto it = j.find("bos_token_id"); it != j.end() && !it->is_null()) c.bos_token_id = token_id(*it, "bos_token_id");
  for (const char* key : {"torch_dtype", "dtype"})
    if (auto it = j.find(key); it != j.end() && it->is_string()) c.torch_dtype = it->get<std::string>();
  if (auto it = j.find("quantization_config"); it != j.end() && !it->is_null())
    c.quantization = QuantizationConfig::parse(it->dump(), source);
  c.validate(source);
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  std::string text;
  try {
    text = read_regular_file(path, kMaxConfigJsonBytes);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what() + " (a model directory holds config.json, *.safetensors and tokenizer.json)");
  }
  return from_json(text, path);
}

void ModelConfig::validate(std::string_view source) const {
  auto positive = [&](const char* name, int64_t v, int64_t max) {
    if (v <= 0 || v > max)
      fail(source, std::string("\"") + name + "\" = " + std::to_string(v) + " is out of range (1.." +
                       std::to_string(max) + ")");
  };
  positive("vocab_size", vocab_size, 1 << 22);
  positive("hidden_size", hidden_size, 1 << 16);
  positive("intermediate_size", intermediate_size, 1 << 18);
  positive("num_hidden_layers", num_hidden_layers, 1024);
  positive("num_attention_heads", num_attention_heads, 1024);
  positive("num_key_value_heads", num_key_value_heads, 1024);
  positive("head_dim", head_dim, 1024);
  positive("max_position_embeddings", max_position_embeddings, int64_t{1} << 24);
  if (num_attention_heads % num_key_value_heads != 0)
    fail(source, "num_attention_heads (" + std::to_string(num_attention_heads) +
                     ") must be a multiple of num_key_value_heads (" + std::to_string(num_key_value_heads) + ")");
  if (head_dim % 2 != 0) fail(source, "head_dim must be even (RoPE rotates pairs)");
  if (!(rope_theta > 1.0 && std::isfinite(rope_theta))) fail(source, "rope_theta must be a finite number greater than 1");
  if (!(rms_norm_eps > 0.0 && rms_norm_eps < 1.0)) fail(source, "rms_norm_eps must be in (0, 1)");
  if (sliding_window && (*sliding_window <= 0 || *sliding_window > (int64_t{1} << 24)))
    fail(source, "\"sliding_window\" = " + std::to_string(*sliding_window) + " is out of range (1.." +
                     std::to_string(int64_t{1} << 24) + ")");
  // Published Qwen2.5 configs give more than their layers (70 for 48): no layer has a window then.
  if (max_window_layers < 0 || max_window_layers > 1024)
    fail(source, "\"max_window_layers\" = " + std::to_string(max_window_layers) + " is out of range (0..1024)");
  if (bos_token_id && (*bos_token_id < 0 || *bos_token_id >= vocab_size))
    fail(source, "bos_token_id " + std::to_string(*bos_token_id) + " is outside the vocabulary");
  if (use_sliding_window && !sliding_window) fail(source, "use_sliding_window is set but sliding_window is null");
  for (int32_t id : eos_token_ids)
    if (id < 0 || id >= vocab_size) fail(source, "eos_token_id " + std::to_string(id) + " is outside the vocabulary");
}

std::string ModelConfig::to_json() const {
  json j = json::object();
  j["architectures"] = {"Qwen3ForCausalLM"};
  j["model_type"] = model_type;
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  if (bos_token_id) j["bos_token_id"] = *bos_token_id;
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  else j["eos_token_id"] = eos_token_ids;
  j["head_dim"] = head_dim;
  j["hidden_act"] = "silu";
  j["hidden_size"] = hidden_size;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = intermediate_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["max_window_layers"] = max_window_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_key_value_heads"] = num_key_value_heads;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_scaling"] = nullptr;
  j["rope_theta"] = rope_theta;
  j["sliding_window"] = sliding_window ? json(*sliding_window) : json(nullptr);
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["torch_dtype"] = torch_dtype;
  j["use_cache"] = true;
  j["use_sliding_window"] = use_sliding_window;
  j["vocab_size"] = vocab_size;
  if (quantization) j["quantization_config"] = json::parse(quantization->to_json());
  return j.dump(2) + "\n";
}

int64_t ModelConfig::n_params() const {
  const int64_t per_layer = hidden_size * (q_dim() + 2 * kv_dim()) + q_dim() * hidden_size +
                            3 * hidden_size * intermediate_size + 2 * hidden_size + 2 * head_dim;
  return vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer + hidden_size;
}

ModelConfig preset_config(std::string_view preset) {
  struct Shape {
    std::string_view name;
    int64_t hidden, inter, layers, heads, kv_heads, head_dim;
  };
  // The real Qwen3 shapes; "tiny" keeps the real vocabulary so the real tokenizer applies.
  static constexpr Shape kShapes[] = {
      {"tiny", 256, 512, 2, 4, 2, 64},
      {"0.6b", 1024, 3072, 28, 16, 8, 128},
      {"1.7b", 2048, 6144, 28, 16, 8, 128},
      {"4b", 2560, 9728, 36, 32, 8, 128},
  };
  for (const Shape& s : kShapes) {
    if (s.name != preset) continue;
    ModelConfig c;
    c.vocab_size = 151936;
    c.hidden_size = s.hidden;
    c.intermediate_size = s.inter;
    c.num_hidden_layers = s.layers;
    c.num_attention_heads = s.heads;
    c.num_key_value_heads = s.kv_heads;
    c.head_dim = s.head_dim;
    c.max_position_embeddings = 262144;
    c.rope_theta = 5'000'000;
    c.rms_norm_eps = 1e-6;
    c.tie_word_embeddings = true;
    c.max_window_layers = s.layers;
    c.bos_token_id = 151643;
    c.eos_token_ids = {151645};
    return c;
  }
  std::string names;
  for (const Shape& s : kShapes) names += (names.empty() ? "" : ", ") + std::string(s.name);
  throw Error("unknown preset \"" + std::string(preset) + "\" (choose one of: " + names + ")");
}

}  // namespace abridge::engine
