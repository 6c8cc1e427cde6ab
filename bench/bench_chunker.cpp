// bench_chunker [--max-tokens N] [FILES...]: single-threaded chunking throughput.
//
// Two rows per file (best of N runs; 1 MB = 10^6 bytes of input):
//   end to end  - chunk_text() with the real Qwen3 tokenizer counting every unit and every chunk;
//   no tokenizer - the same with a counter that costs nothing (bytes / 4), i.e. the chunker's own
//                  work: lines, headers/footers, headings, sentences, cleaning, cohesion, packing.
// Default files: the four texts under tests/data/texts/; default budget 1024 tokens.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "base/error.h"
#include "bench/bench_support.h"
#include "chunker/chunker.h"
#include "engine/embedded_data.h"
#include "engine/tokenizer.h"
#include "pipeline/token_counter.h"

namespace {

using namespace abridge::bench;



using RealCounter = abridge::pipeline::TokenizerCounter;


struct Timing {
  double best_s = 1e30;
  size_t chunks = 0;
};

Timing time_chunking(const std::string& text, const abridge::chunker::TokenCounter& counter,
                     const abridge::chunker::Options& options, int runs) {
  Timing t;
  for (int run = 0; run < runs; ++run) {
    const auto t0 = Clock::now();
    const auto chunks = abridge::chunker::chunk_text(text, counter, options);
    t.best_s = std::min(t.best_s, seconds_since(t0));
    t.chunks = chunks.size();
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> files;
  abridge::chunker::Options options;
  options.max_tokens = 1024;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--max-tokens" && i + 1 < argc) options.max_tokens = std::strtoul(argv[++i], nullptr, 10);
    else files.push_back(arg);
  }
  if (files.empty()) {
    for (const char* name :
         {"sherlock-pg1661.txt", "tang300.txt", "R-intro.txt", "debian-edu-bookworm-manual.zh-cn.txt"})
      files.push_back(std::string(ABRIDGE_SOURCE_DIR) + "/tests/data/texts/" + name);
  }
  try {
    const auto tok = abridge::engine::Tokenizer::from_json(abridge::engine::bundled_tokenizer_json());
    const RealCounter real(tok);
    const FreeCounter free;
    constexpr int kRuns = 5;
    std::printf("budget %zu tokens, best of %d runs, one thread\n\n", options.max_tokens, kRuns);
    std::printf("%-40s %10s %7s %16s %16s\n", "file", "bytes", "chunks", "end-to-end MB/s", "no-tokenizer MB/s");
    size_t total_bytes = 0;
    double total_real = 0, total_free = 0;
    for (const std::string& path : files) {
      const std::string text = read_file(path, true);
      const Timing r = time_chunking(text, real, options, kRuns);
      const Timing f = time_chunking(text, free, options, kRuns);
      const double mb = static_cast<double>(text.size()) / 1e6;
      std::printf("%-40s %10zu %7zu %16.1f %16.1f\n", base_name(path).c_str(), text.size(), r.chunks, mb / r.best_s,
                  mb / f.best_s);
      total_bytes += text.size();
      total_real += r.best_s;
      total_free += f.best_s;
    }
    const double mb = static_cast<double>(total_bytes) / 1e6;
    std::printf("%-40s %10zu %7s %16.1f %16.1f\n", "total", total_bytes, "", mb / total_real, mb / total_free);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_chunker: %s\n", e.what());
    return 1;
  }
  return 0;
}
