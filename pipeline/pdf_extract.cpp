// The parent (extract_pdf_text) checks the file, forks, and reads the child's two pipes until both close or
// the deadline passes; then it reaps the child and classifies how it ended. The child sets itself up with
// system calls only (fds, limits, signals), runs poppler, writes one result record and leaves with _exit.
//
// Result record, on the child's fd 3: a ResultHeader, then message_size bytes of message, text_size bytes
// of text, ocr_count int32 page numbers and ocr_languages_size bytes of languages. The child's stderr
// (fd 2) is a second pipe; its tail names the reason when the child dies without a record (poppler's
// allocator prints "Out of memory" and aborts). A third pipe, the child's fd 4, carries an OcrRecord as
// each page's OCR begins: the parent passes it on and gives the child another timeout for that page.
#include "pipeline/pdf_extract.h"

#include <fcntl.h>
#include <poll.h>
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-image.h>
#include <poppler-page-renderer.h>
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
#include <optional>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/utf8.h"

namespace abridge::pipeline {
namespace {

using Clock = std::chrono::steady_clock;

struct ResultHeader {
  char magic[8];
  uint32_t status;  // PdfStatus
  int32_t pages;
  uint64_t message_size;
  uint64_t text_size;
  uint32_t ocr_count;           // int32 page numbers after the text
  uint32_t ocr_languages_size;  // bytes after them
};
constexpr char kMagic[8] = {'a', 'b', 'r', 'p', 'd', 'f', '2', '\0'};

struct OcrRecord {
  int32_t page, done, total;  // as OcrProgress
};

// How the child ends when it writes no record (0 means a record was written).
constexpr int kExitOutOfMemory = 3;  // std::bad_alloc, or a crash with the address space used up
constexpr int kExitException = 4;    // another exception escaped; its what() went to stderr
constexpr int kExitSetupFailed = 5;  // fds, limits or signals could not be set up
constexpr int kExitWriteFailed = 6;  // the record could not be written (the parent stopped reading)

constexpr int kResultFd = 3;                // the record's fd in the child
constexpr int kProgressFd = 4;              // OcrRecords
constexpr double kMaxOcrPixels = 40e6;      // a page is rendered at less than OcrOptions::dpi beyond this
                                            // (A4 at 300 dpi is 8.7 million; an A0 poster would be 140)
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
    while (cut > 0 && is_utf8_continuation(static_cast<unsigned char>(out[cut]))) --cut;  // not inside a character
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

// One page's text: '\n' line ends, no blanks at a line's end, no blank lines at the page's end, no '\f'
// (it separates pages) and no NUL.
std::string page_text(std::string_view raw) {
  const std::string text = to_valid_utf8(raw);
  std::string out;
  size_t line_start = 0;
  auto end_line = [&] {
    while (out.size() > line_start && (out.back() == ' ' || out.back() == '\t')) out.pop_back();
    out += '\n';
    line_start = out.size();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;
    if (c == '\n' || c == '\r' || c == '\f') {
      end_line();
    } else if (c != '\0') {
      out += c;
    }
  }
  while (!out.empty() && std::string_view(" \t\n").find(out.back()) != std::string_view::npos) out.pop_back();
  return out;
}

size_t visible_characters(std::string_view s) {
  size_t n = 0;
  for (const char c : s) n += c != ' ' && c != '\t' && c != '\n' && (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
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

// Whether text is Chinese or Japanese rather than English: at least 30% of its letters are Han or kana.
// nullopt when it has fewer than 50 letters.
std::optional<bool> han_text(std::string_view s) {
  size_t han = 0, latin = 0;
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      latin += (b | 0x20) >= 'a' && (b | 0x20) <= 'z';
      ++i;
      continue;
    }
    uint32_t cp = 0;
    size_t len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
    if (i + len > s.size()) break;
    cp = b & (len == 4 ? 0x07 : len == 3 ? 0x0F : 0x1F);
    for (size_t k = 1; k < len; ++k) cp = cp << 6 | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    han += (cp >= 0x3040 && cp <= 0x30FF) || (cp >= 0x3400 && cp <= 0x9FFF) || (cp >= 0x20000 && cp <= 0x3FFFF);
    i += len;
  }
  if (han + latin < 50) return std::nullopt;
  return han * 10 >= (han + latin) * 3;
}

// The languages to read with, or an error (what is missing and how to install it).
struct OcrChoice {
  std::string languages;  // for OcrEngine
  bool narrow = false;    // auto without a text layer: narrow to one language after the first page
  std::string error;
};

OcrChoice choose_ocr_languages(const OcrOptions& o, std::string_view layer_text) {
  OcrChoice c;
  if (o.data.datapath.empty()) {
    c.error = "OCR needs tesseract's language data (Debian: apt-get install tesseract-ocr-eng tesseract-ocr-chi-sim)";
    return c;
  }
  if (o.languages != "auto") {
    for (const std::string& lang : split_ocr_languages(o.languages)) {
      if (!o.data.has(lang)) {
        c.error = "no tesseract data for '" + lang + "' in " + o.data.datapath + " (Debian: apt-get install " +
                  ocr_language_package(lang) + ")";
        return c;
      }
    }
    c.languages = o.languages;
    return c;
  }
  const bool eng = o.data.has("eng"), chi = o.data.has("chi_sim");
  if (!eng && !chi) {
    c.error = "OCR needs tesseract's English or Chinese data (Debian: apt-get install tesseract-ocr-eng tesseract-ocr-chi-sim)";
    return c;
  }
  if (const auto han = han_text(layer_text); han && ((*han && chi) || (!*han && eng))) {
    c.languages = *han ? "chi_sim" : "eng";
  } else {
    c.languages = eng && chi ? "eng+chi_sim" : eng ? "eng" : "chi_sim";
    c.narrow = eng && chi && !han;
  }
  return c;
}

// The page rendered as 8-bit gray for tesseract, at `dpi` or less for a page above kMaxOcrPixels.
poppler::image render_gray(const poppler::page& page, int dpi, int& used_dpi) {
  const poppler::rectf box = page.page_rect();
  const double inches = std::max(1e-6, box.width() / 72.0) * std::max(1e-6, box.height() / 72.0);
  used_dpi = static_cast<int>(std::min<double>(dpi, std::sqrt(kMaxOcrPixels / inches)));
  poppler::page_renderer r;
  r.set_image_format(poppler::image::format_gray8);
  r.set_render_hint(poppler::page_renderer::antialiasing, true);
  r.set_render_hint(poppler::page_renderer::text_antialiasing, true);
  return r.render_page(&page, used_dpi, used_dpi);
}

// `restore_seconds`: how long the child may spend on pages before it stops putting back the hyphens poppler
// drops (finding them lays each page out a second time, about 1.4 times the cost of its text): a document
// that would only just fit the time limit still fits.
// What the child reads: a file by its path, or bytes already in memory (the caller read them once).
struct PdfSource {
  const std::string* path = nullptr;
  std::string_view bytes;
};

PdfText extract_with_poppler(const PdfSource& source, const OcrOptions& ocr, double restore_seconds) {
  const Clock::time_point start = Clock::now();
  std::string last_message;
  poppler::set_debug_error_function(keep_poppler_message, &last_message);
  const std::unique_ptr<poppler::document> doc(
      source.path ? poppler::document::load_from_file(*source.path)
                  : poppler::document::load_from_raw_data(source.bytes.data(), static_cast<int>(source.bytes.size())));
  if (!doc)
    return failure(PdfStatus::kBroken, last_message.empty() ? std::string("poppler cannot open it")
                                                            : poppler_reason(last_message));
  if (doc->is_locked()) return failure(PdfStatus::kEncrypted, "the document needs a password");
  const int pages = doc->pages();
  if (pages <= 0) return failure(PdfStatus::kBroken, "the document has no pages");

  std::vector<std::string> texts(static_cast<size_t>(pages));
  std::vector<std::string> words;
  std::string layer_sample;  // the text layer, for the OCR language; a few pages' worth is plenty
  for (int i = 0; i < pages; ++i) {
    const std::unique_ptr<poppler::page> page(doc->create_page(i));
    if (!page) continue;
    // Reading order as pdftotext gives it by default. physical_layout puts the lines of side-by-side
    // columns on one line; raw_order_layout follows the content stream, breaks lines at every
    // superscript and drops the blank lines between paragraphs that the chunker uses.
    const poppler::byte_array utf8 =
        page->text(poppler::rectf(), poppler::page::non_raw_non_physical_layout).to_utf8();
    const std::string_view raw(utf8.data(), utf8.size());
    if (std::chrono::duration<double>(Clock::now() - start).count() < restore_seconds) {
      // The words, to find where poppler dropped a line-end hyphen (its output no longer shows one).
      words.clear();
      for (const poppler::text_box& box : page->text_list()) {
        const poppler::byte_array w = box.text().to_utf8();
        words.emplace_back(w.data(), w.size());
      }
      texts[static_cast<size_t>(i)] = page_text(restore_line_end_hyphens(raw, words));
    } else {
      texts[static_cast<size_t>(i)] = page_text(raw);
    }
    if (layer_sample.size() < (size_t{64} << 10)) layer_sample += texts[static_cast<size_t>(i)];
  }

  PdfText r;
  r.pages = pages;
  std::string ocr_note;  // why pages without text were not read by OCR
  std::vector<int> todo;
  for (int i = 0; i < pages && ocr.mode != OcrMode::kNever; ++i)
    if (ocr.mode == OcrMode::kAlways || visible_characters(texts[static_cast<size_t>(i)]) < kMinLayerCharacters)
      todo.push_back(i);
  if (!todo.empty()) {
    OcrChoice choice = choose_ocr_languages(ocr, layer_sample);
    const bool must = ocr.mode == OcrMode::kAlways || ocr.languages != "auto";  // else OCR is best effort
    if (!choice.error.empty()) {
      if (must) return failure(PdfStatus::kOcrFailed, choice.error, pages);
      ocr_note = choice.error;
      todo.clear();
    }
    std::unique_ptr<OcrEngine> engine;
    for (size_t k = 0; k < todo.size(); ++k) {
      const int i = todo[k];
      // Sent before the engine starts, so that its start counts in the first page's time.
      const OcrRecord rec{i + 1, static_cast<int32_t>(k), static_cast<int32_t>(todo.size())};
      if (!write_all(kProgressFd, &rec, sizeof rec)) ::_exit(kExitWriteFailed);
      if (!engine) {
        try {
          engine = std::make_unique<OcrEngine>(ocr.data.datapath, choice.languages);
        } catch (const Error& e) {
          if (must) return failure(PdfStatus::kOcrFailed, e.what(), pages);
          ocr_note = e.what();
          break;
        }
      }
      const std::unique_ptr<poppler::page> page(doc->create_page(i));
      if (!page) continue;
      int dpi = 0;
      poppler::image image = render_gray(*page, ocr.dpi, dpi);
      if (!image.is_valid()) continue;
      auto read = [&] {
        return page_text(engine->recognize(reinterpret_cast<const unsigned char*>(image.const_data()), image.width(),
                                           image.height(), image.bytes_per_row(), dpi));
      };
      std::string text = read();
      if (choice.narrow) {
        // Both languages at once read each worse than either alone (a Chinese heading came out as Latin
        // letters): once a page shows which it is, that page is read again with that one only.
        if (const auto han = han_text(text)) {
          choice.narrow = false;
          engine.reset();
          engine = std::make_unique<OcrEngine>(ocr.data.datapath, *han ? "chi_sim" : "eng");
          text = read();
        }
      }
      // A short text layer stays unless OCR finds much more: a scanner's watermark ("Scanned with ...")
      // gives way to the page it is on, a short page of real text (a title) is not replaced by a reading
      // of itself.
      std::string& layer = texts[static_cast<size_t>(i)];
      const size_t had = visible_characters(layer), found = visible_characters(text);
      if (ocr.mode == OcrMode::kAlways || (had == 0 ? found > 0 : found >= 2 * had + kMinLayerCharacters)) {
        layer = std::move(text);
        r.ocr_pages.push_back(i + 1);
      }
    }
    if (engine && !r.ocr_pages.empty()) r.ocr_languages = engine->languages();
  }

  bool any_text = false;
  for (int i = 0; i < pages; ++i) {
    if (i > 0) r.text += '\f';
    r.text += texts[static_cast<size_t>(i)];
    any_text = any_text || !texts[static_cast<size_t>(i)].empty();
  }
  if (!any_text) {
    std::string why = pages == 1 ? std::string("its page has no text")
                                 : "none of its " + std::to_string(pages) + " pages has text";
    if (ocr.mode == OcrMode::kNever) {
      why += " (OCR is off: --ocr never)";
    } else if (!ocr_note.empty()) {
      why += "; " + ocr_note;
    } else {
      why += ", and OCR found none either";
    }
    return failure(PdfStatus::kNoText, why, pages);
  }
  r.status = PdfStatus::kOk;
  return r;
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

std::string restore_line_end_hyphens(std::string_view text, const std::vector<std::string>& words) {
  std::vector<size_t> cuts;  // where "-\n" goes back
  size_t at = 0;
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (w.empty()) continue;
    while (at < text.size() && (text[at] == ' ' || text[at] == '\n' || text[at] == '\r' || text[at] == '\t')) ++at;
    if (text.compare(at, w.size(), w) == 0) {
      at += w.size();
      continue;
    }
    const size_t stem = w.size() - 1;
    if (w.back() == '-' && i + 1 < words.size() && text.compare(at, stem, w, 0, stem) == 0 &&
        text.compare(at + stem, words[i + 1].size(), words[i + 1]) == 0) {
      cuts.push_back(at + stem);
      at += stem;
      continue;
    }
    return std::string(text);  // the words and the text do not line up: leave the page alone
  }
  std::string out;
  out.reserve(text.size() + 2 * cuts.size());
  size_t from = 0;
  for (const size_t c : cuts) {
    out.append(text.substr(from, c - from));
    out += "-\n";
    from = c;
  }
  out.append(text.substr(from));
  return out;
}

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
