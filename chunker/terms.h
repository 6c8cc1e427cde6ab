// Content terms of a span of text, and what the span is made of: the one definition of a "word" that
// the chunker's cohesion measure and the extractive summarizer share.
//
// Terms:
//  - Latin-script words (and those of other scripts written with spaces): runs of letters, digits
//    and inner apostrophes that hold a letter, lower-cased; a trailing apostrophe and "'s" are
//    dropped; words of one letter and stopwords (English function words, see terms.cpp) are not
//    terms; the rest lose common suffixes ("vectors" -> "vector", "computing" -> "comput": a light
//    stemmer, so that inflections meet, not a full Porter stemmer);
//  - Han and kana: each pair of adjacent characters (a bigram), as Chinese writes no spaces between
//    words and a segmenter would be a dictionary of its own; a line break inside Chinese text does
//    not separate the two halves, any other space or punctuation does.
// Escape sequences and invisible characters are skipped; invalid bytes read as U+FFFD.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace abridge::chunker {

struct TextProfile {
  size_t begin = 0;             // the visible span [begin, end) of what was scanned, a leading
  size_t end = 0;               // bullet ("• ", "- ", "* ") left out; begin == end when none
  uint32_t words = 0;           // words of space-separated scripts, stopwords included
  uint32_t terms = 0;           // terms (content words and Han bigrams)
  uint32_t han = 0;             // Han and kana characters
  uint32_t letters = 0;         // letters, Han included
  uint32_t upper = 0;           // upper-case letters
  uint32_t nonspace = 0;        // visible non-space characters
  uint32_t code_marks = 0;      // "name(", '=', braces, '$', '\', '|', "<-": code or markup
  char32_t first = 0;           // first visible non-space character after the bullet
  char32_t last = 0;            // last visible non-space character that is no closing quote or bracket
  bool unopened_close = false;  // a ')' or ']' with none open: the tail of a longer sentence
  bool ends_sentence = false;   // `last` is a sentence terminator (. ! ? … 。！？；)
  bool starts_sentence = false; // `first` can start a sentence: upper case, a digit, a quote or bracket
};

class TermScanner {
 public:
  // Reads [b, e) of `text`; terms() then holds its terms in order (with repeats), valid until the
  // next scan.
  TextProfile scan(std::string_view text, size_t b, size_t e);
  const std::vector<std::string_view>& terms() const { return views_; }

 private:
  void flush_word(TextProfile& p);
  void add_term(std::string_view t);

  std::string word_;
  bool word_has_letter_ = false;
  std::string buffer_;                     // the terms, back to back
  std::vector<std::pair<size_t, size_t>> spans_;  // (offset, length) of each term in buffer_
  std::vector<std::string_view> views_;
};

bool is_stopword(std::string_view lower_case_word);

// Han (and kana) characters and words of other scripts in `text`: how much of it is written in
// Chinese, a Han character carrying about as much as a word.
struct ScriptCounts {
  size_t han = 0;
  size_t words = 0;
};
ScriptCounts count_scripts(std::string_view text);

}  // namespace abridge::chunker
