// The extractive summarizer: lines -> sentences -> term vectors -> TextRank -> MMR under a token
// budget. The steps and their rules are described in extractive.h; constants below say why.
#include "pipeline/extractive.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "chunker/unicode.h"

namespace abridge::pipeline {
namespace {

namespace ud = chunker::detail;

constexpr size_t kTopNeighbours = 32;   // edges kept per sentence: enough for centrality, bounded cost
constexpr size_t kMinPostingCap = 32;   // a term in more sentences than max(this, n / kCapDivisor)
constexpr size_t kCapDivisor = 64;      // is left out of the graph (not of the MMR similarity)
constexpr double kDamping = 0.85;       // TextRank's damping factor
constexpr int kMaxIterations = 100;
constexpr double kTolerance = 1e-9;     // L1 change of the scores that ends the power iteration
constexpr double kNearDuplicate = 0.8;  // cosine at which a sentence repeats one already chosen
constexpr int kMaxMisfits = 64;         // sentences tried in a row that do not fit before giving up
constexpr int64_t kJoinTokens = 1;      // what a join may add to the sum of the sentences' counts
// Candidate rules (see extractive.h, step 2).
constexpr uint32_t kMinWords = 5;           // English words (stopwords included)
constexpr uint32_t kMinContentTerms = 2;    // English content terms
constexpr uint32_t kMinHan = 6;             // Chinese: Han characters
constexpr uint32_t kWordsPerCodeMark = 12;  // more code marks than one per this many words: code
constexpr double kHanPerWord = 1.5;         // Han characters in a Chinese word, about
constexpr double kShortWords = 12;          // the length prior: full weight from kShortWords words
constexpr double kLongWords = 40;           // up to kLongWords, falling as 1/length on either side
constexpr size_t kTitleColumns = 40;        // a title line is at most this wide (CJK characters: 2)
constexpr const char* kEllipsis = "\xE2\x80\xA6";  // U+2026, marks a sentence cut to fit

// --- Characters ---

bool is_line_break(char32_t c) { return c == '\n' || c == '\r' || c == '\f'; }
bool is_code_symbol(char32_t c) {
  switch (c) {
    case '{': case '}': case '[': case ']': case '<': case '>': case '=': case ';': case '$':
    case '\\': case '|': case '_': case '#': case '@': case '~': case '^': case '`': case '+':
    case '*': case '&': case '%':
      return true;
    default:
      return false;
  }
}

// Calls f(offset, Char) for each visible character of [b, e): escape sequences skipped, invalid bytes
// as U+FFFD. Whitespace (line breaks included) is passed on; other invisible characters are not.
template <typename F>
void for_each_char(std::string_view text, size_t b, size_t e, F&& f) {
  for (size_t i = b; i < e;) {
    if (const size_t esc = ud::escape_length(text, i)) {
      i += esc;
      continue;
    }
    const ud::Char c = ud::decode(text, i);
    if (!ud::is_invisible(c.cp) || is_line_break(c.cp)) f(i, c);
    i += c.len;
  }
}

// --- Lines and paragraphs (step 1) ---

struct Line {
  size_t begin;  // content [begin, end); a terminator (\n, \r\n, \r or \f) or the text's end follows
  size_t end;
};

std::vector<Line> split_lines(std::string_view text, size_t b, size_t e) {
  std::vector<Line> lines;
  size_t start = b;
  for (size_t i = b; i < e; ++i) {
    const char ch = text[i];
    if (ch != '\n' && ch != '\r' && ch != '\f') continue;
    lines.push_back({start, i});
    if (ch == '\r' && i + 1 < e && text[i + 1] == '\n') ++i;
    start = i + 1;
  }
  if (start < e) lines.push_back({start, e});
  return lines;
}

bool is_bullet(char32_t c) {
  return c == 0x2022 || c == 0x25E6 || c == 0x25AA || c == 0x2023 || c == 0x2219 || c == 0x2217 || c == 0x00B7 ||
         c == 0x2013 || c == 0x2014 || c == '*' || c == '-';
}

struct LineKind {
  bool prose = false;       // can hold prose (false for blank lines)
  bool short_open = false;  // short, and ends without sentence or clause punctuation: a title when it
                            // starts a paragraph or follows a finished sentence
  bool finished = false;    // ends with a sentence terminator (closers after it allowed)
  bool bullet = false;      // starts with a bullet and a space: a list item starts a paragraph
};

// What a line can be (step 1).
LineKind classify_line(std::string_view text, const Line& line) {
  LineKind kind;
  size_t nonspace = 0, letters = 0, symbols = 0, dots = 0;
  bool leaders = false, comma = false;
  size_t columns = 0;  // CJK characters count two
  char32_t first = 0, second = 0, last = 0, last_non_closer = 0;
  std::string visible;
  for_each_char(text, line.begin, line.end, [&](size_t i, const ud::Char& c) {
    if (visible.size() < 200) visible.append(text.substr(i, c.len));
    if (ud::is_space(c.cp)) {
      if (second == 0 && first != 0) second = ' ';
      return;
    }
    ++nonspace;
    columns += ud::is_cjk(c.cp) ? 2 : 1;
    if (!ud::is_closer(c.cp)) last_non_closer = c.cp;
    if (first == 0) first = c.cp;
    else if (second == 0) second = c.cp;
    last = c.cp;
    if (ud::is_letter(c.cp)) ++letters;
    if (is_code_symbol(c.cp)) ++symbols;
    comma = comma || c.cp == ',' || c.cp == 0xFF0C || c.cp == 0x3001 || c.cp == ';' || c.cp == 0xFF1B;
    // Table-of-contents leaders: four dots in a row, spaces between them or not (a prose ellipsis
    // has three).
    dots = c.cp == '.' ? dots + 1 : 0;
    leaders = leaders || dots >= 4;
  });
  if (nonspace == 0 || leaders) return kind;
  if (letters * 10 < nonspace * 4) return kind;                      // numbers, rules, tables
  if (symbols * 100 >= nonspace * 12) return kind;                   // code
  if ((first == '>' || first == '$' || first == '+') && second == ' ') return kind;  // prompts
  if (last == '{' || last == '}' || first == '}') return kind;
  if (visible.size() < 200 && chunker::parse_heading(visible)) return kind;
  kind.prose = true;
  kind.finished = ud::is_terminal(last_non_closer);
  kind.short_open = columns <= kTitleColumns && !kind.finished && !comma && !ud::is_clause_punct(last_non_closer);
  kind.bullet = is_bullet(first) && second == ' ';
  return kind;
}

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

// --- English terms (step 3) ---

const std::unordered_set<std::string_view>& stopwords() {
  static const std::unordered_set<std::string_view> kWords = {
      "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are",
      "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by",
      "can", "could", "did", "do", "does", "doing", "done", "down", "during", "each", "either", "else",
      "ever", "every", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her",
      "here", "hers", "herself", "him", "himself", "his", "how", "however", "i", "if", "in", "into",
      "is", "it", "its", "itself", "just", "let", "may", "me", "might", "more", "most", "much", "must",
      "my", "myself", "neither", "no", "nor", "not", "now", "of", "off", "on", "once", "one", "only",
      "or", "other", "ought", "our", "ours", "ourselves", "out", "over", "own", "same", "shall", "she",
      "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves",
      "then", "there", "these", "they", "this", "those", "though", "through", "thus", "to", "too",
      "under", "until", "up", "upon", "us", "very", "was", "we", "were", "what", "when", "where",
      "whether", "which", "while", "who", "whom", "whose", "why", "will", "with", "within", "without",
      "would", "yet", "you", "your", "yours", "yourself", "yourselves", "said", "say", "says", "e.g",
      "i.e", "etc", "don't", "can't", "won't", "isn't", "it's", "i'm", "i've", "i'll", "i'd", "you're",
      "that's", "there's", "he's", "she's", "we're", "they're", "didn't", "wasn't", "doesn't"};
  return kWords;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Light suffix stripping so that "vectors"/"vector", "computing"/"computed" meet. Not a full Porter
// stemmer: similarity only needs inflections to agree, not readable stems.
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

// --- Sentences (step 2) ---

struct Sentence {
  size_t begin;        // visible span in the input [begin, end)
  size_t end;
  uint32_t paragraph;  // index of its paragraph (joins: space within one, newline between)
  bool candidate;
  double words;        // English words; Chinese: Han characters / kHanPerWord
};

// Builds sentences and their terms. Term ids are given in order of first appearance.
class SentenceReader {
 public:
  SentenceReader(std::string_view text, Language lang) : text_(text), lang_(lang) {}

  // Reads the sentence [b, e) of paragraph p; keeps it when it has a visible character.
  void add(size_t b, size_t e, uint32_t p) {
    size_t vb = e, ve = b;
    uint32_t words = 0, content = 0, han = 0, letters = 0, nonspace = 0, upper = 0;
    char32_t first = 0, last_non_closer = 0, prev_han = 0;
    bool after_bullet = false;  // a leading bullet is no part of the sentence
    char32_t prev = 0;
    uint32_t code_marks = 0;  // "name(", "=", braces, "$", "<-": code or markup inside the sentence
    int depth = 0;            // brackets open; a ')' or ']' with none open makes a fragment
    bool fragment = false;
    const size_t first_term = terms_.size();
    word_.clear();
    bool word_has_letter = false;
    auto flush_word = [&] {
      if (!word_.empty() && word_has_letter) {
        ++words;
        while (ends_with(word_, "'")) word_.pop_back();
        if (ends_with(word_, "'s")) word_.resize(word_.size() - 2);
        if (word_.size() >= 2 && !stopwords().contains(word_)) {
          stem(word_);
          terms_.push_back(term_id(word_));
          ++content;
        }
      }
      word_.clear();
      word_has_letter = false;
    };
    for_each_char(text_, b, e, [&](size_t i, const ud::Char& c) {
      const char32_t cp = c.cp;
      if (ud::is_space(cp)) {
        flush_word();
        if (!is_line_break(cp)) prev_han = 0;  // a line break inside Chinese text joins its halves
        return;
      }
      if (first == 0 && !after_bullet && is_bullet(cp) && i + c.len < e && ud::is_space(static_cast<uint8_t>(text_[i + c.len]))) {
        after_bullet = true;
        return;
      }
      if (first == 0) first = cp;
      if (cp == '(' && (ud::is_letter(prev) || ud::is_ascii_digit(prev))) ++code_marks;
      if (cp == '=' || cp == '{' || cp == '}' || cp == '$' || cp == '\\' || cp == '|' || (cp == '-' && prev == '<'))
        ++code_marks;
      if (cp == '(' || cp == '[' || cp == 0xFF08) ++depth;
      if (cp == ')' || cp == ']' || cp == 0xFF09) fragment = fragment || --depth < 0;
      prev = cp;
      vb = std::min(vb, i);
      ve = i + c.len;
      ++nonspace;
      if (!ud::is_closer(cp)) last_non_closer = cp;
      if (ud::is_han(cp)) {
        flush_word();
        ++han;
        ++letters;
        if (prev_han != 0) {
          bigram_.assign(text_.substr(prev_i_, prev_len_));
          bigram_.append(text_.substr(i, c.len));
          terms_.push_back(term_id(bigram_));
          ++content;
        }
        prev_han = cp;
        prev_i_ = i;
        prev_len_ = c.len;
        return;
      }
      prev_han = 0;
      const bool letter = ud::is_letter(cp);
      if (letter) {
        ++letters;
        if (ud::is_upper(cp)) ++upper;
      }
      const bool apostrophe = (cp == '\'' || cp == 0x2019) && !word_.empty();
      if (letter || ud::is_ascii_digit(cp) || apostrophe) {
        ud::append_utf8(word_, apostrophe ? U'\'' : ud::to_lower(cp));
        word_has_letter = word_has_letter || letter;
      } else if (!(cp == '.' && word_.size() == 1)) {  // "e.g": keep a dot after a single letter
        flush_word();
      }
    });
    flush_word();
    if (vb >= ve) {
      terms_.resize(first_term);
      return;
    }
    // Candidates are whole sentences of prose: they end with a terminator (one ending with a colon
    // introduces a list or code) and, in English, start like a sentence.
    bool ok = ud::is_terminal(last_non_closer) && letters * 2 >= nonspace && !fragment;
    if (lang_ == Language::kChinese) {
      ok = ok && han >= kMinHan && code_marks * kWordsPerCodeMark <= han;
    } else {
      ok = ok && words >= kMinWords && content >= kMinContentTerms && code_marks * kWordsPerCodeMark <= words;
      ok = ok && (ud::is_upper(first) || ud::is_ascii_digit(first) || ud::is_closer(first) || first == 0x201C ||
                  first == 0x2018 || first == '(' || first == '[');
      if (letters >= 8 && upper * 10 > letters * 7) ok = false;  // an upper-case heading
    }
    const double length = lang_ == Language::kChinese ? han / kHanPerWord + words : words;
    sentences_.push_back({vb, ve, p, ok, length});
    term_begin_.push_back(first_term);
  }

  std::vector<Sentence>& sentences() { return sentences_; }
  // Term ids of sentence i (with repeats), in [terms_begin(i), terms_begin(i + 1)).
  const std::vector<uint32_t>& terms() const { return terms_; }
  size_t terms_begin(size_t i) const { return i < term_begin_.size() ? term_begin_[i] : terms_.size(); }
  size_t n_terms() const { return ids_.size(); }

 private:
  uint32_t term_id(const std::string& key) {
    const auto [it, inserted] = ids_.try_emplace(key, static_cast<uint32_t>(ids_.size()));
    return it->second;
  }

  std::string_view text_;
  Language lang_;
  std::vector<Sentence> sentences_;
  std::vector<uint32_t> terms_;
  std::vector<size_t> term_begin_;
  std::unordered_map<std::string, uint32_t> ids_;
  std::string word_, bigram_;
  size_t prev_i_ = 0;
  uint32_t prev_len_ = 0;
};

// --- Vectors and the graph (steps 3 and 4) ---

// Sparse, L2-normalized tf-idf vectors of the candidates, rows and an inverted index (by term).
struct Vectors {
  std::vector<size_t> row_begin;                    // (n + 1) offsets into row_term / row_weight
  std::vector<uint32_t> row_term;                   // distinct terms of each row, ascending
  std::vector<double> row_weight;                   // tf * idf / the row's L2 norm
  std::vector<size_t> post_begin;                   // (n_terms + 1) offsets into post_row / post_weight
  std::vector<uint32_t> post_row;                   // rows holding each term, ascending
  std::vector<double> post_weight;

  size_t rows() const { return row_begin.size() - 1; }
  size_t df(uint32_t t) const { return post_begin[t + 1] - post_begin[t]; }
};

Vectors build_vectors(const SentenceReader& reader, const std::vector<size_t>& cand) {
  const size_t n = cand.size(), n_terms = reader.n_terms();
  Vectors v;
  v.row_begin.assign(1, 0);
  std::vector<std::pair<uint32_t, uint32_t>> tf;  // (term, count) of one row
  std::vector<uint32_t> scratch;
  for (size_t r = 0; r < n; ++r) {
    scratch.assign(reader.terms().begin() + static_cast<std::ptrdiff_t>(reader.terms_begin(cand[r])),
                   reader.terms().begin() + static_cast<std::ptrdiff_t>(reader.terms_begin(cand[r] + 1)));
    std::sort(scratch.begin(), scratch.end());
    for (size_t k = 0; k < scratch.size();) {
      size_t m = k;
      while (m < scratch.size() && scratch[m] == scratch[k]) ++m;
      v.row_term.push_back(scratch[k]);
      v.row_weight.push_back(1.0 + std::log(static_cast<double>(m - k)));
      k = m;
    }
    v.row_begin.push_back(v.row_term.size());
  }
  std::vector<size_t> df(n_terms + 1, 0);
  for (const uint32_t t : v.row_term) ++df[t];
  for (size_t r = 0; r < n; ++r) {
    double norm = 0;
    for (size_t k = v.row_begin[r]; k < v.row_begin[r + 1]; ++k) {
      const double idf = std::log(static_cast<double>(n + 1) / static_cast<double>(df[v.row_term[k]]));
      v.row_weight[k] *= idf;
      norm += v.row_weight[k] * v.row_weight[k];
    }
    norm = std::sqrt(norm);
    for (size_t k = v.row_begin[r]; k < v.row_begin[r + 1]; ++k) v.row_weight[k] = norm > 0 ? v.row_weight[k] / norm : 0;
  }
  v.post_begin.assign(n_terms + 1, 0);
  for (size_t t = 0; t < n_terms; ++t) v.post_begin[t + 1] = v.post_begin[t] + df[t];
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

// Cosines of row r with every row that shares a term of document frequency <= max_df, accumulated in
// acc (size rows, all zero on entry); the rows touched are listed in touched.
void similarities(const Vectors& v, size_t r, size_t max_df, std::vector<double>& acc, std::vector<uint32_t>& touched) {
  touched.clear();
  for (size_t k = v.row_begin[r]; k < v.row_begin[r + 1]; ++k) {
    const uint32_t t = v.row_term[k];
    if (v.df(t) > max_df) continue;
    const double w = v.row_weight[k];
    for (size_t p = v.post_begin[t]; p < v.post_begin[t + 1]; ++p) {
      const uint32_t j = v.post_row[p];
      if (acc[j] == 0) touched.push_back(j);
      acc[j] += w * v.post_weight[p];
    }
  }
}

// TextRank centrality of each row over the kTopNeighbours strongest edges (cosines) of each row.
std::vector<double> textrank(const Vectors& v) {
  const size_t n = v.rows();
  const size_t max_df = std::max(kMinPostingCap, n / kCapDivisor);
  std::vector<size_t> edge_begin(1, 0);
  std::vector<uint32_t> edge_to;
  std::vector<double> edge_w;
  std::vector<double> acc(n, 0.0), out_sum(n, 0.0);
  std::vector<uint32_t> touched;
  std::vector<std::pair<double, uint32_t>> row;
  for (size_t r = 0; r < n; ++r) {
    similarities(v, r, max_df, acc, touched);
    row.clear();
    for (const uint32_t j : touched) {
      if (j != r && acc[j] > 1e-12) row.emplace_back(acc[j], j);
      acc[j] = 0;
    }
    auto stronger = [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; };
    if (row.size() > kTopNeighbours) {
      std::nth_element(row.begin(), row.begin() + kTopNeighbours, row.end(), stronger);
      row.resize(kTopNeighbours);
    }
    std::sort(row.begin(), row.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    for (const auto& [w, j] : row) {
      edge_to.push_back(j);
      edge_w.push_back(w);
      out_sum[r] += w;
    }
    edge_begin.push_back(edge_to.size());
  }
  std::vector<double> score(n, 1.0 / static_cast<double>(n)), next(n);
  for (int it = 0; it < kMaxIterations; ++it) {
    double dangling = 0;
    for (size_t r = 0; r < n; ++r)
      if (out_sum[r] == 0) dangling += score[r];
    std::fill(next.begin(), next.end(), (1 - kDamping + kDamping * dangling) / static_cast<double>(n));
    for (size_t r = 0; r < n; ++r) {
      if (out_sum[r] == 0) continue;
      const double share = kDamping * score[r] / out_sum[r];
      for (size_t k = edge_begin[r]; k < edge_begin[r + 1]; ++k) next[edge_to[k]] += share * edge_w[k];
    }
    double change = 0;
    for (size_t r = 0; r < n; ++r) change += std::fabs(next[r] - score[r]);
    score.swap(next);
    if (change < kTolerance) break;
  }
  return score;
}

// --- Output text ---

// The sentence [b, e) as the summary shows it (see extractive.h). src_end, when given, receives for each
// output byte the input offset just past the character it came from.
std::string display(std::string_view text, size_t b, size_t e, std::vector<size_t>* src_end) {
  std::string out;
  bool pending = false, pending_break = false;
  char32_t last = 0, before_last = 0;
  size_t space_end = b;
  auto put = [&](std::string_view bytes, size_t end) {
    out.append(bytes);
    if (src_end) src_end->insert(src_end->end(), bytes.size(), end);
  };
  for_each_char(text, b, e, [&](size_t i, const ud::Char& c) {
    if (ud::is_space(c.cp)) {
      pending = true;
      pending_break = pending_break || is_line_break(c.cp);
      space_end = i + c.len;
      return;
    }
    if (pending && !out.empty()) {
      if (pending_break && last == '-' && ud::is_letter(before_last) && ud::is_lower(c.cp)) {
        out.pop_back();  // "docu-\nment": a word the line break hyphenated
        if (src_end) src_end->pop_back();
      } else if (!(pending_break && ud::is_cjk(last) && ud::is_cjk(c.cp))) {
        put(" ", space_end);
      }
    }
    pending = pending_break = false;
    put(c.valid ? text.substr(i, c.len) : std::string_view("\xEF\xBF\xBD"), i + c.len);
    before_last = last;
    last = c.cp;
  });
  return out;
}

// The longest prefix of `d` that ends before a space (English) or at any character boundary, and that
// with kEllipsis fits the budget; its length, or 0.
size_t fitting_prefix(const std::string& d, bool words_only, int64_t budget, const chunker::TokenCounter& counter) {
  std::vector<size_t> cuts;
  for (size_t i = 1; i < d.size(); ++i) {
    if ((static_cast<uint8_t>(d[i]) & 0xC0) == 0x80) continue;
    if (!words_only || d[i] == ' ') cuts.push_back(i);
  }
  auto trimmed = [&](size_t p) {
    while (p > 0 && (d[p - 1] == ' ' || d[p - 1] == ',' || d[p - 1] == ';' || d[p - 1] == ':')) --p;
    // Full-width comma / enumeration comma / semicolon / colon before the ellipsis.
    for (std::string_view tail : {"\xEF\xBC\x8C", "\xE3\x80\x81", "\xEF\xBC\x9B", "\xEF\xBC\x9A"})
      if (p >= tail.size() && std::string_view(d).substr(p - tail.size(), tail.size()) == tail) p -= tail.size();
    return p;
  };
  auto fits = [&](size_t p) {
    p = trimmed(p);
    return p > 0 && static_cast<int64_t>(counter.count(d.substr(0, p) + kEllipsis)) <= budget;
  };
  // Counts grow with the prefix almost always; search, then step back until one really fits.
  size_t lo = 0, hi = cuts.size();  // cuts[0, lo) were found to fit (by the search)
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (fits(cuts[mid])) lo = mid + 1;
    else hi = mid;
  }
  for (size_t k = lo; k-- > 0;)
    if (fits(cuts[k])) return trimmed(cuts[k]);
  return 0;
}

}  // namespace

const char* language_code(Language l) { return l == Language::kChinese ? "zh" : "en"; }

Language detect_language(std::string_view text) {
  size_t han = 0, words = 0;
  bool in_word = false;
  for (size_t i = 0; i < text.size();) {
    const auto b = static_cast<uint8_t>(text[i]);
    bool letter = false;
    if (b < 0x80) {
      letter = (b | 0x20) >= 'a' && (b | 0x20) <= 'z';
      ++i;
    } else {
      const ud::Char c = ud::decode(text, i);
      if (ud::is_han(c.cp)) ++han;
      else letter = ud::is_letter(c.cp);
      i += c.len;
    }
    words += letter && !in_word ? 1 : 0;
    in_word = letter;
  }
  const size_t units = han + words;
  return units > 0 && static_cast<double>(han) >= kChineseShare * static_cast<double>(units) ? Language::kChinese
                                                                                            : Language::kEnglish;
}

ExtractiveSummary summarize_extractive(std::string_view text, const chunker::TokenCounter& counter,
                                       const ExtractiveOptions& options) {
  ExtractiveSummary summary;
  summary.language = detect_language(text);
  const int64_t budget = options.max_tokens;
  const double diversity = std::clamp(options.diversity, 0.0, 1.0);
  if (budget <= 0) return summary;

  // Steps 1 and 2: paragraphs of prose lines, sentences within them.
  const auto [region_b, region_e] = body_region(text);
  const std::vector<Line> lines = split_lines(text, region_b, region_e);
  std::vector<LineKind> kinds(lines.size());
  std::vector<bool> keep(lines.size());
  for (size_t k = 0; k < lines.size(); ++k) kinds[k] = classify_line(text, lines[k]);
  for (size_t k = 0; k < lines.size(); ++k)  // titles: short open lines that start a paragraph
    keep[k] = kinds[k].prose && !(kinds[k].short_open && (k == 0 || !keep[k - 1] || kinds[k - 1].finished));
  {
    const auto running = chunker::find_running_lines(text);  // sorted by position
    size_t r = 0;
    for (size_t k = 0; k < lines.size(); ++k) {
      while (r < running.size() && running[r].second < lines[k].begin) ++r;
      if (r < running.size() && running[r].first <= lines[k].begin && lines[k].begin < running[r].second) keep[k] = false;
      else if (r < running.size() && running[r].first >= lines[k].begin && running[r].first < lines[k].end) keep[k] = false;
    }
  }
  SentenceReader reader(text, summary.language);
  uint32_t paragraph = 0;
  for (size_t k = 0; k < lines.size();) {
    if (!keep[k]) {
      ++k;
      continue;
    }
    size_t m = k;
    while (m + 1 < lines.size() && keep[m + 1] && !kinds[m + 1].bullet) ++m;
    const size_t pb = lines[k].begin, pe = lines[m].end;
    size_t start = pb;
    for (const size_t end : chunker::split_sentences(text.substr(pb, pe - pb))) {
      reader.add(start, pb + end, paragraph);
      start = pb + end;
    }
    reader.add(start, pe, paragraph);
    ++paragraph;
    k = m + 1;
  }
  std::vector<Sentence>& sentences = reader.sentences();
  if (sentences.empty()) {  // no prose line at all: read the whole text as one paragraph
    size_t start = 0;
    for (const size_t end : chunker::split_sentences(text)) {
      reader.add(start, end, 0);
      start = end;
    }
    reader.add(start, text.size(), 0);
  }
  if (sentences.empty()) return summary;
  std::vector<size_t> cand;  // candidate sentences, in document order
  for (size_t i = 0; i < sentences.size(); ++i)
    if (sentences[i].candidate) cand.push_back(i);
  if (cand.empty()) {  // nothing looks like a good sentence: any sentence may be taken
    cand.resize(sentences.size());
    std::iota(cand.begin(), cand.end(), size_t{0});
  }

  // Steps 3 and 4.
  const Vectors vectors = build_vectors(reader, cand);
  const std::vector<double> score = textrank(vectors);
  const size_t n = cand.size();
  // Relevance: centrality times a length prior (a cosine graph would otherwise favour short sentences
  // of common words; long ones crowd out the budget).
  std::vector<double> rel(n);
  for (size_t r = 0; r < n; ++r) {
    const double w = std::max(sentences[cand[r]].words, 1.0);
    rel[r] = score[r] * std::min(1.0, w / kShortWords) * std::min(1.0, kLongWords / w);
  }
  const double top = *std::max_element(rel.begin(), rel.end());

  // Step 5: MMR under the budget.
  std::vector<double> max_sim(n, 0.0), acc(n, 0.0);
  std::vector<uint32_t> touched;
  std::vector<bool> done(n, false);
  std::vector<size_t> chosen;  // rows, in order of choice
  std::unordered_map<size_t, std::string> shown;
  int64_t used = 0;
  int misfits = 0;
  size_t best_row = n;  // the most central row: the one cut to fit when nothing else does
  for (;;) {
    size_t best = n;
    double best_mmr = 0;
    for (size_t r = 0; r < n; ++r) {
      if (done[r] || max_sim[r] >= kNearDuplicate) continue;
      const double mmr = (1 - diversity) * rel[r] / top - diversity * max_sim[r];
      if (best == n || mmr > best_mmr) {
        best = r;
        best_mmr = mmr;
      }
    }
    if (best == n) break;
    if (best_row == n) best_row = best;
    done[best] = true;
    const Sentence& s = sentences[cand[best]];
    std::string& d = shown[best] = display(text, s.begin, s.end, nullptr);
    const int64_t cost = static_cast<int64_t>(counter.count(d)) + (chosen.empty() ? 0 : kJoinTokens);
    if (used + cost > budget) {
      if (++misfits >= kMaxMisfits) break;
      continue;
    }
    misfits = 0;
    used += cost;
    chosen.push_back(best);
    similarities(vectors, best, n, acc, touched);
    for (const uint32_t j : touched) {
      max_sim[j] = std::max(max_sim[j], acc[j]);
      acc[j] = 0;
    }
    if (budget - used <= kJoinTokens) break;
  }

  // The joined text is counted once more; the last-chosen sentences go until it fits.
  while (!chosen.empty()) {
    std::vector<size_t> order = chosen;
    std::sort(order.begin(), order.end());
    std::string joined;
    summary.spans.clear();
    for (size_t k = 0; k < order.size(); ++k) {
      const Sentence& s = sentences[cand[order[k]]];
      if (k > 0 && summary.language == Language::kEnglish)
        joined += sentences[cand[order[k - 1]]].paragraph == s.paragraph ? " " : "\n";
      joined += shown[order[k]];
      summary.spans.emplace_back(s.begin, s.end);
    }
    const auto tokens = static_cast<int64_t>(counter.count(joined));
    if (tokens <= budget) {
      summary.text = std::move(joined);
      summary.tokens = tokens;
      return summary;
    }
    chosen.pop_back();
  }
  summary.spans.clear();

  // Not one sentence fits: the most central one, cut.
  if (best_row == n) return summary;
  const Sentence& s = sentences[cand[best_row]];
  std::vector<size_t> src_end;
  const std::string d = display(text, s.begin, s.end, &src_end);
  size_t p = summary.language == Language::kEnglish ? fitting_prefix(d, true, budget, counter) : 0;
  if (p == 0) p = fitting_prefix(d, false, budget, counter);
  if (p == 0) return summary;
  summary.text = d.substr(0, p) + kEllipsis;
  summary.tokens = static_cast<int64_t>(counter.count(summary.text));
  summary.spans.emplace_back(s.begin, src_end[p - 1]);
  return summary;
}

}  // namespace abridge::pipeline
