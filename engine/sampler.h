// Token sampling on the host: greedy, temperature, top-p (nucleus), by the rule the GPU sampler
// follows too (base/sampling.h), so a seed gives the same tokens on the CPU and on the GPU.
#pragma once

#include <cstdint>
#include <span>

namespace abridge::engine {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;        // (0, 1]
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks a token from one row of logits (the candidates: ids below logits.size(), fewer than
  // sampling::kMaxCandidates). Call i uses draw i of the seed's stream (counter_uniform(seed, i)), as
  // the GPU sampler does for the i-th token of a sequence.
  int32_t sample(std::span<const float> logits);
  // Tokens sampled so far: the next call's draw index.
  uint64_t draws() const { return draws_; }

 private:
  SamplingParams params_;
  uint64_t draws_ = 0;
};

// Index of the largest value; ties go to the lowest index (as torch.argmax).
int32_t argmax(std::span<const float> logits);

}  // namespace abridge::engine
