// Optical character recognition of rendered PDF pages with tesseract.
//
// libtesseract is loaded with dlopen() by the process that extracts a PDF (a forked child, see
// pdf_extract.h), never by abridge itself: the parent keeps no OCR libraries mapped, and the child can set
// OMP_THREAD_LIMIT=1 before libgomp (which tesseract pulls in) reads it. Tesseract's OpenMP loops are
// per LSTM step and too small to pay for their threads: one English page at 300 dpi took 2.4 s with the
// default threads and 0.77 s with one, on 2 cores, and a batch runs several extractions at once.
// dlopen() in a child forked from a threaded process is safe: glibc resets the dynamic loader's lock in
// the child (sysdeps/nptl/fork.c), so no other thread's dlopen at the time of the fork can block it.
#pragma once

#include <string>
#include <vector>

namespace abridge::pipeline {

// Tesseract's language data on this machine.
struct OcrData {
  std::string datapath;                // the tessdata directory; "" when none was found
  std::vector<std::string> languages;  // codes of its *.traineddata files, sorted ("chi_sim", "eng", ...)
  bool has(const std::string& language) const;
};

// Looks for *.traineddata in $TESSDATA_PREFIX (or its tessdata/), then where Debian and tesseract's own
// install put them (/usr/share/tesseract-ocr/5/tessdata, .../4.00/tessdata, /usr/share/tessdata,
// /usr/local/share/tessdata). Reads directories only; loads nothing.
OcrData find_ocr_data();

// "eng+chi_sim" -> {"eng", "chi_sim"}. Throws abridge::Error for an empty list or a code that is not
// letters, digits and '_'.
std::vector<std::string> split_ocr_languages(const std::string& spec);

// The Debian package that installs a language's data: "chi_sim" -> "tesseract-ocr-chi-sim".
std::string ocr_language_package(const std::string& language);

// One tesseract instance with its languages loaded. Not thread-safe; meant for the extracting child.
class OcrEngine {
 public:
  // Loads libtesseract and `languages` ("eng+chi_sim") from `datapath`. Throws abridge::Error with one
  // line (what is missing and the Debian package) when it cannot.
  OcrEngine(const std::string& datapath, const std::string& languages);
  ~OcrEngine();
  OcrEngine(const OcrEngine&) = delete;
  OcrEngine& operator=(const OcrEngine&) = delete;

  // The text of an 8-bit gray image (row-major, `bytes_per_row` >= width) scanned at `dpi`: UTF-8 lines,
  // a blank line between paragraphs. Throws abridge::Error when tesseract fails.
  std::string recognize(const unsigned char* pixels, int width, int height, int bytes_per_row, int dpi);
  const std::string& languages() const { return languages_; }

 private:
  struct Api;
  Api* api_ = nullptr;
  void* handle_ = nullptr;  // tesseract's TessBaseAPI*
  std::string languages_;
};

}  // namespace abridge::pipeline
