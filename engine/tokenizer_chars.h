// What the tokenizer knows of each code point and byte, as tables built once per process: the classes
// its pre-tokenizer pattern asks for (\p{L}, \p{N}, \s, line ends) and the NFC quick check (CharTable),
// NFC itself (utf8proc), and GPT-2's byte-level alphabet. Internal to engine/ (tokenizer.cpp).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/utf8.h"

namespace abridge::engine::tokenizer_chars {

inline const unsigned char* bytes_of(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

enum : uint8_t {
  kLetter = 1,      // \p{L}: Lu Ll Lt Lm Lo
  kNumber = 2,      // \p{N}: Nd Nl No
  kSpace = 4,       // \s: the White_Space property, as Oniguruma (tokenizers' regex engine) defines \s
  kNewline = 8,     // \r or \n (always with kSpace)
  kNfcUnsafe = 16,  // NFC may change this character or merge it into the one before
  kNfcOpaque = 32,  // unknown to tokenizers' NFC tables: a starter that never composes (see below)
};

// A character X is NFC-safe when it is a starter (ccc 0), NFC leaves it alone, it never combines with
// the character before it, and neither does the first character of its decomposition. Then for any
// strings A and B, NFC(A X B) = NFC(A) + NFC(X B): text without unsafe characters is already NFC
// (this is Unicode's NFC quick check), and NFC needs to run only from the last safe character before
// an unsafe one to the next safe one. Letters, CJK, Hangul syllables and all of ASCII are safe; the
// unsafe ones are mostly combining marks, conjoining jamo and singleton decompositions. An opaque
// character splits the same way but stays out of both sides: NFC(A X B) = NFC(A) + X + NFC(B).
class CharTable {
 public:
  CharTable();  // every code point's flags, from utf8proc and the tables above (~40 ms)


  uint8_t operator()(uint32_t cp) const { return flags_[cp]; }

  // Flags of the code point at p (valid UTF-8); sets its length in bytes.
  uint8_t at(const unsigned char* p, uint32_t& len) const {
    if (p[0] < 0x80) {
      len = 1;
      return flags_[p[0]];
    }
    return flags_[decode_valid_utf8(p, len)];
  }

 private:
  std::vector<uint8_t> flags_;  // (0x110000) flags of every code point
};

// Built once per process (~40 ms) and never changed.
const CharTable& char_table();

// NFC of `text` (valid UTF-8) by utf8proc.
std::string nfc_with_utf8proc(std::string_view text);

// GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the other 68 bytes
// for U+0100.. in byte order (space is U+0120 "Ġ", newline U+010A "Ċ").
struct ByteAlphabet {
  std::array<uint32_t, 256> to_cp;
  std::array<int16_t, 512> to_byte;  // -1: not in the alphabet
  ByteAlphabet();
};
const ByteAlphabet& byte_alphabet();

// The raw bytes a vocabulary string stands for. A string with a character outside the alphabet is
// taken as it is, as tokenizers' ByteLevel decoder does.
std::string vocab_to_bytes(std::string_view form);
// The vocabulary string of raw bytes.
std::string bytes_to_vocab(std::string_view raw);

}  // namespace abridge::engine::tokenizer_chars
