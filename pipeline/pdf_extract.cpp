// extract_pdf_text(): the bounded child process. The parent checks the file, forks, and reads the
// child's pipes until both close or the deadline passes; then it reaps the child and classifies how it
// ended (the protocol: pdf_child.h). The child sets itself up with system calls only (fds, limits,
// signals), runs pdf_layout.cpp's extract_with_poppler, writes one result record and leaves with _exit.
#include "pipeline/pdf_extract.h"

#include <fcntl.h>
#include <poll.h>
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
#include <optional>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/fd.h"
#include "base/utf8.h"
#include "pipeline/pdf_child.h"

namespace abridge::pipeline {

namespace pdf_child {

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
    while (cut > 0 && is_utf8_continuation(static_cast<unsigned char>(out[cut]))) --cut;  // not inside a character
    out.resize(cut);
    out += "...";
  }
  return to_valid_utf8(out);
}

std::string last_line(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  const size_t nl = s.rfind('\n');
  const std::string line = one_line(nl == std::string_view::npos ? s : s.substr(nl + 1));
  return line.empty() ? "no reason given" : line;
}

PdfText failure(PdfStatus status, const std::string& why, int pages) {
  PdfText r;
  r.status = status;
  r.pages = pages;
  r.message = std::string(to_string(status)) + ": " + why;
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

}  // namespace pdf_child

using namespace pdf_child;

namespace {

// ---- the child ----------------------------------------------------------------------------------------

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

// Makes the child a clean, limited process: stdin/stdout on /dev/null, stderr, the record and progress on
// the pipes, no other inherited fd (another thread's pipe kept open here would delay that thread's EOF),
// dies with the forking thread, no core dumps, signal handlers as after exec, RLIMIT_AS.
// System calls only.
bool set_up_child(pid_t parent, int result_fd, int stderr_fd, int progress_fd, size_t budget) {
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) return false;
  const int result = ::fcntl(result_fd, F_DUPFD, 10), err = ::fcntl(stderr_fd, F_DUPFD, 10);
  const int progress = ::fcntl(progress_fd, F_DUPFD, 10);
  const int null = ::open("/dev/null", O_RDWR);
  if (result < 0 || err < 0 || progress < 0 || null < 0) return false;
  if (::dup2(null, 0) < 0 || ::dup2(null, 1) < 0 || ::dup2(err, 2) < 0 || ::dup2(result, kResultFd) < 0 ||
      ::dup2(progress, kProgressFd) < 0)
    return false;
  if (::close_range(kProgressFd + 1, ~0U, 0) != 0) return false;

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

[[noreturn]] void run_child(const PdfSource& source, const OcrOptions& ocr, double timeout, pid_t parent, int result_fd,
                            int stderr_fd, int progress_fd, size_t budget) {
  if (!set_up_child(parent, result_fd, stderr_fd, progress_fd, budget)) ::_exit(kExitSetupFailed);
  try {
    const PdfText r = extract_with_poppler(source, ocr, timeout / 2);
    ResultHeader h{};
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.status = static_cast<uint32_t>(r.status);
    h.pages = r.pages;
    h.message_size = r.message.size();
    h.text_size = r.text.size();
    h.ocr_count = static_cast<uint32_t>(r.ocr_pages.size());
    h.ocr_languages_size = static_cast<uint32_t>(r.ocr_languages.size());
    std::vector<int32_t> ocr_pages(r.ocr_pages.begin(), r.ocr_pages.end());
    const bool ok = write_all(kResultFd, &h, sizeof h) && write_all(kResultFd, r.message.data(), r.message.size()) &&
                    write_all(kResultFd, r.text.data(), r.text.size()) &&
                    write_all(kResultFd, ocr_pages.data(), ocr_pages.size() * sizeof(int32_t)) &&
                    write_all(kResultFd, r.ocr_languages.data(), r.ocr_languages.size());
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
std::string precheck_bytes(std::string_view bytes) {
  if (bytes.empty()) return "empty file";
  if (bytes.size() > size_t{INT32_MAX}) return "larger than 2 GiB";
  // The header may follow some junk; poppler looks in the first 1024 bytes too.
  if (::memmem(bytes.data(), std::min<size_t>(bytes.size(), 1024), "%PDF-", 5) == nullptr)
    return "not a PDF (no %PDF- header in the first 1024 bytes)";
  return "";
}

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
  const size_t tail = size_t{h.ocr_count} * sizeof(int32_t) + h.ocr_languages_size;
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 ||
      h.status > static_cast<uint32_t>(PdfStatus::kOcrFailed) || h.message_size > body ||
      h.text_size > body - h.message_size || tail != body - h.message_size - h.text_size)
    return false;
  r.status = static_cast<PdfStatus>(h.status);
  r.pages = h.pages;
  size_t at = sizeof h;
  r.message.assign(bytes, at, h.message_size);
  at += h.message_size;
  r.text.assign(bytes, at, h.text_size);
  at += h.text_size;
  for (uint32_t k = 0; k < h.ocr_count; ++k, at += sizeof(int32_t)) {
    int32_t page = 0;
    std::memcpy(&page, bytes.data() + at, sizeof page);
    r.ocr_pages.push_back(page);
  }
  r.ocr_languages.assign(bytes, at, h.ocr_languages_size);
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
    case PdfStatus::kOcrFailed: return "OCR failed";
  }
  return "unknown";
}

namespace {
PdfText extract(const PdfSource& source, const PdfLimits& limits, const OcrOptions& ocr);
}  // namespace

PdfText extract_pdf_text(const std::string& path, const PdfLimits& limits, const OcrOptions& ocr) {
  if (const std::string why = precheck(path); !why.empty()) return failure(PdfStatus::kBroken, why);
  return extract(PdfSource{&path, {}}, limits, ocr);
}

PdfText extract_pdf_text_from_bytes(std::string_view bytes, const PdfLimits& limits, const OcrOptions& ocr) {
  if (const std::string why = precheck_bytes(bytes); !why.empty()) return failure(PdfStatus::kBroken, why);
  return extract(PdfSource{nullptr, bytes}, limits, ocr);
}

namespace {

PdfText extract(const PdfSource& source, const PdfLimits& limits, const OcrOptions& ocr) {

  // Deadline first, so that the fork counts too. NaN or negative means no time at all; a week is forever.
  const double timeout = std::clamp(std::isnan(limits.timeout_seconds) ? 0.0 : limits.timeout_seconds, 0.0, 604800.0);
  const auto timeout_duration = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout));
  Clock::time_point deadline = Clock::now() + timeout_duration;

  int result_pipe[2], stderr_pipe[2], progress_pipe[2];
  if (::pipe2(result_pipe, O_CLOEXEC) != 0)
    throw Error(std::string("PDF extraction: pipe failed: ") + std::strerror(errno));
  Fd result_read(result_pipe[0]), result_write(result_pipe[1]);
  if (::pipe2(stderr_pipe, O_CLOEXEC) != 0)
    throw Error(std::string("PDF extraction: pipe failed: ") + std::strerror(errno));
  Fd stderr_read(stderr_pipe[0]), stderr_write(stderr_pipe[1]);
  if (::pipe2(progress_pipe, O_CLOEXEC) != 0)
    throw Error(std::string("PDF extraction: pipe failed: ") + std::strerror(errno));
  Fd progress_read(progress_pipe[0]), progress_write(progress_pipe[1]);

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw Error(std::string("PDF extraction: fork failed: ") + std::strerror(errno));
  if (pid == 0)
    run_child(source, ocr, timeout, parent, result_write.get(), stderr_write.get(), progress_write.get(),
              limits.max_memory_bytes);
  ChildGuard child(pid);
  result_write.reset();
  stderr_write.reset();
  progress_write.reset();

  // Read the pipes as they fill (the child blocks on a full pipe) until all close or time runs out.
  // The record cannot honestly be larger than the child's memory; a larger one is cut off. Each page
  // that OCR starts on gets the timeout again.
  const size_t max_record = sizeof(ResultHeader) + limits.max_memory_bytes;
  std::string record, err_tail, progress;
  bool timed_out = false, too_large = false;
  int ocr_pages_started = 0, ocr_page = 0;
  std::string chunk(size_t{64} << 10, '\0');
  bool open[3] = {true, true, true};
  const int fd_of[3] = {result_read.get(), stderr_read.get(), progress_read.get()};
  while (open[0] || open[1] || open[2]) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd fds[3];
    for (int i = 0; i < 3; ++i) fds[i] = {open[i] ? fd_of[i] : -1, POLLIN, 0};
    const int ready = ::poll(fds, 3, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (ready < 0) {
      if (errno == EINTR) continue;
      throw Error(std::string("PDF extraction: poll failed: ") + std::strerror(errno));
    }
    for (int i = 0; i < 3; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t n = ::read(fds[i].fd, chunk.data(), chunk.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        open[i] = false;
        continue;
      }
      if (i == 0) {
        record.append(chunk.data(), static_cast<size_t>(n));
      } else if (i == 1) {
        err_tail.append(chunk.data(), static_cast<size_t>(n));
        if (err_tail.size() > 2 * kStderrTail) err_tail.erase(0, err_tail.size() - kStderrTail);
      } else {
        progress.append(chunk.data(), static_cast<size_t>(n));
        size_t used = 0;
        for (; progress.size() - used >= sizeof(OcrRecord); used += sizeof(OcrRecord)) {
          OcrRecord rec;
          std::memcpy(&rec, progress.data() + used, sizeof rec);
          // A page's worth of time, but no more pages than the document has (a hostile child gains nothing).
          if (++ocr_pages_started <= rec.total) deadline = std::max(deadline, Clock::now() + timeout_duration);
          ocr_page = rec.page;
          if (ocr.progress) ocr.progress({rec.page, rec.done, rec.total});
        }
        progress.erase(0, used);
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
    if (ocr_page > 0)
      return failure(PdfStatus::kTimeout, "OCR of page " + std::to_string(ocr_page) + " took longer than " + seconds(timeout) + " s");
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

}  // namespace
}  // namespace abridge::pipeline
