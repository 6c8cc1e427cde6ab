// Random numbers that repeat on every platform: SplitMix64 and xoshiro256** (Blackman and Vigna,
// https://prng.di.unimi.it/), and a counter-based uniform draw that host and device code share (the
// sampling rule's, base/sampling.h).
// No libm and no std:: distributions (whose output differs between standard libraries), so the same
// seed gives the same bytes everywhere: random checkpoints are compared with stored references.
#pragma once

#include <cstdint>

#include "base/host_device.h"

namespace abridge {

inline constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ull;  // 2^64 / golden ratio, SplitMix64's step

// SplitMix64's output function: a bijective mix of 64 bits.
ABRIDGE_HOST_DEVICE constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// One SplitMix64 step: advances `state` and returns the next value.
constexpr uint64_t splitmix64(uint64_t& state) { return mix64(state += kGoldenGamma); }

// The uniform number in [0, 2^53) of draw `counter` of stream `seed`. Counter-based: draw i of
// a stream does not depend on how many draws other streams made, so a sequence samples the same
// tokens whatever batch it runs in, on the CPU and on the GPU.
ABRIDGE_HOST_DEVICE constexpr uint64_t counter_bits53(uint64_t seed, uint64_t counter) {
  return mix64(mix64(seed + kGoldenGamma) ^ (counter * 0xD1B54A32D192ED03ull + 1)) >> 11;
}
// The same draw as a double: counter_bits53() * 2^-53.
ABRIDGE_HOST_DEVICE constexpr double counter_uniform(uint64_t seed, uint64_t counter) {
  return static_cast<double>(counter_bits53(seed, counter)) * 0x1.0p-53;
}

// xoshiro256**, its state seeded by SplitMix64 as its authors recommend.
class Xoshiro256 {
 public:
  explicit constexpr Xoshiro256(uint64_t seed) {
    for (uint64_t& w : s_) w = splitmix64(seed);
  }
  constexpr uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, 1), 53 bits.
  constexpr double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  static constexpr uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4] = {};
};

}  // namespace abridge
