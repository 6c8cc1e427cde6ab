// Token sampling: greedy, temperature, top-p (nucleus), with a seeded generator so runs repeat.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/rng.h"

namespace abridge::engine {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;        // (0, 1]
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks a token from one row of logits (vocab_size float32).
  int32_t sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  Xoshiro256 rng_;
  std::vector<int32_t> order_;  // scratch: candidate ids
  std::vector<float> probs_;    // scratch
};

// Index of the largest value; ties go to the lowest index (as torch.argmax).
int32_t argmax(std::span<const float> logits);

}  // namespace abridge::engine
