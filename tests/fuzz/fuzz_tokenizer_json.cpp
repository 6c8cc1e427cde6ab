// libFuzzer target for Tokenizer::from_json (tokenizer.json): every input must either load a tokenizer
// that encodes and decodes a sample within its vocabulary, or throw abridge::Error with one line of
// bounded length. A crash, a sanitizer report, a stack overflow on deep nesting, another exception or a
// broken invariant (__builtin_trap) is a finding. Built and run by tests/fuzz/run.sh.
//
// The first byte picks how the rest is used: as the whole file, or spliced as the value of one member
// of a small valid byte-level BPE (its merges, added tokens, normalizer, pre-tokenizer, decoder or an
// extra vocabulary), so the fuzzer reaches the checks behind a well-formed document.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/tokenizer.h"

namespace {

// GPT-2's byte-to-character map: the printable bytes stand for themselves, the others are moved to 256+.
std::string byte_token(unsigned char b) {
  auto printable = [](unsigned x) { return (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE; };
  uint32_t cp = b;
  if (!printable(b)) {
    cp = 0x100;
    for (unsigned x = 0; x < b; ++x) cp += !printable(x);
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | cp >> 6);
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// A valid tokenizer.json with the member `slot` set to `value` (raw JSON text).
std::string document(int slot, const std::string& value) {
  std::string vocab;
  for (int b = 0; b < 256; ++b) vocab += json_string(byte_token(static_cast<unsigned char>(b))) + ":" + std::to_string(b) + ",";
  vocab += "\"ab\":256,\"abc\":257";
  if (slot == 6) vocab += "," + value;
  const std::string pattern =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+)";
  const std::string pre = R"({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":")" + pattern +
                          R"("},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,"use_regex":false}]})";
  const std::string merges = slot == 0 ? value : R"([["a","b"],["ab","c"]])";
  const std::string added = slot == 1 ? value : R"([{"id":258,"content":"<|end|>","special":true}])";
  const std::string normalizer = slot == 2 ? value : R"({"type":"NFC"})";
  const std::string pre_tokenizer = slot == 3 ? value : pre;
  const std::string decoder = slot == 4 ? value : R"({"type":"ByteLevel"})";
  const std::string model_extra = slot == 5 ? ",\"dropout\":" + value : "";
  return R"({"added_tokens":)" + added + R"(,"normalizer":)" + normalizer + R"(,"pre_tokenizer":)" + pre_tokenizer +
         R"(,"decoder":)" + decoder + R"(,"model":{"type":"BPE","vocab":{)" + vocab + R"(},"merges":)" + merges +
         model_extra + "}}";
}

void check(const std::string& json) {
  using abridge::engine::AddedTokens;
  using abridge::engine::Tokenizer;
  try {
    const Tokenizer tok = Tokenizer::from_json(json, "fuzz.json");
    for (const AddedTokens mode : {AddedTokens::kPlain, AddedTokens::kMatch}) {
      const std::vector<int32_t> ids = tok.encode("abc abcd, world! 中文 <|end|>\n\n  x", mode);
      for (int32_t id : ids)
        if (id < 0 || id >= tok.n_tokens()) __builtin_trap();
      (void)tok.decode(ids);
    }
  } catch (const abridge::Error& e) {
    const size_t n = std::strlen(e.what());
    if (std::memchr(e.what(), '\n', n) != nullptr || n > 600) __builtin_trap();  // one short line
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const int slot = data[0] % 8;
  check(slot == 7 ? rest : document(slot, rest));
  return 0;
}
