// Headings and sentences: the two text rules the chunker is built on.
#include <algorithm>
#include <array>
#include <string>

#include "chunker/chunker.h"
#include "chunker/rules.h"
#include "chunker/unicode.h"

namespace abridge::chunker {
namespace {

using namespace detail;

// Words that end with a dot without ending the sentence (lower case, without the final dot).
constexpr std::array<std::string_view, 62> kAbbreviations = {
    "mr",   "mrs",  "ms",   "dr",   "prof", "sr",   "jr",  "st",   "mt",   "vs",   "cf",   "al",   "fig",
    "figs", "no",   "nos",  "vol",  "vols", "pp",   "ed",  "eds",  "approx", "dept", "est", "inc",  "ltd",
    "co",   "corp", "jan",  "feb",  "mar",  "apr",  "jun", "jul",  "aug",  "sep",  "sept", "oct",  "nov",
    "dec",  "gen",  "gov",  "col",  "lt",   "sgt",  "capt", "rev", "hon",  "messrs", "viz", "ca",  "resp",
    "eq",   "eqs",  "sec",  "ch",   "chap", "ref",  "refs", "p",   "e.g",  "i.e"};

bool is_abbreviation(const std::string& word) {
  return std::find(kAbbreviations.begin(), kAbbreviations.end(), word) != kAbbreviations.end();
}

std::u32string to_u32(std::string_view s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    const auto c = decode_utf8(s, i);
    out += c.cp;
    i += c.len;
  }
  return out;
}

std::string to_utf8(std::u32string_view s) {
  std::string out;
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

bool is_zh_numeral(char32_t c) {
  static constexpr std::u32string_view kDigits = U"〇零一二三四五六七八九十百千两";
  return kDigits.find(c) != std::u32string_view::npos || detail::is_ascii_digit(c) || (c >= 0xFF10 && c <= 0xFF19);
}

// Punctuation a heading does not end with ('?' is allowed: "What is R?").
bool ends_like_prose(char32_t c) {
  static constexpr std::u32string_view kEnds = U".,;:!。，；：！、…";
  return kEnds.find(c) != std::u32string_view::npos;
}

size_t count_words(std::u32string_view s) {
  size_t words = 0;
  bool in_word = false;
  for (char32_t c : s) {
    const bool space = detail::is_space(c);
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  return words;
}

bool has_dot_leader(std::u32string_view s) {
  return s.find(U". .") != std::u32string_view::npos || s.find(U"...") != std::u32string_view::npos ||
         s.find(U"…") != std::u32string_view::npos || s.find(U"··") != std::u32string_view::npos;
}

std::u32string_view trim(std::u32string_view s) {
  while (!s.empty() && detail::is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && detail::is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::optional<Heading> markdown_heading(std::u32string_view s) {
  size_t hashes = 0;
  while (hashes < s.size() && s[hashes] == '#') ++hashes;
  if (hashes == 0 || hashes > 6 || hashes == s.size() || (s[hashes] != ' ' && s[hashes] != '\t')) return {};
  std::u32string_view title = trim(s.substr(hashes));
  while (!title.empty() && title.back() == '#') title.remove_suffix(1);  // closing "##"
  title = trim(title);
  if (title.empty()) return {};
  return Heading{Heading::kMarkdown, static_cast<int>(hashes), -1, to_utf8(title)};
}

std::optional<Heading> numbered_heading(std::u32string_view s) {
  size_t i = 0;
  int components = 0, first = 0;
  bool trailing_dot = false;
  while (true) {
    const size_t digits_begin = i;
    int value = 0;
    while (i < s.size() && detail::is_ascii_digit(s[i]) && i - digits_begin < 4) value = value * 10 + (s[i++] - '0');
    const size_t n_digits = i - digits_begin;
    if (n_digits == 0 || n_digits > 3) return {};
    if (components++ == 0) first = value;
    if (i < s.size() && s[i] == '.') {
      ++i;
      if (i < s.size() && detail::is_ascii_digit(s[i])) continue;
      trailing_dot = true;
    }
    break;
  }
  if (components > 6 || i >= s.size() || (s[i] != ' ' && s[i] != '\t')) return {};
  const std::u32string_view title = trim(s.substr(i));
  if (title.size() < 2 || s.size() > 80) return {};
  if (!(detail::is_upper(title.front()) || detail::is_han(title.front()))) return {};
  if (ends_like_prose(title.back()) || count_words(title) > 12 || has_dot_leader(title)) return {};
  size_t letters = 0, others = 0;
  for (char32_t c : title) {
    if (detail::is_space(c)) continue;
    (detail::is_letter(c) || detail::is_cjk(c) ? letters : others) += 1;
  }
  if (letters * 10 < (letters + others) * 7) return {};
  // "3. Start the program" inside a numbered list looks the same as a heading: record the number so
  // the caller can demote it when a neighbouring line carries the previous or next number.
  const int number = components == 1 && trailing_dot ? first : -1;
  return Heading{Heading::kNumbered, components, number, to_utf8(s)};
}

std::optional<Heading> chinese_heading(std::u32string_view s) {
  if (s.size() > 40 || ends_like_prose(s.back())) return {};
  if (s[0] == U'第') {
    size_t i = 1;
    while (i < s.size() && is_zh_numeral(s[i])) ++i;
    if (i == 1 || i >= s.size()) return {};
    int level;
    switch (s[i]) {
      case U'篇': case U'部': case U'卷': level = 1; break;
      case U'章': case U'回': case U'讲': case U'课': level = 2; break;
      case U'节': level = 3; break;
      default: return {};
    }
    return Heading{Heading::kChineseChapter, level, -1, to_utf8(s)};
  }
  static constexpr std::u32string_view kNumerals = U"一二三四五六七八九十百";
  auto numeral_run = [&](size_t i) {
    size_t j = i;
    while (j < s.size() && kNumerals.find(s[j]) != std::u32string_view::npos) ++j;
    return j - i;
  };
  const size_t n = numeral_run(0);
  if (n > 0 && n < s.size() && s[n] == U'、' && n + 1 < s.size())
    return Heading{Heading::kChineseEnum, 1, -1, to_utf8(s)};
  if (s[0] == U'（' || s[0] == U'(') {
    const size_t m = numeral_run(1);
    if (m > 0 && 1 + m < s.size() && (s[1 + m] == U'）' || s[1 + m] == U')') && 2 + m < s.size())
      return Heading{Heading::kChineseEnum, 2, -1, to_utf8(s)};
  }
  return {};
}

// Section names used on a line of their own (lower case; see chunker.h).
constexpr std::u32string_view kSectionNames[] = {
    U"abstract", U"summary", U"executive summary", U"highlights", U"key findings", U"introduction",
    U"background", U"conclusion", U"conclusions", U"concluding remarks", U"discussion", U"results", U"methods",
    U"related work", U"references", U"bibliography", U"acknowledgments", U"acknowledgements", U"appendix",
    U"preface", U"foreword", U"contents", U"摘要", U"提要", U"内容提要", U"概要", U"概述", U"总结", U"小结",
    U"结论", U"引言", U"前言", U"序言", U"背景", U"参考文献", U"致谢", U"附录", U"目录"};

constexpr size_t kLongestSectionName = 24;  // bytes of the longest name above, with a colon and spaces

std::optional<Heading> title_heading(std::u32string_view s) {
  if (s.size() > 80 || !(detail::is_letter(s[0]) || detail::is_han(s[0]))) return {};
  std::u32string_view name = s;
  if (name.back() == ':' || name.back() == U'：') name = trim(name.substr(0, name.size() - 1));
  std::u32string lower;
  for (char32_t c : name) lower += detail::is_space(c) ? U' ' : detail::to_lower(c);
  for (std::u32string_view known : kSectionNames)
    if (lower == known) return Heading{Heading::kTitle, 1, -1, to_utf8(s)};
  // A line in capitals.
  if (ends_like_prose(s.back()) || count_words(s) > 10) return {};
  size_t letters = 0, upper = 0, nonspace = 0, long_words = 0, word_letters = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    const char32_t c = i < s.size() ? s[i] : U' ';
    if (detail::is_space(c)) {
      long_words += word_letters >= 2 ? 1 : 0;
      word_letters = 0;
      continue;
    }
    ++nonspace;
    if (detail::is_letter(c) && !detail::is_cjk(c)) {
      ++letters;
      ++word_letters;
      upper += detail::is_upper(c) ? 1 : 0;
    } else if (!detail::is_ascii_digit(c) && std::u32string_view(U"-'\u2019&,.:").find(c) == std::u32string_view::npos) {
      return {};
    }
  }
  if (letters < 6 || long_words < 2 || upper * 10 < letters * 9 || letters * 10 < nonspace * 7) return {};
  return Heading{Heading::kTitle, 1, -1, to_utf8(s)};
}

}  // namespace

std::optional<Heading> parse_heading(std::string_view line) {
  if (line.empty() || line.size() > 400) return {};
  // Most lines are prose: rule them out before decoding. No form starts in lower case, and a line
  // longer than any section name that starts with a Latin letter must be in capitals.
  const size_t first = line.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  const char c0 = line[first];
  if (c0 >= 'a' && c0 <= 'z') return {};
  if (c0 >= 'A' && c0 <= 'Z' && line.size() - first > kLongestSectionName) {
    size_t lower = 0, upper = 0;
    for (const char c : line) {
      lower += c >= 'a' && c <= 'z' ? 1 : 0;
      upper += c >= 'A' && c <= 'Z' ? 1 : 0;
    }
    if (lower * 10 > lower + upper) return {};
  }
  const std::u32string full = to_u32(line);
  const std::u32string_view s = trim(full);
  if (s.empty()) return {};
  if (s[0] == '#') return markdown_heading(s);
  if (detail::is_ascii_digit(s[0])) return numbered_heading(s);
  if (auto h = chinese_heading(s)) return h;
  return title_heading(s);
}

namespace detail {

VisCursor::VisCursor(std::string_view text, const Pieces& pieces) : text_(text), pieces_(&pieces) {
  piece_ = static_cast<size_t>(-1);
  if (enter_next()) settle();
}

bool VisCursor::enter_next() {
  for (;;) {
    size_t b = 0, e = 0;
    const Pieces::Kind kind = pieces_->piece(++piece_, b, e);
    if (kind == Pieces::kEnd) {
      done_ = true;
      return false;
    }
    if (kind == Pieces::kSkip) continue;
    pos_ = b;
    end_ = e;
    separator_ = entered_;
    entered_ = true;
    return true;
  }
}

void VisCursor::settle() {
  for (;;) {
    if (separator_) {
      cp_ = '\n';
      offset_ = pos_;
      len_ = 0;
      return;
    }
    if (pos_ >= end_) {
      if (!enter_next()) return;
      continue;
    }
    if (const size_t esc = escape_length(text_, pos_)) {
      pos_ = std::min(pos_ + esc, end_);
      continue;
    }
    const Utf8Char c = decode_utf8(text_, pos_);
    char32_t cp = c.cp;
    if (cp == '\r' || cp == '\f') cp = '\n';
    if (is_invisible(cp)) {
      pos_ += c.len;
      continue;
    }
    cp_ = cp;
    offset_ = pos_;
    len_ = c.len;
    return;
  }
}

void VisCursor::next() {
  ++index_;
  if (separator_) {
    separator_ = false;
  } else {
    pos_ += len_;
  }
  settle();
}

namespace {

// The last characters read, for the word before a dot. Abbreviations, initials and list numbers are
// at most 6 characters, so a word longer than the window is none of them.
class Behind {
 public:
  static constexpr size_t kSize = 32;
  void push(char32_t c) { ring_[seen_++ % kSize] = c; }
  size_t seen() const { return seen_; }                       // characters read so far
  size_t held() const { return std::min(seen_, kSize); }
  char32_t back(size_t d) const { return ring_[(seen_ - d) % kSize]; }  // 1 <= d <= held()

 private:
  char32_t ring_[kSize] = {};
  size_t seen_ = 0;
};

}  // namespace

void sentence_starts(VisCursor i, std::vector<size_t>& ends) {
  Behind behind;
  auto step = [&](VisCursor& c) {
    behind.push(c.cp());
    c.next();
  };
  auto skip_spaces = [](VisCursor c) {
    while (!c.done() && is_space(c.cp())) c.next();
    return c;
  };
  while (!i.done()) {
    const char32_t c = i.cp();
    if (!is_terminal(c)) {
      step(i);
      continue;
    }
    VisCursor after = i;  // chars[i + 1]
    after.next();
    const bool cjk_context = is_cjk_terminal(c) && (c != 0x2026 || (behind.seen() > 0 && is_cjk(behind.back(1))) ||
                                                    (!after.done() && is_cjk(after.cp())));
    VisCursor j = after;
    while (!j.done() && is_terminal(j.cp())) j.next();
    bool closed = false;  // chars[j - 1] is a closer
    while (!j.done() && is_closer(j.cp())) {
      j.next();
      closed = true;
    }
    auto go_to_j = [&] {  // i = j (the loop's "i = j - 1; continue")
      while (i.index() < j.index()) step(i);
    };
    if (cjk_context) {
      // Japanese quotes go on with a particle: 「行きましょう！」と言った。
      if (closed && !j.done() && j.cp() >= 0x3041 && j.cp() <= 0x309F) {
        go_to_j();
        continue;
      }
      const VisCursor k = skip_spaces(j);
      if (!k.done()) ends.push_back(k.offset());
      go_to_j();
      continue;
    }
    if (!j.done() && !is_space(j.cp())) {  // "3.14", "www.example.org", "e.g.x": not an end
      step(i);
      continue;
    }
    const VisCursor k = skip_spaces(j);
    if (k.done()) break;
    const char32_t next = k.cp();
    if (is_lower(next) || next == ',' || next == ';' || next == ':') {
      go_to_j();
      continue;
    }
    if (c == '.' && (after.done() || after.cp() != '.')) {
      // The word before the dot: letters, digits and inner dots back to a space (within the window).
      size_t letters = 0;
      while (letters < behind.held()) {
        const char32_t w = behind.back(letters + 1);
        if (is_space(w) || is_closer(w) || w == '(') break;
        ++letters;
      }
      const bool whole = letters < behind.held() || letters == behind.seen();  // its start was seen
      if (whole) {
        std::string word;
        bool all_digits = letters > 0, inner_dot = false;
        for (size_t d = letters; d >= 1; --d) {
          const char32_t w = behind.back(d);
          if (!is_ascii_digit(w)) all_digits = false;
          if (w == '.') inner_dot = true;
          append_utf8(word, to_lower(w));
        }
        const bool line_start = letters == behind.seen() || behind.back(letters + 1) == '\n';
        if (all_digits && letters <= 3 && line_start) {  // "1. " opening a list item
          step(i);
          continue;
        }
        if ((letters == 1 && is_letter(behind.back(1))) ||  // an initial: "John M. Chambers"
            (inner_dot && letters <= 6) ||                  // "e.g.", "U.S.", "a.m."
            is_abbreviation(word)) {
          step(i);
          continue;
        }
      }
    }
    ends.push_back(k.offset());
    go_to_j();
  }
}

}  // namespace detail

namespace {

// The whole text as one piece.
class WholeText final : public detail::Pieces {
 public:
  explicit WholeText(size_t size) : size_(size) {}
  Kind piece(size_t k, size_t& begin, size_t& end) const override {
    if (k > 0) return kEnd;
    begin = 0;
    end = size_;
    return kPiece;
  }

 private:
  size_t size_;
};

}  // namespace

std::vector<size_t> split_sentences(std::string_view text) {
  const WholeText whole(text.size());
  std::vector<size_t> ends;
  detail::sentence_starts(detail::VisCursor(text, whole), ends);
  return ends;
}

}  // namespace abridge::chunker
