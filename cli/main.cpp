// abridge: summarize very long documents in batch with Qwen3 models.
// This file only turns argv into an options value and calls the pipeline.

#include <boost/program_options.hpp>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "pipeline/commands.h"
#include "pipeline/memory.h"
#include "pipeline/model_quantize.h"
#include "pipeline/run_report.h"
#include "pipeline/summarize.h"

namespace po = boost::program_options;
using namespace abridge::pipeline;
using namespace abridge::cli;

namespace {

constexpr const char* kMainHelp = R"(abridge - summarize very long documents with Qwen3 models, in batch

Usage: abridge <command> [options]

Commands:
  summarize   summarize documents (.txt, .md, .pdf) into an output directory
  watch       keep running: summarize each new or changed document under directories
  tokenize    print the token ids of a text file (or, with --decode, the text of ids)
  chunk       split a document into chunks that fit a token budget, cut where the text turns
  generate    generate a reply to a prompt with a Qwen3 model directory
  model       model utilities: 'model make-random' writes a random-weight checkpoint,
              'model quantize' writes an FP8 copy, 'model info' describes a model directory
  bench       'bench engine' measures prefill and decode speed against the GPU's ceilings;
              'bench summarize' runs summarize on a corpus and compares it with its floor

Options:
  -h [ --help ]   show this help; 'abridge <command> --help' shows a command's options
  --version       print the version

Exit codes: 0 success, 1 some inputs failed, 2 usage or fatal error, 3 the output directory is in
use by another run (summarize without --wait-lock).
)";

int cmd_tokenize(const std::vector<std::string>& args) {
  TokenizeOptions o;
  po::options_description desc(
      "Prints the token ids of FILE's text (UTF-8) on one line, space-separated, exactly as Hugging Face\n"
      "tokenizers' encode(text, add_special_tokens=False). Added tokens written in the text (<think>,\n"
      "<|im_end|>, ...) are matched whole unless --plain is given. FILE '-' reads standard input.\n\nOptions");
  desc.add_options()
      ("tokenizer", po::value(&o.tokenizer), "tokenizer.json or a model directory (default: the built-in Qwen3 tokenizer)")
      ("plain", po::bool_switch(&o.plain), "match no added tokens: all text is ordinary text (how documents are encoded)")
      ("decode", po::bool_switch(&o.decode), "FILE holds token ids; print their text")
      ("file", po::value(&o.file)->required(), "input file (positional)");
  po::positional_options_description pos;
  pos.add("file", 1);
  po::variables_map vm;
  if (!parse("tokenize", "[--tokenizer PATH] [--plain | --decode] FILE", desc, pos, args, vm)) return kExitOk;
  return run_tokenize(o, std::cout, std::cerr);
}

int cmd_chunk(const std::vector<std::string>& args) {
  ChunkOptions o;
  po::options_description desc(
      "Splits FILE's text into chunks of at most --max-tokens tokens of the tokenizer, cut at headings,\n"
      "paragraphs and sentence ends where the topic changes. FILE is read as summarize reads it: a PDF (with\n"
      "OCR of scanned pages) or a text file in UTF-8, UTF-16 or a detected legacy encoding, then cleaned\n"
      "(ligatures, soft hyphens, words broken at line ends; docs/INPUTS.md). jsonl prints one object per\n"
      "chunk: {\"index\", \"start\", \"end\", \"tokens\", \"section\", \"text\"}. start/end are byte offsets into\n"
      "that UTF-8 text and tile it: the spans, concatenated, give the text back. \"text\" is what the model\n"
      "is sent: lines broken inside a sentence joined, running page headers/footers and form feeds removed;\n"
      "\"tokens\" is its exact count. With --overlap, \"context_start\" (<= start) is where the repeated end\n"
      "of the previous chunk begins.\n"
      "FILE '-' reads standard input.\n\nOptions");
  desc.add_options()
      ("tokenizer", po::value(&o.tokenizer), "tokenizer.json or a model directory (default: the built-in Qwen3 tokenizer)")
      ("max-tokens", po::value(&o.max_tokens)->required(), "most tokens in a chunk's text (16 or more)")
      ("overlap", po::value(&o.overlap)->default_value(0), "tokens of the previous chunk repeated at the start (0 or more, below max-tokens / 2)")
      ("format", po::value(&o.format)->default_value("jsonl"), "jsonl | text")
      ("replace-invalid", po::bool_switch(&o.replace_invalid), "replace invalid UTF-8 with U+FFFD instead of failing")
      ("keep-running-lines", po::bool_switch(&o.keep_running_lines), "keep running page headers/footers in the text")
      ("encoding", po::value(&o.encoding), kEncodingHelp)
      ("ocr", po::value(&o.ocr)->default_value("auto"), kOcrHelp)
      ("ocr-lang", po::value(&o.ocr_lang)->default_value("auto"), kOcrLangHelp)
      ("file", po::value(&o.file)->required(), "input file (positional)");
  po::positional_options_description pos;
  pos.add("file", 1);
  po::variables_map vm;
  if (!parse("chunk", "FILE --max-tokens N [--tokenizer PATH] [--overlap N] [--format jsonl|text]", desc, pos, args,
             vm))
    return kExitOk;
  return run_chunk(o, std::cout, std::cerr);
}

int cmd_generate(const std::vector<std::string>& args) {
  GenerateOptions o;
  po::options_description desc(
      "Renders a ChatML prompt (optional system message, then the user's prompt) and streams the model's\n"
      "reply to standard output. Greedy by default; --temperature > 0 samples, with --top-p and --seed.\n\nOptions");
  desc.add_options()
      ("model,m", po::value(&o.model)->required(), "model directory (config.json, *.safetensors, tokenizer.json)")
      ("prompt,p", po::value(&o.prompt)->required(), "the user's message")
      ("system", po::value(&o.system), "system message")
      ("max-new-tokens,n", po::value(&o.max_new_tokens)->default_value(512), "most tokens to generate (1 or more; with the prompt, at most the model's context)")
      ("temperature,t", po::value(&o.temperature)->default_value(0.0f, "0"), "sampling temperature (0 or more; 0 is greedy)")
      ("top-p", po::value(&o.top_p)->default_value(1.0f, "1"), "nucleus sampling: keep the smallest set of tokens with this much probability (above 0, at most 1)")
      ("seed", po::value(&o.seed)->default_value(0), "random seed for sampling (0..2^64-1)")
      ("stats", po::bool_switch(&o.stats), "print token counts and timings to standard error");
  add_engine_options(desc, o, kAllEngineOptions & ~kKvCacheOption);
  po::positional_options_description pos;
  po::variables_map vm;
  if (!parse("generate", "--model DIR --prompt TEXT [options]", desc, pos, args, vm)) return kExitOk;
  return run_generate(o, std::cout, std::cerr);
}

int cmd_model(const std::vector<std::string>& args) {
  const std::string sub = args.empty() ? "" : args[0];
  const std::vector<std::string> rest(args.begin() + (args.empty() ? 0 : 1), args.end());
  if (sub == "make-random") {
    MakeRandomOptions o;
    po::options_description desc(
        "Writes a deterministic random-weight Qwen3 checkpoint in Hugging Face layout (config.json,\n"
        "model.safetensors, tokenizer.json, tokenizer_config.json) with the real vocabulary, for tests and\n"
        "benchmarks. The same preset, seed and dtype give the same bytes.\n\nOptions");
    desc.add_options()
        ("preset", po::value(&o.preset)->default_value("tiny"), "tiny | 0.6b | 1.7b | 4b (the real Qwen3 shapes; tiny is 2 layers)")
        ("seed", po::value(&o.seed)->default_value(0), "random seed (0..2^64-1)")
        ("dtype", po::value(&o.dtype)->default_value("bf16"), "bf16 | f32 | fp8 (bf16 weights quantized as 'model quantize --fp8' does)")
        ("out", po::value(&o.out_dir)->required(), "output directory (positional)");
    po::positional_options_description pos;
    pos.add("out", 1);
    po::variables_map vm;
    if (!parse("model make-random", "OUT_DIR [--preset P] [--seed S] [--dtype bf16|f32|fp8]", desc, pos, rest, vm))
      return kExitOk;
    return run_make_random(o, std::cout, std::cerr);
  }
  if (sub == "info") {
    ModelInfoOptions o;
    po::options_description desc("Prints a model directory's configuration, tensor count and bytes, and KV bytes per token.\n\nOptions");
    desc.add_options()("dir", po::value(&o.dir)->required(), "model directory (positional)");
    po::positional_options_description pos;
    pos.add("dir", 1);
    po::variables_map vm;
    if (!parse("model info", "DIR", desc, pos, rest, vm)) return kExitOk;
    return run_model_info(o, std::cout, std::cerr);
  }
  if (sub == "quantize") {
    QuantizeOptions o;
    po::options_description desc(
        "Writes DST, a new model directory, with SRC's weights quantized: --fp8 stores every linear layer\n"
        "as FP8 e4m3 with one f32 scale per 128x128 tile (the format of Qwen's official -FP8 releases);\n"
        "embeddings, norms and lm_head stay bf16. Deterministic; DST appears whole or not at all.\n\nOptions");
    desc.add_options()
        ("fp8", po::bool_switch(&o.fp8), "block-wise FP8 e4m3 (the only format so far)")
        ("src", po::value(&o.src)->required(), "source model directory, bf16/f16/f32 (positional)")
        ("dst", po::value(&o.dst)->required(), "output directory, must not exist (positional)");
    po::positional_options_description pos;
    pos.add("src", 1).add("dst", 1);
    po::variables_map vm;
    if (!parse("model quantize", "SRC DST --fp8", desc, pos, rest, vm)) return kExitOk;
    return run_model_quantize(o, std::cout, std::cerr);
  }
  if (sub.empty() || sub == "--help" || sub == "-h") {
    std::cout << "Usage: abridge model make-random OUT_DIR [--preset P] [--seed S] [--dtype bf16|f32|fp8]\n"
                 "       abridge model quantize SRC DST --fp8\n"
                 "       abridge model info DIR\n";
    return sub.empty() ? kExitFatal : kExitOk;
  }
  throw Usage("unknown model command '" + sub + "' (make-random, quantize or info)");
}

int cmd_bench_summarize(const std::vector<std::string>& args) {
  BenchSummarizeOptions b;
  SummarizeOptions& o = b.summarize;
  std::string config;
  po::options_description desc(
      "Runs `abridge summarize` on INPUT... exactly as that command would (same options, same outputs in\n"
      "OUT_DIR) and prints one table beside the run's floor: the engine's own time to prefill each prompt the\n"
      "run sent alone (TTFT, interpolated between prompts timed after the run, or --ttft-points) plus the decode bytes\n"
      "over the copy ceiling; model loading apart; the first summary's time; preempted sequences, recomputed\n"
      "tokens and the peak KV blocks. Use a fresh OUT_DIR (or --force) so that nothing is up to date.\n\nOptions");
  add_summarize_options(desc, o, config);
  desc.add_options()
      ("input", po::value(&o.inputs)->composing(), "files, directories, or - for paths on stdin (positional)")
      ("ttft-points", po::value(&b.ttft_points), "N:S,...: the engine's time to first token S (seconds) for prompts of N tokens, e.g. from `bench engine` on this GPU, instead of timing prompts after the run")
      ("ttft-lengths", po::value(&b.ttft_lengths), "prompt lengths to time for the fit, comma-separated (default: the run's longest prompt, 1/4 and 1/16 of it)")
      ("copy-tbps", po::value(&b.copy_tbps)->default_value(0, "auto"), "copy ceiling in TB/s (auto: the measured figure for H100/H200; on the CPU, measured)");
  po::positional_options_description pos;
  pos.add("input", -1);
  po::variables_map vm;
  if (!parse("bench summarize", "INPUT... -o OUT_DIR --model DIR [options]", desc, pos, args, vm)) return kExitOk;
  apply_config_file(config, desc, vm);
  return run_bench_summarize(b, std::cin, std::cout, std::cerr);
}

int cmd_bench(const std::vector<std::string>& args) {
  const std::string sub = args.empty() ? "" : args[0];
  const std::vector<std::string> rest(args.begin() + std::min<size_t>(1, args.size()), args.end());
  if (sub == "summarize") return cmd_bench_summarize(rest);
  if (sub != "engine")
    throw Usage(sub.empty() ? "bench needs a target: 'abridge bench engine' or 'abridge bench summarize'"
                            : "unknown bench '" + sub + "' (engine or summarize)");
  BenchEngineOptions o;
  po::options_description desc(
      "Measures the engine on a checkpoint (a random-weight one of the real shapes is fine: values do not\n"
      "change speed): prefill tok/s and time to first token per prompt length, decode ms/step and tok/s per\n"
      "batch and context, each beside its ceiling (FLOPs over the GEMM rate, bytes over the copy rate).\n"
      "Prints a Markdown table on standard output, progress on standard error. Run it with several\n"
      "--prefill-chunk values to compare them.\n\nOptions");
  desc.add_options()
      ("model,m", po::value(&o.model)->required(), "model directory")
      ("prefill", po::value(&o.prefill)->default_value(o.prefill), "prompt lengths, comma-separated")
      ("decode", po::value(&o.decode)->default_value(o.decode), "decode runs as BATCHxCONTEXT, comma-separated")
      ("steps", po::value(&o.decode_steps)->default_value(64), "timed decode steps per run (1..1048576)")
      ("gemm-tflops", po::value(&o.gemm_tflops)->default_value(0, "auto"), "GEMM ceiling in TFLOP/s (auto: the measured figure for H100/H200, or more than 0)")
      ("copy-tbps", po::value(&o.copy_tbps)->default_value(0, "auto"), "copy ceiling in TB/s (auto: the measured figure for H100/H200, or more than 0)")
      ("time-limit", po::value(&o.time_limit)->default_value(400, "400"), "seconds for the prefill runs; longer ones are skipped (0..86400)");
  add_engine_options(desc, o, kDeviceOption | kGpuMemoryOptions | kPrefillChunkOption | kKvCacheDtypeOption);
  po::positional_options_description pos;
  po::variables_map vm;
  if (!parse("bench engine", "--model DIR [options]", desc, pos, rest, vm)) return kExitOk;
  return run_bench_engine(o, std::cout, std::cerr);
}

int cmd_summarize(const std::vector<std::string>& args) {
  SummarizeOptions o;
  std::string config;
  po::options_description desc(
      "Summarizes documents (.txt and .md in UTF-8, UTF-16 or a detected legacy encoding such as GB18030;\n"
      ".pdf, scanned pages read by OCR; docs/INPUTS.md) into OUT_DIR, one output per input:\n"
      "OUT_DIR/<path relative to its input root>.summary.md (or .json / .txt). With --model, a Qwen3\n"
      "model writes the summaries: one pass where a document fits the context, otherwise each semantic chunk\n"
      "is summarized and the summaries are merged in order. Without --model, a built-in extractive engine picks\n"
      "the document's central sentences (no GPU or weights needed). Outputs are written atomically; finished\n"
      "work is cached under OUT_DIR/.abridge/, so an interrupted run resumes, and up-to-date outputs are skipped.\n"
      "A bad input is reported and the rest go on (exit code 1).\n\nOptions");
  add_summarize_options(desc, o, config);
  desc.add_options()
      ("recursive,r", po::bool_switch(&o.recursive), "descend into directories (default: only the files directly in a directory named as INPUT)")
      ("input", po::value(&o.inputs)->composing(), "files, directories, or - for paths on stdin (positional)");
  po::positional_options_description pos;
  pos.add("input", -1);
  po::variables_map vm;
  if (!parse("summarize", "INPUT... -o OUT_DIR [options]", desc, pos, args, vm)) return kExitOk;
  apply_config_file(config, desc, vm);
  check_early_options(o);
  return run_summarize(o, std::cin, std::cout, std::cerr);
}

}  // namespace

int main(int argc, char** argv) {
  arm_memory_reserve();  // running out of memory ends in one line, not an abort (pipeline/memory.h)
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << kMainHelp;
    return kExitFatal;
  }
  const std::string command = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  try {
    if (command == "--help" || command == "-h" || command == "help") {
      std::cout << kMainHelp;
      return kExitOk;
    }
    if (command == "--version") {
      std::cout << "abridge " << version() << '\n';
      return kExitOk;
    }
    if (command == "tokenize") return cmd_tokenize(rest);
    if (command == "chunk") return cmd_chunk(rest);
    if (command == "generate") return cmd_generate(rest);
    if (command == "model") return cmd_model(rest);
    if (command == "bench") return cmd_bench(rest);
    if (command == "summarize") return cmd_summarize(rest);
    if (command == "watch") return cmd_watch(rest);
    throw Usage("unknown command '" + command + "'");
  } catch (const po::error& e) {
    std::cerr << "abridge: " << shown_message(describe_option_error(e, nullptr, command, "abridge " + command + " --help")) << '\n';
    return kExitFatal;
  } catch (const std::bad_alloc&) {
    std::cerr << "abridge: out of memory (abridge needs about 100 MiB, plus up to " << kDocumentMemoryFactor
              << " times the document it reads: docs/OPERATIONS.md)\n";
    return kExitFatal;
  } catch (const std::exception& e) {  // a Usage too: "abridge: " and its one line
    std::cerr << "abridge: " << shown_message(e.what()) << '\n';
    return kExitFatal;
  }
}
