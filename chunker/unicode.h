// Character classes for the chunker (internal). UTF-8 itself is base/utf8.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/utf8.h"

namespace abridge::chunker::detail {

// Length of an ANSI escape sequence at s[i] (ESC [ params final, ESC ] ... BEL/ST, or ESC + one
// byte); 0 when s[i] is not ESC.
size_t escape_length(std::string_view s, size_t i);

// Not shown to the model: C0/C1 controls other than tab and line ends, DEL, BOM / zero-width no-break.
inline bool is_invisible(char32_t c) {
  return (c < 0x20 && c != '\t' && c != '\n') || (c >= 0x7F && c <= 0x9F) || c == 0xFEFF;
}
inline bool is_space(char32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == 0xA0 || c == 0x3000 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F;
}
// Han, kana, Hangul and CJK punctuation/full-width forms: text written without spaces between words.
inline bool is_cjk(char32_t c) {
  return (c >= 0x2E80 && c <= 0x9FFF) || (c >= 0xAC00 && c <= 0xD7AF) || (c >= 0xF900 && c <= 0xFAFF) ||
         (c >= 0xFF00 && c <= 0xFFEF) || (c >= 0x20000 && c <= 0x3FFFF);
}
inline bool is_han(char32_t c) {
  return (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xF900 && c <= 0xFAFF) ||
         (c >= 0x20000 && c <= 0x3FFFF) || (c >= 0x3040 && c <= 0x30FF);
}
inline bool is_ascii_digit(char32_t c) { return c >= '0' && c <= '9'; }
bool is_letter(char32_t c);
bool is_upper(char32_t c);
bool is_lower(char32_t c);
char32_t to_lower(char32_t c);

// Sentence terminators that end a sentence at once (CJK) or when followed by a space (ASCII).
inline bool is_cjk_terminal(char32_t c) {
  return c == 0x3002 || c == 0xFF01 || c == 0xFF1F || c == 0xFF1B || c == 0xFF0E || c == 0xFF61 || c == 0x2026;
}
inline bool is_ascii_terminal(char32_t c) { return c == '.' || c == '!' || c == '?'; }
inline bool is_terminal(char32_t c) { return is_ascii_terminal(c) || is_cjk_terminal(c); }
// Closers that stay with the sentence they end: quotes and closing brackets, ASCII and full-width.
inline bool is_closer(char32_t c) {
  switch (c) {
    case '"': case '\'': case ')': case ']': case '}': case '*': case '_':
    case 0x2019: case 0x201D: case 0x00BB: case 0x203A:
    case 0x300D: case 0x300F: case 0x300B: case 0x3009: case 0x3011: case 0x3015: case 0x3017:
    case 0xFF09: case 0xFF3D: case 0xFF5D: case 0xFF02: case 0xFF07:
      return true;
    default:
      return false;
  }
}
// Clause punctuation for splitting a sentence that is longer than the budget.
inline bool is_clause_punct(char32_t c) {
  return c == ',' || c == ';' || c == ':' || c == 0xFF0C || c == 0xFF1B || c == 0xFF1A || c == 0x3001 ||
         c == 0x2014 || c == 0x2013;
}

}  // namespace abridge::chunker::detail
