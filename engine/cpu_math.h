#pragma once
// Small float32 kernels of the CPU backend shared by its FP8 path.

#include <cstdint>

namespace abridge::engine {

// Sum of a[i] * b[i]. Eight independent accumulators let the compiler vectorize without
// reassociating a single sum (the order is fixed: the result does not depend on the build).
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace abridge::engine
