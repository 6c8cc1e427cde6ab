#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/error.h"

namespace abridge::engine {

int32_t argmax(std::span<const float> logits) {
  ABRIDGE_CHECK(!logits.empty());
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
  return best;
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  ABRIDGE_CHECK(params.temperature >= 0.0f && params.top_p > 0.0f && params.top_p <= 1.0f);
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (params_.temperature <= 0.0f) return argmax(logits);
  const size_t n = logits.size();
  // Softmax at temperature T, in double for the normalizer.
  const float mx = logits[argmax(logits)];
  probs_.resize(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    probs_[i] = std::exp((logits[i] - mx) / params_.temperature);
    sum += probs_[i];
  }
  // Candidates in descending probability (ties by id, so the order is deterministic).
  order_.resize(n);
  std::iota(order_.begin(), order_.end(), 0);
  size_t keep = n;
  if (params_.top_p < 1.0f) {
    // Sort only as far as needed: grow a partial sort until the nucleus mass is reached.
    auto by_prob = [&](int32_t a, int32_t b) { return probs_[a] > probs_[b] || (probs_[a] == probs_[b] && a < b); };
    size_t sorted = std::min<size_t>(n, 64);
    for (;;) {
      std::partial_sort(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(sorted), order_.end(), by_prob);
      double mass = 0;
      keep = 0;
      while (keep < sorted && mass < params_.top_p * sum) mass += probs_[order_[keep++]];
      if (mass >= params_.top_p * sum || sorted == n) break;
      sorted = std::min(n, sorted * 4);
    }
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += probs_[order_[i]];
  double u = rng_.uniform() * total;
  for (size_t i = 0; i < keep; ++i) {
    u -= probs_[order_[i]];
    if (u < 0) return order_[i];
  }
  return order_[keep - 1];
}

}  // namespace abridge::engine
