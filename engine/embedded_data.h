// Files built into the engine: the Qwen3 tokenizer (see data/qwen3-tokenizer/NOTICE.md).
#pragma once

#include <string>

namespace abridge::engine {

// The decompressed text of the bundled Qwen3 tokenizer.json / tokenizer_config.json.
const std::string& bundled_tokenizer_json();
const std::string& bundled_tokenizer_config_json();

}  // namespace abridge::engine
