// What a run did: one line per document, the totals, the engine's counters, and the records that
// `bench summarize` turns into the run's floor. Shared by `summarize` (final line, --report) and
// `watch` (a line per batch).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace abridge::pipeline {

struct DocumentReport {
  std::string path, output;  // as given and as written (bytes; shown_path() for display)
  std::string status;        // "summarized", "up to date", "failed"
  std::string error;         // one line, for "failed"
  int64_t input_tokens = 0, generated_tokens = 0;
  double seconds = 0;        // from when its preparation started to its output written
  std::string encoding;      // text files: what the bytes were read as
  std::vector<int> ocr_pages;  // PDFs: 1-based pages read by OCR
  std::string ocr_languages;
};

// The serving engine's counters over a run (EngineCounters, summed over engines).
struct EngineReport {
  int64_t steps = 0, prefill_tokens = 0, decode_tokens = 0, decode_only_steps = 0;
  double decode_only_seconds = 0, prefill_step_seconds = 0;  // wall time of the two kinds of step
  int64_t preempted_sequences = 0, recomputed_tokens = 0, peak_kv_blocks = 0;
  int64_t kv_blocks = 0, kv_block_tokens = 0;  // the pool (of the first engine)
  // Decode-only steps by batch size (engine::kDecodeBucketFirst): the sequences they decoded and the
  // KV tokens those read, so each range can be set beside its copy floor.
  struct DecodeRange {
    int64_t first_batch = 0, steps = 0, sequences = 0, kv_tokens = 0;
    double seconds = 0;
  };
  std::vector<DecodeRange> decode_by_batch;
};

// One request the engine ran: what the run's floor is made of.
struct RequestRecord {
  int64_t prompt_tokens = 0, generated_tokens = 0;
};

struct BatchReport {
  std::vector<DocumentReport> documents;
  int summarized = 0, skipped = 0, failed = 0;
  int64_t input_tokens = 0, generated_tokens = 0;
  double seconds = 0;               // wall time, model loading included
  double load_seconds = 0;          // opening the model(s)
  double first_step_seconds = -1;   // from the start of the run to the first engine step (-1: none)
  double first_summary_seconds = -1;  // from the first engine step (or the start, without one) to the first output
  std::string device;
  bool llm = false;
  EngineReport engine;
  std::vector<RequestRecord> requests;  // in the order they finished
};

// Adds one engine's counters to another's (several engines of one run): sums, the highest peak, the
// first engine's pool.
EngineReport& operator+=(EngineReport& total, const EngineReport& part);

// "abridge: 42 summarized, 1 failed, 3.1M tokens in 9m12s"
std::string final_line(const BatchReport& report);

// The --report JSON: totals, every document, and with a model the "engine" object (steps,
// prefill_tokens, decode_tokens, decode_only_steps, preempted_sequences, recomputed_tokens,
// peak_kv_blocks). Names that are not UTF-8 are escaped as in shown_path().
std::string report_json(const BatchReport& report);

// A path (bytes) for messages and JSON: valid UTF-8 stays as it is; bytes that are not UTF-8 and
// the bytes of each character that can change how what follows is shown (is_display_control(): C0 and
// C1 controls, U+2028/U+2029, bidi controls) become \xNN, and a backslash becomes \\, so one name is
// one line and a terminal shows what the name holds.
std::string shown_path(std::string_view bytes);
// A whole message (which may hold a name or a value read from a file) made one safe line the same way,
// its backslashes kept as they are (parts already escaped by shown_path() are not escaped twice).
std::string shown_message(std::string_view bytes);

std::string format_duration(double seconds);  // "9m12s", "1h05m", "3.2s"
std::string format_count(double n);           // "3.1M", "12.0K", "512"

}  // namespace abridge::pipeline
