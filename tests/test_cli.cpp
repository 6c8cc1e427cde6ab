// The abridge binary as a user runs it: help, exit codes, make-random determinism, model info,
// generate, tokenize, and clear one-line errors for malformed inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <vector>

#include "base/bytes.h"
#include "engine/bench.h"
#include "engine/engine.h"
#include "engine/memory_plan.h"
#include "engine/model_dir.h"
#include "pipeline/shared_options.h"
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
  EXPECT_EQ(r.err, "abridge: FILE is missing (abridge tokenize [--tokenizer PATH] [--plain | --decode] FILE)\n");
  r = run_abridge("generate --model /nonexistent --prompt hi --max-new-tokens many");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "abridge: --max-new-tokens: invalid value 'many'\n");
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
  // 2 (K and V) x 2 layers x 2 KV heads x 64 x 2 bytes; FP8: 2 x 2 x (2 x 64 codes + 2 scale bytes padded to 4).
  EXPECT_TRUE(contains(r.out, "KV bytes per token        1024 (bf16; 256.00 MiB for the full context), 528 (fp8; 132.00 MiB)\n"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "tensors                   24 (BF16 x24)")) << r.out;
  // The KV pool on each reference card: the engine's memory less the weights as the CUDA backend holds
  // them and its buffers at the default steps (engine/memory_plan.h), for bf16 and FP8 KV.
  namespace en = abridge::engine;
  const en::ModelDir model = en::open_model_dir(random_model_dir().string());
  const uint64_t weights = static_cast<uint64_t>(en::device_weight_bytes(model.config, *model.checkpoint));
  const uint64_t buffers = en::cuda_buffer_bytes(model.config);
  EXPECT_TRUE(contains(r.out, "KV tokens on a GPU        card     engine memory   bf16 KV     fp8 KV\n")) << r.out;
  for (const en::GpuCard& card : en::reference_gpu_cards()) {
    std::ostringstream line;
    line << std::left << std::setw(26) << "" << std::setw(9) << card.name << std::setw(16)
         << abridge::format_bytes(card.engine_bytes, 2) << std::setw(12)
         << en::cuda_kv_tokens(model.config, card.engine_bytes, weights, buffers, en::KvCacheDtype::kBf16)
         << en::cuda_kv_tokens(model.config, card.engine_bytes, weights, buffers, en::KvCacheDtype::kFp8) << '\n';
    EXPECT_TRUE(contains(r.out, line.str())) << line.str() << "\n" << r.out;
  }
  EXPECT_TRUE(contains(r.out, "(the pool left after 76.44 MiB of weights and " + abridge::format_bytes(buffers, 2) +
                                  " of buffers at steps of 8192 tokens;\n"))
      << r.out;
  // 24 GB: 22 GiB less 76.44 MiB of weights and about 0.4 GiB of buffers, at 1,024 bytes a token.
  EXPECT_GT(en::cuda_kv_tokens(model.config, 22ull << 30, weights, buffers, en::KvCacheDtype::kBf16), 22'000'000);
}

TEST(Cli, GenerateStreamsARepeatableReply) {
  const std::string cmd = "generate --device cpu --model " + quote(random_model_dir()) + " --prompt 'Summarize: the sky is blue.' --max-new-tokens 8";
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
  const std::string cmd = "generate --device cpu --model " + quote(random_model_dir()) + " --prompt " + quote(prompt) +
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

namespace {

// The commands and the --help text of each.
const std::vector<std::string> kCommands = {"summarize", "watch", "tokenize", "chunk", "generate",
                                            "model make-random", "model info", "bench engine", "bench summarize"};

// One option's entry in boost's --help layout ("  --name arg (=default)  description", continued on
// indented lines), whitespace runs folded to one space; empty when the option is not listed.
std::string option_entry(const std::string& help, const std::string& option) {
  std::istringstream in(help);
  std::string line, entry;
  bool inside = false;
  const std::regex start("^  (-[a-zA-Z] \\[ )?" + option + "( |$)");
  while (std::getline(in, line)) {
    const bool option_line = line.rfind("  -", 0) == 0;
    if (inside && (option_line || line.find_first_not_of(' ') == std::string::npos)) break;
    if (!inside && std::regex_search(line, start)) inside = true;
    if (inside) entry += line + ' ';
  }
  return std::regex_replace(entry, std::regex("\\s+"), " ");
}

// A numeric option: the range and default its --help entry states, and values outside the range,
// which the command must refuse (exit 2, naming the option) before it does any work.
struct NumericOption {
  std::string command, option, range, default_text;
  std::vector<std::string> outside;
  std::string extra = "";  // other arguments the command needs for this one
};

std::vector<NumericOption> numeric_options() {
  std::vector<NumericOption> t;
  for (const std::string c : {"summarize", "watch", "bench summarize"}) {
    t.push_back({c, "--summary-tokens", "(16..16384)", "(=400)", {"15", "16385"}});
    t.push_back({c, "--kv-cache-tokens", "(0: as much as memory allows, or 1..2147483648)", "(=0)", {"-1", "2147483649"}});
    // 4 x 400 + 512 = 2112 with the default --summary-tokens.
    t.push_back({c, "--context-tokens", "(0: the model's context, or at least 4 x summary-tokens + 512;", "(=0)", {"-1", "2111"}});
    t.push_back({c, "--chunk-tokens", "or at least 16)", "(=0)", {"-1", "15"}});
    t.push_back({c, "--pdf-timeout", "(0.1..86400)", "(=60)", {"0.05", "86401"}});
    t.push_back({c, "--pdf-max-memory", "(64..1048576)", "(=2048)", {"63", "1048577"}});
    t.push_back({c, "--gpu-memory-limit", "(K, M, G, T: powers of 1024; KB, MB, GB, TB: of 1000; 0: no limit, or at least 256MiB)", "(=0)", {"255MiB", "-1", "12X"}});
    t.push_back({c, "--attention-window", "(0: full attention, or 1 or more;", "(=0)", {"-1"}});
    t.push_back({c, "--sink-tokens", "(0 or more)", "(=4)", {"-1"}});
    t.push_back({c, "--max-document-size", "(1..2048)", "(=512)", {"0", "2049"}});
    t.push_back({c, "--gpu-memory-fraction", "(0.01..1)", "(=0.90)", {"0", "1.5"}});
    t.push_back({c, "--prefill-chunk", "(0: the default, or 64..65536)", "(=8192)", {"63", "65537"}});
    t.push_back({c, "--threads", "(0: one per core, or 1..1024)", "(=0)", {"-1", "1025"}});
  }
  t.push_back({"watch", "--settle", "(0..86400)", "(=2)", {"-1", "86401"}});
  t.push_back({"watch", "--rescan", "(0.1..86400)", "(=60)", {"0.05", "86401"}});
  t.push_back({"chunk", "--max-tokens", "(16 or more)", "", {"15"}});
  t.push_back({"chunk", "--overlap", "(0 or more, below max-tokens / 2)", "(=0)", {"-1", "32"}, "--max-tokens 64"});
  t.push_back({"generate", "--max-new-tokens", "(1 or more;", "(=512)", {"0"}});
  t.push_back({"generate", "--temperature", "(0 or more;", "(=0)", {"-0.5"}});
  t.push_back({"generate", "--top-p", "(above 0, at most 1)", "(=1)", {"0", "1.01"}});
  t.push_back({"generate", "--seed", "(0..2^64-1)", "(=0)", {}});
  t.push_back({"generate", "--threads", "(0: one per core, or 1..1024)", "(=0)", {"-1", "1025"}});
  t.push_back({"generate", "--gpu-memory-fraction", "(0.01..1)", "(=0.90)", {"0", "1.5"}});
  t.push_back({"generate", "--prefill-chunk", "(0: the default, or 64..65536)", "(=8192)", {"63", "65537"}});
  t.push_back({"generate", "--attention-window", "(0: full attention, or 1 or more;", "(=0)", {"-1"}});
  t.push_back({"generate", "--gpu-memory-limit", "(K, M, G, T: powers of 1024; KB, MB, GB, TB: of 1000; 0: no limit, or at least 256MiB)", "(=0)", {"255MiB", "-1"}});
  t.push_back({"generate", "--sink-tokens", "(0 or more)", "(=4)", {"-1"}});
  t.push_back({"model make-random", "--seed", "(0..2^64-1)", "(=0)", {}});
  t.push_back({"bench engine", "--steps", "(1..1048576)", "(=64)", {"0", "1048577"}});
  t.push_back({"bench engine", "--prefill-chunk", "(0: the default, or 64..65536)", "(=8192)", {"63", "65537"}});
  t.push_back({"bench engine", "--gpu-memory-fraction", "(0.01..1)", "(=0.90)", {"0", "1.5"}});
  t.push_back({"bench engine", "--gpu-memory-limit", "(K, M, G, T: powers of 1024; KB, MB, GB, TB: of 1000; 0: no limit, or at least 256MiB)", "(=0)", {"255MiB", "-1"}});
  t.push_back({"bench engine", "--gemm-tflops", "(auto: the measured figure for H100/H200, or more than 0)", "(=auto)", {"-1"}});
  t.push_back({"bench engine", "--copy-tbps", "(auto: the measured figure for H100/H200, or more than 0)", "(=auto)", {"-1"}});
  t.push_back({"bench engine", "--time-limit", "(0..86400)", "(=400)", {"-1", "86401"}});
  return t;
}

}  // namespace

// Every command's --help states each numeric option's range and default, and the command holds to
// the range: a value just outside it is refused with exit code 2 and a message naming the option.
TEST(Cli, HelpGivesEachNumericOptionsRangeAndDefault) {
  const auto table = numeric_options();
  // Complete: each option of any command whose default is a number is in the table.
  for (const std::string& command : kCommands) {
    const auto r = run_abridge(command + " --help");
    ASSERT_EQ(r.exit_code, 0) << command;
    const std::regex numeric_default("^  (?:-[a-zA-Z] \\[ )?(--[a-z-]+)(?: \\])? arg \\(=[0-9][0-9.]*\\)");
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      if (!std::regex_search(line, m, numeric_default)) continue;
      const bool listed = std::any_of(table.begin(), table.end(), [&](const NumericOption& o) {
        return o.command == command && o.option == m[1].str();
      });
      EXPECT_TRUE(listed) << command << " " << m[1] << ": a numeric option without a stated range";
    }
  }

  TempDir dir;
  fs::create_directories(dir / "in");
  const std::string sample = quote(source_path("samples/a-scandal-in-bohemia.txt"));
  const std::string model = quote(random_model_dir());
  const std::map<std::string, std::string> base = {
      {"summarize", "summarize " + sample + " -o " + quote(dir / "out")},
      {"watch", "watch " + quote(dir / "in") + " -o " + quote(dir / "out") + " --once"},
      {"chunk", "chunk " + sample},
      {"generate", "generate --model " + model + " --prompt hi"},
      {"bench engine", "bench engine --device cpu --model " + model + " --prefill 64 --decode 1x32"},
      {"bench summarize", "bench summarize " + sample + " -o " + quote(dir / "bench-out") + " --device cpu --model " + model},
  };
  for (const NumericOption& o : table) {
    const std::string entry = option_entry(run_abridge(o.command + " --help").out, o.option);
    ASSERT_FALSE(entry.empty()) << o.command << " " << o.option << " is not in --help";
    EXPECT_TRUE(contains(entry, o.range)) << o.command << " " << o.option << ": no range " << o.range << " in: " << entry;
    EXPECT_TRUE(contains(entry, o.default_text)) << o.command << " " << o.option << ": no default " << o.default_text << " in: " << entry;
    for (const std::string& v : o.outside) {
      // --option=VALUE: a negative value is a value, not an option.
      const auto r = run_abridge(base.at(o.command) + " " + o.extra + " " + o.option + "=" + v);
      EXPECT_EQ(r.exit_code, 2) << o.command << " " << o.option << "=" << v << ": " << r.err;
      EXPECT_TRUE(contains(r.err, o.option) && contains(r.err, " must ")) << o.command << " " << o.option << "=" << v << ": " << r.err;
    }
  }
}

// Every option of summarize and watch says what it is when it is not given: its default, "(=...)" or
// "default: ...", or that it is required or positional.
TEST(Cli, HelpGivesEveryOptionOfSummarizeAndWatchADefault) {
  for (const std::string command : {"summarize", "watch"}) {
    const std::string help = run_abridge(command + " --help").out;
    std::istringstream in(help);
    size_t options = 0;
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      if (!std::regex_search(line, m, std::regex("^  (?:-[a-zA-Z] \\[ )?(--[a-z-]+)"))) continue;
      const std::string option = m[1].str();
      if (option == "--help") continue;
      ++options;
      const std::string entry = option_entry(help, option);
      EXPECT_TRUE(contains(entry, "(=") || contains(entry, "default") || contains(entry, "(required)") ||
                  contains(entry, "(positional)"))
          << command << " " << option << " does not say its default: " << entry;
    }
    EXPECT_GT(options, 25u) << command;
  }
}

// Every command that opens a model defaults to --device auto: the GPU when one opens, else the CPU.
TEST(Cli, EveryCommandThatOpensAModelDefaultsToDeviceAuto) {
  for (const std::string command : {"summarize", "watch", "generate", "bench engine"}) {
    const std::string entry = option_entry(run_abridge(command + " --help").out, "--device");
    EXPECT_TRUE(contains(entry, "--device arg (=auto) auto | cpu | cuda")) << command << ": " << entry;
  }
  const std::string cmd = "generate --model " + quote(random_model_dir()) + " --prompt 'The sky is' --max-new-tokens 4";
  const auto with_default = run_abridge(cmd), on_cpu = run_abridge(cmd + " --device cpu");
  ASSERT_EQ(with_default.exit_code, 0) << with_default.err;
  ASSERT_EQ(on_cpu.exit_code, 0) << on_cpu.err;
  EXPECT_FALSE(contains(on_cpu.err, "running on the CPU")) << on_cpu.err;  // asked for: no note
  if (abridge::engine::gpu_count() == 0) {
    EXPECT_EQ(with_default.err, "abridge: no CUDA GPU found; running on the CPU\n");
    EXPECT_EQ(with_default.out, on_cpu.out);
  } else {
    EXPECT_FALSE(contains(with_default.err, "running on the CPU")) << with_default.err;
  }
  const auto bad = run_abridge(cmd + " --device tpu");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(contains(bad.err, "--device must be auto, cpu or cuda, not \"tpu\"")) << bad.err;
}

// watch logs each batch and writes no run report: its --help does not offer --report, and --report
// (on the command line or in a --config file shared with summarize) is one line naming the option.
TEST(Cli, WatchHelpDoesNotOfferReport) {
  const auto watch = run_abridge("watch --help");
  ASSERT_EQ(watch.exit_code, 0);
  EXPECT_TRUE(option_entry(watch.out, "--report").empty()) << watch.out;
  EXPECT_FALSE(option_entry(run_abridge("summarize --help").out, "--report").empty());
  TempDir dir;
  fs::create_directories(dir / "in");
  write_file(dir / "watch.conf", "report = " + (dir / "r.json").string() + "\n");
  for (const std::string& how : {" --report " + quote(dir / "r.json"), " --config " + quote(dir / "watch.conf")}) {
    const auto r = run_abridge("watch " + quote(dir / "in") + " -o " + quote(dir / "out") + " --once" + how);
    EXPECT_EQ(r.exit_code, 2) << how << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "--report is not supported by watch")) << how << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(dir / "r.json"));
  }
}

// Watching is always recursive: watch --help says so and does not offer --recursive, which it still
// accepts (one --config file serves summarize and watch); summarize lists it.
TEST(Cli, WatchHelpDoesNotOfferRecursive) {
  const auto watch = run_abridge("watch --help");
  ASSERT_EQ(watch.exit_code, 0);
  EXPECT_TRUE(contains(watch.out, "(always\nrecursive;")) << watch.out;
  EXPECT_TRUE(option_entry(watch.out, "--recursive").empty()) << watch.out;
  EXPECT_FALSE(contains(watch.out, "-r [")) << watch.out;
  EXPECT_FALSE(option_entry(watch.out, "--no-inotify").empty()) << watch.out;
  EXPECT_TRUE(contains(watch.out, "[--once] [--no-inotify]")) << watch.out;  // the synopsis
  EXPECT_FALSE(option_entry(run_abridge("summarize --help").out, "--recursive").empty());

  TempDir dir;
  fs::create_directories(dir / "in" / "sub");
  write_file(dir / "in" / "sub" / "a.txt", "The committee met on Tuesday. It approved the budget. The vote was close.");
  write_file(dir / "watch.conf", "recursive = true\n");
  int k = 0;
  for (const std::string& how : std::vector<std::string>{" -r", " --recursive", " --config " + quote(dir / "watch.conf")}) {
    const fs::path out = dir / ("out" + std::to_string(k++));
    const auto r = run_abridge("watch " + quote(dir / "in") + " -o " + quote(out) + " --once" + how);
    EXPECT_EQ(r.exit_code, 0) << how << ": " << r.err;
    EXPECT_TRUE(fs::exists(out / "sub" / "a.txt.summary.md")) << how;
  }
}

// --kv-cache-dtype on every command that opens an engine: listed in --help with its values and default,
// a bad value refused in one line naming the option and the value (each command's usual prefix: watch
// stamps its lines) before anything is read or written, and fp8 reaching the backend's options.
TEST(Cli, KvCacheDtypeIsListedCheckedAndReachesTheBackend) {
  TempDir dir;
  fs::create_directories(dir / "in");
  const std::string sample = quote(source_path("samples/a-scandal-in-bohemia.txt"));
  const std::string model = quote(random_model_dir());
  const std::string message = "--kv-cache-dtype must be auto, bf16 or fp8, not ";
  struct Case {
    std::string command, args, prefix;
  };
  const std::vector<Case> cases = {
      {"summarize", sample + " -o " + quote(dir / "out"), "abridge summarize: "},
      {"watch", quote(dir / "in") + " -o " + quote(dir / "wout") + " --once", "abridge watch: "},
      {"generate", "--model " + model + " --prompt hi", "abridge: "},
      {"bench engine", "--device cpu --model " + model + " --prefill 64 --decode 1x32", "abridge: "},
      {"bench summarize", sample + " -o " + quote(dir / "bout") + " --device cpu --model " + model, "abridge bench summarize: "},
  };
  for (const Case& c : cases) {
    const std::string entry = option_entry(run_abridge(c.command + " --help").out, "--kv-cache-dtype");
    EXPECT_TRUE(contains(entry, "--kv-cache-dtype arg (=auto) auto | bf16 | fp8: how the KV cache stores keys and values"))
        << c.command << ": " << entry;
    for (const std::string bad : {"x", "fp16", "FP8"}) {
      const auto r = run_abridge(c.command + " " + c.args + " --kv-cache-dtype=" + quote(bad));
      EXPECT_EQ(r.exit_code, 2) << c.command << " " << bad << ": " << r.err;
      const std::string line = c.prefix + message + "\"" + bad + "\"\n";
      if (c.command == "watch") {
        const size_t z = r.err.find("Z abridge watch: ");
        EXPECT_EQ(z, 23u) << r.err;  // 2024-05-01T12:00:00.000Z
        EXPECT_EQ(r.err.substr(z == std::string::npos ? 0 : z + 2), line) << c.command;
      } else {
        EXPECT_EQ(r.err, line) << c.command;
      }
    }
  }
  EXPECT_FALSE(fs::exists(dir / "out"));   // refused before OUT_DIR is made
  EXPECT_FALSE(fs::exists(dir / "bout"));

  abridge::pipeline::EngineFlags flags;
  EXPECT_EQ(abridge::engine::backend_options(abridge::pipeline::engine_options(flags)).kv_cache_dtype,
            abridge::engine::KvCacheDtype::kBf16);  // auto
  flags.kv_cache_dtype = "fp8";
  EXPECT_EQ(abridge::engine::backend_options(abridge::pipeline::engine_options(flags)).kv_cache_dtype,
            abridge::engine::KvCacheDtype::kFp8);
  flags.kv_cache_dtype = "bf16";
  EXPECT_EQ(abridge::engine::backend_options(abridge::pipeline::engine_options(flags)).kv_cache_dtype,
            abridge::engine::KvCacheDtype::kBf16);
}

// summarize with an FP8 KV cache on the CPU (the tiny random model): both documents summarized, each
// summary written and not empty, as with the bf16 cache.
TEST(Cli, SummarizeWithAnFp8KvCacheWritesItsSummaries) {
  TempDir dir;
  fs::create_directories(dir / "docs");
  const std::string text = read_file(source_path("tests/data/texts/R-intro.txt"));
  write_file(dir / "docs" / "a.txt", text.substr(0, 3000));
  write_file(dir / "docs" / "b.txt", text.substr(6000, 3000));
  const auto r = run_abridge("summarize " + quote(dir / "docs") + " -o " + quote(dir / "out") + " --model " +
                             quote(random_model_dir()) + " --device cpu --summary-tokens 24 --format json --kv-cache-dtype fp8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "2 summarized, 0 failed")) << r.err;
  for (const char* name : {"a.txt.summary.json", "b.txt.summary.json"}) {
    ASSERT_TRUE(fs::exists(dir / "out" / name)) << name;
    const auto j = nlohmann::json::parse(read_file(dir / "out" / name));
    EXPECT_EQ(j["model"], random_model_dir().string()) << name;
    EXPECT_FALSE(j["summary"].get<std::string>().empty()) << name;
  }
}
