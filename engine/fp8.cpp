#include "engine/fp8.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>

#include "base/error.h"
#include "engine/cpu_math.h"

namespace abridge::engine {
namespace {

// All 256 codes decoded once: value = 2^(e-7) * (1 + m/8) for e > 0, m * 2^-9 for e = 0.
std::array<float, 256> make_decode_table() {
  std::array<float, 256> t{};
  for (int code = 0; code < 256; ++code) {
    const int e = (code >> 3) & 0xF, m = code & 7;
    float v;
    if (e == 0xF && m == 7) v = std::numeric_limits<float>::quiet_NaN();
    else if (e == 0) v = std::ldexp(static_cast<float>(m), -9);
    else v = std::ldexp(static_cast<float>(8 + m), e - 10);
    t[static_cast<size_t>(code)] = (code & 0x80) ? -v : v;
  }
  return t;
}
const std::array<float, 256> kDecode = make_decode_table();

}  // namespace

float e4m3_to_f32(uint8_t code) { return kDecode[code]; }

uint8_t f32_to_e4m3(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t mag = bits & 0x7FFFFFFFu;
  if (mag > 0x7F800000u) return sign | 0x7F;                  // NaN
  if (mag > 0x43E00000u) return sign | 0x7E;                  // beyond 448 (Inf included): saturate
  if (mag >= 0x3C800000u) {                                   // >= 2^-6: a normal e4m3 value
    // Keep 3 of the 23 mantissa bits, rounding the 20 dropped ones to nearest even; a carry moves into
    // the exponent as it should. Rebias the exponent from 127 to 7: subtract 120 << 3.
    const uint32_t rounded = (mag + 0x7FFFFu + ((mag >> 20) & 1u)) >> 20;
    return sign | static_cast<uint8_t>(rounded - (120u << 3));
  }
  // Below 2^-6: subnormal steps of 2^-9; v * 512 is exact and nearbyint rounds half to even. A result
  // of 8 is the code of 2^-6 itself (exponent 1, mantissa 0), so the code is the count.
  float a;
  std::memcpy(&a, &mag, 4);
  return sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f));
}

void quantize_tiles(const float* w, int64_t rows, int64_t cols, uint8_t* q, float* scale_inv) {
  const int64_t br = fp8_blocks(rows), bc = fp8_blocks(cols);
  for (int64_t tr = 0; tr < br; ++tr) {
    for (int64_t tc = 0; tc < bc; ++tc) {
      const int64_t r0 = tr * kFp8Block, r1 = std::min(rows, r0 + kFp8Block);
      const int64_t c0 = tc * kFp8Block, c1 = std::min(cols, c0 + kFp8Block);
      float amax = 0;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
      ABRIDGE_CHECK(std::isfinite(amax), "non-finite weight in tile " + std::to_string(tr) + "," + std::to_string(tc));
      const float s = amax > 0 ? amax / kE4M3Max : 1.0f;
      scale_inv[tr * bc + tc] = s;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) q[r * cols + c] = f32_to_e4m3(w[r * cols + c] / s);
    }
  }
}

void dequantize_tiles(const uint8_t* q, const float* scale_inv, int64_t rows, int64_t cols, float* out) {
  const int64_t bc = fp8_blocks(cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r * cols + c] = kDecode[q[r * cols + c]] * scale_inv[(r / kFp8Block) * bc + c / kFp8Block];
}

void quantize_activations(const float* x, int64_t n, int64_t k, Fp8Activations& out) {
  const int64_t groups = fp8_blocks(k);
  out.n = n;
  out.k = k;
  out.q.resize(static_cast<size_t>(n * k));
  out.scale.resize(static_cast<size_t>(n * groups));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = g * kFp8Block, c1 = std::min(k, c0 + kFp8Block);
      const float* xi = x + i * k;
      float amax = 0;
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(xi[c]));
      const float s = amax / kE4M3Max;
      out.scale[i * groups + g] = s;
      float* qi = out.q.data() + i * k;
      for (int64_t c = c0; c < c1; ++c) qi[c] = amax > 0 ? kDecode[f32_to_e4m3(xi[c] / s)] : 0.0f;
    }
  }
}

float fp8_kv_scale(uint8_t byte) { return byte == 0 ? 0.0f : std::ldexp(1.0f, static_cast<int>(byte) - 127); }

uint8_t fp8_kv_round_trip(float* v, int64_t n) {
  float amax = 0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
  const uint8_t byte = fp8_kv_scale_byte(amax);
  const float s = fp8_kv_scale(byte);
  for (int64_t i = 0; i < n; ++i) v[i] = byte != 0 ? kDecode[f32_to_e4m3(v[i] / s)] * s : 0.0f;
  return byte;
}

void fp8_linear(const Fp8Activations& a, const Fp8Matrix& w, float* out, int64_t j_begin, int64_t j_end) {
  ABRIDGE_CHECK(a.k == w.cols, "activations have k=" + std::to_string(a.k) + ", weight " + std::to_string(w.cols));
  ABRIDGE_CHECK(j_begin >= 0 && j_end <= w.rows);
  const int64_t k = a.k, m = w.rows, groups = fp8_blocks(k);
  for (int64_t j = j_begin; j < j_end; ++j) {
    const float* wj = w.q.data() + j * k;
    const float* sw = w.scale_inv.data() + (j / kFp8Block) * groups;
    for (int64_t i = 0; i < a.n; ++i) {
      const float* ai = a.q.data() + i * k;
      const float* sa = a.scale.data() + i * groups;
      float acc = 0;
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * kFp8Block, len = std::min(k, c0 + kFp8Block) - c0;
        acc += dot(ai + c0, wj + c0, len) * sa[g] * sw[g];
      }
      out[i * m + j] = acc;
    }
  }
}

}  // namespace abridge::engine
