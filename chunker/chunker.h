// Splitting a long document into chunks that each fit one summary request and each hold one topic.
//
// Pure functions over text: no I/O, no engine header. Token counts come through TokenCounter, which
// the pipeline implements with the real tokenizer.
//
// Offsets versus text. A chunk has two views of the same bytes:
//  - [start, end): a byte span of the ORIGINAL input. The spans of consecutive chunks tile the input:
//    chunk 0 starts at 0, each chunk starts where the previous one ended, the last ends at
//    input.size(). Concatenating input.substr(start, end - start) over all chunks gives the input back
//    exactly, whatever was dropped or joined for the model.
//  - text: what the model is sent, cleaned from the span [context_start, end): lines that a PDF broke
//    inside a sentence are joined (a space between words, nothing between CJK characters, a line-end
//    hyphen before a lower-case letter removed), running page headers and footers are left out, form
//    feeds and runs of blank lines become one blank line, CR LF becomes LF, ANSI escape sequences and
//    other control characters are removed, and invalid bytes (when allowed) become U+FFFD.
//  - context_start <= start: with overlap, the chunk's text begins with the last sentences of the
//    previous chunk, from context_start; without overlap context_start == start.
// The budget applies to the text: `tokens` is the real count of `text` (counted once more after the
// chunk was chosen, never estimated) and never exceeds max_tokens, overlap included.
//
// How cuts are chosen (structure first, then sentences, then cohesion):
//  1. Lines, pages (form feeds) and running headers/footers: a line among the first or last three
//     non-blank lines of a page whose normalized form (digits -> '#', roman page numbers -> '#',
//     spaces collapsed, ASCII lower case) occurs there on at least 3 pages is dropped from the text.
//  2. Blocks: headings, blank-line paragraphs, list blocks, code fences, tables (lines starting with
//     '|'), separator lines ("%", "* * *"), page breaks. Heading heuristics are in parse_heading().
//  3. Units: a paragraph is split into sentences (split_sentences()); a list, code block or table
//     whose tokens fit the budget is one indivisible run of units. A unit longer than the budget is
//     split at clause punctuation, then at whitespace, then at the longest prefix (on a character
//     boundary) that fits.
//  4. Packing: units are added while their summed counts fit; the cut is then chosen among the unit
//     boundaries of the chunk. A boundary has a rank (heading > paragraph/page/block > sentence >
//     clause > space > character); only when no sentence-or-better boundary exists in the chunk is a
//     lower rank used. Within the best rank present near the budget (chunk at least half full; a
//     heading boundary from a fifth), the score prefers higher rank, lower lexical similarity of the
//     text on either side (TextTiling: cosine of content-word counts, CJK character bigrams) and a
//     fuller chunk. Headings of the document's top level always start a new chunk; a chunk never ends
//     right after a heading.
//  5. The chunk's text is counted with the real tokenizer; if the sum of unit counts was optimistic,
//     the cut moves back to the best earlier boundary until it fits.
// Everything is deterministic: the same input, counter and options give the same chunks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/error.h"

namespace abridge::chunker {

// Counts the tokens the model will see for `text` (valid UTF-8). Must be deterministic and give
// count("") == 0; the pipeline's implementation encodes with the real tokenizer, plain.
class TokenCounter {
 public:
  virtual ~TokenCounter() = default;
  virtual size_t count(std::string_view text) const = 0;
};

enum class InvalidUtf8 { kReject, kReplace };

struct Options {
  size_t max_tokens = 1024;    // the budget of each chunk's text; at least kMinBudget
  size_t overlap_tokens = 0;   // tokens of the previous chunk repeated at the start; < max_tokens / 2
  InvalidUtf8 invalid_utf8 = InvalidUtf8::kReject;
  bool drop_running_lines = true;  // drop running page headers/footers from the text
};
inline constexpr size_t kMinBudget = 8;

// How a chunk ends (the kind of boundary the cut was made at).
enum class CutKind : uint8_t { kEnd, kHeading, kParagraph, kSentence, kClause, kSpace, kChar };

struct Chunk {
  size_t start = 0;          // byte offset in the input; chunks tile the input (see above)
  size_t end = 0;            // one past the last byte
  size_t context_start = 0;  // where the text starts (<= start; < start only with overlap)
  size_t tokens = 0;         // real token count of `text`, <= max_tokens
  std::string section;       // heading path at `start`, e.g. "3 Results > 3.2 Latency"; "" before any
  std::string text;          // cleaned text for the prompt
  CutKind cut = CutKind::kEnd;
};

// Invalid UTF-8 with InvalidUtf8::kReject; offset() is the first bad byte.
class InvalidUtf8Error : public Error {
 public:
  explicit InvalidUtf8Error(size_t offset);
  size_t offset() const { return offset_; }

 private:
  size_t offset_;
};

// Splits `text`. Empty, whitespace-only (or only dropped lines) input gives no chunks. Throws
// InvalidUtf8Error (kReject) and abridge::Error for a budget below kMinBudget or an overlap of
// max_tokens / 2 or more.
std::vector<Chunk> chunk_text(std::string_view text, const TokenCounter& counter, const Options& options);

// --- The rules one by one (used by chunk_text; public for tests) ---

// A heading line, or nothing. Heuristics, on the line without surrounding spaces:
//  - Markdown "#".."######" + space + title: level = number of '#'.
//  - Numbered "1", "1.", "1.2", "1.2.3" + space + title: level = number of components. The title
//    starts with an upper-case letter or a CJK character, has at most 12 words and 80 characters,
//    does not end with sentence or clause punctuation, has no dot leaders (tables of contents) and
//    is mostly letters. "1." with a single number is also how numbered lists look, so chunk_text()
//    demotes it when a neighbouring line carries the previous or next number.
//  - Chinese: 第X章/篇/部/卷 (level 1), 第X节 (level 2); 一、 (level 1) and （一） (level 2); at most
//    40 characters, not ending with sentence or clause punctuation.
//  - Titles (level 1), a line that starts with a letter or a Han character and is either
//    - a section name that papers, reports and patents use on a line of their own, capitalized or
//      in capitals, with an optional final colon: Abstract, Summary, Executive Summary, Highlights, Key Findings,
//      Introduction, Background, Conclusion(s), Concluding Remarks, Discussion, Results, Methods,
//      Related Work, References, Bibliography, Acknowledg(e)ments, Appendix, Preface, Foreword,
//      Contents; 摘要, 提要, 内容提要, 概要, 概述, 总结, 小结, 结论, 引言, 前言, 序言, 背景, 参考文献,
//      致谢, 附录, 目录;
//    - or a line in capitals (patents' "SUMMARY OF THE INVENTION", "ADVENTURE I. A SCANDAL IN
//      BOHEMIA"): at most 10 words and 80 characters, only letters, digits, spaces and - ' & , . :,
//      at least 90% of its letters upper case, not ending with sentence or clause punctuation, and
//      at least two words of two letters or more (a lone "BATCH" or "DHCP" is more often a list or
//      table entry than a heading).
struct Heading {
  enum Family : uint8_t { kMarkdown, kNumbered, kChineseChapter, kChineseEnum, kTitle };
  Family family;
  int level;           // 1 = outermost within the family
  int number = -1;     // the single leading number of "N." (for list demotion), else -1
  std::string title;   // the heading text shown in section paths ("3.2 Latency")
};
std::optional<Heading> parse_heading(std::string_view line);

// Byte offsets in `text` where a sentence ends (the next sentence's first character; trailing
// spaces and line breaks belong to the sentence before). English: . ! ? … followed by space and a
// character that is not a lower-case letter, except after abbreviations (e.g., Dr., etc.), initials,
// list numbers; decimals and URLs never end a sentence. CJK: 。！？；… (and ．｡) end a sentence
// at once; closing quotes and brackets after a terminator stay with its sentence. Line breaks count
// as spaces. The last sentence's end (text.size()) is not listed.
std::vector<size_t> split_sentences(std::string_view text);

// The [begin, end) byte spans of lines detected as running page headers or footers.
std::vector<std::pair<size_t, size_t>> find_running_lines(std::string_view text);

// The whole document as chunk texts are cleaned (joined lines, headers/footers dropped, ...).
std::string clean_text(std::string_view text, const Options& options = {});

}  // namespace abridge::chunker
