// Bounded reads of the files abridge is told to read: model files (config.json, tokenizer.json, the
// safetensors index), prompts, option files and documents. The engine is the lowest library that reads
// files, so the rule lives here once and the pipeline uses it too.
//
// A file is opened once; every check is made on that descriptor, never on the path again (a file
// swapped for a link to /dev/zero after a check is not read). O_NONBLOCK on open, so a FIFO is never
// waited on; only regular files are read, and only up to a size bound that fits their kind. JSON is
// parsed with its nesting depth bounded, so a hostile file cannot exhaust the stack, and its error
// messages are one short line.
#pragma once

#include <fcntl.h>

#include <cstddef>
#include <iosfwd>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

namespace abridge::engine {

// Size bounds by kind of file (a real Qwen3 tokenizer.json is 11 MB, its config.json 1 KB).
inline constexpr size_t kMaxTokenizerJsonBytes = size_t{64} << 20;
inline constexpr size_t kMaxConfigJsonBytes = size_t{16} << 20;
inline constexpr size_t kMaxPromptBytes = size_t{1} << 20;
inline constexpr size_t kMaxOptionFileBytes = size_t{1} << 20;
// Nesting of the JSON files abridge reads: real ones are at most 6 deep.
inline constexpr int kMaxJsonDepth = 64;

// Reads the regular file `path` (relative to the directory descriptor `dir_fd` when it is not
// AT_FDCWD), at most `max_bytes` bytes. `no_follow`: a symbolic link as the last component is refused
// (O_NOFOLLOW). Throws abridge::Error with the reason alone, without the path (the caller names it
// once): "no such file", "is a directory", "not a regular file (a FIFO, device or socket is not read)",
// "cannot open: Permission denied", "too large (1.9 MiB; the limit is 1.0 MiB)" (too_large_message).
std::string read_regular_file(const std::string& path, size_t max_bytes, bool no_follow = false,
                              int dir_fd = AT_FDCWD);

// The same checks and read on a descriptor already open for reading (left open). Returns the bytes of
// the file as it is now: if it shrinks while read, what is there; it never reads past `max_bytes`, and
// never more than the size fstat() gave (a file that grows is read to that size).
std::string read_regular_fd(int fd, size_t max_bytes);

// Reads `in` (standard input: a pipe, a terminal, /dev/zero) to its end, at most `max_bytes`: one byte
// more is abridge::Error("too large (more than 64.0 MiB)"), so an endless stream is refused at the bound
// instead of filling memory.
std::string read_stream_bounded(std::istream& in, size_t max_bytes);

// A size for a message: "N bytes" below 1 MiB, else MiB with one decimal ("1.9 MiB").
std::string format_bytes(unsigned long long bytes);

// "too large (N MiB; the limit is M MiB)", the one wording for size bounds (format_bytes; both in
// bytes when they would read the same).
std::string too_large_message(unsigned long long bytes, size_t max_bytes);

// Parses JSON text whose arrays and objects nest at most `max_depth` deep, rejecting NUL bytes (and
// duplicate object keys when `unique_keys`: nlohmann keeps the last one silently). Throws
// abridge::Error("not valid JSON: ...") with one line of at most about 300 bytes.
nlohmann::json parse_json_bounded(std::string_view text, int max_depth = kMaxJsonDepth, bool unique_keys = false);

// `s` made safe for a one-line message: control characters (is_display_control(): C0 and C1 controls,
// U+2028/U+2029, bidi controls; with `escape_non_ascii`, every byte of 0x80 and above) as
// \xNN, at most `limit` bytes of it (escapes counted), cut at a character boundary with "..." after.
std::string one_line(std::string_view s, size_t limit, bool escape_non_ascii = false);

}  // namespace abridge::engine
