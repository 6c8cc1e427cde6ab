// The `quantization_config` of a config.json, for the block-wise FP8 checkpoints that Qwen publishes
// (Qwen/Qwen3-4B-Instruct-2507-FP8 and its siblings) and that transformers' fine-grained FP8 path,
// vLLM and SGLang load:
//
//   "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
//                           "weight_block_size": [128, 128], "modules_to_not_convert": ["lm_head"]}
//
// Every quantized linear layer then stores `weight` as F8_E4M3 (out, in) and `weight_scale_inv`
// (ceil(out/128), ceil(in/128)), one multiplier per 128x128 tile; engine/fp8.h has the arithmetic.
// `fmt` and `activation_scheme` may be absent (transformers' own FineGrainedFP8Config writes neither)
// and then mean "e4m3" and "dynamic"; `weight_block_size` is required, because without it the same
// quant_method means per-tensor scales (a different layout, not supported).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace abridge::engine {

struct QuantizationConfig {
  std::string quant_method = "fp8";
  std::string fmt = "e4m3";
  std::string activation_scheme = "dynamic";
  int64_t block_out = 128;  // weight_block_size[0]: tile rows (output features)
  int64_t block_in = 128;   // weight_block_size[1]: tile columns (input features, the K of the product)
  // Modules kept in bf16. A module is kept when an entry is a substring of its name, or of its name
  // with every run of digits replaced by '*' (the rule transformers applies: "model.layers.*.mlp").
  std::vector<std::string> modules_to_not_convert;

  // The object text of "quantization_config"; throws abridge::Error("SOURCE: quantization_config: ...")
  // with one line naming the field: an unsupported quant_method (named), an fmt other than e4m3, an
  // activation scheme other than dynamic, a block size other than [128, 128].
  static QuantizationConfig parse(std::string_view json_object, std::string_view source);
  // The object, as JSON text.
  std::string to_json() const;
  // Whether the linear layer `module` (a tensor name without ".weight") is quantized.
  bool converts(std::string_view module) const;
  // "fp8 e4m3, 128x128 weight tiles, dynamic per-token activations"
  std::string describe() const;
};

}  // namespace abridge::engine
