// The work behind each CLI command. cli/ turns argv into one of these option values and calls the
// matching run_* function, which returns the process exit code:
//   0 success, 1 some inputs failed, 2 usage or fatal error.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>

namespace abridge::pipeline {

inline constexpr int kExitOk = 0;
inline constexpr int kExitInputsFailed = 1;
inline constexpr int kExitFatal = 2;

std::string version();

struct TokenizeOptions {
  std::string tokenizer;  // tokenizer.json or a model directory
  std::string file;       // "-" reads standard input
  bool plain = false;     // match no added tokens (how documents are encoded)
  bool decode = false;    // FILE holds ids; print their text
};
int run_tokenize(const TokenizeOptions& opt, std::ostream& out, std::ostream& err);

struct GenerateOptions {
  std::string model;
  std::string prompt;
  std::string system;
  int64_t max_new_tokens = 512;
  float temperature = 0.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
  std::string device = "cpu";  // cpu | cuda
  int threads = 0;             // CPU backend threads; 0: all cores
  bool stats = false;          // timings on stderr
};
int run_generate(const GenerateOptions& opt, std::ostream& out, std::ostream& err);

struct MakeRandomOptions {
  std::string out_dir;
  std::string preset = "tiny";
  uint64_t seed = 0;
  std::string dtype = "bf16";  // bf16 | f32
};
int run_make_random(const MakeRandomOptions& opt, std::ostream& out, std::ostream& err);

struct ModelInfoOptions {
  std::string dir;
};
int run_model_info(const ModelInfoOptions& opt, std::ostream& out, std::ostream& err);

}  // namespace abridge::pipeline
