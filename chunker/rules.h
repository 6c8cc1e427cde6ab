// The sentence rule over visible characters (internal): shared by split_sentences() and the chunker,
// which feeds it the characters of one block with dropped lines and escape sequences left out.
#pragma once

#include <cstddef>
#include <vector>

namespace abridge::chunker::detail {

struct VisChar {
  char32_t cp;    // '\n' stands for any line break (or page break) inside the block
  size_t offset;  // byte offset of the character in the original text
};

// Appends to `ends` the offsets of the characters that start a new sentence (never chars[0]).
void sentence_starts(const std::vector<VisChar>& chars, std::vector<size_t>& ends);

}  // namespace abridge::chunker::detail
