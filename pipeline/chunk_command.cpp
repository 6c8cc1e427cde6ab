// `abridge chunk`: a document's chunks as the summarizer will send them, with their byte spans.
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "chunker/chunker.h"
#include "engine/embedded_data.h"
#include "engine/error.h"
#include "engine/tokenizer.h"
#include "pipeline/commands.h"
#include "pipeline/token_counter.h"
#include "pipeline/text_input.h"

namespace abridge::pipeline {
namespace {

// The chunker's view of the real tokenizer: documents are encoded plain (no added tokens matched).

bool starts_with(const std::string& s, std::string_view p) { return s.compare(0, p.size(), p) == 0; }

// The document's UTF-8 text. Offsets printed later index this text (a UTF-8 BOM dropped, UTF-16
// decoded). With --replace-invalid the bytes are read as they are, so invalid bytes keep their place.
std::string read_document(const ChunkOptions& opt, const std::string& source) {
  std::string text;
  if (opt.file == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), {});
  } else {
    if (!opt.replace_invalid) return read_text_file(opt.file);
    std::ifstream in(opt.file, std::ios::binary);
    if (!in) return read_text_file(opt.file);  // throws the usual one-line error (no such file, ...)
    text.assign(std::istreambuf_iterator<char>(in), {});
    if (starts_with(text, "\xFF\xFE") || starts_with(text, "\xFE\xFF")) return read_text_file(opt.file);  // UTF-16
  }
  if (starts_with(text, "\xEF\xBB\xBF")) text.erase(0, 3);
  if (!opt.replace_invalid) {
    const size_t bad = chunker::find_invalid_utf8(text);
    if (bad != std::string::npos) throw Error(source + ": invalid UTF-8 at byte " + std::to_string(bad));
  }
  return text;
}

engine::Tokenizer load_chunk_tokenizer(const std::string& path) {
  if (path.empty()) return engine::Tokenizer::from_json(engine::bundled_tokenizer_json(), "built-in Qwen3 tokenizer");
  return engine::Tokenizer::from_path(path);
}

}  // namespace

int run_chunk(const ChunkOptions& opt, std::ostream& out, std::ostream& err) {
  try {
    if (opt.max_tokens < kMinChunkTokens)
      throw Error("--max-tokens must be at least " + std::to_string(kMinChunkTokens));
    if (opt.overlap < 0 || opt.overlap * 2 >= opt.max_tokens)
      throw Error("--overlap must be at least 0 and less than --max-tokens / 2");
    if (opt.format != "jsonl" && opt.format != "text")
      throw Error("--format must be jsonl or text, not \"" + opt.format + "\"");
    const std::string source = opt.file == "-" ? "<stdin>" : opt.file;
    const engine::Tokenizer tok = load_chunk_tokenizer(opt.tokenizer);
    const std::string text = read_document(opt, source);

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

    // The whole output is built first: an error leaves no partial output.
    std::ostringstream s;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const chunker::Chunk& c = chunks[i];
      if (opt.format == "jsonl") {
        nlohmann::ordered_json j;
        j["index"] = i;
        j["start"] = c.start;
        j["end"] = c.end;
        if (opt.overlap > 0) j["context_start"] = c.context_start;
        j["tokens"] = c.tokens;
        j["section"] = c.section;
        j["text"] = c.text;
        s << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
      } else {
        s << "=== chunk " << i << " [" << c.start << ", " << c.end << ") " << c.tokens << " tokens";
        if (!c.section.empty()) s << " | " << c.section;
        s << " ===\n" << c.text << "\n\n";
      }
    }
    out << s.str() << std::flush;
    return kExitOk;
  } catch (const Error& e) {
    err << "abridge: " << e.what() << '\n';
    return kExitFatal;
  }
}

}  // namespace abridge::pipeline
