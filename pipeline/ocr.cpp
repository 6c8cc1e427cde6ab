#include "pipeline/ocr.h"

#include <dlfcn.h>
#include <tesseract/capi.h>
#include <tesseract/version.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "base/error.h"

namespace abridge::pipeline {

namespace fs = std::filesystem;

bool OcrData::has(const std::string& language) const {
  return std::find(languages.begin(), languages.end(), language) != languages.end();
}

OcrData find_ocr_data() {
  std::vector<fs::path> dirs;
  if (const char* prefix = std::getenv("TESSDATA_PREFIX"); prefix != nullptr && *prefix != '\0') {
    dirs.emplace_back(prefix);
    dirs.emplace_back(fs::path(prefix) / "tessdata");
  }
  for (const char* d : {"/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                        "/usr/share/tessdata", "/usr/local/share/tessdata"})
    dirs.emplace_back(d);
  for (const fs::path& dir : dirs) {
    std::error_code ec;
    OcrData data;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const fs::path& p = it->path();
      // osd (orientation and script detection) and equ (equations) are not languages of text.
      if (p.extension() == ".traineddata" && p.stem() != "osd" && p.stem() != "equ")
        data.languages.push_back(p.stem().string());
    }
    if (data.languages.empty()) continue;
    std::sort(data.languages.begin(), data.languages.end());
    data.datapath = dir.string();
    return data;
  }
  return {};
}

std::vector<std::string> split_ocr_languages(const std::string& spec) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t plus = spec.find('+', start);
    const std::string code = spec.substr(start, plus == std::string::npos ? std::string::npos : plus - start);
    const bool ok = !code.empty() && std::all_of(code.begin(), code.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    });
    if (!ok) throw Error("--ocr-lang: '" + spec + "' is not a list of tesseract language codes such as eng+chi_sim");
    out.push_back(code);
    if (plus == std::string::npos) return out;
    start = plus + 1;
  }
}

std::string ocr_language_package(const std::string& language) {
  std::string pkg = "tesseract-ocr-" + language;
  std::replace(pkg.begin(), pkg.end(), '_', '-');
  std::transform(pkg.begin(), pkg.end(), pkg.begin(), [](char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; });
  return pkg;
}

// The C API of libtesseract, resolved by name. The types come from the header the build saw, so a
// library of another major version (another soname) is never loaded.
struct OcrEngine::Api {
  decltype(&TessBaseAPICreate) create;
  decltype(&TessBaseAPIDelete) destroy;
  decltype(&TessBaseAPIInit2) init;
  decltype(&TessBaseAPISetVariable) set_variable;
  decltype(&TessBaseAPISetImage) set_image;
  decltype(&TessBaseAPISetSourceResolution) set_resolution;
  decltype(&TessBaseAPIGetUTF8Text) get_text;
  decltype(&TessDeleteText) delete_text;
};

namespace {

const std::string kLibrary = "libtesseract.so." + std::to_string(TESSERACT_MAJOR_VERSION);

template <class F>
void resolve(void* lib, const char* name, F& f) {
  f = reinterpret_cast<F>(::dlsym(lib, name));
  if (f == nullptr) throw Error("OCR: " + kLibrary + " has no " + name);
}

}  // namespace

OcrEngine::OcrEngine(const std::string& datapath, const std::string& languages) : languages_(languages) {
  // Must precede the first load of libgomp (a dependency of libtesseract): it reads the variable once.
  ::setenv("OMP_THREAD_LIMIT", "1", 1);
  void* lib = ::dlopen(kLibrary.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) throw Error("OCR needs " + kLibrary + " (Debian: apt-get install libtesseract5)");
  auto api = std::make_unique<Api>();
  resolve(lib, "TessBaseAPICreate", api->create);
  resolve(lib, "TessBaseAPIDelete", api->destroy);
  resolve(lib, "TessBaseAPIInit2", api->init);
  resolve(lib, "TessBaseAPISetVariable", api->set_variable);
  resolve(lib, "TessBaseAPISetImage", api->set_image);
  resolve(lib, "TessBaseAPISetSourceResolution", api->set_resolution);
  resolve(lib, "TessBaseAPIGetUTF8Text", api->get_text);
  resolve(lib, "TessDeleteText", api->delete_text);
  TessBaseAPI* h = api->create();
  if (h == nullptr) throw Error("OCR: tesseract could not start");
  // The LSTM recognizer: the only one the data of Debian's tesseract-ocr-* packages (tessdata_fast) holds.
  if (api->init(h, datapath.c_str(), languages.c_str(), tesseract::OEM_LSTM_ONLY) != 0) {
    api->destroy(h);
    throw Error("OCR: tesseract cannot load '" + languages + "' from " + datapath);
  }
  api->set_variable(h, "debug_file", "/dev/null");  // "Estimating resolution as ..." and such
  handle_ = h;
  api_ = api.release();
}

OcrEngine::~OcrEngine() {
  if (api_ != nullptr) api_->destroy(static_cast<TessBaseAPI*>(handle_));
  delete api_;
}

std::string OcrEngine::recognize(const unsigned char* pixels, int width, int height, int bytes_per_row, int dpi) {
  auto* h = static_cast<TessBaseAPI*>(handle_);
  api_->set_image(h, pixels, width, height, 1, bytes_per_row);
  api_->set_resolution(h, dpi);
  char* text = api_->get_text(h);
  if (text == nullptr) throw Error("OCR: tesseract failed on a page");
  std::string out(text);
  api_->delete_text(text);
  return out;
}

}  // namespace abridge::pipeline
