// Extracting the text layer of a PDF with poppler, isolated in a child process.
//
// Real malformed PDFs can make poppler loop for minutes, allocate gigabytes or crash. So the work runs in
// a forked child under an address-space limit while the parent waits with a deadline: whatever the
// document does, the caller gets a PdfText back and the batch goes on.
#pragma once

#include <cstddef>
#include <string>

namespace abridge::pipeline {

struct PdfLimits {
  double timeout_seconds = 60;                 // wall clock for one document's extraction
  size_t max_memory_bytes = size_t{2} << 30;  // address space the extracting child may add to what it
                                               // inherits from the caller at fork (RLIMIT_AS)
};

enum class PdfStatus { kOk, kEncrypted, kNoText, kBroken, kTimeout, kOutOfMemory };

// "ok", "encrypted", "no text layer (scanned images?)", "broken PDF", "timed out", "out of memory".
const char* to_string(PdfStatus s);

struct PdfText {
  PdfStatus status = PdfStatus::kBroken;
  std::string text;     // UTF-8, pages in order separated by form feeds '\f'; empty unless kOk
  int pages = 0;        // page count when poppler could open the document
  std::string message;  // one line, for status != kOk, starting with to_string(status), e.g.
                        // "broken PDF: not a PDF (no %PDF- header in the first 1024 bytes)";
                        // it does not repeat the path
};

// Extracts the text layer in reading order (poppler's non-raw, non-physical layout, as `pdftotext`
// without options) in a forked child with the limits applied. Each page's lines lose trailing blanks,
// pages are joined by '\f' (so the text has pages - 1 of them), and bytes that are not valid UTF-8
// become U+FFFD.
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
PdfText extract_pdf_text(const std::string& path, const PdfLimits& limits = {});

}  // namespace abridge::pipeline
