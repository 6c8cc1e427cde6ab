// `abridge summarize`: files in, summaries on disk.
//
// The route of a run (docs/ARCHITECTURE.md draws it):
//   discovery (discovery.h) -> OUT_DIR and its lock (output_dir.h) -> a Session over one or more
//   Summarizers: worker threads prepare documents (read, hash, up-to-date check, extract, count, plan:
//   prepare.h, doc_plan.h) smallest first, while one driver thread per engine moves each plan's requests
//   into the serving engine and the summaries back (driver.h), writes the outputs and reports them
//   (run_report.h). The extractive engine needs no driver: the workers summarize and write.
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "engine/defaults.h"
#include "pipeline/shared_options.h"
#include "pipeline/discovery.h"
#include "pipeline/run_report.h"

namespace abridge::engine {
class Engine;
}

namespace abridge::pipeline {

class OutputDir;
class ReportFile;

// The engine knobs (device, threads, GPU memory, KV cap, step tokens, attention window) are EngineFlags'.
struct SummarizeOptions : EngineFlags {
  std::vector<std::string> inputs;  // files, directories, or "-" for a list of paths on stdin
  std::string out_dir;
  std::string model;                // model directory; empty: the extractive engine
  std::string engine = "auto";      // auto | llm | extractive
  std::string format = "md";        // md | json | txt
  bool outline = false;             // md and json: also a short summary of each top-level section
  int64_t summary_tokens = 400;     // length of a summary (each chunk summary and the final one)
  std::string lang = "auto";        // auto | en | zh: the summary's language
  std::string prompt_file;          // replaces the built-in instruction
  int64_t context_tokens = 0;       // 0: the model's context, capped by the KV pool
  int64_t chunk_tokens = 0;         // 0: chosen from the context
  bool recursive = false;
  std::vector<std::string> include;  // globs on the path relative to its input root
  std::vector<std::string> exclude;
  bool force = false;
  bool quiet = false;
  double pdf_timeout = 60;          // seconds for a PDF's text layer, and again for each page read by OCR
  int64_t pdf_max_memory_mb = 2048;
  int64_t max_document_mb = 512;    // larger documents are refused unread (MiB); see pipeline/memory.h
  std::string encoding;             // text files: "" detects; else an iconv name that is forced
  std::string ocr = "auto";         // PDFs: auto | never | always (which pages are read by OCR)
  std::string ocr_lang = "auto";    // PDFs: tesseract languages ("eng+chi_sim"), or auto
  bool wait_lock = false;           // wait for another run on OUT_DIR instead of exiting with code 3
  std::string report;               // write a JSON run report here
  std::string shard;                // "K/N": only the inputs whose stable path hash falls in shard K of N
  std::string devices;              // "0,1,..." or "all": one engine per GPU, documents spread by a work queue
  int gpu = 0;                      // the GPU of this Summarizer's engine (set per engine from `devices`)
  bool progress_bar = true;         // false: plain log lines even on a terminal (several engines at once)
};

inline constexpr int kExitLocked = 3;  // another run holds OUT_DIR

// A summarizer loaded once: the model and its backend, or the built-in extractive engine. It checks
// the options; a Session runs documents through it.
class Summarizer {
 public:
  // Checks the options and loads the model; throws abridge::Error (a usage or fatal error). Notes (a
  // fall-back to the CPU) go to `err`.
  Summarizer(const SummarizeOptions& options, std::ostream& err);
  ~Summarizer();
  Summarizer(const Summarizer&) = delete;
  Summarizer& operator=(const Summarizer&) = delete;

  const SummarizeOptions& options() const;
  bool llm() const;
  engine::Engine* engine();          // null for the extractive engine
  std::string device() const;        // "NVIDIA H200", "cpu (extractive)"
  double load_seconds() const;       // opening the model
  std::ostream& log() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  friend class Session;
};

// Documents through one or more Summarizers (one per GPU) into one output directory: one `summarize`
// run, or a `watch` for its whole life, documents added as they appear. Errors in one document are
// reported on the engines' logs and in the report, never thrown.
class Session {
 public:
  using Clock = std::chrono::steady_clock;
  // `start`: when the run began (the report's times count from it). Starts the worker and driver threads.
  Session(std::vector<Summarizer*> engines, const OutputDir& out, Clock::time_point start = Clock::now());
  ~Session();  // stop()
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Queues documents (thread-safe), each call's documents in work_order().
  void add(std::vector<SummaryInput> inputs);
  // Waits until every added document is finished; returns the report of the documents finished since
  // the last wait() or take_report() (the engine counters and timings cover the whole session).
  BatchReport wait();
  // The documents finished since the last call, without waiting.
  BatchReport take_report();
  // Nothing queued, being prepared or in an engine.
  bool idle() const;
  // Stops: documents not yet in an engine are dropped (returns how many), the others are finished.
  size_t stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The order in which a batch's documents start: smallest first on one engine; on several, one short
// document for each engine first, then the rest longest first.
std::vector<SummaryInput> work_order(std::vector<SummaryInput> inputs, size_t engines);

// One batch through a session over `engines` (the summarize command; tests).
BatchReport summarize_inputs(std::vector<Summarizer*> engines, const OutputDir& out, const std::vector<SummaryInput>& inputs,
                             Session::Clock::time_point start = Session::Clock::now());

// Opens one Summarizer per entry of `options` at once, each on its own thread (loading a model onto
// several GPUs takes the time of one), each logging to its own entry of `logs`. With keep_going, the
// ones that fail are left out and said on `err` (an Error only if none opens); otherwise the first
// failure, in the order of `options`, is thrown.
std::vector<std::unique_ptr<Summarizer>> open_summarizers(const std::vector<SummarizeOptions>& options,
                                                          std::vector<std::ostream*> logs, bool keep_going,
                                                          std::ostream& err);

// An ostream for one writer thread that forwards whole lines to `out` under `mu`, so the lines of
// several such streams (one per thread) never interleave.
class SyncedStream : public std::ostream {
 public:
  SyncedStream(std::ostream& out, std::mutex& mu);
  ~SyncedStream() override;

 private:
  class Buf;
  std::unique_ptr<Buf> buf_;
};

// The start shared by `summarize` and `bench summarize`: the options checked, OUT_DIR made and locked,
// the engines opened (one, or one per GPU of --devices), the inputs found.
class SummarizeRun {
 public:
  SummarizeRun();
  ~SummarizeRun();
  // Returns an exit code when the run must not go on (kExitLocked); throws abridge::Error for usage and
  // fatal errors. Bad inputs are said on `err` and counted by run().
  std::optional<int> open(const SummarizeOptions& options, std::istream& in, std::ostream& err);
  // Summarizes the inputs found; the report counts the bad ones too, and its times start at `start`.
  BatchReport run(Session::Clock::time_point start);
  std::vector<Summarizer*> engines() const;
  const DiscoveredInputs& found() const { return found_; }
  // Writes the --report JSON to the file open() checked and opened (nothing without --report).
  void write_report(const BatchReport& report, std::ostream& out);

 private:
  std::unique_ptr<OutputDir> out_;
  std::unique_ptr<ReportFile> report_;  // --report, opened before the work
  std::mutex err_mu_;
  std::vector<std::unique_ptr<SyncedStream>> streams_;  // one per engine
  std::vector<std::unique_ptr<Summarizer>> engines_;
  DiscoveredInputs found_;
};

// Returns 0 when every input was summarized (or up to date), 1 when some failed, 2 for usage or
// fatal errors (bad options, output name collisions, an unusable model), 3 when another run holds
// OUT_DIR (an exclusive flock on OUT_DIR/.abridge; --wait-lock waits instead).
int run_summarize(const SummarizeOptions& options, std::istream& in, std::ostream& out, std::ostream& err);

// `abridge bench summarize`: runs summarize's pipeline and prints its table beside the run's floor.
struct BenchSummarizeOptions {
  SummarizeOptions summarize;
  std::string ttft_points;     // "N:S,...": TTFT of N-token prompts in seconds (`bench engine`); empty: measured here
  std::string ttft_lengths;    // prompt lengths to measure TTFT at (empty: chosen from the run's prompts)
  double copy_tbps = 0;        // copy ceiling in TB/s (0: the figure for a known GPU; measured on the CPU)
};
int run_bench_summarize(const BenchSummarizeOptions& options, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace abridge::pipeline
