// Two passes over the text. The first works on characters (line-break characters, ligatures, soft hyphens
// that are not at a line end, spaces between CJK characters); the second joins words broken at line ends,
// with word counts taken from the first pass's output.
#include "pipeline/text_normalize.h"

#include <utf8proc.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <unordered_set>
#include <vector>

#include "base/utf8.h"

namespace abridge::pipeline {
namespace {

constexpr int32_t kSoftHyphen = 0x00AD;
constexpr int32_t kHyphen = 0x2010;

struct Cp {
  int32_t cp;   // -1 for an invalid byte
  size_t len;   // bytes; 1 for an invalid byte
};

Cp decode_at(std::string_view s, size_t i) {
  const Utf8Char c = decode_utf8(s, i);
  return {c.valid ? static_cast<int32_t>(c.cp) : -1, c.len};
}

// The code point that ends at `end` (exclusive), or {-1, 1}.
Cp decode_before(std::string_view s, size_t end) {
  if (end == 0) return {-1, 0};
  size_t b = end - 1;
  while (b > 0 && end - b < 4 && is_utf8_continuation(static_cast<unsigned char>(s[b]))) --b;
  const Cp c = decode_at(s, b);
  if (c.cp < 0 || b + c.len != end) return {-1, 1};
  return c;
}

utf8proc_category_t category(int32_t cp) { return utf8proc_category(cp); }

bool is_alnum(int32_t cp) {
  if (cp < 0) return false;
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z');
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}
bool is_digit(int32_t cp) {
  const auto c = category(cp);
  return cp >= 0 && (c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO);
}
bool is_upper(int32_t cp) {
  return cp >= 0 && (category(cp) == UTF8PROC_CATEGORY_LU || category(cp) == UTF8PROC_CATEGORY_LT);
}
bool is_lower(int32_t cp) { return cp >= 0 && category(cp) == UTF8PROC_CATEGORY_LL; }
bool is_line_hyphen(int32_t cp) { return cp == '-' || cp == kHyphen; }

// Han (with 々〆〇) and kana: scripts written without spaces between words. Hangul is not: Korean
// separates words with spaces.
bool is_han_kana(int32_t c) {
  return (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xF900 && c <= 0xFAFF) ||
         (c >= 0x20000 && c <= 0x3FFFF) || (c >= 0x3040 && c <= 0x30FF) || (c >= 0x31F0 && c <= 0x31FF) ||
         (c >= 0xFF66 && c <= 0xFF9F) || (c >= 0x3005 && c <= 0x3007);
}
// CJK punctuation, full-width and half-width forms: each character carries its own spacing.
bool is_cjk_punct(int32_t c) {
  return (c >= 0x3001 && c <= 0x3003) || (c >= 0x3008 && c <= 0x3011) || (c >= 0x3014 && c <= 0x301F) ||
         c == 0x30FB || (c >= 0xFF01 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) ||
         (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFF65);
}

// Compatibility ligatures, digraphs and presentation forms: folded by their NFKC. Not the rest of NFKC's
// domain (full-width forms, CJK compatibility, superscripts).
bool folds(int32_t c) {
  return (c >= 0xFB00 && c <= 0xFB06) || (c >= 0xFB13 && c <= 0xFB17) || c == 0x0132 || c == 0x0133 ||
         (c >= 0x01C4 && c <= 0x01CC) || (c >= 0x01F1 && c <= 0x01F3) || (c >= 0xFB1D && c <= 0xFDFF) ||
         (c >= 0xFE70 && c <= 0xFEFE);
}

void append_folded(std::string& out, std::string_view ch) {
  utf8proc_uint8_t* dst = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(ch.data()), static_cast<utf8proc_ssize_t>(ch.size()), &dst,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPAT | UTF8PROC_COMPOSE));
  if (n < 0) {
    out.append(ch);
  } else {
    out.append(reinterpret_cast<const char*>(dst), static_cast<size_t>(n));
  }
  std::free(dst);
}

bool at_line_end(std::string_view s, size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return i < s.size() && (s[i] == '\n' || s[i] == '\r');
}

// Pass 1: characters. Copy on write: most texts have no character to change, and are returned as
// they came.
std::string normalize_chars(std::string in_text, TextSource source) {
  const std::string_view in(in_text);
  std::string out;
  size_t flushed = 0;  // in[flushed, i) is unchanged and not yet in `out`
  // The bytes in[i, i + len) become `with`.
  auto change = [&](size_t i, size_t len, std::string_view with) {
    if (flushed == 0 && out.empty()) out.reserve(in.size());
    out.append(in.substr(flushed, i - flushed));
    out.append(with);
    flushed = i + len;
  };
  int32_t last = '\n';  // the last code point written, '\n' at a line start
  for (size_t i = 0; i < in.size();) {
    const auto byte = static_cast<unsigned char>(in[i]);
    if (byte >= 0x20 && byte < 0x7F && byte != ' ') {  // the common case
      ++i;
      last = byte;
      continue;
    }
    const size_t at = i;
    const Cp c = decode_at(in, i);
    const std::string_view raw = in.substr(i, c.len);
    i += c.len;
    switch (c.cp) {
      case 0x0B: case 0x85: case 0x2028:
        change(at, c.len, "\n");
        last = '\n';
        continue;
      case 0x2029:
        change(at, c.len, "\n\n");
        last = '\n';
        continue;
      case kSoftHyphen:
        if (!at_line_end(in, i)) change(at, c.len, "");  // at a line end, pass 2 joins the word
        continue;
      case ' ':
        if (source == TextSource::kPdf && last != '\n') {
          size_t j = i;
          while (j < in.size() && in[j] == ' ') ++j;
          const int32_t next = j < in.size() ? decode_at(in, j).cp : '\n';
          const bool cut = next != '\n' && next != '\r' && next != '\f' && next != '\t' &&
                           ((is_han_kana(last) && is_han_kana(next)) || is_cjk_punct(last) || is_cjk_punct(next));
          if (cut) change(at, j - at, "");
          else last = ' ';
          i = j;
          continue;
        }
        break;
      default:
        if (c.cp >= 0 && folds(c.cp)) {
          std::string folded;
          append_folded(folded, raw);
          change(at, c.len, folded);
          last = decode_before(out, out.size()).cp;
          continue;
        }
    }
    last = c.cp == '\n' || c.cp == '\r' || c.cp == '\f' ? '\n' : c.cp;
  }
  if (flushed == 0 && out.empty()) return in_text;  // nothing changed
  out.append(in.substr(flushed));
  return out;
}

// A line end where a word may be broken: the line's content ends with a soft hyphen, or with a hyphen
// after a letter or digit, and the next line (same page) starts with a letter or digit.
struct Break {
  size_t before_begin;  // the run of letters/digits before the hyphen
  size_t hyphen;        // the hyphen (or soft hyphen)
  size_t hyphen_end;
  size_t newline;       // the '\n' ending the line ("\r\n" ends at the '\n')
  size_t after_begin;   // the run of letters/digits starting the next line
  size_t after_end;
  bool soft;
};

// The break whose line ends at the '\n' at `nl`, if it is one.
bool break_at(std::string_view s, size_t nl, Break& b) {
  size_t e = nl;
  if (e > 0 && s[e - 1] == '\r') --e;
  while (e > 0 && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  const Cp h = decode_before(s, e);
  if (h.cp != kSoftHyphen && !is_line_hyphen(h.cp)) return false;
  b.soft = h.cp == kSoftHyphen;
  b.hyphen = e - h.len;
  b.hyphen_end = e;
  b.before_begin = b.hyphen;
  for (Cp c = decode_before(s, b.before_begin); is_alnum(c.cp); c = decode_before(s, b.before_begin)) b.before_begin -= c.len;
  if (b.before_begin == b.hyphen && !b.soft) return false;
  b.newline = nl;
  size_t a = nl + 1;
  while (a < s.size() && (s[a] == ' ' || s[a] == '\t')) ++a;
  b.after_begin = a;
  for (Cp c = a < s.size() ? decode_at(s, a) : Cp{-1, 1}; is_alnum(c.cp);) {
    a += c.len;
    c = a < s.size() ? decode_at(s, a) : Cp{-1, 1};
  }
  b.after_end = a;
  return b.after_end > b.after_begin;
}

std::string lower(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const Cp c = decode_at(s, i);
    if (c.cp < 0) {
      out += s[i];
    } else {
      append_utf8(out, utf8proc_tolower(c.cp));
    }
    i += c.len;
  }
  return out;
}

size_t count_cps(std::string_view s) {
  size_t n = 0;
  for (const char c : s) n += !is_utf8_continuation(static_cast<unsigned char>(c));
  return n;
}

// Pass 2: words broken at line ends, in place: what is written never passes what is read (a break's
// hyphen and line end are at least as long as what replaces them).
std::string join_broken_words(std::string in) {
  std::vector<Break> breaks;
  for (size_t nl = in.find('\n'); nl != std::string::npos; nl = in.find('\n', nl + 1)) {
    Break b;
    if (break_at(in, nl, b)) breaks.push_back(b);
  }
  if (breaks.empty()) return in;
  // The decisions first, from the text as it is: the words around each hard break, counted.
  std::unordered_set<std::string> wanted;
  for (const Break& b : breaks) {
    if (b.soft) continue;
    const std::string lb = lower(std::string_view(in).substr(b.before_begin, b.hyphen - b.before_begin));
    const std::string la = lower(std::string_view(in).substr(b.after_begin, b.after_end - b.after_begin));
    wanted.insert({lb, la, lb + la, lb + "-" + la});
  }
  std::vector<bool> keep(breaks.size(), false);
  if (!wanted.empty()) {
    const std::string_view s(in);
    const WordCounts counts(s, &wanted);
    for (size_t k = 0; k < breaks.size(); ++k) {
      const Break& b = breaks[k];
      if (!b.soft)
        keep[k] = keep_line_end_hyphen(hyphen_evidence(counts, s.substr(b.before_begin, b.hyphen - b.before_begin),
                                                       s.substr(b.after_begin, b.after_end - b.after_begin)));
    }
  }
  wanted.clear();

  char* const d = in.data();
  const size_t n = in.size();
  size_t w = 0, copied = 0;  // written up to w; read up to copied (w <= copied)
  auto put = [&](size_t from, size_t len) {
    if (w != from) std::memmove(d + w, d + from, len);
    w += len;
  };
  for (size_t k = 0; k < breaks.size(); ++k) {
    const Break& b = breaks[k];
    const bool crlf = b.newline > 0 && d[b.newline - 1] == '\r';  // read before anything is written there
    if (b.hyphen >= copied) {
      put(copied, b.hyphen - copied);
      if (keep[k]) put(b.hyphen, b.hyphen_end - b.hyphen);
    } else if (!keep[k]) {
      // "a-\nb-\nc": the line was only the moved part "b-", which already ends what is written.
      w -= b.hyphen_end - b.hyphen;
    }
    // The second part moves up with what sticks to it ("mation," or "known.").
    size_t word_end = b.after_end;
    while (word_end < n && d[word_end] != ' ' && d[word_end] != '\t' && d[word_end] != '\n' && d[word_end] != '\r' &&
           d[word_end] != '\f')
      ++word_end;
    put(b.after_begin, word_end - b.after_begin);
    size_t rest = word_end;
    while (rest < n && (d[rest] == ' ' || d[rest] == '\t')) ++rest;
    if (rest < n && d[rest] != '\n' && d[rest] != '\r' && d[rest] != '\f') {
      if (crlf) d[w++] = '\r';
      d[w++] = '\n';
    }
    copied = rest;
  }
  put(copied, n - copied);
  in.resize(w);
  return in;
}

// Soft hyphens that pass 2 left (at line ends that were no word break).
void drop_soft_hyphens(std::string& s) {
  size_t w = 0;
  for (size_t r = 0; r < s.size();) {
    if (s.compare(r, 2, "\xC2\xAD") == 0) {
      r += 2;
      continue;
    }
    s[w++] = s[r++];
  }
  s.resize(w);
}

}  // namespace

WordCounts::WordCounts(std::string_view s, const std::unordered_set<std::string>* only) {
  // Runs of letters/digits, each with how it is tied to the next one. A run is counted once the one
  // after it is known: three are held, never the document's list.
  struct Run {
    size_t b = 0, e = 0;
    bool compound_next = false;  // "a-b" within a line
    bool broken_next = false;    // "a-\nb": both are parts of a broken word
  };
  auto add = [only](std::unordered_map<std::string, int>& to, std::string key) {
    if (!only || only->contains(key)) ++to[std::move(key)];
  };
  // Counts run r, given the runs before and after it (null at either end).
  auto count = [&](const Run& r, const Run* before, const Run* after) {
    const bool fragment = r.broken_next || (before && before->broken_next);
    const bool in_compound = r.compound_next || (before && before->compound_next);
    if (r.compound_next && after && !fragment && !after->broken_next)
      add(compounds_, lower(s.substr(r.b, r.e - r.b)) + "-" + lower(s.substr(after->b, after->e - after->b)));
    if (!fragment && !in_compound) add(words_, lower(s.substr(r.b, r.e - r.b)));
  };
  Run before, current;
  bool have_before = false, have_current = false;
  for (size_t i = 0; i < s.size();) {
    Cp c = decode_at(s, i);
    if (!is_alnum(c.cp)) {
      i += c.len;
      continue;
    }
    Run r;
    r.b = r.e = i;
    while (r.e < s.size() && is_alnum(c.cp)) {
      r.e += c.len;
      if (r.e < s.size()) c = decode_at(s, r.e);
    }
    // What follows: a hyphen, then a run at once, or blanks and a line end.
    if (r.e < s.size()) {
      const Cp h = decode_at(s, r.e);
      if (is_line_hyphen(h.cp) || h.cp == kSoftHyphen) {
        const size_t after = r.e + h.len;
        if (after < s.size() && is_alnum(decode_at(s, after).cp) && h.cp != kSoftHyphen) {
          r.compound_next = true;
        } else {
          size_t nl = after;
          while (nl < s.size() && (s[nl] == ' ' || s[nl] == '\t' || s[nl] == '\r')) ++nl;
          Break b;
          r.broken_next = nl < s.size() && s[nl] == '\n' && break_at(s, nl, b);
        }
      }
    }
    if (have_current) count(current, have_before ? &before : nullptr, &r);
    before = current;
    have_before = have_current;
    current = r;
    have_current = true;
    i = r.e;
  }
  if (have_current) count(current, have_before ? &before : nullptr, nullptr);
}

int WordCounts::word(const std::string& w) const {
  const auto it = words_.find(w);
  return it == words_.end() ? 0 : it->second;
}

int WordCounts::compound(const std::string& w) const {
  const auto it = compounds_.find(w);
  return it == compounds_.end() ? 0 : it->second;
}

HyphenEvidence hyphen_evidence(const WordCounts& counts, std::string_view before, std::string_view after) {
  HyphenEvidence e;
  e.before = before;
  e.after = after;
  const std::string lb = lower(before), la = lower(after);
  e.joined = counts.word(lb + la);
  e.hyphenated = counts.compound(lb + "-" + la);
  e.before_alone = counts.word(lb);
  e.after_alone = counts.word(la);
  return e;
}

bool keep_line_end_hyphen(const HyphenEvidence& e) {
  if (e.before.empty() || e.after.empty()) return true;
  const int32_t last = decode_before(e.before, e.before.size()).cp, first = decode_at(e.after, 0).cp;
  if (is_digit(last) || is_digit(first)) return true;
  if (is_upper(first)) {
    for (size_t i = 0; i < e.before.size();) {
      const Cp c = decode_at(e.before, i);
      if (is_lower(c.cp)) return true;
      i += c.len;
    }
  }
  if (count_cps(e.before) == 1 || count_cps(e.after) == 1) return true;
  if (e.joined != e.hyphenated) return e.hyphenated > e.joined;
  return e.before_alone > 0 && e.after_alone > 0;
}

std::string normalize_text(std::string text, TextSource source) {
  std::string out = join_broken_words(normalize_chars(std::move(text), source));
  drop_soft_hyphens(out);
  return out;
}

}  // namespace abridge::pipeline
