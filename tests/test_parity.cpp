// The CPU backend against Hugging Face transformers (float32, eager attention) on the same
// random-weight checkpoints, made here by `abridge model make-random` with the seeds the fixtures were
// made with (tests/parity/make_fixtures.sh, run on the GPU machine). For every prompt and every
// position: the top-1 token agrees, and our logit of each of transformers' top-20 tokens is within
// kLogitTolerance of transformers' value. The greedy continuation (32 tokens for tiny, 8 for 0.6b) is
// identical token for token.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "engine/cpu_backend.h"
#include "engine/generate.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "tests/model_fixture.h"

using namespace abridge::engine;
using namespace abridge::testing;

namespace {

// Both sides compute in float32 from the same bf16 weights; only summation order differs. Observed
// differences are ~2e-6 on logits of magnitude ~1.3; 1e-4 leaves room for other CPUs and compilers
// while any real error (a wrong norm, RoPE angle or mask) moves logits by 1e-2 or more.
constexpr float kLogitTolerance = 1e-4f;

struct Report {
  int positions = 0;
  float max_diff = 0;
  int greedy_tokens = 0;
};

Report compare(const std::string& preset, const std::string& fixture, int max_positions) {
  const auto ref = nlohmann::json::parse(read_file(source_path("tests/parity/" + fixture)));
  const ModelDir model = open_model_dir(random_model_dir(preset, 7, "bf16").string());
  CpuBackend backend(model.config, *model.checkpoint);
  const int64_t vocab = model.config.vocab_size;
  Report rep;
  for (const auto& r : ref.at("results")) {
    const auto ids = r.at("ids").get<std::vector<int32_t>>();
    const auto top_ids = r.at("topk_ids").get<std::vector<std::vector<int32_t>>>();
    const auto top_logits = r.at("topk_logits").get<std::vector<std::vector<float>>>();
    const auto greedy = r.at("greedy").get<std::vector<int32_t>>();
    const auto logits = all_logits(backend, 0, ids);
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(ids.size()), max_positions);
    for (int64_t p = 0; p < n; ++p) {
      const float* row = &logits[static_cast<size_t>(p * vocab)];
      EXPECT_EQ(argmax(std::span<const float>(row, static_cast<size_t>(vocab))), top_ids[p][0]) << "position " << p;
      for (size_t k = 0; k < top_ids[p].size(); ++k) {
        const float d = std::fabs(row[top_ids[p][k]] - top_logits[p][k]);
        rep.max_diff = std::max(rep.max_diff, d);
        EXPECT_LE(d, kLogitTolerance) << "position " << p << " token " << top_ids[p][k];
      }
      ++rep.positions;
    }
    // transformers' generate ran with min_new_tokens = new tokens: EOS is masked, so mask it too.
    std::vector<int32_t> ours;
    std::vector<float> last(logits.end() - vocab, logits.end());
    BatchPlan prefill;
    for (size_t i = 0; i < ids.size(); ++i) prefill.add(ids[i], static_cast<int32_t>(i), 1, false);
    backend.forward(prefill, {});
    for (size_t step = 0; step < greedy.size(); ++step) {
      for (int32_t eos : model.config.eos_token_ids) last[eos] = -INFINITY;
      ours.push_back(argmax(last));
      BatchPlan plan;
      plan.add(ours.back(), static_cast<int32_t>(ids.size() + step), 1, true);
      backend.forward(plan, last);
    }
    backend.release(1);
    EXPECT_EQ(ours, greedy);
    rep.greedy_tokens += static_cast<int>(greedy.size());
  }
  return rep;
}

}  // namespace

TEST(Parity, TinyMatchesTransformers) {
  const Report r = compare("tiny", "hf_tiny_seed7.json", 1 << 30);
  std::printf("[parity] tiny: %d positions, top-20 logits max |diff| %.2e (tolerance %.0e), %d greedy tokens identical\n",
              r.positions, r.max_diff, kLogitTolerance, r.greedy_tokens);
  EXPECT_GT(r.positions, 40);
}

TEST(Parity, Qwen3_0_6B_ShapeMatchesTransformers) {
  const Report r = compare("0.6b", "hf_0.6b_seed7.json", 4);
  std::printf("[parity] 0.6b: %d positions, top-20 logits max |diff| %.2e (tolerance %.0e), %d greedy tokens identical\n",
              r.positions, r.max_diff, kLogitTolerance, r.greedy_tokens);
  EXPECT_EQ(r.positions, 4);
}
