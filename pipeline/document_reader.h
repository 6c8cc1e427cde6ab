// Reading a document: the one stage that `summarize`, `watch` and `chunk` share between a path on disk
// and the text the chunker, the extractive engine and the model see.
//
//   .pdf:        extract_pdf_text() (text layer, OCR of scanned pages) -> normalize_text(kPdf)
//   anything else: decode_text() (encodings) -> normalize_text(kTextFile)
//
// What is read and what is refused, with the messages: docs/INPUTS.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "pipeline/pdf_extract.h"
#include "pipeline/text_encoding.h"
#include "pipeline/text_normalize.h"

namespace abridge::pipeline {

struct ReadOptions {
  std::string encoding;                     // text files: "" detects; else an iconv name that is forced
  OcrOptions ocr;                           // PDFs: which pages are read by OCR, in which languages
  PdfLimits pdf;                            // PDFs: time and memory of the extracting process
  size_t max_bytes = size_t{2} << 30;       // larger files are refused before they are read
  bool keep_invalid_utf8 = false;           // a text file whose encoding cannot be told is read as
                                            // UTF-8 with its invalid bytes kept (chunk --replace-invalid)
};

struct Document {
  std::string text;       // UTF-8 after normalize_text(); a PDF's pages are separated by '\f'
  std::string encoding;   // text files: what the bytes were read as ("UTF-8", "GB18030", "UTF-16LE", ...);
                          // "" for PDFs
  int pages = 0;          // PDFs: the page count; 0 for text files
  std::vector<size_t> page_starts;  // PDFs: byte offset in `text` where each page starts (pages entries,
                                    // page_starts[0] == 0); empty for text files
  std::vector<int> ocr_pages;       // PDFs: 1-based numbers of the pages whose text was read by OCR
  std::string ocr_languages;        // the tesseract languages that read them ("eng", "chi_sim"); "" if none
};

// Reads `path` (a PDF when its name ends in .pdf, any case). Throws abridge::Error with one line that
// does not name the path (the caller prefixes "abridge: PATH: "): no such file, a directory, empty, too
// large, not text, an encoding that cannot be told, a PDF that is broken, encrypted, without text, too
// slow or too large, ... A document whose text is only blanks is returned as it is (callers decide).
// Thread-safe.
Document read_document(const std::string& path, const ReadOptions& options);

// The text-file half of read_document() for bytes already in memory (standard input, or a file the caller
// opened and read once).
Document read_text(std::string bytes, const ReadOptions& options);
// The PDF half, for a PDF's bytes already in memory: the extracting child reads them, not the path.
Document read_pdf(std::string bytes, const ReadOptions& options);

// ReadOptions from the command-line values (--encoding, --ocr auto|never|always, --ocr-lang, --pdf-timeout,
// --pdf-max-memory). Checks each but --pdf-timeout (summarize checks it with its other options) and
// throws abridge::Error naming the option: the one range check of --pdf-max-memory, which summarize,
// watch and chunk all go through. With --ocr auto and no language data installed, OCR is simply off;
// explicit --ocr-lang codes must be installed unless --ocr never.
ReadOptions make_read_options(const std::string& encoding, const std::string& ocr, const std::string& ocr_languages,
                              double pdf_timeout, int64_t pdf_max_memory_mb);

// "pages 1-3, 7 (eng)" for a progress line; "" when no page was read by OCR.
std::string describe_ocr(const Document& doc);

}  // namespace abridge::pipeline
