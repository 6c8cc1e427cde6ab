#include "pipeline/summarize.h"

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>

#include "base/error.h"
#include "engine/chat.h"
#include "engine/embedded_data.h"
#include "engine/engine.h"
#include "engine/read_file.h"
#include "pipeline/atomic_file.h"
#include "pipeline/commands.h"
#include "pipeline/document_reader.h"
#include "pipeline/driver.h"
#include "pipeline/memory.h"
#include "pipeline/output_dir.h"
#include "pipeline/prepare.h"
#include "pipeline/run_report.h"
#include "pipeline/shared_options.h"
#include "pipeline/summarizer_impl.h"
#include "pipeline/text_input.h"

namespace abridge::pipeline {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// The engine's options: the knobs as given (engine_options() checks their ranges), this run's model and GPU.
engine::EngineOptions engine_options_of(const SummarizeOptions& o) {
  engine::EngineOptions e = engine_options(o);
  e.model = o.model;
  e.gpu = o.gpu;
  return e;
}

// Every option against its range (the range its --help line states), before anything loads. Returns
// the reading options, which make_read_options() checks (--encoding, --ocr, --ocr-lang, --pdf-max-memory).
ReadOptions check_options(const SummarizeOptions& o) {
  if (o.out_dir.empty()) throw Error("-o OUT_DIR is required");
  if (o.inputs.empty()) throw Error("no INPUT given (files, directories, or - to read paths from stdin)");
  if (o.format != "md" && o.format != "json" && o.format != "txt") throw Error("--format must be md, json or txt");
  if (o.outline && o.format == "txt") throw Error("--outline needs --format md or json");
  if (o.engine != "auto" && o.engine != "llm" && o.engine != "extractive")
    throw Error("--engine must be auto, llm or extractive");
  if (o.lang != "auto" && o.lang != "en" && o.lang != "zh") throw Error("--lang must be auto, en or zh");
  check_range("--summary-tokens", o.summary_tokens, 16, 16384);
  // A context must hold a chunk's summary, the summaries it is merged with and the instructions.
  const int64_t min_context = 4 * o.summary_tokens + 512;
  if (o.context_tokens != 0 && o.context_tokens < min_context)
    throw Error("--context-tokens must be 0 (the model's context) or at least 4 x --summary-tokens + 512 = " +
                std::to_string(min_context) + ", not " + std::to_string(o.context_tokens));
  if (o.chunk_tokens != 0 && o.chunk_tokens < kMinChunkTokens)
    throw Error("--chunk-tokens must be 0 (chosen from the context) or at least " + std::to_string(kMinChunkTokens) +
                ", not " + std::to_string(o.chunk_tokens));
  check_range("--pdf-timeout", o.pdf_timeout, 0.1, 86400.0);
  ReadOptions read = make_read_options(o.encoding, o.ocr, o.ocr_lang, o.pdf_timeout, o.pdf_max_memory_mb);
  check_range("--max-document-size", o.max_document_mb, 1, kMaxDocumentMiB);
  read.max_bytes = static_cast<size_t>(o.max_document_mb) << 20;
  for (const std::string& g : o.include) check_glob("--include", g);
  for (const std::string& g : o.exclude) check_glob("--exclude", g);
  if (o.engine == "llm" && o.model.empty()) throw Error("--engine llm needs --model DIR");
  engine_options_of(o);  // the engine knobs: --device, --threads, the GPU memory, --kv-cache-tokens, ...
  return read;
}

}  // namespace

// ---- Summarizer ------------------------------------------------------------------------------

Summarizer::Impl::Impl(const SummarizeOptions& options, std::ostream& err) : o(options), log(err) {
  read = check_options(o);
  llm = o.engine == "llm" || (o.engine == "auto" && !o.model.empty());
  const engine::EngineOptions eo = engine_options_of(o);  // checked before the model is read
  if (!o.prompt_file.empty()) {
    try {
      custom_prompt = read_text_file(o.prompt_file, engine::kMaxPromptBytes);
    } catch (const Error& e) {
      throw Error(std::string("--prompt: ") + e.what());
    }
    // An empty instruction would summarize with none: a file saved empty by mistake, or the wrong file.
    if (custom_prompt.find_first_not_of(" \t\r\n\f\v") == std::string::npos)
      throw Error("--prompt: " + o.prompt_file + ": " + (custom_prompt.empty() ? "empty" : "only blanks") +
                  " (an instruction is needed; without --prompt the built-in prompts are used)");
  }
  if (llm) {
    const auto t0 = Clock::now();
    engine = engine::Engine::open(eo, log, o.quiet);
    load_seconds = seconds_since(t0);
    model_id = "model:" + sha256_hex(read_text_file(o.model + "/config.json", engine::kMaxConfigJsonBytes)) + ":" +
               std::to_string(engine->model().checkpoint->total_bytes());
    const int64_t context = this->context();
    if (context < 4 * o.summary_tokens + 512) {
      // The advice names what limits the context: --context-tokens is checked against the summary
      // before this (check_options), so it is the KV cache or the model.
      const int64_t pool = engine->kv_pool_tokens();
      const int64_t model_context = engine->config().max_position_embeddings;
      std::string advice;
      if (pool < model_context && o.kv_cache_tokens > 0)
        advice = "the KV cache is capped at " + std::to_string(pool) + " tokens: raise --kv-cache-tokens (0: as much "
                 "as memory allows) or lower --summary-tokens";
      else if (pool < model_context)
        advice = "the KV cache holds " + std::to_string(pool) + " tokens in the memory given: raise "
                 "--gpu-memory-fraction or lower --summary-tokens";
      else
        advice = "the model's context is " + std::to_string(model_context) + " tokens: lower --summary-tokens";
      throw Error("the context (" + std::to_string(context) + " tokens) is too small for summaries of " +
                  std::to_string(o.summary_tokens) + " tokens (at least 4 x --summary-tokens + 512 = " +
                  std::to_string(4 * o.summary_tokens + 512) + "); " + advice);
    }
  } else {
    own_tokenizer.emplace(engine::Tokenizer::from_json(engine::bundled_tokenizer_json()));
  }
  ::malloc_trim(0);
}

Summarizer::Summarizer(const SummarizeOptions& options, std::ostream& err)
    : impl_(std::make_unique<Impl>(options, err)) {}
Summarizer::~Summarizer() = default;
const SummarizeOptions& Summarizer::options() const { return impl_->o; }
bool Summarizer::llm() const { return impl_->llm; }
engine::Engine* Summarizer::engine() { return impl_->engine.get(); }
std::string Summarizer::device() const { return impl_->engine ? impl_->engine->device_description() : "cpu (extractive)"; }
double Summarizer::load_seconds() const { return impl_->load_seconds; }
std::ostream& Summarizer::log() const { return impl_->log; }

// ---- opening engines, log lines --------------------------------------------------------------

std::vector<std::unique_ptr<Summarizer>> open_summarizers(const std::vector<SummarizeOptions>& options,
                                                          std::vector<std::ostream*> logs, bool keep_going,
                                                          std::ostream& err) {
  ABRIDGE_CHECK(logs.size() == options.size());
  std::vector<std::unique_ptr<Summarizer>> opened(options.size());
  std::vector<std::string> errors(options.size());
  std::vector<std::thread> loaders;
  auto load = [&](size_t i) {
    try {
      opened[i] = std::make_unique<Summarizer>(options[i], *logs[i]);
    } catch (const std::exception& e) {
      errors[i] = error_text(e);
      if (errors[i].empty()) errors[i] = "cannot open the engine";
    }
  };
  for (size_t i = 0; i < options.size(); ++i) {
    try {
      loaders.emplace_back(load, i);
    } catch (const std::system_error&) {
      load(i);  // no thread to spare (a task limit): this engine is opened here, after the others
    }
  }
  for (auto& t : loaders) t.join();
  std::vector<std::unique_ptr<Summarizer>> out;
  std::string first_error;
  for (size_t i = 0; i < options.size(); ++i) {
    if (opened[i]) {
      out.push_back(std::move(opened[i]));
      continue;
    }
    if (!keep_going) throw Error(errors[i]);
    if (first_error.empty()) first_error = errors[i];
    err << "abridge: GPU " << options[i].gpu << " not used: " << errors[i] << '\n';
  }
  if (out.empty()) throw Error(first_error);
  return out;
}

class SyncedStream::Buf : public std::stringbuf {
 public:
  Buf(std::ostream& out, std::mutex& mu) : out_(out), mu_(mu) {}
  int sync() override {
    pending_ += str();
    str("");
    const size_t end = pending_.rfind('\n');
    if (end == std::string::npos) return 0;
    {
      std::lock_guard lock(mu_);
      out_.write(pending_.data(), static_cast<std::streamsize>(end + 1));
      out_.flush();
    }
    pending_.erase(0, end + 1);
    return 0;
  }

 private:
  std::ostream& out_;
  std::mutex& mu_;
  std::string pending_;  // the start of a line not finished yet
};

SyncedStream::SyncedStream(std::ostream& out, std::mutex& mu)
    : std::ostream(nullptr), buf_(std::make_unique<Buf>(out, mu)) {
  rdbuf(buf_.get());
  setf(std::ios::unitbuf);  // hand on lines as they complete
}
SyncedStream::~SyncedStream() { buf_->pubsync(); }

namespace {

// "0,1,3" or "all" (every visible GPU) -> device indices.
std::vector<int> parse_devices(const std::string& spec) {
  std::vector<int> out;
  if (spec == "all") {
    const int count = engine::gpu_count();
    for (int i = 0; i < count; ++i) out.push_back(i);
    if (out.empty()) throw Error("--devices all: no CUDA device is visible");
    return out;
  }
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int v = -1;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
    }
    if (used != item.size() || v < 0) throw Error("--devices must be a list of GPU indices (e.g. 0,1) or all, not \"" + spec + "\"");
    if (std::find(out.begin(), out.end(), v) != out.end()) throw Error("--devices lists GPU " + item + " twice");
    out.push_back(v);
  }
  if (out.empty()) throw Error("--devices is empty");
  return out;
}

}  // namespace

SummarizeRun::SummarizeRun() = default;
SummarizeRun::~SummarizeRun() = default;

std::optional<int> SummarizeRun::open(const SummarizeOptions& o, std::istream& in, std::ostream& err) {
  check_options(o);
  if (!o.shard.empty()) parse_shard(o.shard);
  // One run per OUT_DIR at a time: cron may start the next before the last has finished.
  out_ = std::make_unique<OutputDir>(o.out_dir, o.wait_lock, err);
  if (!out_->held_by_other().empty()) {
    err << "abridge: " << shown_path(o.out_dir) << " is in use by " << out_->held_by_other()
        << "; not starting (use --wait-lock to wait for it)\n";
    return kExitLocked;
  }
  // --report, checked and opened before any work (OUT_DIR exists now: a report inside it is fenced
  // by OUT_DIR's rule, and `--report OUT_DIR/last-run.json` works on the first run too).
  if (!o.report.empty()) {
    const struct stat out_dir = out_->folder_stat();
    report_ = std::make_unique<ReportFile>(o.report, &out_dir);
  }
  // The engines: one, or one per GPU of --devices (each loads the model on its GPU), options and model
  // checked before any input is read.
  if (o.devices.empty()) {
    engines_.push_back(std::make_unique<Summarizer>(o, err));
  } else {
    if (o.model.empty() || o.device == "cpu") throw Error("--devices needs --model and the GPU");
    std::vector<SummarizeOptions> per_gpu;
    std::vector<std::ostream*> logs;
    for (int gpu : parse_devices(o.devices)) {
      SummarizeOptions one = o;
      one.device = "cuda";
      one.gpu = gpu;
      one.progress_bar = false;
      per_gpu.push_back(std::move(one));
      streams_.push_back(std::make_unique<SyncedStream>(err, err_mu_));
      logs.push_back(streams_.back().get());
    }
    SyncedStream notes(err, err_mu_);
    engines_ = open_summarizers(per_gpu, logs, o.devices == "all", notes);  // "all": every GPU that opens
  }
  // Temporary files of a run killed mid-write: ours to delete now that we hold the lock and the run
  // is known to go ahead.
  out_->remove_stale_temp_files();
  // OUT_DIR exists now, so discovery leaves it out; every bad path is one failed input, named here.
  found_ = discover_inputs(o, in);
  keep_shard(found_, o.shard);
  for (const BadInput& b : found_.skipped) err << "abridge: " << shown_path(b.path) << ": " << b.reason << '\n';
  for (const BadInput& b : found_.bad) err << "abridge: " << shown_path(b.path) << ": " << shown_path(b.reason) << '\n';
  return std::nullopt;
}

std::vector<Summarizer*> SummarizeRun::engines() const {
  std::vector<Summarizer*> p;
  for (const auto& s : engines_) p.push_back(s.get());
  return p;
}

BatchReport SummarizeRun::run(Session::Clock::time_point start) {
  BatchReport report = summarize_inputs(engines(), *out_, found_.inputs, start);
  report.failed += static_cast<int>(found_.bad.size());
  for (const BadInput& b : found_.bad) report.documents.push_back({b.path, "", "failed", b.reason, 0, 0, 0, {}, {}, {}});
  report.seconds = seconds_since(start);  // model loading included
  return report;
}

void SummarizeRun::write_report(const BatchReport& report, std::ostream& out) {
  if (report_) report_->write(report_json(report), out);
}

int run_summarize(const SummarizeOptions& o, std::istream& in, std::ostream& out, std::ostream& err) {
  const auto t_start = Clock::now();
  return run_command(err, "abridge summarize", [&]() -> int {
    SummarizeRun run;
    if (const auto code = run.open(o, in, err)) return *code;
    const BatchReport report = run.run(t_start);
    run.write_report(report, out);
    err << final_line(report) << '\n';
    return report.failed > 0 ? kExitInputsFailed : kExitOk;
  });
}

}  // namespace abridge::pipeline
