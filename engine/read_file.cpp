#include "engine/read_file.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <vector>

#include "base/error.h"
#include "base/utf8.h"

namespace abridge::engine {

std::string one_line(std::string_view s, size_t limit, bool escape_non_ascii) {
  // The limit is on what is shown: an escaped byte takes four.
  std::string out;
  size_t i = 0;
  uint32_t run = 0;  // bytes left of a display control (U+009B, U+202E, ...): escaped like a C0 control
  for (; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (run == 0 && c >= 0x80 && !escape_non_ascii) {
      const Utf8Char u = decode_utf8(s, i);
      if (u.valid && is_display_control(u.cp)) run = u.len;
    }
    const bool escape = c < 0x20 || c == 0x7f || (escape_non_ascii && c >= 0x80) || run > 0;
    if (run > 0) --run;
    if (out.size() + (escape ? 4 : 1) > limit) break;
    if (escape) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (i == s.size()) return out;
  // Cut at a character boundary: no half of a UTF-8 sequence before the "...".
  if (!escape_non_ascii) {
    size_t n = out.size();
    while (n > 0 && (static_cast<unsigned char>(out[n - 1]) & 0xC0) == 0x80) --n;
    if (n > 0 && static_cast<unsigned char>(out[n - 1]) >= 0xC0) {
      const auto lead = static_cast<unsigned char>(out[n - 1]);
      const size_t len = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
      if (out.size() - (n - 1) < len) out.resize(n - 1);
    }
  }
  return out + "...";
}

nlohmann::json parse_json_bounded(std::string_view text, int max_depth, bool unique_keys) {
  using nlohmann::json;
  if (text.find('\0') != std::string_view::npos) throw Error("not valid JSON: it holds a NUL byte");
  std::vector<std::unordered_set<std::string>> keys;  // one set per open object (unique_keys)
  // nlohmann's parser keeps its own stack on the heap, but what is done with a value afterwards
  // (dump() in a message, recursive visits) recurses: the depth is bounded where a bracket opens.
  const json::parser_callback_t callback = [&](int depth, json::parse_event_t event, json& parsed) {
    using E = json::parse_event_t;
    if ((event == E::object_start || event == E::array_start) && depth >= max_depth)
      throw Error("not valid JSON: nested more than " + std::to_string(max_depth) + " levels deep");
    if (!unique_keys) return true;
    if (event == E::object_start) keys.emplace_back();
    if (event == E::object_end) keys.pop_back();
    if (event == E::key && !keys.back().insert(parsed.get<std::string>()).second)
      throw Error("duplicate JSON key '" + one_line(parsed.get<std::string>(), 120) + "'");
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {
    // nlohmann's message without its "[json.exception.parse_error.101] " prefix; "last read: '...'"
    // can quote a long token.
    std::string_view what = e.what();
    if (what.starts_with("[json.exception.")) {
      const size_t close = what.find("] ");
      if (close != std::string_view::npos) what.remove_prefix(close + 2);
    }
    throw Error("not valid JSON: " + one_line(what, 300, /*escape_non_ascii=*/true));
  }
}

}  // namespace abridge::engine
