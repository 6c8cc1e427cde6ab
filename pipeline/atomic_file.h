// Writing outputs so that a crash never leaves a half-written file: temp file, fsync, rename,
// fsync the directory.
#pragma once

#include <string>
#include <string_view>

namespace abridge::pipeline {

// Throws abridge::Error naming the path on failure; the temporary file is removed then.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Removes the temporary files that write_file_atomic leaves when a process is killed mid-write
// (NAME.tmp.PID) anywhere under `dir`. Call it only while holding the directory's run lock, so no
// live writer is interrupted. Returns how many were removed.
size_t remove_stale_temp_files(const std::string& dir);

}  // namespace abridge::pipeline
