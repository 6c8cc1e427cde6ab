// libFuzzer target for ModelConfig::from_json (config.json): every input must either give a config that
// passes its own validation and survives a round trip through to_json(), or throw abridge::Error with
// one line of bounded length. A crash, a sanitizer report, a stack overflow on deep nesting, another
// exception or a broken invariant (__builtin_trap) is a finding. Built and run by tests/fuzz/run.sh.
//
// The first byte picks how the rest is used: as the whole file, or spliced as the value of one field of
// a valid Qwen3 config (so the fuzzer reaches each field's checks behind a well-formed document).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "engine/config.h"
#include "base/error.h"

namespace {

constexpr const char* kFields[] = {
    "vocab_size",  "hidden_size",        "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim",   "max_position_embeddings", "rope_theta", "rms_norm_eps",
    "tie_word_embeddings", "sliding_window", "use_sliding_window", "max_window_layers", "eos_token_id",
    "bos_token_id", "rope_scaling", "rope_parameters", "model_type", "hidden_act", "torch_dtype",
};
constexpr size_t kNumFields = sizeof kFields / sizeof kFields[0];

std::string document(size_t field, const std::string& value) {
  const std::string base =
      R"("vocab_size":1000,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,)"
      R"("num_key_value_heads":2,"head_dim":16,"max_position_embeddings":4096,"rope_theta":1000000,)"
      R"("rms_norm_eps":1e-6,"tie_word_embeddings":true,"eos_token_id":[1,2],"bos_token_id":0)";
  return "{\"model_type\":\"qwen3\"," + base + ",\"" + kFields[field] + "\":" + value + "}";
}

void check(const std::string& text) {
  using abridge::engine::ModelConfig;
  try {
    const ModelConfig c = ModelConfig::from_json(text, "fuzz.json");
    c.validate("fuzz.json");  // a config that loads is valid
    const ModelConfig again = ModelConfig::from_json(c.to_json(), "round trip");
    if (again.vocab_size != c.vocab_size || again.hidden_size != c.hidden_size ||
        again.num_hidden_layers != c.num_hidden_layers || again.head_dim != c.head_dim ||
        again.eos_token_ids != c.eos_token_ids || again.bos_token_id != c.bos_token_id ||
        again.sliding_window != c.sliding_window || again.max_window_layers != c.max_window_layers)
      __builtin_trap();
    for (int32_t id : c.eos_token_ids)
      if (id < 0 || id >= c.vocab_size) __builtin_trap();
  } catch (const abridge::Error& e) {
    const size_t n = std::strlen(e.what());
    if (std::memchr(e.what(), '\n', n) != nullptr || n > 600) __builtin_trap();  // one short line
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const size_t pick = data[0] % (kNumFields + 1);
  check(pick == kNumFields ? rest : document(pick, rest));
  return 0;
}
