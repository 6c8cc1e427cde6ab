// The parent (extract_pdf_text) checks the file, forks, and reads the child's two pipes until both close or
// the deadline passes; then it reaps the child and classifies how it ended. The child sets itself up with
// system calls only (fds, limits, signals), runs poppler, writes one result record and leaves with _exit.
//
// Result record, on the child's fd 3: a ResultHeader, then message_size bytes of message, then text_size
// bytes of text. The child's stderr (fd 2) is a second pipe; its tail names the reason when the child dies
// without a record (poppler's allocator prints "Out of memory" and aborts).
#include "pipeline/pdf_extract.h"

#include <fcntl.h>
#include <poll.h>
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-page.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string_view>

#include "engine/error.h"
#include "engine/tokenizer.h"

namespace abridge::pipeline {
namespace {

using Clock = std::chrono::steady_clock;

struct ResultHeader {
  char magic[8];
  uint32_t status;  // PdfStatus
  int32_t pages;
  uint64_t message_size;
  uint64_t text_size;
};
constexpr char kMagic[8] = {'a', 'b', 'r', 'p', 'd', 'f', '1', '\0'};

// How the child ends when it writes no record (0 means a record was written).
constexpr int kExitOutOfMemory = 3;  // std::bad_alloc, or a crash with the address space used up
constexpr int kExitException = 4;    // another exception escaped; its what() went to stderr
constexpr int kExitSetupFailed = 5;  // fds, limits or signals could not be set up
constexpr int kExitWriteFailed = 6;  // the record could not be written (the parent stopped reading)

constexpr int kResultFd = 3;                // the record's fd in the child
constexpr size_t kStderrTail = 4096;        // bytes of the child's stderr the parent keeps
constexpr size_t kMaxMessage = 200;         // bytes of a poppler message quoted in PdfText::message
constexpr size_t kProbeBytes = size_t{1} << 20;  // see on_crash()

// ---- shared helpers -----------------------------------------------------------------------------------

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// Invalid bytes become U+FFFD, one per byte.
std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    const size_t bad = engine::find_invalid_utf8(s);
    if (bad == std::string_view::npos) {
      out.append(s);
      break;
    }
    out.append(s.substr(0, bad));
    out.append("\xEF\xBF\xBD");
    s.remove_prefix(bad + 1);
  }
  return out;
}

// One line of at most kMaxMessage bytes: control characters become spaces, ends trimmed.
std::string one_line(std::string_view s) {
  std::string out;
  for (const char c : s) {
    const bool control = static_cast<unsigned char>(c) < 0x20 || c == 0x7F;
    if (control && (out.empty() || out.back() == ' ')) continue;
    out += control ? ' ' : c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (out.size() > kMaxMessage) {
    size_t cut = kMaxMessage;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;  // not inside a character
    out.resize(cut);
    out += "...";
  }
  return to_valid_utf8(out);
}

// The last non-blank line of `s` through one_line(), or "no reason given".
std::string last_line(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  const size_t nl = s.rfind('\n');
  const std::string line = one_line(nl == std::string_view::npos ? s : s.substr(nl + 1));
  return line.empty() ? "no reason given" : line;
}

PdfText failure(PdfStatus status, const std::string& why, int pages = 0) {
  PdfText r;
  r.status = status;
  r.pages = pages;
  r.message = std::string(to_string(status)) + ": " + why;
  return r;
}

// ---- the child ----------------------------------------------------------------------------------------

// Appends one page's text: '\n' line ends, no blanks at a line's end, no blank lines at the page's end,
// no '\f' (it separates pages) and no NUL.
void append_page(std::string_view raw, std::string& out) {
  const std::string text = to_valid_utf8(raw);
  const size_t page_start = out.size();
  size_t line_start = out.size();
  auto end_line = [&] {
    while (out.size() > line_start && (out.back() == ' ' || out.back() == '\t')) out.pop_back();
    out += '\n';
    line_start = out.size();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;
    if (c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      end_line();
    } else if (c != '\0') {
      out += c;
    }
  }
  while (out.size() > page_start && std::string_view(" \t\n").find(out.back()) != std::string_view::npos)
    out.pop_back();
}

// poppler reports every problem here; the last one before a failure says best why a document did not open.
void keep_poppler_message(const std::string& msg, void* closure) { *static_cast<std::string*>(closure) = msg; }

// poppler-cpp passes messages as "error: REASON" or "error (OFFSET): REASON"; the reason is quoted,
// lower-cased like the rest of the line ("Couldn't read xref table" -> "couldn't read xref table").
std::string poppler_reason(const std::string& msg) {
  const size_t colon = msg.find(": ");
  std::string reason = one_line(msg.rfind("error", 0) == 0 && colon != std::string::npos ? msg.substr(colon + 2) : msg);
  if (reason.size() > 1 && reason[0] >= 'A' && reason[0] <= 'Z' && reason[1] >= 'a' && reason[1] <= 'z')
    reason[0] = static_cast<char>(reason[0] - 'A' + 'a');
  return reason.empty() ? "poppler cannot open it" : reason;
}

PdfText extract_with_poppler(const std::string& path) {
  std::string last_message;
  poppler::set_debug_error_function(keep_poppler_message, &last_message);
  const std::unique_ptr<poppler::document> doc(poppler::document::load_from_file(path));
  if (!doc)
    return failure(PdfStatus::kBroken, last_message.empty() ? std::string("poppler cannot open it")
                                                            : poppler_reason(last_message));
  if (doc->is_locked()) return failure(PdfStatus::kEncrypted, "the document needs a password");
  const int pages = doc->pages();
  if (pages <= 0) return failure(PdfStatus::kBroken, "the document has no pages");

  PdfText r;
  r.pages = pages;
  bool any_text = false;
  for (int i = 0; i < pages; ++i) {
    if (i > 0) r.text += '\f';
    const std::unique_ptr<poppler::page> page(doc->create_page(i));
    if (!page) continue;
    // Reading order as pdftotext gives it by default. physical_layout puts the lines of side-by-side
    // columns on one line; raw_order_layout follows the content stream, breaks lines at every
    // superscript and drops the blank lines between paragraphs that the chunker uses.
    const poppler::byte_array utf8 =
        page->text(poppler::rectf(), poppler::page::non_raw_non_physical_layout).to_utf8();
    const size_t before = r.text.size();
    append_page(std::string_view(utf8.data(), utf8.size()), r.text);
    any_text = any_text || r.text.size() > before;
  }
  if (!any_text)
    return failure(PdfStatus::kNoText,
                   pages == 1 ? std::string("its page has no text")
                              : "none of its " + std::to_string(pages) + " pages has text",
                   pages);
  r.status = PdfStatus::kOk;
  return r;
}

bool write_all(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t w = ::write(fd, p, size);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    size -= static_cast<size_t>(w);
  }
  return true;
}

// The child's virtual memory size (the first field of /proc/self/statm, in pages), or 0 if unknown.
// System calls only.
size_t address_space_bytes() {
  const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[128];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  size_t pages = 0;
  for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; ++i) pages = pages * 10 + (buf[i] - '0');
  return pages * static_cast<size_t>(::getpagesize());
}

// poppler does not check every allocation, so running out of address space can end in a crash rather
// than std::bad_alloc. A crash after which not even kProbeBytes more can be mapped counts as out of memory.
void on_crash(int sig) {
  void* p = ::mmap(nullptr, kProbeBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) ::_exit(kExitOutOfMemory);
  ::raise(sig);  // SA_RESETHAND made the action the default again
}

// Makes the child a clean, limited process: stdin/stdout on /dev/null, stderr and the record on the
// pipes, no other inherited fd (another thread's pipe kept open here would delay that thread's EOF),
// dies with the forking thread, no core dumps, signal handlers as after exec, RLIMIT_AS.
// System calls only.
bool set_up_child(pid_t parent, int result_fd, int stderr_fd, size_t budget) {
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) return false;
  const int result = ::fcntl(result_fd, F_DUPFD, 10), err = ::fcntl(stderr_fd, F_DUPFD, 10);
  const int null = ::open("/dev/null", O_RDWR);
  if (result < 0 || err < 0 || null < 0) return false;
  if (::dup2(null, 0) < 0 || ::dup2(null, 1) < 0 || ::dup2(err, 2) < 0 || ::dup2(result, kResultFd) < 0)
    return false;
  if (::close_range(kResultFd + 1, ~0U, 0) != 0) return false;

  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction old {};
    if (sig == SIGKILL || sig == SIGSTOP || ::sigaction(sig, nullptr, &old) != 0) continue;
    if (old.sa_handler != SIG_IGN) ::signal(sig, SIG_DFL);
  }
  struct sigaction crash {};
  crash.sa_handler = on_crash;
  crash.sa_flags = SA_RESETHAND | SA_NODEFER;
  for (const int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE}) ::sigaction(sig, &crash, nullptr);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  const struct rlimit no_core {0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  // The limit counts from what the child inherited: a caller with a large address space (a CUDA context
  // reserves tens of GiB) would otherwise leave the child no room at all.
  struct rlimit as {};
  if (::getrlimit(RLIMIT_AS, &as) != 0) return false;
  const size_t inherited = address_space_bytes();
  const size_t want = budget > SIZE_MAX - inherited ? SIZE_MAX : inherited + budget;
  as.rlim_cur = as.rlim_max == RLIM_INFINITY ? want : std::min<rlim_t>(want, as.rlim_max);
  return ::setrlimit(RLIMIT_AS, &as) == 0;
}

[[noreturn]] void run_child(const std::string& path, pid_t parent, int result_fd, int stderr_fd, size_t budget) {
  if (!set_up_child(parent, result_fd, stderr_fd, budget)) ::_exit(kExitSetupFailed);
  try {
    const PdfText r = extract_with_poppler(path);
    ResultHeader h{};
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.status = static_cast<uint32_t>(r.status);
    h.pages = r.pages;
    h.message_size = r.message.size();
    h.text_size = r.text.size();
    const bool ok = write_all(kResultFd, &h, sizeof h) && write_all(kResultFd, r.message.data(), r.message.size()) &&
                    write_all(kResultFd, r.text.data(), r.text.size());
    ::_exit(ok ? 0 : kExitWriteFailed);
  } catch (const std::bad_alloc&) {
    ::_exit(kExitOutOfMemory);
  } catch (const std::exception& e) {
    const char* what = e.what();
    write_all(2, what, std::strlen(what));
    ::_exit(kExitException);
  } catch (...) {
    ::_exit(kExitException);
  }
}

// ---- the parent ---------------------------------------------------------------------------------------

// What poppler would report less clearly (or, for a FIFO, block on), found before forking. Empty if the
// file looks like a PDF.
std::string precheck(const std::string& path) {
  const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) return std::string("cannot open: ") + std::strerror(errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return std::string("cannot stat: ") + std::strerror(errno);
  if (S_ISDIR(st.st_mode)) return "is a directory";
  if (!S_ISREG(st.st_mode)) return "not a regular file";
  if (st.st_size == 0) return "empty file";
  // The header may follow some junk; poppler looks in the first 1024 bytes too.
  char head[1024];
  ssize_t n;
  do n = ::pread(fd.get(), head, sizeof head, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) return std::string("cannot read: ") + std::strerror(errno);
  if (::memmem(head, static_cast<size_t>(n), "%PDF-", 5) == nullptr)
    return "not a PDF (no %PDF- header in the first 1024 bytes)";
  return "";
}

// Kills and reaps the child unless it was reaped, so no path out of the parent leaves a zombie.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ~ChildGuard() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  // Waits up to `deadline`; returns false (child still running) on timeout.
  bool wait_until(Clock::time_point deadline, int& status) {
    for (;;) {
      const pid_t w = ::waitpid(pid_, &status, WNOHANG);
      if (w == pid_) {
        pid_ = 0;
        return true;
      }
      if (w < 0 && errno != EINTR) throw Error(std::string("PDF extraction: waitpid failed: ") + std::strerror(errno));
      if (Clock::now() >= deadline) return false;
      ::poll(nullptr, 0, 1);
    }
  }
  int kill_and_reap() {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0) {
      if (errno != EINTR) throw Error(std::string("PDF extraction: waitpid failed: ") + std::strerror(errno));
    }
    pid_ = 0;
    return status;
  }

 private:
  pid_t pid_;
};

bool parse_record(const std::string& bytes, PdfText& r) {
  ResultHeader h;
  if (bytes.size() < sizeof h) return false;
  std::memcpy(&h, bytes.data(), sizeof h);
  const size_t body = bytes.size() - sizeof h;
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 ||
      h.status > static_cast<uint32_t>(PdfStatus::kOutOfMemory) || h.message_size > body ||
      h.text_size != body - h.message_size)
    return false;
  r.status = static_cast<PdfStatus>(h.status);
  r.pages = h.pages;
  r.message.assign(bytes, sizeof h, h.message_size);
  r.text.assign(bytes, sizeof h + h.message_size, h.text_size);
  return true;
}

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

std::string mib(size_t bytes) { return std::to_string((bytes + (size_t{1} << 20) - 1) >> 20) + " MiB"; }

}  // namespace

const char* to_string(PdfStatus s) {
  switch (s) {
    case PdfStatus::kOk: return "ok";
    case PdfStatus::kEncrypted: return "encrypted";
    case PdfStatus::kNoText: return "no text layer (scanned images?)";
    case PdfStatus::kBroken: return "broken PDF";
    case PdfStatus::kTimeout: return "timed out";
    case PdfStatus::kOutOfMemory: return "out of memory";
  }
  return "unknown";
}

PdfText extract_pdf_text(const std::string& path, const PdfLimits& limits) {
  if (const std::string why = precheck(path); !why.empty()) return failure(PdfStatus::kBroken, why);

  // Deadline first, so that the fork counts too. NaN or negative means no time at all; a week is forever.
  const double timeout = std::clamp(std::isnan(limits.timeout_seconds) ? 0.0 : limits.timeout_seconds, 0.0, 604800.0);
  const Clock::time_point deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout));

  int result_pipe[2], stderr_pipe[2];
  if (::pipe2(result_pipe, O_CLOEXEC) != 0)
    throw Error(std::string("PDF extraction: pipe failed: ") + std::strerror(errno));
  Fd result_read(result_pipe[0]), result_write(result_pipe[1]);
  if (::pipe2(stderr_pipe, O_CLOEXEC) != 0)
    throw Error(std::string("PDF extraction: pipe failed: ") + std::strerror(errno));
  Fd stderr_read(stderr_pipe[0]), stderr_write(stderr_pipe[1]);

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw Error(std::string("PDF extraction: fork failed: ") + std::strerror(errno));
  if (pid == 0) run_child(path, parent, result_write.get(), stderr_write.get(), limits.max_memory_bytes);
  ChildGuard child(pid);
  result_write.reset();
  stderr_write.reset();

  // Read both pipes as they fill (the child blocks on a full pipe) until both close or time runs out.
  // The record cannot honestly be larger than the child's memory; a larger one is cut off.
  const size_t max_record = sizeof(ResultHeader) + limits.max_memory_bytes;
  std::string record, err_tail;
  bool timed_out = false, too_large = false;
  std::string chunk(size_t{64} << 10, '\0');
  for (bool result_open = true, stderr_open = true; result_open || stderr_open;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd fds[2] = {{result_open ? result_read.get() : -1, POLLIN, 0},
                     {stderr_open ? stderr_read.get() : -1, POLLIN, 0}};
    const int ready = ::poll(fds, 2, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (ready < 0) {
      if (errno == EINTR) continue;
      throw Error(std::string("PDF extraction: poll failed: ") + std::strerror(errno));
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t n = ::read(fds[i].fd, chunk.data(), chunk.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        (i == 0 ? result_open : stderr_open) = false;
        continue;
      }
      if (i == 0) {
        record.append(chunk.data(), static_cast<size_t>(n));
      } else {
        err_tail.append(chunk.data(), static_cast<size_t>(n));
        if (err_tail.size() > 2 * kStderrTail) err_tail.erase(0, err_tail.size() - kStderrTail);
      }
    }
    if (record.size() > max_record) {
      too_large = true;
      break;
    }
  }

  int status = 0;
  if (timed_out || too_large || !child.wait_until(deadline, status)) {
    child.kill_and_reap();
    if (too_large) return failure(PdfStatus::kOutOfMemory, "the text is larger than " + mib(limits.max_memory_bytes));
    return failure(PdfStatus::kTimeout, "extraction took longer than " + seconds(timeout) + " s");
  }

  const bool said_oom = err_tail.find("Out of memory") != std::string::npos ||
                        err_tail.find("bad_alloc") != std::string::npos;
  const std::string oom_why = "extraction needed more than " + mib(limits.max_memory_bytes);
  if (WIFEXITED(status)) {
    switch (WEXITSTATUS(status)) {
      case 0: {
        PdfText r;
        if (parse_record(record, r)) return r;
        return failure(PdfStatus::kBroken, "the extracting process returned a damaged result");
      }
      case kExitOutOfMemory:
        return failure(PdfStatus::kOutOfMemory, oom_why);
      case kExitException:
        if (said_oom) return failure(PdfStatus::kOutOfMemory, oom_why);
        return failure(PdfStatus::kBroken, "poppler failed: " + last_line(err_tail));
      case kExitSetupFailed:
        throw Error("PDF extraction: the extracting process could not set up its file descriptors or limits");
      default:
        return failure(PdfStatus::kBroken,
                       "the extracting process exited with code " + std::to_string(WEXITSTATUS(status)));
    }
  }
  const int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  if (said_oom) return failure(PdfStatus::kOutOfMemory, oom_why);
  // Nobody here sends SIGKILL before the deadline: the kernel's OOM killer does.
  if (sig == SIGKILL) return failure(PdfStatus::kOutOfMemory, "the system killed the extracting process (SIGKILL)");
  return failure(PdfStatus::kBroken, "poppler crashed (" + signal_name(sig) + ")");
}

}  // namespace abridge::pipeline
