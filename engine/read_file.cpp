#include "engine/read_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <istream>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <vector>

#include "base/error.h"
#include "base/utf8.h"

namespace abridge::engine {
namespace {

struct Closer {
  int fd;
  ~Closer() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::string format_bytes(unsigned long long bytes) {
  if (bytes < (1ull << 20)) return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes");
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / static_cast<double>(1ull << 20));
  return buf;
}

std::string too_large_message(unsigned long long bytes, size_t max_bytes) {
  std::string size = format_bytes(bytes), limit = format_bytes(max_bytes);
  if (size == limit) {  // 1 MiB and one byte against 1 MiB: the bytes tell them apart
    size = std::to_string(bytes) + " bytes";
    limit = std::to_string(max_bytes) + " bytes";
  }
  return "too large (" + size + "; the limit is " + limit + ")";
}

std::string read_regular_fd(int fd, size_t max_bytes) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw Error(std::string("cannot stat: ") + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw Error("is a directory");
  if (!S_ISREG(st.st_mode)) throw Error("not a regular file (a FIFO, device or socket is not read)");
  if (st.st_size < 0 || static_cast<unsigned long long>(st.st_size) > max_bytes)
    throw Error(too_large_message(static_cast<unsigned long long>(st.st_size), max_bytes));
  // A FIFO was opened without blocking; reads of a regular file block as usual.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK)) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(std::string("read error: ") + std::strerror(errno));
    if (n == 0) break;  // it shrank while read: what is there
    got += static_cast<size_t>(n);
  }
  bytes.resize(got);
  return bytes;
}

std::string read_stream_bounded(std::istream& in, size_t max_bytes) {
  std::string bytes;
  char buf[1 << 16];
  while (in) {
    in.read(buf, sizeof buf);
    const auto n = static_cast<size_t>(in.gcount());
    if (n == 0) break;
    if (bytes.size() + n > max_bytes) throw Error("too large (more than " + format_bytes(max_bytes) + ")");
    bytes.append(buf, n);
  }
  if (in.bad()) throw Error("read error");
  return bytes;
}

std::string read_regular_file(const std::string& path, size_t max_bytes, bool no_follow, int dir_fd) {
  const int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | (no_follow ? O_NOFOLLOW : 0);
  const int fd = ::openat(dir_fd, path.c_str(), flags);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) throw Error("no such file");
    if (e == ELOOP && no_follow) throw Error("a symbolic link (not followed here)");
    if (e == ELOOP) throw Error("a symbolic link loop");
    // open(2) of a socket, or of a device node with no driver behind it, fails with ENXIO ("No such
    // device or address"): say what the file is instead (only named here, nothing is opened).
    struct stat st {};
    if (e == ENXIO && ::fstatat(dir_fd, path.c_str(), &st, no_follow ? AT_SYMLINK_NOFOLLOW : 0) == 0 &&
        !S_ISREG(st.st_mode))
      throw Error(S_ISSOCK(st.st_mode) ? "not a regular file (a socket; a FIFO, device or socket is not read)"
                                       : "not a regular file (a FIFO, device or socket is not read)");
    throw Error(std::string("cannot open: ") + std::strerror(e));
  }
  Closer closer{fd};
  return read_regular_fd(fd, max_bytes);
}

std::string one_line(std::string_view s, size_t limit, bool escape_non_ascii) {
  // The limit is on what is shown: an escaped byte takes four.
  std::string out;
  size_t i = 0;
  uint32_t run = 0;  // bytes left of a display control (U+009B, U+202E, ...): escaped like a C0 control
  for (; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (run == 0 && c >= 0x80 && !escape_non_ascii) {
      const Utf8Char u = decode_utf8(s, i);
      if (u.valid && is_display_control(u.cp)) run = u.len;
    }
    const bool escape = c < 0x20 || c == 0x7f || (escape_non_ascii && c >= 0x80) || run > 0;
    if (run > 0) --run;
    if (out.size() + (escape ? 4 : 1) > limit) break;
    if (escape) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (i == s.size()) return out;
  // Cut at a character boundary: no half of a UTF-8 sequence before the "...".
  if (!escape_non_ascii) {
    size_t n = out.size();
    while (n > 0 && (static_cast<unsigned char>(out[n - 1]) & 0xC0) == 0x80) --n;
    if (n > 0 && static_cast<unsigned char>(out[n - 1]) >= 0xC0) {
      const auto lead = static_cast<unsigned char>(out[n - 1]);
      const size_t len = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
      if (out.size() - (n - 1) < len) out.resize(n - 1);
    }
  }
  return out + "...";
}

nlohmann::json parse_json_bounded(std::string_view text, int max_depth, bool unique_keys) {
  using nlohmann::json;
  if (text.find('\0') != std::string_view::npos) throw Error("not valid JSON: it holds a NUL byte");
  std::vector<std::unordered_set<std::string>> keys;  // one set per open object (unique_keys)
  // nlohmann's parser keeps its own stack on the heap, but what is done with a value afterwards
  // (dump() in a message, recursive visits) recurses: the depth is bounded where a bracket opens.
  const json::parser_callback_t callback = [&](int depth, json::parse_event_t event, json& parsed) {
    using E = json::parse_event_t;
    if ((event == E::object_start || event == E::array_start) && depth >= max_depth)
      throw Error("not valid JSON: nested more than " + std::to_string(max_depth) + " levels deep");
    if (!unique_keys) return true;
    if (event == E::object_start) keys.emplace_back();
    if (event == E::object_end) keys.pop_back();
    if (event == E::key && !keys.back().insert(parsed.get<std::string>()).second)
      throw Error("duplicate JSON key '" + one_line(parsed.get<std::string>(), 120) + "'");
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {
    // nlohmann's message without its "[json.exception.parse_error.101] " prefix; "last read: '...'"
    // can quote a long token.
    std::string_view what = e.what();
    if (what.starts_with("[json.exception.")) {
      const size_t close = what.find("] ");
      if (close != std::string_view::npos) what.remove_prefix(close + 2);
    }
    throw Error("not valid JSON: " + one_line(what, 300, /*escape_non_ascii=*/true));
  }
}

}  // namespace abridge::engine
