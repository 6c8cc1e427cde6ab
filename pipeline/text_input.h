// Reading a document's text from disk.
#pragma once

#include <string>

namespace abridge::pipeline {

// Reads a text file as UTF-8. A UTF-8 BOM is dropped; a UTF-16 (LE or BE) BOM means the file is decoded
// from UTF-16. Anything that is not valid UTF-8 afterwards is rejected: abridge::Error("PATH: invalid
// UTF-8 at byte N"). The file is opened once and must be a regular file (a FIFO or a device such as
// /dev/zero is refused, never waited on); files larger than `max_bytes` are rejected before they are read.
// Every error names the path once: "PATH: reason".
std::string read_text_file(const std::string& path, size_t max_bytes = size_t{1} << 31);

}  // namespace abridge::pipeline
