// The document model: lines, pages, running lines dropped, line kinds and shapes, how each line break
// reads in the cleaned text, blocks, sentences, headings and the section tree. Built once per input,
// read-only after. The chunker cuts it into chunks; the extractive summarizer reads its sentences and
// sections from it, so that each text rule (a heading, a sentence end, a running header, a line that
// holds no prose) has one implementation.
//
// Offsets are byte offsets into the text the Document was built on (it keeps a view: the text must
// outlive it). Lines are the text's lines (cut at \n, \r\n, \r and form feeds) with one exception: a
// numbered heading in capitals glued to the end of a prose line by PDF extraction ("... vs. LSUN.
// 3 METHODOLOGY") is split off into a line of its own, which starts at the heading's first byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chunker/chunker.h"

namespace abridge::chunker {

enum class LineKind : uint8_t { kBlank, kProse, kHeading, kListItem, kListCont, kFence, kCode, kTable, kSeparator };
// How the break after a content line reads when the next content line follows in the same text.
enum class Join : uint8_t { kNewline, kSpace, kNone, kDehyphen, kParagraph };

// One per line of the text: a document of short lines holds many, so the struct is kept small (48
// bytes: offsets and counts in 32 bits, as a Document reads texts under 4 GiB; flags in bits). The
// next line starts at lines()[i + 1].begin.
struct Line {
  uint32_t begin = 0;     // first byte of the content
  uint32_t end = 0;       // one past the content (a terminator \n, \r\n, \r or \f follows, or a split heading)
  uint32_t vis_begin = 0; // first visible non-space character (== end for a blank line)
  uint32_t width = 0;     // visible characters (at most 2^32 - 1: counted up to that)
  uint32_t columns = 0;   // visible non-space characters, CJK counting two (likewise)
  uint32_t indent = 0;    // leading spaces/tabs (likewise)
  char32_t first = 0;     // first and last visible non-space characters
  char32_t last = 0;
  char32_t before_last = 0;
  uint32_t page = 1;      // 1 + the form feeds before the line
  int32_t heading = -1;   // index into Document::headings
  LineKind kind = LineKind::kBlank;
  Join join = Join::kParagraph;  // towards the next content line
  bool page_start : 1 = false;   // a form feed ends the line before
  bool dropped : 1 = false;      // a running header/footer
  // Shapes of a content line: lines that hold no prose even where their kind is kProse.
  bool leaders : 1 = false;   // table-of-contents dot leaders: four dots in a row, spaced or not
  bool numeric : 1 = false;   // fewer than 40% letters: page numbers, tables of figures, "* * *"
  bool code_like : 1 = false; // 12% or more code symbols ({}[]<>=;$\|_#@~^`+*&%), a shell or R prompt
                              // ("> ", "$ ", "+ "), or a brace at either end
  bool short_open : 1 = false;  // at most kTitleColumns columns, no comma, and no sentence or clause
                                // punctuation at the end
  bool title : 1 = false;       // a short open prose line that starts its paragraph, or follows a
                                // finished sentence or another title: a poem's title and author,
                                // "CHAPTER I", a caption
};
static_assert(sizeof(Line) <= 48);
inline constexpr size_t kTitleColumns = 40;

struct Block {
  size_t first_line;  // content lines [first_line, last_line] (blank/dropped lines between are skipped)
  size_t last_line;
  LineKind kind;      // kProse, kListItem (a list), kCode, kTable, kHeading, kSeparator
};

// One heading's section: from its heading line to the next heading of the same or an outer level.
struct Section {
  int heading = -1;   // index into Document::headings()
  size_t line = 0;    // the heading's line
  size_t begin = 0;   // first byte of the heading line
  size_t end = 0;     // first byte of the next heading of the same or an outer level, or the text's end
  int parent = -1;    // the enclosing section (index into sections()), -1 at the top level
  int depth = 0;      // 0 at the top level
};

class Document {
 public:
  // Throws InvalidUtf8Error when options.invalid_utf8 is kReject and the text is not valid UTF-8, and
  // abridge::Error for a text of 4 GiB or more (the reader refuses documents far smaller).
  Document(std::string_view text, const Options& options);

  std::string_view text() const { return text_; }
  const std::vector<Line>& lines() const { return lines_; }
  const std::vector<Block>& blocks() const { return blocks_; }
  const std::vector<Heading>& headings() const { return headings_; }
  // Per heading: (rank of its family by first appearance, level); smaller is outer. A kTitle heading
  // (a named or capitalized section title) takes the outermost key of the other families, so that
  // "Abstract" and "REFERENCES" are siblings of "1 Introduction".
  const std::vector<std::pair<int, int>>& heading_keys() const { return heading_keys_; }
  // One section per heading, in document order; a heading is top level when no heading of an outer
  // level is open before it. The sections of depth 0 and the text before the first of them tile the
  // document.
  const std::vector<Section>& sections() const { return sections_; }
  // "3 Results > 3.2 Latency": the titles of section s and the sections that enclose it.
  std::string section_path(int s) const;
  size_t typical_width() const { return typical_width_; }
  bool is_content(size_t line) const { return !lines_[line].dropped && lines_[line].kind != LineKind::kBlank; }

  // The index of the line whose [begin, next) holds `offset` (offset < text.size()).
  size_t line_of(size_t offset) const;
  // The page (1-based, pages separated by form feeds) of the byte at `offset`.
  uint32_t page_of(size_t offset) const;
  // The cleaned text of the byte span [s, e): see chunker.h.
  std::string clean(size_t s, size_t e) const;
  // Appends the visible characters of [a, b) (escapes and controls removed, invalid bytes U+FFFD).
  void append_visible(size_t a, size_t b, std::string& out) const;
  // How the text between two excerpts reads when it is left out: the excerpt before ends at byte
  // `a`, the one after begins at `b` (a <= b). "\n\n" when a paragraph break (blank line, page break)
  // or a line that holds no prose (heading, separator, table, code, title, see Line) lies between;
  // "\n" when a line break that the cleaned text keeps does; otherwise a space, or nothing between
  // two CJK characters.
  std::string gap(size_t a, size_t b) const;
  // The sentence starts (see split_sentences) in the content lines [first_line, last_line], dropped
  // lines left out and a line break read as a space: appended to `starts`, in order, never the first
  // visible character.
  void sentence_starts(size_t first_line, size_t last_line, std::vector<size_t>& starts) const;

 private:
  void split_lines();
  void measure(Line& line) const;
  void drop_running_lines();
  void split_glued_headings();
  void classify();
  void shape(Line& line, std::string_view visible) const;
  void compute_joins();
  void build_blocks();
  void build_sections();
  Join inline_join(const Line& p, const Line& q) const;
  bool ends_with_initial(const Line& p) const;

  std::string_view text_;
  std::vector<Line> lines_;
  std::vector<Block> blocks_;
  std::vector<Heading> headings_;
  std::vector<std::pair<int, int>> heading_keys_;
  std::vector<Section> sections_;
  size_t typical_width_ = 70;
};

bool is_prose_like(LineKind k);
bool ends_sentence(const Line& line);

}  // namespace abridge::chunker
