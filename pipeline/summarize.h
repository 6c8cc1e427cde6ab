// `abridge summarize`: files in, summaries on disk. Discovery, extraction, the summarization strategy
// (one pass where the document fits the context, map-reduce over semantic chunks where it does not,
// or the built-in extractive engine), atomic outputs, a resumable cache, progress and exit codes.
#pragma once

#include <cstdint>
#include <iosfwd>
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
  double pdf_timeout = 60;
  int64_t pdf_max_memory_mb = 2048;
  double gpu_memory_fraction = 0.90;
  int threads = 0;
};

// Returns 0 when every input was summarized (or up to date), 1 when some failed, 2 for usage or
// fatal errors (bad options, output name collisions, an unusable model).
int run_summarize(const SummarizeOptions& options, std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace abridge::pipeline
