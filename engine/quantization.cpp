#include "engine/quantization.h"

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace abridge::engine {
namespace {

using nlohmann::json;

[[noreturn]] void fail(std::string_view source, const std::string& msg) {
  throw Error(std::string(source) + ": quantization_config: " + msg);
}

std::string optional_string(const json& j, std::string_view source, const char* key, const std::string& fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) fail(source, std::string("\"") + key + "\" must be a string");
  return it->get<std::string>();
}

std::string digits_to_star(std::string_view name) {
  std::string out;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] >= '0' && name[i] <= '9') {
      out += '*';
      while (i + 1 < name.size() && name[i + 1] >= '0' && name[i + 1] <= '9') ++i;
    } else {
      out += name[i];
    }
  }
  return out;
}

}  // namespace

QuantizationConfig QuantizationConfig::parse(std::string_view text, std::string_view source) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) fail(source, "must be an object");
  QuantizationConfig q;
  auto method = j.find("quant_method");
  if (method == j.end() || !method->is_string()) fail(source, "\"quant_method\" is missing or not a string");
  q.quant_method = method->get<std::string>();
  if (q.quant_method != "fp8")
    fail(source, "quant_method \"" + q.quant_method +
                     "\" is not supported (abridge loads \"fp8\": block-wise FP8 e4m3 weights, as in "
                     "Qwen/Qwen3-4B-Instruct-2507-FP8)");
  q.fmt = optional_string(j, source, "fmt", "e4m3");
  if (q.fmt != "e4m3") fail(source, "fmt \"" + q.fmt + "\" is not supported (only \"e4m3\")");
  q.activation_scheme = optional_string(j, source, "activation_scheme", "dynamic");
  if (q.activation_scheme != "dynamic")
    fail(source, "activation_scheme \"" + q.activation_scheme +
                     "\" is not supported (only \"dynamic\": activation scales computed per token at run time)");
  auto block = j.find("weight_block_size");
  if (block == j.end() || block->is_null())
    fail(source, "\"weight_block_size\" is missing (per-tensor FP8 is not supported; abridge loads [128, 128] blocks)");
  if (!block->is_array() || block->size() != 2 || !(*block)[0].is_number_integer() || !(*block)[1].is_number_integer())
    fail(source, "\"weight_block_size\" must be two integers, not " + block->dump());
  q.block_out = (*block)[0].get<int64_t>();
  q.block_in = (*block)[1].get<int64_t>();
  if (q.block_out != 128 || q.block_in != 128)
    fail(source, "weight_block_size " + block->dump() + " is not supported (only [128, 128])");
  if (auto it = j.find("modules_to_not_convert"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) fail(source, "\"modules_to_not_convert\" must be a list of names or null");
    for (const json& e : *it) {
      if (!e.is_string() || e.get<std::string>().empty())
        fail(source, "\"modules_to_not_convert\" must hold non-empty names");
      q.modules_to_not_convert.push_back(e.get<std::string>());
    }
  }
  return q;
}

std::string QuantizationConfig::to_json() const {
  json j = json::object();
  j["quant_method"] = quant_method;
  j["fmt"] = fmt;
  j["activation_scheme"] = activation_scheme;
  j["weight_block_size"] = {block_out, block_in};
  j["modules_to_not_convert"] = modules_to_not_convert;
  return j.dump();
}

bool QuantizationConfig::converts(std::string_view module) const {
  const std::string starred = digits_to_star(module);
  for (const std::string& key : modules_to_not_convert)
    if (module.find(key) != std::string_view::npos || starred.find(key) != std::string::npos) return false;
  return true;
}

std::string QuantizationConfig::describe() const {
  return quant_method + " " + fmt + ", " + std::to_string(block_out) + "x" + std::to_string(block_in) +
         " weight tiles, " + activation_scheme + " per-token activations";
}

}  // namespace abridge::engine
