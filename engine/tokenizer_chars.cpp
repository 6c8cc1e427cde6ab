#include "engine/tokenizer_chars.h"

#include <utf8proc.h>

#include <array>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"

namespace abridge::engine::tokenizer_chars {
namespace {

struct CodeRange {
  uint32_t first, last;
};

// Letters and numbers of Unicode 15.1 and 16.0, which tokenizers' Oniguruma knows and utf8proc 2.8
// (Unicode 15.0) does not. Found by pre-tokenizing "!" X "a" for every code point X with tokenizers
// 0.23.2 and comparing with utf8proc's categories; only these differed.
constexpr CodeRange kExtraLetters[] = {
    {0x1C89, 0x1C8A},   {0xA7CB, 0xA7CD},   {0xA7DA, 0xA7DC},   {0x105C0, 0x105F3}, {0x10D4A, 0x10D65},
    {0x10D6F, 0x10D85}, {0x10EC2, 0x10EC4}, {0x11380, 0x11389}, {0x1138B, 0x1138B}, {0x1138E, 0x1138E},
    {0x11390, 0x113B5}, {0x113B7, 0x113B7}, {0x113D1, 0x113D1}, {0x113D3, 0x113D3}, {0x11BC0, 0x11BE0},
    {0x13460, 0x143FA}, {0x16100, 0x1611D}, {0x16D40, 0x16D6C}, {0x18CFF, 0x18CFF}, {0x1E5D0, 0x1E5ED},
    {0x1E5F0, 0x1E5F0}, {0x2EBF0, 0x2EE5D},
};
constexpr CodeRange kExtraNumbers[] = {
    {0x10D40, 0x10D49}, {0x116D0, 0x116E3}, {0x11BF0, 0x11BF9}, {0x16130, 0x16139},
    {0x16D70, 0x16D79}, {0x1CCF0, 0x1CCF9}, {0x1E5F1, 0x1E5FA},
};

// tokenizers normalizes with the tables of unicode-normalization-alignments, which are Unicode 9.0:
// to it, the combining marks and composites assigned since (and the parts of those composites) are
// plain starters with no decomposition, and NFC leaves them and their neighbours apart. Found by
// comparing its NFC with ICU's (Unicode 17) on "a" X U+0301 / U+0323 / U+0334, on X and on NFD(X),
// for every code point X.
constexpr CodeRange kNfcUnknownToTokenizers[] = {
    {0x07FD, 0x07FD},   {0x0897, 0x089F},   {0x08CA, 0x08D3},   {0x09FE, 0x09FE},   {0x0C3C, 0x0C3C},
    {0x0D3B, 0x0D3C},   {0x0EBA, 0x0EBA},   {0x1715, 0x1715},   {0x1ABF, 0x1ADD},   {0x1AE0, 0x1AEB},
    {0x1DF6, 0x1DFA},   {0xA82C, 0xA82C},   {0x105C9, 0x105C9}, {0x105D2, 0x105D2}, {0x105DA, 0x105DA},
    {0x105E4, 0x105E4}, {0x10D24, 0x10D27}, {0x10D69, 0x10D6D}, {0x10EAB, 0x10EAC}, {0x10EFA, 0x10EFB},
    {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85}, {0x11070, 0x11070}, {0x1133B, 0x1133B},
    {0x11382, 0x11385}, {0x1138B, 0x1138B}, {0x1138E, 0x1138E}, {0x11390, 0x11391}, {0x113B8, 0x113B8},
    {0x113BB, 0x113BB}, {0x113C2, 0x113C2}, {0x113C5, 0x113C5}, {0x113C7, 0x113C9}, {0x113CE, 0x113D0},
    {0x1145E, 0x1145E}, {0x11839, 0x1183A}, {0x11930, 0x11930}, {0x11935, 0x11935}, {0x11938, 0x11938},
    {0x1193D, 0x1193E}, {0x11943, 0x11943}, {0x119E0, 0x119E0}, {0x11A34, 0x11A34}, {0x11A47, 0x11A47},
    {0x11A99, 0x11A99}, {0x11D42, 0x11D42}, {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42},
    {0x1611E, 0x16129}, {0x1612F, 0x1612F}, {0x16D68, 0x16D6A}, {0x16FF0, 0x16FF1}, {0x1E08F, 0x1E08F},
    {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF}, {0x1E5EE, 0x1E5EF},
    {0x1E6E3, 0x1E6E3}, {0x1E6E6, 0x1E6E6}, {0x1E6EE, 0x1E6EF}, {0x1E6F5, 0x1E6F5},
};

bool is_white_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

uint8_t category_flags(uint32_t cp) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
      return kLetter;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return kNumber;
    default:
      return 0;
  }
}

}  // namespace

std::string nfc_with_utf8proc(std::string_view text) {
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(bytes_of(text), static_cast<utf8proc_ssize_t>(text.size()), &out,
                                          static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  ABRIDGE_CHECK(n >= 0, std::string("utf8proc_map: ") + utf8proc_errmsg(n));
  std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

CharTable::CharTable() : flags_(0x110000) {
  std::vector<std::pair<uint32_t, int32_t>> first_of_decomposition;
  std::array<utf8proc_int32_t, 32> buf;
  for (uint32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp < 0xE000) continue;
    const auto c = static_cast<utf8proc_int32_t>(cp);
    uint8_t& f = flags_[cp];
    f |= category_flags(cp);
    if (is_white_space(cp)) f |= kSpace;
    if (cp == '\r' || cp == '\n') f |= kNewline;
    if (utf8proc_get_property(c)->combining_class != 0) f |= kNfcUnsafe;
    int boundclass = 0;
    const utf8proc_ssize_t n =
        utf8proc_decompose_char(c, buf.data(), buf.size(), UTF8PROC_DECOMPOSE, &boundclass);
    ABRIDGE_CHECK(n >= 1 && n <= static_cast<utf8proc_ssize_t>(buf.size()), "U+" + std::to_string(cp));
    if (n == 1 && buf[0] == c) continue;
    // Every later character of a full decomposition may combine with the one before it.
    for (utf8proc_ssize_t k = 1; k < n; ++k) flags_[static_cast<uint32_t>(buf[k])] |= kNfcUnsafe;
    first_of_decomposition.emplace_back(cp, buf[0]);
    std::string one;
    append_utf8(one, cp);
    if (nfc_with_utf8proc(one) != one) f |= kNfcUnsafe;
  }
  for (const auto& [cp, first] : first_of_decomposition)
    if (flags_[static_cast<uint32_t>(first)] & kNfcUnsafe) flags_[cp] |= kNfcUnsafe;

  for (const CodeRange& r : kExtraLetters)
    for (uint32_t cp = r.first; cp <= r.last; ++cp) flags_[cp] = (flags_[cp] & ~kNumber) | kLetter;
  for (const CodeRange& r : kExtraNumbers)
    for (uint32_t cp = r.first; cp <= r.last; ++cp) flags_[cp] = (flags_[cp] & ~kLetter) | kNumber;
  for (const CodeRange& r : kNfcUnknownToTokenizers)
    for (uint32_t cp = r.first; cp <= r.last; ++cp) flags_[cp] = (flags_[cp] & ~kNfcUnsafe) | kNfcOpaque;
  // normalize_nfc skips ASCII eight bytes at a time.
  for (uint32_t cp = 0; cp < 0x80; ++cp)
    ABRIDGE_CHECK(!(flags_[cp] & (kNfcUnsafe | kNfcOpaque)), std::to_string(cp));
}

// Built once per process (~40 ms) and never changed.
const CharTable& char_table() {
  static const CharTable table;
  return table;
}

// ---------------------------------------------------------------------------------------------
// GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the other 68 bytes
// for U+0100.. in byte order (space is U+0120 "Ġ", newline U+010A "Ċ").

ByteAlphabet::ByteAlphabet() {
  to_byte.fill(-1);
  uint32_t extra = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    to_cp[b] = printable ? b : 0x100 + extra++;
    to_byte[to_cp[b]] = static_cast<int16_t>(b);
  }
}

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet;  // immutable table
  return alphabet;
}

// The raw bytes a vocabulary string stands for. A string with a character outside the alphabet is
// taken as it is, as tokenizers' ByteLevel decoder does.
std::string vocab_to_bytes(std::string_view form) {
  const ByteAlphabet& a = byte_alphabet();
  std::string out;
  const unsigned char* p = bytes_of(form);
  for (size_t i = 0; i < form.size();) {
    uint32_t len;
    const uint32_t cp = decode_valid_utf8(p + i, len);
    if (cp >= a.to_byte.size() || a.to_byte[cp] < 0) return std::string(form);
    out += static_cast<char>(a.to_byte[cp]);
    i += len;
  }
  return out;
}

std::string bytes_to_vocab(std::string_view raw) {
  std::string out;
  for (unsigned char b : raw) append_utf8(out, byte_alphabet().to_cp[b]);
  return out;
}

}  // namespace abridge::engine::tokenizer_chars
