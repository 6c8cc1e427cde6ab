// The kinds of file abridge is told to read and their bounds: model files (config.json, tokenizer.json,
// the safetensors index), prompts and option files; the bounded read itself is base/file.h's. JSON is
// parsed with its nesting depth bounded, so a hostile file cannot exhaust the stack, and its error
// messages are one short line.
#pragma once

#include <cstddef>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

#include "base/file.h"

namespace abridge::engine {

// Size bounds by kind of file (a real Qwen3 tokenizer.json is 11 MB, its config.json 1 KB).
inline constexpr size_t kMaxTokenizerJsonBytes = size_t{64} << 20;
inline constexpr size_t kMaxConfigJsonBytes = size_t{16} << 20;
inline constexpr size_t kMaxPromptBytes = size_t{1} << 20;
inline constexpr size_t kMaxOptionFileBytes = size_t{1} << 20;
// Nesting of the JSON files abridge reads: real ones are at most 6 deep.
inline constexpr int kMaxJsonDepth = 64;

// Parses JSON text whose arrays and objects nest at most `max_depth` deep, rejecting NUL bytes (and
// duplicate object keys when `unique_keys`: nlohmann keeps the last one silently). Throws
// abridge::Error("not valid JSON: ...") with one line of at most about 300 bytes.
nlohmann::json parse_json_bounded(std::string_view text, int max_depth = kMaxJsonDepth, bool unique_keys = false);

// `s` made safe for a one-line message: control characters (is_display_control(): C0 and C1 controls,
// U+2028/U+2029, bidi controls; with `escape_non_ascii`, every byte of 0x80 and above) as
// \xNN, at most `limit` bytes of it (escapes counted), cut at a character boundary with "..." after.
std::string one_line(std::string_view s, size_t limit, bool escape_non_ascii = false);

}  // namespace abridge::engine
