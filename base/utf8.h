// UTF-8, once for the whole project: the tokenizer, the chunker and the pipeline read text with these.
//
// Strict, as RFC 3629 and Unicode's "well-formed UTF-8" define it: no overlong forms, no surrogates
// (U+D800..U+DFFF), nothing above U+10FFFF. The reading functions are inline: they sit in the inner
// loops of the tokenizer's pre-tokenizer and the chunker's scans.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace abridge {

// U+FFFD REPLACEMENT CHARACTER, what an invalid sequence becomes where text must stay valid.
inline constexpr std::string_view kUtf8Replacement = "\xEF\xBF\xBD";

// One step of a reader at p[0..n), n >= 1.
//  kValid: `len` bytes (1..4) are one character;
//  kInvalid: `len` (>= 1) is the maximal ill-formed subpart (Unicode's "maximal subpart" rule, which
//    Hugging Face tokenizers and WHATWG decoders follow when they replace invalid bytes);
//  kIncomplete: all n bytes are a valid prefix of a longer sequence (a stream may complete it).
enum class Utf8Kind : uint8_t { kValid, kInvalid, kIncomplete };
struct Utf8Sequence {
  Utf8Kind kind;
  uint32_t len;
};

inline Utf8Sequence utf8_sequence(const unsigned char* p, size_t n) {
  const unsigned b0 = p[0];
  if (b0 < 0x80) return {Utf8Kind::kValid, 1};
  uint32_t need;
  unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte (no overlongs, no surrogates)
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {Utf8Kind::kInvalid, 1};
  }
  for (uint32_t k = 1; k < need; ++k) {
    if (k >= n) return {Utf8Kind::kIncomplete, k};
    if (p[k] < lo || p[k] > hi) return {Utf8Kind::kInvalid, k};
    lo = 0x80;
    hi = 0xBF;
  }
  return {Utf8Kind::kValid, need};
}

// The code point at p, which must start a valid sequence (utf8_sequence() said kValid); sets its length.
inline char32_t decode_valid_utf8(const unsigned char* p, uint32_t& len) {
  const uint32_t b0 = p[0];
  if (b0 < 0x80) {
    len = 1;
    return b0;
  }
  if (b0 < 0xE0) {
    len = 2;
    return (b0 & 0x1F) << 6 | (p[1] & 0x3F);
  }
  if (b0 < 0xF0) {
    len = 3;
    return (b0 & 0x0F) << 12 | (p[1] & 0x3F) << 6 | (p[2] & 0x3F);
  }
  len = 4;
  return (b0 & 0x07) << 18 | (p[1] & 0x3F) << 12 | (p[2] & 0x3F) << 6 | (p[3] & 0x3F);
}

// One character of possibly invalid text. An invalid or incomplete sequence reads as {U+FFFD, 1,
// false}: one byte at a time, so a scan always advances and byte offsets stay exact.
struct Utf8Char {
  char32_t cp;
  uint32_t len;
  bool valid;
};

inline Utf8Char decode_utf8(std::string_view s, size_t i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + i;
  if (p[0] < 0x80) return {p[0], 1, true};
  if (utf8_sequence(p, s.size() - i).kind != Utf8Kind::kValid) return {0xFFFD, 1, false};
  uint32_t len;
  const char32_t cp = decode_valid_utf8(p, len);
  return {cp, len, true};
}

// Whether the 8 bytes at p are all ASCII (scans of mostly-ASCII text skip ahead by words).
inline bool ascii8(const unsigned char* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  return (w & 0x8080808080808080ull) == 0;
}

// Whether the byte continues a sequence (10xxxxxx): never the first byte of a character.
inline bool is_utf8_continuation(unsigned char b) { return (b & 0xC0) == 0x80; }

// Whether a character, shown raw, can change how a terminal or a viewer shows what follows it, so that
// a name holding it must be escaped in messages, logs and JSON: the C0 and C1 controls and DEL
// (U+0000..U+001F, U+007F..U+009F: U+009B is a one-character CSI where 8-bit controls are honoured,
// U+0085 NEL a line break), the line and paragraph separators U+2028 and U+2029, and the characters of
// Unicode's Bidi_Control property (PropList.txt: U+061C, U+200E, U+200F, U+202A..U+202E,
// U+2066..U+2069), which reorder the text around them (CVE-2021-42574, "Trojan Source").
constexpr bool is_display_control(char32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 || cp == 0x061C || cp == 0x200E ||
         cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

// The byte offset of the first invalid or incomplete sequence in `text`, or npos when it is valid.
size_t find_invalid_utf8(std::string_view text);

// Appends the encoding of `cp` (at most U+10FFFF; surrogates are the caller's business).
void append_utf8(std::string& out, char32_t cp);

// `text` with each byte of an invalid or incomplete sequence replaced by U+FFFD (decode_utf8()'s
// reading), so offsets of the valid text keep their order.
std::string to_valid_utf8(std::string_view text);

// Moves the complete prefix of `pending` to the result, each invalid sequence (maximal subpart) as one
// U+FFFD. An incomplete tail stays in `pending` for the next call, or becomes one U+FFFD when `final`.
// (Streaming a byte-level decoder's output: a character split across tokens is given once whole.)
std::string take_complete_utf8(std::string& pending, bool final);

}  // namespace abridge
