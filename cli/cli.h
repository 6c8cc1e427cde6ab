// Shared pieces of the command-line front end: usage errors, option parsing, the options that
// `summarize` and `watch` share.
#pragma once

#include <boost/program_options.hpp>
#include <algorithm>
#include <cctype>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/read_file.h"
#include "pipeline/document_reader.h"
#include "pipeline/memory.h"
#include "pipeline/shared_options.h"
#include "pipeline/summarize.h"
#include "pipeline/text_input.h"

namespace abridge::cli {

namespace po = boost::program_options;

inline constexpr const char* kMaxDocumentHelp =
    "refuse documents larger than this many MiB before reading them (1..2048); summarizing one takes about 100 MiB "
    "plus up to 6 times its size in memory (docs/OPERATIONS.md)";
static_assert(pipeline::kDocumentMemoryFactor == 6 && pipeline::kMaxDocumentMiB == 2048, "kMaxDocumentHelp states them");

inline constexpr const char* kEncodingHelp =
    "read text files in this encoding (an iconv name: GB18030, BIG5, SHIFT_JIS, EUC-KR, WINDOWS-1252, ...) "
    "instead of detecting it (default: detected)";
inline constexpr const char* kOcrHelp =
    "auto | never | always: read PDF pages by OCR (tesseract); auto: the pages without a text layer, when "
    "tesseract's language data is installed";
inline constexpr const char* kOcrLangHelp =
    "tesseract languages for OCR, e.g. eng, chi_sim or eng+chi_sim (auto: the document's, English or Chinese)";

struct Usage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A Boost.Program_options error as one line "--option: reason" (the option first, once; Boost's own
// sentences name it in the middle). `positional` names the arguments that are given without a name
// (FILE, INPUT): a missing one is "FILE is missing". `command` and `synopsis` (its usage) for the advice.
inline std::string describe_option_error(const po::error& e, const po::positional_options_description* positional,
                                         const std::string& command, const std::string& synopsis) {
  const auto* named = dynamic_cast<const po::error_with_option_name*>(&e);
  std::string name = named ? named->get_option_name() : "";
  if (name.empty()) {
    if (dynamic_cast<const po::too_many_positional_options_error*>(&e))
      return "too many arguments (" + synopsis + ")";
    return e.what();
  }
  if (name[0] != '-') name = "--" + name;  // a config file's key
  const std::string what = e.what();
  std::string reason;
  if (dynamic_cast<const po::unknown_option*>(&e)) {
    reason = command.empty() ? "unknown option" : "unknown option (abridge " + command + " --help lists them)";
  } else if (const auto* a = dynamic_cast<const po::ambiguous_option*>(&e)) {
    reason = "ambiguous (";
    for (size_t k = 0; k < a->alternatives().size(); ++k) reason += (k ? ", --" : "--") + a->alternatives()[k];
    reason += ")";
  } else if (dynamic_cast<const po::multiple_occurrences*>(&e)) {
    reason = "given more than once";
  } else if (dynamic_cast<const po::required_option*>(&e)) {
    if (positional)
      for (unsigned k = 0; k < std::min(positional->max_total_count(), 8u); ++k)
        if ("--" + positional->name_for_position(k) == name) {
          std::string upper = name.substr(2);
          for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
          return upper + " is missing (" + synopsis + ")";
        }
    reason = "required (" + synopsis + ")";
  } else if (const auto* syntax = dynamic_cast<const po::invalid_syntax*>(&e)) {
    switch (syntax->kind()) {
      case po::invalid_syntax::missing_parameter: reason = "needs a value"; break;
      case po::invalid_syntax::extra_parameter: reason = "takes no value"; break;
      default: reason = what; break;
    }
  } else if (const auto* v = dynamic_cast<const po::validation_error*>(&e)) {
    // Boost says "the argument ('VALUE') for option '--name' is invalid".
    const size_t open = what.find("('"), close = what.rfind("')");
    const std::string value = open != std::string::npos && close != std::string::npos && close >= open + 2
                                  ? what.substr(open + 2, close - open - 2)
                                  : "";
    switch (v->kind()) {
      case po::validation_error::multiple_values_not_allowed: reason = "takes one value"; break;
      case po::validation_error::at_least_one_value_required: reason = "needs a value"; break;
      default: reason = "invalid value '" + value + "'"; break;
    }
  } else {
    reason = what;
  }
  return name + ": " + reason;
}

// Parses `args` (the words after the command) against `desc` with `pos` positional names.
// Returns false when --help was asked for (help already printed).
// `hidden` options are accepted but not shown. A Boost.Program_options error becomes a Usage of one
// line (describe_option_error).
inline bool parse(const std::string& command, const std::string& synopsis, po::options_description& desc,
           const po::positional_options_description& pos, const std::vector<std::string>& args, po::variables_map& vm,
           const po::options_description* hidden = nullptr) {
  desc.add_options()("help,h", "show this help");
  po::options_description all;
  all.add(desc);
  if (hidden) all.add(*hidden);
  try {
    po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
    if (vm.count("help")) {
      std::cout << "Usage: abridge " << command << " " << synopsis << "\n\n" << desc << '\n';
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw Usage(describe_option_error(e, &pos, command, "abridge " + command + " " + synopsis));
  }
  return true;
}

// The engine options, each with its one --help line (range and default), bound to `f`: every command
// that opens an engine registers the ones it offers here (`which`: EngineOption bits). Their ranges are
// checked in one place, when the command turns them into the engine's options (pipeline::engine_options,
// engine::EngineOptions::validate).
enum EngineOption : unsigned {
  kDeviceOption = 1,         // --device
  kThreadsOption = 2,        // --threads (the CPU backend)
  kGpuMemoryOptions = 4,     // --gpu-memory-fraction, --gpu-memory-limit
  kKvCacheOption = 8,        // --kv-cache-tokens
  kPrefillChunkOption = 16,  // --prefill-chunk
  kAttentionOptions = 32,    // --attention-window, --sink-tokens
  kKvCacheDtypeOption = 64,  // --kv-cache-dtype
  kAllEngineOptions = 127,
};
static_assert(engine::kMinStepTokens == 64 && engine::kMaxStepTokens == 65536 &&
                  engine::kMaxKvCacheTokens == int64_t{1} << 31 && engine::kMinGpuMemoryLimit == uint64_t{256} << 20,
              "the --help lines of add_engine_options state them");

inline void add_engine_options(po::options_description& desc, pipeline::EngineFlags& f,
                               unsigned which = kAllEngineOptions) {
  auto add = desc.add_options();
  if (which & kDeviceOption)
    add("device", po::value(&f.device)->default_value("auto"), "auto | cpu | cuda (auto: the GPU when there is one)");
  if (which & kGpuMemoryOptions) {
    add("gpu-memory-fraction", po::value(&f.gpu_memory_fraction)->default_value(engine::kDefaultGpuMemoryFraction, "0.90"),
        "CUDA: share of GPU memory the engine may take: weights, buffers, KV cache (0.01..1)");
    add("gpu-memory-limit", po::value(&f.gpu_memory_limit)->default_value("0"),
        "CUDA: most device memory the engine may hold, weights, buffers and KV cache together, e.g. 22GiB "
        "(K, M, G, T: powers of 1024; KB, MB, GB, TB: of 1000; 0: no limit, or at least 256MiB); with "
        "--gpu-memory-fraction, the smaller of the two wins. The CUDA context takes about 0.5 GiB on top: "
        "22GiB behaves like a 24 GB card");
  }
  if (which & kAttentionOptions) {
    add("attention-window", po::value(&f.attention_window)->default_value(0),
        "attend to the last W tokens only, plus the sink tokens: the KV cache of a request stays bounded at any "
        "length, so one pass reads a document of any length up to the model's context; the summary is then "
        "written from the sinks and the last W tokens (0: full attention, or 1 or more; docs/OPERATIONS.md says "
        "when map-reduce is the better choice)");
    add("sink-tokens", po::value(&f.sink_tokens)->default_value(4),
        "with --attention-window: the first S tokens every token still attends to (0 or more)");
  }
  if (which & kKvCacheOption)
    add("kv-cache-tokens", po::value(&f.kv_cache_tokens)->default_value(0),
        "cap the KV cache at this many tokens, every running request together (0: as much as memory allows, or "
        "1..2147483648); a request's prompt + summary is at most this");
  if (which & kKvCacheDtypeOption)
    add("kv-cache-dtype", po::value(&f.kv_cache_dtype)->default_value("auto"),
        "auto | bf16 | fp8: how the KV cache stores keys and values (auto: bf16). fp8 holds e4m3 codes with a "
        "power-of-two scale per token and KV head (each value within 1/16 of that head's largest): about half the "
        "bytes, so the cache holds twice the tokens (`abridge model info DIR` counts them per GPU) and long decodes "
        "read half as much; CUDA runs it, the CPU backend reproduces its rounding");
  if (which & kPrefillChunkOption)
    add("prefill-chunk", po::value(&f.prefill_chunk)->default_value(0, std::to_string(engine::kDefaultStepTokens)),
        "tokens per engine step, prompt chunks and the decodes of running requests together (0: the default, "
        "or 64..65536): larger keeps a GPU busier on long documents, smaller lets decodes go on between chunks");
  if (which & kThreadsOption)
    add("threads", po::value(&f.threads)->default_value(0), "CPU backend threads (0: one per core, or 1..1024)");
}

// The options of `abridge summarize` (also taken by `abridge watch`), bound to `o`; --config to `config`.
// `hidden`, when given, takes the options that command parses but does not list (watch: --report, which
// it refuses with a line of its own, so that one --config file still serves both commands).
inline void add_summarize_options(po::options_description& desc, pipeline::SummarizeOptions& o, std::string& config,
                                  po::options_description* hidden = nullptr) {
  desc.add_options()
      ("output,o", po::value(&o.out_dir), "output directory (required)")
      ("model,m", po::value(&o.model), "Qwen3 model directory (config.json, *.safetensors, tokenizer.json); default: none, the built-in extractive engine")
      ("engine", po::value(&o.engine)->default_value("auto"), "auto | llm | extractive (auto: llm with --model)")
      ("format", po::value(&o.format)->default_value("md"), "md | json | txt")
      ("summary-tokens", po::value(&o.summary_tokens)->default_value(400), "length of a summary in tokens (16..16384)")
      ("lang", po::value(&o.lang)->default_value("auto"), "auto | en | zh: the summary's language (auto: the document's)")
      ("prompt", po::value(&o.prompt_file), "file with an instruction that replaces the built-in prompts (not empty; at most 1 MiB; default: the built-in prompts, English or Chinese)")
      ("context-tokens", po::value(&o.context_tokens)->default_value(0), "largest prompt + summary in tokens (0: the model's context, or at least 4 x summary-tokens + 512; cut to the model's)")
      ("chunk-tokens", po::value(&o.chunk_tokens)->default_value(0), "chunk size for map-reduce in tokens (0: half the context, 512..32768; or at least 16)")
      ("include", po::value(&o.include)->composing(), "only paths matching this glob (glob(7): * ? [...]; repeatable; default: every .txt, .md and .pdf)")
      ("exclude", po::value(&o.exclude)->composing(), "skip paths matching this glob (glob(7): * ? [...]; repeatable; default: none)")
      ("outline", po::bool_switch(&o.outline), "md and json: after the summary, a short summary of each top-level section with its pages (a model summarizes each section of a one-pass document in a request of its own, or joins the summaries of its chunks; default: off)")
      ("force", po::bool_switch(&o.force), "summarize even inputs whose output is up to date (default: they are skipped)")
      ("quiet,q", po::bool_switch(&o.quiet), "no progress, only errors and the final line (default: a line per document)")
      ("pdf-timeout", po::value(&o.pdf_timeout)->default_value(60, "60"), "seconds allowed to extract one PDF's text, and again for each page read by OCR (0.1..86400)")
      ("pdf-max-memory", po::value(&o.pdf_max_memory_mb)->default_value(2048), "MiB allowed to extract one PDF (64..1048576)")
      ("max-document-size", po::value(&o.max_document_mb)->default_value(pipeline::kDefaultMaxDocumentMiB), kMaxDocumentHelp)
      ("encoding", po::value(&o.encoding), kEncodingHelp)
      ("ocr", po::value(&o.ocr)->default_value("auto"), kOcrHelp)
      ("ocr-lang", po::value(&o.ocr_lang)->default_value("auto"), kOcrLangHelp);
  add_engine_options(desc, o);
  desc.add_options()("wait-lock", po::bool_switch(&o.wait_lock), "if another run holds OUT_DIR, wait for it (default: exit with code 3)");
  (hidden ? *hidden : desc).add_options()
      ("report", po::value(&o.report), "write a JSON report of the run (per-document status, tokens, time) to FILE, checked before the work (- or /dev/stdout for standard output, appended to when the shell opened it with >>; a FIFO or terminal is written through, a regular file replaced atomically; default: none)");
  desc.add_options()
      ("devices", po::value(&o.devices), "CUDA: 0,1,... or all: one engine per GPU in this process, documents spread across them (default: one engine, on --device)")
      ("shard", po::value(&o.shard), "K/N with 0 <= K < N: only the inputs whose stable path hash falls in shard K of N, for job arrays (default: all inputs)")
      ("config", po::value(&config), "read options from FILE (key = value lines, long option names without --; not input: inputs come from the command line; an empty file sets nothing; at most 1 MiB); the command line wins (default: none)");
}

// The options checked before any work starts: the reading options (an unknown --encoding, a missing
// OCR language) and the --include/--exclude globs.
inline void check_early_options(const pipeline::SummarizeOptions& o) {
  try {
    pipeline::make_read_options(o.encoding, o.ocr, o.ocr_lang, o.pdf_timeout, o.pdf_max_memory_mb);
    for (const std::string& g : o.include) pipeline::check_glob("--include", g);
    for (const std::string& g : o.exclude) pipeline::check_glob("--exclude", g);
  } catch (const std::exception& e) {
    throw Usage(e.what());
  }
}

// Reads --config FILE (key = value lines, the long option names without "--"); values given on the
// command line stay. An empty file sets nothing. Inputs come from the command line only: a file that
// names `input` (or `dir`, `config`, `help`) is refused, as is a key that is no option.
// The file is read as every small input is (one open, a regular file, at most 1 MiB): a folder, a FIFO
// or /dev/zero is refused, not read as an empty file or waited on.
inline void apply_config_file(const std::string& config, const po::options_description& desc, po::variables_map& vm) {
  if (config.empty()) return;
  std::string text;
  try {
    text = pipeline::read_text_file(config, engine::kMaxOptionFileBytes);
  } catch (const std::exception& e) {
    throw Usage(std::string("--config: ") + e.what());
  }
  static const std::map<std::string, std::string> kNotInFile = {
      {"input", "inputs are given on the command line"},
      {"dir", "the directories to watch are given on the command line"},
      {"config", "one --config file, given on the command line"},
      {"help", "an option of the command line"}};
  po::options_description allowed;
  for (const auto& option : desc.options())
    if (!kNotInFile.contains(option->long_name())) allowed.add(option);
  const std::string where = "--config " + config + ": ";
  try {
    std::istringstream cf(text);
    const po::parsed_options parsed = po::parse_config_file(cf, allowed, /*allow_unregistered=*/true);
    for (const po::option& o : parsed.options) {
      if (!o.unregistered) continue;
      const auto it = kNotInFile.find(o.string_key);
      if (it != kNotInFile.end())
        throw Usage(where + "'" + o.string_key + "' is not allowed in a config file (" + it->second + ")");
      throw Usage(where + "'" + o.string_key + "' is no option");
    }
    po::store(parsed, vm);
    po::notify(vm);
  } catch (const po::invalid_config_file_syntax& e) {
    throw Usage(where + "'" + e.tokens() + "' is not a 'key = value' line");
  } catch (const po::error& e) {
    throw Usage(where + describe_option_error(e, nullptr, "", ""));
  }
}

// `abridge watch` (cli/watch_cli.cpp).
int cmd_watch(const std::vector<std::string>& args);

}  // namespace abridge::cli
