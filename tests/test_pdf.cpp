// PDF text extraction: real documents (text, page order, UTF-8, CJK), the line-end hyphens poppler drops,
// every damaged file of qpdf's test suite (no crash, no hang, a status and a reason), encryption,
// documents without text, the time and memory limits (OCR pages included), files that are not PDFs, and
// several threads at once. Reading scanned pages by OCR is tested in test_reading.cpp.
#include "pipeline/pdf_extract.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <thread>
#include <vector>

#include "base/utf8.h"
#include "tests/test_support.h"

using namespace abridge::testing;
using abridge::pipeline::extract_pdf_text;
using abridge::pipeline::PdfLimits;
using abridge::pipeline::PdfStatus;
using abridge::pipeline::PdfText;
namespace fs = std::filesystem;

namespace {

fs::path pdf_data(const std::string& name) { return source_path("tests/data/pdf/" + name); }

std::vector<std::string> split_pages(const std::string& text) {
  std::vector<std::string> pages(1);
  for (const char c : text) {
    if (c == '\f') pages.emplace_back();
    else pages.back() += c;
  }
  return pages;
}

// What every result must satisfy, whatever the document.
void expect_well_formed(const PdfText& r, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(abridge::find_invalid_utf8(r.text), std::string::npos);
  EXPECT_EQ(abridge::find_invalid_utf8(r.message), std::string::npos);
  if (r.status == PdfStatus::kOk) {
    EXPECT_TRUE(r.message.empty()) << r.message;
    EXPECT_GE(r.pages, 1);
    EXPECT_EQ(std::count(r.text.begin(), r.text.end(), '\f'), r.pages - 1);
    for (const std::string& page : split_pages(r.text))
      for (size_t nl = page.find('\n'); nl != std::string::npos; nl = page.find('\n', nl + 1))
        ASSERT_TRUE(nl == 0 || (page[nl - 1] != ' ' && page[nl - 1] != '\t')) << "a line ends in a blank";
  } else {
    EXPECT_TRUE(r.text.empty());
    EXPECT_EQ(r.message.rfind(std::string(to_string(r.status)) + ": ", 0), 0u) << r.message;
    EXPECT_GT(r.message.size(), std::string(to_string(r.status)).size() + 2) << r.message;
    EXPECT_EQ(r.message.find('\n'), std::string::npos) << r.message;
  }
}

// Pages drawn by `contents` (one content stream each) with /F1 = `font` (object 3).
// Objects: 1 catalog, 2 pages, 3 font, 4.. extra, then a page and its contents per page.
std::string make_pages_pdf(const std::vector<std::string>& contents, const std::string& font,
                           const std::vector<std::string>& extra = {}) {
  std::vector<std::string> objs = {"<< /Type /Catalog /Pages 2 0 R >>", "", font};
  objs.insert(objs.end(), extra.begin(), extra.end());
  std::string kids;
  for (const std::string& c : contents) {
    const size_t page = objs.size() + 1;
    kids += std::to_string(page) + " 0 R ";
    objs.push_back("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                   "/Contents " + std::to_string(page + 1) + " 0 R >>");
    objs.push_back(pdf_stream(c));
  }
  objs[1] = "<< /Type /Pages /Kids [" + kids + "] /Count " + std::to_string(contents.size()) + " >>";
  return make_pdf(objs);
}

const char* const kHelvetica = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>";

// Chinese text in a Type0 font that is not embedded: the glyph ids (CIDs 1..) map to Unicode only through
// the ToUnicode CMap, as in most CJK PDFs. CID i+1 is the i-th character of kCjkChars.
const std::vector<std::pair<std::string, const char*>> kCjkChars = {
    {"957F", "长"}, {"6587", "文"}, {"6863", "档"}, {"6458", "摘"}, {"8981", "要"},
    {"6D4B", "测"}, {"8BD5", "试"}, {"7B2C", "第"}, {"4E8C", "二"}, {"9875", "页"}};

std::string make_cjk_pdf() {
  std::string cmap =
      "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
      "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
      "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
      "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n" +
      std::to_string(kCjkChars.size()) + " beginbfchar\n";
  for (size_t i = 0; i < kCjkChars.size(); ++i) {
    char cid[24];
    std::snprintf(cid, sizeof cid, "%04zX", i + 1);
    cmap += std::string("<") + cid + "> <" + kCjkChars[i].first + ">\n";
  }
  cmap += "endbfchar\nendcmap\nCMapName currentdict /CMap defineresource pop\nend\nend";
  const std::string type0 =
      "<< /Type /Font /Subtype /Type0 /BaseFont /SimSun /Encoding /Identity-H /DescendantFonts [4 0 R] "
      "/ToUnicode 5 0 R >>";
  const std::string cid_font =
      "<< /Type /Font /Subtype /CIDFontType2 /BaseFont /SimSun "
      "/CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> /DW 1000 >>";
  return make_pages_pdf({"BT /F1 24 Tf 72 700 Td <0001000200030004000500060007> Tj ET",
                         "BT /F1 24 Tf 72 700 Td <00080009000A> Tj ET"},
                        type0, {cid_font, pdf_stream(cmap)});
}

std::string make_english_pdf() {
  return make_pages_pdf({"BT /F1 12 Tf 72 720 Td (The first page says hello.) Tj 0 -20 Td (A second line.) Tj ET",
                         "BT /F1 12 Tf 72 720 Td (The second page follows.) Tj ET",
                         "BT /F1 12 Tf 72 720 Td (The third page ends it.) Tj ET"},
                        kHelvetica);
}

// Many pages that all draw one long content stream: small on disk, seconds of work for poppler.
std::string make_slow_pdf(int pages, int lines_per_page) {
  std::string content = "BT /F1 8 Tf 20 780 Td 9 TL\n";
  for (int i = 0; i < lines_per_page; ++i) content += "(Every line of this page is the same line of text.) '\n";
  content += "ET";
  std::vector<std::string> objs = {"<< /Type /Catalog /Pages 2 0 R >>", "", kHelvetica, pdf_stream(content)};
  std::string kids;
  for (int i = 0; i < pages; ++i) {
    kids += std::to_string(objs.size() + 1) + " 0 R ";
    objs.push_back("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                   "/Contents 4 0 R >>");
  }
  objs[1] = "<< /Type /Pages /Kids [" + kids + "] /Count " + std::to_string(pages) + " >>";
  return make_pdf(objs);
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

TEST(PdfStatus, Names) {
  EXPECT_STREQ(to_string(PdfStatus::kOk), "ok");
  EXPECT_STREQ(to_string(PdfStatus::kEncrypted), "encrypted");
  EXPECT_STREQ(to_string(PdfStatus::kNoText), "no text layer (scanned images?)");
  EXPECT_STREQ(to_string(PdfStatus::kBroken), "broken PDF");
  EXPECT_STREQ(to_string(PdfStatus::kTimeout), "timed out");
  EXPECT_STREQ(to_string(PdfStatus::kOutOfMemory), "out of memory");
  EXPECT_STREQ(to_string(PdfStatus::kOcrFailed), "OCR failed");
}

TEST(PdfReal, SimhFaq) {
  const PdfText r = extract_pdf_text(pdf_data("real/simh_faq.pdf"));
  ASSERT_EQ(r.status, PdfStatus::kOk) << r.message;
  EXPECT_EQ(r.pages, 13);
  expect_well_formed(r, "simh_faq");
  const auto pages = split_pages(r.text);
  ASSERT_EQ(pages.size(), 13u);
  EXPECT_TRUE(contains(pages[0], "SIMH FAQ")) << pages[0].substr(0, 300);
  EXPECT_TRUE(contains(pages[0], "Copyright (c) 1993-2005, Robert M Supnik"));
  EXPECT_TRUE(contains(pages[1], "1.1 WHAT IS SIMH?"));
  EXPECT_TRUE(contains(pages[12], "tell console to boot cdrom"));
}

TEST(PdfReal, RIntroReadingOrder) {
  const PdfText r = extract_pdf_text(pdf_data("real/R-intro.pdf"));
  ASSERT_EQ(r.status, PdfStatus::kOk) << r.message;
  EXPECT_EQ(r.pages, 113);
  expect_well_formed(r, "R-intro");
  const auto pages = split_pages(r.text);
  ASSERT_EQ(pages.size(), 113u);
  EXPECT_TRUE(contains(pages[0], "An Introduction to R"));
  // One sentence across a footnote mark stays on one line in reading order (raw order breaks it).
  EXPECT_TRUE(contains(pages[10], "Normally all\nalphanumeric symbols are allowed1 (and in some countries"))
      << pages[10].substr(0, 1500);
  // Paragraphs stay apart: a blank line before the section heading.
  EXPECT_TRUE(contains(pages[10], "for further details.\n\n1.8 R commands, case sensitivity, etc."));
  EXPECT_TRUE(contains(pages[109], "Appendix D: Function and variable index"));
  EXPECT_TRUE(contains(r.text, "‘.’ and ‘_’")) << "non-ASCII quotes";
}

TEST(PdfGenerated, EnglishPagesInOrder) {
  TempDir dir;
  write_file(dir / "en.pdf", make_english_pdf());
  const PdfText r = extract_pdf_text((dir / "en.pdf").string());
  ASSERT_EQ(r.status, PdfStatus::kOk) << r.message;
  expect_well_formed(r, "en.pdf");
  EXPECT_EQ(r.pages, 3);
  EXPECT_EQ(r.text, "The first page says hello.\nA second line.\fThe second page follows.\fThe third page ends it.");
}

TEST(PdfGenerated, ChineseThroughToUnicode) {
  TempDir dir;
  write_file(dir / "zh.pdf", make_cjk_pdf());
  const PdfText r = extract_pdf_text((dir / "zh.pdf").string());
  ASSERT_EQ(r.status, PdfStatus::kOk) << r.message;
  expect_well_formed(r, "zh.pdf");
  EXPECT_EQ(r.pages, 2);
  EXPECT_EQ(r.text, "长文档摘要测试\f第二页");
}

TEST(PdfGenerated, NoTextLayer) {
  TempDir dir;
  // A drawn line and an empty page: pages, but no text.
  write_file(dir / "drawing.pdf", make_pages_pdf({"72 72 m 500 700 l S", " "}, kHelvetica));
  const PdfText r = extract_pdf_text((dir / "drawing.pdf").string());
  EXPECT_EQ(r.status, PdfStatus::kNoText) << r.message;
  EXPECT_EQ(r.pages, 2);
  expect_well_formed(r, "drawing.pdf");
  // Text made only of blanks is no text either.
  write_file(dir / "blank.pdf", make_pages_pdf({"BT /F1 12 Tf 72 720 Td (     ) Tj ET"}, kHelvetica));
  const PdfText b = extract_pdf_text((dir / "blank.pdf").string());
  EXPECT_EQ(b.status, PdfStatus::kNoText) << b.message;
  expect_well_formed(b, "blank.pdf");
}

TEST(PdfGenerated, LineEndHyphensPopplerDropsComeBack) {
  // poppler's text output drops a hyphen that ends a line, with the line break: "well-" / "known" became
  // "wellknown", "Anglo-" / "Saxon" "AngloSaxon". They are put back for the reading stage to decide.
  TempDir dir;
  write_file(dir / "hy.pdf", make_text_layer_pdf({{"The staff are well-", "known, the archive Anglo-",
                                                   "Saxon, the infor-", "mation free."}}));
  const PdfText r = extract_pdf_text((dir / "hy.pdf").string());
  ASSERT_EQ(r.status, PdfStatus::kOk) << r.message;
  expect_well_formed(r, "hy.pdf");
  EXPECT_EQ(r.text, "The staff are well-\nknown, the archive Anglo-\nSaxon, the infor-\nmation free.");
}

TEST(PdfGenerated, RestoringHyphensNeedsTheWordsToLineUp) {
  using abridge::pipeline::restore_line_end_hyphens;
  EXPECT_EQ(restore_line_end_hyphens("the wellknown staff", {"the", "well-", "known", "staff"}), "the well-\nknown staff");
  EXPECT_EQ(restore_line_end_hyphens("a -b", {"a", "-", "b"}), "a -b");  // nothing was joined
  EXPECT_EQ(restore_line_end_hyphens("a b", {"a", "-", "b"}), "a -\nb");  // a line that ended in a lone "-"
  // Words that are not in the text (right-to-left text comes out reordered): the page is left alone.
  EXPECT_EQ(restore_line_end_hyphens("olleh wellknown", {"hello", "well-", "known"}), "olleh wellknown");
}

TEST(PdfOcr, EachPageGetsTheTimeoutAgainAndATimeoutNamesIt) {
  const abridge::pipeline::OcrData data = abridge::pipeline::find_ocr_data();
  if (!data.has("eng") || !have_program("pdftoppm") || !have_program("img2pdf"))
    GTEST_SKIP() << "needs tesseract-ocr-eng, poppler-utils and img2pdf";
  TempDir dir;
  const std::string cmd = "pdftoppm -gray -png -singlefile -r 150 -f 11 -l 11 " + quote(pdf_data("real/R-intro.pdf")) +
                          " " + quote(dir / "p") + " && img2pdf " + quote(dir / "p.png") + " -o " + quote(dir / "scan.pdf");
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  abridge::pipeline::OcrOptions ocr;
  ocr.mode = abridge::pipeline::OcrMode::kAuto;
  ocr.languages = "eng";
  ocr.data = data;
  std::vector<int> pages;
  ocr.progress = [&](const abridge::pipeline::OcrProgress& p) { pages.push_back(p.page); };
  PdfLimits limits;
  // Ample for the text layer of one page; a dense page takes tesseract seconds (reading it is tested
  // in test_reading).
  limits.timeout_seconds = 0.5;
  const auto start = std::chrono::steady_clock::now();
  const PdfText r = extract_pdf_text((dir / "scan.pdf").string(), limits, ocr);
  EXPECT_EQ(r.status, PdfStatus::kTimeout) << r.message;
  EXPECT_EQ(r.message, "timed out: OCR of page 1 took longer than 0.5 s");
  expect_well_formed(r, "scan.pdf");
  const double took = seconds_since(start);
  EXPECT_GT(took, 0.5);
  EXPECT_LT(took, 1.5);
  EXPECT_EQ(pages, std::vector<int>{1});
}

TEST(PdfEncrypted, UserPasswordIsEncryptedOwnerOnlyOpens) {
  const PdfText locked = extract_pdf_text(pdf_data("generated/encrypted-user-password.pdf"));
  EXPECT_EQ(locked.status, PdfStatus::kEncrypted) << locked.message;
  expect_well_formed(locked, "user password");
  EXPECT_EQ(locked.message, "encrypted: the document needs a password");

  const PdfText open = extract_pdf_text(pdf_data("generated/encrypted-owner-password.pdf"));
  ASSERT_EQ(open.status, PdfStatus::kOk) << open.message;
  expect_well_formed(open, "owner password only");
  EXPECT_EQ(open.text, "Secret minutes of the abridge test suite.");
}

TEST(PdfNotAPdf, MissingEmptyTextDirectory) {
  TempDir dir;
  PdfText r = extract_pdf_text((dir / "nope.pdf").string());
  EXPECT_EQ(r.status, PdfStatus::kBroken);
  EXPECT_EQ(r.message, "broken PDF: cannot open: No such file or directory");

  write_file(dir / "empty.pdf", "");
  r = extract_pdf_text((dir / "empty.pdf").string());
  EXPECT_EQ(r.status, PdfStatus::kBroken);
  EXPECT_EQ(r.message, "broken PDF: empty file");

  write_file(dir / "notes.pdf", "Just some notes, saved with the wrong extension.\n");
  r = extract_pdf_text((dir / "notes.pdf").string());
  EXPECT_EQ(r.status, PdfStatus::kBroken);
  EXPECT_EQ(r.message, "broken PDF: not a PDF (no %PDF- header in the first 1024 bytes)");

  r = extract_pdf_text(dir.path().string());
  EXPECT_EQ(r.status, PdfStatus::kBroken);
  EXPECT_EQ(r.message, "broken PDF: is a directory");

  // A header and nothing else: poppler's own reason is quoted.
  write_file(dir / "header-only.pdf", "%PDF-1.7\n");
  r = extract_pdf_text((dir / "header-only.pdf").string());
  EXPECT_EQ(r.status, PdfStatus::kBroken);
  expect_well_formed(r, "header-only.pdf");
  std::printf("header-only.pdf: %s\n", r.message.c_str());

  // The first half of a real PDF.
  const std::string real = read_file(pdf_data("real/simh_faq.pdf"));
  write_file(dir / "truncated.pdf", real.substr(0, real.size() / 2));
  r = extract_pdf_text((dir / "truncated.pdf").string());
  expect_well_formed(r, "truncated.pdf");
  std::printf("truncated.pdf: %s (%s)\n", to_string(r.status), r.message.c_str());
}

TEST(PdfLimits, TimeoutKillsTheChild) {
  PdfLimits limits;
  limits.timeout_seconds = 0.001;
  const auto start = std::chrono::steady_clock::now();
  const PdfText r = extract_pdf_text(pdf_data("real/R-intro.pdf"), limits);
  const double took = seconds_since(start);
  EXPECT_EQ(r.status, PdfStatus::kTimeout) << r.message;
  EXPECT_EQ(r.message, "timed out: extraction took longer than 0.001 s");
  expect_well_formed(r, "timeout");
  EXPECT_LT(took, 1.0);
  // A child busy inside poppler is killed too, and soon after the deadline.
  TempDir dir;
  write_file(dir / "slow.pdf", make_slow_pdf(6000, 80));
  limits.timeout_seconds = 0.3;
  const auto slow_start = std::chrono::steady_clock::now();
  const PdfText slow = extract_pdf_text((dir / "slow.pdf").string(), limits);
  const double slow_took = seconds_since(slow_start);
  EXPECT_EQ(slow.status, PdfStatus::kTimeout) << slow.message;
  EXPECT_GT(slow_took, 0.3);
  EXPECT_LT(slow_took, 1.0);
  std::printf("slow.pdf: %s after %.3f s\n", slow.message.c_str(), slow_took);
  // A zero timeout is no time at all, not "no limit".
  limits.timeout_seconds = 0;
  EXPECT_EQ(extract_pdf_text(pdf_data("real/simh_faq.pdf"), limits).status, PdfStatus::kTimeout);
}

TEST(PdfLimits, MemoryLimitIsReportedNotFatal) {
  PdfLimits limits;
  for (const size_t mb : {1, 2, 4}) {
    limits.max_memory_bytes = mb << 20;
    const PdfText r = extract_pdf_text(pdf_data("real/R-intro.pdf"), limits);
    SCOPED_TRACE(std::to_string(mb) + " MiB");
    EXPECT_TRUE(r.status == PdfStatus::kOutOfMemory || r.status == PdfStatus::kBroken) << r.message;
    expect_well_formed(r, "memory");
    std::printf("R-intro.pdf with %zu MiB: %s\n", mb, r.message.c_str());
  }
  // The limit is added to what the caller has mapped, so 64 MiB is plenty for this document.
  limits.max_memory_bytes = size_t{64} << 20;
  const PdfText r = extract_pdf_text(pdf_data("real/R-intro.pdf"), limits);
  EXPECT_EQ(r.status, PdfStatus::kOk) << r.message;
}

TEST(PdfMalformed, EveryFileEndsWithAStatusAndAReason) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(pdf_data("malformed")))
    if (e.path().extension() == ".pdf") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  ASSERT_EQ(files.size(), 85u);

  PdfLimits limits;
  limits.timeout_seconds = 10;
  limits.max_memory_bytes = size_t{1} << 30;
  std::map<std::string, int> counts;
  double slowest = 0;
  std::string slowest_name;
  const auto all = std::chrono::steady_clock::now();
  for (const fs::path& f : files) {
    const auto start = std::chrono::steady_clock::now();
    const PdfText r = extract_pdf_text(f.string(), limits);
    const double took = seconds_since(start);
    const std::string name = f.filename().string();
    EXPECT_LT(took, 20.0) << name;
    EXPECT_GE(static_cast<int>(r.status), static_cast<int>(PdfStatus::kOk)) << name;
    EXPECT_LE(static_cast<int>(r.status), static_cast<int>(PdfStatus::kOutOfMemory)) << name;
    expect_well_formed(r, name);
    ++counts[to_string(r.status)];
    if (took > slowest) slowest = took, slowest_name = name;
    if (r.status != PdfStatus::kOk) std::printf("  %-40s %s\n", name.c_str(), r.message.c_str());
  }
  std::printf("%zu malformed PDFs in %.2f s (slowest %s, %.2f s):", files.size(), seconds_since(all),
              slowest_name.c_str(), slowest);
  for (const auto& [status, n] : counts) std::printf(" %s %d;", status.c_str(), n);
  std::printf("\n");
}

TEST(PdfMalformed, PopplerMessagesStayOutOfStderr) {
  ::testing::internal::CaptureStderr();
  for (const char* name : {"malformed/bad1.pdf", "malformed/xref-errors.pdf", "malformed/issue-99.pdf"})
    extract_pdf_text(pdf_data(name).string());
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST(PdfConcurrency, FourThreadsAtOnce) {
  TempDir dir;
  write_file(dir / "en.pdf", make_english_pdf());
  write_file(dir / "zh.pdf", make_cjk_pdf());
  const std::vector<std::string> paths = {pdf_data("real/simh_faq.pdf").string(),
                                          pdf_data("real/R-intro.pdf").string(), (dir / "en.pdf").string(),
                                          (dir / "zh.pdf").string()};
  std::vector<std::string> expected;
  for (const std::string& p : paths) expected.push_back(extract_pdf_text(p).text);

  constexpr int kRounds = 3;
  std::vector<std::vector<PdfText>> got(paths.size());
  std::vector<std::thread> threads;
  for (size_t t = 0; t < paths.size(); ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) got[t].push_back(extract_pdf_text(paths[t]));
    });
  for (auto& th : threads) th.join();
  for (size_t t = 0; t < paths.size(); ++t)
    for (const PdfText& r : got[t]) {
      EXPECT_EQ(r.status, PdfStatus::kOk) << paths[t] << ": " << r.message;
      EXPECT_EQ(r.text, expected[t]) << paths[t];
    }
}
