// `abridge summarize` end to end, as a user runs it: real documents and PDFs, the extractive engine,
// a tiny random-weight Qwen3 on the CPU backend (its text is gibberish; structure, caching and resume
// are what is tested), bad inputs, name collisions, exit codes, resume after kill -9.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <nlohmann/json.hpp>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "base/error.h"
#include "pipeline/document_reader.h"
#include "pipeline/output_dir.h"
#include "pipeline/summarize.h"
#include "tests/model_fixture.h"
#include "tests/test_support.h"

using namespace abridge::testing;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Files under `dir` whose names end in `suffix`. A running abridge may rename or delete files meanwhile
// (a temporary file becoming a cache entry): an entry that is gone by the time it is looked at is not
// counted, never an exception.
size_t count_files(const fs::path& dir, const std::string& suffix) {
  size_t n = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    const std::string name = it->path().string();
    if (it->is_regular_file(type_ec) && name.size() >= suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      ++n;
  }
  return n;
}

// A document of several thousand tokens from the real texts, for map-reduce runs.
fs::path long_text(const TempDir& dir, size_t bytes) {
  const fs::path p = dir / "long.txt";
  write_file(p, read_file(source_path("tests/data/texts/R-intro.txt")).substr(0, bytes));
  return p;
}

std::string llm_args(const fs::path& out) {
  return " -o " + quote(out) + " --model " + quote(random_model_dir()) +
         " --device cpu --summary-tokens 24 --context-tokens 1024 --chunk-tokens 256 --format json -q";
}

}  // namespace

TEST(Summarize, ExtractiveOnTheSamples) {
  TempDir out;
  const auto r = run_abridge("summarize " + quote(source_path("samples")) + " -o " + quote(out.path()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The four documents the README's quick start promises (two texts, a PDF and a scanned PDF), and
  // nothing else of the folder (the service and cluster samples are no documents).
  EXPECT_TRUE(contains(r.err, "4 summarized, 0 failed")) << r.err;
  std::set<std::string> outputs;
  for (const auto& e : fs::directory_iterator(out.path()))
    if (e.is_regular_file()) outputs.insert(e.path().filename().string());
  EXPECT_EQ(outputs, (std::set<std::string>{"a-scandal-in-bohemia.txt.summary.md", "simh_faq.pdf.summary.md",
                                            "simh_faq-page4.scan.pdf.summary.md", "tang-poems.zh.txt.summary.md"}));
  const std::string en = read_file(out / "a-scandal-in-bohemia.txt.summary.md");
  const std::string zh = read_file(out / "tang-poems.zh.txt.summary.md");
  EXPECT_EQ(en.rfind("# a-scandal-in-bohemia.txt\n\n", 0), 0u) << en;
  EXPECT_GT(en.size(), 200u);
  EXPECT_TRUE(contains(zh, "。")) << zh;  // Chinese sentences from the Chinese document
  EXPECT_GT(read_file(out / "simh_faq.pdf.summary.md").size(), 200u);  // text from the PDF
  EXPECT_TRUE(contains(r.err, "simh_faq-page4.scan.pdf: page 1 (eng) read by OCR")) << r.err;
  EXPECT_TRUE(contains(read_file(out / "simh_faq-page4.scan.pdf.summary.md"), "SIMH"));  // text read by OCR
  EXPECT_EQ(count_files(out.path(), ".tmp"), 0u);
  for (const auto& e : fs::recursive_directory_iterator(out.path()))
    EXPECT_FALSE(contains(e.path().filename().string(), ".abridge-tmp-")) << e.path();
}

TEST(Summarize, JsonOutputHasTheDocumentedKeys) {
  TempDir out;
  const auto r = run_abridge("summarize " + quote(source_path("samples/a-scandal-in-bohemia.txt")) + " -o " +
                             quote(out.path()) + " --format json --summary-tokens 120");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(read_file(out / "a-scandal-in-bohemia.txt.summary.json"));
  for (const char* key : {"summary", "chunks", "source", "sha256", "model", "prompt", "parameters", "tokens", "timings"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(j["model"], "extractive");
  EXPECT_GT(j["tokens"]["input"].get<int64_t>(), 5000);
}

TEST(Summarize, UpToDateOutputsAreSkippedUnlessForced) {
  TempDir out;
  const std::string cmd = "summarize " + quote(source_path("samples")) + " -o " + quote(out.path());
  ASSERT_EQ(run_abridge(cmd).exit_code, 0);
  const auto t0 = fs::last_write_time(out / "a-scandal-in-bohemia.txt.summary.md");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto r = run_abridge(cmd);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.err, "0 summarized, 4 up to date, 0 failed")) << r.err;
  EXPECT_EQ(fs::last_write_time(out / "a-scandal-in-bohemia.txt.summary.md"), t0);
  r = run_abridge(cmd + " --force");
  EXPECT_TRUE(contains(r.err, "4 summarized")) << r.err;
  // A different parameter is a different job: summarized again.
  r = run_abridge(cmd + " --summary-tokens 100");
  EXPECT_TRUE(contains(r.err, "4 summarized")) << r.err;
}

// An output is up to date only when its done record names this job and the output's bytes: the record
// is written before the output, so a run killed between the two (or a hand-edited output, or a lost
// record) makes the next run summarize that document again, and only that one.
TEST(Summarize, AnOutputThatDisagreesWithItsRecordIsRedone) {
  TempDir in, out;
  write_file(in / "a.txt", read_file(source_path("samples/a-scandal-in-bohemia.txt")));
  write_file(in / "b.txt", read_file(source_path("samples/a-scandal-in-bohemia.txt")).substr(0, 20000));
  const std::string cmd = "summarize " + quote(in.path()) + " -o " + quote(out.path());
  ASSERT_EQ(run_abridge(cmd).exit_code, 0);
  const std::string a = read_file(out / "a.txt.summary.md");
  write_file(out / "a.txt.summary.md", a + "edited\n");
  auto r = run_abridge(cmd);
  EXPECT_TRUE(contains(r.err, "1 summarized, 1 up to date, 0 failed")) << r.err;
  EXPECT_EQ(read_file(out / "a.txt.summary.md"), a);
  for (const auto& e : fs::directory_iterator(out / ".abridge" / "done")) fs::remove(e.path());
  r = run_abridge(cmd);
  EXPECT_TRUE(contains(r.err, "2 summarized, 0 failed")) << r.err;
  r = run_abridge(cmd);
  EXPECT_TRUE(contains(r.err, "0 summarized, 2 up to date, 0 failed")) << r.err;
}

TEST(Summarize, BadInputsAreReportedAndTheRestGoOn) {
  TempDir in, out;
  write_file(in / "empty.txt", "");
  write_file(in / "latin1.txt", "caf\xE9 au lait");
  write_file(in / "good.txt", "The committee met on Tuesday. It approved the budget for next year. The vote was close.");
  write_file(in / "notes.docx", "PK");
  fs::copy_file(source_path("tests/data/pdf/malformed/bad1.pdf"), in / "broken.pdf");
  const auto r = run_abridge("summarize " + quote(in / "empty.txt") + " " + quote(in / "latin1.txt") + " " + quote(in / "good.txt") +
                             " " + quote(in / "notes.docx") + " " + quote(in / "broken.pdf") + " " + quote(in / "missing.txt") +
                             " -o " + quote(out.path()));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "empty.txt: empty file")) << r.err;
  EXPECT_TRUE(contains(r.err, "latin1.txt: invalid UTF-8 at byte 3")) << r.err;
  EXPECT_TRUE(contains(r.err, "notes.docx: unsupported file type")) << r.err;
  EXPECT_TRUE(contains(r.err, "broken.pdf: ")) << r.err;
  EXPECT_TRUE(contains(r.err, "missing.txt: no such file or directory")) << r.err;
  EXPECT_TRUE(contains(r.err, "1 summarized, 5 failed")) << r.err;
  EXPECT_TRUE(fs::exists(out / "good.txt.summary.md"));
  EXPECT_FALSE(fs::exists(out / "empty.txt.summary.md"));
}

TEST(Summarize, EveryMalformedPdfIsReportedWithoutACrash) {
  TempDir out;
  const auto r = run_abridge("summarize " + quote(source_path("tests/data/pdf/malformed")) + " -o " + quote(out.path()) +
                             " --pdf-timeout 20 -q");
  EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.exit_code << r.err;
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(source_path("tests/data/pdf/malformed"))) files += e.path().extension() == ".pdf";
  // Each PDF is either summarized or named in one error line.
  size_t reported = 0;
  for (const auto& e : fs::directory_iterator(source_path("tests/data/pdf/malformed"))) {
    if (e.path().extension() != ".pdf") continue;
    const std::string name = e.path().filename().string();
    reported += fs::exists(out / (name + ".summary.md")) || contains(r.err, name + ": ");
  }
  EXPECT_EQ(reported, files) << r.err;
  EXPECT_GE(files, 80u);
}

// Two inputs for one output: the first is summarized, the second fails naming it (one bad path is one
// failed document; more cases in test_hardening).
TEST(Summarize, NameCollisionsFailTheSecondInput) {
  TempDir in, out;
  fs::create_directories(in / "a");
  fs::create_directories(in / "b");
  write_file(in / "a" / "x.txt", "One sentence here. Another one there.");
  write_file(in / "b" / "x.txt", "Different text. Still two sentences.");
  const auto r = run_abridge("summarize " + quote(in / "a" / "x.txt") + " " + quote(in / "b" / "x.txt") + " -o " + quote(out.path()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "b/x.txt: would write the same output as")) << r.err;
  EXPECT_TRUE(contains(r.err, "1 summarized, 1 failed")) << r.err;
  EXPECT_TRUE(contains(read_file(out / "x.txt.summary.md"), "One sentence here"));
}

TEST(Summarize, RecursiveGlobsStdinAndConfig) {
  TempDir in, out;
  fs::create_directories(in / "d" / "e");
  write_file(in / "top.txt", "Alpha beta gamma. Delta epsilon.");
  write_file(in / "d" / "mid.md", "# Title\n\nSome words in a sentence. More words follow here.");
  write_file(in / "d" / "e" / "deep.txt", "Deep text lives here. It has two sentences.");
  write_file(in / "d" / "e" / "skip.txt", "Skipped text. Not summarized.");
  auto r = run_abridge("summarize " + quote(in.path()) + " -r --exclude 'skip*' -o " + quote(out.path()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(out / "top.txt.summary.md"));
  EXPECT_TRUE(fs::exists(out / "d" / "mid.md.summary.md"));
  EXPECT_TRUE(fs::exists(out / "d" / "e" / "deep.txt.summary.md"));
  EXPECT_FALSE(fs::exists(out / "d" / "e" / "skip.txt.summary.md"));
  // Without -r only the top level.
  TempDir out2;
  r = run_abridge("summarize " + quote(in.path()) + " -o " + quote(out2.path()));
  EXPECT_TRUE(fs::exists(out2 / "top.txt.summary.md"));
  EXPECT_FALSE(fs::exists(out2 / "d"));
  // Paths on stdin, options from a config file (the command line wins).
  TempDir out3;
  write_file(in / "list", (in / "top.txt").string() + "\n" + (in / "d" / "e" / "deep.txt").string() + "\n");
  write_file(in / "abridge.conf", "format = json\nsummary-tokens = 50\n");
  const std::string cmd = std::string("'") + ABRIDGE_BINARY + "' summarize - -o " + quote(out3.path()) + " --config " +
                          quote(in / "abridge.conf") + " --format txt < " + quote(in / "list") + " 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_TRUE(fs::exists(out3 / "top.txt.summary.txt"));
  EXPECT_TRUE(fs::exists(out3 / "deep.txt.summary.txt"));
}

TEST(Summarize, UsageErrorsExitTwo) {
  TempDir out;
  EXPECT_EQ(run_abridge("summarize " + quote(source_path("samples"))).exit_code, 2);  // no -o
  EXPECT_EQ(run_abridge("summarize -o " + quote(out.path())).exit_code, 2);          // no input
  EXPECT_EQ(run_abridge("summarize x -o " + quote(out.path()) + " --format pdf").exit_code, 2);
  EXPECT_EQ(run_abridge("summarize x -o " + quote(out.path()) + " --engine llm").exit_code, 2);
  const auto chunk = run_abridge("summarize x -o " + quote(out.path()) + " --prefill-chunk 10");
  EXPECT_EQ(chunk.exit_code, 2);
  EXPECT_TRUE(contains(chunk.err, "--prefill-chunk must be in 64..65536")) << chunk.err;
  const auto r = run_abridge("summarize x -o " + quote(out.path()) + " --model /nonexistent");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "no such model directory")) << r.err;
}

TEST(Summarize, LlmMapReduceCachesAndResumes) {
  TempDir in, out;
  const fs::path doc = long_text(in, 12000);  // ~3K tokens: map-reduce at a 1,024-token context
  auto r = run_abridge("summarize " + quote(doc) + llm_args(out.path()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(read_file(out / "long.txt.summary.json"));
  EXPECT_GT(j["chunks"].size(), 4u);
  size_t prev_end = 0;
  for (const auto& c : j["chunks"]) {
    EXPECT_EQ(c["start"].get<size_t>(), prev_end);  // the chunks tile the document
    prev_end = c["end"].get<size_t>();
    EXPECT_LE(c["tokens"].get<int64_t>(), 256);
  }
  EXPECT_FALSE(j["summary"].get<std::string>().empty());
  const size_t cached = count_files(out / ".abridge" / "cache", ".zst");
  EXPECT_GT(cached, j["chunks"].size());  // chunk summaries and merges
  // --force recomputes nothing: every summary comes from the cache, same output.
  const auto t0 = std::chrono::steady_clock::now();
  r = run_abridge("summarize " + quote(doc) + llm_args(out.path()) + " --force");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(read_file(out / "long.txt.summary.json"))["summary"], j["summary"]);
  EXPECT_EQ(count_files(out / ".abridge" / "cache", ".zst"), cached);
  (void)t0;
}

// --attention-window bounds what one request holds in the KV cache, so a document longer than the pool
// is read in one pass; a window at least as long as the document is full attention: the same summary.
TEST(Summarize, AnAttentionWindowReadsALongDocumentInOnePass) {
  TempDir in, full, windowed, wide;
  const fs::path doc = long_text(in, 8000);  // ~3.4K tokens; the pool below holds 1,200
  const std::string args = " --model " + quote(random_model_dir()) +
                           " --device cpu --summary-tokens 24 --kv-cache-tokens 1200 --format json -q";
  auto r = run_abridge("summarize " + quote(doc) + " -o " + quote(full.path()) + args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json a = json::parse(read_file(full / "long.txt.summary.json"));
  EXPECT_GT(a["chunks"].size(), 1u);  // without a window the pool caps the context: map-reduce

  r = run_abridge("summarize " + quote(doc) + " -o " + quote(windowed.path()) + args +
                  " --attention-window 256 --sink-tokens 4");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json b = json::parse(read_file(windowed / "long.txt.summary.json"));
  EXPECT_TRUE(b["chunks"].empty()) << b.dump();  // one pass
  EXPECT_EQ(b["tokens"]["input"], a["tokens"]["input"]);
  EXPECT_GT(b["parameters"]["context_tokens"].get<int64_t>(), 3000);
  EXPECT_FALSE(b["summary"].get<std::string>().empty());

  // A window the pool cannot hold (wider than it) is no help: the run plans as without one.
  r = run_abridge("summarize " + quote(doc) + " -o " + quote(wide.path()) + args + " --attention-window 100000");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json c = json::parse(read_file(wide / "long.txt.summary.json"));
  EXPECT_EQ(c["chunks"].size(), a["chunks"].size());
  EXPECT_EQ(c["summary"], a["summary"]);
}

// How the model reads is part of the job: an FP8 KV cache or an attention window makes the output of
// a bf16 full-attention run out of date (and is named in the JSON's parameters), and each is up to
// date with itself.
TEST(Summarize, TheKvCacheDtypeAndTheWindowArePartOfTheJob) {
  TempDir in, out;
  const fs::path doc = long_text(in, 1500);
  const std::string cmd = "summarize " + quote(doc) + " -o " + quote(out.path()) + " --model " + quote(random_model_dir()) +
                          " --device cpu --summary-tokens 16 --format json";
  for (const auto& [extra, status] : std::vector<std::pair<std::string, std::string>>{
           {"", "1 summarized"}, {"", "0 summarized, 1 up to date"}, {" --kv-cache-dtype auto", "0 summarized, 1 up to date"},
           {" --kv-cache-dtype fp8", "1 summarized"}, {" --kv-cache-dtype fp8", "0 summarized, 1 up to date"},
           {" --attention-window 4096", "1 summarized"}, {" --attention-window 4096", "0 summarized, 1 up to date"},
           {" --attention-window 4096 --sink-tokens 8", "1 summarized"}}) {
    const auto r = run_abridge(cmd + extra);
    ASSERT_EQ(r.exit_code, 0) << extra << ": " << r.err;
    EXPECT_TRUE(contains(r.err, status)) << extra << ": " << r.err;
  }
  const json j = json::parse(read_file(out / "long.txt.summary.json"));
  EXPECT_EQ(j["parameters"]["attention_window"], 4096);
  EXPECT_EQ(j["parameters"]["sink_tokens"], 8);
  EXPECT_FALSE(j["parameters"].contains("kv_cache"));
}

TEST(Summarize, AWindowAsLongAsTheDocumentIsFullAttention) {
  TempDir in, full, windowed;
  const fs::path doc = long_text(in, 3000);  // ~1.3K tokens, one pass either way
  const std::string args = " --model " + quote(random_model_dir()) + " --device cpu --summary-tokens 24 --format json -q";
  auto r = run_abridge("summarize " + quote(doc) + " -o " + quote(full.path()) + args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_abridge("summarize " + quote(doc) + " -o " + quote(windowed.path()) + args + " --attention-window 4096");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json a = json::parse(read_file(full / "long.txt.summary.json"));
  const json b = json::parse(read_file(windowed / "long.txt.summary.json"));
  EXPECT_TRUE(a["chunks"].empty());
  EXPECT_TRUE(b["chunks"].empty());
  EXPECT_EQ(b["summary"], a["summary"]);
}

TEST(Summarize, GpuMemoryLimitIsASizeOrOneClearLine) {
  TempDir out;
  for (const char* bad : {"12X", "-1G", "lots"}) {
    const auto r = run_abridge("summarize " + quote(source_path("samples")) + " -o " + quote(out.path()) +
                               " --gpu-memory-limit " + bad);
    EXPECT_EQ(r.exit_code, 2) << bad;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(contains(r.err, "--gpu-memory-limit must be a size such as 22GiB")) << r.err;
  }
  auto r = run_abridge("summarize " + quote(source_path("samples")) + " -o " + quote(out.path()) +
                       " --model " + quote(random_model_dir()) + " --device cpu --gpu-memory-limit 100MiB");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--gpu-memory-limit must be 0 (no limit) or at least 256.0 MiB, not 100.0 MiB")) << r.err;
  // Valid sizes are taken by every command that opens an engine (on the CPU they change nothing).
  r = run_abridge("generate --model " + quote(random_model_dir()) + " --device cpu -p hi -n 2 --gpu-memory-limit 22GiB");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run_abridge("generate --model " + quote(random_model_dir()) + " --device cpu -p hi -n 2 --gpu-memory-limit 22Q");
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

TEST(Summarize, KilledRunResumesToTheSameOutput) {
  TempDir in, ref, out;
  const fs::path doc = long_text(in, 24000);
  ASSERT_EQ(run_abridge("summarize " + quote(doc) + llm_args(ref.path())).exit_code, 0);
  const std::string expected = json::parse(read_file(ref / "long.txt.summary.json"))["summary"];
  // Start the same run, kill -9 it once some chunk summaries are cached, then run again. The tiny model
  // writes the rest in well under a second, so on a loaded machine the kill may come too late: such an
  // attempt (the summary already written) starts over in an empty OUT_DIR, up to five times.
  bool killed_mid_run = false;
  for (int attempt = 0; attempt < 5 && !killed_mid_run; ++attempt) {
    fs::remove_all(out.path());
    fs::create_directories(out.path());
    const pid_t pid = spawn_abridge("summarize " + quote(doc) + llm_args(out.path()));
    ASSERT_GT(pid, 0);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline &&
           (!fs::exists(out / ".abridge" / "cache") || count_files(out / ".abridge" / "cache", ".zst") < 2))
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_GE(count_files(out / ".abridge" / "cache", ".zst"), 2u);
    killed_mid_run = !fs::exists(out / "long.txt.summary.json");
    if (!killed_mid_run) std::printf("[ attempt ] %d: the run finished before it was killed; again\n", attempt + 1);
  }
  ASSERT_TRUE(killed_mid_run) << "five runs finished before they were killed";
  const auto r = run_abridge("summarize " + quote(doc) + llm_args(out.path()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(read_file(out / "long.txt.summary.json"))["summary"], expected);
}

TEST(Summarize, SecondRunOnTheSameOutputExitsThree) {
  TempDir in, out;
  const fs::path doc = long_text(in, 24000);
  // A slow run (the tiny model on the CPU) holds the lock ...
  const pid_t pid = spawn_abridge("summarize " + quote(doc) + llm_args(out.path()));
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline && !fs::exists(out / ".abridge" / "cache"))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // ... so a second run on the same OUT_DIR exits at once with code 3,
  const auto r = run_abridge("summarize " + quote(source_path("samples")) + " -o " + quote(out.path()));
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(contains(r.err, "is in use by another abridge run (pid " + std::to_string(pid) + ")")) << r.err;
  EXPECT_FALSE(fs::exists(out / "a-scandal-in-bohemia.txt.summary.md"));
  // and with --wait-lock it waits, then runs.
  const auto w = run_abridge("summarize " + quote(source_path("samples")) + " -o " + quote(out.path()) + " --wait-lock");
  EXPECT_EQ(w.exit_code, 0) << w.err;
  EXPECT_TRUE(contains(w.err, "waiting")) << w.err;
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(fs::exists(out / "a-scandal-in-bohemia.txt.summary.md"));
  EXPECT_TRUE(fs::exists(out / "long.txt.summary.json"));
}

TEST(Summarize, ShardsCoverEveryInputExactlyOnce) {
  TempDir in, out;
  fs::create_directories(in / "sub");
  for (int i = 0; i < 40; ++i)
    write_file(in / (i % 2 ? "sub" : "") / ("doc" + std::to_string(i) + ".txt"),
               "Document number " + std::to_string(i) + " has a sentence. It has another one too.");
  const int n = 3;
  std::map<std::string, int> seen;
  for (int k = 0; k < n; ++k) {
    TempDir shard_out;
    const auto r = run_abridge("summarize " + quote(in.path()) + " -r -o " + quote(shard_out.path()) + " --shard " +
                               std::to_string(k) + "/" + std::to_string(n));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    size_t here = 0;
    for (const auto& e : fs::recursive_directory_iterator(shard_out.path()))
      if (e.is_regular_file() && e.path().extension() == ".md" &&
          e.path().string().find("/.abridge/") == std::string::npos) {
        ++seen[fs::relative(e.path(), shard_out.path()).string()];
        ++here;
      }
    EXPECT_GT(here, 0u) << "shard " << k << " got nothing";
  }
  EXPECT_EQ(seen.size(), 40u);  // every input in some shard
  for (const auto& [name, count] : seen) EXPECT_EQ(count, 1) << name;  // and in one only
  EXPECT_EQ(run_abridge("summarize " + quote(in.path()) + " -o " + quote(out.path()) + " --shard 3/3").exit_code, 2);
  EXPECT_EQ(run_abridge("summarize " + quote(in.path()) + " -o " + quote(out.path()) + " --shard x").exit_code, 2);
}

TEST(Summarize, RunReportListsEveryDocument) {
  TempDir in, out;
  write_file(in / "good.txt", "The committee met on Tuesday. It approved the budget for next year.");
  write_file(in / "empty.txt", "");
  const auto report = in / "report.json";
  const auto r = run_abridge("summarize " + quote(in / "good.txt") + " " + quote(in / "empty.txt") + " " + quote(in / "gone.txt") +
                             " -o " + quote(out.path()) + " --report " + quote(report));
  EXPECT_EQ(r.exit_code, 1);
  const json j = json::parse(read_file(report));
  EXPECT_EQ(j["summarized"], 1);
  EXPECT_EQ(j["failed"], 2);
  std::map<std::string, std::string> status;
  for (const auto& d : j["documents"]) status[fs::path(d["path"].get<std::string>()).filename().string()] = d["status"];
  EXPECT_EQ(status["good.txt"], "summarized");
  EXPECT_EQ(status["empty.txt"], "failed");
  EXPECT_EQ(status["gone.txt"], "failed");
  // A second run reports the up-to-date document as such.
  run_abridge("summarize " + quote(in / "good.txt") + " -o " + quote(out.path()) + " --report " + quote(report));
  EXPECT_EQ(json::parse(read_file(report))["documents"][0]["status"], "up to date");
}

// A mixed-length corpus through a KV pool just big enough for the longest request: admission by
// reservation runs it with no preemption and no recomputed token, and every output is the one a large
// pool gives (the same plans; batching does not change a token).
TEST(Summarize, ASmallKvPoolNeverPreemptsAndGivesTheOutputsOfALargeOne) {
  TempDir in, small, large;
  const std::string text = read_file(source_path("tests/data/texts/R-intro.txt"));
  const size_t sizes[] = {300, 9000, 1200, 5000, 600, 2500, 14000};
  for (size_t i = 0; i < std::size(sizes); ++i)
    write_file(in / ("d" + std::to_string(i) + ".txt"), text.substr(i * 20000, sizes[i]));
  const std::string args = " --model " + quote(random_model_dir()) +
                           " --device cpu --threads 2 --summary-tokens 16 --context-tokens 1536 --chunk-tokens 512 "
                           "--format json -q --report ";
  const auto rs = run_abridge("summarize " + quote(in.path()) + " -o " + quote(small.path()) + " --kv-cache-tokens 1600" +
                              args + quote(small / "report.json"));
  const auto rl = run_abridge("summarize " + quote(in.path()) + " -o " + quote(large.path()) + args + quote(large / "report.json"));
  ASSERT_LE(rs.exit_code, 1) << rs.err;
  EXPECT_EQ(rs.exit_code, rl.exit_code) << rs.err << rl.err;
  const json js = json::parse(read_file(small / "report.json")), jl = json::parse(read_file(large / "report.json"));
  // The random model's reply is sometimes only newlines: that document fails ("the model returned an
  // empty summary"), alike with either pool. Every other document is written.
  std::map<std::string, std::string> status;
  for (const auto& d : jl["documents"]) status[d["path"]] = d["status"].get<std::string>() + d["error"].get<std::string>();
  for (const auto& d : js["documents"]) {
    EXPECT_EQ(d["status"].get<std::string>() + d["error"].get<std::string>(), status[d["path"]]) << d["path"];
    if (d["status"] == "failed") {
      EXPECT_EQ(d["error"], "the model returned an empty summary");
    }
  }
  EXPECT_EQ(js["summarized"].get<int>() + js["failed"].get<int>(), static_cast<int>(std::size(sizes)));
  EXPECT_GE(js["summarized"].get<int>(), 1);
  const json& e = js["engine"];
  EXPECT_EQ(e["preempted_sequences"], 0);
  EXPECT_EQ(e["recomputed_tokens"], 0);
  EXPECT_LE(e["peak_kv_blocks"].get<int64_t>(), (1600 + 15) / 16);
  EXPECT_GT(e["steps"].get<int64_t>(), 0);
  EXPECT_GT(e["decode_tokens"].get<int64_t>(), 0);
  EXPECT_GT(jl["engine"]["peak_kv_blocks"].get<int64_t>(), e["peak_kv_blocks"].get<int64_t>());  // more at once
  for (size_t i = 0; i < std::size(sizes); ++i) {
    const std::string name = "d" + std::to_string(i) + ".txt.summary.json";
    ASSERT_EQ(fs::exists(small / name), fs::exists(large / name)) << name;
    if (!fs::exists(small / name)) continue;
    const json a = json::parse(read_file(small / name)), b = json::parse(read_file(large / name));
    EXPECT_EQ(a["summary"], b["summary"]) << name;
    EXPECT_EQ(a["chunks"].size(), b["chunks"].size()) << name;
  }
}

// `bench summarize` runs the pipeline and prints its table with the engine's real counters, on the CPU
// backend too; the floor comes from prompts timed after the run.
TEST(Summarize, BenchSummarizePrintsTheRunBesideItsFloor) {
  TempDir in, out;
  const std::string text = read_file(source_path("tests/data/texts/sherlock-pg1661.txt"));
  for (int i = 0; i < 3; ++i) write_file(in / ("d" + std::to_string(i) + ".txt"), text.substr(i * 9000, 1500 + i * 1500));
  const auto r = run_abridge("bench summarize " + quote(in.path()) + " -o " + quote(out.path()) + " --model " +
                             quote(random_model_dir()) + " --device cpu --threads 2 --summary-tokens 16 --context-tokens 1024 "
                             "--chunk-tokens 384 --ttft-lengths 64,256 --report " + quote(out / "report.json"));
  ASSERT_LE(r.exit_code, 1) << r.err;  // 1: the random model's reply was empty for some document
  for (const char* row : {"| share of floor |", "| floor: prefill + decode |", "| preempted sequences | 0 |",
                          "| recomputed tokens | 0 |", "| peak KV blocks |", "| first summary written (after the first step) |",
                          "| model load |", "TTFT points: ", "| time in decode-only steps |"})
    EXPECT_TRUE(contains(r.out, row)) << row << "\n" << r.out;
  const json report = json::parse(read_file(out / "report.json"));
  EXPECT_TRUE(contains(r.out, "| documents (summarized / up to date / failed) | " + std::to_string(report["summarized"].get<int>()) +
                                  " / 0 / " + std::to_string(report["failed"].get<int>()) + " |"))
      << r.out;
  EXPECT_EQ(report["summarized"].get<int>() + report["failed"].get<int>(), 3);
  const json& e = report["engine"];
  EXPECT_GT(e["requests"].get<int64_t>(), 3);  // the longest documents were cut into chunks and merged
  EXPECT_GE(e["prefill_tokens"].get<int64_t>(), report["input_tokens"].get<int64_t>());  // every text prefilled
  EXPECT_EQ(e["preempted_sequences"], 0);
  EXPECT_GT(e["first_step_seconds"].get<double>(), 0);
  // The decode-only steps by batch size add up to the engine's own count, each with the sequences it
  // decoded and their contexts; the table names each range that ran.
  int64_t steps = 0, sequences = 0;
  for (const json& d : e["decode_by_batch"]) {
    steps += d["steps"].get<int64_t>();
    sequences += d["sequences"].get<int64_t>();
    if (d["steps"].get<int64_t>() == 0) continue;
    EXPECT_GE(d["sequences"].get<int64_t>(), d["steps"].get<int64_t>() * d["first_batch"].get<int64_t>());
    EXPECT_GE(d["kv_tokens"].get<int64_t>(), d["sequences"].get<int64_t>());  // every sequence reads its context
    EXPECT_TRUE(contains(r.out, "| " + std::to_string(d["first_batch"].get<int64_t>()))) << r.out;
  }
  EXPECT_EQ(steps, e["decode_only_steps"].get<int64_t>());
  EXPECT_GT(steps, 0);
  EXPECT_LE(sequences, e["decode_tokens"].get<int64_t>());
  EXPECT_TRUE(contains(r.out, "| decode-only steps, batch | steps | mean context | ms per step | copy floor ms | share |")) << r.out;
  if (report["summarized"].get<int>() > 0) {
    EXPECT_GE(e["first_summary_seconds"].get<double>(), e["first_step_seconds"].get<double>());
  }
}

// --outline: after the summary, one short summary per top-level section with its pages; JSON gives the
// byte range and pages of every extracted sentence and section, and they are right on a real PDF (each
// span's text lies on the pages it names: the form feeds of the text read from it).
TEST(Summarize, OutlineAndJsonPointBackToTheDocument) {
  TempDir out;
  const fs::path pdf = source_path("tests/data/pdf/real/R-intro.pdf");
  auto r = run_abridge("summarize " + quote(pdf) + " -o " + quote(out.path()) + " --format json --outline --summary-tokens 200");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(read_file(out / "R-intro.pdf.summary.json"));
  const std::string text = abridge::pipeline::read_document(pdf.string(), abridge::pipeline::ReadOptions{}).text;
  auto page_of = [&](size_t offset) { return 1 + std::count(text.begin(), text.begin() + static_cast<long>(offset), '\f'); };
  ASSERT_FALSE(j["sentences"].empty());
  for (const json& x : j["sentences"]) {
    const size_t b = x["start"], e = x["end"];
    ASSERT_LT(b, e);
    ASSERT_LE(e, text.size());
    EXPECT_EQ(x["first_page"].get<int64_t>(), page_of(b));
    EXPECT_EQ(x["last_page"].get<int64_t>(), page_of(e - 1));
    // The sentence's first words are in the summary, as the document has them.
    const std::string head = text.substr(b, std::min<size_t>(12, e - b));
    if (head.find_first_of("\n\f") == std::string::npos) {
      EXPECT_TRUE(contains(j["summary"].get<std::string>(), head)) << head;
    }
  }
  ASSERT_GE(j["sections"].size(), 3u);  // the manual's top-level chapters
  size_t covered = 0;
  for (const json& sec : j["sections"]) {
    EXPECT_LE(sec["start"].get<size_t>(), sec["end"].get<size_t>());
    EXPECT_EQ(sec["first_page"].get<int64_t>(), page_of(sec["start"]));
    covered += !sec["summary"].get<std::string>().empty();
  }
  EXPECT_GE(covered, j["sections"].size() / 2) << j["sections"].dump(1);
  // Markdown: the summary, then a heading per section with its pages.
  r = run_abridge("summarize " + quote(pdf) + " -o " + quote(out.path()) + " --outline --summary-tokens 200");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string md = read_file(out / "R-intro.pdf.summary.md");
  EXPECT_TRUE(contains(md, "\n## Sections\n")) << md;
  EXPECT_TRUE(std::regex_search(md, std::regex("\n### [^\n]+ \\(pages? [0-9]+(–[0-9]+)?\\)\n"))) << md;
  EXPECT_EQ(run_abridge("summarize " + quote(pdf) + " -o " + quote(out.path()) + " --outline --format txt").exit_code, 2);
}

// --outline with a model: a document that goes in one pass gets one more request per top-level
// section; one cut into chunks gets its sections' summaries from the map step (no more requests).
TEST(Summarize, OutlineWithAModel) {
  TempDir in, out;
  std::string doc;
  for (const char* title : {"# Harbour", "# Budget", "# Outlook"}) {
    doc += std::string(title) + "\n\n";
    for (int k = 0; k < 20; ++k) doc += "The committee reviewed item " + std::to_string(k) + " of " + (title + 2) + " at length. ";
    doc += "\n\n";
  }
  write_file(in / "short.md", doc);
  const std::string args = " --model " + quote(random_model_dir()) + " --device cpu --threads 2 --summary-tokens 16 "
                           "--format json --outline -q --report ";
  auto r = run_abridge("summarize " + quote(in / "short.md") + " -o " + quote(out / "one") + args + quote(out / "one.json"));
  ASSERT_LE(r.exit_code, 1) << r.err;  // 1: the random model's reply may be empty
  EXPECT_EQ(json::parse(read_file(out / "one.json"))["engine"]["requests"], 4);  // the document + 3 sections
  if (fs::exists(out / "one" / "short.md.summary.json")) {
    const json j = json::parse(read_file(out / "one" / "short.md.summary.json"));
    ASSERT_EQ(j["sections"].size(), 3u);
    EXPECT_EQ(j["sections"][1]["title"], "Budget");
    EXPECT_TRUE(j["sections"][0]["first_page"].is_null());  // a text file has no pages
  }
  // Map-reduce: the chunks' summaries are the sections'.
  r = run_abridge("summarize " + quote(in / "short.md") + " -o " + quote(out / "map") + args + quote(out / "map.json") +
                  " --context-tokens 600 --chunk-tokens 128");
  ASSERT_LE(r.exit_code, 1) << r.err;
  const json report = json::parse(read_file(out / "map.json"));
  if (fs::exists(out / "map" / "short.md.summary.json")) {
    const json j = json::parse(read_file(out / "map" / "short.md.summary.json"));
    EXPECT_GT(j["chunks"].size(), 1u);
    EXPECT_EQ(j["sections"].size(), 3u);
    EXPECT_LT(report["engine"]["requests"].get<size_t>(), j["chunks"].size() + 4);  // no request per section
  }
}

TEST(Summarize, ProgressOnATerminalPlainLinesOtherwise) {
  if (std::system("command -v script >/dev/null 2>&1") != 0) GTEST_SKIP() << "script(1) is not installed";
  TempDir in, out, out2;
  const fs::path doc = long_text(in, 6000);
  // Under a pseudo-terminal: a progress line with documents, chunks, tokens/s.
  const fs::path log = in / "tty.log";
  const std::string inner = std::string("'") + ABRIDGE_BINARY + "' summarize " + quote(doc) + " -o " + quote(out.path()) +
                            " --model " + quote(random_model_dir()) +
                            " --device cpu --summary-tokens 24 --context-tokens 1024 --chunk-tokens 256";
  const std::string cmd = "script -qec \"" + inner + "\" " + quote(log) + " </dev/null >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const std::string tty = read_file(log);
  EXPECT_TRUE(contains(tty, " documents, ")) << tty;
  EXPECT_TRUE(contains(tty, " chunks] ")) << tty;
  EXPECT_TRUE(contains(tty, " tok/s")) << tty;
  EXPECT_TRUE(contains(tty, "1 summarized, 0 failed")) << tty;
  // Not a terminal: no carriage-return progress, one log line per document and the final line.
  const auto r = run_abridge("summarize " + quote(doc) + " -o " + quote(out2.path()));
  EXPECT_EQ(r.err.find('\r'), std::string::npos);
  EXPECT_TRUE(contains(r.err, "long.txt -> ")) << r.err;
  EXPECT_TRUE(contains(r.err, "1 summarized, 0 failed")) << r.err;
}

TEST(Summarize, TemporaryFilesOfAKilledRunAreCleanedUp) {
  TempDir in, out;
  write_file(in / "a.txt", "A sentence about cats. Another sentence about dogs.");
  fs::create_directories(out / ".abridge" / "cache");
  fs::create_directories(out / "sub");
  write_file(out / ".abridge-tmp-0123456789ab", "half a summa");
  write_file(out / "sub" / ".abridge-tmp-ba9876543210", "half another");
  write_file(out / ".abridge" / "cache" / ".abridge-tmp-00000000ffff", "partial");
  // Files of the user's that only look similar stay: abridge deletes only what it made.
  write_file(out / "notes.tmp.txt", "a user's file");
  write_file(out / "thesis.tmp.3", "a user's file");
  write_file(out / ".abridge-tmp-short", "a user's file");
  write_file(out / ".abridge-tmp-0123456789abc", "a user's file");
  const auto r = run_abridge("summarize " + quote(in / "a.txt") + " -o " + quote(out.path()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(out / ".abridge-tmp-0123456789ab"));
  EXPECT_FALSE(fs::exists(out / "sub" / ".abridge-tmp-ba9876543210"));
  EXPECT_FALSE(fs::exists(out / ".abridge" / "cache" / ".abridge-tmp-00000000ffff"));
  for (const char* kept : {"notes.tmp.txt", "thesis.tmp.3", ".abridge-tmp-short", ".abridge-tmp-0123456789abc"})
    EXPECT_TRUE(fs::exists(out / kept)) << kept;
  EXPECT_TRUE(fs::exists(out / "a.txt.summary.md"));
  // A run stopped by a usage error deletes nothing.
  write_file(out / ".abridge-tmp-0123456789ab", "half a summa");
  EXPECT_EQ(run_abridge("summarize " + quote(in / "a.txt") + " -o " + quote(out.path()) + " --format pdf").exit_code, 2);
  EXPECT_TRUE(fs::exists(out / ".abridge-tmp-0123456789ab"));
}

// The work queue behind --devices (one engine per GPU), run here with two CPU engines: every
// document is summarized exactly once, by one of them, and the outputs are those of one engine.
TEST(Summarize, SeveralEnginesShareOneQueue) {
  TempDir in, single, multi;
  const std::string text = read_file(source_path("tests/data/texts/R-intro.txt"));
  for (int i = 0; i < 9; ++i) {
    std::string name = "d";
    name += std::to_string(i);
    name += ".txt";
    write_file(in / name, text.substr(static_cast<size_t>(i) * 3000, 2500));
  }
  abridge::pipeline::SummarizeOptions o;
  o.inputs = {in.path().string()};
  o.model = random_model_dir().string();
  o.device = "cpu";
  o.summary_tokens = 16;
  o.context_tokens = 1024;
  o.chunk_tokens = 256;
  o.format = "json";
  o.quiet = true;
  o.threads = 1;
  std::istringstream no_stdin;
  o.out_dir = single.path().string();
  std::ostringstream log1;
  abridge::pipeline::Summarizer one(o, log1);
  const auto found = abridge::pipeline::discover_inputs(o, no_stdin);
  ASSERT_EQ(found.inputs.size(), 9u);
  const abridge::pipeline::OutputDir out1(o.out_dir, false, log1);
  const auto r1 = abridge::pipeline::summarize_inputs({&one}, out1, found.inputs);
  ASSERT_EQ(r1.summarized + r1.failed, 9) << log1.str();
  ASSERT_GE(r1.summarized, 3) << log1.str();
  std::map<std::string, std::string> status1;  // the random model's reply can be empty: a failure, the same on every engine
  for (const auto& d : r1.documents) status1[d.path] = d.status;

  o.out_dir = multi.path().string();
  std::mutex mu;
  std::ostringstream log2;
  std::vector<std::unique_ptr<abridge::pipeline::SyncedStream>> streams;
  std::vector<std::ostream*> logs;
  for (int e = 0; e < 2; ++e) {
    streams.push_back(std::make_unique<abridge::pipeline::SyncedStream>(log2, mu));
    logs.push_back(streams.back().get());
  }
  std::ostringstream notes;
  auto engines = abridge::pipeline::open_summarizers({o, o}, logs, false, notes);  // opened side by side
  ASSERT_EQ(engines.size(), 2u);
  const auto found2 = abridge::pipeline::discover_inputs(o, no_stdin);
  const abridge::pipeline::OutputDir out2(o.out_dir, false, log2);
  const auto r2 = abridge::pipeline::summarize_inputs({engines[0].get(), engines[1].get()}, out2, found2.inputs);
  EXPECT_EQ(r2.summarized, r1.summarized) << log2.str();
  EXPECT_EQ(r2.failed, r1.failed);
  std::map<std::string, int> seen;
  for (const auto& d : r2.documents) {
    ++seen[d.path];
    EXPECT_EQ(d.status, status1[d.path]) << d.path;
  }
  EXPECT_EQ(seen.size(), 9u);
  for (const auto& [path, n] : seen) EXPECT_EQ(n, 1) << path;
  for (int i = 0; i < 9; ++i) {
    const std::string name = "d" + std::to_string(i) + ".txt.summary.json";
    if (!fs::exists(single / name)) continue;
    EXPECT_EQ(json::parse(read_file(single / name))["summary"], json::parse(read_file(multi / name))["summary"]) << name;
  }
}

// Engines open side by side; one that cannot open is left out (keep going) or stops the run.
TEST(Summarize, EnginesThatFailToOpenAreLeftOutOrStopTheRun) {
  TempDir out;
  abridge::pipeline::SummarizeOptions good;
  good.inputs = {source_path("samples").string()};
  good.model = random_model_dir().string();
  good.device = "cpu";
  good.out_dir = out.path().string();
  good.quiet = true;
  good.threads = 1;
  abridge::pipeline::SummarizeOptions bad = good;
  bad.model = (out / "no-model").string();
  bad.gpu = 1;
  std::ostringstream log_a, log_b, notes;
  auto engines = abridge::pipeline::open_summarizers({good, bad}, {&log_a, &log_b}, true, notes);
  EXPECT_EQ(engines.size(), 1u);
  EXPECT_TRUE(contains(notes.str(), "GPU 1 not used")) << notes.str();
  EXPECT_TRUE(contains(notes.str(), "no-model")) << notes.str();
  try {
    abridge::pipeline::open_summarizers({good, bad}, {&log_a, &log_b}, false, notes);
    ADD_FAILURE() << "a list of engines with one that cannot open must throw";
  } catch (const abridge::Error& e) {
    EXPECT_TRUE(contains(e.what(), "no-model")) << e.what();
  }
  EXPECT_THROW(abridge::pipeline::open_summarizers({bad}, {&log_b}, true, notes), abridge::Error);
}

TEST(Summarize, DevicesNeedTheGpu) {
  TempDir out;
  auto r = run_abridge("summarize " + quote(source_path("samples")) + " -o " + quote(out.path()) + " --devices 0,1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--devices needs --model")) << r.err;
  r = run_abridge("summarize " + quote(source_path("samples")) + " -o " + quote(out.path()) + " --model " +
                  quote(random_model_dir()) + " --devices 0,x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--devices must be a list of GPU indices")) << r.err;
}
