#include "base/utf8.h"

namespace abridge {

size_t find_invalid_utf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    if (i + 8 <= n && ascii8(p + i)) {  // most text is ASCII: eight bytes at a time
      i += 8;
      continue;
    }
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const Utf8Sequence seq = utf8_sequence(p + i, n - i);
    if (seq.kind != Utf8Kind::kValid) return i;
    i += seq.len;
  }
  return std::string_view::npos;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | cp >> 6);
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | cp >> 12);
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | cp >> 18);
    out += static_cast<char>(0x80 | (cp >> 12 & 0x3F));
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string to_valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    const size_t bad = find_invalid_utf8(text);
    if (bad == std::string_view::npos) {
      out.append(text);
      break;
    }
    out.append(text.substr(0, bad));
    out.append(kUtf8Replacement);
    text.remove_prefix(bad + 1);
  }
  return out;
}

std::string take_complete_utf8(std::string& pending, bool final) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(pending.data());
  size_t i = 0;
  while (i < pending.size()) {
    const Utf8Sequence seq = utf8_sequence(p + i, pending.size() - i);
    if (seq.kind == Utf8Kind::kIncomplete && !final) break;
    if (seq.kind == Utf8Kind::kValid) {
      out.append(pending, i, seq.len);
    } else {
      out += kUtf8Replacement;
    }
    i += seq.kind == Utf8Kind::kIncomplete ? pending.size() - i : seq.len;
  }
  pending.erase(0, i);
  return out;
}

}  // namespace abridge
