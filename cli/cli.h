// Shared pieces of the command-line front end: usage errors, option parsing, the options that
// `summarize` and `watch` share.
#pragma once

#include <boost/program_options.hpp>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "pipeline/document_reader.h"
#include "pipeline/shared_options.h"
#include "pipeline/summarize.h"
#include "pipeline/text_input.h"

namespace abridge::cli {

namespace po = boost::program_options;

inline constexpr const char* kPrefillChunkHelp =
    "tokens per engine step, prompt chunks and the decodes of running requests together (0: the default, "
    "or 64..65536): larger keeps a GPU busier on long documents, smaller lets decodes go on between chunks";

inline constexpr const char* kEncodingHelp =
    "read text files in this encoding (an iconv name: GB18030, BIG5, SHIFT_JIS, EUC-KR, WINDOWS-1252, ...) "
    "instead of detecting it";
inline constexpr const char* kOcrHelp =
    "auto | never | always: read PDF pages by OCR (tesseract); auto: the pages without a text layer, when "
    "tesseract's language data is installed";
inline constexpr const char* kOcrLangHelp =
    "tesseract languages for OCR, e.g. eng, chi_sim or eng+chi_sim (auto: the document's, English or Chinese)";

struct Usage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Parses `args` (the words after the command) against `desc` with `pos` positional names.
// Returns false when --help was asked for (help already printed).
// `hidden` options are accepted but not shown.
inline bool parse(const std::string& command, const std::string& synopsis, po::options_description& desc,
           const po::positional_options_description& pos, const std::vector<std::string>& args, po::variables_map& vm,
           const po::options_description* hidden = nullptr) {
  desc.add_options()("help,h", "show this help");
  po::options_description all;
  all.add(desc);
  if (hidden) all.add(*hidden);
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << "Usage: abridge " << command << " " << synopsis << "\n\n" << desc << '\n';
    return false;
  }
  po::notify(vm);
  return true;
}


// The options of `abridge summarize` (also taken by `abridge watch`), bound to `o`; --config to `config`.
inline void add_summarize_options(po::options_description& desc, pipeline::SummarizeOptions& o, std::string& config) {
  desc.add_options()
      ("output,o", po::value(&o.out_dir), "output directory (required)")
      ("model,m", po::value(&o.model), "Qwen3 model directory (config.json, *.safetensors, tokenizer.json)")
      ("device", po::value(&o.device)->default_value("auto"), "auto | cpu | cuda (auto: the GPU when there is one)")
      ("engine", po::value(&o.engine)->default_value("auto"), "auto | llm | extractive (auto: llm with --model)")
      ("format", po::value(&o.format)->default_value("md"), "md | json | txt")
      ("summary-tokens", po::value(&o.summary_tokens)->default_value(400), "length of a summary in tokens (16..16384)")
      ("lang", po::value(&o.lang)->default_value("auto"), "auto | en | zh: the summary's language (auto: the document's)")
      ("prompt", po::value(&o.prompt_file), "file with an instruction that replaces the built-in prompts")
      ("context-tokens", po::value(&o.context_tokens)->default_value(0), "largest prompt + summary in tokens (0: the model's context, or at least 4 x summary-tokens + 512; cut to the model's)")
      ("chunk-tokens", po::value(&o.chunk_tokens)->default_value(0), "chunk size for map-reduce in tokens (0: half the context, 512..32768; or at least 16)")
      ("include", po::value(&o.include)->composing(), "only paths matching this glob (repeatable)")
      ("exclude", po::value(&o.exclude)->composing(), "skip paths matching this glob (repeatable)")
      ("outline", po::bool_switch(&o.outline), "md and json: after the summary, a short summary of each top-level section with its pages (a model summarizes each section of a one-pass document in a request of its own, or joins the summaries of its chunks)")
      ("force", po::bool_switch(&o.force), "summarize even inputs whose output is up to date")
      ("quiet,q", po::bool_switch(&o.quiet), "no progress, only errors and the final line")
      ("pdf-timeout", po::value(&o.pdf_timeout)->default_value(60, "60"), "seconds allowed to extract one PDF's text, and again for each page read by OCR (0.1..86400)")
      ("pdf-max-memory", po::value(&o.pdf_max_memory_mb)->default_value(2048), "MiB allowed to extract one PDF (64..1048576)")
      ("encoding", po::value(&o.encoding), kEncodingHelp)
      ("ocr", po::value(&o.ocr)->default_value("auto"), kOcrHelp)
      ("ocr-lang", po::value(&o.ocr_lang)->default_value("auto"), kOcrLangHelp)
      ("gpu-memory-fraction", po::value(&o.gpu_memory_fraction)->default_value(abridge::engine::kDefaultGpuMemoryFraction, "0.90"), "CUDA: share of GPU memory the engine may take (0.01..1)")
      ("gpu-memory-limit", po::value(&o.gpu_memory_limit)->default_value("0"), pipeline::kGpuMemoryLimitHelp)
      ("attention-window", po::value(&o.attention_window)->default_value(0), "attend to the last W tokens only, plus the sink tokens: the KV cache of a request stays bounded at any length, so one pass reads a document of any length up to the model's context; the summary is then written from the sinks and the last W tokens (0: full attention, or 1 or more; docs/OPERATIONS.md says when map-reduce is the better choice)")
      ("sink-tokens", po::value(&o.sink_tokens)->default_value(4), "with --attention-window: the first S tokens every token still attends to (0 or more)")
      ("kv-cache-tokens", po::value(&o.kv_cache_tokens)->default_value(0), "cap the KV cache at this many tokens, every running request together (0: as much as memory allows, or 1..2147483648); a request's prompt + summary is at most this")
      ("prefill-chunk", po::value(&o.prefill_chunk)->default_value(0, "8192"), kPrefillChunkHelp)
      ("threads", po::value(&o.threads)->default_value(0), "CPU backend threads (0: one per core, or 1..1024)")
      ("wait-lock", po::bool_switch(&o.wait_lock), "if another run holds OUT_DIR, wait for it (default: exit with code 3)")
      ("report", po::value(&o.report), "write a JSON report of the run (per-document status, tokens, time) to FILE, checked before the work (- or /dev/stdout for standard output, appended to when the shell opened it with >>; a FIFO or terminal is written through, a regular file replaced atomically)")
      ("devices", po::value(&o.devices), "CUDA: 0,1,... or all: one engine per GPU in this process, documents spread across them")
      ("shard", po::value(&o.shard), "K/N: only the inputs whose stable path hash falls in shard K of N (0-based), for job arrays")
      ("config", po::value(&config), "read options from FILE (key = value lines); the command line wins");
}

// The reading options checked before any work starts (an unknown --encoding, a missing OCR language).
inline void check_read_options(const pipeline::SummarizeOptions& o) {
  try {
    pipeline::make_read_options(o.encoding, o.ocr, o.ocr_lang, o.pdf_timeout, o.pdf_max_memory_mb);
  } catch (const std::exception& e) {
    throw Usage(e.what());
  }
}

// Reads --config FILE (key = value lines); values given on the command line stay.
// The file is read as every small input is (one open, a regular file, at most 1 MiB): a folder, a FIFO
// or /dev/zero is refused, not read as an empty file or waited on.
inline void apply_config_file(const std::string& config, const po::options_description& desc, po::variables_map& vm) {
  if (config.empty()) return;
  std::string text;
  try {
    text = pipeline::read_text_file(config, size_t{1} << 20);
  } catch (const std::exception& e) {
    throw Usage(std::string("--config: ") + e.what());
  }
  std::istringstream cf(text);
  po::store(po::parse_config_file(cf, desc), vm);
  po::notify(vm);
}

// `abridge watch` (cli/watch_cli.cpp).
int cmd_watch(const std::vector<std::string>& args);

}  // namespace abridge::cli
