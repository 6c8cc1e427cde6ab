// The document model the chunker cuts (internal): lines, pages, dropped running lines, line kinds,
// how each line break reads in the cleaned text, and blocks. Built once per input, read-only after.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "chunker/chunker.h"

namespace abridge::chunker::detail {

enum class LineKind : uint8_t { kBlank, kProse, kHeading, kListItem, kListCont, kFence, kCode, kTable, kSeparator };
// How the break after a content line reads when the next content line follows in the same text.
enum class Join : uint8_t { kNewline, kSpace, kNone, kDehyphen, kParagraph };

struct Line {
  size_t begin = 0;       // first byte of the content
  size_t end = 0;         // one past the content (the terminator \n, \r\n, \r or \f follows)
  size_t next = 0;        // first byte of the next line
  size_t vis_begin = 0;   // first visible non-space character (== end for a blank line)
  size_t width = 0;       // visible characters
  size_t indent = 0;      // leading spaces/tabs
  char32_t first = 0;     // first and last visible non-space characters
  char32_t last = 0;
  char32_t before_last = 0;
  LineKind kind = LineKind::kBlank;
  Join join = Join::kParagraph;  // towards the next content line
  bool page_start = false;       // a form feed ends the line before
  bool dropped = false;          // a running header/footer
  int heading = -1;              // index into Document::headings
};

struct Block {
  size_t first_line;  // content lines [first_line, last_line] (blank/dropped lines between are skipped)
  size_t last_line;
  LineKind kind;      // kProse, kListItem (a list), kCode, kTable, kHeading, kSeparator
};

class Document {
 public:
  // Throws InvalidUtf8Error when options.invalid_utf8 is kReject and the text is not valid UTF-8.
  Document(std::string_view text, const Options& options);

  std::string_view text() const { return text_; }
  const std::vector<Line>& lines() const { return lines_; }
  const std::vector<Block>& blocks() const { return blocks_; }
  const std::vector<Heading>& headings() const { return headings_; }
  // Per heading: (rank of its family by first appearance, level); smaller is outer.
  const std::vector<std::pair<int, int>>& heading_keys() const { return heading_keys_; }
  size_t typical_width() const { return typical_width_; }
  bool is_content(size_t line) const { return !lines_[line].dropped && lines_[line].kind != LineKind::kBlank; }

  // The index of the line whose [begin, next) holds `offset` (offset < text.size()).
  size_t line_of(size_t offset) const;
  // The cleaned text of the byte span [s, e): see chunker.h.
  std::string clean(size_t s, size_t e) const;
  // Appends the visible characters of [a, b) (escapes and controls removed, invalid bytes U+FFFD).
  void append_visible(size_t a, size_t b, std::string& out) const;

 private:
  void split_lines();
  void drop_running_lines();
  void classify();
  void compute_joins();
  void build_blocks();
  Join inline_join(const Line& p, const Line& q) const;
  bool ends_with_initial(const Line& p) const;

  std::string_view text_;
  std::vector<Line> lines_;
  std::vector<Block> blocks_;
  std::vector<Heading> headings_;
  std::vector<std::pair<int, int>> heading_keys_;
  size_t typical_width_ = 70;
};

bool is_prose_like(LineKind k);
bool ends_sentence(const Line& line);

}  // namespace abridge::chunker::detail
