#include "pipeline/path_walk.h"

#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "base/error.h"

namespace abridge::pipeline {
namespace {

constexpr int kMaxLinks = 40;  // as the kernel's path walk (MAXSYMLINKS)

[[noreturn]] void fail(const std::string& what, int err) { throw Error(what + ": " + std::strerror(err)); }

// The non-empty components of a path ("a//b/" -> a, b).
std::deque<std::string> components(const std::string& p) {
  std::deque<std::string> out;
  size_t start = 0;
  while (start < p.size()) {
    size_t slash = p.find('/', start);
    if (slash == std::string::npos) slash = p.size();
    if (slash > start) out.push_back(p.substr(start, slash - start));
    start = slash + 1;
  }
  return out;
}

std::string join(const std::string& walked, const std::string& c) {
  if (walked.empty()) return c;
  return walked.back() == '/' ? walked + c : walked + "/" + c;
}

bool same_file(int fd, const struct stat* other) {
  struct stat st {};
  return other && ::fstat(fd, &st) == 0 && st.st_dev == other->st_dev && st.st_ino == other->st_ino;
}

Fd open_start(bool absolute, const std::string& path) {
  Fd fd(::open(absolute ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd.ok()) fail(path + (absolute ? ": cannot open /" : ": cannot open the working directory"), errno);
  return fd;
}

}  // namespace

bool link_owner_trusted(uid_t uid) { return uid == 0 || uid == ::geteuid(); }

WalkedPath walk_path(const std::string& path, bool follow_last, const struct stat* fence) {
  if (path.empty()) throw Error("an empty path");
  std::deque<std::string> todo = components(path);
  if (todo.empty()) todo.push_back(".");  // "/"
  Fd dir = open_start(path[0] == '/', path);
  bool fenced = same_file(dir.get(), fence);
  std::string walked = path[0] == '/' ? "/" : "";  // the folders opened so far, for messages
  int links = 0;
  // "PATH: reason", or "PATH: its folder F: reason" when the fault is on the way.
  auto at = [&](const std::string& here) { return here == path ? path : path + ": " + here; };
  for (;;) {
    const std::string c = std::move(todo.front());
    todo.pop_front();
    const bool last = todo.empty();
    const std::string here = join(walked, c);
    struct stat st {};
    if (::fstatat(dir.get(), c.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT && last) return {std::move(dir), c, false, {}};
      fail(at(here), errno);
    }
    if (S_ISLNK(st.st_mode) && (!last || follow_last)) {
      // The link itself, opened once: its owner and its target are read from that descriptor.
      Fd link(::openat(dir.get(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
      struct stat lst {};
      if (!link.ok() || ::fstat(link.get(), &lst) != 0) fail(at(here), errno);
      if (!S_ISLNK(lst.st_mode)) throw Error(at(here) + ": changed while it was opened");
      if (fenced)
        throw Error(at(here) + ": a symbolic link inside OUT_DIR: not followed (nothing inside OUT_DIR is)");
      if (!link_owner_trusted(lst.st_uid))
        throw Error(at(here) + ": a symbolic link that belongs to another user (uid " + std::to_string(lst.st_uid) +
                    "): not followed (only links of root or of the user running abridge, uid " +
                    std::to_string(::geteuid()) + ", are)");
      if (++links > kMaxLinks) fail(at(here), ELOOP);
      char buf[PATH_MAX];
      const ssize_t n = ::readlinkat(link.get(), "", buf, sizeof buf);
      if (n <= 0 || static_cast<size_t>(n) >= sizeof buf) fail(at(here) + ": cannot read the symbolic link", n < 0 ? errno : ENAMETOOLONG);
      const std::string target(buf, static_cast<size_t>(n));
      const std::deque<std::string> parts = components(target);
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) todo.push_front(*it);
      if (todo.empty()) todo.push_back(".");  // a link to "/"
      if (target[0] == '/') {
        dir = open_start(true, path);
        walked = "/";
        fenced = same_file(dir.get(), fence);
      }
      continue;
    }
    if (last) {
      // Readable where it can be, so that the caller can fsync it after a rename in it.
      Fd readable(::openat(dir.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (readable.ok()) dir = std::move(readable);
      return {std::move(dir), c, true, st};
    }
    if (!S_ISDIR(st.st_mode)) throw Error(at(here) + ": not a folder");
    Fd next(::openat(dir.get(), c.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.ok()) {
      if (errno == ELOOP || errno == ENOTDIR) throw Error(at(here) + ": changed while it was opened");
      fail(at(here), errno);
    }
    dir = std::move(next);
    walked = here;
    fenced = fenced || same_file(dir.get(), fence);
  }
}

}  // namespace abridge::pipeline
