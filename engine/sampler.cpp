#include "engine/sampler.h"

#include "base/error.h"
#include "base/sampling.h"

namespace abridge::engine {

int32_t argmax(std::span<const float> logits) {
  ABRIDGE_CHECK(!logits.empty());
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
  return best;
}

Sampler::Sampler(const SamplingParams& params) : params_(params) {
  ABRIDGE_CHECK(params.temperature >= 0.0f && params.top_p > 0.0f && params.top_p <= 1.0f);
}

int32_t Sampler::sample(std::span<const float> logits) {
  ABRIDGE_CHECK(!logits.empty() && logits.size() < static_cast<size_t>(sampling::kMaxCandidates));
  return sampling::sample_token(logits.data(), static_cast<int>(logits.size()), params_.temperature, params_.top_p,
                                params_.seed, draws_++);
}

}  // namespace abridge::engine
