// Summarizer's state, shared by summarize.cpp (the Summarizer and the command) and session.cpp (the
// Session, which plans each document for its engines' context and pool). Internal to pipeline/.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>

#include "engine/engine.h"
#include "pipeline/document_reader.h"
#include "pipeline/summarize.h"

namespace abridge::pipeline {

// Seconds from `t0` to `t`.
inline double seconds_since(std::chrono::steady_clock::time_point t0,
                            std::chrono::steady_clock::time_point t = std::chrono::steady_clock::now()) {
  return std::chrono::duration<double>(t - t0).count();
}

struct Summarizer::Impl {
  SummarizeOptions o;
  std::ostream& log;
  bool llm = false;
  std::unique_ptr<engine::Engine> engine;
  std::optional<engine::Tokenizer> own_tokenizer;  // the extractive engine counts with the built-in one
  std::string custom_prompt;
  ReadOptions read;  // --encoding, --ocr, --ocr-lang, the PDF limits
  std::string model_id = "extractive";
  double load_seconds = 0;

  // Checks the options, reads --prompt and opens the engine (or the built-in tokenizer of the extractive
  // one). Throws abridge::Error with one line.
  Impl(const SummarizeOptions& options, std::ostream& err);

  // A request's prompt + summary at most: the model's context, capped by the KV pool (a request runs
  // alone if it must) and by --context-tokens.
  int64_t context() const {
    const int64_t c = engine->max_context();
    return o.context_tokens > 0 ? std::min(o.context_tokens, c) : c;
  }
  const engine::Tokenizer& tokenizer() const { return engine ? engine->tokenizer() : *own_tokenizer; }
};

}  // namespace abridge::pipeline
