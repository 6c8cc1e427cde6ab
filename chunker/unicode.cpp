#include "chunker/unicode.h"

#include <utf8proc.h>

namespace abridge::chunker::detail {

size_t escape_length(std::string_view s, size_t i) {
  if (s[i] != '\x1B') return 0;
  if (i + 1 >= s.size()) return 1;
  const char kind = s[i + 1];
  if (kind == '[') {  // CSI: parameter and intermediate bytes 0x20-0x3F, final byte 0x40-0x7E
    size_t j = i + 2;
    while (j < s.size() && static_cast<uint8_t>(s[j]) >= 0x20 && static_cast<uint8_t>(s[j]) <= 0x3F) ++j;
    if (j < s.size() && static_cast<uint8_t>(s[j]) >= 0x40 && static_cast<uint8_t>(s[j]) <= 0x7E) ++j;
    return j - i;
  }
  if (kind == ']') {  // OSC: up to BEL or ESC '\'
    size_t j = i + 2;
    while (j < s.size() && s[j] != '\x07' && s[j] != '\x1B' && s[j] != '\n') ++j;
    if (j < s.size() && s[j] == '\x07') ++j;
    else if (j + 1 < s.size() && s[j] == '\x1B' && s[j + 1] == '\\') j += 2;
    return j - i;
  }
  return static_cast<uint8_t>(kind) >= 0x20 && static_cast<uint8_t>(kind) < 0x7F ? 2 : 1;
}

bool is_letter(char32_t c) {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}

bool is_upper(char32_t c) {
  if (c < 0x80) return c >= 'A' && c <= 'Z';
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT;
}

bool is_lower(char32_t c) {
  if (c < 0x80) return c >= 'a' && c <= 'z';
  return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_LL;
}

char32_t to_lower(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}

}  // namespace abridge::chunker::detail
