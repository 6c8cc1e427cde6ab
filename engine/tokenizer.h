// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (Qwen2/Qwen3 family).
//
// encode() reproduces tokenizers' `encode(text, add_special_tokens=False)`: NFC normalization
// (utf8proc), the Qwen pre-tokenizer pattern (implemented by hand, no std::regex), byte-level
// mapping, BPE merges by rank; added tokens written in the text are matched whole unless the caller
// asks for plain text. Document text is always encoded plain, so a document that contains
// "<|im_end|>" cannot inject a control token.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace abridge::engine {

enum class AddedTokens { kMatch, kPlain };

class Tokenizer {
 public:
  // Parses tokenizer.json text. Throws abridge::Error naming `source` on malformed input.
  static Tokenizer from_json(std::string_view json_text, std::string_view source = "tokenizer.json");
  // `path` is a tokenizer.json file or a directory that holds one.
  static Tokenizer from_path(const std::string& path);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Throws abridge::Error on invalid UTF-8, naming the byte offset.
  std::vector<int32_t> encode(std::string_view text, AddedTokens added = AddedTokens::kPlain) const;
  // encode(text, added).size(), without the list of ids (a document of 100 MB has some 25 million).
  size_t count(std::string_view text, AddedTokens added = AddedTokens::kPlain) const;
  // Concatenated bytes of the tokens (special tokens included unless skip_special). Ids out of range
  // throw abridge::Error. The bytes may end inside a UTF-8 sequence; see StreamDecoder.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // Id of a vocabulary or added token written out (e.g. "<|im_end|>"), or -1.
  int32_t token_id(std::string_view token) const;
  // The token's bytes (added tokens: their content).
  std::string token_bytes(int32_t id) const;
  bool is_special(int32_t id) const;
  // One past the largest id (vocabulary and added tokens).
  int32_t n_tokens() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Streams decoded text: push() returns the text that became complete with this token. A multi-byte
// character split across tokens is printed once it is whole; invalid bytes that can never become
// whole are emitted as U+FFFD, as Hugging Face's decoder does.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = true) : tok_(tok), skip_special_(skip_special) {}
  std::string push(int32_t id);
  std::string finish();  // whatever is still pending

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace abridge::engine
