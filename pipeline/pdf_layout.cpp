// The child's reading of a PDF (pdf_child.h): poppler's text of each page in reading order, laid out as
// abridge's page text (line ends, no trailing blanks, the line-end hyphens poppler drops put back), and
// OCR of the pages without a text layer. Runs in the bounded child process that pdf_extract.cpp forks;
// nothing here limits time or memory itself.
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-image.h>
#include <poppler-page-renderer.h>
#include <poppler-page.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/utf8.h"
#include "pipeline/pdf_child.h"

namespace abridge::pipeline {

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

namespace pdf_child {
namespace {

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

}  // namespace

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
}  // namespace pdf_child
}  // namespace abridge::pipeline
