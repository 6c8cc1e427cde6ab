// bench_extractive [--max-tokens N] [--show] [FILES...]: single-threaded extractive summarization.
//
// Two rows per file (best of 5 runs; 1 MB = 10^6 bytes of input):
//   end to end   - summarize_extractive() with the real Qwen3 tokenizer counting the sentences tried
//                  and the joined summary;
//   no tokenizer - the same with a counter that costs nothing (bytes / 4): lines, sentences, terms,
//                  the graph, TextRank and MMR alone.
// --show prints each file's summary (end to end). Default files: the four texts under
// tests/data/texts/; default budget 400 tokens.
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
#include "engine/embedded_data.h"
#include "engine/tokenizer.h"
#include "pipeline/extractive.h"
#include "pipeline/token_counter.h"

namespace {

using namespace abridge::bench;

using Clock = std::chrono::steady_clock;
using abridge::pipeline::ExtractiveOptions;
using abridge::pipeline::ExtractiveSummary;


using RealCounter = abridge::pipeline::TokenizerCounter;


// Best wall time of `runs` summaries, and the last summary.
double best_seconds(const std::string& text, const abridge::chunker::TokenCounter& counter,
                    const ExtractiveOptions& opt, int runs, ExtractiveSummary& out) {
  double best = 1e30;
  for (int r = 0; r < runs; ++r) {
    const auto t0 = Clock::now();
    out = abridge::pipeline::summarize_extractive(text, counter, opt);
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    ExtractiveOptions opt;
    bool show = false;
    std::vector<std::string> files;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--max-tokens" && i + 1 < argc) opt.max_tokens = std::atoll(argv[++i]);
      else if (a == "--show") show = true;
      else files.push_back(a);
    }
    if (files.empty())
      for (const char* f : {"sherlock-pg1661.txt", "R-intro.txt", "tang300.txt", "debian-edu-bookworm-manual.zh-cn.txt"})
        files.push_back(std::string(ABRIDGE_SOURCE_DIR) + "/tests/data/texts/" + f);
    const auto tok = abridge::engine::Tokenizer::from_json(abridge::engine::bundled_tokenizer_json());
    const RealCounter real(tok);
    const FreeCounter free;
    std::printf("%-40s %9s %4s %-13s %9s %8s %7s %6s\n", "file", "bytes", "lang", "mode", "ms", "MB/s", "tokens", "sents");
    for (const std::string& path : files) {
      const std::string text = read_file(path, true);
      const std::string name = path.substr(path.find_last_of('/') + 1);
      ExtractiveSummary shown;
      for (const bool with_tokenizer : {true, false}) {
        ExtractiveSummary s;
        const double sec = best_seconds(text, with_tokenizer ? static_cast<const abridge::chunker::TokenCounter&>(real)
                                                              : free,
                                        opt, 5, s);
        std::printf("%-40s %9zu %4s %-13s %9.1f %8.2f %7lld %6zu\n", name.c_str(), text.size(),
                    abridge::pipeline::language_code(s.language), with_tokenizer ? "end to end" : "no tokenizer",
                    sec * 1e3, static_cast<double>(text.size()) / 1e6 / sec, static_cast<long long>(s.tokens),
                    s.spans.size());
        if (with_tokenizer) shown = s;
      }
      if (show) std::printf("--- %s ---\n%s\n\n", name.c_str(), shown.text.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_extractive: %s\n", e.what());
    return 1;
  }
}
