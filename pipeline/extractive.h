// The built-in extractive summarizer: what abridge gives when no model is loaded.
//
// How a summary is made (all deterministic; ties go to the earlier sentence):
//  1. The document: chunker::Document (chunker/document.h) reads the lines, drops running page
//     headers and footers, finds headings (Markdown, numbered, Chinese, known section names such as
//     "Abstract" or "摘要", lines in capitals, a numbered heading glued to a paragraph's end by PDF
//     extraction), the section tree and the pages (form feeds). A Project Gutenberg text is read
//     between its START and END markers only.
//  2. Sentences: runs of lines that hold prose (not headings, lists of dot leaders, numbers or code,
//     not title lines such as a poem's title and author; see chunker::Line), cut at paragraph breaks,
//     list items and dropped lines, are split by Document::sentence_starts. A sentence is a candidate
//     when it ends with a terminator (. ! ? … 。！？；: one ending with a colon introduces a list or
//     code), at least half its characters are letters, it has no unopened ')' (a fragment) and at
//     most one code mark ("name(", "=", braces, "$", "<-") per 12 words; English: at least 5 words
//     and 2 content terms, a first character that starts a sentence, not mostly upper case; Chinese:
//     at least 6 Han characters. If no sentence qualifies, every sentence may be taken.
//  3. Terms (chunker/terms.h): English content words, stopwords removed, lightly stemmed; Chinese:
//     bigrams of adjacent Han characters. Weights are (1 + log tf) * idf, vectors L2-normalized, so
//     similarity is a cosine.
//  4. Graph: similarities come from an inverted index of terms (never a dense n x n pass); terms
//     found in more than max(32, n / 64) of the n sentences are left out of the graph, and each
//     sentence keeps its 32 strongest edges.
//  5. Relevance = centrality * length prior * section prior, where
//     - centrality mixes TextRank (PageRank, damping 0.85) with PacSum's directed, position-aware
//       centrality (Zheng and Lapata, 2019: edges to later sentences count, edges to earlier ones
//       count against), 0.3 / 0.7, each scaled to [0, 1], plus 0.05;
//     - the length prior is full from 12 to 120 words (a Chinese word being 1.5 Han characters),
//       falling as 1/length outside;
//     - the section prior comes from the titles of the sentence's section and of those enclosing
//       it: a summary of the document's own (Abstract, Summary, Executive Summary, Highlights, Key
//       Findings, 摘要, 提要, 概要) multiplies by 4 and then adds the best relevance found outside
//       such sections, so that its sentences come first; Conclusion(s), Concluding remarks, 总结,
//       结论, 小结: times 2; Introduction, 引言, 前言: times 1.5.
//  6. Selection: maximal marginal relevance, score = (1 - diversity) * relevance / max relevance
//     - diversity * (largest cosine, all terms, with a sentence already chosen), plus a coverage
//     reward 0.5 * room * (sqrt(R + r) - sqrt(R)) for a sentence of a major top-level section (3% of
//     the candidates or more, not acknowledgements, references, appendices or what follows them),
//     R being the relevance already taken from that section and r the sentence's (Lin and Bilmes'
//     diminishing-returns reward over a partition: a section's first sentence gains most). room
//     is 0 when the budget holds about one sentence a major section or less and 1 from three; there
//     is no coverage reward in a document that has a summary section (the summary covers it). A
//     sentence whose cosine with a chosen one is 0.8 or more is never taken. Sentences are taken
//     while their token counts (plus one per join) fit; the joined text is then counted once more
//     and the last-chosen sentences are dropped until it fits. If not even one sentence fits, the
//     most relevant one is cut at a word (Chinese, or a first word too long: character) boundary
//     and ends with "…".
//  7. Output: each sentence as Document::clean shows it (escape sequences and control characters
//     removed, lines a PDF broke inside a sentence joined, a line-end hyphen before a lower-case
//     letter removed), joined by what the document has between them (Document::gap).
// With ExtractiveOptions::outline each top-level section gets its own summary: steps 6 and 7 over
// its sentences alone, with the relevance of the whole document, under section_tokens.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chunker/chunker.h"

namespace abridge::pipeline {

enum class Language { kEnglish, kChinese };
const char* language_code(Language l);  // "en", "zh"
// The document's main language: Chinese when CJK ideographs make up a large share of its letters.
// A Han character carries about as much as a word, so the share is of Han characters plus words of
// other scripts: Chinese from kChineseShare on (a Chinese manual full of commands and URLs has
// about 0.6; an English text quoting a poem, a few hundredths).
Language detect_language(std::string_view text);
inline constexpr double kChineseShare = 0.4;

struct ExtractiveOptions {
  int64_t max_tokens = 400;  // budget of the summary in tokens of `counter`
  double diversity = 0.2;    // MMR trade-off: 0 = pure relevance, 1 = pure novelty
  bool outline = false;      // also summarize each top-level section (ExtractiveSummary::sections)
  int64_t section_tokens = 0;  // budget of each section's summary; 0: max(48, max_tokens / 4)
};

// One chosen sentence, pointing back into the input.
struct ExtractedSentence {
  size_t begin = 0;  // byte range [begin, end) of the sentence in the input (a leading bullet left out)
  size_t end = 0;
  uint32_t first_page = 1;  // pages of its first and last bytes: 1 + the form feeds before them (a
  uint32_t last_page = 1;   // PDF's text has one between pages; a text without any is page 1)
  int section = -1;  // index into ExtractiveSummary::sections
  std::string text;  // the sentence as the summary shows it
};

// A top-level section of the document and, with ExtractiveOptions::outline, its own summary.
struct SectionSummary {
  std::string title;  // its heading as written ("3 Results", "SUMMARY OF THE INVENTION", "摘要");
                      // "" for the text before the first top-level heading, or for a document
                      // without headings
  size_t begin = 0;   // byte range [begin, end) in the input: from its heading line to the next
  size_t end = 0;     // top-level heading (or the end of the text)
  uint32_t first_page = 1;
  uint32_t last_page = 1;
  // With outline only: the section's summary (at most section_tokens tokens), its sentences in
  // order, and its token count.
  std::string text;
  std::vector<ExtractedSentence> sentences;
  int64_t tokens = 0;
};

struct ExtractiveSummary {
  std::string text;  // the chosen sentences, in document order, joined by what lies between them in
                     // the document (chunker::Document::gap): a blank line across paragraphs, a
                     // line break where the document breaks the line, else a space (nothing
                     // between CJK characters)
  std::vector<ExtractedSentence> sentences;      // the chosen sentences, in document order
  std::vector<std::pair<size_t, size_t>> spans;  // their byte ranges [begin, end), the same order
  // The document's top-level sections in order: the untitled text before the first top-level heading
  // when it holds a sentence, then one per top-level heading (all of the text, untitled, when there
  // is none), clipped to a Project Gutenberg text's body; empty for an empty summary.
  std::vector<SectionSummary> sections;
  Language language = Language::kEnglish;
  int64_t tokens = 0;  // counter.count(text), <= max_tokens
};

// Picks the most relevant sentences under the token budget and returns them in document order (see
// above). Empty or whitespace-only text, or max_tokens <= 0, gives an empty summary. `text` is UTF-8
// (invalid bytes read as U+FFFD; form feeds, CRLF, ANSI escapes and PDF line breaks allowed).
ExtractiveSummary summarize_extractive(std::string_view text, const chunker::TokenCounter& counter,
                                       const ExtractiveOptions& options = {});

}  // namespace abridge::pipeline
