#include "pipeline/text_input.h"


#include "base/error.h"
#include "base/file.h"
#include "base/utf8.h"

namespace abridge::pipeline {
namespace {

// UTF-16 (after the BOM) to UTF-8; unpaired surrogates are an error.
std::string utf16_to_utf8(std::string_view bytes, bool big_endian) {
  if (bytes.size() % 2 != 0) throw Error("UTF-16 text with an odd number of bytes");
  std::string out;
  out.reserve(bytes.size());
  auto unit = [&](size_t i) -> uint32_t {
    const auto a = static_cast<uint8_t>(bytes[i]), b = static_cast<uint8_t>(bytes[i + 1]);
    return big_endian ? (a << 8 | b) : (b << 8 | a);
  };
  for (size_t i = 0; i < bytes.size(); i += 2) {
    uint32_t u = unit(i);
    if (u >= 0xD800 && u < 0xDC00) {
      if (i + 3 >= bytes.size())
        throw Error("invalid UTF-16 (unpaired surrogate) at byte " + std::to_string(i + 2));
      const uint32_t lo = unit(i + 2);
      if (lo < 0xDC00 || lo >= 0xE000)
        throw Error("invalid UTF-16 (unpaired surrogate) at byte " + std::to_string(i + 2));
      u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
      i += 2;
    } else if (u >= 0xDC00 && u < 0xE000) {
      throw Error("invalid UTF-16 (unpaired surrogate) at byte " + std::to_string(i + 2));
    }
    append_utf8(out, u);
  }
  return out;
}

}  // namespace

// BOM handling, UTF-16, strict UTF-8; throws abridge::Error without the path.
static std::string decode_strict(std::string bytes) {
  std::string text;
  size_t bom = 0;
  auto starts = [&](std::string_view p) { return bytes.size() >= p.size() && bytes.compare(0, p.size(), p) == 0; };
  if (starts("\xEF\xBB\xBF")) {
    text = bytes.substr(3);
    bom = 3;
  } else if (starts("\xFF\xFE")) {
    text = utf16_to_utf8(std::string_view(bytes).substr(2), false);
  } else if (starts("\xFE\xFF")) {
    text = utf16_to_utf8(std::string_view(bytes).substr(2), true);
  } else {
    text = std::move(bytes);
  }
  const size_t bad = find_invalid_utf8(text);
  if (bad != std::string::npos)
    throw Error("invalid UTF-8 at byte " + std::to_string(bad + bom) + " (only UTF-8 and UTF-16 with a BOM are accepted)");
  return text;
}

std::string read_text_file(const std::string& path, size_t max_bytes) {
  std::string bytes;
  try {
    bytes = read_regular_file(path, max_bytes);  // one open, a regular file, bounded
    return decode_strict(std::move(bytes));
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

}  // namespace abridge::pipeline
