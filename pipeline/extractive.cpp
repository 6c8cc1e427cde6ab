// The extractive summarizer: the chunker's document model -> sentences -> term vectors -> a sparse
// similarity graph -> relevance (centrality and priors) -> selection under a token budget. The steps
// and their rules are described in extractive.h; constants below say why.
#include "pipeline/extractive.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/hash.h"
#include "base/utf8.h"
#include "chunker/document.h"
#include "chunker/terms.h"
#include "pipeline/extractive_graph.h"

namespace abridge::pipeline {
namespace {

using namespace extractive_graph;

using chunker::Document;
using chunker::LineKind;

constexpr double kNearDuplicate = 0.8;  // cosine at which a sentence repeats one already chosen
constexpr int kMaxMisfits = 64;         // sentences tried in a row that do not fit before giving up
constexpr int64_t kJoinTokens = 1;      // what a join may add to the sum of the sentences' counts
// Candidate rules (see extractive.h).
constexpr uint32_t kMinWords = 5;           // English words (stopwords included)
constexpr uint32_t kMinContentTerms = 2;    // English content terms
constexpr uint32_t kMinHan = 6;             // Chinese: Han characters
constexpr uint32_t kWordsPerCodeMark = 12;  // more code marks than one per this many words: code
constexpr double kHanPerWord = 1.5;         // Han characters in a Chinese word, about
constexpr double kTokensPerWord = 1.4;      // tokens of an English word (or 1.5 Han characters), about
constexpr const char* kEllipsis = "\xE2\x80\xA6";  // U+2026, marks a sentence cut to fit

// Relevance and selection, tuned on the two evaluation sets with bench/eval_summaries (see
// docs/PERFORMANCE.md): ROUGE-1/2/L at 128, 256 and 400 tokens on both, not one number.
constexpr double kCentralityFloor = 0.05;  // added to the [0, 1] centrality: an isolated sentence
                                           // (a short abstract's) still ranks by its priors
constexpr double kDirectedShare = 0.7;     // directed (PacSum) centrality against TextRank: 0.5-0.85
                                           // score within 0.003 of each other, TextRank alone 0.015 less
constexpr double kBackWeight = -0.5;       // PacSum's lambda1: an edge to an earlier sentence counts
                                           // against (-1: -0.007; -0.25 and 0 within 0.003)
constexpr double kShortWords = 12;         // the length prior: full weight from kShortWords words up
constexpr double kLongWords = 120;         // to kLongWords, falling as 1/length on either side (40
                                           // cost the patents, whose summaries are long sentences, up
                                           // to 0.05 ROUGE-1)
constexpr double kSummaryFactor = 4;       // a summary section's sentences: relevance times this,
constexpr double kSummaryLift = 1;         // plus this many times the best other sentence's relevance
                                           // (so that they come first, in their own order)
constexpr double kConclusionFactor = 2;    // Conclusion(s), 总结, 结论 (1.5 the same, 3: -0.009)
constexpr double kIntroductionFactor = 1.5;  // Introduction, 引言 (1: -0.007, 1.25: -0.004, 2: +0.001)
constexpr double kCoverage = 0.5;          // the reward for a major section's first sentence
constexpr double kMajorShare = 0.03;       // a top-level section with this share of the candidates is major

// --- Section titles ---

enum class Prior : uint8_t { kBackMatter, kNone, kIntroduction, kConclusion, kSummary };

// What a section's title says it is. ASCII letters are compared in lower case, as whole words.
Prior title_prior(std::string_view title) {
  std::string words = " ";
  for (const char c : title) {
    const char l = (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
    words += (l >= 'a' && l <= 'z') || static_cast<uint8_t>(l) >= 0x80 ? l : ' ';
  }
  words += ' ';
  auto has = [&](std::string_view w) { return words.find(w) != std::string::npos; };
  if (has(" abstract ") || has(" summary ") || has(" highlights ") || has(" key findings ") || has("摘要") ||
      has("提要") || has("概要"))
    return Prior::kSummary;
  if (has(" conclusion ") || has(" conclusions ") || has(" concluding ") || has("总结") || has("结论") || has("小结"))
    return Prior::kConclusion;
  if (has(" introduction ") || has("引言") || has("前言")) return Prior::kIntroduction;
  if (has(" acknowledgements ") || has(" acknowledgement ") || has(" acknowledgments ") || has(" acknowledgment ") ||
      has(" references ") || has(" bibliography ") || has(" appendix ") || has(" appendices ") || has("致谢") ||
      has("参考文献") || has("附录"))
    return Prior::kBackMatter;
  return Prior::kNone;
}

// --- Sentences ---

struct Sentence {
  size_t begin;      // visible span in the input [begin, end)
  size_t end;
  int section;       // innermost section of the document (Document::sections()), -1 before any
  int top;           // index of its top-level section in the summary's list
  bool candidate;
  double words;      // English words; Chinese: Han characters / kHanPerWord
};

// Term ids by the term's 64-bit FNV-1a hash, in order of first appearance: an open-addressing table of
// ids (4 bytes a slot, at most half full) over the hashes by id (8 bytes a term). A document of a
// million distinct terms (Chinese bigrams) would take some 80 bytes a term in a map of strings. Two
// distinct terms of one document share a hash with a chance of about n^2 / 2^65 (1e-7 for a million).
class TermIds {
 public:
  uint32_t id(std::string_view term) {
    const uint64_t h = fnv1a64(term);
    if ((hashes_.size() + 1) * 2 > slots_.size()) grow();
    const size_t mask = slots_.size() - 1;
    size_t i = slot_of(h) & mask;
    for (; slots_[i] != kEmpty; i = (i + 1) & mask)
      if (hashes_[slots_[i]] == h) return slots_[i];
    slots_[i] = static_cast<uint32_t>(hashes_.size());
    hashes_.push_back(h);
    return slots_[i];
  }
  size_t size() const { return hashes_.size(); }
  void clear() {
    slots_ = {};
    hashes_ = {};
  }

 private:
  static constexpr uint32_t kEmpty = UINT32_MAX;
  static size_t slot_of(uint64_t h) { return static_cast<size_t>(h ^ (h >> 29)); }
  void grow() {
    slots_.assign(std::max<size_t>(1024, slots_.size() * 2), kEmpty);
    const size_t mask = slots_.size() - 1;
    for (uint32_t id = 0; id < hashes_.size(); ++id) {
      size_t i = slot_of(hashes_[id]) & mask;
      while (slots_[i] != kEmpty) i = (i + 1) & mask;
      slots_[i] = id;
    }
  }

  std::vector<uint32_t> slots_;   // (a power of two) a term's id, kEmpty for none
  std::vector<uint64_t> hashes_;  // (terms) the hash of each id
};

// Sentences and their terms; term ids in order of first appearance.
class SentenceReader {
 public:
  SentenceReader(std::string_view text, Language lang) : text_(text), lang_(lang) {}

  // Reads the sentence [b, e); keeps it when it has a visible character.
  void add(size_t b, size_t e) {
    const chunker::TextProfile p = scanner_.scan(text_, b, e);
    if (p.begin >= p.end) return;
    term_begin_.push_back(terms_.size());
    for (const std::string_view t : scanner_.terms()) terms_.push_back(ids_.id(t));
    // Candidates are whole sentences of prose: they end with a terminator (one ending with a colon
    // introduces a list or code) and, in English, start like a sentence.
    bool ok = p.ends_sentence && p.letters * 2 >= p.nonspace && !p.unopened_close;
    if (lang_ == Language::kChinese) {
      ok = ok && p.han >= kMinHan && p.code_marks * kWordsPerCodeMark <= p.han;
    } else {
      ok = ok && p.words >= kMinWords && p.terms >= kMinContentTerms && p.code_marks * kWordsPerCodeMark <= p.words;
      ok = ok && p.starts_sentence;
      if (p.letters >= 8 && p.upper * 10 > p.letters * 7) ok = false;  // an upper-case heading
    }
    const double length = lang_ == Language::kChinese ? p.han / kHanPerWord + p.words : p.words;
    sentences_.push_back({p.begin, p.end, -1, -1, ok, length});
  }

  std::vector<Sentence>& sentences() { return sentences_; }
  // Term ids of sentence i (with repeats), in [terms_begin(i), terms_begin(i + 1)).
  const std::vector<uint32_t>& terms() const { return terms_; }
  size_t terms_begin(size_t i) const { return i < term_begin_.size() ? term_begin_[i] : terms_.size(); }
  size_t n_terms() const { return ids_.size(); }
  // The terms once the vectors are built from them: their memory goes back before the graph is built.
  void drop_terms() {
    terms_ = {};
    term_begin_ = {};
    ids_.clear();
  }

 private:
  std::string_view text_;
  Language lang_;
  chunker::TermScanner scanner_;
  std::vector<Sentence> sentences_;
  std::vector<uint32_t> terms_;
  std::vector<size_t> term_begin_;
  TermIds ids_;
};

// The region a Project Gutenberg text keeps between its START and END markers, else the whole text.
std::pair<size_t, size_t> body_region(std::string_view text) {
  size_t b = 0, e = text.size();
  for (size_t at = text.find("PROJECT GUTENBERG"); at != std::string_view::npos;
       at = text.find("PROJECT GUTENBERG", at + 1)) {
    const size_t line_begin = text.rfind('\n', at) == std::string_view::npos ? 0 : text.rfind('\n', at) + 1;
    const std::string_view head = text.substr(line_begin, at - line_begin);
    if (head.find("START OF") != std::string_view::npos && b == 0) {
      const size_t nl = text.find('\n', at);
      b = nl == std::string_view::npos ? text.size() : nl + 1;
    } else if (head.find("END OF") != std::string_view::npos && at > b) {
      e = line_begin;
      break;
    }
  }
  return b < e ? std::pair{b, e} : std::pair{size_t{0}, text.size()};
}

// --- Vectors (the graph and its centralities: extractive_graph.h) ---

// The vectors of the candidates `cand`; the reader's terms are dropped once read.
Vectors build_vectors(SentenceReader& reader, const std::vector<size_t>& cand) {
  const size_t n = cand.size(), n_terms = reader.n_terms();
  Vectors v;
  v.row_begin.reserve(n + 1);
  v.row_begin.assign(1, 0);
  std::vector<uint32_t> scratch;
  // Distinct terms of each row, counted first, so that the entries are allocated once.
  size_t entries = 0;
  for (size_t r = 0; r < n; ++r) {
    scratch.assign(reader.terms().begin() + static_cast<std::ptrdiff_t>(reader.terms_begin(cand[r])),
                   reader.terms().begin() + static_cast<std::ptrdiff_t>(reader.terms_begin(cand[r] + 1)));
    std::sort(scratch.begin(), scratch.end());
    entries += static_cast<size_t>(std::unique(scratch.begin(), scratch.end()) - scratch.begin());
  }
  v.row_term.reserve(entries);
  v.row_weight.reserve(entries);
  std::vector<double> weight;  // the row being built, in double
  for (size_t r = 0; r < n; ++r) {
    scratch.assign(reader.terms().begin() + static_cast<std::ptrdiff_t>(reader.terms_begin(cand[r])),
                   reader.terms().begin() + static_cast<std::ptrdiff_t>(reader.terms_begin(cand[r] + 1)));
    std::sort(scratch.begin(), scratch.end());
    for (size_t k = 0; k < scratch.size();) {
      size_t m = k;
      while (m < scratch.size() && scratch[m] == scratch[k]) ++m;
      v.row_term.push_back(scratch[k]);
      v.row_weight.push_back(static_cast<float>(m - k));  // the term frequency, for now
      k = m;
    }
    v.row_begin.push_back(v.row_term.size());
  }
  reader.drop_terms();
  std::vector<uint32_t> df(n_terms + 1, 0);
  for (const uint32_t t : v.row_term) ++df[t];
  for (size_t r = 0; r < n; ++r) {
    double norm = 0;
    weight.clear();
    for (size_t k = v.row_begin[r]; k < v.row_begin[r + 1]; ++k) {
      const double idf = std::log(static_cast<double>(n + 1) / static_cast<double>(df[v.row_term[k]]));
      weight.push_back((1.0 + std::log(static_cast<double>(v.row_weight[k]))) * idf);
      norm += weight.back() * weight.back();
    }
    norm = std::sqrt(norm);
    for (size_t k = v.row_begin[r]; k < v.row_begin[r + 1]; ++k)
      v.row_weight[k] = norm > 0 ? static_cast<float>(weight[k - v.row_begin[r]] / norm) : 0.0f;
  }
  // A term of one row only takes part in no cosine between two rows (it adds to the row's norm,
  // counted above): it is left out of the rows and the index, and the other terms are numbered again
  // in the same order, so that every sum runs as before. Most Chinese bigrams of a long document are
  // such terms.
  std::vector<uint32_t> renumber(n_terms, UINT32_MAX);
  uint32_t shared = 0;
  for (size_t t = 0; t < n_terms; ++t)
    if (df[t] >= 2) renumber[t] = shared++;
  size_t kept = 0;
  for (size_t r = 0, k = 0; r < n; ++r) {
    const size_t end = v.row_begin[r + 1];
    v.row_begin[r] = kept;
    for (; k < end; ++k) {
      const uint32_t t = renumber[v.row_term[k]];
      if (t == UINT32_MAX) continue;
      v.row_term[kept] = t;
      v.row_weight[kept] = v.row_weight[k];
      ++kept;
    }
  }
  v.row_begin[n] = kept;
  v.row_term.resize(kept);
  v.row_term.shrink_to_fit();
  v.row_weight.resize(kept);
  v.row_weight.shrink_to_fit();
  v.post_begin.assign(size_t{shared} + 1, 0);
  for (size_t t = 0; t < n_terms; ++t)
    if (renumber[t] != UINT32_MAX) v.post_begin[renumber[t] + 1] = df[t];
  for (size_t t = 0; t < shared; ++t) v.post_begin[t + 1] += v.post_begin[t];
  df = {};
  renumber = {};
  v.post_row.resize(v.row_term.size());
  v.post_weight.resize(v.row_term.size());
  std::vector<size_t> fill(v.post_begin.begin(), v.post_begin.end() - 1);
  for (size_t r = 0; r < n; ++r)
    for (size_t k = v.row_begin[r]; k < v.row_begin[r + 1]; ++k) {
      const size_t at = fill[v.row_term[k]]++;
      v.post_row[at] = static_cast<uint32_t>(r);
      v.post_weight[at] = v.row_weight[k];
    }
  return v;
}

// --- Selection ---

struct Selector {
  const Document& doc;
  const std::vector<Sentence>& sentences;
  const std::vector<size_t>& cand;  // row -> sentence
  const Vectors& vectors;
  const std::vector<double>& rel;   // row -> relevance
  const chunker::TokenCounter& counter;
  double diversity;

  std::unordered_map<size_t, std::string> shown;  // row -> the sentence as shown

  const std::string& show(size_t row) {
    auto it = shown.find(row);
    if (it == shown.end()) {
      const Sentence& s = sentences[cand[row]];
      it = shown.emplace(row, doc.clean(s.begin, s.end)).first;
    }
    return it->second;
  }

  // The joined text of rows (in document order).
  std::string join(const std::vector<size_t>& rows) {
    std::string out;
    for (size_t k = 0; k < rows.size(); ++k) {
      if (k > 0) out += doc.gap(sentences[cand[rows[k - 1]]].end, sentences[cand[rows[k]]].begin);
      out += show(rows[k]);
    }
    return out;
  }

  // MMR (with a reward for sections not yet represented) over `rows` under `budget`: the chosen rows
  // in document order and the joined text's token count, or nothing when no sentence fits.
  std::vector<size_t> select(const std::vector<size_t>& rows, int64_t budget, const std::vector<double>& section_weight,
                             std::string* text, int64_t* tokens) {
    const size_t n = rows.size();
    if (n == 0 || budget <= 0) return {};
    double top = 0;
    for (const size_t r : rows) top = std::max(top, rel[r]);
    if (top <= 0) top = 1;
    std::vector<size_t> local(vectors.rows(), n);  // row -> index in rows (n: not in rows)
    for (size_t k = 0; k < n; ++k) local[rows[k]] = k;
    std::vector<double> max_sim(n, 0.0), acc(vectors.rows(), 0.0);
    std::vector<double> section_got(section_weight.size(), 0.0);
    std::vector<uint32_t> touched;
    std::vector<bool> done(n, false);
    std::vector<size_t> chosen;  // rows, in order of choice
    int64_t used = 0;
    int misfits = 0;
    for (;;) {
      size_t best = n;
      double best_score = 0;
      for (size_t k = 0; k < n; ++k) {
        if (done[k] || max_sim[k] >= kNearDuplicate) continue;
        const size_t r = rows[k];
        double score = (1 - diversity) * rel[r] / top - diversity * max_sim[k];
        const int t = sentences[cand[r]].top;
        if (t >= 0 && static_cast<size_t>(t) < section_weight.size() && section_weight[t] > 0)
          score += kCoverage * section_weight[t] * (std::sqrt(section_got[t] + rel[r] / top) - std::sqrt(section_got[t]));
        if (best == n || score > best_score) {
          best = k;
          best_score = score;
        }
      }
      if (best == n) break;
      done[best] = true;
      const size_t r = rows[best];
      const int64_t cost = static_cast<int64_t>(counter.count(show(r))) + (chosen.empty() ? 0 : kJoinTokens);
      if (used + cost > budget) {
        if (++misfits >= kMaxMisfits) break;
        continue;
      }
      misfits = 0;
      used += cost;
      chosen.push_back(r);
      const int t = sentences[cand[r]].top;
      if (t >= 0 && static_cast<size_t>(t) < section_got.size()) section_got[t] += rel[r] / top;
      similarities(vectors, r, vectors.rows(), acc, touched);
      for (const uint32_t j : touched) {
        if (const size_t k = local[j]; k < n) max_sim[k] = std::max(max_sim[k], acc[j]);
        acc[j] = 0;
      }
      if (budget - used <= kJoinTokens) break;
    }
    // The joined text is counted once more; the last-chosen sentences go until it fits.
    while (!chosen.empty()) {
      std::vector<size_t> order = chosen;
      std::sort(order.begin(), order.end());
      std::string joined = join(order);
      const auto count = static_cast<int64_t>(counter.count(joined));
      if (count <= budget) {
        *text = std::move(joined);
        *tokens = count;
        return order;
      }
      chosen.pop_back();
    }
    return {};
  }
};

// The longest prefix [b, p) of the sentence [b, e) that ends before a space (words_only) or at any
// character, whose shown text with kEllipsis fits the budget: the shown text and the prefix's end
// (after the last character kept), or p == b when none fits. The cut points are found as the search
// reaches them: a sentence of megabytes without a space would otherwise hold 8 bytes a character.
std::pair<std::string, size_t> fitting_prefix(const Document& doc, size_t b, size_t e, bool words_only, int64_t budget,
                                              const chunker::TokenCounter& counter) {
  const std::string_view text = doc.text();
  std::vector<size_t> cuts;
  size_t scan = b + 1;
  // Whether cuts[k] exists, finding the cuts up to it.
  auto has = [&](size_t k) {
    for (; cuts.size() <= k && scan < e; ++scan) {
      const size_t i = scan;
      if (is_utf8_continuation(static_cast<unsigned char>(text[i]))) continue;  // inside a character
      if (!words_only || (text[i - 1] != ' ' && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t'))) cuts.push_back(i);
    }
    return k < cuts.size();
  };
  // A cut leaves out the spaces and clause marks before it (ASCII, or full-width ， 、 ； ：).
  auto trimmed = [&](size_t p) {
    for (bool again = true; again && p > b;) {
      again = false;
      const char c = text[p - 1];
      if (c == ' ' || c == ',' || c == ';' || c == ':' || c == '\n' || c == '\r' || c == '\t') {
        --p;
        again = true;
        continue;
      }
      for (std::string_view tail : {"\xEF\xBC\x8C", "\xE3\x80\x81", "\xEF\xBC\x9B", "\xEF\xBC\x9A"})
        if (p - b >= tail.size() && text.substr(p - tail.size(), tail.size()) == tail) {
          p -= tail.size();
          again = true;
          break;
        }
    }
    return p;
  };
  auto shown = [&](size_t p) { return doc.clean(b, trimmed(p)) + kEllipsis; };
  auto fits = [&](size_t p) {
    return trimmed(p) > b && static_cast<int64_t>(counter.count(shown(p))) <= budget;
  };
  // Counts grow with the prefix almost always: gallop to a cut that does not fit (or past the last
  // cut), search between, then step back until one really fits.
  size_t lo = 0, hi = 0;  // cuts[0, lo) were found to fit (by the search); cuts[hi] does not, or hi is the end
  for (size_t probe = 0;; probe = 2 * probe + 1) {
    if (!has(probe)) {
      hi = cuts.size();
      break;
    }
    if (!fits(cuts[probe])) {
      hi = probe;
      break;
    }
    lo = probe + 1;
  }
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (fits(cuts[mid])) lo = mid + 1;
    else hi = mid;
  }
  for (size_t k = lo; k-- > 0;)
    if (fits(cuts[k])) return {shown(cuts[k]), trimmed(cuts[k])};
  return {"", b};
}

}  // namespace

const char* language_code(Language l) { return l == Language::kChinese ? "zh" : "en"; }

Language detect_language(std::string_view text) {
  const chunker::ScriptCounts n = chunker::count_scripts(text);
  const size_t units = n.han + n.words;
  return units > 0 && static_cast<double>(n.han) >= kChineseShare * static_cast<double>(units) ? Language::kChinese
                                                                                              : Language::kEnglish;
}

ExtractiveSummary summarize_extractive(std::string_view text, const chunker::TokenCounter& counter,
                                       const ExtractiveOptions& options) {
  ExtractiveSummary summary;
  summary.language = detect_language(text);
  const int64_t budget = options.max_tokens;
  const double diversity = std::clamp(options.diversity, 0.0, 1.0);
  if (budget <= 0) return summary;

  chunker::Options doc_options;
  doc_options.invalid_utf8 = chunker::InvalidUtf8::kReplace;
  // The document model is let go while the vectors and the graph are built, and built again for the
  // selection (the same text and options give the same model): its lines are the third largest
  // structure of a long document, and the three need not be held at once.
  std::optional<Document> doc_model;
  doc_model.emplace(text, doc_options);
  const Document* doc = &*doc_model;
  const auto& lines = doc->lines();
  const auto& sections = doc->sections();
  const auto [region_b, region_e] = body_region(text);

  // Sentences: runs of lines that hold prose, cut where the document breaks a paragraph, at a list
  // item, and at a dropped running line (so that a sentence's span holds nothing left out).
  auto prose = [&](size_t li) {
    const chunker::Line& l = lines[li];
    return doc->is_content(li) && chunker::is_prose_like(l.kind) && !l.leaders && !l.numeric && !l.code_like &&
           !l.title && l.begin >= region_b && l.end <= region_e;
  };
  SentenceReader reader(text, summary.language);
  std::vector<size_t> starts;
  auto read_run = [&](size_t first, size_t last) {
    starts.clear();
    doc->sentence_starts(first, last, starts);
    size_t start = lines[first].vis_begin;
    for (const size_t end : starts) {
      reader.add(start, end);
      start = end;
    }
    reader.add(start, lines[last].end);
  };
  for (size_t k = 0; k < lines.size();) {
    if (!prose(k)) {
      ++k;
      continue;
    }
    size_t m = k;
    while (m + 1 < lines.size() && prose(m + 1) && lines[m].join != chunker::Join::kParagraph &&
           lines[m + 1].kind != LineKind::kListItem)
      ++m;
    read_run(k, m);
    k = m + 1;
  }
  std::vector<Sentence>& sent = reader.sentences();
  if (sent.empty()) {  // no prose line at all: read every content line as one paragraph
    size_t first = lines.size(), last = 0;
    for (size_t li = 0; li < lines.size(); ++li)
      if (doc->is_content(li)) first = std::min(first, li), last = li;
    if (first < lines.size()) read_run(first, last);
  }
  if (sent.empty()) return summary;

  // Sections: each sentence's innermost section, and the summary's list of top-level sections (those
  // that overlap the body, clipped to it).
  std::vector<int> top_of_section(sections.size(), -1);
  {
    size_t first_top = region_e;  // where the first listed top-level section begins
    for (const auto& sec : sections)
      if (sec.depth == 0 && sec.end > region_b && sec.begin < region_e) {
        first_top = std::max(sec.begin, region_b);
        break;
      }
    const bool preamble = std::any_of(sent.begin(), sent.end(), [&](const Sentence& x) { return x.begin < first_top; });
    if (preamble) {
      SectionSummary ss;
      ss.begin = region_b;
      ss.end = first_top;
      summary.sections.push_back(std::move(ss));
    }
    for (size_t i = 0; i < sections.size(); ++i) {
      if (sections[i].depth != 0 || sections[i].end <= region_b || sections[i].begin >= region_e) continue;
      SectionSummary ss;
      ss.title = doc->headings()[sections[i].heading].title;
      ss.begin = std::max(sections[i].begin, region_b);
      ss.end = std::min(sections[i].end, region_e);
      top_of_section[i] = static_cast<int>(summary.sections.size());
      summary.sections.push_back(std::move(ss));
    }
    for (size_t i = 0; i < sections.size(); ++i)
      if (sections[i].parent >= 0) top_of_section[i] = top_of_section[sections[i].parent];
    size_t next = 0;
    int cur = -1;
    for (Sentence& x : sent) {
      while (next < sections.size() && sections[next].begin <= x.begin) cur = static_cast<int>(next++);
      int in = cur;
      while (in >= 0 && sections[in].end <= x.begin) in = sections[in].parent;
      x.section = in;
      x.top = in >= 0 ? top_of_section[in] : (preamble ? 0 : -1);
    }
    for (SectionSummary& ss : summary.sections) {
      ss.first_page = doc->page_of(ss.begin);
      ss.last_page = doc->page_of(ss.end > ss.begin ? ss.end - 1 : ss.begin);
    }
  }
  std::vector<Prior> section_prior(sections.size(), Prior::kNone);
  for (size_t i = 0; i < sections.size(); ++i) {
    section_prior[i] = title_prior(doc->headings()[sections[i].heading].title);
    if (sections[i].parent >= 0 && section_prior[i] == Prior::kNone) section_prior[i] = section_prior[sections[i].parent];
  }

  std::vector<size_t> cand;  // candidate sentences, in document order
  for (size_t i = 0; i < sent.size(); ++i)
    if (sent[i].candidate) cand.push_back(i);
  if (cand.empty()) {  // nothing looks like a good sentence: any sentence may be taken
    cand.resize(sent.size());
    std::iota(cand.begin(), cand.end(), size_t{0});
  }
  const size_t n = cand.size();

  // Back matter (acknowledgements, references, appendices) ends a document: what follows it is too.
  std::vector<bool> back_matter(summary.sections.size(), false);
  for (size_t i = 0; i < sections.size(); ++i)
    if (top_of_section[i] >= 0 && sections[i].depth == 0 && section_prior[i] == Prior::kBackMatter)
      std::fill(back_matter.begin() + top_of_section[i], back_matter.end(), true);
  doc = nullptr;
  doc_model.reset();  // `lines` and `sections` are not used below

  // Relevance: centrality times priors.
  const Vectors vectors = build_vectors(reader, cand);
  std::vector<double> central, directed;
  {
    const Graph graph = build_graph(vectors);  // gone before the selection
    central = textrank(graph);
    directed = directed_centrality(graph, kBackWeight);
  }
  normalize(central);
  normalize(directed);
  for (size_t r = 0; r < n; ++r) central[r] = (1 - kDirectedShare) * central[r] + kDirectedShare * directed[r];
  std::vector<double> rel(n);
  auto in_summary = [&](size_t r) {
    const int sec = sent[cand[r]].section;
    return sec >= 0 && section_prior[sec] == Prior::kSummary;
  };
  for (size_t r = 0; r < n; ++r) {
    const Sentence& s = sent[cand[r]];
    const double w = std::max(s.words, 1.0);
    double x = (kCentralityFloor + central[r]) * std::min(1.0, w / kShortWords) * std::min(1.0, kLongWords / w);
    if (s.section >= 0) {
      switch (section_prior[s.section]) {
        case Prior::kSummary: x *= kSummaryFactor; break;
        case Prior::kConclusion: x *= kConclusionFactor; break;
        case Prior::kIntroduction: x *= kIntroductionFactor; break;
        case Prior::kBackMatter: case Prior::kNone: break;
      }
    }
    rel[r] = x;
  }
  double top_other = 0;
  for (size_t r = 0; r < n; ++r)
    if (!in_summary(r)) top_other = std::max(top_other, rel[r]);
  for (size_t r = 0; r < n; ++r)
    if (in_summary(r)) rel[r] += kSummaryLift * top_other;
  // Coverage: the major top-level sections (kMajorShare of the candidates or more, not back
  // matter) are each worth covering once.
  std::vector<double> section_weight(summary.sections.size(), 0.0);
  for (size_t r = 0; r < n; ++r)
    if (const int t = sent[cand[r]].top; t >= 0) section_weight[t] += 1.0;
  // A document that has a summary of its own (Abstract, Summary, Highlights) is covered by it.
  const bool has_summary = std::any_of(section_prior.begin(), section_prior.end(), [](Prior p) { return p == Prior::kSummary; });
  size_t majors = 0;
  for (size_t t = 0; t < section_weight.size() && !has_summary; ++t) {
    section_weight[t] = !back_matter[t] && section_weight[t] >= kMajorShare * static_cast<double>(n) ? 1.0 : 0.0;
    majors += section_weight[t] > 0 ? 1 : 0;
  }
  // The reward needs room: none for a budget of one sentence a major section or less, in full from
  // three.
  double mean_words = 0;
  for (size_t r = 0; r < n; ++r) mean_words += sent[cand[r]].words;
  mean_words = std::max(1.0, mean_words / static_cast<double>(n));
  const double fits = static_cast<double>(budget) / (kTokensPerWord * mean_words);
  const double room = majors > 0 ? std::clamp((fits / static_cast<double>(majors) - 1.0) / 2.0, 0.0, 1.0) : 0.0;
  for (double& w : section_weight) w *= room;

  doc_model.emplace(text, doc_options);
  doc = &*doc_model;
  Selector sel{*doc, sent, cand, vectors, rel, counter, diversity, {}};
  auto sentences_of = [&](const std::vector<size_t>& rows) {
    std::vector<ExtractedSentence> out;
    for (const size_t r : rows) {
      const Sentence& s = sent[cand[r]];
      out.push_back({s.begin, s.end, doc->page_of(s.begin), doc->page_of(s.end - 1), s.top, sel.show(r)});
    }
    return out;
  };
  // Not one sentence fits: the most relevant one, cut.
  auto cut_best = [&](const std::vector<size_t>& rows, int64_t limit, std::string* out_text, int64_t* out_tokens) {
    std::vector<ExtractedSentence> out;
    if (rows.empty()) return out;
    const size_t best = *std::max_element(rows.begin(), rows.end(), [&](size_t a, size_t b) { return rel[a] < rel[b]; });
    const Sentence& s = sent[cand[best]];
    auto [shown, end] = summary.language == Language::kEnglish ? fitting_prefix(*doc, s.begin, s.end, true, limit, counter)
                                                               : std::pair<std::string, size_t>{"", s.begin};
    if (end == s.begin) std::tie(shown, end) = fitting_prefix(*doc, s.begin, s.end, false, limit, counter);
    if (end == s.begin) return out;
    *out_tokens = static_cast<int64_t>(counter.count(shown));
    *out_text = shown;
    out.push_back({s.begin, end, doc->page_of(s.begin), doc->page_of(end - 1), s.top, std::move(shown)});
    return out;
  };

  std::vector<size_t> all(n);
  std::iota(all.begin(), all.end(), size_t{0});
  const std::vector<size_t> chosen = sel.select(all, budget, section_weight, &summary.text, &summary.tokens);
  summary.sentences = chosen.empty() ? cut_best(all, budget, &summary.text, &summary.tokens) : sentences_of(chosen);
  for (const ExtractedSentence& e : summary.sentences) summary.spans.emplace_back(e.begin, e.end);
  if (summary.sentences.empty()) {
    summary.text.clear();
    summary.tokens = 0;
    summary.sections.clear();
    return summary;
  }

  if (options.outline) {
    const int64_t section_budget = options.section_tokens > 0 ? options.section_tokens : std::max<int64_t>(48, budget / 4);
    std::vector<std::vector<size_t>> rows_of(summary.sections.size());
    for (size_t r = 0; r < n; ++r)
      if (const int t = sent[cand[r]].top; t >= 0) rows_of[t].push_back(r);
    for (size_t t = 0; t < summary.sections.size(); ++t) {
      SectionSummary& ss = summary.sections[t];
      const std::vector<size_t> picked = sel.select(rows_of[t], section_budget, {}, &ss.text, &ss.tokens);
      ss.sentences = picked.empty() ? cut_best(rows_of[t], section_budget, &ss.text, &ss.tokens) : sentences_of(picked);
    }
  }
  return summary;
}

}  // namespace abridge::pipeline
