#include "pipeline/discovery.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <istream>
#include <map>
#include <optional>
#include <sstream>

#include "base/error.h"
#include "base/fd.h"
#include "base/file.h"
#include "base/hash.h"
#include "pipeline/run_report.h"
#include "pipeline/summarize.h"

namespace abridge::pipeline {
namespace {

struct Identity {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const Identity&) const = default;
};

Identity identity(const struct stat& st) { return {st.st_dev, st.st_ino}; }

std::string file_name(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

std::string lower_ext(const std::string& name) {
  const size_t dot = name.find_last_of('.');
  if (dot == std::string::npos || dot == 0) return "";
  std::string e = name.substr(dot);
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e;
}

bool supported(const std::string& name) {
  const std::string e = lower_ext(name);
  return e == ".txt" || e == ".md" || e == ".pdf";
}

bool glob_match(const std::vector<std::string>& globs, const std::string& rel) {
  const std::string base = file_name(rel);
  for (const auto& g : globs)
    if (fnmatch(g.c_str(), rel.c_str(), 0) == 0 || fnmatch(g.c_str(), base.c_str(), 0) == 0) return true;
  return false;
}

std::string join(const std::string& root, const std::string& rel) {
  if (root.empty() || root.back() == '/') return root + rel;
  return root + "/" + rel;
}

// The path of an open descriptor, from /proc (empty when /proc cannot tell).
std::string fd_path(int fd) {
  char buf[PATH_MAX + 1];
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  if (n <= 0 || static_cast<size_t>(n) >= sizeof buf - 1) return "";
  return std::string(buf, static_cast<size_t>(n));
}

bool is_under(const std::string& path, const std::string& dir) {
  if (dir == "/") return !path.empty() && path[0] == '/';
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/';
}

// Opens `rel` under the folder `root_fd` with `flags`, following links only while they stay inside it.
// openat2's RESOLVE_BENEATH does that in the kernel; it refuses absolute links even when they point
// inside, and older kernels (or seccomp filters) lack it: then the file is opened as O_PATH (no device
// is opened, nothing is read), its real path is checked against the folder's, and it is opened again
// through /proc from that descriptor, so what is checked is what is read. -1 with errno on failure
// (EXDEV: outside the folder).
int open_beneath(int root_fd, const std::string& rel, int flags) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  const long fd = ::syscall(SYS_openat2, root_fd, rel.c_str(), &how, sizeof how);
  if (fd >= 0) return static_cast<int>(fd);
  if (errno != EXDEV && errno != ENOSYS && errno != EPERM && errno != E2BIG) return -1;
  Fd p(::openat(root_fd, rel.c_str(), O_PATH | O_CLOEXEC));
  if (p.get() < 0) return -1;
  const std::string real = fd_path(p.get()), root_real = fd_path(root_fd);
  if (real.empty() || root_real.empty() || !is_under(real, root_real)) {
    errno = EXDEV;
    return -1;
  }
  if (flags & O_PATH) return p.release();
  return ::open(("/proc/self/fd/" + std::to_string(p.get())).c_str(), flags | O_CLOEXEC);
}

// The search bits (group 0010, others 0001) that pass every folder from / down to `dir` and `dir`
// itself: who can reach what is in it. 0 when its real path cannot be known (the summary stays private).
mode_t path_reach(const std::string& dir, std::map<std::string, mode_t>& cache) {
  if (const auto it = cache.find(dir); it != cache.end()) return it->second;
  mode_t reach = 0;
  if (char* real = ::realpath(dir.c_str(), nullptr)) {
    const std::string r = real;
    ::free(real);
    reach = 0011;
    for (size_t end = 0; reach != 0 && end != std::string::npos;) {
      end = r.find('/', end + 1);
      const std::string prefix = r.substr(0, end == std::string::npos ? r.size() : end);
      struct stat st {};
      if (::stat(prefix.empty() ? "/" : prefix.c_str(), &st) != 0) reach = 0;
      else reach &= st.st_mode & 0011;
    }
  }
  return cache[dir] = reach;
}

std::string parent_of(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : p.substr(0, slash);
}

// A folder's group and other read and search bits (0055) that can be used by whoever `reach` lets in.
mode_t reachable_bits(mode_t folder, mode_t reach) {
  return folder & (((reach & 0010) ? 0050 : 0) | ((reach & 0001) ? 0005 : 0));
}

// Why a path (or the link at it) cannot be followed, without the path.
std::string reach_reason(int e, bool link, const std::string& root) {
  switch (e) {
    case EXDEV:
      return "a symbolic link to a file outside " + root +
             ": not followed (links are followed only inside the directory given; name the file itself "
             "to summarize it)";
    case ELOOP: return "a symbolic link loop";
    case ENOENT: return link ? "a broken symbolic link (its target does not exist)" : "no such file or directory";
    case ENAMETOOLONG: return "the path is too long (" + std::string(std::strerror(e)) + ")";
    default: return std::string(link ? "cannot follow the symbolic link: " : "cannot open: ") + std::strerror(e);
  }
}

// Whether the folder is an OUT_DIR: it holds abridge's state folder.
bool holds_state(int dirfd) {
  struct stat state {};
  return ::fstatat(dirfd, ".abridge", &state, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(state.st_mode);
}

constexpr const char* kNotRegular = "not a regular file (a FIFO, device or socket is not read)";
constexpr const char* kOurOutputs = "abridge's outputs are never its inputs";

class Discovery {
 public:
  Discovery(const SummarizeOptions& o, DiscoveredInputs& d) : o_(o), d_(d) {
    struct stat st {};
    if (!o.out_dir.empty() && ::stat(o.out_dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      out_ = identity(st);
      if (char* real = ::realpath(o.out_dir.c_str(), nullptr)) {
        out_real_ = real;
        ::free(real);
      }
    }
  }

  void named(const std::string& a) {
    struct stat st {};
    if (::stat(a.c_str(), &st) != 0) {
      const int e = errno;
      struct stat lst {};
      const bool link = ::lstat(a.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode);
      bad(a, file_name(a), e == ENOENT && !link ? "no such file or directory" : reach_reason(e, link, ""));
      return;
    }
    if (S_ISDIR(st.st_mode)) return directory(a, st);
    if (!supported(file_name(a))) {
      bad(a, file_name(a), "unsupported file type \"" + lower_ext(file_name(a)) + "\" (abridge reads .txt, .md and .pdf)");
      return;
    }
    if (!S_ISREG(st.st_mode)) return bad(a, file_name(a), kNotRegular);
    if (inside_out_dir(a)) return bad(a, file_name(a), std::string("lies inside OUT_DIR: ") + kOurOutputs);
    const std::string rel = file_name(a);
    if (keep(rel))
      d_.inputs.push_back({a, rel, "", {}, {}, static_cast<int64_t>(st.st_size), st.st_dev, st.st_ino,
                           static_cast<mode_t>(st.st_mode & 07777), real_reach(a), {}});
  }

 private:
  bool keep(const std::string& rel) const {
    if (!o_.include.empty() && !glob_match(o_.include, rel)) return false;
    return !glob_match(o_.exclude, rel);
  }

  void bad(const std::string& path, const std::string& rel, const std::string& reason) {
    d_.bad.push_back({path, rel, reason});
  }

  // Who can reach the folder a file really is in (its link, if it is one, followed).
  mode_t real_reach(const std::string& file) {
    char* real = ::realpath(file.c_str(), nullptr);
    if (!real) return 0;
    const std::string r = real;
    ::free(real);
    return path_reach(parent_of(r), reach_cache_);
  }

  bool inside_out_dir(const std::string& path) const {
    if (out_real_.empty()) return false;
    char* real = ::realpath(path.c_str(), nullptr);
    if (!real) return false;
    const std::string r = real;
    ::free(real);
    return r == out_real_ || is_under(r, out_real_);
  }

  void directory(const std::string& a, const struct stat& st) {
    if ((out_ && *out_ == identity(st)) || inside_out_dir(a))
      return bad(a, file_name(a), std::string("is OUT_DIR or inside it: ") + kOurOutputs);
    Fd root(::open(a.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK));
    if (root.get() < 0) return bad(a, file_name(a), std::string("cannot open the folder: ") + std::strerror(errno));
    if (holds_state(root.get())) {  // as below the top, where such a folder is not entered
      d_.skipped.push_back({a, file_name(a), "skipped: an abridge output folder (holds .abridge)"});
      return;
    }
    root_ = a;
    root_fd_ = root.get();
    ancestors_ = {identity(st)};
    folder_modes_.clear();
    reach_ = path_reach(a, reach_cache_);
    walk(root.get(), "", 0);
  }

  // The entries of folder `dirfd` (at `prefix` below the root), sorted by name; subfolders in place.
  void walk(int dirfd, const std::string& prefix, int depth) {
    std::vector<std::string> names;
    {
      const int dup = ::dup(dirfd);
      DIR* dir = dup >= 0 ? ::fdopendir(dup) : nullptr;
      if (!dir) {
        if (dup >= 0) ::close(dup);
        return bad(join(root_, prefix), prefix, std::string("cannot read the folder: ") + std::strerror(errno));
      }
      for (;;) {
        errno = 0;
        const dirent* e = ::readdir(dir);
        if (!e) break;
        const std::string name = e->d_name;
        if (name != "." && name != "..") names.push_back(name);
      }
      const int e = errno;
      ::closedir(dir);
      if (e != 0) bad(join(root_, prefix), prefix, std::string("cannot read the folder: ") + std::strerror(e));
    }
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      const std::string rel = prefix.empty() ? name : prefix + "/" + name;
      const std::string path = join(root_, rel);
      struct stat lst {};
      if (::fstatat(dirfd, name.c_str(), &lst, AT_SYMLINK_NOFOLLOW) != 0) {
        if (supported(name) && keep(rel)) bad(path, rel, reach_reason(errno, false, root_));
        continue;
      }
      if (S_ISDIR(lst.st_mode)) {
        folder(dirfd, name, rel, path, lst, depth);
        continue;
      }
      if (!supported(name) || !keep(rel)) continue;
      if (rel.size() >= PATH_MAX) {
        bad(path, rel, "the path is longer than PATH_MAX (" + std::to_string(PATH_MAX) + " bytes)");
        continue;
      }
      struct stat st = lst;
      mode_t reach = reach_;
      if (S_ISLNK(lst.st_mode)) {
        Fd target(open_beneath(root_fd_, rel, O_PATH));
        if (target.get() < 0 || ::fstat(target.get(), &st) != 0) {
          bad(path, rel, reach_reason(errno, true, root_));
          continue;
        }
        if (S_ISDIR(st.st_mode)) continue;  // a link to a folder is not descended
        reach &= real_reach(fd_path(target.get()));  // the folder the file really is in
      }
      if (!S_ISREG(st.st_mode)) {
        bad(path, rel, kNotRegular);
        continue;
      }
      d_.inputs.push_back({path, rel, root_, {}, {}, static_cast<int64_t>(st.st_size), st.st_dev, st.st_ino,
                           static_cast<mode_t>(st.st_mode & 07777), reach, folder_modes_});
    }
  }

  void folder(int dirfd, const std::string& name, const std::string& rel, const std::string& path,
              const struct stat& st, int depth) {
    if (!o_.recursive || name[0] == '.') return;   // hidden folders, our own .abridge among them
    if (out_ && *out_ == identity(st)) return;      // OUT_DIR inside an input directory
    const bool excluded = glob_match(o_.exclude, rel) || glob_match(o_.exclude, rel + "/");
    auto refuse = [&](const std::string& why) {
      if (!excluded) bad(path, rel, why);
    };
    if (rel.size() >= PATH_MAX) return refuse("a folder whose path is longer than PATH_MAX: not entered");
    if (depth + 1 > kMaxFolderDepth)
      return refuse("more than " + std::to_string(kMaxFolderDepth) + " folders deep: not entered");
    if (std::find(ancestors_.begin(), ancestors_.end(), identity(st)) != ancestors_.end())
      return refuse("a folder that contains itself (a bind mount?): not entered");
    Fd sub(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
    if (sub.get() < 0) return refuse(std::string("cannot open the folder: ") + std::strerror(errno));
    if (holds_state(sub.get())) return;  // another run's OUT_DIR: its files are summaries
    ancestors_.push_back(identity(st));
    folder_modes_.push_back(reachable_bits(st.st_mode, reach_));
    const mode_t above = reach_;
    reach_ &= st.st_mode & 0011;
    walk(sub.get(), rel, depth + 1);
    reach_ = above;
    folder_modes_.pop_back();
    ancestors_.pop_back();
  }

  const SummarizeOptions& o_;
  DiscoveredInputs& d_;
  std::optional<Identity> out_;
  std::string out_real_;
  std::string root_;  // the directory being walked, as given
  int root_fd_ = -1;
  std::vector<Identity> ancestors_;
  std::vector<mode_t> folder_modes_;  // of the folders below the root being walked (SummaryInput::folder_modes)
  mode_t reach_ = 0;                  // who can reach the folder being walked (SummaryInput::reach)
  std::map<std::string, mode_t> reach_cache_;  // path_reach() of folders already looked at
};

}  // namespace

DiscoveredInputs discover_inputs(const SummarizeOptions& o, std::istream& in) {
  DiscoveredInputs d;
  std::vector<std::string> args;
  for (const auto& a : o.inputs) {
    if (a != "-") {
      args.push_back(a);
      continue;
    }
    // The list is bounded (64 MiB: a million long paths) so that /dev/zero or an endless pipe is refused,
    // not read until memory runs out.
    std::string list;
    try {
      list = read_stream_bounded(in, kMaxStdinListBytes);
    } catch (const Error& e) {
      throw Error(std::string("-: the paths on standard input: ") + e.what());
    }
    std::istringstream lines(list);
    std::string line;
    while (std::getline(lines, line)) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (!line.empty()) args.push_back(line);
    }
  }
  Discovery discovery(o, d);
  for (const auto& a : args) discovery.named(a);

  const std::string ext = o.format == "json" ? "json" : o.format == "txt" ? "txt" : "md";
  std::vector<SummaryInput> kept;
  std::map<std::string, size_t> owner;  // output_rel -> index in `kept`
  for (SummaryInput& i : d.inputs) {
    i.output_rel = i.rel + ".summary." + ext;
    i.output = std::filesystem::path(o.out_dir) / i.output_rel;
    const auto [it, fresh] = owner.emplace(i.output_rel, kept.size());
    if (fresh) {
      kept.push_back(std::move(i));
      continue;
    }
    const SummaryInput& first = kept[it->second];
    if (first.device == i.device && first.inode == i.inode) continue;  // the same file, named twice
    d.bad.push_back({i.path, i.rel,
                     "would write the same output as " + first.path + " (" + i.output.string() +
                         "): not summarized; rename one, or summarize them into different output directories"});
  }
  d.inputs = std::move(kept);
  return d;
}

int open_input(const SummaryInput& input) {
  const int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
  if (input.root.empty()) {
    const int fd = ::open(input.path.c_str(), flags);
    if (fd < 0) {
      const int e = errno;
      throw Error(e == ENOENT ? std::string("no such file") : reach_reason(e, false, ""));
    }
    return fd;
  }
  Fd root(::open(input.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK));
  if (root.get() < 0) throw Error(input.root + ": cannot open the folder: " + std::strerror(errno));
  const int fd = open_beneath(root.get(), input.rel, flags);
  if (fd < 0) {
    const int e = errno;
    struct stat lst {};
    const bool link = ::fstatat(root.get(), input.rel.c_str(), &lst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(lst.st_mode);
    throw Error(e == ENOENT && !link ? std::string("no such file") : reach_reason(e, link || e == EXDEV, input.root));
  }
  return fd;
}

std::pair<int64_t, int64_t> parse_shard(const std::string& spec) {
  const size_t slash = spec.find('/');
  try {
    if (slash == std::string::npos) throw std::invalid_argument(spec);
    size_t u1 = 0, u2 = 0;
    const long long k = std::stoll(spec.substr(0, slash), &u1), n = std::stoll(spec.substr(slash + 1), &u2);
    if (u1 != slash || u2 != spec.size() - slash - 1 || n < 1 || k < 0 || k >= n) throw std::invalid_argument(spec);
    return {k, n};
  } catch (const std::exception&) {
    throw Error("--shard must be K/N with 0 <= K < N (e.g. 0/8), not \"" + shown_path(spec) + "\"");
  }
}

int64_t shard_of(const std::string& rel, int64_t n) {
  return static_cast<int64_t>(fnv1a64(rel) % static_cast<uint64_t>(n));  // stable across machines and builds
}

void keep_shard(DiscoveredInputs& found, const std::string& spec) {
  if (spec.empty()) return;
  const auto [k, n] = parse_shard(spec);
  auto mine = [&](const std::string& key) { return shard_of(key, n) == k; };
  std::erase_if(found.inputs, [&](const SummaryInput& i) { return !mine(i.rel); });
  std::erase_if(found.bad, [&](const BadInput& b) { return !mine(b.rel); });
  std::erase_if(found.skipped, [&](const BadInput& b) { return !mine(b.rel); });
}

}  // namespace abridge::pipeline
