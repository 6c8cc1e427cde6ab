// The built-in extractive summarizer: what abridge gives when no model is loaded.
//
// How a summary is made (all deterministic; ties go to the earlier sentence):
//  1. Lines. The input is cut into lines (\n, \r\n, \r, form feed). Lines that cannot hold prose are
//     dropped and end the paragraph they are in: running page headers/footers
//     (chunker::find_running_lines), headings (chunker::parse_heading), table-of-contents lines (dot
//     leaders), lines that are mostly digits or punctuation (page numbers, tables, "* * *"), code-like
//     lines (a prompt "> ", "$ ", "+ ", braces, a high share of code symbols) and title lines (short,
//     no comma, no final punctuation, at the start of a paragraph or after a finished sentence: a
//     poem's title and author, "CHAPTER I"). A line that starts with a bullet starts a paragraph.
//     A Project Gutenberg text is read between its START and END markers only.
//  2. Sentences: chunker::split_sentences within each paragraph. A sentence is a candidate when it
//     ends with a terminator (. ! ? … 。！？；: one ending with a colon introduces a list or code), at
//     least half its characters are letters, it has no unopened ')' (a fragment) and at most one code
//     mark ("name(", "=", braces, "$", "<-") per 12 words; English: at least 5 words and 2 content
//     words, a first character that starts a sentence (upper case, digit, quote, bracket), not
//     mostly upper case; Chinese: at least 6 Han characters.
//     If no sentence qualifies, every sentence may be taken.
//  3. Terms: English content words, lower-cased, stopwords removed, plurals and common suffixes
//     stripped; Chinese: bigrams of adjacent Han characters (and Latin words). Weights are
//     (1 + log tf) * idf, vectors L2-normalized, so similarity is a cosine.
//  4. Graph: similarities come from an inverted index of terms (never a dense n x n pass); terms found
//     in more than max(32, n / 64) of the n sentences are left out of the graph (they carry little
//     idf, would make the cost quadratic and make sentences of common words look central), and each
//     sentence keeps its 32 strongest edges. TextRank (PageRank, damping 0.85) gives each sentence its
//     centrality; relevance is centrality times a length prior (full from 12 to 40 words, a Chinese
//     word being 1.5 Han characters, falling as 1/length outside).
//  5. Selection: maximal marginal relevance, score = (1 - diversity) * relevance / max relevance
//     - diversity * (largest cosine, all terms, with a sentence already chosen). A sentence whose
//     cosine with a chosen one is 0.8 or more is never taken. Sentences are taken while their token
//     counts (plus one per join) fit; the joined text is then counted once more and the
//     last-chosen sentences are dropped until it fits. If not even one sentence fits, the most relevant
//     one is cut at a word (Chinese, or a first word too long: character) boundary and ends with "…".
// Spans index the input bytes (a leading bullet left out); the summary shows each sentence cleaned
// (escape sequences and control characters removed, line breaks and runs of spaces read as one space,
// or as nothing between CJK characters, a line-end hyphen before a lower-case letter removed).
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
  double diversity = 0.3;    // MMR trade-off: 0 = pure centrality, 1 = pure novelty
};

struct ExtractiveSummary {
  std::string text;                              // the chosen sentences, in document order, joined
                                                 // (English: space, newline between paragraphs;
                                                 // Chinese: nothing)
  std::vector<std::pair<size_t, size_t>> spans;  // their byte spans [start, end) in the input, in order
  Language language = Language::kEnglish;
  int64_t tokens = 0;  // counter.count(text), <= max_tokens
};

// Picks the most central sentences with MMR diversity until the token budget is reached and returns
// them in document order (see above). Empty or whitespace-only text, or max_tokens <= 0, gives an
// empty summary. `text` is valid UTF-8 (form feeds, CRLF, ANSI escapes and PDF line breaks allowed).
ExtractiveSummary summarize_extractive(std::string_view text, const chunker::TokenCounter& counter,
                                       const ExtractiveOptions& options = {});

}  // namespace abridge::pipeline
