// bench_tokenizer [FILES...]: single-threaded encode throughput of the bundled Qwen3 tokenizer.
//
// Prints the load time, then one row per file: bytes, tokens, MB/s (best of N runs; 1 MB = 10^6
// bytes) and the best time. Default files: the four texts under tests/data/texts/. For reference,
// Hugging Face tokenizers (Rust, one thread) runs 1.6-3.6 MB/s on them (shared/PERF.md).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "base/error.h"
#include "bench/bench_support.h"
#include "engine/embedded_data.h"
#include "engine/tokenizer.h"
#include "pipeline/token_counter.h"

namespace {

using namespace abridge::bench;



}  // namespace

int main(int argc, char** argv) {
  using abridge::engine::Tokenizer;
  std::vector<std::string> files(argv + 1, argv + argc);
  if (files.empty()) {
    for (const char* name :
         {"sherlock-pg1661.txt", "tang300.txt", "R-intro.txt", "debian-edu-bookworm-manual.zh-cn.txt"})
      files.push_back(std::string(ABRIDGE_SOURCE_DIR) + "/tests/data/texts/" + name);
  }
  try {
    auto t0 = Clock::now();
    const std::string& json = abridge::engine::bundled_tokenizer_json();
    const double unpack_s = seconds_since(t0);
    t0 = Clock::now();
    const Tokenizer tok = Tokenizer::from_json(json, "bundled tokenizer.json");
    const double load_s = seconds_since(t0);
    std::printf("tokenizer: %d tokens; unpack %.0f ms, load %.0f ms (%.1f MB of JSON)\n\n", tok.n_tokens(),
                unpack_s * 1e3, load_s * 1e3, static_cast<double>(json.size()) / 1e6);

    constexpr int kRuns = 5;
    std::printf("%-40s %10s %9s %9s %9s\n", "file", "bytes", "tokens", "MB/s", "best ms");
    size_t total_bytes = 0, total_tokens = 0;
    double total_s = 0;
    for (const std::string& path : files) {
      const std::string text = read_file(path);
      double best = 1e30;
      size_t n_tokens = 0;
      for (int run = 0; run < kRuns; ++run) {
        const auto t = Clock::now();
        const std::vector<int32_t> ids = tok.encode(text);
        best = std::min(best, seconds_since(t));
        n_tokens = ids.size();
      }
      std::printf("%-40s %10zu %9zu %9.1f %9.2f\n", base_name(path).c_str(), text.size(), n_tokens,
                  static_cast<double>(text.size()) / best / 1e6, best * 1e3);
      total_bytes += text.size();
      total_tokens += n_tokens;
      total_s += best;
    }
    std::printf("%-40s %10zu %9zu %9.1f %9.2f\n", "total", total_bytes, total_tokens,
                static_cast<double>(total_bytes) / total_s / 1e6, total_s * 1e3);
    std::printf("(best of %d runs each, one thread)\n", kRuns);
  } catch (const abridge::Error& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
