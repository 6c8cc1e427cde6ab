// The tokenizer's state, shared by tokenizer.cpp (encoding and decoding) and tokenizer_json.cpp
// (reading tokenizer.json into it). Internal to engine/.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer.h"
#include "engine/tokenizer_chars.h"

namespace abridge::engine {
namespace tokenizer_detail {

// The only pre-tokenizer pattern Tokenizer::Impl::next_piece_end() implements (Qwen2, Qwen2.5, Qwen3);
// the loader refuses any other.
constexpr std::string_view kQwenPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// (left id, right id) -> (rank, merged id), open addressing with linear probing.
class MergeTable {
 public:
  struct Entry {
    uint64_t key;
    uint32_t rank;
    int32_t merged;
  };

  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    slots_.assign(cap, Entry{kEmpty, 0, 0});
    mask_ = cap - 1;
  }
  // A pair listed twice keeps its later rank, as tokenizers' merge map does.
  void insert(int32_t a, int32_t b, uint32_t rank, int32_t merged) {
    const uint64_t key = make_key(a, b);
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty || slots_[i].key == key) {
        slots_[i] = Entry{key, rank, merged};
        return;
      }
    }
  }
  const Entry* find(int32_t a, int32_t b) const {
    const uint64_t key = make_key(a, b);
    for (size_t i = slot(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i];
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are non-negative, so no pair has this key
  static uint64_t make_key(int32_t a, int32_t b) {
    return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b);
  }
  size_t slot(uint64_t key) const {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return static_cast<size_t>(h ^ h >> 32) & mask_;
  }
  std::vector<Entry> slots_;
  size_t mask_ = 0;
};

// An added token ("<|im_end|>", "<think>"): its content, matched whole in text (AddedTokens::kMatch).
struct AddedToken {
  std::string content;
  int32_t id;
  bool special;
};

}  // namespace tokenizer_detail

struct Tokenizer::Impl {
  // Token table: the bytes of id i are token_data[token_offset[i] .. token_offset[i + 1]).
  std::vector<uint32_t> token_offset;  // (n_tokens + 1)
  std::string token_data;
  std::vector<uint8_t> token_kind;     // (n_tokens) kHole, kVocab, kAdded or kSpecial
  enum : uint8_t { kHole, kVocab, kAdded, kSpecial };

  std::unordered_map<std::string, int32_t> vocab;  // vocabulary string (byte-level form) -> id
  std::array<int32_t, 256> byte_id{};              // id of the one-byte token of each byte
  tokenizer_detail::MergeTable merges;
  bool ignore_merges = false;
  bool nfc = false;

  std::vector<tokenizer_detail::AddedToken> added;  // longest content first
  std::array<bool, 256> added_first{};               // bytes that start some added token
  const tokenizer_chars::CharTable& chars = tokenizer_chars::char_table();

  int32_t n_tokens() const { return static_cast<int32_t>(token_kind.size()); }

  // The stages of encode(), in tokenizer.cpp. EncodeScratch holds one encode() call's buffers.
  struct EncodeScratch;
  // Leftmost-longest added token at or after `from`: its position and index in `added`, or npos.
  size_t find_added(std::string_view text, size_t from, size_t& which) const;
  // NFC of `text`: `text` itself when the quick check passes, otherwise a copy in `buf`.
  std::string_view normalize_nfc(std::string_view text, std::string& buf) const;
  // End of the pre-token that starts at s[i] (kQwenPattern).
  size_t next_piece_end(const unsigned char* s, size_t n, size_t i) const;
  // Appends the BPE ids of one pre-token (raw bytes).
  void bpe(std::string_view piece, EncodeScratch& s, std::vector<int32_t>& out) const;
  // bpe() through the call's cache of pre-tokens.
  void encode_piece(std::string_view piece, EncodeScratch& s, std::vector<int32_t>& out) const;
  // Text between added tokens: NFC, pre-tokenize, BPE. With `counted`, the ids are only counted.
  void encode_ordinary(std::string_view text, EncodeScratch& s, std::vector<int32_t>& out,
                       size_t* counted = nullptr) const;
};

}  // namespace abridge::engine
