// The protocol between extract_pdf_text()'s parent and its child, and what the child runs: internal to
// pipeline/ (pdf_extract.cpp runs the bounded child process, pdf_layout.cpp reads the PDF in it).
//
// The parent (extract_pdf_text) checks the file, forks, and reads the child's two pipes until both close or
// the deadline passes; then it reaps the child and classifies how it ended. The child sets itself up with
// system calls only (fds, limits, signals), runs poppler, writes one result record and leaves with _exit.
//
// Result record, on the child's fd 3: a ResultHeader, then message_size bytes of message, text_size bytes
// of text, ocr_count int32 page numbers and ocr_languages_size bytes of languages. The child's stderr
// (fd 2) is a second pipe; its tail names the reason when the child dies without a record (poppler's
// allocator prints "Out of memory" and aborts). A third pipe, the child's fd 4, carries an OcrRecord as
// each page's OCR begins: the parent passes it on and gives the child another timeout for that page.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "pipeline/pdf_extract.h"

namespace abridge::pipeline::pdf_child {

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
inline constexpr char kMagic[8] = {'a', 'b', 'r', 'p', 'd', 'f', '2', '\0'};

struct OcrRecord {
  int32_t page, done, total;  // as OcrProgress
};

// How the child ends when it writes no record (0 means a record was written).
inline constexpr int kExitOutOfMemory = 3;  // std::bad_alloc, or a crash with the address space used up
inline constexpr int kExitException = 4;    // another exception escaped; its what() went to stderr
inline constexpr int kExitSetupFailed = 5;  // fds, limits or signals could not be set up
inline constexpr int kExitWriteFailed = 6;  // the record could not be written (the parent stopped reading)

inline constexpr int kResultFd = 3;                // the record's fd in the child
inline constexpr int kProgressFd = 4;              // OcrRecords
inline constexpr double kMaxOcrPixels = 40e6;      // a page is rendered at less than OcrOptions::dpi beyond this
                                            // (A4 at 300 dpi is 8.7 million; an A0 poster would be 140)
inline constexpr size_t kStderrTail = 4096;        // bytes of the child's stderr the parent keeps
inline constexpr size_t kMaxMessage = 200;         // bytes of a poppler message quoted in PdfText::message
inline constexpr size_t kProbeBytes = size_t{1} << 20;  // see on_crash()

// One line of at most kMaxMessage bytes: control characters become spaces, ends trimmed.
std::string one_line(std::string_view s);
// The last non-blank line of `s` through one_line(), or "no reason given".
std::string last_line(std::string_view s);
// A PdfText of `status` whose message is "STATUS: WHY".
PdfText failure(PdfStatus status, const std::string& why, int pages = 0);
// write(2) of all of `data`, again after EINTR or a short write; false on an error. System calls only.
bool write_all(int fd, const void* data, size_t size);

// What the child reads: a file by its path, or bytes already in memory (the caller read them once).
struct PdfSource {
  const std::string* path = nullptr;
  std::string_view bytes;
};

// `restore_seconds`: how long the child may spend on pages before it stops putting back the hyphens poppler
// drops (finding them lays each page out a second time, about 1.4 times the cost of its text): a document
// that would only just fit the time limit still fits.
// Runs in the child: poppler, then OCR of the pages that need it (their numbers sent on kProgressFd
// as each begins).
PdfText extract_with_poppler(const PdfSource& source, const OcrOptions& ocr, double restore_seconds);

}  // namespace abridge::pipeline::pdf_child
