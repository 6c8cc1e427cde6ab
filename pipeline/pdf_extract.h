// Extracting the text layer of a PDF with poppler, isolated in a child process.
//
// Real malformed PDFs can make poppler loop for minutes, allocate gigabytes or crash. So the work runs in
// a forked child under an address-space limit while the parent waits with a deadline: whatever the
// document does, the caller gets a PdfText back and the batch goes on.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/ocr.h"

namespace abridge::pipeline {

struct PdfLimits {
  double timeout_seconds = 60;                 // wall clock for one document's text layer, and again for
                                               // each page read by OCR
  size_t max_memory_bytes = size_t{2} << 30;  // address space the extracting child may add to what it
                                               // inherits from the caller at fork (RLIMIT_AS)
};

enum class PdfStatus { kOk, kEncrypted, kNoText, kBroken, kTimeout, kOutOfMemory, kOcrFailed };

// "ok", "encrypted", "no text layer (scanned images?)", "broken PDF", "timed out", "out of memory",
// "OCR failed".
const char* to_string(PdfStatus s);

// Which pages are read by OCR. kAuto: the pages without a text layer (fewer than kMinLayerCharacters
// visible characters), when tesseract and a language are installed; kAlways: every page; kNever: none.
enum class OcrMode { kAuto, kNever, kAlways };
inline constexpr size_t kMinLayerCharacters = 32;

struct OcrProgress {
  int page = 0;   // 1-based page about to be read
  int done = 0;   // pages read by OCR so far in this document
  int total = 0;  // pages this document will read by OCR
};

// The default reads no page by OCR; make_read_options() (document_reader.h) gives the command line's.
struct OcrOptions {
  OcrMode mode = OcrMode::kNever;
  // Tesseract codes joined by '+' ("eng+chi_sim"), or "auto": the language of the document's text layer
  // (Chinese when at least 30% of its letters are Han or kana: chi_sim, else eng); without a text layer,
  // the first page is read with each installed one of eng and chi_sim, then again, with the rest, in the
  // one found.
  std::string languages = "auto";
  OcrData data;                                      // find_ocr_data(); empty: no OCR possible
  int dpi = 300;                                     // rendering resolution (less for very large pages)
  std::function<void(const OcrProgress&)> progress;  // called on the caller's thread
};

struct PdfText {
  PdfStatus status = PdfStatus::kBroken;
  std::string text;     // UTF-8, pages in order separated by form feeds '\f'; empty unless kOk
  int pages = 0;        // page count when poppler could open the document
  std::string message;  // one line, for status != kOk, starting with to_string(status), e.g.
                        // "broken PDF: not a PDF (no %PDF- header in the first 1024 bytes)";
                        // it does not repeat the path
  std::vector<int> ocr_pages;  // 1-based, ascending: the pages whose text was read by OCR
  std::string ocr_languages;   // the tesseract languages that read them ("eng"); "" when none
};

// Extracts the text layer in reading order (poppler's non-raw, non-physical layout, as `pdftotext`
// without options) in a forked child with the limits applied, and reads the pages `ocr` asks for by
// rendering them (poppler) and recognizing them (tesseract) in the same child. Each page's lines lose
// trailing blanks, pages are joined by '\f' (so the text has pages - 1 of them), and bytes that are not
// valid UTF-8 become U+FFFD. Hyphens that poppler drops at line ends (it joins "well-" and "known" into
// "wellknown") are put back with their line break, so that normalize_text() decides; this lays each page
// out twice, so it stops once half of the time limit is spent (the rest of a very long document keeps
// poppler's joins).
// In kAuto mode a page with a short text layer keeps it unless OCR finds at least twice as many visible
// characters, and kMinLayerCharacters more.
// kOcrFailed: kAlways or explicit languages that cannot be used (missing data or library).
//
// Never throws for a bad document (missing, unreadable, not a PDF, damaged, encrypted, hostile);
// throws abridge::Error only when the environment fails (pipe, fork, poll, waitpid).
// Thread-safe: several threads may extract at once; each waits only for its own child.
//
// Fork without exec: the child runs poppler in a copy of the caller. It is safe in practice because the
// calling process itself never calls poppler (so no poppler lock can be held at fork), glibc makes
// malloc usable in a forked child, and the child touches nothing else of the caller's (it writes with
// write(2) and leaves with _exit). The caller must not set SIGCHLD to SIG_IGN (the child is reaped with
// waitpid).
PdfText extract_pdf_text(const std::string& path, const PdfLimits& limits = {}, const OcrOptions& ocr = {});
// The same for a PDF already read into memory (the caller opened the file once and checked it); the
// child reads these bytes, not the path.
PdfText extract_pdf_text_from_bytes(std::string_view bytes, const PdfLimits& limits = {}, const OcrOptions& ocr = {});

// What poppler joined, undone: `page_text` is poppler's text of a page, `words` the same page's words in
// the same order (page::text_list()). Where a word ending in '-' appears without its hyphen and runs into
// the next word, "-\n" is put back. When the two do not line up (right-to-left text), `page_text` is
// returned as it is.
std::string restore_line_end_hyphens(std::string_view page_text, const std::vector<std::string>& words);

}  // namespace abridge::pipeline
