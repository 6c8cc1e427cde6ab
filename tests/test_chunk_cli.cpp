// `abridge chunk` as a user runs it: jsonl and text output, offsets that tile the file, budgets,
// usage errors, invalid UTF-8 (error or replacement), empty input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "pipeline/document_reader.h"
#include "tests/test_support.h"

using namespace abridge::testing;
namespace fs = std::filesystem;

namespace {

std::vector<nlohmann::json> parse_jsonl(const std::string& out) {
  std::vector<nlohmann::json> rows;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

}  // namespace

TEST(ChunkCli, HelpAndUsageErrors) {
  auto r = run_abridge("--help");
  EXPECT_TRUE(contains(r.out, "chunk")) << r.out;
  r = run_abridge("chunk --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "--max-tokens") && contains(r.out, "--overlap")) << r.out;
  TempDir dir;
  write_file(dir / "a.txt", "Hello there.");
  r = run_abridge("chunk " + quote(dir / "a.txt"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "max-tokens")) << r.err;
  r = run_abridge("chunk " + quote(dir / "a.txt") + " --max-tokens 8");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--max-tokens must be at least 16")) << r.err;
  r = run_abridge("chunk " + quote(dir / "a.txt") + " --max-tokens 100 --overlap 50");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--overlap")) << r.err;
  r = run_abridge("chunk " + quote(dir / "a.txt") + " --max-tokens 100 --format xml");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--format must be jsonl or text")) << r.err;
  r = run_abridge("chunk " + quote(dir / "missing.txt") + " --max-tokens 100");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "missing.txt: no such file")) << r.err;
}

TEST(ChunkCli, JsonlTilesTheFileAndHoldsTheBudget) {
  TempDir dir;
  std::string doc = "# Guide\n\nIntro paragraph.\n\n";
  for (int i = 1; i <= 4; ++i) {
    const std::string n = std::to_string(i);
    doc.append("## Part ").append(n).append("\n\n");
    for (int k = 0; k < 12; ++k)
      doc.append("Part ").append(n).append(" explains detail number ").append(std::to_string(k)).append(" at some length. ");
    doc += "\n\n";
  }
  write_file(dir / "doc.md", doc);
  const auto r = run_abridge("chunk " + quote(dir / "doc.md") + " --max-tokens 120");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rows = parse_jsonl(r.out);
  ASSERT_GT(rows.size(), 4u);
  size_t pos = 0;
  std::string joined;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    for (const char* key : {"index", "start", "end", "tokens", "section", "text"}) EXPECT_TRUE(row.contains(key)) << key;
    EXPECT_EQ(row["index"].get<size_t>(), i);
    EXPECT_EQ(row["start"].get<size_t>(), pos);
    pos = row["end"].get<size_t>();
    joined += doc.substr(row["start"].get<size_t>(), pos - row["start"].get<size_t>());
    EXPECT_LE(row["tokens"].get<size_t>(), 120u);
    EXPECT_GT(row["tokens"].get<size_t>(), 0u);
  }
  EXPECT_EQ(joined, doc);
  bool saw_part3 = false;
  for (const auto& row : rows) saw_part3 |= row["section"] == "Guide > Part 3";
  EXPECT_TRUE(saw_part3);

  // Overlap adds context_start; text format prints one header per chunk.
  const auto o = run_abridge("chunk " + quote(dir / "doc.md") + " --max-tokens 120 --overlap 20");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const auto orows = parse_jsonl(o.out);
  ASSERT_GT(orows.size(), 1u);
  EXPECT_LT(orows[1]["context_start"].get<size_t>(), orows[1]["start"].get<size_t>());
  const auto t = run_abridge("chunk " + quote(dir / "doc.md") + " --max-tokens 120 --format text");
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_TRUE(contains(t.out, "=== chunk 0 [0, ")) << t.out;
  EXPECT_TRUE(contains(t.out, "| Guide > Part 2 ===")) << t.out;
}

TEST(ChunkCli, InvalidUtf8EmptyInputAndBom) {
  TempDir dir;
  write_file(dir / "bad.txt", "ok\xC3( and more text.");
  auto r = run_abridge("chunk " + quote(dir / "bad.txt") + " --max-tokens 64");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "bad.txt: invalid UTF-8 at byte 2")) << r.err;
  EXPECT_TRUE(r.out.empty());
  r = run_abridge("chunk " + quote(dir / "bad.txt") + " --max-tokens 64 --replace-invalid");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rows = parse_jsonl(r.out);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["text"], "ok\xEF\xBF\xBD( and more text.");
  EXPECT_EQ(rows[0]["end"], 19);  // offsets of the bytes as they are

  write_file(dir / "empty.txt", "");
  write_file(dir / "blank.txt", " \n\n\t\r\n");
  for (const char* f : {"empty.txt", "blank.txt"}) {
    r = run_abridge("chunk " + quote(dir / f) + " --max-tokens 64");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "") << f;
  }
  r = run_abridge("chunk - --max-tokens 64");  // stdin is /dev/null
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");

  // A UTF-8 BOM is not part of the text: offsets start after it; CRLF is LF in the text.
  write_file(dir / "bom.txt", "\xEF\xBB\xBFLine one.\r\nLine two.\r\n");
  r = run_abridge("chunk " + quote(dir / "bom.txt") + " --max-tokens 64");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto b = parse_jsonl(r.out);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0]["end"], 22);
  EXPECT_EQ(b[0]["text"], "Line one.\nLine two.");
}

TEST(ChunkCli, RealDocumentWithTheBuiltInTokenizer) {
  const fs::path manual = source_path("tests/data/texts/debian-edu-bookworm-manual.zh-cn.txt");
  const auto r = run_abridge("chunk " + quote(manual) + " --max-tokens 512");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rows = parse_jsonl(r.out);
  ASSERT_GT(rows.size(), 20u);
  // The spans tile the text as summarize reads it: the file's 8 "ﬀ" ligatures (3 bytes each) are "ff" (2).
  const std::string text = abridge::pipeline::read_document(manual.string(), {}).text;
  EXPECT_EQ(read_file(manual).size() - text.size(), 8u);
  EXPECT_EQ(rows.back()["end"].get<size_t>(), text.size());
  std::string all;
  for (const auto& row : rows) {
    EXPECT_LE(row["tokens"].get<size_t>(), 512u);
    all += row["text"].get<std::string>();
  }
  EXPECT_TRUE(contains(all, "LibreOffice")) << "the ligature is folded in what the model is sent";
}

TEST(ChunkCli, PdfsAreReadAsSummarizeReadsThem) {
  TempDir dir;
  write_file(dir / "lig.pdf", make_text_layer_pdf({{"The o\uFB03ce \uFB01led its \uFB01nal report on the flood."}}));
  const auto r = run_abridge("chunk " + quote(dir / "lig.pdf") + " --max-tokens 64");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rows = parse_jsonl(r.out);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["text"], "The office filed its final report on the flood.");
}
