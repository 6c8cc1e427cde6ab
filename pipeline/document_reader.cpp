#include "pipeline/document_reader.h"

#include <algorithm>

#include "base/error.h"
#include "base/file.h"
#include "pipeline/shared_options.h"

namespace abridge::pipeline {
namespace {

std::string lower_extension(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  std::string ext = path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; });
  return ext;
}

}  // namespace

Document read_text(std::string bytes, const ReadOptions& o) {
  Document doc;
  DecodedText d = decode_text(std::move(bytes), o.encoding, o.keep_invalid_utf8);
  doc.text = normalize_text(std::move(d.text), TextSource::kTextFile);
  doc.encoding = std::move(d.encoding);
  return doc;
}

Document read_document(const std::string& path, const ReadOptions& o) {
  // Opened once, checked on that descriptor (a regular file, never waited on), read within the limit.
  std::string bytes = read_regular_file(path, o.max_bytes);
  if (lower_extension(path) != ".pdf") return read_text(std::move(bytes), o);
  return read_pdf(std::move(bytes), o);
}

Document read_pdf(std::string bytes, const ReadOptions& o) {
  Document doc;
  if (bytes.size() > o.max_bytes) throw Error(too_large_message(bytes.size(), o.max_bytes));
  PdfText pdf = extract_pdf_text_from_bytes(bytes, o.pdf, o.ocr);
  bytes.clear();
  bytes.shrink_to_fit();
  if (pdf.status != PdfStatus::kOk) throw Error(pdf.message.empty() ? to_string(pdf.status) : pdf.message);
  doc.text = normalize_text(std::move(pdf.text), TextSource::kPdf);
  doc.pages = pdf.pages;
  doc.page_starts.push_back(0);
  for (size_t ff = doc.text.find('\f'); ff != std::string::npos; ff = doc.text.find('\f', ff + 1))
    doc.page_starts.push_back(ff + 1);
  ABRIDGE_CHECK(doc.page_starts.size() == static_cast<size_t>(pdf.pages),
                std::to_string(doc.page_starts.size()) + " page starts for " + std::to_string(pdf.pages) + " pages");
  doc.ocr_pages = std::move(pdf.ocr_pages);
  doc.ocr_languages = std::move(pdf.ocr_languages);
  return doc;
}

ReadOptions make_read_options(const std::string& encoding, const std::string& ocr, const std::string& ocr_languages,
                              double pdf_timeout, int64_t pdf_max_memory_mb) {
  ReadOptions o;
  if (!encoding.empty()) {
    try {
      check_encoding_name(encoding);
    } catch (const Error& e) {
      throw Error(std::string("--encoding: ") + e.what());
    }
    o.encoding = encoding;
  }
  if (ocr == "auto") {
    o.ocr.mode = OcrMode::kAuto;
  } else if (ocr == "never") {
    o.ocr.mode = OcrMode::kNever;
  } else if (ocr == "always") {
    o.ocr.mode = OcrMode::kAlways;
  } else {
    throw Error("--ocr must be auto, never or always, not \"" + ocr + "\"");
  }
  o.ocr.languages = ocr_languages.empty() ? "auto" : ocr_languages;
  if (o.ocr.mode != OcrMode::kNever) {
    o.ocr.data = find_ocr_data();
    if (o.ocr.languages != "auto") {
      for (const std::string& lang : split_ocr_languages(o.ocr.languages))
        if (!o.ocr.data.has(lang))
          throw Error("--ocr-lang: no tesseract data for '" + lang + "'" +
                      (o.ocr.data.datapath.empty() ? std::string() : " in " + o.ocr.data.datapath) +
                      " (Debian: apt-get install " + ocr_language_package(lang) + ")");
    } else if (o.ocr.mode == OcrMode::kAlways && !o.ocr.data.has("eng") && !o.ocr.data.has("chi_sim")) {
      throw Error("--ocr always: no tesseract data for English or Chinese (Debian: apt-get install tesseract-ocr-eng "
                  "tesseract-ocr-chi-sim), or name the languages with --ocr-lang");
    }
  } else if (o.ocr.languages != "auto") {
    split_ocr_languages(o.ocr.languages);  // the syntax still
  }
  o.pdf.timeout_seconds = pdf_timeout;
  check_range("--pdf-max-memory", pdf_max_memory_mb, 64, int64_t{1} << 20);  // MiB, as --help says
  o.pdf.max_memory_bytes = static_cast<size_t>(pdf_max_memory_mb) << 20;
  return o;
}

std::string describe_ocr(const Document& doc) {
  if (doc.ocr_pages.empty()) return "";
  std::string out = doc.ocr_pages.size() == 1 ? "page " : "pages ";
  for (size_t i = 0; i < doc.ocr_pages.size();) {
    size_t j = i;
    while (j + 1 < doc.ocr_pages.size() && doc.ocr_pages[j + 1] == doc.ocr_pages[j] + 1) ++j;
    if (i > 0) out += ", ";
    out += std::to_string(doc.ocr_pages[i]);
    if (j > i) out += "-" + std::to_string(doc.ocr_pages[j]);
    i = j + 1;
  }
  return out + " (" + doc.ocr_languages + ")";
}

}  // namespace abridge::pipeline
