// The reading stage shared by summarize, watch and chunk (pipeline/document_reader.h): PDF text clean-up
// (ligatures, soft hyphens, hyphens at line ends, spaces between CJK characters), text encodings (legacy
// code pages detected and converted, UTF-16 without a byte-order mark, --encoding), line-break control
// characters, files that are not text, and OCR of scanned PDFs. Each case is one a user met: the text the
// model received was not what the document says.
#include <gtest/gtest.h>
#include <iconv.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/utf8.h"
#include "chunker/chunker.h"
#include "engine/embedded_data.h"
#include "engine/tokenizer.h"
#include "pipeline/document_reader.h"
#include "pipeline/token_counter.h"
#include "tests/test_support.h"

using namespace abridge::testing;
using namespace abridge::pipeline;
namespace fs = std::filesystem;

namespace {

Document read(const fs::path& path, const ReadOptions& o = {}) { return read_document(path.string(), o); }

// The message read_document() throws for `path`, or "" when it reads it.
std::string read_error(const fs::path& path, const ReadOptions& o = {}) {
  try {
    read(path, o);
  } catch (const abridge::Error& e) {
    return e.what();
  }
  return "";
}

// `utf8` in `encoding`, by glibc's iconv.
std::string encode(const std::string& utf8, const std::string& encoding) {
  iconv_t cd = iconv_open(encoding.c_str(), "UTF-8");
  if (cd == reinterpret_cast<iconv_t>(-1)) throw std::runtime_error("iconv cannot write " + encoding);
  std::string out(utf8.size() * 4 + 16, '\0');
  char* in = const_cast<char*>(utf8.data());
  size_t in_left = utf8.size(), out_left = out.size();
  char* op = out.data();
  const size_t r = iconv(cd, &in, &in_left, &op, &out_left);
  iconv_close(cd);
  if (r == static_cast<size_t>(-1)) throw std::runtime_error("cannot write the text in " + encoding);
  out.resize(out.size() - out_left);
  return out;
}

const abridge::engine::Tokenizer& tokenizer() {
  static const auto tok = abridge::engine::Tokenizer::from_json(abridge::engine::bundled_tokenizer_json());
  return tok;
}
size_t tokens(const std::string& text) { return TokenizerCounter(tokenizer()).count(text); }

std::vector<uint32_t> code_points_without_spaces(const std::string& s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    const size_t len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    uint32_t cp = len == 1 ? b : b & (0xFF >> (len + 1));
    for (size_t k = 1; k < len && i + k < s.size(); ++k) cp = cp << 6 | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    i += len;
    if (cp != ' ' && cp != '\n' && cp != '\t' && cp != '\f' && cp != '\r') out.push_back(cp);
  }
  return out;
}

// Character accuracy of `got` against `truth`: 1 - (Levenshtein distance) / (characters of truth), over the
// characters that are not white space (OCR and the text layer break lines differently).
double character_accuracy(const std::string& got, const std::string& truth) {
  const auto a = code_points_without_spaces(got), b = code_points_without_spaces(truth);
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    prev.swap(cur);
  }
  return b.empty() ? 0.0 : 1.0 - static_cast<double>(prev[b.size()]) / static_cast<double>(b.size());
}

// Runs of spaces and line breaks as one space.
std::string squeeze(const std::string& s) {
  std::string out;
  for (const char c : s) {
    const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\f';
    if (space && (out.empty() || out.back() == ' ')) continue;
    out += space ? ' ' : c;
  }
  return out;
}

}  // namespace

// ---- PDF text layer -------------------------------------------------------------------------------------

TEST(ReadingPdf, LigaturesAreFoldedButFullWidthFormsStay) {
  TempDir dir;
  write_file(dir / "lig.pdf", make_text_layer_pdf({{"The o\uFB03ce \uFB01led its \uFB01nal \uFB02ood assessment.",
                                                    "Sta\uFB00 wrote the e\uFB04uent report for LibreO\uFB00ice.",
                                                    "\uFF08\u4E00\uFF09\u7B2C\uFF11\u6761\uFF1A\u5E02\u56FE\u4E66\u9986\u3002"}}));
  const PdfText raw = extract_pdf_text((dir / "lig.pdf").string());
  ASSERT_EQ(raw.status, PdfStatus::kOk) << raw.message;
  ASSERT_TRUE(contains(raw.text, "o\uFB03ce")) << "poppler gives the ligatures as they are: " << raw.text;

  const Document doc = read(dir / "lig.pdf");
  EXPECT_TRUE(contains(doc.text, "The office filed its final flood assessment.")) << doc.text;
  EXPECT_TRUE(contains(doc.text, "Staff wrote the effluent report for LibreOffice.")) << doc.text;
  // NFKC would make these "(一)第1条:": full-width punctuation and digits are the document's own.
  EXPECT_TRUE(contains(doc.text, "\uFF08\u4E00\uFF09\u7B2C\uFF11\u6761\uFF1A\u5E02\u56FE\u4E66\u9986\u3002")) << doc.text;
  EXPECT_EQ(doc.pages, 1);
  EXPECT_EQ(doc.page_starts, std::vector<size_t>{0});
  EXPECT_TRUE(doc.ocr_pages.empty());
}

TEST(ReadingPdf, TheRealManualSaysLibreOffice) {
  // The Debian Edu manual's text as pdftotext extracted it holds U+FB00 in "LibreOﬀice", "postoﬀice", ...
  const fs::path manual = source_path("tests/data/texts/debian-edu-bookworm-manual.zh-cn.txt");
  ASSERT_TRUE(contains(read_file(manual), "LibreO\uFB00ice"));
  const Document doc = read(manual);
  EXPECT_TRUE(contains(doc.text, "LibreOffice 7.4")) << "after reading";
  EXPECT_TRUE(contains(doc.text, "jdoe@postoffice.intern"));
  EXPECT_FALSE(contains(doc.text, "\uFB00"));
  EXPECT_EQ(doc.encoding, "UTF-8");
}

TEST(ReadingPdf, SoftHyphensAtLineEndsJoinTheWord) {
  TempDir dir;
  write_file(dir / "shy.pdf", make_text_layer_pdf({{"Residents can ask at the infor\u00AD",
                                                    "mation desk of the library, open every day ex\u00AD",
                                                    "cept Sunday. Vol\u00ADun\u00ADteers staff it."}}));
  const PdfText raw = extract_pdf_text((dir / "shy.pdf").string());
  ASSERT_TRUE(contains(raw.text, "infor\u00AD\nmation")) << raw.text;
  const Document doc = read(dir / "shy.pdf");
  EXPECT_EQ(doc.text, "Residents can ask at the information\ndesk of the library, open every day except\nSunday. "
                      "Volunteers staff it.");
  // The chunker's cleaned text (what the model is sent) reads as one sentence.
  EXPECT_TRUE(contains(abridge::chunker::clean_text(doc.text), "at the information desk of the library"));

  // The same in a text file.
  write_file(dir / "shy.txt", "Residents can ask at the infor\u00AD\nmation desk.\n");
  EXPECT_EQ(read(dir / "shy.txt").text, "Residents can ask at the information\ndesk.\n");
}

TEST(ReadingPdf, RealHyphensAtLineEndsStay) {
  // Poppler joins "well-" and "known" into "wellknown"; the reading stage puts the hyphen back when the
  // document treats both halves as words, and joins the typesetter's breaks.
  TempDir dir;
  write_file(dir / "hy.pdf", make_text_layer_pdf({{"The library is well known in the town, and it is well kept. Its",
                                                    "staff are well-",
                                                    "known to every resident: the infor-",
                                                    "mation desk answers 32-",
                                                    "bit questions from the Anglo-",
                                                    "Saxon archive. Information is free."}}));
  const Document doc = read(dir / "hy.pdf");
  EXPECT_TRUE(contains(doc.text, "staff are well-known\nto every resident")) << doc.text;
  EXPECT_TRUE(contains(doc.text, "the information\ndesk answers 32-bit\nquestions from the Anglo-Saxon\narchive.")) << doc.text;
  const std::string clean = abridge::chunker::clean_text(doc.text);
  EXPECT_TRUE(contains(clean, "well-known to every resident")) << clean;
  EXPECT_FALSE(contains(clean, "wellknown")) << clean;

  // A text file is read the same way.
  write_file(dir / "hy.txt", "It is well known and well kept. Its staff are well-\nknown; ask the infor-\nmation desk.\n");
  EXPECT_EQ(read(dir / "hy.txt").text, "It is well known and well kept. Its staff are well-known;\nask the information\ndesk.\n");
}

TEST(HyphenRule, Examples) {
  const WordCounts none("");
  EXPECT_TRUE(keep_line_end_hyphen(hyphen_evidence(none, "32", "bit")));
  EXPECT_TRUE(keep_line_end_hyphen(hyphen_evidence(none, "COVID", "19")));
  EXPECT_TRUE(keep_line_end_hyphen(hyphen_evidence(none, "Anglo", "Saxon")));
  EXPECT_TRUE(keep_line_end_hyphen(hyphen_evidence(none, "e", "mail")));
  EXPECT_FALSE(keep_line_end_hyphen(hyphen_evidence(none, "infor", "mation")));
  EXPECT_FALSE(keep_line_end_hyphen(hyphen_evidence(none, "INFOR", "MATION")));  // all capitals: no evidence
  const WordCounts doc("It was well made and widely known. The information is free. A hand-made sign, "
                       "a well-known name, a handmade cup, a handmade bowl.");
  EXPECT_TRUE(keep_line_end_hyphen(hyphen_evidence(doc, "well", "known")));    // "well-known" elsewhere
  EXPECT_FALSE(keep_line_end_hyphen(hyphen_evidence(doc, "in", "formation")));  // "information" elsewhere
  EXPECT_FALSE(keep_line_end_hyphen(hyphen_evidence(doc, "hand", "made")));    // "handmade" twice, "hand-made" once
  EXPECT_TRUE(keep_line_end_hyphen(hyphen_evidence(doc, "widely", "made")));   // both words of their own
}

// The figures quoted in text_normalize.h: every in-line hyphenated compound of the real PDFs broken in turn
// at a line end (the hyphen must stay), and every word of six letters or more broken at each point that
// leaves two letters on each side (the hyphen must go), with the document's counts less that occurrence.
TEST(HyphenRule, OnTheRealPdfs) {
  for (const char* name : {"R-intro.pdf", "simh_faq.pdf"}) {
    const Document doc = read(source_path(std::string("tests/data/pdf/real/") + name));
    const WordCounts counts(doc.text);
    const std::string& t = doc.text;
    auto alnum = [&](size_t i) {
      const auto c = static_cast<unsigned char>(t[i]);
      return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c >= 0x80;
    };
    size_t kept = 0, compounds = 0, joined = 0, splits = 0;
    for (size_t i = 0; i < t.size();) {
      if (!alnum(i)) {
        ++i;
        continue;
      }
      size_t e = i;
      while (e < t.size() && alnum(e)) ++e;
      const bool hyphen_before = i > 0 && t[i - 1] == '-', hyphen_after = e < t.size() && t[e] == '-';
      if (hyphen_after && e + 1 < t.size() && alnum(e + 1)) {  // "a-b": broken after the hyphen
        size_t e2 = e + 1;
        while (e2 < t.size() && alnum(e2)) ++e2;
        HyphenEvidence ev = hyphen_evidence(counts, t.substr(i, e - i), t.substr(e + 1, e2 - e - 1));
        ev.hyphenated -= 1;
        ++compounds;
        kept += keep_line_end_hyphen(ev);
      } else if (!hyphen_before && !hyphen_after && e - i >= 6) {
        const std::string w = t.substr(i, e - i);
        const bool plain = std::all_of(w.begin(), w.end(), [](char c) { return c >= 'a' && c <= 'z'; }) ||
                           (w[0] >= 'A' && w[0] <= 'Z' &&
                            std::all_of(w.begin() + 1, w.end(), [](char c) { return c >= 'a' && c <= 'z'; }));
        for (size_t cut = 2; plain && cut + 2 <= w.size(); ++cut) {
          HyphenEvidence ev = hyphen_evidence(counts, w.substr(0, cut), w.substr(cut));
          ev.joined -= 1;
          ++splits;
          joined += !keep_line_end_hyphen(ev);
        }
      }
      i = e;
    }
    const double keep_rate = static_cast<double>(kept) / static_cast<double>(compounds);
    const double join_rate = static_cast<double>(joined) / static_cast<double>(splits);
    std::printf("%s: compounds kept %zu/%zu (%.1f%%), broken words joined %zu/%zu (%.2f%%)\n", name, kept, compounds,
                100 * keep_rate, joined, splits, 100 * join_rate);
    EXPECT_GE(keep_rate, 0.80) << name;
    EXPECT_GE(join_rate, 0.995) << name;
  }
}

TEST(ReadingPdf, NoSpacesBetweenCjkCharactersOfAJustifiedPage) {
  // Gaps of 0.3 em between characters, as a justified line spreads them: poppler reads each as a space.
  TempDir dir;
  const std::string spaced_line = "市图书馆始建\t于上世纪八十\t年代，馆舍老\t化，经专家论证\t，决定扩建。";
  write_file(dir / "zh.pdf", make_text_layer_pdf({{spaced_line, "新馆使用\tDebian\t系统，藏书\t（\t约\t十万册\t）。",
                                                   "한국어\t문장은\t띄어\t쓴다."}}));
  const PdfText raw = extract_pdf_text((dir / "zh.pdf").string());
  ASSERT_TRUE(contains(raw.text, "始建 于")) << raw.text;
  const Document doc = read(dir / "zh.pdf");
  const std::string want = "市图书馆始建于上世纪八十年代，馆舍老化，经专家论证，决定扩建。";
  EXPECT_TRUE(contains(doc.text, want)) << doc.text;
  EXPECT_TRUE(contains(doc.text, "新馆使用 Debian 系统，藏书（约十万册）。")) << doc.text;  // Han-Latin spaces stay
  EXPECT_TRUE(contains(doc.text, "한국어 문장은 띄어 쓴다.")) << doc.text;               // Korean is written with spaces
  const std::string raw_line = raw.text.substr(0, raw.text.find('\n'));
  std::printf("tokens of the line: %zu as poppler gives it, %zu read\n", tokens(raw_line), tokens(want));
  EXPECT_LT(tokens(want), tokens(raw_line));
  EXPECT_EQ(tokens(doc.text.substr(0, doc.text.find('\n'))), tokens(want));

  // Spaces a text file has are its own.
  write_file(dir / "zh.txt", "床前明月光 疑是地上霜\n");
  EXPECT_EQ(read(dir / "zh.txt").text, "床前明月光 疑是地上霜\n");
}

// ---- Text files: encodings ------------------------------------------------------------------------------

TEST(ReadingEncoding, Gb18030FromWindowsIsDetectedAndConverted) {
  TempDir dir;
  // The manual's prose from "关于 Debian Edu 和 Skolelinux" on, some 20 KB.
  const std::string manual = read_file(source_path("tests/data/texts/debian-edu-bookworm-manual.zh-cn.txt"));
  const size_t from = manual.find("\n关于 Debian Edu 和 Skolelinux\n") + 1;
  ASSERT_GT(from, 1u);
  const std::string part = manual.substr(from, 20000);
  const std::string text = part.substr(0, part.rfind('\n') + 1);
  write_file(dir / "manual.txt", encode(text, "GB18030"));
  const Document doc = read(dir / "manual.txt");
  EXPECT_EQ(doc.encoding, "GB18030");
  EXPECT_EQ(doc.text, read_text(text, {}).text);

  // summarize reads it too (it was "invalid UTF-8 at byte 0").
  TempDir out;
  const auto r = run_abridge("summarize " + quote(dir / "manual.txt") + " -o " + quote(out.path()) + " --format txt");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string summary = read_file(out / "manual.txt.summary.txt");
  EXPECT_TRUE(contains(summary, "服务器")) << summary;
  EXPECT_EQ(abridge::find_invalid_utf8(summary), std::string::npos);
  // And watch, through the same reading stage.
  const auto w = run_abridge("watch " + quote(dir.path()) + " -o " + quote(out / "watched") + " --once --format txt");
  ASSERT_EQ(w.exit_code, 0) << w.err;
  EXPECT_EQ(read_file(out / "watched" / "manual.txt.summary.txt"), summary);
}

TEST(ReadingEncoding, LegacyCodePagesOfRealTranslations) {
  struct Case {
    const char* file;
    const char* written;   // what the file is encoded in
    const char* detected;  // what it is read as: the Windows superset where there is one
  };
  const Case cases[] = {{"dpkg.zh_TW.txt", "BIG5", "BIG5-HKSCS"},      {"dpkg.ja.txt", "SHIFT_JIS", "CP932"},
                        {"dpkg.ko.txt", "EUC-KR", "CP949"},            {"dpkg.ru.txt", "WINDOWS-1251", "WINDOWS-1251"},
                        {"dpkg.cs.txt", "WINDOWS-1250", "WINDOWS-1250"}, {"dpkg.de.txt", "WINDOWS-1252", "WINDOWS-1252"},
                        {"dpkg.fr.txt", "ISO-8859-1", "WINDOWS-1252"}};
  TempDir dir;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    const std::string utf8 = read_file(source_path(std::string("tests/data/encodings/") + c.file));
    write_file(dir / c.file, encode(utf8, c.written));
    const Document doc = read(dir / c.file);
    EXPECT_EQ(doc.encoding, c.detected);
    EXPECT_EQ(doc.text, read_text(utf8, {}).text);
  }
}

TEST(ReadingEncoding, ForcedWithEncodingAndRefusedWhenUnclear) {
  TempDir dir;
  write_file(dir / "cafe.txt", "caf\xE9 au lait\n");
  // One byte above ASCII is no evidence: a clear error with the candidates.
  const std::string why = read_error(dir / "cafe.txt");
  EXPECT_TRUE(contains(why, "invalid UTF-8 at byte 3")) << why;
  EXPECT_TRUE(contains(why, "it has only 1 byte above ASCII, too few to tell its encoding")) << why;
  EXPECT_TRUE(contains(why, "WINDOWS-1252")) << why;
  EXPECT_TRUE(contains(why, "--encoding")) << why;
  EXPECT_EQ(why.find('\n'), std::string::npos);

  const ReadOptions latin1 = make_read_options("latin1", "auto", "auto", 60, 2048);
  const Document doc = read(dir / "cafe.txt", latin1);
  EXPECT_EQ(doc.text, "café au lait\n");
  EXPECT_EQ(doc.encoding, "latin1");
  // Forced, a file must be valid in that encoding.
  write_file(dir / "bad.txt", "ok \x81\x20 no");
  EXPECT_TRUE(contains(read_error(dir / "bad.txt", make_read_options("SHIFT_JIS", "auto", "auto", 60, 2048)),
                       "invalid SHIFT_JIS at byte 3"));
  try {
    make_read_options("no-such-encoding", "auto", "auto", 60, 2048);
    ADD_FAILURE() << "no error";
  } catch (const abridge::Error& e) {
    EXPECT_TRUE(contains(e.what(), "--encoding: unknown encoding 'no-such-encoding'")) << e.what();
  }
  // And on the command line: a usage error before any work.
  TempDir out;
  auto r = run_abridge("summarize " + quote(dir / "cafe.txt") + " -o " + quote(out.path()) + " --encoding nope");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "unknown encoding 'nope'")) << r.err;
  r = run_abridge("chunk " + quote(dir / "cafe.txt") + " --max-tokens 64 --encoding WINDOWS-1252");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "café au lait")) << r.out;
}

TEST(ReadingEncoding, Utf16WithoutAByteOrderMark) {
  TempDir dir;
  const std::string en = read_file(source_path("samples/a-scandal-in-bohemia.txt")).substr(0, 6000);
  const std::string zh = read_file(source_path("tests/data/texts/tang300.txt")).substr(0, 3000);
  const std::string en_text = en.substr(0, en.rfind('\n') + 1), zh_text = zh.substr(0, zh.rfind('\n') + 1);
  for (const char* enc : {"UTF-16LE", "UTF-16BE"}) {
    SCOPED_TRACE(enc);
    write_file(dir / "en.txt", encode(en_text, enc));
    write_file(dir / "zh.txt", encode(zh_text, enc));
    const Document e = read(dir / "en.txt"), z = read(dir / "zh.txt");
    EXPECT_EQ(e.encoding, enc);
    EXPECT_EQ(z.encoding, enc);
    const std::string want_en = read_text(en_text, {}).text, want_zh = read_text(zh_text, {}).text;
    EXPECT_EQ(e.text, want_en);
    EXPECT_EQ(z.text, want_zh);
    // Read as UTF-8 with NULs, the English text counted ten times its tokens.
    EXPECT_EQ(tokens(e.text), tokens(want_en));
  }
  // With a byte-order mark as before.
  write_file(dir / "bom.txt", "\xFF\xFE" + encode("Hi 你好\n", "UTF-16LE"));
  EXPECT_EQ(read(dir / "bom.txt").text, "Hi 你好\n");
}

// ---- Text files: line breaks and what is not text -------------------------------------------------------

TEST(ReadingText, VerticalTabNelAndSeparatorsAreLineBreaks) {
  TempDir dir;
  // A FileMaker/Word export: manual line breaks are VT.
  write_file(dir / "export.txt",
             "Inspection report\n\nSite: Elm Street depot\vDate: 3 March\vInspector: R. Okafor\v"
             "The roof leaks.\vThe doors stick.\xC2\x85The lights work.\u2028The alarm is new.\u2029Next steps follow.\n");
  const Document doc = read(dir / "export.txt");
  EXPECT_EQ(doc.text, "Inspection report\n\nSite: Elm Street depot\nDate: 3 March\nInspector: R. Okafor\n"
                      "The roof leaks.\nThe doors stick.\nThe lights work.\nThe alarm is new.\n\nNext steps follow.\n");
  const std::string clean = abridge::chunker::clean_text(doc.text);
  EXPECT_FALSE(contains(clean, "depotDate")) << clean;
  EXPECT_FALSE(contains(clean, "MarchInspector")) << clean;
  // Glued, "leaks.The doors" ended no sentence; now each of these does.
  const auto ends = abridge::chunker::split_sentences(clean);
  for (const char* next : {"The doors stick.", "The lights work.", "The alarm is new."}) {
    const size_t at = clean.find(next);
    ASSERT_NE(at, std::string::npos) << clean;
    EXPECT_NE(std::find(ends.begin(), ends.end(), at), ends.end()) << next << " starts no sentence in: " << clean;
  }

  const auto r = run_abridge("chunk " + quote(dir / "export.txt") + " --max-tokens 64 --format text");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.out, "depotDate")) << r.out;
}

TEST(ReadingText, FilesOfControlCharactersOrNulsAreNotText) {
  TempDir dir;
  write_file(dir / "zeros.txt", std::string(4096, '\0'));
  EXPECT_EQ(read_error(dir / "zeros.txt"), "not text: 100% of its bytes are NUL or control characters");
  fs::copy_file(ABRIDGE_BINARY, dir / "program.txt");  // an executable saved as .txt
  const std::string why = read_error(dir / "program.txt");
  EXPECT_EQ(why.rfind("not text: ", 0), 0u) << why;
  // UTF-16 of control characters is no better.
  std::string u16 = "\xFF\xFE";
  for (int i = 0; i < 1000; ++i) u16 += std::string("\x01\0", 2);  // U+0001 in UTF-16LE
  write_file(dir / "u16.txt", u16);
  EXPECT_TRUE(contains(read_error(dir / "u16.txt"), "not text")) << read_error(dir / "u16.txt");
  // A text with ANSI colours (ESC) and a few stray controls is text.
  write_file(dir / "colours.txt", "\x1B[32mgreen\x1B[m and plain text with one \x07 bell in a long enough line.\n");
  EXPECT_EQ(read_error(dir / "colours.txt"), "");

  TempDir out;
  const auto r = run_abridge("summarize " + quote(dir / "zeros.txt") + " -o " + quote(out.path()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "zeros.txt: not text: 100% of its bytes are NUL or control characters")) << r.err;
}

// ---- Scanned PDFs ---------------------------------------------------------------------------------------

namespace {

// Page `page` (1-based) of `pdf` as a scanner gives it: rendered to a gray image (pdftoppm) and wrapped
// as a PDF of that image alone (img2pdf). `crop` keeps the top part of the page, in pixels at `dpi`.
std::string scan(const fs::path& pdf, int page, const fs::path& out, int dpi = 200, int crop_height = 0) {
  const fs::path png = out.parent_path() / (out.stem().string() + ".png");
  std::string cmd = "pdftoppm -gray -png -singlefile -r " + std::to_string(dpi) + " -f " + std::to_string(page) +
                    " -l " + std::to_string(page);
  if (crop_height > 0) cmd += " -x 0 -y 0 -W 100000 -H " + std::to_string(crop_height);
  cmd += " " + quote(pdf) + " " + quote(out.parent_path() / out.stem()) + " && img2pdf " + quote(png) + " -o " + quote(out);
  return std::system(cmd.c_str()) == 0 ? "" : "cannot run: " + cmd;
}

// Why the OCR tests cannot run here, or "".
std::string ocr_missing(const std::vector<std::string>& languages) {
  for (const char* tool : {"pdftoppm", "img2pdf", "pdfunite", "pdfseparate"})
    if (!have_program(tool)) return std::string(tool) + " is not installed (Debian: poppler-utils, img2pdf)";
  const OcrData data = find_ocr_data();
  for (const std::string& lang : languages)
    if (!data.has(lang)) return "tesseract has no '" + lang + "' data (Debian: " + ocr_language_package(lang) + ")";
  return "";
}

// The text of page `page` (1-based) of a PDF that was read.
std::string page_of(const Document& doc, int page) {
  const size_t b = doc.page_starts.at(static_cast<size_t>(page - 1));
  const size_t e = static_cast<size_t>(page) < doc.page_starts.size() ? doc.page_starts[static_cast<size_t>(page)] - 1
                                                                       : doc.text.size();
  return doc.text.substr(b, e - b);
}

ReadOptions ocr_options(const std::string& languages, const std::string& mode = "auto") {
  return make_read_options("", mode, languages, 60, 2048);
}

}  // namespace

TEST(Ocr, ScannedEnglishPage) {
  if (const std::string why = ocr_missing({"eng"}); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  // Page 11 of R-intro alone (its text layer is the truth), then scanned.
  const fs::path source = dir / "page11.pdf";
  ASSERT_EQ(std::system(("pdfseparate -f 11 -l 11 " + quote(source_path("tests/data/pdf/real/R-intro.pdf")) + " " +
                         quote(source)).c_str()), 0);
  ASSERT_EQ(scan(source, 1, dir / "scan.pdf"), "");
  // Without OCR: no text layer, as before.
  const std::string why = read_error(dir / "scan.pdf", ocr_options("auto", "never"));
  EXPECT_EQ(why, "no text layer (scanned images?): its page has no text (OCR is off: --ocr never)");

  const auto start = std::chrono::steady_clock::now();
  const Document doc = read(dir / "scan.pdf", ocr_options("eng"));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(doc.ocr_pages, std::vector<int>{1});
  EXPECT_EQ(doc.ocr_languages, "eng");
  EXPECT_EQ(describe_ocr(doc), "page 1 (eng)");
  // The page's text layer, read from the original, is the truth.
  const std::string layer = read(source).text;
  const double accuracy = character_accuracy(doc.text, layer);
  std::printf("OCR of R-intro page 11 (200-dpi scan): %.2f%% of %zu characters in %.1f s\n", 100 * accuracy,
              code_points_without_spaces(layer).size(), took);
  EXPECT_GE(accuracy, 0.98);
  EXPECT_TRUE(contains(squeeze(doc.text), "Technically R is an expression language with a very simple syntax.")) << doc.text;
  EXPECT_TRUE(contains(squeeze(doc.text), "Names are effectively unlimited in length.")) << doc.text;
}

TEST(Ocr, ScannedChinesePage) {
  if (const std::string why = ocr_missing({"chi_sim"}); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  const fs::path source = source_path("tests/data/pdf/generated/debian-edu-about.zh.pdf");
  ASSERT_EQ(scan(source, 1, dir / "scan.pdf"), "");
  const auto start = std::chrono::steady_clock::now();
  const Document doc = read(dir / "scan.pdf", ocr_options("chi_sim"));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(doc.ocr_pages, std::vector<int>{1});
  EXPECT_EQ(doc.ocr_languages, "chi_sim");
  const std::string layer = read(source).text;
  const double accuracy = character_accuracy(doc.text, layer);
  std::printf("OCR of the Chinese page (200-dpi scan): %.2f%% of %zu characters in %.1f s\n", 100 * accuracy,
              code_points_without_spaces(layer).size(), took);
  EXPECT_GE(accuracy, 0.97);
  const auto no_spaces = [](const std::string& s) {
    std::string out;
    for (const char c : s)
      if (c != ' ' && c != '\n') out += c;
    return out;
  };
  EXPECT_TRUE(contains(no_spaces(doc.text), "服务器提供客户端运行所需的信息。")) << doc.text;
  EXPECT_TRUE(contains(no_spaces(doc.text), "关于硬件及网络需求和架构的章节包含了基本系统设计的细节。")) << doc.text;
}

TEST(Ocr, TheLanguageOfAScanIsTheOneItIsWrittenIn) {
  // --ocr-lang auto without a text layer: the first page is read with English and Chinese, then again
  // in the language found (read with both, the heading "关于" came out as "KF"). The top of the page
  // keeps it quick; the mixed document below shows the text layer choosing English.
  if (const std::string why = ocr_missing({"eng", "chi_sim"}); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  ASSERT_EQ(scan(source_path("tests/data/pdf/generated/debian-edu-about.zh.pdf"), 1, dir / "zh.pdf", 200, 320), "");
  const Document zh = read(dir / "zh.pdf", ocr_options("auto"));
  EXPECT_EQ(zh.ocr_languages, "chi_sim") << zh.text;
  EXPECT_TRUE(contains(zh.text, "关于 Debian Edu 和 Skolelinux")) << zh.text;
}

TEST(Ocr, MixedDocumentsReadOnlyThePagesWithoutText) {
  if (const std::string why = ocr_missing({"eng"}); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  // Page 1 has a text layer; page 2 is the top of a scanned page.
  write_file(dir / "text.pdf", make_text_layer_pdf({{"Minutes of the library committee.",
                                                     "The committee met on Tuesday and approved the budget for the",
                                                     "new reading room. The vote was close, and the chair thanked",
                                                     "the members for their careful work on the proposal."}}));
  ASSERT_EQ(scan(source_path("tests/data/pdf/real/R-intro.pdf"), 11, dir / "scan.pdf", 200, 700), "");
  ASSERT_EQ(std::system(("pdfunite " + quote(dir / "text.pdf") + " " + quote(dir / "scan.pdf") + " " + quote(dir / "mixed.pdf")).c_str()), 0);

  ReadOptions o = ocr_options("auto");
  std::vector<OcrProgress> seen;
  o.ocr.progress = [&](const OcrProgress& p) { seen.push_back(p); };
  const Document doc = read(dir / "mixed.pdf", o);
  EXPECT_EQ(doc.pages, 2);
  EXPECT_EQ(doc.ocr_pages, std::vector<int>{2});
  EXPECT_EQ(doc.ocr_languages, "eng");  // the language of the text layer
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].page, 2);
  EXPECT_EQ(seen[0].done, 0);
  EXPECT_EQ(seen[0].total, 1);
  ASSERT_EQ(doc.page_starts.size(), 2u);
  EXPECT_TRUE(contains(page_of(doc, 1), "Minutes of the library committee.")) << doc.text;
  EXPECT_TRUE(contains(squeeze(page_of(doc, 2)), "Try ?help.search for details and more examples.")) << doc.text;

  // summarize says which pages it read by OCR.
  TempDir out;
  const auto r = run_abridge("summarize " + quote(dir / "mixed.pdf") + " -o " + quote(out.path()) + " --format txt");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "mixed.pdf: page 2 (eng) read by OCR")) << r.err;
  const auto never = run_abridge("summarize " + quote(dir / "scan.pdf") + " -o " + quote(out.path()) + " --ocr never");
  EXPECT_EQ(never.exit_code, 1);
  EXPECT_TRUE(contains(never.err, "scan.pdf: no text layer (scanned images?)")) << never.err;
}

TEST(Ocr, AlwaysReadsPagesThatHaveText) {
  if (const std::string why = ocr_missing({"chi_sim"}); !why.empty()) GTEST_SKIP() << why;
  const fs::path source = source_path("tests/data/pdf/generated/debian-edu-about.zh.pdf");
  const Document layer = read(source, ocr_options("auto"));
  EXPECT_TRUE(layer.ocr_pages.empty());  // auto: the page has text
  const Document doc = read(source, ocr_options("chi_sim", "always"));
  EXPECT_EQ(doc.ocr_pages, std::vector<int>{1});
  EXPECT_EQ(doc.ocr_languages, "chi_sim");
  EXPECT_GE(character_accuracy(doc.text, layer.text), 0.97);
}

TEST(Ocr, AShortPageOfTextKeepsItsText) {
  // Fewer than 32 visible characters: auto reads the page by OCR too, but keeps the text layer unless
  // OCR finds much more (the ligature is one character in the layer, three when read).
  if (const std::string why = ocr_missing({"eng"}); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  write_file(dir / "title.pdf", make_text_layer_pdf({{"Annual o\uFB03ce report"}}));
  const Document doc = read(dir / "title.pdf", ocr_options("eng"));
  EXPECT_TRUE(doc.ocr_pages.empty());
  EXPECT_EQ(doc.text, "Annual office report");
}

TEST(Ocr, MissingLanguagesAndLibrariesAreClearErrors) {
  // No tesseract data at all: auto leaves the pages alone and says what to install; always is refused.
  TempDir dir;
  write_file(dir / "blank.pdf", make_pdf({"<< /Type /Catalog /Pages 2 0 R >>",
                                          "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                                          "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"}));
  OcrOptions none;
  none.mode = OcrMode::kAuto;
  PdfText r = extract_pdf_text((dir / "blank.pdf").string(), {}, none);
  EXPECT_EQ(r.status, PdfStatus::kNoText);
  EXPECT_EQ(r.message, "no text layer (scanned images?): its page has no text; OCR needs tesseract's language data "
                       "(Debian: apt-get install tesseract-ocr-eng tesseract-ocr-chi-sim)");
  none.mode = OcrMode::kAlways;
  r = extract_pdf_text((dir / "blank.pdf").string(), {}, none);
  EXPECT_EQ(r.status, PdfStatus::kOcrFailed);
  EXPECT_EQ(r.message.rfind("OCR failed: OCR needs tesseract's language data", 0), 0u) << r.message;

  try {
    make_read_options("", "auto", "eng+xyz_nope", 60, 2048);
    ADD_FAILURE() << "no error";
  } catch (const abridge::Error& e) {
    EXPECT_TRUE(contains(e.what(), "--ocr-lang: no tesseract data for 'xyz_nope'")) << e.what();
    EXPECT_TRUE(contains(e.what(), "apt-get install tesseract-ocr-xyz-nope")) << e.what();
  }
  EXPECT_NO_THROW(make_read_options("", "never", "xyz_nope", 60, 2048));  // never: not needed
  EXPECT_THROW(make_read_options("", "sometimes", "auto", 60, 2048), abridge::Error);
  EXPECT_THROW(make_read_options("", "auto", "eng+", 60, 2048), abridge::Error);
  const auto cli = run_abridge("summarize " + quote(dir / "blank.pdf") + " -o " + quote(dir / "out") + " --ocr-lang xyz_nope");
  EXPECT_EQ(cli.exit_code, 2);
  EXPECT_TRUE(contains(cli.err, "no tesseract data for 'xyz_nope'")) << cli.err;
}
