#include "pipeline/text_encoding.h"

#include <iconv.h>
#include <uchardet/uchardet.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "base/error.h"
#include "base/utf8.h"

namespace abridge::pipeline {
namespace {

constexpr size_t kDetectBytes = size_t{4} << 20;      // uchardet reads this much of a file
constexpr size_t kUtf16SampleBytes = size_t{64} << 10;  // NUL parity is counted over this much

struct IconvCloser {
  void operator()(iconv_t cd) const { ::iconv_close(cd); }
};
using Iconv = std::unique_ptr<std::remove_pointer_t<iconv_t>, IconvCloser>;

Iconv open_to_utf8(const std::string& from) {
  iconv_t cd = ::iconv_open("UTF-8", from.c_str());
  return Iconv(cd == reinterpret_cast<iconv_t>(-1) ? nullptr : cd);
}

// Converts `in` from `from` to UTF-8 in `out`. On an invalid or incomplete sequence returns false with
// `bad` at its first byte. Throws for a name iconv does not know.
bool to_utf8(const std::string& from, std::string_view in, std::string& out, size_t& bad) {
  const Iconv cd = open_to_utf8(from);
  if (!cd) throw Error("unknown encoding '" + from + "'");
  out.clear();
  out.reserve(in.size() + in.size() / 2);
  char* ip = const_cast<char*>(in.data());
  size_t left = in.size();
  char buf[16384];
  for (bool flushing = false;;) {
    char* op = buf;
    size_t room = sizeof buf;
    // Once all input is converted, one call without input ends a stateful encoding (ISO-2022-JP).
    const size_t r = flushing ? ::iconv(cd.get(), nullptr, nullptr, &op, &room) : ::iconv(cd.get(), &ip, &left, &op, &room);
    out.append(buf, static_cast<size_t>(op - buf));
    if (r != static_cast<size_t>(-1)) {
      if (flushing) return true;
      flushing = true;
    } else if (errno != E2BIG) {
      bad = static_cast<size_t>(ip - in.data());  // EILSEQ: invalid here; EINVAL: cut short at the end
      return false;
    }
  }
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// NUL, C0 controls other than tab, line feed, vertical tab, form feed, carriage return and ESC, and DEL.
bool is_control_byte(unsigned char c) {
  return c == 0x7F || (c < 0x20 && c != '\t' && c != '\n' && c != '\v' && c != '\f' && c != '\r' && c != 0x1B);
}

void refuse_controls(std::string_view bytes) {
  const size_t n = bytes.size();
  if (n == 0) return;
  const size_t controls = static_cast<size_t>(std::count_if(bytes.begin(), bytes.end(), [](char c) {
    return is_control_byte(static_cast<unsigned char>(c));
  }));
  if (static_cast<double>(controls) > kMaxControlShare * static_cast<double>(n)) {
    const int percent = static_cast<int>(100.0 * static_cast<double>(controls) / static_cast<double>(n) + 0.5);
    throw Error("not text: " + std::to_string(percent) + "% of its bytes are NUL or control characters");
  }
}

// The same check on decoded UTF-8 (a UTF-16 file): code points below U+0020 and DEL count.
void refuse_decoded_controls(std::string_view utf8) {
  size_t chars = 0, controls = 0;
  for (const char c : utf8) {
    const auto b = static_cast<unsigned char>(c);
    if ((b & 0xC0) == 0x80) continue;
    ++chars;
    controls += is_control_byte(b);
  }
  if (chars > 0 && static_cast<double>(controls) > kMaxControlShare * static_cast<double>(chars)) {
    const int percent = static_cast<int>(100.0 * static_cast<double>(controls) / static_cast<double>(chars) + 0.5);
    throw Error("not text: " + std::to_string(percent) + "% of its characters are NUL or control characters");
  }
}

// UTF-16 without a byte-order mark: "", "UTF-16LE" or "UTF-16BE". ASCII characters (line ends, spaces,
// digits, Latin letters) put their NUL byte on one parity; Han characters put a NUL on the other only
// for U+xx00, one in 256.
std::string utf16_without_bom(std::string_view bytes) {
  const std::string_view s = bytes.substr(0, std::min(bytes.size(), kUtf16SampleBytes) & ~size_t{1});
  const size_t units = s.size() / 2;
  if (units < 2) return "";
  size_t nul_even = 0, nul_odd = 0;
  for (size_t i = 0; i < s.size(); i += 2) {
    nul_even += s[i] == '\0';
    nul_odd += s[i + 1] == '\0';
  }
  const size_t need = std::max<size_t>(2, units / 64);  // a line end every 64 characters at least
  if (nul_odd >= need && nul_even * 16 <= nul_odd) return "UTF-16LE";
  if (nul_even >= need && nul_odd * 16 <= nul_even) return "UTF-16BE";
  return "";
}

std::string decode_marked(const std::string& encoding, std::string_view body, size_t mark) {
  std::string out;
  size_t bad = 0;
  if (!to_utf8(encoding, body, out, bad)) {
    if (bad + 1 >= body.size() && encoding.rfind("UTF-16", 0) == 0 && body.size() % 2 != 0)
      throw Error(encoding + " text with an odd number of bytes");
    throw Error("invalid " + encoding + " at byte " + std::to_string(bad + mark));
  }
  return out;
}

// uchardet's answer widened to the superset that files written on Windows use (WHATWG's decoders).
std::string widen(const std::string& label) {
  if (label == "SHIFT_JIS") return "CP932";
  if (label == "EUC-KR" || label == "UHC") return "CP949";
  if (label == "BIG5") return "BIG5-HKSCS";
  if (label == "GB2312" || label == "GBK") return "GB18030";
  if (label == "ISO-8859-1") return "WINDOWS-1252";
  if (label == "ISO-8859-9") return "WINDOWS-1254";
  return label;
}

bool is_multi_byte(const std::string& enc) {
  for (const char* p : {"GB18030", "BIG5", "CP932", "EUC-", "CP949", "ISO-2022", "UTF-", "HZ-"})
    if (enc.rfind(p, 0) == 0) return true;
  return false;
}

std::string join_or(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out += i + 1 == v.size() ? " or " : ", ";
    out += v[i];
  }
  return out;
}

}  // namespace

std::string detect_encoding(std::string_view bytes) {
  const std::unique_ptr<uchardet, void (*)(uchardet_t)> ud(uchardet_new(), uchardet_delete);
  if (!ud) throw Error("uchardet: out of memory");
  const std::string_view head = bytes.substr(0, kDetectBytes);
  uchardet_handle_data(ud.get(), head.data(), head.size());
  uchardet_data_end(ud.get());
  const char* label = uchardet_get_charset(ud.get());
  return widen(label ? label : "");
}

void check_encoding_name(const std::string& name) {
  if (name.empty() || !open_to_utf8(name))
    throw Error("unknown encoding '" + name + "' (any name that iconv knows: see 'iconv --list')");
}

DecodedText decode_text(std::string bytes, const std::string& forced, bool keep_invalid_utf8) {
  DecodedText r;
  auto drop_feff = [](std::string& s) {
    if (starts_with(s, "\xEF\xBB\xBF")) s.erase(0, 3);
  };
  if (!forced.empty()) {
    check_encoding_name(forced);
    size_t bad = 0;
    if (!to_utf8(forced, bytes, r.text, bad)) throw Error("invalid " + forced + " at byte " + std::to_string(bad));
    drop_feff(r.text);
    refuse_decoded_controls(r.text);
    r.encoding = forced;
    return r;
  }

  // Byte-order marks; UTF-32LE's starts like UTF-16LE's, so it is tested first.
  struct Mark {
    std::string_view bytes;
    const char* encoding;
  };
  static constexpr Mark kMarks[] = {{{"\xFF\xFE\0\0", 4}, "UTF-32LE"},
                                    {{"\0\0\xFE\xFF", 4}, "UTF-32BE"},
                                    {"\xFF\xFE", "UTF-16LE"},
                                    {"\xFE\xFF", "UTF-16BE"}};
  for (const Mark& m : kMarks) {
    if (!starts_with(bytes, m.bytes)) continue;
    r.encoding = m.encoding;
    r.text = decode_marked(r.encoding, std::string_view(bytes).substr(m.bytes.size()), m.bytes.size());
    refuse_decoded_controls(r.text);
    return r;
  }
  if (starts_with(bytes, "\xEF\xBB\xBF")) {
    bytes.erase(0, 3);
    refuse_controls(bytes);
    const size_t bad = find_invalid_utf8(bytes);
    if (bad != std::string::npos && !keep_invalid_utf8)
      throw Error("invalid UTF-8 at byte " + std::to_string(bad + 3) + " (the file starts with a UTF-8 byte-order mark)");
    r.text = std::move(bytes);
    r.encoding = "UTF-8";
    return r;
  }

  if (const std::string utf16 = utf16_without_bom(bytes); !utf16.empty()) {
    r.encoding = utf16;
    r.text = decode_marked(utf16, bytes, 0);
    drop_feff(r.text);
    refuse_decoded_controls(r.text);
    return r;
  }
  refuse_controls(bytes);

  const size_t bad = find_invalid_utf8(bytes);
  if (bad == std::string::npos) {
    r.text = std::move(bytes);
    r.encoding = "UTF-8";
    return r;
  }

  // Not UTF-8: what uchardet says, if the file bears it out.
  const size_t high = static_cast<size_t>(
      std::count_if(bytes.begin(), bytes.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; }));
  const std::string guess = detect_encoding(bytes);
  std::string why;
  std::string converted;
  if (guess == "UTF-8" || guess == "ASCII") {
    why = "the rest reads as UTF-8: the file looks damaged";
  } else if (guess.empty() || !open_to_utf8(guess)) {
    why = "its encoding cannot be told";
  } else if (size_t at = 0; !to_utf8(guess, bytes, converted, at)) {
    why = "its encoding cannot be told (it is not " + guess + " either: invalid at byte " + std::to_string(at) + ")";
  } else if (high < (is_multi_byte(guess) ? kMinMultiByteEvidence : kMinSingleByteEvidence)) {
    why = "it has only " + std::to_string(high) + (high == 1 ? " byte" : " bytes") +
          " above ASCII, too few to tell its encoding";
  } else {
    drop_feff(converted);
    refuse_decoded_controls(converted);
    r.text = std::move(converted);
    r.encoding = guess;
    return r;
  }
  if (keep_invalid_utf8) {
    r.text = std::move(bytes);
    r.encoding = "UTF-8";
    return r;
  }
  std::string message = "invalid UTF-8 at byte " + std::to_string(bad) + ", and " + why;
  if (guess != "UTF-8" && guess != "ASCII") {
    // The guess and the encodings met most, in this order: those that read the whole file.
    std::vector<std::string> likely;
    std::string scratch;
    size_t at = 0;
    if (!guess.empty() && open_to_utf8(guess) && to_utf8(guess, bytes, scratch, at)) likely.push_back(guess);
    for (const char* enc : {"GB18030", "BIG5-HKSCS", "CP932", "CP949", "WINDOWS-1252", "WINDOWS-1250", "WINDOWS-1251"})
      if (likely.size() < 4 && enc != guess && to_utf8(enc, bytes, scratch, at)) likely.push_back(enc);
    if (!likely.empty()) message += " (it reads as " + join_or(likely) + ")";
  }
  throw Error(message + (guess == "UTF-8" || guess == "ASCII" ? " (or name its encoding with --encoding)"
                                                                : "; name it with --encoding"));
}

}  // namespace abridge::pipeline
