// Reading tokenizer.json into the tokenizer's tables (Tokenizer::Impl, tokenizer_impl.h): the
// vocabulary, the added tokens and the merges. The model's options, the normalizer, the pre-tokenizer
// and the decoder must be the ones tokenizer.cpp implements: any other is refused with one line naming
// the file, never guessed or ignored.
#include "engine/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/file.h"
#include "base/utf8.h"
#include "engine/read_file.h"
#include "engine/tokenizer_chars.h"
#include "engine/tokenizer_impl.h"

namespace abridge::engine {
namespace {

using json = nlohmann::json;
using tokenizer_detail::AddedToken;
using tokenizer_detail::kQwenPattern;
using tokenizer_chars::byte_alphabet;
using tokenizer_chars::vocab_to_bytes;

// One short line: vocabulary forms and merge strings in a hostile file can be megabytes long or hold
// newlines.
[[noreturn]] void fail(std::string_view source, const std::string& what) {
  throw Error(std::string(source) + ": " + one_line(what, 300));
}

const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

bool is_null_or(const json* j, const json& value) { return j == nullptr || j->is_null() || *j == value; }

void check_pre_tokenizer(const json* pt, std::string_view source) {
  auto is = [](const json* j, const char* key, const json& value) {
    const json* m = member(*j, key);
    return m != nullptr && *m == value;
  };
  bool ok = pt != nullptr && is(pt, "type", "Sequence");
  const json* list = ok ? member(*pt, "pretokenizers") : nullptr;
  ok = ok && list != nullptr && list->is_array() && list->size() == 2;
  if (ok) {
    const json& split = (*list)[0];
    const json& bytes = (*list)[1];
    const json* pattern = member(split, "pattern");
    ok = is(&split, "type", "Split") && pattern != nullptr && is(pattern, "Regex", std::string(kQwenPattern)) &&
         is(&split, "behavior", "Isolated") && is_null_or(member(split, "invert"), false) &&
         is(&bytes, "type", "ByteLevel") && is_null_or(member(bytes, "add_prefix_space"), false) &&
         is(&bytes, "use_regex", false);
  }
  if (!ok)
    fail(source,
         "unsupported \"pre_tokenizer\": only Qwen2's (Split on its pattern, then ByteLevel without regex) "
         "is implemented");
}

}  // namespace

Tokenizer Tokenizer::from_json(std::string_view json_text, std::string_view source) {
  auto impl = std::make_unique<Impl>();
  json doc;
  try {
    doc = parse_json_bounded(json_text);  // nesting bounded: a value 100,000 levels deep is refused
  } catch (const Error& e) {
    fail(source, e.what());
  }
  try {
    if (!doc.is_object()) fail(source, "expected a JSON object");
    const json* model = member(doc, "model");
    if (model == nullptr || !model->is_object()) fail(source, "missing \"model\"");
    if (const json* type = member(*model, "type"); type != nullptr && *type != "BPE")
      fail(source, "unsupported model type " + type->dump() + " (only \"BPE\" is implemented)");
    if (!is_null_or(member(*model, "byte_fallback"), false)) fail(source, "unsupported \"byte_fallback\": true");
    if (!is_null_or(member(*model, "dropout"), nullptr)) fail(source, "unsupported BPE \"dropout\"");
    if (!is_null_or(member(*model, "continuing_subword_prefix"), "") ||
        !is_null_or(member(*model, "end_of_word_suffix"), ""))
      fail(source, "unsupported \"continuing_subword_prefix\" or \"end_of_word_suffix\"");
    if (const json* im = member(*model, "ignore_merges"); im != nullptr && !im->is_null())
      impl->ignore_merges = im->get<bool>();

    const json* normalizer = member(doc, "normalizer");
    if (normalizer != nullptr && !normalizer->is_null()) {
      if (!is_null_or(member(*normalizer, "type"), "NFC"))
        fail(source, "unsupported \"normalizer\" " + member(*normalizer, "type")->dump() + " (only NFC)");
      impl->nfc = true;
    }
    check_pre_tokenizer(member(doc, "pre_tokenizer"), source);
    if (const json* decoder = member(doc, "decoder"); decoder != nullptr && !decoder->is_null() &&
                                                       !is_null_or(member(*decoder, "type"), "ByteLevel"))
      fail(source, "unsupported \"decoder\" (only ByteLevel)");

    // Vocabulary.
    const json* vocab = member(*model, "vocab");
    if (vocab == nullptr || !vocab->is_object()) fail(source, "missing \"model.vocab\" (an object)");
    constexpr int64_t kMaxId = int64_t{1} << 24;
    int64_t n_tokens = 0;
    impl->vocab.reserve(vocab->size());
    for (const auto& [form, id_json] : vocab->items()) {
      if (!id_json.is_number_integer()) fail(source, "vocab entry \"" + form + "\" has a non-integer id");
      const auto id = id_json.get<int64_t>();
      if (id < 0 || id >= kMaxId) fail(source, "vocab entry \"" + form + "\" has id " + std::to_string(id));
      impl->vocab.emplace(form, static_cast<int32_t>(id));
      n_tokens = std::max(n_tokens, id + 1);
    }
    if (impl->vocab.empty()) fail(source, "empty \"model.vocab\"");

    // Added tokens.
    std::vector<AddedToken>& added = impl->added;
    if (const json* list = member(doc, "added_tokens"); list != nullptr && !list->is_null()) {
      if (!list->is_array()) fail(source, "\"added_tokens\" must be a list");
      for (const json& t : *list) {
        const json* id = member(t, "id");
        const json* content = member(t, "content");
        if (id == nullptr || !id->is_number_integer() || content == nullptr || !content->is_string())
          fail(source, "added token " + t.dump() + " needs an integer \"id\" and a string \"content\"");
        const auto value = id->get<int64_t>();
        const std::string text = content->get<std::string>();
        if (value < 0 || value >= kMaxId) fail(source, "added token \"" + text + "\" has id " + std::to_string(value));
        if (text.empty()) fail(source, "added token " + std::to_string(value) + " is empty");
        for (const char* flag : {"lstrip", "rstrip", "single_word", "normalized"})
          if (!is_null_or(member(t, flag), false))
            fail(source, "added token \"" + text + "\": \"" + flag + "\": true is not supported");
        const json* special = member(t, "special");
        added.push_back({text, static_cast<int32_t>(value), special != nullptr && special->is_boolean() && special->get<bool>()});
        n_tokens = std::max(n_tokens, value + 1);
      }
    }

    // Token table: vocabulary bytes, then added tokens over them.
    impl->token_kind.assign(static_cast<size_t>(n_tokens), Impl::kHole);
    std::vector<std::string> bytes(static_cast<size_t>(n_tokens));
    for (const auto& [form, id] : impl->vocab) {
      if (impl->token_kind[id] != Impl::kHole)
        fail(source, "vocab id " + std::to_string(id) + " is given to two tokens (one is \"" + form + "\")");
      impl->token_kind[id] = Impl::kVocab;
      bytes[id] = vocab_to_bytes(form);
    }
    for (const AddedToken& t : added) {
      impl->token_kind[t.id] = t.special ? Impl::kSpecial : Impl::kAdded;
      bytes[t.id] = t.content;
    }
    impl->token_offset.resize(bytes.size() + 1);
    size_t total = 0;
    for (const std::string& b : bytes) total += b.size();
    impl->token_data.reserve(total);
    for (size_t i = 0; i < bytes.size(); ++i) {
      impl->token_offset[i] = static_cast<uint32_t>(impl->token_data.size());
      impl->token_data += bytes[i];
    }
    impl->token_offset.back() = static_cast<uint32_t>(impl->token_data.size());

    for (uint32_t b = 0; b < 256; ++b) {
      std::string form;
      append_utf8(form, byte_alphabet().to_cp[b]);
      auto it = impl->vocab.find(form);
      if (it == impl->vocab.end())
        fail(source, "the vocabulary has no token for byte " + std::to_string(b) + " (\"" + form +
                         "\"); a byte-level BPE needs all 256");
      impl->byte_id[b] = it->second;
    }

    std::stable_sort(added.begin(), added.end(),
                     [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
    for (const AddedToken& t : added) impl->added_first[static_cast<unsigned char>(t.content[0])] = true;

    // Merges: [["a", "b"], ...] or the older ["a b", ...].
    const json* merges = member(*model, "merges");
    if (merges == nullptr || !merges->is_array()) fail(source, "missing \"model.merges\" (a list)");
    impl->merges.reserve(merges->size());
    std::string joined;
    auto lookup = [&](const std::string& token, size_t rank) {
      auto it = impl->vocab.find(token);
      if (it == impl->vocab.end())
        fail(source, "merge " + std::to_string(rank) + " names \"" + token + "\", which is not in the vocabulary");
      return it->second;
    };
    for (size_t rank = 0; rank < merges->size(); ++rank) {
      const json& m = (*merges)[rank];
      std::string a, b;
      if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          fail(source, "merge " + std::to_string(rank) + " \"" + s + "\" is not two tokens separated by a space");
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else {
        fail(source, "merge " + std::to_string(rank) + " is neither [\"a\", \"b\"] nor \"a b\"");
      }
      const int32_t ia = lookup(a, rank), ib = lookup(b, rank);
      joined = a + b;
      auto it = impl->vocab.find(joined);
      if (it == impl->vocab.end())
        fail(source, "merge " + std::to_string(rank) + " makes \"" + joined + "\", which is not in the vocabulary");
      impl->merges.insert(ia, ib, static_cast<uint32_t>(rank), it->second);
    }
  } catch (const json::exception& e) {
    fail(source, std::string("unexpected JSON: ") + e.what());
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path file(path);
  const auto status = fs::status(file, ec);
  if (ec || !fs::exists(status)) throw Error(path + ": no such file or directory");
  if (fs::is_directory(status)) {
    file /= "tokenizer.json";
    if (!fs::exists(file, ec)) throw Error(path + ": no tokenizer.json in directory");
  }
  const std::string name = file.string();
  std::string text;
  try {
    text = read_regular_file(name, kMaxTokenizerJsonBytes);
  } catch (const Error& e) {
    throw Error(name + ": " + e.what());
  }
  return from_json(text, name);
}

}  // namespace abridge::engine
