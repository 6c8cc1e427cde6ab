// Byte-level BPE tokenizer: encoding and decoding; the contract is in tokenizer.h. Reading
// tokenizer.json into the tables (Tokenizer::Impl, tokenizer_impl.h) is tokenizer_json.cpp.
//
// encode() applies the stages of Hugging Face tokenizers in its order:
//   1. added tokens: leftmost-longest match of their contents in the raw text (kMatch only);
//   2. NFC on each segment between them: a quick check per code point, utf8proc only on the short
//      runs around characters that NFC can change (CharTable in tokenizer_chars.h, normalize_nfc);
//   3. the Qwen2 pre-tokenizer pattern, as a hand-written scanner over code points (next_piece_end);
//   4. byte-level BPE per pre-token, merges lowest rank first and leftmost on ties (bpe), the result
//      cached per pre-token for the length of one encode() call (PieceCache).
// Once the scratch buffers of a call have grown, nothing allocates per pre-token.
//
// To support another pre-tokenizer pattern, add its scanner beside next_piece_end and accept the
// pattern in check_pre_tokenizer (tokenizer_json.cpp); anything the loader does not recognise is
// refused, never guessed.
#include "engine/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include "base/error.h"
#include "base/utf8.h"
#include "engine/tokenizer_chars.h"
#include "engine/tokenizer_impl.h"

namespace abridge::engine {
namespace {

using namespace tokenizer_chars;

// ---------------------------------------------------------------------------------------------
// Pre-token bytes -> ids, for one encode() call. Bounded: cleared when full.

inline uint64_t hash_bytes(const unsigned char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  std::memcpy(&w, p, n);
  h = (h ^ w) * 0x94D049BB133111EBull;
  return h ^ h >> 29;
}

class PieceCache {
 public:
  static constexpr size_t kMaxKey = 96;  // longer pre-tokens are rare and not cached

  // The cached ids of `key`, or nullptr.
  const int32_t* find(std::string_view key, uint64_t hash, uint32_t& n_ids) const {
    if (slots_.empty()) return nullptr;
    for (size_t i = hash & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key_len == 0) return nullptr;
      if (s.hash == hash && s.key_len == key.size() && std::memcmp(keys_.data() + s.key_off, key.data(), key.size()) == 0) {
        n_ids = s.ids_len;
        return ids_.data() + s.ids_off;
      }
    }
  }

  void insert(std::string_view key, uint64_t hash, const int32_t* ids, size_t n_ids) {
    if (2 * (used_ + 1) > slots_.size()) {
      if (slots_.size() < kMaxSlots) {
        grow();
      } else {
        clear();
      }
    }
    size_t i = hash & mask_;
    while (slots_[i].key_len != 0) i = (i + 1) & mask_;
    slots_[i] = Slot{hash, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(ids_.size()),
                     static_cast<uint16_t>(key.size()), static_cast<uint16_t>(n_ids)};
    keys_.append(key);
    ids_.insert(ids_.end(), ids, ids + n_ids);
    ++used_;
  }

 private:
  static constexpr size_t kMaxSlots = size_t{1} << 17;  // 64K pre-tokens, at most ~9 MB of keys and ids
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_off = 0, ids_off = 0;
    uint16_t key_len = 0, ids_len = 0;  // key_len 0: an empty slot (pre-tokens are never empty)
  };

  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 256 : 2 * old.size(), Slot{});
    mask_ = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.key_len == 0) continue;
      size_t i = s.hash & mask_;
      while (slots_[i].key_len != 0) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }
  void clear() {
    std::fill(slots_.begin(), slots_.end(), Slot{});
    keys_.clear();
    ids_.clear();
    used_ = 0;
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t used_ = 0;
  std::string keys_;
  std::vector<int32_t> ids_;
};

}  // namespace

// Scratch space of one encode() call.
struct Tokenizer::Impl::EncodeScratch {
  struct Symbol {
    int32_t id;    // -1 once merged into the symbol on its left
    int32_t prev;  // index of the live symbol on the left, -1 at the start
    int32_t next;  // index of the live symbol on the right, -1 at the end
  };
  std::vector<Symbol> symbols;  // (bytes of the pre-token)
  std::vector<uint64_t> heap;   // rank << 32 | position of the pair's left symbol, a min-heap
  std::string normalized;
  PieceCache cache;
};

// ---------------------------------------------------------------------------------------------
// The stages of encode()

size_t Tokenizer::Impl::find_added(std::string_view text, size_t from, size_t& which) const {
  const unsigned char* p = bytes_of(text);
  for (size_t i = from; i < text.size(); ++i) {
    if (!added_first[p[i]]) continue;
    for (size_t k = 0; k < added.size(); ++k) {
      if (text.compare(i, added[k].content.size(), added[k].content) == 0) {
        which = k;
        return i;
      }
    }
  }
  return std::string_view::npos;
}

std::string_view Tokenizer::Impl::normalize_nfc(std::string_view text, std::string& buf) const {
  const unsigned char* p = bytes_of(text);
  const size_t n = text.size();
  size_t safe_start = 0;  // where NFC of a run would start: the last safe character, or after an opaque one
  size_t copied = 0;      // text[0, copied) is already in buf
  bool changed = false;
  for (size_t i = 0; i < n;) {
    if (i + 8 <= n && ascii8(p + i)) {  // ASCII is always safe
      safe_start = i + 7;
      i += 8;
      continue;
    }
    uint32_t len;
    const uint8_t f = chars.at(p + i, len);
    if (!(f & kNfcUnsafe)) {
      safe_start = f & kNfcOpaque ? i + len : i;
      i += len;
      continue;
    }
    // Normalize from the last safe character to the next one.
    size_t end = i + len;
    while (end < n) {
      uint32_t l;
      if (!(chars.at(p + end, l) & kNfcUnsafe)) break;
      end += l;
    }
    if (!changed) {
      buf.clear();
      changed = true;
    }
    buf.append(text.substr(copied, safe_start - copied));
    buf += nfc_with_utf8proc(text.substr(safe_start, end - safe_start));
    copied = end;
    safe_start = end;
    i = end;
  }
  if (!changed) return text;
  buf.append(text.substr(copied));
  return buf;
}

// End of the pre-token that starts at s[i]: the first alternative of kQwenPattern that matches
// there, with the regex engine's greedy and backtracking choices. Every position matches some
// alternative, so pre-tokens tile the text.
size_t Tokenizer::Impl::next_piece_end(const unsigned char* s, size_t n, size_t i) const {
  uint32_t len0;
  const uint8_t c0 = chars.at(s + i, len0);
  const size_t j = i + len0;

  // (?i:'s|'t|'re|'ve|'m|'ll|'d). Under Unicode case folding 's' also matches U+017F (long s).
  if (s[i] == '\'' && j < n) {
    const unsigned b = s[j] | 0x20;  // ASCII lower case; no other byte folds onto these letters
    if (b == 's' || b == 't' || b == 'm' || b == 'd') return j + 1;
    if (s[j] == 0xC5 && j + 1 < n && s[j + 1] == 0xBF) return j + 2;
    if (j + 1 < n) {
      const unsigned b1 = s[j + 1] | 0x20;
      if ((b == 'r' || b == 'v') && b1 == 'e') return j + 2;
      if (b == 'l' && b1 == 'l') return j + 2;
    }
  }
  auto letters_end = [&](size_t k) {
    uint32_t len;
    while (k < n && (chars.at(s + k, len) & kLetter)) k += len;
    return k;
  };
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (c0 & kLetter) return letters_end(j);
  if (!(c0 & (kNumber | kNewline)) && j < n) {
    uint32_t len1;
    if (chars.at(s + j, len1) & kLetter) return letters_end(j + len1);
  }
  // \p{N}
  if (c0 & kNumber) return j;
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  auto others_end = [&](size_t k) {
    uint32_t len;
    while (k < n && !(chars.at(s + k, len) & (kLetter | kNumber | kSpace))) k += len;
    while (k < n && (s[k] == '\r' || s[k] == '\n')) ++k;
    return k;
  };
  if (!(c0 & kSpace)) return others_end(j);
  if (s[i] == ' ' && j < n) {
    uint32_t len1;
    if (!(chars.at(s + j, len1) & (kLetter | kNumber | kSpace))) return others_end(j + len1);
  }
  // s[i] is white space. \s*[\r\n]+ ends after the last newline of the white-space run;
  // \s+(?!\S) ends at the end of text or gives back the run's last character; \s+ takes the run.
  size_t k = i, last_start = i, newline_end = 0;
  while (k < n) {
    uint32_t len;
    const uint8_t c = chars.at(s + k, len);
    if (!(c & kSpace)) break;
    if (c & kNewline) newline_end = k + len;
    last_start = k;
    k += len;
  }
  if (newline_end != 0) return newline_end;
  if (k == n) return n;
  if (last_start > i) return last_start;
  return k;
}

void Tokenizer::Impl::bpe(std::string_view piece, EncodeScratch& s, std::vector<int32_t>& out) const {
  if (ignore_merges) {
    if (auto it = vocab.find(bytes_to_vocab(piece)); it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  auto& sym = s.symbols;
  sym.resize(piece.size());
  const int32_t m = static_cast<int32_t>(piece.size());
  for (int32_t i = 0; i < m; ++i) sym[i] = {byte_id[static_cast<unsigned char>(piece[i])], i - 1, i + 1};
  sym[m - 1].next = -1;

  auto& heap = s.heap;
  heap.clear();
  auto push = [&heap](uint32_t rank, int32_t pos) {
    heap.push_back(static_cast<uint64_t>(rank) << 32 | static_cast<uint32_t>(pos));
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (int32_t i = 0; i + 1 < m; ++i)
    if (const auto* e = merges.find(sym[i].id, sym[i + 1].id))
      heap.push_back(static_cast<uint64_t>(e->rank) << 32 | static_cast<uint32_t>(i));
  std::make_heap(heap.begin(), heap.end(), std::greater<>());

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const uint64_t top = heap.back();
    heap.pop_back();
    const auto rank = static_cast<uint32_t>(top >> 32);
    const auto pos = static_cast<int32_t>(top & 0xFFFFFFFFu);
    auto& a = sym[pos];
    if (a.id < 0 || a.next < 0) continue;
    auto& b = sym[a.next];
    // An entry is stale when the pair at `pos` has changed since it was pushed; a rank names one pair.
    const auto* e = merges.find(a.id, b.id);
    if (e == nullptr || e->rank != rank) continue;
    a.id = e->merged;
    b.id = -1;
    a.next = b.next;
    if (a.next >= 0) sym[a.next].prev = pos;
    if (a.prev >= 0)
      if (const auto* l = merges.find(sym[a.prev].id, a.id)) push(l->rank, a.prev);
    if (a.next >= 0)
      if (const auto* r = merges.find(a.id, sym[a.next].id)) push(r->rank, pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

void Tokenizer::Impl::encode_piece(std::string_view piece, EncodeScratch& s, std::vector<int32_t>& out) const {
  if (piece.size() == 1) {  // one symbol: no merge can apply
    out.push_back(byte_id[static_cast<unsigned char>(piece[0])]);
    return;
  }
  if (piece.size() > PieceCache::kMaxKey) {
    bpe(piece, s, out);
    return;
  }
  const uint64_t h = hash_bytes(bytes_of(piece), piece.size());
  uint32_t n_ids = 0;
  if (const int32_t* ids = s.cache.find(piece, h, n_ids)) {
    out.insert(out.end(), ids, ids + n_ids);
    return;
  }
  const size_t before = out.size();
  bpe(piece, s, out);
  s.cache.insert(piece, h, out.data() + before, out.size() - before);
}

// Text between added tokens: NFC, pre-tokenize, BPE. With `counted`, the ids are only counted:
// added to *counted and dropped as they pile up, so that counting a long text holds no list of ids.
void Tokenizer::Impl::encode_ordinary(std::string_view text, EncodeScratch& s, std::vector<int32_t>& out,
                                     size_t* counted) const {
  if (text.empty()) return;
  if (nfc) text = normalize_nfc(text, s.normalized);
  const unsigned char* p = bytes_of(text);
  for (size_t i = 0; i < text.size();) {
    const size_t end = next_piece_end(p, text.size(), i);
    encode_piece(text.substr(i, end - i), s, out);
    i = end;
    if (counted && out.size() >= 4096) {
      *counted += out.size();
      out.clear();
    }
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

// ---------------------------------------------------------------------------------------------
// Encoding and decoding

std::vector<int32_t> Tokenizer::encode(std::string_view text, AddedTokens added) const {
  if (const size_t bad = find_invalid_utf8(text); bad != std::string_view::npos)
    throw Error("invalid UTF-8 at byte " + std::to_string(bad));
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  Impl::EncodeScratch scratch;
  size_t pos = 0;
  if (added == AddedTokens::kMatch && !impl_->added.empty()) {
    size_t which = 0;
    for (size_t at; (at = impl_->find_added(text, pos, which)) != std::string_view::npos;) {
      impl_->encode_ordinary(text.substr(pos, at - pos), scratch, ids);
      ids.push_back(impl_->added[which].id);
      pos = at + impl_->added[which].content.size();
    }
  }
  impl_->encode_ordinary(text.substr(pos), scratch, ids);
  return ids;
}

size_t Tokenizer::count(std::string_view text, AddedTokens added) const {
  if (const size_t bad = find_invalid_utf8(text); bad != std::string_view::npos)
    throw Error("invalid UTF-8 at byte " + std::to_string(bad));
  std::vector<int32_t> ids;
  Impl::EncodeScratch scratch;
  size_t n = 0, pos = 0;
  if (added == AddedTokens::kMatch && !impl_->added.empty()) {
    size_t which = 0;
    for (size_t at; (at = impl_->find_added(text, pos, which)) != std::string_view::npos;) {
      impl_->encode_ordinary(text.substr(pos, at - pos), scratch, ids, &n);
      ++n;
      pos = at + impl_->added[which].content.size();
    }
  }
  impl_->encode_ordinary(text.substr(pos), scratch, ids, &n);
  return n + ids.size();
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= impl_->n_tokens())
      throw Error("token id " + std::to_string(id) + " is out of range (the tokenizer has ids 0.." +
                  std::to_string(impl_->n_tokens() - 1) + ")");
    if (impl_->token_kind[id] == Impl::kHole) throw Error("token id " + std::to_string(id) + " has no token");
    if (skip_special && impl_->token_kind[id] == Impl::kSpecial) continue;
    out.append(impl_->token_data, impl_->token_offset[id], impl_->token_offset[id + 1] - impl_->token_offset[id]);
  }
  return out;
}

int32_t Tokenizer::token_id(std::string_view token) const {
  for (const tokenizer_detail::AddedToken& t : impl_->added)
    if (t.content == token) return t.id;
  auto it = impl_->vocab.find(std::string(token));
  return it == impl_->vocab.end() ? -1 : it->second;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  const int32_t one = id;
  return decode(std::span<const int32_t>(&one, 1));
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < impl_->n_tokens() && impl_->token_kind[id] == Impl::kSpecial;
}

int32_t Tokenizer::n_tokens() const { return impl_->n_tokens(); }

// ---------------------------------------------------------------------------------------------

std::string StreamDecoder::push(int32_t id) {
  if (skip_special_ && tok_.is_special(id)) return {};
  pending_ += tok_.token_bytes(id);
  return take_complete_utf8(pending_, false);
}

std::string StreamDecoder::finish() { return take_complete_utf8(pending_, true); }

}  // namespace abridge::engine
