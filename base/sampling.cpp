#include "base/sampling.h"

#include <algorithm>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace abridge::sampling {

int32_t greedy_token(const float* logits, int n) {
  float best = -INFINITY;
  int32_t best_i = 0;
  for (int i = 0; i < n; ++i)
    if (logits[i] > best) best = logits[i], best_i = i;
  return best_i;
}

int32_t sample_token(const float* logits, int n, float temperature, float top_p, uint64_t seed, uint64_t counter) {
  if (n < 1 || n >= kMaxCandidates)
    throw std::invalid_argument("sample_token: " + std::to_string(n) + " candidates (1 to " +
                                std::to_string(kMaxCandidates - 1) + ")");
  const int32_t greedy = greedy_token(logits, n);
  if (temperature <= 0.0f) return greedy;
  const float max_logit = logits[greedy];
  const float inv_t = recip_rn(temperature);
  std::vector<uint64_t> w(static_cast<size_t>(n));
  uint64_t total = 0;
  for (int i = 0; i < n; ++i) total += w[i] = token_weight(logits[i], max_logit, inv_t);
  if (total == 0) return greedy;

  // theta: the weight at which the running sum of the weights, largest first, reaches the target.
  // Sorted only as far as needed (most of a peaked row's mass is in its first few tokens).
  uint64_t theta = 1;
  if (top_p < 1.0f) {
    const uint64_t target = nucleus_target(top_p, total);
    std::vector<uint64_t> sorted;
    for (uint64_t v : w)
      if (v > 0) sorted.push_back(v);
    size_t done = std::min<size_t>(sorted.size(), 64);
    for (;;) {
      std::partial_sort(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(done), sorted.end(),
                        std::greater<uint64_t>());
      uint64_t mass = 0;
      size_t i = 0;
      while (i < done && mass < target) mass += sorted[i++];
      if (mass >= target) {
        theta = sorted[i - 1];
        break;
      }
      done = std::min(sorted.size(), done * 4);  // mass < target <= total: not all sorted yet
    }
  }
  uint64_t kept = 0;
  for (uint64_t v : w)
    if (v >= theta) kept += v;
  const uint64_t r = draw_point(seed, counter, kept);
  uint64_t acc = 0;
  for (int i = 0; i < n; ++i) {
    if (w[i] < theta) continue;
    acc += w[i];
    if (r < acc) return i;
  }
  return greedy;  // not reached: r < kept
}

}  // namespace abridge::sampling
