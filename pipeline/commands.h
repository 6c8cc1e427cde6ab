// The work behind each CLI command. cli/ turns argv into one of these option values and calls the
// matching run_* function, which returns the process exit code:
//   0 success, 1 some inputs failed, 2 usage or fatal error.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>

#include "engine/defaults.h"
#include "pipeline/shared_options.h"

namespace abridge::pipeline {

inline constexpr int kExitOk = 0;
inline constexpr int kExitInputsFailed = 1;
inline constexpr int kExitFatal = 2;

// Runs a command's `body` and returns its exit code; an abridge::Error that escapes it becomes the
// command's one line on `err`, "PREFIX: MESSAGE" (shown_message(): control characters escaped), and
// kExitFatal. `prefix` is "abridge", or "abridge summarize" for the commands whose lines say their name.
// Anything else that escapes (std::bad_alloc, other exceptions) goes on to main(), which has one line
// for each.
int run_command(std::ostream& err, std::string_view prefix, const std::function<int()>& body);

std::string version();

struct TokenizeOptions {
  std::string tokenizer;  // tokenizer.json or a model directory
  std::string file;       // "-" reads standard input
  bool plain = false;     // match no added tokens (how documents are encoded)
  bool decode = false;    // FILE holds ids; print their text
};
int run_tokenize(const TokenizeOptions& opt, std::ostream& out, std::ostream& err);

struct ChunkOptions {
  std::string tokenizer;          // tokenizer.json or a model directory; "" is the built-in Qwen3 tokenizer
  std::string file;               // "-" reads standard input
  int64_t max_tokens = 0;         // the budget of each chunk's text, >= kMinChunkTokens
  int64_t overlap = 0;            // tokens of the previous chunk repeated, < max_tokens / 2
  std::string format = "jsonl";   // jsonl | text
  bool replace_invalid = false;   // invalid UTF-8 becomes U+FFFD instead of an error
  bool keep_running_lines = false;  // keep running page headers/footers in the text
  std::string encoding;           // "" detects; else the iconv name the file is read in
  std::string ocr = "auto";       // PDFs: auto | never | always
  std::string ocr_lang = "auto";  // PDFs: tesseract languages ("eng+chi_sim") or auto
};
inline constexpr int64_t kMinChunkTokens = 16;
// Prints FILE's chunks: jsonl, one {"index","start","end","tokens","section","text"} object per line
// (plus "context_start" with --overlap), or text. FILE is read as summarize reads it (read_document():
// a PDF or a text file in any detected encoding, normalized); offsets index that text.
int run_chunk(const ChunkOptions& opt, std::ostream& out, std::ostream& err);

// The engine knobs are EngineFlags'; generate offers all but --kv-cache-tokens.
struct GenerateOptions : EngineFlags {
  std::string model;
  std::string prompt;
  std::string system;
  int64_t max_new_tokens = 512;
  float temperature = 0.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
  bool stats = false;          // timings on stderr
};
int run_generate(const GenerateOptions& opt, std::ostream& out, std::ostream& err);


struct MakeRandomOptions {
  std::string out_dir;
  std::string preset = "tiny";
  uint64_t seed = 0;
  std::string dtype = "bf16";  // bf16 | f32 | fp8 (bf16 weights through the FP8 quantizer)
};
int run_make_random(const MakeRandomOptions& opt, std::ostream& out, std::ostream& err);

struct ModelInfoOptions {
  std::string dir;
};
int run_model_info(const ModelInfoOptions& opt, std::ostream& out, std::ostream& err);

}  // namespace abridge::pipeline

namespace abridge::pipeline {

// The engine knobs are EngineFlags'; bench engine offers --device, the GPU memory and --prefill-chunk.
struct BenchEngineOptions : EngineFlags {
  std::string model;
  std::string prefill = "8192,32768,131072,262144";  // prompt lengths
  std::string decode = "1x4096,1x32768,16x4096,64x2048";  // BATCHxCONTEXT
  int64_t decode_steps = 64;
  double gemm_tflops = 0;  // 0: the measured figure for a known GPU (H100, H200)
  double copy_tbps = 0;
  double time_limit = 400;  // seconds for the prefill part
};
int run_bench_engine(const BenchEngineOptions& opt, std::ostream& out, std::ostream& err);

}  // namespace abridge::pipeline
