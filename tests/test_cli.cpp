// The abridge binary as a user runs it: help, exit codes, make-random determinism, model info,
// generate, tokenize, and clear one-line errors for malformed inputs.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/model_fixture.h"
#include "tests/test_support.h"

using namespace abridge::testing;
namespace fs = std::filesystem;

namespace {

// A copy of the tiny model directory that a test may damage.
fs::path copy_model(const TempDir& dir) {
  const fs::path out = dir / "model";
  fs::copy(random_model_dir(), out, fs::copy_options::recursive);
  return out;
}

}  // namespace

TEST(Cli, HelpAndVersion) {
  auto r = run_abridge("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* cmd : {"tokenize", "generate", "model"}) EXPECT_TRUE(contains(r.out, cmd)) << cmd;
  r = run_abridge("--version");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "abridge 0.")) << r.out;
  r = run_abridge("generate --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "--max-new-tokens")) << r.out;
  r = run_abridge("model make-random --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "--preset")) << r.out;
}

TEST(Cli, UsageErrorsExitTwo) {
  auto r = run_abridge("");
  EXPECT_EQ(r.exit_code, 2);
  r = run_abridge("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "unknown command 'frobnicate'")) << r.err;
  r = run_abridge("tokenize");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "file")) << r.err;
  r = run_abridge("generate --model /nonexistent --prompt hi --max-new-tokens many");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "max-new-tokens")) << r.err;
  r = run_abridge("model make-random /tmp/x --preset 70b");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "unknown preset \"70b\"")) << r.err;
}

TEST(Cli, MakeRandomIsDeterministic) {
  TempDir dir;
  ASSERT_EQ(run_abridge("model make-random " + quote(dir / "a") + " --preset tiny --seed 3").exit_code, 0);
  ASSERT_EQ(run_abridge("model make-random " + quote(dir / "b") + " --preset tiny --seed 3").exit_code, 0);
  ASSERT_EQ(run_abridge("model make-random " + quote(dir / "c") + " --preset tiny --seed 4").exit_code, 0);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(fs::exists(dir / "a" / f)) << f;
    EXPECT_EQ(read_file(dir / "a" / f), read_file(dir / "b" / f)) << f;
  }
  EXPECT_NE(read_file(dir / "a" / "model.safetensors"), read_file(dir / "c" / "model.safetensors"));
  // The real vocabulary: the bundled tokenizer is the shipped Qwen3 tokenizer.json.
  EXPECT_EQ(read_file(dir / "a" / "tokenizer.json").size(), 11422654u);
}

TEST(Cli, ModelInfo) {
  const auto r = run_abridge("model info " + quote(random_model_dir()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "qwen3"));
  // 2 (K and V) x 2 layers x 2 KV heads x 64 x 2 bytes.
  EXPECT_TRUE(contains(r.out, "KV bytes per token        1024")) << r.out;
  EXPECT_TRUE(contains(r.out, "tensors                   24 (BF16 x24)")) << r.out;
}

TEST(Cli, GenerateStreamsARepeatableReply) {
  const std::string cmd = "generate --model " + quote(random_model_dir()) + " --prompt 'Summarize: the sky is blue.' --max-new-tokens 8";
  const auto a = run_abridge(cmd), b = run_abridge(cmd + " --threads 1");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_FALSE(a.out.empty());
  const auto c = run_abridge(cmd + " --temperature 0.9 --top-p 0.9 --seed 5 --stats");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_TRUE(contains(c.err, "prompt tokens")) << c.err;
}

// A prompt of some 200 tokens prefilled in steps of 64 gives the same greedy reply as in one step.
TEST(Cli, GeneratePrefillChunkKeepsTheReply) {
  std::string prompt = "Summarize:";
  for (int i = 0; i < 20; ++i) prompt += " The sky is blue and the grass is green, said report " + std::to_string(i) + ".";
  const std::string cmd = "generate --model " + quote(random_model_dir()) + " --prompt " + quote(prompt) +
                          " --max-new-tokens 6 --stats";
  const auto whole = run_abridge(cmd), chunked = run_abridge(cmd + " --prefill-chunk 64");
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  ASSERT_EQ(chunked.exit_code, 0) << chunked.err;
  EXPECT_TRUE(contains(whole.err, "prompt tokens")) << whole.err;
  EXPECT_EQ(chunked.out, whole.out);
  EXPECT_EQ(run_abridge(cmd + " --prefill-chunk 63").exit_code, 2);
}

TEST(Cli, GenerateOnCudaSaysWhatIsMissing) {
  const auto r = run_abridge("generate --model " + quote(random_model_dir()) + " --prompt hi --device cuda");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "cuda") || contains(r.err, "CUDA")) << r.err;
}

TEST(Cli, BadModelDirectoriesGetOneLineErrors) {
  auto expect = [](const std::string& args, const std::string& needle) {
    const auto r = run_abridge(args);
    EXPECT_EQ(r.exit_code, 2) << args;
    EXPECT_TRUE(contains(r.err, needle)) << args << " -> " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  };
  expect("generate --model /nonexistent/model --prompt hi", "/nonexistent/model: no such model directory");
  expect("model info /nonexistent/model", "no such model directory");
  {
    TempDir dir;
    const fs::path m = copy_model(dir);
    write_file(m / "config.json", "{\"model_type\": \"qwen3\", \"hidden_size\": ");
    expect("model info " + quote(m), "config.json: not valid JSON");
  }
  {
    TempDir dir;
    const fs::path m = copy_model(dir);
    fs::resize_file(m / "model.safetensors", fs::file_size(m / "model.safetensors") / 2);
    expect("generate --model " + quote(m) + " --prompt hi", "model.safetensors");
  }
  {
    TempDir dir;
    const fs::path m = copy_model(dir);
    fs::remove(m / "tokenizer.json");
    expect("generate --model " + quote(m) + " --prompt hi", "no tokenizer.json");
  }
  {
    TempDir dir;
    const fs::path m = copy_model(dir);
    fs::remove(m / "model.safetensors");
    expect("model info " + quote(m), "no model.safetensors");
  }
}

TEST(Cli, TokenizeEncodesDecodesAndRejectsInvalidUtf8) {
  TempDir dir;
  write_file(dir / "t.txt", "Hello world<|im_end|>\n你好");
  auto r = run_abridge("tokenize " + quote(dir / "t.txt"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, " 151645 ")) << r.out;  // matched whole
  const auto plain = run_abridge("tokenize --plain --tokenizer " + quote(random_model_dir()) + " " + quote(dir / "t.txt"));
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_FALSE(contains(plain.out, "151645")) << plain.out;
  EXPECT_EQ(std::count(plain.out.begin(), plain.out.end(), '\n'), 1);
  write_file(dir / "ids.txt", plain.out);
  r = run_abridge("tokenize --decode " + quote(dir / "ids.txt"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello world<|im_end|>\n你好");

  write_file(dir / "bad.txt", "ok\xC3(");
  r = run_abridge("tokenize " + quote(dir / "bad.txt"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "bad.txt: invalid UTF-8 at byte 2")) << r.err;
  r = run_abridge("tokenize " + quote(dir / "missing.txt"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "missing.txt: no such file")) << r.err;
  r = run_abridge("tokenize --tokenizer " + quote(dir.path()) + " " + quote(dir / "t.txt"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "tokenizer.json")) << r.err;
  write_file(dir / "ids2.txt", "12 999999999");
  r = run_abridge("tokenize --decode " + quote(dir / "ids2.txt"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "999999999")) << r.err;
}

TEST(Cli, TokenizeReadsUtf16WithBom) {
  TempDir dir;
  // "Hi 你" in UTF-16LE with a BOM.
  write_file(dir / "u16.txt", std::string("\xFF\xFE" "H\0i\0 \0\x60\x4F", 10));
  write_file(dir / "u8.txt", "Hi 你");
  const auto a = run_abridge("tokenize " + quote(dir / "u16.txt"));
  const auto b = run_abridge("tokenize " + quote(dir / "u8.txt"));
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
}

TEST(Cli, BenchEngineOnTheCpuPrintsATable) {
  const auto r = run_abridge("bench engine --device cpu --model " + quote(random_model_dir()) +
                             " --prefill 64,96 --decode 2x32 --steps 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "| prefill 64 | TTFT ")) << r.out;
  EXPECT_TRUE(contains(r.out, "| prefill 96 | TTFT ")) << r.out;
  EXPECT_TRUE(contains(r.out, "| decode b2 ctx32 | ")) << r.out;
  const auto bad = run_abridge("bench engine --device cpu --model " + quote(random_model_dir()) + " --decode 2by32");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(contains(bad.err, "BATCHxCONTEXT")) << bad.err;
  const auto chunked = run_abridge("bench engine --device cpu --model " + quote(random_model_dir()) +
                                   " --prefill 200 --decode 1x32 --steps 2 --prefill-chunk 64");
  ASSERT_EQ(chunked.exit_code, 0) << chunked.err;
  EXPECT_TRUE(contains(chunked.out, "| prefill 200 | TTFT ")) << chunked.out;
  EXPECT_EQ(run_abridge("bench engine --device cpu --model " + quote(random_model_dir()) + " --prefill-chunk 1").exit_code, 2);
  const auto zero = run_abridge("bench engine --device cpu --model " + quote(random_model_dir()) +
                                " --prefill 64 --decode 1x32 --steps 2 --prefill-chunk 0");  // 0: the default
  ASSERT_EQ(zero.exit_code, 0) << zero.err;
  EXPECT_TRUE(contains(zero.out, "| prefill 64 | TTFT ")) << zero.out;
}
