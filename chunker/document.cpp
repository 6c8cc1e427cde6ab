#include "chunker/document.h"

#include <algorithm>
#include <unordered_map>

#include "chunker/rules.h"
#include "chunker/unicode.h"

namespace abridge::chunker {
namespace {

using namespace detail;

constexpr size_t kRunningZone = 3;       // non-blank lines at the top and bottom of a page
constexpr size_t kRunningMinPages = 3;   // pages a running line must repeat on
constexpr size_t kRunningMaxBytes = 120;

std::string_view trim_ascii(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool is_roman(std::string_view s) {
  if (s.empty() || s.size() > 6) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return std::string_view("ivxlcdm").find(c) != std::string_view::npos; });
}

// The form a running header/footer keeps from page to page: digit runs and roman page numbers
// become '#', spaces collapse, ASCII lower case.
std::string running_key(std::string_view visible) {
  const std::string_view t = trim_ascii(visible);
  std::string key;
  bool space = false;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (c == ' ' || c == '\t') {
      space = true;
      continue;
    }
    if (space && !key.empty()) key += ' ';
    space = false;
    if (c >= '0' && c <= '9') {
      if (key.empty() || key.back() != '#') key += '#';
      continue;
    }
    key += (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
  }
  if (is_roman(key)) key = "#";
  return key;
}

bool has_alnum(std::string_view key) {
  return std::any_of(key.begin(), key.end(), [](char c) {
    return c == '#' || (c >= 'a' && c <= 'z') || static_cast<uint8_t>(c) >= 0x80;
  });
}

bool is_separator(std::string_view t) {
  if (t.empty() || t.size() > 80) return false;
  return std::all_of(t.begin(), t.end(), [](char c) { return std::string_view("%*-_=~+# \t").find(c) != std::string_view::npos; }) &&
         t.find_first_not_of(" \t") != std::string_view::npos;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// "N." / "N)" opening a line: N, else -1.
int enum_number(std::string_view t) {
  size_t i = 0;
  int v = 0;
  while (i < t.size() && i < 3 && t[i] >= '0' && t[i] <= '9') v = v * 10 + (t[i++] - '0');
  if (i == 0 || i + 1 >= t.size() || (t[i] != '.' && t[i] != ')') || (t[i + 1] != ' ' && t[i + 1] != '\t')) return -1;
  return v;
}

bool is_list_item(std::string_view t) {
  for (std::string_view bullet : {"- ", "* ", "+ ", "\u2022 ", "\u00B7 ", "\u25AA ", "\u25E6 ", "\u2023 ", "\u2013 ",
                                  "\u2022\t", "- [ ] ", "- [x] "})
    if (starts_with(t, bullet)) return true;
  if (enum_number(t) >= 0) return true;
  if (starts_with(t, "(") || starts_with(t, "\uFF08")) {  // (1) or （1）
    const size_t open = t[0] == '(' ? 1 : 3;
    size_t i = open;
    while (i < t.size() && i < open + 3 && t[i] >= '0' && t[i] <= '9') ++i;
    if (i > open && (starts_with(t.substr(i), ") ") || starts_with(t.substr(i), "\uFF09"))) return true;
  }
  return false;
}

}  // namespace

bool Document::ends_with_initial(const Line& p) const {
  // "... by Allan R." then "Wilks": a single capital before the dot is an initial, not an end.
  if (p.last != '.' || !is_upper(p.before_last) || p.end < p.begin + 2) return false;
  const size_t dot = text_.find_last_of('.', p.end - 1);
  if (dot == std::string_view::npos || dot < p.begin + 1) return false;
  const size_t letter = dot - 1;  // the capital is ASCII when the byte before the dot is a letter
  return (letter == p.begin || text_[letter - 1] == ' ' || text_[letter - 1] == '\t') &&
         text_[letter] >= 'A' && text_[letter] <= 'Z';
}

bool is_prose_like(LineKind k) { return k == LineKind::kProse || k == LineKind::kListItem || k == LineKind::kListCont; }

bool ends_sentence(const Line& line) {
  return is_terminal(line.last) || (is_closer(line.last) && is_terminal(line.before_last));
}

Document::Document(std::string_view text, const Options& options) : text_(text) {
  if (text.size() >= UINT32_MAX)
    throw Error("a text of " + std::to_string(text.size()) + " bytes (the chunker reads texts under 4 GiB)");
  if (options.invalid_utf8 == InvalidUtf8::kReject) {
    const size_t bad = find_invalid_utf8(text);
    if (bad != std::string_view::npos) throw InvalidUtf8Error(bad);
  }
  split_lines();
  if (options.drop_running_lines) drop_running_lines();
  split_glued_headings();
  classify();
  compute_joins();
  build_blocks();
  build_sections();
}

void Document::split_lines() {
  const size_t n = text_.size();
  // Reserved once: a text of short lines has as many lines as bytes / 2, and a vector grown by doubling
  // holds up to three times that while it moves.
  size_t breaks = 0;
  for (const char c : text_) breaks += c == '\n' || c == '\r' || c == '\f';
  lines_.reserve(breaks + 1);
  size_t begin = 0;
  bool page_start = false;
  uint32_t page = 1;
  while (begin < n) {
    size_t i = begin;
    while (i < n && text_[i] != '\n' && text_[i] != '\r' && text_[i] != '\f') ++i;
    Line line;
    line.begin = begin;
    line.end = i;
    line.page_start = page_start;
    page += page_start ? 1 : 0;
    line.page = page;
    page_start = i < n && text_[i] == '\f';
    size_t next = i;
    if (i < n) next = (text_[i] == '\r' && i + 1 < n && text_[i + 1] == '\n') ? i + 2 : i + 1;
    measure(line);
    lines_.push_back(line);
    begin = next;
  }
}

// Visible metrics of [line.begin, line.end); the kind is kBlank or kProse.
void Document::measure(Line& line) const {
  line.vis_begin = line.end;
  size_t width = 0, columns = 0, indent = 0;
  line.first = line.last = line.before_last = 0;
  bool leading = true;
  for (size_t i = line.begin; i < line.end;) {
    if (const size_t esc = escape_length(text_, i)) {
      i += esc;
      continue;
    }
    const Utf8Char c = decode_utf8(text_, i);
    if (is_invisible(c.cp)) {
      i += c.len;
      continue;
    }
    ++width;
    if (is_space(c.cp)) {
      if (leading) ++indent;
    } else {
      if (leading) {
        line.vis_begin = i;
        line.first = c.cp;
      }
      leading = false;
      columns += is_cjk(c.cp) ? 2 : 1;
      line.before_last = line.last;
      line.last = c.cp;
    }
    i += c.len;
  }
  constexpr size_t kMax = UINT32_MAX;
  line.width = static_cast<uint32_t>(std::min(width, kMax));
  line.columns = static_cast<uint32_t>(std::min(columns, kMax));
  line.indent = static_cast<uint32_t>(std::min(indent, kMax));
  line.kind = leading ? LineKind::kBlank : LineKind::kProse;
}

void Document::drop_running_lines() {
  // Pages: a form feed ends one. Lines among the first/last kRunningZone non-blank lines of a page are
  // candidates; a candidate key seen on kRunningMinPages pages or more is a running line.
  std::vector<std::pair<size_t, size_t>> pages;  // [first line, last line + 1)
  size_t first = 0;
  for (size_t i = 1; i <= lines_.size(); ++i) {
    if (i == lines_.size() || lines_[i].page_start) {
      pages.emplace_back(first, i);
      first = i;
    }
  }
  if (pages.size() < kRunningMinPages) return;
  struct Seen {
    size_t last_page;
    size_t pages;
  };
  std::unordered_map<std::string, Seen> seen;
  std::vector<std::pair<size_t, std::string>> candidates;  // (line, key)
  std::string vis;
  auto consider = [&](size_t line, size_t page) {
    vis.clear();
    append_visible(lines_[line].begin, lines_[line].end, vis);
    if (vis.size() > kRunningMaxBytes) return;
    std::string key = running_key(vis);
    if (!has_alnum(key)) return;
    auto [it, inserted] = seen.try_emplace(key, Seen{page, 1});
    if (!inserted && it->second.last_page != page) {
      it->second.last_page = page;
      ++it->second.pages;
    }
    candidates.emplace_back(line, std::move(key));
  };
  for (size_t p = 0; p < pages.size(); ++p) {
    const auto [b, e] = pages[p];
    std::vector<size_t> nonblank;
    for (size_t i = b; i < e; ++i)
      if (lines_[i].kind != LineKind::kBlank) nonblank.push_back(i);
    for (size_t k = 0; k < nonblank.size(); ++k)
      if (k < kRunningZone || k + kRunningZone >= nonblank.size()) consider(nonblank[k], p);
  }
  for (const auto& [line, key] : candidates)
    if (seen.at(key).pages >= kRunningMinPages) lines_[line].dropped = true;
}

// PDF extraction sometimes glues a heading to the end of the paragraph before it: "... such as
// CIFAR-10 vs. LSUN. 3 METHODOLOGY". A numbered heading whose title is in capitals, after a sentence
// terminator and a space at the end of a prose line, becomes a line of its own (the capitals keep
// "... in Section 3. 4 of them were" a sentence).
void Document::split_glued_headings() {
  constexpr size_t kMaxTail = 80;
  std::vector<std::pair<size_t, size_t>> cuts;  // (line, the heading's first byte)
  for (size_t li = 0; li < lines_.size(); ++li) {
    const Line& line = lines_[li];
    if (line.dropped || line.kind == LineKind::kBlank || line.end - line.begin < 16 || !is_letter(line.last)) continue;
    size_t cut = line.end;  // the heading's first byte, or line.end for none
    const size_t lo = line.end - line.begin > kMaxTail ? line.end - kMaxTail : line.begin + 1;
    for (size_t p = lo; p < line.end && cut == line.end; ++p) {
      if (!is_ascii_digit(static_cast<uint8_t>(text_[p])) || text_[p - 1] != ' ') continue;
      size_t q = p - 1;
      while (q > line.begin && text_[q - 1] == ' ') --q;
      if (q <= line.vis_begin || (text_[q - 1] != '.' && text_[q - 1] != '!' && text_[q - 1] != '?')) continue;
      const auto h = parse_heading(text_.substr(p, line.end - p));
      if (!h || h->family != Heading::kNumbered) continue;
      size_t upper = 0, lower = 0;
      for (size_t i = 0; i < h->title.size();) {
        const Utf8Char c = decode_utf8(h->title, i);
        upper += is_upper(c.cp) ? 1 : 0;
        lower += is_lower(c.cp) ? 1 : 0;
        i += c.len;
      }
      if (upper >= 4 && lower * 10 <= upper) cut = p;
    }
    if (cut != line.end) cuts.emplace_back(li, cut);
  }
  if (cuts.empty()) return;  // the usual case: the lines stay where they are
  std::vector<Line> out;
  out.reserve(lines_.size() + cuts.size());
  size_t next_cut = 0;
  for (size_t li = 0; li < lines_.size(); ++li) {
    const Line& line = lines_[li];
    if (next_cut == cuts.size() || cuts[next_cut].first != li) {
      out.push_back(line);
      continue;
    }
    const size_t cut = cuts[next_cut++].second;
    Line head = line, tail = line;
    head.end = cut;
    while (head.end > head.begin && (text_[head.end - 1] == ' ' || text_[head.end - 1] == '\t')) --head.end;
    tail.begin = cut;
    tail.page_start = false;
    measure(head);
    measure(tail);
    out.push_back(head);
    out.push_back(tail);
  }
  lines_ = std::move(out);
}

void Document::classify() {
  bool in_fence = false;
  std::string vis;
  std::vector<int> enum_numbers(lines_.size(), -1);
  std::vector<int> family_rank(Heading::kTitle + 1, -1);
  int families = 0;
  for (size_t i = 0; i < lines_.size(); ++i) {
    Line& line = lines_[i];
    if (line.dropped) continue;
    vis.clear();
    append_visible(line.vis_begin, line.end, vis);
    const std::string_view t = trim_ascii(vis);
    const bool fence = starts_with(t, "```") || starts_with(t, "~~~");
    if (fence) {
      line.kind = LineKind::kFence;
      in_fence = !in_fence;
      continue;
    }
    if (in_fence) {
      line.kind = LineKind::kCode;  // blank lines too: a code block stays one block
      continue;
    }
    if (line.kind == LineKind::kBlank) continue;
    shape(line, t);
    enum_numbers[i] = enum_number(t);
    if (t[0] == '|') {
      line.kind = LineKind::kTable;
    } else if (is_separator(t)) {
      line.kind = LineKind::kSeparator;
    } else if (auto h = line.width <= 80 ? parse_heading(t) : std::nullopt) {
      line.kind = LineKind::kHeading;
      line.heading = static_cast<int>(headings_.size());
      headings_.push_back(std::move(*h));
    } else if (is_list_item(t)) {
      line.kind = LineKind::kListItem;
    }
  }
  // "N. Title" next to a line numbered N-1 or N+1 is a list item, not a heading.
  for (size_t i = 0; i < lines_.size(); ++i) {
    Line& line = lines_[i];
    if (line.kind != LineKind::kHeading || headings_[line.heading].number < 0) continue;
    const int n = headings_[line.heading].number;
    const size_t lo = i >= 8 ? i - 8 : 0, hi = std::min(lines_.size(), i + 9);
    for (size_t k = lo; k < hi; ++k) {
      if (k != i && (enum_numbers[k] == n - 1 || enum_numbers[k] == n + 1)) {
        line.kind = LineKind::kListItem;
        break;
      }
    }
  }
  // Keep only the surviving headings, in order, and rank families by first appearance.
  std::vector<Heading> kept;
  for (Line& line : lines_) {
    if (line.heading < 0) continue;
    if (line.kind != LineKind::kHeading) {
      line.heading = -1;
      continue;
    }
    Heading& h = headings_[line.heading];
    if (family_rank[h.family] < 0) family_rank[h.family] = families++;
    heading_keys_.emplace_back(family_rank[h.family], h.level);
    line.heading = static_cast<int>(kept.size());
    kept.push_back(std::move(h));
  }
  headings_ = std::move(kept);
  // Titles are siblings of the outermost other headings (see heading_keys()).
  std::pair<int, int> outer{-1, -1};
  for (size_t h = 0; h < headings_.size(); ++h)
    if (headings_[h].family != Heading::kTitle && (outer.first < 0 || heading_keys_[h] < outer)) outer = heading_keys_[h];
  if (outer.first >= 0)
    for (size_t h = 0; h < headings_.size(); ++h)
      if (headings_[h].family == Heading::kTitle) heading_keys_[h] = outer;
  // List continuation: a prose line right after a list line, unless the item ended a sentence and
  // the line is not indented.
  const Line* prev = nullptr;
  for (Line& line : lines_) {
    if (line.dropped) continue;
    if (line.kind == LineKind::kBlank) {
      prev = nullptr;
      continue;
    }
    if (line.kind == LineKind::kProse && prev && (prev->kind == LineKind::kListItem || prev->kind == LineKind::kListCont) &&
        (!ends_sentence(*prev) || line.indent > 0))
      line.kind = LineKind::kListCont;
    prev = &line;
  }
  // Title lines: short open lines that start a paragraph, follow a finished sentence or another title.
  for (size_t i = 0; i < lines_.size(); ++i) {
    Line& line = lines_[i];
    if (!is_content(i) || !is_prose_like(line.kind) || !line.short_open) continue;
    const Line* p = i > 0 && is_content(i - 1) ? &lines_[i - 1] : nullptr;
    line.title = !(p && is_prose_like(p->kind) && !p->leaders && !p->numeric && !p->code_like && !p->title && !ends_sentence(*p));
  }
  // Typical line width: the 80th percentile of prose lines.
  std::vector<uint32_t> widths;
  for (const Line& line : lines_)
    if (!line.dropped && line.kind == LineKind::kProse) widths.push_back(line.width);
  if (!widths.empty()) {
    const size_t k = widths.size() * 4 / 5;
    std::nth_element(widths.begin(), widths.begin() + static_cast<std::ptrdiff_t>(k), widths.end());
    typical_width_ = std::max<size_t>(widths[k], 8);
  }
}

namespace {

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

}  // namespace

// The shape flags of a content line from its visible text without leading spaces (see Line).
void Document::shape(Line& line, std::string_view visible) const {
  size_t nonspace = 0, letters = 0, symbols = 0, dots = 0;
  bool comma = false;
  char32_t first = 0, second = 0, last_non_closer = 0;
  for (size_t i = 0; i < visible.size();) {
    const Utf8Char c = decode_utf8(visible, i);
    i += c.len;
    if (is_space(c.cp)) {
      if (second == 0 && first != 0) second = ' ';
      continue;
    }
    ++nonspace;
    if (!is_closer(c.cp)) last_non_closer = c.cp;
    if (first == 0) first = c.cp;
    else if (second == 0) second = c.cp;
    if (is_letter(c.cp)) ++letters;
    if (is_code_symbol(c.cp)) ++symbols;
    comma = comma || c.cp == ',' || c.cp == 0xFF0C || c.cp == 0x3001 || c.cp == ';' || c.cp == 0xFF1B;
    dots = c.cp == '.' ? dots + 1 : 0;  // spaces between the dots do not reset the count
    line.leaders = line.leaders || dots >= 4;
  }
  line.numeric = letters * 10 < nonspace * 4;
  line.code_like = symbols * 100 >= nonspace * 12 || ((first == '>' || first == '$' || first == '+') && second == ' ') ||
                   line.last == '{' || line.last == '}' || first == '}';
  line.short_open = line.columns <= kTitleColumns && !is_terminal(last_non_closer) && !comma &&
                    !is_clause_punct(last_non_closer);
}

Join Document::inline_join(const Line& p, const Line& q) const {
  if (!is_prose_like(p.kind) || !is_prose_like(q.kind) || q.kind == LineKind::kListItem) return Join::kNewline;
  const std::string_view body = text_.substr(p.begin, p.end - p.begin);
  // A table-of-contents line (or a spaced ellipsis, which such lines often end with) keeps its break.
  if (p.leaders || body.find(". . .") != std::string_view::npos) return Join::kNewline;
  if (p.last == '.' && is_lower(q.first)) {  // no sentence ends before a lower-case letter
    const size_t space = body.find_last_of(" \t");
    const std::string_view word = space == std::string_view::npos ? body : body.substr(space + 1);
    const bool url = word.find("://") != std::string_view::npos || word.substr(0, 4) == "www.";
    return url ? Join::kNone : Join::kSpace;
  }
  if (ends_sentence(p) && !ends_with_initial(p)) return Join::kNewline;
  if (p.last == '-' && is_letter(p.before_last) && is_lower(q.first)) return Join::kDehyphen;
  if (p.width * 2 < typical_width_ && !is_clause_punct(p.last)) return Join::kNewline;
  // CJK text has no spaces between words; a line ending in a closing bracket or quote (a title
  // such as 《送别》) is not a broken sentence.
  if ((is_han(p.last) || is_clause_punct(p.last) || p.last == 0x300A || p.last == 0x300C) && is_cjk(q.first))
    return Join::kNone;
  if (is_cjk(p.last) && is_cjk(q.first)) return Join::kNewline;
  return Join::kSpace;
}

void Document::compute_joins() {
  size_t prev = lines_.size();
  bool blank = false, page = false;
  for (size_t i = 0; i < lines_.size(); ++i) {
    const Line& line = lines_[i];
    if (line.page_start) page = true;
    if (!is_content(i)) {
      if (!line.dropped && line.kind == LineKind::kBlank) blank = true;
      continue;
    }
    if (prev < lines_.size()) {
      Line& p = lines_[prev];
      if (page) {
        // A sentence that runs on over a page break (past the running lines) is joined.
        const bool runs_on = is_prose_like(p.kind) && is_prose_like(line.kind) && line.kind != LineKind::kListItem &&
                             !ends_sentence(p) &&
                             (is_lower(line.first) || (is_cjk(p.last) && is_han(line.first) && !is_terminal(p.last)));
        p.join = runs_on ? inline_join(p, line) : Join::kParagraph;
      } else {
        p.join = blank ? Join::kParagraph : inline_join(p, line);
      }
    }
    prev = i;
    blank = page = false;
  }
}

void Document::build_blocks() {
  auto block_class = [](LineKind k) {
    switch (k) {
      case LineKind::kListItem: case LineKind::kListCont: return LineKind::kListItem;
      case LineKind::kFence: case LineKind::kCode: return LineKind::kCode;
      default: return k;
    }
  };
  size_t prev = lines_.size();
  for (size_t i = 0; i < lines_.size(); ++i) {
    if (!is_content(i)) continue;
    const LineKind k = block_class(lines_[i].kind);
    bool fresh = prev == lines_.size() || lines_[prev].join == Join::kParagraph || k == LineKind::kHeading ||
                 k == LineKind::kSeparator || blocks_.back().kind != k;
    // A fence that opens a block after a closed one starts a new block.
    if (!fresh && lines_[i].kind == LineKind::kFence && lines_[prev].kind == LineKind::kFence) fresh = true;
    if (fresh) blocks_.push_back({i, i, k});
    else blocks_.back().last_line = i;
    prev = i;
  }
}

void Document::build_sections() {
  std::vector<int> open;  // sections enclosing the current line, outermost first
  for (size_t i = 0; i < lines_.size(); ++i) {
    const int h = lines_[i].heading;
    if (h < 0 || lines_[i].kind != LineKind::kHeading) continue;
    while (!open.empty() && heading_keys_[sections_[open.back()].heading] >= heading_keys_[h]) {
      sections_[open.back()].end = lines_[i].begin;
      open.pop_back();
    }
    Section s;
    s.heading = h;
    s.line = i;
    s.begin = lines_[i].begin;
    s.end = text_.size();
    s.parent = open.empty() ? -1 : open.back();
    s.depth = static_cast<int>(open.size());
    open.push_back(static_cast<int>(sections_.size()));
    sections_.push_back(s);
  }
}

std::string Document::section_path(int s) const {
  std::string path;
  for (int k = s; k >= 0; k = sections_[k].parent)
    path = headings_[sections_[k].heading].title + (path.empty() ? "" : " > ") + path;
  return path;
}

uint32_t Document::page_of(size_t offset) const { return lines_.empty() ? 1 : lines_[line_of(offset)].page; }

void Document::sentence_starts(size_t first_line, size_t last_line, std::vector<size_t>& starts) const {
  // The content lines of the run, one piece each.
  class ContentLines final : public detail::Pieces {
   public:
    ContentLines(const Document& doc, size_t first, size_t last) : doc_(doc), first_(first), last_(last) {}
    Kind piece(size_t k, size_t& begin, size_t& end) const override {
      const size_t li = first_ + k;
      if (li > last_ || li >= doc_.lines_.size()) return kEnd;
      if (!doc_.is_content(li)) return kSkip;
      begin = doc_.lines_[li].begin;
      end = doc_.lines_[li].end;
      return kPiece;
    }

   private:
    const Document& doc_;
    size_t first_, last_;
  };
  const ContentLines pieces(*this, first_line, last_line);
  detail::sentence_starts(detail::VisCursor(text_, pieces), starts);
}

std::string Document::gap(size_t a, size_t b) const {
  if (lines_.empty() || a >= b) return "";
  const size_t la = line_of(a - 1), lb = line_of(std::min(b, text_.size() - 1));
  if (la != lb) {
    bool newline = false;
    size_t prev = la;
    for (size_t li = la + 1; li <= lb; ++li) {
      if (!is_content(li)) continue;
      const Line& line = lines_[li];
      if (li < lb && (!is_prose_like(line.kind) || line.title || line.leaders || line.numeric || line.code_like))
        return "\n\n";
      if (is_content(prev)) {
        if (lines_[prev].join == Join::kParagraph) return "\n\n";
        newline = newline || lines_[prev].join == Join::kNewline;
      }
      prev = li;
    }
    if (newline) return "\n";
  }
  // The characters that end at `a` and start at `b` (excerpts begin and end with visible ones).
  size_t i = a - 1;
  while (i > 0 && a - i < 4 && is_utf8_continuation(static_cast<unsigned char>(text_[i]))) --i;
  const char32_t before = decode_utf8(text_, i).cp;
  const char32_t after = b < text_.size() ? decode_utf8(text_, b).cp : 0;
  return is_cjk(before) && is_cjk(after) ? "" : " ";
}

size_t Document::line_of(size_t offset) const {
  auto it = std::upper_bound(lines_.begin(), lines_.end(), offset, [](size_t o, const Line& l) { return o < l.begin; });
  return it == lines_.begin() ? 0 : static_cast<size_t>(it - lines_.begin()) - 1;
}

void Document::append_visible(size_t a, size_t b, std::string& out) const {
  size_t i = a;
  while (i < b) {
    const auto byte = static_cast<uint8_t>(text_[i]);
    if (byte >= 0x20 && byte < 0x7F) {  // printable ASCII run
      size_t j = i + 1;
      while (j < b && static_cast<uint8_t>(text_[j]) >= 0x20 && static_cast<uint8_t>(text_[j]) < 0x7F) ++j;
      out.append(text_.data() + i, j - i);
      i = j;
      continue;
    }
    if (const size_t esc = escape_length(text_, i)) {
      i += esc;
      continue;
    }
    const Utf8Char c = decode_utf8(text_, i);
    if (!c.valid) out += "\xEF\xBF\xBD";
    else if (!is_invisible(c.cp) && c.cp != '\r' && c.cp != '\f') out.append(text_.data() + i, c.len);
    i += c.len;
  }
}

std::string Document::clean(size_t s, size_t e) const {
  std::string out;
  if (s >= e || lines_.empty()) return out;
  std::string piece;
  size_t prev = lines_.size();
  for (size_t i = line_of(s); i < lines_.size() && lines_[i].begin < e; ++i) {
    const Line& line = lines_[i];
    if (!is_content(i)) continue;
    const size_t a = std::max<size_t>(s, line.begin), b = std::min<size_t>(e, line.end);
    if (a > b) continue;
    const bool verbatim = line.kind == LineKind::kCode || line.kind == LineKind::kFence || line.kind == LineKind::kTable;
    piece.clear();
    append_visible(a, b, piece);
    while (!piece.empty() && (piece.back() == ' ' || piece.back() == '\t')) piece.pop_back();
    const Join join = prev < lines_.size() ? lines_[prev].join : Join::kNewline;
    const bool joined = prev < lines_.size() && (join == Join::kSpace || join == Join::kNone || join == Join::kDehyphen);
    if (!verbatim && (prev == lines_.size() || joined || a > line.begin)) {
      size_t lead = 0;
      while (lead < piece.size() && (piece[lead] == ' ' || piece[lead] == '\t')) ++lead;
      piece.erase(0, lead);
    }
    if (piece.empty() && !verbatim) continue;
    if (prev < lines_.size()) {
      switch (join) {
        case Join::kParagraph: out += "\n\n"; break;
        case Join::kNewline: out += '\n'; break;
        case Join::kSpace: out += ' '; break;
        case Join::kNone: break;
        case Join::kDehyphen:
          if (!out.empty() && out.back() == '-') out.pop_back();
          break;
      }
    }
    out += piece;
    prev = i;
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ' || out.back() == '\t')) out.pop_back();
  size_t lead = 0;
  while (lead < out.size() && out[lead] == '\n') ++lead;
  out.erase(0, lead);
  return out;
}

}  // namespace abridge::chunker
