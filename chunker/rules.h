// The sentence rule over visible characters (internal): shared by split_sentences() and the chunker,
// which feeds it the characters of one block with dropped lines and escape sequences left out.
//
// The characters are read forward by a cursor, never gathered: a paragraph may be the whole document
// (a text without blank lines), and a vector of its characters would take 16 bytes per character.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace abridge::chunker::detail {

// The byte ranges a cursor reads, in order: piece k is [begin, end) of the text, or skipped (a line
// left out), or past the last one.
class Pieces {
 public:
  enum Kind { kPiece, kSkip, kEnd };
  virtual ~Pieces() = default;
  virtual Kind piece(size_t k, size_t& begin, size_t& end) const = 0;
};

// The visible characters of the pieces, one at a time: escape sequences and invisible characters left
// out, '\r' and '\f' read as '\n', and one '\n' (at the next piece's first byte) between two pieces.
// Copies are independent cursors (a look ahead). `text` and `pieces` must outlive it.
class VisCursor {
 public:
  VisCursor(std::string_view text, const Pieces& pieces);
  bool done() const { return done_; }
  char32_t cp() const { return cp_; }          // the character (not done())
  size_t offset() const { return offset_; }    // its byte offset in the text
  size_t index() const { return index_; }      // how many characters come before it
  void next();

 private:
  void settle();       // onto the next visible character at or after pos_, or to the end
  bool enter_next();   // onto the next piece; false at the end

  std::string_view text_;
  const Pieces* pieces_;
  size_t piece_ = 0;        // the piece being read (the one after a separator)
  size_t pos_ = 0, end_ = 0;
  bool entered_ = false;    // a piece was entered: the next one is preceded by a '\n'
  bool separator_ = false;  // at the '\n' before piece_
  bool done_ = false;
  char32_t cp_ = 0;
  size_t offset_ = 0;
  uint32_t len_ = 0;        // bytes of the character (0 for a separator)
  size_t index_ = 0;
};

// Appends to `ends` the offsets of the characters that start a new sentence (never the first one).
void sentence_starts(VisCursor cursor, std::vector<size_t>& ends);

}  // namespace abridge::chunker::detail
