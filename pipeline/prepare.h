// Preparing one document for its summary, on a worker thread: read it once (bounded), hash it, check
// whether its output is up to date, extract its text (PDFs in a bounded child process), detect its
// language, count its tokens and plan it: one request when it fits the context, else semantic chunks
// whose summaries are merged (doc_plan.h). The extractive engine's summary is made here too.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/discovery.h"
#include "pipeline/doc_plan.h"
#include "pipeline/document_reader.h"
#include "pipeline/extractive.h"
#include "pipeline/prompts.h"

namespace abridge::engine {
class Tokenizer;
}

namespace abridge::pipeline {

class OutputDir;
struct SummarizeOptions;

// What a document's summary depends on besides the document, and how documents are planned. Made
// once per session from the options and the engine.
struct SummaryRules {
  const SummarizeOptions* options = nullptr;
  bool llm = false;
  const engine::Tokenizer* tokenizer = nullptr;  // counts tokens (the model's, or the built-in Qwen3 one)
  std::vector<int32_t> stop_ids;                 // LLM: ends a reply
  int64_t context = 0;       // LLM: prompt + summary of one request, at most
  int64_t chunk_tokens = 0;  // LLM: the chunk budget of map-reduce
  Prompts prompts{"", 0};
  ReadOptions read;          // --encoding, --ocr, --ocr-lang, the PDF limits, the size limit
  std::string model_label;   // the model directory, or "extractive"
  std::string parameters;    // JSON object: what the output depends on (written into JSON outputs)
  std::string param_key;     // sha256 of the model's identity and `parameters`: the cache and up-to-date key

  // The token ids of a request as the engine gets it: the chat template around system + instruction + text.
  std::vector<int32_t> encode_request(Language lang, const std::string& instruction, const std::string& text) const;
  // The cache key of a request of a document.
  std::string cache_key(const PlanRequest& r) const;
  int64_t count(std::string_view text) const;
};

// One top-level section of a document, for an outline (--outline), and where a piece of the summary
// comes from.
struct OutlineSection {
  std::string title;          // its heading; "" for the text before the first heading
  size_t begin = 0, end = 0;  // byte range in the document's text
  std::string summary;        // its own short summary, once written
};
// One sentence of an extractive summary, pointing back into the document's text.
struct SourceSpan {
  size_t begin = 0, end = 0;
  int section = -1;  // index into PreparedDoc::sections, -1 when none
};

// A document on its way: prepared by a worker, then planned requests through an engine (LLM), or
// already summarized (extractive).
struct PreparedDoc {
  enum class State { kPlanned, kSummarized, kUpToDate, kFailed };
  SummaryInput input;
  State state = State::kFailed;
  std::string error;                  // kFailed: one line, without the path
  std::string sha, job_key;           // of the input's bytes; of bytes + rules + format
  std::string text;                   // as read (kept for outputs that point back into it)
  std::string encoding;               // text files: what the bytes were read as
  std::vector<size_t> page_starts;    // PDFs: byte offset in `text` where each page starts
  std::vector<int> ocr_pages;         // PDFs: 1-based pages read by OCR
  std::string ocr_languages;
  std::vector<std::string> notes;     // lines to log about it ("page 1 (eng) read by OCR")
  Language lang = Language::kEnglish;
  int64_t input_tokens = 0;
  std::optional<DocPlan> plan;        // kPlanned: its level-0 requests carry their token ids
  std::string summary;                // kSummarized (and the LLM's once the plan is done)
  std::vector<PlanPiece> pieces;      // chunks (map-reduce) or extracted sentences, with summaries
  std::vector<SourceSpan> sentences;  // extractive: the chosen sentences
  std::vector<OutlineSection> sections;  // --outline: the top-level sections, summarized
  int64_t generated_tokens = 0;
  std::chrono::steady_clock::time_point started;
};

// Never throws: every problem with the document becomes kFailed with its reason.
PreparedDoc prepare_document(const SummaryInput& input, const SummaryRules& rules, const OutputDir& out);

// --outline with a model: each top-level section's summary, from the plan once it is done: its own side
// request when the document went in one pass, else the summaries of its chunks (the map step).
void fill_outline(PreparedDoc& doc, const DocPlan& plan);

// The output file's bytes for a summarized document (md, json or txt).
std::string render_output(const PreparedDoc& doc, const SummaryRules& rules, double seconds);

}  // namespace abridge::pipeline
