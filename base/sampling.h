// The token-sampling rule, one for the CPU (engine/sampler.h) and the GPU (kernels::sample): the same
// logits, seed and draw index give the same token on both. Its pieces are ABRIDGE_HOST_DEVICE functions
// that both compile; sample_token() is the rule written plainly on the host, the GPU kernel's reference.
//
// The rule, for a row of n logits x (only ids below the row's vocabulary limit are candidates):
//   greedy (temperature <= 0): the first index of the largest logit, NaN ignored (0 when no logit is
//     above -inf);
//   otherwise each token gets the weight W_i = floor(2^40 * e^((x_i - max) / T)), an integer: tokens
//     further than 30 T below the maximum (and NaN or -inf logits) weigh 0 and are never drawn. With
//     integer weights every sum is exact, so it does not depend on the order a GPU block adds in.
//     Top-p keeps the tokens of weight >= theta, where theta is the largest value for which the kept
//     weight still reaches top_p of the total (so the smallest set of most likely tokens whose mass
//     reaches top_p, every token tied at the boundary kept). The draw takes the 53-bit uniform number of
//     counter_uniform(seed, counter) (base/rng.h), r = floor(u * kept mass), and returns the kept token,
//     in id order, whose weight interval [prefix, prefix + W_i) holds r. When every weight is 0 (no
//     finite logit, or an infinite one) the row is sampled greedily.
// Floating-point steps are single IEEE operations that neither compiler may contract into others
// (explicit fma, __fmul_rn on the device), and e^z comes from a fixed polynomial, not libm or the
// GPU's approximate exp: those differ between host and device.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "base/host_device.h"
#include "base/rng.h"

namespace abridge::sampling {

inline constexpr int kWeightBits = 40;  // fraction bits of a weight: the largest weighs 2^40
// Weights of a row sum below 2^63 when the row has fewer than 2^22 candidates.
inline constexpr int kMaxCandidates = 1 << 22;
// Exponents below this weigh 0 (e^-30 < 2^-43, below a weight's last bit).
inline constexpr float kMinExponent = -30.0f;

ABRIDGE_HOST_DEVICE inline float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
ABRIDGE_HOST_DEVICE inline float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
ABRIDGE_HOST_DEVICE inline float fma_rn(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
ABRIDGE_HOST_DEVICE inline float recip_rn(float a) {
#ifdef __CUDA_ARCH__
  return __frcp_rn(a);
#else
  return 1.0f / a;
#endif
}
// Round to the nearest integer, ties to even (the default rounding mode on the host).
ABRIDGE_HOST_DEVICE inline float round_even(float a) {
#ifdef __CUDA_ARCH__
  return rintf(a);
#else
  return std::nearbyint(a);
#endif
}
// 2^k for -126 <= k <= 127, from its bits.
ABRIDGE_HOST_DEVICE inline float pow2(int k) {
  const uint32_t bits = static_cast<uint32_t>(k + 127) << 23;
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}
// The high 64 bits of a 128-bit product.
ABRIDGE_HOST_DEVICE inline uint64_t mul_hi64(uint64_t a, uint64_t b) {
#ifdef __CUDA_ARCH__
  return __umul64hi(a, b);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
}

// e^z for kMinExponent <= z <= 0 (relative error about 1e-7): z = k ln 2 + r with |r| <= ln 2 / 2
// (Cody and Waite's two-part ln 2), e^r by its Taylor polynomial of degree 7, then times 2^k exactly.
ABRIDGE_HOST_DEVICE inline float exp_nonpositive(float z) {
  const float k = round_even(mul_rn(z, 1.44269504f));
  float r = fma_rn(k, -0.693145752f, z);  // ln 2's leading 16 bits: k * this is exact
  r = fma_rn(k, -1.42860682e-06f, r);  // the rest of ln 2
  float p = 1.98412698e-04f;  // 1/7!
  p = fma_rn(p, r, 1.38888889e-03f);
  p = fma_rn(p, r, 8.33333333e-03f);
  p = fma_rn(p, r, 4.16666667e-02f);
  p = fma_rn(p, r, 1.66666667e-01f);
  p = fma_rn(p, r, 0.5f);
  p = fma_rn(p, r, 1.0f);
  p = fma_rn(p, r, 1.0f);
  return mul_rn(p, pow2(static_cast<int>(k)));
}

// W_i for logit x, the row's maximum and 1 / temperature (recip_rn(temperature)).
ABRIDGE_HOST_DEVICE inline uint64_t token_weight(float x, float max_logit, float inv_temperature) {
  const float z = mul_rn(sub_rn(x, max_logit), inv_temperature);
  if (!(z >= kMinExponent)) return 0;  // far below the maximum, or NaN (a NaN or infinite logit)
  return static_cast<uint64_t>(mul_rn(exp_nonpositive(z), 0x1p40f));
}

// The kept mass top-p asks for out of `total` (> 0): at least 1, at most total.
ABRIDGE_HOST_DEVICE inline uint64_t nucleus_target(float top_p, uint64_t total) {
  if (!(top_p < 1.0f)) return total;
  const double t = static_cast<double>(top_p) * static_cast<double>(total);
  if (!(t < static_cast<double>(total))) return total;
  const uint64_t target = t > 1.0 ? static_cast<uint64_t>(t) : 1;
  return target < total ? target : total;
}

// The draw's point in [0, kept): floor(u * kept) for the 53-bit uniform number of (seed, counter).
ABRIDGE_HOST_DEVICE inline uint64_t draw_point(uint64_t seed, uint64_t counter, uint64_t kept) {
  return mul_hi64(counter_bits53(seed, counter) << 11, kept);
}

// The rule on the host: the token of a row of n (< kMaxCandidates) logits. counter: the draw's index
// (tokens the sequence has generated so far). Throws std::invalid_argument for n outside [1, kMaxCandidates).
int32_t sample_token(const float* logits, int n, float temperature, float top_p, uint64_t seed, uint64_t counter);

// The greedy part of the rule: the first index of the largest logit, NaN ignored; 0 when none is
// above -inf.
int32_t greedy_token(const float* logits, int n);

}  // namespace abridge::sampling
