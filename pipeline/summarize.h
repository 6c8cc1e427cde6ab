// `abridge summarize`: files in, summaries on disk. Discovery, extraction, the summarization strategy
// (one pass where the document fits the context, map-reduce over semantic chunks where it does not,
// or the built-in extractive engine), atomic outputs, a resumable cache, progress and exit codes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <ostream>
#include <utility>
#include <string>
#include <vector>

namespace abridge::pipeline {

struct SummarizeOptions {
  std::vector<std::string> inputs;  // files, directories, or "-" for a list of paths on stdin
  std::string out_dir;
  std::string model;                // model directory; empty: the extractive engine
  std::string device = "auto";      // auto | cpu | cuda
  std::string engine = "auto";      // auto | llm | extractive
  std::string format = "md";        // md | json | txt
  int64_t summary_tokens = 400;     // length of a summary (each chunk summary and the final one)
  std::string lang = "auto";        // auto | en | zh: the summary's language
  std::string prompt_file;          // replaces the built-in instruction
  int64_t context_tokens = 0;       // 0: the model's context
  int64_t chunk_tokens = 0;         // 0: chosen from the context
  bool recursive = false;
  std::vector<std::string> include;  // globs on the path relative to its input root
  std::vector<std::string> exclude;
  bool force = false;
  bool quiet = false;
  double pdf_timeout = 60;          // seconds for a PDF's text layer, and again for each page read by OCR
  int64_t pdf_max_memory_mb = 2048;
  std::string encoding;             // text files: "" detects; else an iconv name that is forced
  std::string ocr = "auto";         // PDFs: auto | never | always (which pages are read by OCR)
  std::string ocr_lang = "auto";    // PDFs: tesseract languages ("eng+chi_sim"), or auto
  double gpu_memory_fraction = 0.90;
  int64_t prefill_chunk = 0;        // tokens per engine step (0: the engine's default)
  int threads = 0;
  bool wait_lock = false;           // wait for another run on OUT_DIR instead of exiting with code 3
  std::string report;               // write a JSON run report here
  std::string shard;                // "K/N": only the inputs whose stable path hash falls in shard K of N
  std::string devices;              // "0,1,..." or "all": one engine per GPU, documents spread by a work queue
  int gpu = 0;                      // the GPU of this Summarizer's engine (set per engine from `devices`)
  bool progress_bar = true;         // false: plain log lines even on a terminal (several engines at once)
};

inline constexpr int kExitLocked = 3;  // another run holds OUT_DIR

// Parses "K/N" (0 <= K < N); throws abridge::Error otherwise.
std::pair<int64_t, int64_t> parse_shard(const std::string& spec);
// The shard (of n) a document belongs to: a hash of its path relative to its input root, the same on
// every machine, so N independent runs over a shared file system cover every input exactly once.
int64_t shard_of(const std::string& rel, int64_t n);

// One input and where its summary goes.
struct SummaryInput {
  std::string path;                  // as the user named it (or as found under a directory)
  std::string rel;                   // relative to its input root: names the output
  std::filesystem::path output;      // OUT_DIR/<rel>.summary.<format>
};
struct DiscoveredInputs {
  std::vector<SummaryInput> inputs;                      // sorted within each directory
  std::vector<std::pair<std::string, std::string>> bad;  // (path, reason): missing, unsupported type
};
// Files, directories (--recursive, --include/--exclude) and "-" (paths on `in`, one a line).
DiscoveredInputs discover_inputs(const SummarizeOptions& options, std::istream& in);
// Throws abridge::Error naming both inputs when two map to one output.
void check_output_collisions(const DiscoveredInputs& found);

struct DocumentReport {
  std::string path, output;
  std::string status;  // "summarized", "up to date", "failed"
  std::string error;   // one line, for "failed"
  int64_t input_tokens = 0, generated_tokens = 0;
  double seconds = 0;
};
struct BatchReport {
  std::vector<DocumentReport> documents;
  int summarized = 0, skipped = 0, failed = 0;
  int64_t input_tokens = 0;
  double seconds = 0;
  std::string device;
};
// "abridge: 42 summarized, 1 failed, 3.1M tokens in 9m12s"
std::string final_line(const BatchReport& report);

// Loads the engine once (the model and its backend, or the extractive engine) and summarizes batches
// of inputs with it: `abridge summarize` runs one batch, `abridge watch` one per change.
class Summarizer {
 public:
  // Checks the options and loads the model; throws abridge::Error (a usage or fatal error).
  Summarizer(const SummarizeOptions& options, std::ostream& err);
  ~Summarizer();
  Summarizer(const Summarizer&) = delete;
  Summarizer& operator=(const Summarizer&) = delete;
  // Summarizes `inputs`; errors in one document are reported on `err` and in the report, never thrown.
  BatchReport run(const std::vector<SummaryInput>& inputs);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Several engines (one per GPU) over one list of inputs: each takes the next few documents from a
// shared queue until none are left; their reports are merged. `err` must be safe to write from
// several threads: give each engine its own SyncedStream. Errors in one document never stop the others.
BatchReport run_on_engines(std::vector<std::unique_ptr<Summarizer>>& engines, const std::vector<SummaryInput>& inputs);

// Opens one Summarizer per entry of `options` at once, each on its own thread (loading a model onto
// several GPUs takes the time of one), each logging to its own entry of `logs`. With keep_going, the
// ones that fail are left out and said on `err` (an Error only if none opens); otherwise the first
// failure, in the order of `options`, is thrown.
std::vector<std::unique_ptr<Summarizer>> open_summarizers(const std::vector<SummarizeOptions>& options,
                                                          std::vector<std::ostream*> logs, bool keep_going,
                                                          std::ostream& err);

// An ostream for one writer thread that forwards whole lines to `out` under `mu`, so the lines of
// several such streams (one per engine thread) never interleave.
class SyncedStream : public std::ostream {
 public:
  SyncedStream(std::ostream& out, std::mutex& mu);
  ~SyncedStream() override;

 private:
  class Buf;
  std::unique_ptr<Buf> buf_;
};

// Returns 0 when every input was summarized (or up to date), 1 when some failed, 2 for usage or
// fatal errors (bad options, output name collisions, an unusable model), 3 when another run holds
// OUT_DIR (an exclusive flock on OUT_DIR/.abridge/lock; --wait-lock waits instead).
int run_summarize(const SummarizeOptions& options, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace abridge::pipeline
