// Words, terms and the profile of a span: see terms.h.
#include "chunker/terms.h"

#include <unordered_set>

#include "chunker/unicode.h"

namespace abridge::chunker {
namespace {

using namespace detail;

const std::unordered_set<std::string_view>& stopwords() {
  static const std::unordered_set<std::string_view> kWords = {
      "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are",
      "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by",
      "can", "could", "did", "do", "does", "doing", "done", "down", "during", "each", "either", "else",
      "ever", "every", "few", "for", "from", "further", "get", "had", "has", "have", "having", "he", "her",
      "here", "hers", "herself", "him", "himself", "his", "how", "however", "i", "if", "in", "into",
      "is", "it", "its", "itself", "just", "let", "made", "make", "many", "may", "me", "might", "more", "most",
      "much", "must", "my", "myself", "neither", "new", "no", "nor", "not", "now", "of", "off", "on", "once",
      "one", "only", "or", "other", "ought", "our", "ours", "ourselves", "out", "over", "own", "same", "see",
      "shall", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them",
      "themselves", "then", "there", "these", "they", "this", "those", "though", "through", "thus", "to",
      "too", "two", "under", "until", "up", "upon", "us", "use", "very", "was", "we", "were", "what", "when",
      "where", "whether", "which", "while", "who", "whom", "whose", "why", "will", "with", "within",
      "without", "would", "yet", "you", "your", "yours", "yourself", "yourselves", "said", "say", "says",
      "e.g", "i.e", "etc", "don't", "can't", "won't", "isn't", "it's", "i'm", "i've", "i'll", "i'd",
      "you're", "that's", "there's", "he's", "she's", "we're", "they're", "didn't", "wasn't", "doesn't"};
  return kWords;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Light suffix stripping so that "vectors"/"vector", "computing"/"computed" meet.
void stem(std::string& w) {
  if (w.size() > 4 && ends_with(w, "ies")) {
    w.resize(w.size() - 3);
    w += 'y';
  } else if (ends_with(w, "sses")) {
    w.resize(w.size() - 2);
  } else if (w.size() > 3 && w.back() == 's' && !ends_with(w, "ss") && !ends_with(w, "us") && !ends_with(w, "is")) {
    w.pop_back();
  }
  if (w.size() > 5 && ends_with(w, "ing")) w.resize(w.size() - 3);
  else if (w.size() > 4 && ends_with(w, "ed")) w.resize(w.size() - 2);
  else if (w.size() > 4 && ends_with(w, "ly")) w.resize(w.size() - 2);
}

bool is_bullet(char32_t c) {
  return c == 0x2022 || c == 0x25E6 || c == 0x25AA || c == 0x2023 || c == 0x2219 || c == 0x2217 || c == 0x00B7 ||
         c == 0x2013 || c == 0x2014 || c == '*' || c == '-';
}

bool is_line_break(char32_t c) { return c == '\n' || c == '\r' || c == '\f'; }

}  // namespace

bool is_stopword(std::string_view lower_case_word) { return stopwords().contains(lower_case_word); }

void TermScanner::add_term(std::string_view t) {
  spans_.emplace_back(buffer_.size(), t.size());
  buffer_.append(t);
}

void TermScanner::flush_word(TextProfile& p) {
  if (!word_.empty() && word_has_letter_) {
    ++p.words;
    while (ends_with(word_, "'")) word_.pop_back();
    if (ends_with(word_, "'s")) word_.resize(word_.size() - 2);
    if (word_.size() >= 2 && !stopwords().contains(word_)) {
      stem(word_);
      add_term(word_);
      ++p.terms;
    }
  }
  word_.clear();
  word_has_letter_ = false;
}

TextProfile TermScanner::scan(std::string_view text, size_t b, size_t e) {
  TextProfile p;
  p.begin = e;
  p.end = b;
  buffer_.clear();
  spans_.clear();
  views_.clear();
  word_.clear();
  word_has_letter_ = false;
  bool after_bullet = false;
  char32_t prev = 0;
  size_t prev_han_at = 0;  // the previous Han character, when it is adjacent: (offset, length)
  uint32_t prev_han_len = 0;
  int depth = 0;  // brackets open
  for (size_t i = b; i < e;) {
    if (const size_t esc = escape_length(text, i)) {
      i += esc;
      continue;
    }
    const Utf8Char c = decode_utf8(text, i);
    const size_t at = i;
    i += c.len;
    const char32_t cp = c.cp;
    if (is_invisible(cp) && !is_line_break(cp)) continue;
    if (is_space(cp)) {
      flush_word(p);
      prev = 0;  // "see (Fig. 2)" is no call
      if (!is_line_break(cp)) prev_han_len = 0;  // a line break inside Chinese text joins its halves
      continue;
    }
    if (p.first == 0 && !after_bullet && is_bullet(cp) && i < e && is_space(static_cast<uint8_t>(text[i]))) {
      after_bullet = true;
      continue;
    }
    if (p.first == 0) p.first = cp;
    if (cp == '(' && (is_letter(prev) || is_ascii_digit(prev))) ++p.code_marks;
    if (cp == '=' || cp == '{' || cp == '}' || cp == '$' || cp == '\\' || cp == '|' || (cp == '-' && prev == '<'))
      ++p.code_marks;
    if (cp == '(' || cp == '[' || cp == 0xFF08) ++depth;
    if (cp == ')' || cp == ']' || cp == 0xFF09) p.unopened_close = p.unopened_close || --depth < 0;
    prev = cp;
    if (p.begin > at) p.begin = at;
    p.end = i;
    ++p.nonspace;
    if (!is_closer(cp)) p.last = cp;
    if (is_han(cp)) {
      flush_word(p);
      ++p.han;
      ++p.letters;
      if (prev_han_len != 0) {
        spans_.emplace_back(buffer_.size(), prev_han_len + c.len);
        buffer_.append(text.substr(prev_han_at, prev_han_len));
        buffer_.append(text.substr(at, c.len));
        ++p.terms;
      }
      prev_han_at = at;
      prev_han_len = c.len;
      continue;
    }
    prev_han_len = 0;
    const bool letter = is_letter(cp);
    if (letter) {
      ++p.letters;
      if (is_upper(cp)) ++p.upper;
    }
    const bool apostrophe = (cp == '\'' || cp == 0x2019) && !word_.empty();
    if (letter || is_ascii_digit(cp) || apostrophe) {
      append_utf8(word_, apostrophe ? U'\'' : to_lower(cp));
      word_has_letter_ = word_has_letter_ || letter;
    } else if (!(cp == '.' && word_.size() == 1)) {  // "e.g": keep a dot after a single letter
      flush_word(p);
    }
  }
  flush_word(p);
  if (p.begin > p.end) p.begin = p.end = b;
  p.ends_sentence = is_terminal(p.last);
  p.starts_sentence = is_upper(p.first) || is_ascii_digit(p.first) || is_closer(p.first) || p.first == 0x201C ||
                      p.first == 0x2018 || p.first == '(' || p.first == '[';
  views_.reserve(spans_.size());
  for (const auto& [o, n] : spans_) views_.emplace_back(buffer_.data() + o, n);
  return p;
}

ScriptCounts count_scripts(std::string_view text) {
  ScriptCounts n;
  bool in_word = false;
  for (size_t i = 0; i < text.size();) {
    const auto b = static_cast<uint8_t>(text[i]);
    bool letter = false;
    if (b < 0x80) {
      letter = (b | 0x20) >= 'a' && (b | 0x20) <= 'z';
      ++i;
    } else {
      const Utf8Char c = decode_utf8(text, i);
      if (is_han(c.cp)) ++n.han;
      else letter = is_letter(c.cp);
      i += c.len;
    }
    n.words += letter && !in_word ? 1 : 0;
    in_word = letter;
  }
  return n;
}

}  // namespace abridge::chunker
