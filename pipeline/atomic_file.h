// Writing outputs so that a crash never leaves a half-written file: temp file, fsync, rename,
// fsync the directory.
#pragma once

#include <string>
#include <string_view>

namespace abridge::pipeline {

// Throws abridge::Error naming the path on failure; the temporary file is removed then.
void write_file_atomic(const std::string& path, std::string_view bytes);

}  // namespace abridge::pipeline
