// `abridge chunk`: a document's chunks as the summarizer will send them, with their byte spans.
#include <malloc.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/file.h"
#include "chunker/chunker.h"
#include "engine/embedded_data.h"
#include "engine/tokenizer.h"
#include "pipeline/commands.h"
#include "pipeline/document_reader.h"
#include "pipeline/memory.h"
#include "pipeline/run_report.h"
#include "pipeline/token_counter.h"

namespace abridge::pipeline {
namespace {

// The document's text as summarize reads it (read_document()). With --replace-invalid a text file whose
// encoding cannot be told is read as UTF-8 with its invalid bytes in place, so that they keep their
// offsets and the chunker replaces them.
std::string read_input(const ChunkOptions& opt, const std::string& source) {
  const PdfLimits limits;
  ReadOptions ro = make_read_options(opt.encoding, opt.ocr, opt.ocr_lang, limits.timeout_seconds,
                                     static_cast<int64_t>(limits.max_memory_bytes >> 20));
  ro.keep_invalid_utf8 = opt.replace_invalid;
  try {
    if (opt.file != "-") return read_document(opt.file, ro).text;
    return read_text(read_stream_bounded(std::cin, ro.max_bytes), ro).text;
  } catch (const Error& e) {
    throw Error(source + ": " + e.what());
  }
}

engine::Tokenizer load_chunk_tokenizer(const std::string& path) {
  if (path.empty()) return engine::Tokenizer::from_json(engine::bundled_tokenizer_json(), "built-in Qwen3 tokenizer");
  return engine::Tokenizer::from_path(path);
}

}  // namespace

int run_chunk(const ChunkOptions& opt, std::ostream& out, std::ostream& err) {
  const std::string source = opt.file == "-" ? "<stdin>" : opt.file;
  uint64_t document_bytes = 0;  // once read
  bool reading = false;         // the tokenizer is loaded: running out of memory is the document's doing
  return run_command(err, "abridge", [&]() -> int {
    try {
      if (opt.max_tokens < kMinChunkTokens)
        throw Error("--max-tokens must be at least " + std::to_string(kMinChunkTokens));
      if (opt.overlap < 0 || opt.overlap * 2 >= opt.max_tokens)
        throw Error("--overlap must be at least 0 and less than --max-tokens / 2");
      if (opt.format != "jsonl" && opt.format != "text")
        throw Error("--format must be jsonl or text, not \"" + opt.format + "\"");
      const engine::Tokenizer tok = load_chunk_tokenizer(opt.tokenizer);
      ::malloc_trim(0);  // what reading the tokenizer freed goes back before the document is read
      reading = true;
      if (opt.file != "-") {
        std::error_code ec;
        document_bytes = std::filesystem::file_size(opt.file, ec);
        if (ec) document_bytes = 0;
      }
      const std::string text = read_input(opt, source);
      document_bytes = std::max<uint64_t>(document_bytes, text.size());

      chunker::Options options;
      options.max_tokens = static_cast<size_t>(opt.max_tokens);
      options.overlap_tokens = static_cast<size_t>(opt.overlap);
      options.invalid_utf8 = opt.replace_invalid ? chunker::InvalidUtf8::kReplace : chunker::InvalidUtf8::kReject;
      options.drop_running_lines = !opt.keep_running_lines;
      std::vector<chunker::Chunk> chunks;
      try {
        chunks = chunker::chunk_text(text, TokenizerCounter(tok), options);
      } catch (const chunker::InvalidUtf8Error& e) {
        throw Error(source + ": invalid UTF-8 at byte " + std::to_string(e.offset()));
      }

      // The whole output is built first: an error leaves no partial output. Each chunk's text is let go
      // once it is written out, so that the text is held about twice, not three times.
      std::string s;
      for (size_t i = 0; i < chunks.size(); ++i) {
        chunker::Chunk& c = chunks[i];
        if (opt.format == "jsonl") {
          nlohmann::ordered_json j;
          j["index"] = i;
          j["start"] = c.start;
          j["end"] = c.end;
          if (opt.overlap > 0) j["context_start"] = c.context_start;
          j["tokens"] = c.tokens;
          j["section"] = c.section;
          j["text"] = std::move(c.text);
          s += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
          s += '\n';
        } else {
          s += "=== chunk " + std::to_string(i) + " [" + std::to_string(c.start) + ", " + std::to_string(c.end) + ") " +
               std::to_string(c.tokens) + " tokens";
          if (!c.section.empty()) s += " | " + c.section;
          s += " ===\n";
          s += c.text;
          s += "\n\n";
        }
        c.text = std::string();
      }
      out.write(s.data(), static_cast<std::streamsize>(s.size()));
      out.flush();
      return kExitOk;
    } catch (const std::bad_alloc&) {
      if (!reading) throw;
      err << "abridge: " << shown_path(source) << ": " << out_of_memory_message(document_bytes) << '\n';
      return kExitFatal;
    }
  });
}

}  // namespace abridge::pipeline
