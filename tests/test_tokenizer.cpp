// Tokenizer tests. The expected ids all come from Hugging Face tokenizers, never from this
// implementation: llama.cpp's Qwen2 vectors (qwen2.inp/.out), and fixtures made with tokenizers
// 0.23.2 through its Node binding (see tests/data/tokenizer/REFERENCE.md): random strings built to
// reach every alternative of the pre-tokenizer pattern, and the ids of three whole documents.
#include "engine/tokenizer.h"

#include <gtest/gtest.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "base/error.h"
#include "base/utf8.h"
#include "engine/embedded_data.h"
#include "tests/test_support.h"

namespace abridge::engine {
namespace {

namespace t = abridge::testing;
using json = nlohmann::json;
using Ids = std::vector<int32_t>;

constexpr int32_t kEndOfText = 151643, kImStart = 151644, kImEnd = 151645, kThink = 151667, kThinkEnd = 151668;

const Tokenizer& qwen() {
  static const Tokenizer tok = Tokenizer::from_json(bundled_tokenizer_json(), "bundled tokenizer.json");
  return tok;
}

const json& bundled_doc() {
  static const json doc = json::parse(bundled_tokenizer_json());
  return doc;
}

// The text with control and non-ASCII bytes escaped, for failure messages.
std::string shown(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    }
  }
  return out + "\"";
}

std::string ids_text(const Ids& ids) {
  std::string out;
  for (int32_t id : ids) {
    if (!out.empty()) out += ' ';
    out += std::to_string(id);
  }
  return out;
}

Ids parse_ids(const std::string& text) {
  Ids ids;
  std::istringstream in(text);
  for (int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

std::string nfc(const std::string& s) {
  utf8proc_uint8_t* out = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(s.c_str()));
  if (out == nullptr) throw std::runtime_error("utf8proc_NFC failed");
  std::string r(reinterpret_cast<const char*>(out));
  std::free(out);
  return r;
}

std::string read_text(const std::string& name) { return t::read_file(t::source_path("tests/data/texts/" + name)); }

// The first bytes of `s`, at most n, cut at a character boundary.
std::string utf8_prefix(const std::string& s, size_t n) {
  if (n >= s.size()) return s;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

// Compares two id lists; on a mismatch names the first differing index and the text around it.
::testing::AssertionResult same_ids(const Ids& got, const Ids& want) {
  if (got == want) return ::testing::AssertionSuccess();
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  auto window = [&](const Ids& v) {
    const size_t from = i > 5 ? i - 5 : 0, to = std::min(v.size(), i + 5);
    std::string s = qwen().decode(Ids(v.begin() + static_cast<ptrdiff_t>(from), v.begin() + static_cast<ptrdiff_t>(to)));
    return ids_text(Ids(v.begin() + static_cast<ptrdiff_t>(from), v.begin() + static_cast<ptrdiff_t>(to))) + " " + shown(s);
  };
  return ::testing::AssertionFailure() << got.size() << " ids, want " << want.size() << "; first difference at index "
                                       << i << ": got [" << window(got) << "], want [" << window(want) << "]";
}

// --- exact ids -------------------------------------------------------------------------------

// llama.cpp's test-tokenizer-0 layout: cases separated by "\n__ggml_vocab_test__\n", one line of ids
// each in the .out file; both files end with a separator, so the last case is the empty text.
TEST(Tokenizer, LlamaCppQwen2Vectors) {
  const std::string inp = t::read_file(t::source_path("tests/data/tokenizer/qwen2.inp"));
  const std::string out = t::read_file(t::source_path("tests/data/tokenizer/qwen2.out"));
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0;;) {
    const size_t next = inp.find(sep, pos);
    if (next == std::string::npos) {
      texts.push_back(inp.substr(pos));
      break;
    }
    texts.push_back(inp.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::vector<std::string> lines;
  std::istringstream lines_in(out);
  for (std::string line; std::getline(lines_in, line);) lines.push_back(line);
  if (!out.empty() && out.back() == '\n') lines.push_back("");  // the empty last case
  ASSERT_EQ(texts.size(), 47u);
  ASSERT_EQ(lines.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i)
    EXPECT_TRUE(same_ids(qwen().encode(texts[i], AddedTokens::kMatch), parse_ids(lines[i])))
        << "case " << i << ": " << shown(texts[i]);
}

TEST(Tokenizer, RandomStringsMatchHuggingFace) {
  const json fx = json::parse(t::read_file(t::source_path("tests/data/tokenizer/qwen3-random.json")));
  ASSERT_GT(fx["match"].size(), 1500u);
  ASSERT_GT(fx["plain"].size(), 100u);
  int failures = 0;
  for (const auto& [key, mode] : {std::pair{"match", AddedTokens::kMatch}, std::pair{"plain", AddedTokens::kPlain}}) {
    for (const json& c : fx[key]) {
      const std::string text = c["text"].get<std::string>();
      const Ids want = c["ids"].get<Ids>();
      const auto ok = same_ids(qwen().encode(text, mode), want);
      EXPECT_TRUE(ok) << key << " " << shown(text);
      if (!ok && ++failures > 20) FAIL() << "too many failures";
    }
  }
}

TEST(Tokenizer, WholeDocumentsMatchHuggingFace) {
  for (const char* name : {"R-intro", "tang300", "debian-edu-bookworm-manual.zh-cn"}) {
    const Ids want = parse_ids(t::read_file(t::source_path(std::string("tests/data/tokenizer/") + name + ".ids")));
    ASSERT_GT(want.size(), 20000u) << name;
    EXPECT_TRUE(same_ids(qwen().encode(read_text(std::string(name) + ".txt"), AddedTokens::kMatch), want)) << name;
  }
  // Sherlock's 143,942 reference ids (it has CRLF line ends and a BOM) are kept as their count and
  // FNV-1a-64 over little-endian int32s.
  const Ids ids = qwen().encode(read_text("sherlock-pg1661.txt"), AddedTokens::kMatch);
  uint64_t h = 0xCBF29CE484222325ull;
  for (int32_t id : ids)
    for (int k = 0; k < 4; ++k) h = (h ^ (static_cast<uint32_t>(id) >> (8 * k) & 0xFF)) * 0x100000001B3ull;
  EXPECT_EQ(ids.size(), 143942u);
  EXPECT_EQ(h, 0xE04FC343DADD2BDBull);
}

// count() is encode().size() without the ids: on whole documents (one that NFC changes, CRLF, Chinese),
// with and without added tokens, and across the point where it drops the ids it has counted.
TEST(Tokenizer, CountIsTheNumberOfIds) {
  for (const char* name :
       {"sherlock-pg1661.txt", "tang300.txt", "R-intro.txt", "debian-edu-bookworm-manual.zh-cn.txt"}) {
    const std::string text = read_text(name);
    for (const AddedTokens added : {AddedTokens::kPlain, AddedTokens::kMatch})
      EXPECT_EQ(qwen().count(text, added), qwen().encode(text, added).size()) << name;
  }
  const std::string chat = "<|im_start|>user\nhi<|im_end|><think>";
  EXPECT_EQ(qwen().count(chat, AddedTokens::kMatch), qwen().encode(chat, AddedTokens::kMatch).size());
  EXPECT_EQ(qwen().count(chat, AddedTokens::kPlain), qwen().encode(chat, AddedTokens::kPlain).size());
  EXPECT_EQ(qwen().count(""), 0u);
  EXPECT_THROW(qwen().count("abc\xFF"), Error);
}

TEST(Tokenizer, NormalizesToNfcBeforeSplitting) {
  EXPECT_EQ(qwen().encode("cafe\xCC\x81"), qwen().encode("caf\xC3\xA9"));      // e + U+0301 -> é
  EXPECT_EQ(qwen().encode("\xE2\x84\xAB"), qwen().encode("\xC3\x85"));          // U+212B ANGSTROM SIGN -> Å
  EXPECT_EQ(qwen().encode("\xE1\x84\x80\xE1\x85\xA1"), qwen().encode("\xEA\xB0\x80"));  // jamo -> 가
  EXPECT_NE(qwen().encode("cafe\xCC\x81"), qwen().encode("cafe"));
}

// --- round trip ------------------------------------------------------------------------------

TEST(Tokenizer, RoundTripsRealTextsToTheirNfc) {
  for (const char* name :
       {"sherlock-pg1661.txt", "tang300.txt", "R-intro.txt", "debian-edu-bookworm-manual.zh-cn.txt"}) {
    const std::string text = read_text(name);
    EXPECT_EQ(qwen().decode(qwen().encode(text, AddedTokens::kPlain)), nfc(text)) << name;
  }
  // R-intro has one decomposed "c" + U+0327, so the check above covers a text that NFC changes.
  EXPECT_NE(nfc(read_text("R-intro.txt")), read_text("R-intro.txt"));
}

// --- added tokens ----------------------------------------------------------------------------

TEST(Tokenizer, AddedTokensMatchedOnlyWhenAsked) {
  const std::string chat = "<|im_start|>user\nhi<|im_end|>";
  const Ids matched = qwen().encode(chat, AddedTokens::kMatch);
  ASSERT_GE(matched.size(), 3u);
  EXPECT_EQ(matched.front(), kImStart);
  EXPECT_EQ(matched.back(), kImEnd);
  EXPECT_EQ(Ids(matched.begin() + 1, matched.end() - 1), qwen().encode("user\nhi"));

  const Ids plain = qwen().encode(chat, AddedTokens::kPlain);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), kImStart), 0);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), kImEnd), 0);
  EXPECT_GT(plain.size(), matched.size());
  EXPECT_EQ(qwen().decode(plain), chat);
  EXPECT_EQ(qwen().encode(chat), plain) << "kPlain is the default";

  EXPECT_EQ(qwen().encode("<think>", AddedTokens::kMatch), Ids{kThink});
  EXPECT_EQ(qwen().encode("<think></think><|endoftext|>", AddedTokens::kMatch), (Ids{kThink, kThinkEnd, kEndOfText}));
  EXPECT_EQ(qwen().encode("<<think>>", AddedTokens::kMatch).size(), 3u);
  EXPECT_EQ(qwen().encode("<<think>>", AddedTokens::kMatch)[1], kThink);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), kThink), 0);
}

// --- invalid UTF-8 ---------------------------------------------------------------------------

TEST(Tokenizer, InvalidUtf8IsAnErrorNamingTheByte) {
  try {
    qwen().encode("abc\xFF" "def");
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("invalid UTF-8 at byte 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(qwen().encode("<|im_end|>\xC3", AddedTokens::kMatch), Error);
}

// --- decoding --------------------------------------------------------------------------------

// GPT-2's byte-level alphabet, written out again here: the vocabulary string of one raw byte.
std::string byte_token(unsigned char b) {
  uint32_t cp = b;
  if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
    cp = 0x100;
    for (unsigned x = 0; x < b; ++x)
      if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) ++cp;
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

int32_t byte_id(unsigned char b) {
  const int32_t id = qwen().token_id(byte_token(b));
  EXPECT_GE(id, 0) << "byte " << int{b};
  return id;
}

TEST(Tokenizer, DecodeAndLookups) {
  const Tokenizer& tok = qwen();
  EXPECT_EQ(tok.n_tokens(), 151669);
  // From qwen2.out: "Hello world" -> 9707 1879.
  EXPECT_EQ(tok.token_id("Hello"), 9707);
  EXPECT_EQ(tok.token_id("\xC4\xA0world"), 1879);  // vocabulary strings are byte-level ("Ġworld")
  EXPECT_EQ(tok.token_bytes(1879), " world");
  EXPECT_EQ(tok.token_id("<|im_end|>"), kImEnd);
  EXPECT_EQ(tok.token_id("<think>"), kThink);
  EXPECT_EQ(tok.token_id("no such token"), -1);
  EXPECT_EQ(tok.token_bytes(kImEnd), "<|im_end|>");
  EXPECT_EQ(tok.token_bytes(byte_id(0xE4)), "\xE4");
  EXPECT_EQ(tok.token_bytes(byte_id(' ')), " ");
  EXPECT_EQ(tok.token_bytes(byte_id('\n')), "\n");

  EXPECT_TRUE(tok.is_special(kEndOfText));
  EXPECT_TRUE(tok.is_special(kImEnd));
  EXPECT_FALSE(tok.is_special(kThink));  // added, but not special
  EXPECT_FALSE(tok.is_special(9707));
  EXPECT_FALSE(tok.is_special(-1));
  EXPECT_FALSE(tok.is_special(tok.n_tokens()));

  const Ids ids = {9707, kImEnd, 1879, kThink};
  EXPECT_EQ(tok.decode(ids), "Hello<|im_end|> world<think>");
  EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), "Hello world<think>");
  for (int32_t bad : {-1, 151669, 1 << 30}) {
    try {
      tok.decode(Ids{9707, bad});
      ADD_FAILURE() << "no exception for " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
    }
    EXPECT_THROW(tok.token_bytes(bad), Error);
  }
}

TEST(StreamDecoder, HoldsSplitCharactersUntilWhole) {
  const Tokenizer& tok = qwen();
  // 龘 is no single token: byte-level BPE splits its three bytes over several tokens.
  const Ids ids = tok.encode("\xE9\xBE\x98!");
  ASSERT_GE(ids.size(), 3u);
  StreamDecoder dec(tok);
  std::string seen;
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    const std::string piece = dec.push(ids[i]);
    EXPECT_TRUE(piece.empty() || piece == "\xE9\xBE\x98") << shown(piece);
    seen += piece;
  }
  EXPECT_EQ(seen, "\xE9\xBE\x98");
  EXPECT_EQ(dec.push(ids.back()), "!");
  EXPECT_EQ(dec.finish(), "");
}

TEST(StreamDecoder, PushesConcatenateToDecode) {
  const Tokenizer& tok = qwen();
  const std::string text = utf8_prefix(read_text("tang300.txt"), 6000) + "<|im_end|>";
  const Ids ids = tok.encode(text, AddedTokens::kMatch);
  for (bool skip : {true, false}) {
    StreamDecoder dec(tok, skip);
    std::string all;
    for (int32_t id : ids) {
      const std::string piece = dec.push(id);
      EXPECT_EQ(find_invalid_utf8(piece), std::string_view::npos);
      all += piece;
    }
    all += dec.finish();
    EXPECT_EQ(all, tok.decode(ids, skip));
  }
}

TEST(StreamDecoder, InvalidBytesBecomeReplacementCharacters) {
  const Tokenizer& tok = qwen();
  const std::string fffd = "\xEF\xBF\xBD";
  StreamDecoder dec(tok);
  EXPECT_EQ(dec.push(byte_id(0xE4)), "");
  EXPECT_EQ(dec.push(byte_id(0xB8)), "");               // still a valid prefix of 中
  EXPECT_EQ(dec.push(byte_id('A')), fffd + "A");        // E4 B8 can no longer complete: one U+FFFD
  EXPECT_EQ(dec.push(byte_id(0xFF)), fffd);             // never valid
  EXPECT_EQ(dec.push(byte_id(0xF0)), "");
  EXPECT_EQ(dec.push(byte_id(0x80)), fffd + fffd);      // F0 80 is ill-formed from its second byte
  EXPECT_EQ(dec.push(byte_id(0xE4)), "");
  EXPECT_EQ(dec.push(kImEnd), "");                      // special tokens are skipped by default
  EXPECT_EQ(dec.finish(), fffd);                        // incomplete tail
  EXPECT_EQ(dec.finish(), "");

  StreamDecoder keep(tok, /*skip_special=*/false);
  EXPECT_EQ(keep.push(kImEnd), "<|im_end|>");
  EXPECT_THROW(keep.push(-5), Error);
}

// --- loading and errors ------------------------------------------------------------------------

// A small byte-level tokenizer: the 256 byte tokens, "ab" = 256, "abc" = 257.
json tiny_tokenizer(bool legacy_merges) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_token(static_cast<unsigned char>(b))] = b;
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  json doc;
  doc["normalizer"] = {{"type", "NFC"}};
  doc["pre_tokenizer"] = bundled_doc()["pre_tokenizer"];
  doc["decoder"] = {{"type", "ByteLevel"}};
  doc["model"] = {{"type", "BPE"}, {"vocab", vocab}};
  doc["model"]["merges"] = legacy_merges ? json::array({"a b", "ab c"}) : json::array({{"a", "b"}, {"ab", "c"}});
  return doc;
}

TEST(Tokenizer, TinyTokenizerBothMergeForms) {
  for (bool legacy : {false, true}) {
    const Tokenizer tok = Tokenizer::from_json(tiny_tokenizer(legacy).dump());
    EXPECT_EQ(tok.n_tokens(), 258);
    EXPECT_EQ(tok.encode("abcab"), (Ids{257, 256})) << legacy;
    EXPECT_EQ(tok.encode("cab ab"), (Ids{'c', 256, ' ', 256})) << legacy;  // " ab" is one pre-token
  }
}

TEST(Tokenizer, LegacyMergeStringsGiveTheSameIds) {
  json doc = bundled_doc();
  for (json& m : doc["model"]["merges"]) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  const Tokenizer legacy = Tokenizer::from_json(doc.dump(), "legacy.json");
  const std::string text = utf8_prefix(read_text("R-intro.txt"), 20000) + utf8_prefix(read_text("tang300.txt"), 20000);
  EXPECT_EQ(legacy.encode(text), qwen().encode(text));
}

void expect_error(const std::function<void()>& f, std::initializer_list<std::string_view> parts) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (std::string_view p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "\"" << msg << "\" lacks " << p;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(Tokenizer, LoadErrorsNameTheFile) {
  expect_error([] { Tokenizer::from_json("{\"model\": ", "broken.json"); }, {"broken.json", "not valid JSON"});
  expect_error([] { Tokenizer::from_json("[1, 2]", "list.json"); }, {"list.json"});
  expect_error([] { Tokenizer::from_json("{}", "empty.json"); }, {"empty.json", "model"});

  json doc = tiny_tokenizer(false);
  doc["model"]["type"] = "WordPiece";
  expect_error([&] { Tokenizer::from_json(doc.dump(), "wp.json"); }, {"wp.json", "WordPiece"});
  doc = tiny_tokenizer(false);
  doc["model"].erase("vocab");
  expect_error([&] { Tokenizer::from_json(doc.dump(), "nv.json"); }, {"nv.json", "vocab"});
  doc = tiny_tokenizer(false);
  doc["model"].erase("merges");
  expect_error([&] { Tokenizer::from_json(doc.dump(), "nm.json"); }, {"nm.json", "merges"});
  doc = tiny_tokenizer(false);
  doc["model"]["merges"].push_back({"ab", "zz"});
  expect_error([&] { Tokenizer::from_json(doc.dump(), "um.json"); }, {"um.json", "merge 2", "zz"});
  doc = tiny_tokenizer(false);
  doc["model"]["merges"].push_back({"b", "c"});  // "bc" is not in the vocabulary
  expect_error([&] { Tokenizer::from_json(doc.dump(), "bc.json"); }, {"bc.json", "\"bc\""});
  doc = tiny_tokenizer(true);
  doc["model"]["merges"].push_back("abc");
  expect_error([&] { Tokenizer::from_json(doc.dump(), "lm.json"); }, {"lm.json", "merge 2"});
  doc = tiny_tokenizer(false);
  doc["model"]["vocab"]["x2"] = "seven";
  expect_error([&] { Tokenizer::from_json(doc.dump(), "ni.json"); }, {"ni.json", "x2"});
  doc = tiny_tokenizer(false);
  doc["model"]["vocab"].erase(byte_token(0xFF));
  expect_error([&] { Tokenizer::from_json(doc.dump(), "nb.json"); }, {"nb.json", "byte 255"});
  doc = tiny_tokenizer(false);
  doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+";
  expect_error([&] { Tokenizer::from_json(doc.dump(), "pt.json"); }, {"pt.json", "pre_tokenizer"});
  doc = tiny_tokenizer(false);
  doc["added_tokens"] = json::array({{{"id", 300}, {"content", "<x>"}, {"lstrip", true}}});
  expect_error([&] { Tokenizer::from_json(doc.dump(), "at.json"); }, {"at.json", "lstrip"});
}

TEST(Tokenizer, FromPath) {
  t::TempDir dir;
  expect_error([&] { Tokenizer::from_path((dir / "missing.json").string()); }, {"missing.json"});
  expect_error([&] { Tokenizer::from_path(dir.path().string()); },
               {dir.path().string(), "no tokenizer.json in directory"});
  t::write_file(dir / "tokenizer.json", tiny_tokenizer(false).dump());
  EXPECT_EQ(Tokenizer::from_path(dir.path().string()).encode("abc"), Ids{257});
  EXPECT_EQ(Tokenizer::from_path((dir / "tokenizer.json").string()).encode("abc"), Ids{257});
  t::write_file(dir / "bad.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": [");
  expect_error([&] { Tokenizer::from_path((dir / "bad.json").string()); }, {"bad.json", "not valid JSON"});
}

// --- the per-call cache and threads ------------------------------------------------------------

// More distinct pre-tokens than the cache holds, so it is cleared mid-call; each word is also
// encoded on its own, which never touches a full cache.
TEST(Tokenizer, CacheEvictionKeepsIdsExact) {
  std::string text;
  std::vector<std::string> words;
  for (int i = 0; i < 90000; ++i) {
    std::string w = " ";
    for (int v = i * 7919 + 13; v > 0; v /= 26) w += static_cast<char>('a' + v % 26);
    words.push_back(w);
    text += w;
  }
  const Ids all = qwen().encode(text);
  Ids one_by_one;
  for (const std::string& w : words) {
    const Ids ids = qwen().encode(w);
    one_by_one.insert(one_by_one.end(), ids.begin(), ids.end());
  }
  EXPECT_TRUE(same_ids(all, one_by_one));
}

TEST(Tokenizer, ConcurrentEncodesAgree) {
  const std::string text = read_text("debian-edu-bookworm-manual.zh-cn.txt");
  const Ids want = qwen().encode(text);
  std::vector<Ids> got(4);
  std::vector<std::thread> threads;
  for (auto& g : got) threads.emplace_back([&] { g = qwen().encode(text); });
  for (auto& th : threads) th.join();
  for (const Ids& g : got) EXPECT_EQ(g, want);
}

}  // namespace
}  // namespace abridge::engine
