// Units (sentences and indivisible blocks) with their token counts, and the packing of units into
// chunks. See chunker.h for the rules; document.cpp builds the lines and blocks this file cuts.
#include "chunker/chunker.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "base/error.h"
#include "base/hash.h"
#include "chunker/document.h"
#include "chunker/terms.h"
#include "chunker/unicode.h"

namespace abridge::chunker {

InvalidUtf8Error::InvalidUtf8Error(size_t offset)
    : Error("invalid UTF-8 at byte " + std::to_string(offset)), offset_(offset) {}

std::vector<std::pair<size_t, size_t>> find_running_lines(std::string_view text) {
  Options options;
  options.invalid_utf8 = InvalidUtf8::kReplace;
  const Document doc(text, options);
  std::vector<std::pair<size_t, size_t>> out;
  for (const auto& line : doc.lines())
    if (line.dropped) out.emplace_back(line.begin, line.end);
  return out;
}

std::string clean_text(std::string_view text, const Options& options) {
  const Document doc(text, options);
  return doc.clean(0, text.size());
}

namespace {

using namespace detail;

// Boundary ranks, weakest first. A unit's rank is that of the boundary at its start.
enum Rank : uint8_t { kRankChar, kRankSpace, kRankClause, kRankSentence, kRankParagraph, kRankHeading };

CutKind cut_kind(uint8_t rank) {
  switch (rank) {
    case kRankHeading: return CutKind::kHeading;
    case kRankParagraph: return CutKind::kParagraph;
    case kRankSentence: return CutKind::kSentence;
    case kRankClause: return CutKind::kClause;
    case kRankSpace: return CutKind::kSpace;
    default: return CutKind::kChar;
  }
}

// Score of a cut of each rank; the cohesion term (0..1) and the fill term (0..0.5) are added.
constexpr double kRankWeight[] = {0.0, 0.3, 0.6, 1.0, 1.6, 3.0};
constexpr double kMinFill = 0.5;         // a cut leaves the chunk at least this full ...
constexpr double kMinFillHeading = 0.2;  // ... or this full when it falls before a heading
constexpr size_t kCohesionTerms = 40;    // content words on each side of a candidate cut
constexpr size_t kCohesionUnits = 6;

// One per sentence, list item or kept line end (a text of short lines has one a line): 32 bytes.
// Counts and indexes fit 32 bits: a unit's tokens, the terms and the units are fewer than the text's
// bytes, which the reader keeps far below 4 GiB (checked in push_unit).
struct Unit {
  size_t begin = 0;
  uint32_t tokens = 0;
  uint32_t section = 0;
  uint32_t block = 0;
  uint32_t terms_begin = 0;  // its terms are terms_[terms_begin, the next unit's terms_begin)
  uint8_t rank = kRankParagraph;
  bool admissible = true;  // false: inside a block kept whole, or right after a heading
  bool forced = false;     // a top-level heading: always starts a chunk
};

// Content terms of a unit's text (terms.h), hashed.
void extract_terms(TermScanner& scanner, std::string_view text, std::vector<uint32_t>& out) {
  scanner.scan(text, 0, text.size());
  for (const std::string_view t : scanner.terms()) out.push_back(fnv1a32(t));
}

class Chunker {
 public:
  Chunker(std::string_view text, const TokenCounter& counter, const Options& options)
      : doc_(text, options), counter_(counter), options_(options),
        budget_(options.max_tokens - options.overlap_tokens) {}

  std::vector<Chunk> run() {
    build_units();
    if (units_.empty()) return {};
    return pack();
  }

 private:
  size_t unit_end(size_t k) const { return k + 1 < units_.size() ? units_[k + 1].begin : doc_.text().size(); }
  uint8_t effective_rank(size_t k) const { return units_[k].admissible ? units_[k].rank : 0; }

  // --- Units ---

  void build_units() {
    const auto& lines = doc_.lines();
    const auto& blocks = doc_.blocks();
    const auto& keys = doc_.heading_keys();
    const std::pair<int, int> top = keys.empty() ? std::pair{-1, -1} : *std::min_element(keys.begin(), keys.end());
    sections_.push_back("");
    std::vector<size_t> starts;
    std::vector<std::pair<size_t, uint8_t>> bounds;  // (offset, rank)

    for (size_t bi = 0; bi < blocks.size(); ++bi) {
      const Block& b = blocks[bi];
      const size_t b_start = block_start(bi);
      if (b_start == std::string_view::npos) continue;  // blank lines of a code block: kept with what precedes
      const bool after_heading = bi > 0 && blocks[bi - 1].kind == LineKind::kHeading;
      uint8_t first_rank = kRankParagraph;
      bool forced = false;
      if (b.kind == LineKind::kHeading) {
        first_rank = kRankHeading;
        const int h = lines[b.first_line].heading;
        forced = keys[h] == top;
        sections_.push_back(doc_.section_path(h));  // one section per heading, in order
      } else if (b.kind == LineKind::kSeparator) {
        first_rank = kRankSentence;  // a separator line stays with what it closes
      }
      bounds.clear();
      bounds.emplace_back(units_.empty() ? 0 : b_start, first_rank);
      if (b.kind == LineKind::kProse || b.kind == LineKind::kListItem) {
        starts.clear();
        size_t prev_content = b.first_line;
        for (size_t li = b.first_line + 1; li <= b.last_line; ++li) {
          if (!doc_.is_content(li)) continue;
          // A list item, or a line that the cleaned text keeps on its own (a short line, a line of
          // a table of contents), starts a unit.
          if (lines[li].kind == LineKind::kListItem || lines[prev_content].join == Join::kNewline)
            bounds.emplace_back(lines[li].vis_begin, kRankSentence);
          prev_content = li;
        }
        doc_.sentence_starts(b.first_line, b.last_line, starts);
        for (size_t s : starts) {
          uint8_t rank = kRankSentence;
          // A sentence that ends a short line ends a paragraph (PDF text has no blank lines).
          const size_t li = doc_.line_of(s);
          if (lines[li].vis_begin == s) {
            size_t p = li;
            while (p > b.first_line && !doc_.is_content(p - 1)) --p;
            if (p > b.first_line && lines[p - 1].width * 4 < doc_.typical_width() * 3) rank = kRankParagraph;
          }
          bounds.emplace_back(s, rank);
        }
      } else if (b.kind == LineKind::kCode || b.kind == LineKind::kTable) {
        for (size_t li = b.first_line + 1; li <= b.last_line; ++li)
          if (doc_.is_content(li) && lines[li].vis_begin < lines[li].end) bounds.emplace_back(lines[li].vis_begin, kRankSentence);
      }
      std::sort(bounds.begin(), bounds.end(), [](const auto& x, const auto& y) {
        return x.first < y.first || (x.first == y.first && x.second > y.second);
      });
      // One boundary per offset (the strongest: sorted first), each after the previous unit.
      size_t kept = 0;
      for (size_t k = 0; k < bounds.size(); ++k) {
        if (kept > 0 && bounds[k].first == bounds[kept - 1].first) continue;
        if (!units_.empty() && bounds[k].first <= units_.back().begin) continue;
        bounds[kept++] = bounds[k];
      }
      bounds.resize(kept);
      const size_t block_first_unit = units_.size();
      for (size_t k = 0; k < bounds.size(); ++k) {
        const size_t end = k + 1 < bounds.size() ? bounds[k + 1].first : block_end(bi);
        add_unit(bounds[k].first, end, bounds[k].second, k == 0 && after_heading, k == 0 && forced, bi);
      }
      // A list, code block or table that fits the budget is cut only before or after.
      if (b.kind == LineKind::kListItem || b.kind == LineKind::kCode || b.kind == LineKind::kTable) {
        size_t total = 0;
        for (size_t u = block_first_unit; u < units_.size(); ++u) total += units_[u].tokens;
        if (total <= budget_)
          for (size_t u = block_first_unit + 1; u < units_.size(); ++u) units_[u].admissible = false;
      }
    }
  }

  // The first visible character of a block (npos for a block of blank code lines only).
  size_t block_start(size_t bi) const {
    const Block& b = doc_.blocks()[bi];
    for (size_t li = b.first_line; li <= b.last_line; ++li) {
      const Line& line = doc_.lines()[li];
      if (doc_.is_content(li) && line.vis_begin < line.end) return line.vis_begin;
    }
    return std::string_view::npos;
  }

  size_t block_end(size_t bi) const {
    for (size_t next = bi + 1; next < doc_.blocks().size(); ++next)
      if (const size_t start = block_start(next); start != std::string_view::npos) return start;
    return doc_.text().size();
  }

  // Adds the unit [begin, end); while it is over the budget it is split at `level` (clause, then
  // space), then by characters. The first piece keeps the unit's rank and flags.
  void add_unit(size_t begin, size_t end, uint8_t rank, bool after_heading, bool forced, size_t block,
                uint8_t level = kRankClause) {
    const std::string text = doc_.clean(begin, end);
    const size_t tokens = counter_.count(text);
    if (tokens <= budget_) return push_unit(begin, tokens, text, rank, after_heading, forced, block);
    for (uint8_t l = level; l > kRankChar; --l) {
      const std::vector<size_t> cuts = split_points(begin, end, l);
      if (cuts.empty()) continue;
      size_t a = begin;
      for (size_t k = 0; k <= cuts.size(); ++k) {
        const size_t b = k < cuts.size() ? cuts[k] : end;
        add_unit(a, b, k == 0 ? rank : l, k == 0 && after_heading, k == 0 && forced, block,
                 static_cast<uint8_t>(l - 1));
        a = b;
      }
      return;
    }
    split_chars(begin, end, rank, after_heading, forced, block);
  }

  void push_unit(size_t begin, size_t tokens, std::string_view text, uint8_t rank, bool after_heading, bool forced,
                 size_t block) {
    ABRIDGE_CHECK(tokens <= budget_ && tokens <= UINT32_MAX);
    Unit u;
    u.begin = begin;
    u.tokens = static_cast<uint32_t>(tokens);  // <= budget_, and fewer than the text's bytes
    u.rank = rank;
    u.admissible = !after_heading;
    u.forced = forced;
    u.section = static_cast<uint32_t>(sections_.size() - 1);
    u.block = static_cast<uint32_t>(block);
    ABRIDGE_CHECK(terms_.size() < UINT32_MAX && units_.size() < UINT32_MAX);
    u.terms_begin = static_cast<uint32_t>(terms_.size());
    extract_terms(scanner_, text, terms_);
    std::sort(terms_.begin() + static_cast<std::ptrdiff_t>(u.terms_begin), terms_.end());
    units_.push_back(u);
  }

  // Offsets inside (begin, end) where a clause (after , ; : ， 、 ...) or a word (after a space) starts.
  std::vector<size_t> split_points(size_t begin, size_t end, uint8_t level) const {
    const std::string_view text = doc_.text();
    std::vector<size_t> out;
    bool armed = false;  // a clause mark (or a space) was just seen
    bool need_space = false;
    for (size_t i = begin; i < end;) {
      if (const size_t esc = escape_length(text, i)) {
        i += esc;
        continue;
      }
      const Utf8Char c = decode_utf8(text, i);
      const bool space = is_space(c.cp) || c.cp == '\r' || c.cp == '\f';
      if (!space && !is_invisible(c.cp)) {
        if (armed && !need_space && i > begin && !doc_.lines()[doc_.line_of(i)].dropped) out.push_back(i);
        armed = false;
        if (level == kRankClause && is_clause_punct(c.cp)) {
          armed = true;
          need_space = c.cp < 0x80;  // ASCII ',' ';' ':' need a following space; CJK marks do not
        }
      } else if (space) {
        if (level == kRankSpace) armed = true;
        need_space = false;
      }
      i += c.len;
    }
    return out;
  }

  // The last resort: the longest prefix, on a character boundary, whose text fits the budget. The
  // prefix is found by doubling, then bisection, so a long run costs O(length * log) to split. The
  // character starts are found as the search reaches them and dropped once a piece is cut: a run of
  // megabytes without a space would otherwise hold 8 bytes a character.
  void split_chars(size_t begin, size_t end, uint8_t rank, bool after_heading, bool forced, size_t block) {
    const std::string_view text = doc_.text();
    std::vector<size_t> offsets;  // character starts after `begin`, then `end`: [base, base + size)
    size_t base = 0, scan = begin;
    bool complete = false;
    // The index of the last offset at or below k, making offsets up to k known (or all of them).
    auto reach = [&](size_t k) {
      while (!complete && base + offsets.size() <= k) {
        // Cut only before a visible character, so that no piece is blank.
        bool found = false;
        while (scan < end && !found) {
          if (const size_t esc = escape_length(text, scan)) {
            scan += esc;
            continue;
          }
          const Utf8Char c = decode_utf8(text, scan);
          if (scan > begin && !is_space(c.cp) && !is_invisible(c.cp) && c.cp != '\r' &&
              !doc_.lines()[doc_.line_of(scan)].dropped) {
            offsets.push_back(scan);
            found = true;
          }
          scan += c.len;
        }
        if (!found) {
          offsets.push_back(end);
          complete = true;
        }
      }
      return std::min(k, base + offsets.size() - 1);
    };
    auto at = [&](size_t k) { return offsets[k - base]; };
    auto fits = [&](size_t a, size_t k, size_t* tokens) {
      *tokens = counter_.count(doc_.clean(a, at(k)));
      return *tokens <= budget_;
    };
    size_t a = begin, first = 0;
    while (a < end) {
      size_t tokens = 0;
      size_t good = reach(first), bad = SIZE_MAX;  // offsets[good] fits (one character always does)
      for (size_t step = std::max<size_t>(budget_, 1);; step *= 2) {
        const size_t k = reach(first + step);
        if (!fits(a, k, &tokens)) {
          bad = k;
          break;
        }
        good = k;
        if (complete && k == base + offsets.size() - 1) break;
      }
      if (bad == SIZE_MAX) bad = base + offsets.size();
      while (bad - good > 1) {
        const size_t mid = good + (bad - good) / 2;
        if (fits(a, mid, &tokens)) good = mid;
        else bad = mid;
      }
      const size_t b = at(good);
      const std::string piece = doc_.clean(a, b);
      push_unit(a, counter_.count(piece), piece, a == begin ? rank : static_cast<uint8_t>(kRankChar),
                a == begin && after_heading, a == begin && forced, block);
      a = b;
      first = good + 1;
      offsets.erase(offsets.begin(), offsets.begin() + static_cast<std::ptrdiff_t>(std::min(first - base, offsets.size())));
      base = first;
    }
  }

  // --- Cohesion ---

  // 1 - cosine similarity of the content words just before and just after the boundary at unit k.
  double cohesion_gap(size_t k) {
    auto gather = [&](std::vector<uint32_t>& out, size_t from, int step) {
      out.clear();
      for (size_t n = 0; n < kCohesionUnits && out.size() < kCohesionTerms; ++n) {
        const auto idx = static_cast<std::ptrdiff_t>(from) + step * static_cast<std::ptrdiff_t>(n);
        if (idx < 0 || idx >= static_cast<std::ptrdiff_t>(units_.size())) break;
        const Unit& u = units_[static_cast<size_t>(idx)];
        const size_t end = static_cast<size_t>(idx) + 1 < units_.size() ? units_[static_cast<size_t>(idx) + 1].terms_begin
                                                                           : terms_.size();
        out.insert(out.end(), terms_.begin() + static_cast<std::ptrdiff_t>(u.terms_begin),
                   terms_.begin() + static_cast<std::ptrdiff_t>(end));
      }
      std::sort(out.begin(), out.end());
    };
    if (k == 0) return 1.0;
    gather(left_, k - 1, -1);
    gather(right_, k, +1);
    if (left_.empty() || right_.empty()) return 0.5;
    // Counts per term on both sides, merged over the sorted lists.
    double dot = 0, nl = 0, nr = 0;
    size_t i = 0, j = 0;
    while (i < left_.size() || j < right_.size()) {
      const uint32_t t = (j >= right_.size() || (i < left_.size() && left_[i] < right_[j])) ? left_[i] : right_[j];
      double a = 0, b = 0;
      while (i < left_.size() && left_[i] == t) ++i, ++a;
      while (j < right_.size() && right_[j] == t) ++j, ++b;
      dot += a * b;
      nl += a * a;
      nr += b * b;
    }
    return 1.0 - dot / std::sqrt(nl * nr);
  }

  // --- Packing ---

  // The best cut in units (s, kmax] whose prefix sum cum[k - s] <= limit; see chunker.h, step 4.
  size_t choose(size_t s, size_t kmax, size_t limit, const std::vector<size_t>& cum) {
    struct Tier {
      uint8_t min_rank;
      double min_fill, min_fill_heading;
      bool admissible_only;
    };
    constexpr Tier kTiers[] = {{kRankSentence, kMinFill, kMinFillHeading, true},
                               {kRankSentence, 0, 0, true},
                               {kRankChar, kMinFill, kMinFill, true},
                               {kRankChar, 0, 0, true},
                               {kRankChar, 0, 0, false}};
    const double budget = static_cast<double>(budget_);
    for (const Tier& tier : kTiers) {
      size_t best = 0;
      double best_score = -1e300;
      for (size_t k = s + 1; k <= kmax; ++k) {
        if (cum[k - s] > limit) break;
        if (tier.admissible_only && !units_[k].admissible) continue;
        const uint8_t rank = units_[k].rank;
        if (rank < tier.min_rank) continue;
        const double fill = static_cast<double>(cum[k - s]) / budget;
        if (fill < (rank == kRankHeading ? tier.min_fill_heading : tier.min_fill)) continue;
        const double score = kRankWeight[rank] + cohesion_gap(k) + 0.5 * fill;
        if (score > best_score) best_score = score, best = k;
      }
      if (best) return best;
    }
    return s + 1;
  }

  std::vector<Chunk> pack() {
    const size_t n_units = units_.size();
    const size_t n_bytes = doc_.text().size();
    std::vector<Chunk> chunks;
    std::vector<size_t> cum;
    size_t s = 0, prev_start_unit = 0;
    while (s < n_units) {
      cum.assign(1, 0);
      size_t j = s;
      while (j < n_units && (j == s || (!units_[j].forced && cum.back() + units_[j].tokens <= budget_))) {
        cum.push_back(cum.back() + units_[j].tokens);
        ++j;
      }
      size_t cut = (j == n_units || units_[j].forced) ? j : choose(s, j, budget_, cum);
      std::string text;
      size_t tokens = 0;
      while (true) {
        text = doc_.clean(units_[s].begin, cut < n_units ? units_[cut].begin : n_bytes);
        tokens = counter_.count(text);
        if (tokens <= budget_) break;
        // The unit counts were optimistic: move the cut back by at least the excess.
        ABRIDGE_CHECK(cut > s + 1);
        const size_t excess = tokens - budget_;
        const size_t have = cum[cut - 1 - s];
        const size_t limit = have > excess ? have - excess : 0;
        cut = choose(s, cut - 1, std::max(limit, cum[1]), cum);
      }
      Chunk c;
      c.start = c.context_start = units_[s].begin;
      c.end = cut < n_units ? units_[cut].begin : n_bytes;
      c.section = sections_[units_[s].section];
      c.cut = cut < n_units ? cut_kind(units_[cut].rank) : CutKind::kEnd;
      if (options_.overlap_tokens > 0 && s > 0) add_overlap(c, prev_start_unit, s, text, tokens);
      c.text = std::move(text);
      c.tokens = tokens;
      ABRIDGE_CHECK(c.tokens <= options_.max_tokens);
      chunks.push_back(std::move(c));
      prev_start_unit = s;
      s = cut;
    }
    chunks.front().start = chunks.front().context_start = 0;
    return chunks;
  }

  // Repeats the last sentences of the previous chunk (units [prev, s)) within overlap_tokens, or,
  // when its last sentence alone is longer, the longest tail of it that starts a word and fits.
  // The whole text must still fit max_tokens; less overlap is taken when it does not.
  void add_overlap(Chunk& c, size_t prev, size_t s, std::string& text, size_t& tokens) {
    const size_t n = options_.overlap_tokens;
    std::vector<size_t> starts;  // candidate context starts, the most overlap first
    size_t from = s, sum = 0;
    while (from > prev && sum + units_[from - 1].tokens <= n) sum += units_[--from].tokens;
    for (size_t k = from; k < s; ++k) starts.push_back(units_[k].begin);
    if (starts.empty()) {
      const std::vector<size_t> words = split_points(units_[s - 1].begin, units_[s].begin, kRankSpace);
      size_t lo = 0, hi = words.size();  // the earliest word start whose tail fits
      while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (counter_.count(doc_.clean(words[mid], units_[s].begin)) <= n) hi = mid;
        else lo = mid + 1;
      }
      if (lo < words.size()) starts.push_back(words[lo]);
    }
    for (size_t ctx : starts) {
      std::string with = doc_.clean(ctx, c.end);
      const size_t t = counter_.count(with);
      if (t <= options_.max_tokens) {
        c.context_start = ctx;
        text = std::move(with);
        tokens = t;
        return;
      }
    }
  }

  Document doc_;
  const TokenCounter& counter_;
  Options options_;
  size_t budget_;  // for a chunk's own text: max_tokens - overlap_tokens
  std::vector<Unit> units_;
  std::vector<uint32_t> terms_;  // per unit, sorted (see Unit::terms_begin)
  TermScanner scanner_;
  std::vector<std::string> sections_;
  std::vector<uint32_t> left_, right_;  // scratch for cohesion_gap
};

}  // namespace

std::vector<Chunk> chunk_text(std::string_view text, const TokenCounter& counter, const Options& options) {
  if (options.max_tokens < kMinBudget)
    throw Error("max_tokens must be at least " + std::to_string(kMinBudget));
  if (options.overlap_tokens * 2 >= options.max_tokens)
    throw Error("overlap_tokens must be less than max_tokens / 2");
  Chunker chunker(text, counter, options);
  return chunker.run();
}

}  // namespace abridge::chunker
