// FP8 checkpoints: e4m3 arithmetic, tile and activation quantization, the FP8 linear against a double
// reference, quantization_config parsing, checkpoint checks on real files, and the CPU backend running
// a quantized tiny model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/bench.h"
#include "engine/cpu_backend.h"
#include "base/error.h"
#include "engine/fp8.h"
#include "engine/fp8_checkpoint.h"
#include "engine/engine.h"
#include "engine/model_dir.h"
#include "engine/quantization.h"
#include "engine/weights.h"
#include "tests/model_fixture.h"

using namespace abridge;
using namespace abridge::engine;
using abridge::testing::random_model_dir;
using abridge::testing::TempDir;
namespace fs = std::filesystem;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// The finite non-negative e4m3 values, by code 0x00..0x7E, from the format's definition.
double e4m3_value(int code) {
  const int e = (code >> 3) & 0xF, m = code & 7;
  return e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
}

// The nearest finite e4m3 code to v by search over all of them; ties go to the even code.
uint8_t nearest_code(double v) {
  const double a = std::fabs(v);
  int best = 0;
  for (int code = 1; code <= 0x7E; ++code) {
    const double d = std::fabs(e4m3_value(code) - a), db = std::fabs(e4m3_value(best) - a);
    if (d < db || (d == db && code % 2 == 0)) best = code;
  }
  if (a > 448) best = 0x7E;
  return static_cast<uint8_t>((std::signbit(v) ? 0x80 : 0) | best);
}

}  // namespace

TEST(Fp8E4M3, DecodesExactValues) {
  EXPECT_EQ(e4m3_to_f32(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(e4m3_to_f32(0x80)) && e4m3_to_f32(0x80) == 0.0f);
  EXPECT_EQ(e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(e4m3_to_f32(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(e4m3_to_f32(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_f32(0x39), 1.125f);
  EXPECT_EQ(e4m3_to_f32(0x40), 2.0f);
  EXPECT_EQ(e4m3_to_f32(0x7E), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0xFE), -448.0f);
  EXPECT_EQ(e4m3_to_f32(0x7D), 416.0f);
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0xFF)));
  for (int code = 0; code <= 0x7E; ++code) {
    EXPECT_EQ(static_cast<double>(e4m3_to_f32(static_cast<uint8_t>(code))), e4m3_value(code)) << code;
    EXPECT_EQ(e4m3_to_f32(static_cast<uint8_t>(code | 0x80)), -e4m3_to_f32(static_cast<uint8_t>(code))) << code;
  }
}

TEST(Fp8E4M3, AllCodesRoundTrip) {
  for (int code = 0; code < 256; ++code) {
    const float v = e4m3_to_f32(static_cast<uint8_t>(code));
    if ((code & 0x7F) == 0x7F) {
      EXPECT_EQ(f32_to_e4m3(v) & 0x7F, 0x7F) << code;  // NaN stays NaN
      continue;
    }
    EXPECT_EQ(f32_to_e4m3(v), code) << code;
  }
}

TEST(Fp8E4M3, SaturatesAndKeepsNaN) {
  EXPECT_EQ(f32_to_e4m3(448.0f), 0x7E);
  EXPECT_EQ(f32_to_e4m3(449.0f), 0x7E);
  EXPECT_EQ(f32_to_e4m3(464.0f), 0x7E);
  EXPECT_EQ(f32_to_e4m3(1e30f), 0x7E);
  EXPECT_EQ(f32_to_e4m3(std::numeric_limits<float>::infinity()), 0x7E);
  EXPECT_EQ(f32_to_e4m3(-std::numeric_limits<float>::infinity()), 0xFE);
  EXPECT_EQ(f32_to_e4m3(-1000.0f), 0xFE);
  EXPECT_EQ(f32_to_e4m3(std::numeric_limits<float>::quiet_NaN()) & 0x7F, 0x7F);
  EXPECT_EQ(f32_to_e4m3(-std::numeric_limits<float>::quiet_NaN()), 0xFF);
  EXPECT_EQ(f32_to_e4m3(1e-30f), 0x00);   // underflows to zero
  EXPECT_EQ(f32_to_e4m3(-1e-30f), 0x80);  // keeping the sign
}

TEST(Fp8E4M3, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_e4m3(1.0625f), 0x38);  // halfway 1 and 1.125: to the even mantissa (1)
  EXPECT_EQ(f32_to_e4m3(1.1875f), 0x3A);  // halfway 1.125 and 1.25: to 1.25
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.0f, -10)), 0x00);      // halfway 0 and 2^-9: to 0
  EXPECT_EQ(f32_to_e4m3(3 * std::ldexp(1.0f, -10)), 0x02);  // halfway 2^-9 and 2^-8: to 2^-8
  EXPECT_EQ(f32_to_e4m3(7.75f * std::ldexp(1.0f, -9)), 0x08);  // just under 2^-6: rounds up into the normals
  // Against a brute-force nearest search: midpoints, their neighbours, and random values over the range.
  std::vector<float> probes;
  for (int code = 0; code < 0x7E; ++code) {
    const float mid = static_cast<float>((e4m3_value(code) + e4m3_value(code + 1)) / 2);
    for (float p : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      probes.push_back(p);
      probes.push_back(-p);
    }
  }
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> expo(-12.0f, 9.0f);
  for (int i = 0; i < 20000; ++i) probes.push_back((i % 2 ? -1.0f : 1.0f) * std::exp2(expo(rng)));
  for (float p : probes) ASSERT_EQ(f32_to_e4m3(p), nearest_code(p)) << p;
}

TEST(Fp8E4M3, EncodeErrorWithinTheHeaderBound) {
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> expo(-12.0f, std::log2(448.0f));
  for (int i = 0; i < 20000; ++i) {
    const float v = std::exp2(expo(rng));
    const float err = std::fabs(v - e4m3_to_f32(f32_to_e4m3(v)));
    if (v >= std::ldexp(1.0f, -6)) ASSERT_LE(err, v / 16) << v;
    else ASSERT_LE(err, std::ldexp(1.0f, -10)) << v;
  }
}

TEST(Fp8Quantize, TilesOfARaggedMatrix) {
  const int64_t rows = 200, cols = 300;  // 2 x 3 tiles, the last ones partial
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(rows * cols);
  for (float& x : w) x = normal(rng);
  for (int64_t c = 0; c < 128; ++c) w[c] = 0;  // row 0 of tile (0,0) zero: the rest still sets amax
  for (int64_t r = 128; r < rows; ++r)        // tile (1, 2) all zero: scale 1, codes 0
    for (int64_t c = 256; c < cols; ++c) w[r * cols + c] = 0;
  std::vector<uint8_t> q(rows * cols);
  std::vector<float> s(2 * 3), back(rows * cols);
  quantize_tiles(w.data(), rows, cols, q.data(), s.data());
  dequantize_tiles(q.data(), s.data(), rows, cols, back.data());
  for (int64_t tr = 0; tr < 2; ++tr) {
    for (int64_t tc = 0; tc < 3; ++tc) {
      float amax = 0;
      for (int64_t r = tr * 128; r < std::min(rows, tr * 128 + 128); ++r)
        for (int64_t c = tc * 128; c < std::min(cols, tc * 128 + 128); ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
      EXPECT_EQ(s[tr * 3 + tc], amax > 0 ? amax / 448.0f : 1.0f) << tr << "," << tc;
    }
  }
  EXPECT_EQ(s[1 * 3 + 2], 1.0f);
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float scale = s[(i / cols / 128) * 3 + (i % cols) / 128];
    ASSERT_LE(std::fabs(back[i] - w[i]), std::max(std::fabs(w[i]) / 16, scale * std::ldexp(1.0f, -10))) << i;
  }
}

TEST(Fp8Quantize, ActivationsPerTokenIn128Groups) {
  const int64_t n = 3, k = 320;  // groups of 128, 128, 64
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n * k);
  for (float& v : x) v = normal(rng);
  x[1 * k + 130] = 50.0f;                                    // an outlier only affects its own group
  for (int64_t c = 256; c < k; ++c) x[2 * k + c] = 0.0f;     // an all-zero group
  Fp8Activations a;
  quantize_activations(x.data(), n, k, a);
  ASSERT_EQ(a.scale.size(), 9u);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t g = 0; g < 3; ++g) {
      float amax = 0;
      for (int64_t c = g * 128; c < std::min(k, g * 128 + 128); ++c) amax = std::max(amax, std::fabs(x[i * k + c]));
      EXPECT_EQ(a.scale[i * 3 + g], amax / 448.0f);
      for (int64_t c = g * 128; c < std::min(k, g * 128 + 128); ++c) {
        const float v = x[i * k + c], back = a.q[i * k + c] * a.scale[i * 3 + g];
        ASSERT_LE(std::fabs(back - v), std::max(std::fabs(v) / 16, a.scale[i * 3 + g] * std::ldexp(1.0f, -10)));
        ASSERT_LE(std::fabs(a.q[i * k + c]), 448.0f);
      }
    }
  }
  EXPECT_EQ(a.scale[1 * 3 + 1], 50.0f / 448.0f);
  EXPECT_EQ(a.q[1 * k + 130], 448.0f);  // the group's largest value is exactly 448 after scaling
  EXPECT_EQ(a.scale[2 * 3 + 2], 0.0f);
  for (int64_t c = 256; c < k; ++c) EXPECT_EQ(a.q[2 * k + c], 0.0f);
}

// The f32 product of quantized operands against the same operands summed in double.
TEST(Fp8Linear, MatchesADoubleReferenceOfTheSameQuantizedOperands) {
  const int64_t n = 5, k = 384 + 40, m = 130;  // ragged K group and output tile
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n * k), w(m * k);
  for (float& v : x) v = normal(rng);
  for (float& v : w) v = 0.02f * normal(rng);
  Fp8Matrix W;
  W.rows = m;
  W.cols = k;
  std::vector<uint8_t> codes(m * k);
  W.scale_inv.resize(static_cast<size_t>(fp8_blocks(m) * fp8_blocks(k)));
  quantize_tiles(w.data(), m, k, codes.data(), W.scale_inv.data());
  for (uint8_t c : codes) W.q.push_back(e4m3_to_f32(c));
  Fp8Activations a;
  quantize_activations(x.data(), n, k, a);
  std::vector<float> out(n * m, -1.0f);
  fp8_linear(a, W, out.data(), 0, 70);
  fp8_linear(a, W, out.data(), 70, m);
  const int64_t groups = fp8_blocks(k);
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < m; ++j) {
      double ref = 0, mag = 0;
      for (int64_t c = 0; c < k; ++c) {
        const double t = static_cast<double>(a.q[i * k + c]) * a.scale[i * groups + c / 128] * W.q[j * k + c] *
                         W.scale_inv[(j / 128) * groups + c / 128];
        ref += t;
        mag += std::fabs(t);
      }
      const double err = std::fabs(out[i * m + j] - ref);
      worst = std::max(worst, err / mag);
      ASSERT_LE(err, static_cast<double>(k) * std::ldexp(1.0, -23) * mag) << i << "," << j;
    }
  }
  // The quantized product also stays near the unquantized one (each operand within 1/16 relative).
  for (int64_t j = 0; j < m; ++j) {
    double exact = 0, mag = 0;
    for (int64_t c = 0; c < k; ++c) {
      exact += static_cast<double>(x[c]) * w[j * k + c];
      mag += std::fabs(static_cast<double>(x[c]) * w[j * k + c]);
    }
    EXPECT_LE(std::fabs(out[j] - exact), 0.13 * mag) << j;
  }
  std::cout << "fp8_linear vs double of the same operands: worst error / sum|terms| = " << worst << '\n';
}

// --- the FP8 KV cache's rounding (fp8_kv_round_trip) ---

namespace {

struct KvRoundTripReport {
  double worst_relative = 0;  // largest error / (the bound engine/config.h states) over all values
  int64_t changed = 0;        // values the rounding moved
};

// Runs fp8_kv_round_trip on a copy of `v` and checks what engine/fp8.h and engine/config.h state for one
// token's head: the returned byte's scale is the smallest power of two with amax <= 448 * scale; every
// value read back is decode(nearest e4m3 code of v / scale) * scale (the code found by brute force, not
// by f32_to_e4m3) and within max(|v| / 16, scale * 2^-10) of v; the largest value maps to a code in
// (224, 448], never past it; an all-zero head stays zero with byte 0. Adds to `rep`.
void check_kv_round_trip(const std::vector<float>& v, const std::string& label, KvRoundTripReport& rep) {
  std::vector<float> out = v;
  const uint8_t byte = fp8_kv_round_trip(out.data(), static_cast<int64_t>(out.size()));
  const float s = fp8_kv_scale(byte);
  float amax = 0;
  size_t imax = 0;
  for (size_t i = 0; i < v.size(); ++i)
    if (std::fabs(v[i]) > amax) amax = std::fabs(v[i]), imax = i;
  if (amax > 0) {
    ASSERT_LE(static_cast<double>(amax), 448.0 * s) << label;
    ASSERT_GT(static_cast<double>(amax), 224.0 * s) << label;
  }
  if (amax == 0) {
    ASSERT_EQ(byte, 0) << label;
    for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], 0.0f) << label << " [" << i << "]";
    return;
  }
  const double bound_floor = static_cast<double>(s) * std::ldexp(1.0, -10);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint8_t code = nearest_code(static_cast<double>(v[i] / s));
    ASSERT_EQ(out[i], e4m3_to_f32(code) * s) << label << " [" << i << "] v=" << v[i] << " scale=" << s;
    const double err = std::fabs(static_cast<double>(out[i]) - v[i]);
    const double bound = std::max(std::fabs(static_cast<double>(v[i])) / 16, bound_floor);
    // f32's own rounding of v / scale and of decode * scale: where v / scale lands on a midpoint the
    // error is the bound itself, and these two roundings may add 2^-24 of v and of the value read back.
    const double f32_rounding = (std::fabs(static_cast<double>(v[i])) + std::fabs(static_cast<double>(out[i]))) * std::ldexp(1.0, -24);
    ASSERT_LE(err, bound + f32_rounding) << label << " [" << i << "] v=" << v[i] << " out=" << out[i] << " scale=" << s;
    rep.worst_relative = std::max(rep.worst_relative, err / bound);
    rep.changed += out[i] != v[i];
  }
  const int top = nearest_code(static_cast<double>(v[imax] / s)) & 0x7F;
  EXPECT_GE(top, 0x76) << label;  // 224: the scale is no larger than it must be
  EXPECT_LE(top, 0x7E) << label;  // 448: nothing saturates
  EXPECT_EQ(std::signbit(out[imax]), std::signbit(v[imax])) << label;
}

}  // namespace

// Random heads of the sizes the engine runs (head_dim 64, 128) and odd sizes, drawn from normal,
// uniform and heavy-tailed laws over magnitudes from 1e-30 to 1e30 (K after q/k-norm and RoPE is O(1),
// V follows the layer's activations; the rounding must not care). The scale stays a normal f32 there
// (amax >= 448 * FLT_MIN): below that, the product decode(code) * scale itself is a subnormal float
// whose own rounding (2^-150) can pass scale * 2^-10, a range no K or V value reaches.
TEST(Fp8KvCache, RandomHeadsWithinTheStatedBound) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::cauchy_distribution<float> cauchy(0.0f, 1.0f);
  KvRoundTripReport rep;
  int64_t values = 0;
  for (int64_t n : {1, 3, 64, 127, 128}) {
    for (float magnitude : {1e-30f, 1e-6f, 1e-2f, 1.0f, 37.5f, 1e4f, 1e30f}) {
      for (int law = 0; law < 3; ++law) {
        for (int rep_i = 0; rep_i < 8; ++rep_i) {
          std::vector<float> v(static_cast<size_t>(n));
          for (float& x : v) x = magnitude * (law == 0 ? normal(rng) : law == 1 ? uniform(rng) : std::clamp(cauchy(rng), -1e6f, 1e6f));
          check_kv_round_trip(v, "n=" + std::to_string(n) + " magnitude=" + std::to_string(magnitude) + " law=" + std::to_string(law), rep);
          if (HasFatalFailure()) return;
          values += n;
        }
      }
    }
  }
  std::printf("[fp8 kv] %lld random values: worst error %.3f of the bound, %lld changed by the rounding\n",
              static_cast<long long>(values), rep.worst_relative, static_cast<long long>(rep.changed));
  // The bound is nearly reached (half an e4m3 step just above a power of two is 1/17 of the value), so
  // a looser rounding than nearest would fail above; and the rounding does move most values.
  EXPECT_GT(rep.worst_relative, 0.8);
  EXPECT_GT(rep.changed * 2, values);
}

// Inputs built to hit the edges: every e4m3 midpoint (ties to even, the largest relative error just
// above each power of two), the subnormal codes, an outlier that pushes the rest of the head below the
// smallest code, zeros of both signs, all-zero heads, a head of one repeated value, the largest value
// negative, and amax at the ends of the normal f32 range.
TEST(Fp8KvCache, AdversarialHeadsWithinTheStatedBound) {
  KvRoundTripReport rep;
  // Scale exactly 1 (amax 448): each midpoint between neighbouring codes and its two f32 neighbours.
  {
    std::vector<float> v = {448.0f};
    for (int code = 0; code < 0x7E; ++code) {
      const float mid = static_cast<float>((e4m3_value(code) + e4m3_value(code + 1)) / 2);
      for (float p : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
        v.push_back(p);
        v.push_back(-p);
      }
    }
    check_kv_round_trip(v, "midpoints, scale 1", rep);
    std::vector<float> out = v;
    fp8_kv_round_trip(out.data(), static_cast<int64_t>(out.size()));
    EXPECT_EQ(out[1], 0.0f);                     // 2^-10: halfway 0 and 2^-9, to the even code 0
    EXPECT_EQ(v[1 + 6 * 0x38], 1.0625f);         // halfway 1 and 1.125 ...
    EXPECT_EQ(out[1 + 6 * 0x38], 1.0f);          // ... to the even mantissa
  }
  // The same midpoints under the scales of heads across the range.
  for (float amax : {1.0f, 0.37f, 3.1e-3f, 2.9e5f}) {
    std::vector<float> v = {amax};
    const float s = fp8_kv_scale(fp8_kv_scale_byte(amax));
    for (int code = 0; code < 0x7E; ++code) v.push_back(static_cast<float>((e4m3_value(code) + e4m3_value(code + 1)) / 2) * s);
    check_kv_round_trip(v, "midpoints, amax " + std::to_string(amax), rep);
  }
  // One outlier: the other values fall to subnormal codes or to zero, within scale * 2^-10.
  {
    std::vector<float> v(128, 0.0f);
    v[17] = -5000.0f;
    for (int i = 0; i < 128; ++i)
      if (i != 17) v[static_cast<size_t>(i)] = std::ldexp(1.0f, -(i % 40)) * (i % 2 ? 1.0f : -1.0f);
    check_kv_round_trip(v, "outlier", rep);
    std::vector<float> out = v;
    fp8_kv_round_trip(out.data(), 128);
    EXPECT_EQ(out[39], 0.0f);  // 2^-39 against a scale of 16: far below the smallest code
  }
  // Zeros: an all-zero head (either sign) stays zero with scale 0; zeros beside other values stay zero.
  for (float z : {0.0f, -0.0f}) {
    std::vector<float> v(128, z);
    check_kv_round_trip(v, "all zero", rep);
    std::vector<float> out = v;
    EXPECT_EQ(fp8_kv_round_trip(out.data(), 128), 0);
    for (float x : out) EXPECT_FALSE(std::isnan(x));
    v[5] = 2.5f;
    check_kv_round_trip(v, "zeros and one value", rep);
  }
  // A head of one repeated value (every element the largest), a negative largest value, the f32 range.
  check_kv_round_trip(std::vector<float>(64, -3.3f), "constant", rep);
  check_kv_round_trip({0.1f, -7.0f, 6.9f, 3.0f, -0.01f}, "negative largest", rep);
  const float tiny_amax = 448.0f * std::numeric_limits<float>::min();  // the smallest normal scale
  check_kv_round_trip({tiny_amax, tiny_amax / 3, -tiny_amax / 100, tiny_amax / 1e4f}, "smallest normal scale", rep);
  const float huge = std::numeric_limits<float>::max();
  check_kv_round_trip({huge, -huge / 3, huge / 1e10f, 1.0f}, "largest finite", rep);
  std::printf("[fp8 kv] adversarial heads: worst error %.3f of the bound\n", rep.worst_relative);
  EXPECT_GE(rep.worst_relative, 0.99);  // the midpoints reach it
}

// --- quantization_config ---

namespace {

std::string qc(const nlohmann::json& patch) {
  nlohmann::json j = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"},
                      {"weight_block_size", {128, 128}}};
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (it->is_null()) j.erase(it.key());
    else j[it.key()] = *it;
  }
  return j.dump();
}

std::string config_with_quantization(const std::string& qc_text) {
  auto j = nlohmann::json::parse(preset_config("tiny").to_json());
  j["quantization_config"] = nlohmann::json::parse(qc_text);
  return j.dump();
}

}  // namespace

TEST(Fp8Config, ParsesThePublishedForm) {
  const ModelConfig c = ModelConfig::from_json(
      config_with_quantization(qc({{"modules_to_not_convert", {"lm_head", "model.layers.*.mlp.down_proj"}}})), "c.json");
  ASSERT_TRUE(c.quantization.has_value());
  EXPECT_EQ(c.quantization->block_out, 128);
  EXPECT_EQ(c.quantization->block_in, 128);
  EXPECT_FALSE(c.quantization->converts("lm_head"));
  EXPECT_FALSE(c.quantization->converts("model.layers.12.mlp.down_proj"));
  EXPECT_TRUE(c.quantization->converts("model.layers.12.mlp.up_proj"));
  // fmt and activation_scheme may be absent (transformers' FineGrainedFP8Config), modules null.
  const ModelConfig d = ModelConfig::from_json(
      config_with_quantization(qc({{"fmt", nullptr}, {"activation_scheme", nullptr}})), "c.json");
  EXPECT_EQ(d.quantization->fmt, "e4m3");
  EXPECT_TRUE(d.quantization->converts("lm_head"));
  // It survives a round trip through to_json, and a bf16 config has none.
  const ModelConfig e = ModelConfig::from_json(c.to_json(), "c2.json");
  ASSERT_TRUE(e.quantization.has_value());
  EXPECT_EQ(e.quantization->modules_to_not_convert, c.quantization->modules_to_not_convert);
  EXPECT_FALSE(ModelConfig::from_json(preset_config("tiny").to_json(), "c.json").quantization.has_value());
}

TEST(Fp8Config, RejectsEachUnsupportedVariantWithOneLine) {
  const std::vector<std::pair<nlohmann::json, std::string>> cases = {
      {{{"quant_method", "awq"}}, "quant_method \"awq\" is not supported"},
      {{{"quant_method", "gptq"}}, "quant_method \"gptq\" is not supported"},
      {{{"quant_method", nullptr}}, "\"quant_method\" is missing"},
      {{{"fmt", "e5m2"}}, "fmt \"e5m2\" is not supported"},
      {{{"activation_scheme", "static"}}, "activation_scheme \"static\" is not supported"},
      {{{"weight_block_size", {64, 64}}}, "weight_block_size [64,64] is not supported (only [128, 128])"},
      {{{"weight_block_size", {128, 64}}}, "weight_block_size [128,64] is not supported"},
      {{{"weight_block_size", {128}}}, "\"weight_block_size\" must be two integers"},
      {{{"weight_block_size", nullptr}}, "per-tensor FP8 is not supported"},
      {{{"modules_to_not_convert", "lm_head"}}, "\"modules_to_not_convert\" must be a list"},
  };
  for (const auto& [patch, needle] : cases) {
    const std::string msg = error_of([&] { ModelConfig::from_json(config_with_quantization(qc(patch)), "m/config.json"); });
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind("m/config.json: quantization_config: ", 0), 0u) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// --- checkpoints on disk ---

namespace {

// A directory holding the tiny random model quantized to FP8 by the library (config, tokenizer, weights).
fs::path make_fp8_dir(const fs::path& dir, const QuantizationConfig& q = default_fp8_quantization()) {
  const fs::path src = random_model_dir();
  fs::create_directories(dir);
  ModelConfig c = ModelConfig::from_file((src / "config.json").string());
  Checkpoint ckpt(src.string());
  quantize_checkpoint(c, ckpt, q, (dir / "model.safetensors").string());
  c.quantization = q;
  abridge::testing::write_file(dir / "config.json", c.to_json());
  fs::copy_file(src / "tokenizer.json", dir / "tokenizer.json");
  fs::copy_file(src / "tokenizer_config.json", dir / "tokenizer_config.json");
  return dir;
}

// Copies dir's checkpoint into out/model.safetensors, changing tensors on the way: `edit` may replace a
// tensor's spec and bytes (returning true) or drop it (setting drop).
struct Edit {
  std::function<void(TensorSpec&, std::vector<std::byte>&, bool& drop)> fn;
};
void rewrite_checkpoint(const fs::path& dir, const fs::path& out, const Edit& edit) {
  fs::create_directories(out);
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(dir / f, out / f, fs::copy_options::overwrite_existing);
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> bytes;
  {
    Checkpoint ckpt(dir.string());
    for (const auto& [name, v] : ckpt.tensors()) {
      TensorSpec s{name, v.dtype, v.shape};
      std::vector<std::byte> b(v.data, v.data + v.nbytes);
      bool drop = false;
      edit.fn(s, b, drop);
      if (drop) continue;
      specs.push_back(s);
      bytes.push_back(std::move(b));
    }
  }
  size_t i = 0;
  fs::remove(out / "model.safetensors");
  write_safetensors((out / "model.safetensors").string(), specs, [&](const TensorSpec&, std::span<std::byte> o) {
    std::memcpy(o.data(), bytes[i].data(), o.size());
    ++i;
  });
}

void set_f32(std::vector<std::byte>& b, size_t index, float v) { std::memcpy(b.data() + 4 * index, &v, 4); }

const std::string kUp0 = "model.layers.0.mlp.up_proj.weight";

}  // namespace

TEST(Fp8Checkpoint, QuantizedTinyModelOpens) {
  TempDir tmp;
  const fs::path dir = make_fp8_dir(tmp / "fp8");
  const ModelDir m = open_model_dir(dir.string());
  ASSERT_TRUE(m.config.quantization.has_value());
  EXPECT_TRUE(has_fp8_weights(m.config, *m.checkpoint));
  const TensorView* w = m.checkpoint->find(kUp0);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->dtype, DType::kF8E4M3);
  const TensorView* s = m.checkpoint->find(scale_name(kUp0));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->shape, (std::vector<int64_t>{4, 2}));  // up_proj (512, 256) in 128x128 tiles
  EXPECT_EQ(m.checkpoint->find("model.embed_tokens.weight")->dtype, DType::kBF16);
  EXPECT_EQ(m.checkpoint->find("model.norm.weight")->dtype, DType::kBF16);
}

// Scales as the published checkpoints store them (bf16 or f16), with a ragged last tile in neither
// dimension: the same values load whichever dtype holds them.
TEST(Fp8Checkpoint, AcceptsBf16AndF16Scales) {
  TempDir tmp;
  const fs::path dir = make_fp8_dir(tmp / "fp8");
  for (DType dt : {DType::kBF16, DType::kF16}) {
    const fs::path out = tmp / std::string(dtype_name(dt));
    rewrite_checkpoint(dir, out, {[&](TensorSpec& s, std::vector<std::byte>& b, bool&) {
                         if (!s.name.ends_with("_scale_inv")) return;
                         std::vector<std::byte> nb(b.size() / 2);
                         for (size_t i = 0; i < nb.size() / 2; ++i) {
                           float v;
                           std::memcpy(&v, b.data() + 4 * i, 4);
                           // powers of two: exact in bf16 and f16 both
                           const float p = std::exp2(std::clamp(std::round(std::log2(v)), -14.0f, 15.0f));
                           uint16_t h = 0;
                           if (dt == DType::kBF16) h = f32_to_bf16(p);
                           else h = static_cast<uint16_t>(((static_cast<int>(std::log2(p)) + 15) << 10));
                           std::memcpy(nb.data() + 2 * i, &h, 2);
                         }
                         s.dtype = dt;
                         b = std::move(nb);
                       }});
    const ModelDir m = open_model_dir(out.string());
    const Fp8Matrix w = load_fp8_matrix(*m.checkpoint, kUp0);
    for (float s : w.scale_inv) EXPECT_EQ(s, std::exp2(std::round(std::log2(s)))) << dtype_name(dt);
  }
}

TEST(Fp8Checkpoint, HostileFilesRejectedWithOneLineNamingTheTensor) {
  TempDir tmp;
  const fs::path dir = make_fp8_dir(tmp / "fp8");
  struct Case {
    std::string label;
    Edit edit;
    std::string needle;
  };
  const std::string sname = scale_name(kUp0);
  const std::vector<Case> cases = {
      {"scale missing", {[&](TensorSpec& s, std::vector<std::byte>&, bool& drop) { drop = s.name == sname; }},
       "missing tensor '" + sname + "'"},
      {"scale shape wrong",
       {[&](TensorSpec& s, std::vector<std::byte>& b, bool&) {
          if (s.name == sname) {
            s.shape = {2, 4};
            (void)b;
          }
        }},
       "'" + sname + "' has shape [2, 4], the weight [512, 256] in 128x128 tiles needs [4, 2]"},
      {"NaN scale",
       {[&](TensorSpec& s, std::vector<std::byte>& b, bool&) {
          if (s.name == sname) set_f32(b, 3, std::numeric_limits<float>::quiet_NaN());
        }},
       "'" + sname + "' has a NaN scale (nan) at [1, 1]"},
      {"infinite scale",
       {[&](TensorSpec& s, std::vector<std::byte>& b, bool&) {
          if (s.name == sname) set_f32(b, 0, std::numeric_limits<float>::infinity());
        }},
       "'" + sname + "' has an infinite scale"},
      {"zero scale",
       {[&](TensorSpec& s, std::vector<std::byte>& b, bool&) {
          if (s.name == sname) set_f32(b, 7, 0.0f);
        }},
       "'" + sname + "' has a non-positive scale (0) at [3, 1]"},
      {"negative scale",
       {[&](TensorSpec& s, std::vector<std::byte>& b, bool&) {
          if (s.name == sname) set_f32(b, 2, -0.5f);
        }},
       "non-positive scale (-0.5) at [1, 0]"},
      {"FP8 norm",
       {[&](TensorSpec& s, std::vector<std::byte>& b, bool&) {
          if (s.name == "model.norm.weight") {
            s.dtype = DType::kF8E4M3;
            b.resize(b.size() / 2);
          }
        }},
       "tensor 'model.norm.weight' is F8_E4M3, but only linear layers may be"},
      {"FP8 scale",
       {[&](TensorSpec& s, std::vector<std::byte>& b, bool&) {
          if (s.name == sname) {
            s.dtype = DType::kF8E4M3;
            b.resize(b.size() / 4);
          }
        }},
       "'" + sname + "' is F8_E4M3; scales must be BF16, F16 or F32"},
  };
  for (const Case& c : cases) {
    const fs::path out = tmp / c.label;
    rewrite_checkpoint(dir, out, c.edit);
    const std::string msg = error_of([&] { open_model_dir(out.string()); });
    EXPECT_NE(msg.find(c.needle), std::string::npos) << c.label << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(Fp8Checkpoint, ConfigMustDeclareTheQuantization) {
  TempDir tmp;
  const fs::path dir = make_fp8_dir(tmp / "fp8");
  // Without quantization_config.
  auto j = nlohmann::json::parse(abridge::testing::read_file(dir / "config.json"));
  j.erase("quantization_config");
  abridge::testing::write_file(dir / "config.json", j.dump());
  std::string msg = error_of([&] { open_model_dir(dir.string()); });
  EXPECT_NE(msg.find("is F8_E4M3, but config.json has no quantization_config"), std::string::npos) << msg;
  // With the layer kept in bf16 by modules_to_not_convert.
  j["quantization_config"] = nlohmann::json::parse(qc({{"modules_to_not_convert", {"mlp.up_proj"}}}));
  abridge::testing::write_file(dir / "config.json", j.dump());
  msg = error_of([&] { open_model_dir(dir.string()); });
  EXPECT_NE(msg.find("keeps 'model.layers.0.mlp.up_proj' unquantized"), std::string::npos) << msg;
}

// The published FP8 release stores lm_head.weight although its config ties embeddings: the CPU backend
// must read that tensor, not the embedding.
TEST(Fp8Checkpoint, SeparateLmHeadUsedEvenWhenTied) {
  TempDir tmp;
  const fs::path dir = make_fp8_dir(tmp / "fp8");
  const fs::path out = tmp / "head";
  rewrite_checkpoint(dir, out, {[&](TensorSpec&, std::vector<std::byte>&, bool&) {}});
  // Add lm_head = -embedding (bf16: flip the sign bits): logits of the untied head are exactly negated.
  {
    Checkpoint ckpt(out.string());
    std::vector<TensorSpec> specs;
    std::vector<std::vector<std::byte>> bytes;
    for (const auto& [name, v] : ckpt.tensors()) {
      specs.push_back({name, v.dtype, v.shape});
      bytes.emplace_back(v.data, v.data + v.nbytes);
      if (name == "model.embed_tokens.weight") {
        specs.push_back({"lm_head.weight", v.dtype, v.shape});
        std::vector<std::byte> neg(v.data, v.data + v.nbytes);
        for (size_t i = 1; i < neg.size(); i += 2) neg[i] ^= std::byte{0x80};
        bytes.push_back(std::move(neg));
      }
    }
    size_t i = 0;
    write_safetensors((tmp / "model.safetensors").string(), specs, [&](const TensorSpec&, std::span<std::byte> o) {
      std::memcpy(o.data(), bytes[i++].data(), o.size());
    });
  }
  fs::rename(tmp / "model.safetensors", out / "model.safetensors");
  const ModelDir tied = open_model_dir(dir.string());
  const ModelDir head = open_model_dir(out.string());
  ASSERT_TRUE(head.config.tie_word_embeddings);
  CpuBackend a(tied.config, *tied.checkpoint, 2), b(head.config, *head.checkpoint, 2);
  BatchPlan plan;
  for (int32_t i = 0; i < 4; ++i) plan.add(1000 + i, i, 0, i == 3);
  std::vector<float> la(tied.config.vocab_size), lb(tied.config.vocab_size);
  a.forward(plan, la);
  b.forward(plan, lb);
  for (size_t i = 0; i < la.size(); i += 97) ASSERT_EQ(lb[i], -la[i]) << i;
}

// --- the CPU backend on a quantized model, and the commands ---

namespace {

using abridge::testing::quote;
using abridge::testing::run_abridge;

const fs::path& fp8_model_dir() {
  static TempDir dir;
  static const fs::path path = [] {
    const fs::path p = dir / "fp8";
    const auto r = run_abridge("model quantize " + quote(random_model_dir()) + " " + quote(p) + " --fp8");
    if (r.exit_code != 0) throw std::runtime_error("model quantize failed: " + r.err);
    return p;
  }();
  return path;
}

std::vector<int32_t> greedy(Backend& b, std::vector<int32_t> prompt, int new_tokens, std::vector<float>* all_logits) {
  const int64_t vocab = b.config().vocab_size;
  BatchPlan plan;
  for (size_t i = 0; i < prompt.size(); ++i) plan.add(prompt[i], static_cast<int32_t>(i), 0, true);
  std::vector<float> logits(prompt.size() * vocab);
  b.forward(plan, logits);
  if (all_logits) *all_logits = logits;
  std::vector<int32_t> out;
  std::vector<float> row(logits.end() - vocab, logits.end());
  for (int t = 0; t < new_tokens; ++t) {
    const int32_t next = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
    out.push_back(next);
    BatchPlan step;
    step.add(next, static_cast<int32_t>(prompt.size() + out.size() - 1), 0, true);
    b.forward(step, row);
  }
  return out;
}

}  // namespace

// The FP8 model against the bf16 model it was quantized from, on the CPU backend. Random weights are a
// hard case for top-1 (their logits are nearly flat), so agreement is counted and shown, and the logits
// error is measured against the spread of the bf16 logits.
TEST(Fp8Model, LogitsAndGreedyTokensFollowTheBf16Model) {
  const ModelDir bf = open_model_dir(random_model_dir().string());
  const ModelDir f8 = open_model_dir(fp8_model_dir().string());
  CpuBackend a(bf.config, *bf.checkpoint, 2), b(f8.config, *f8.checkpoint, 2);
  const std::vector<int32_t> prompt =
      bf.tokenizer.encode("The quarterly report says revenue grew in every region, and the board approved a dividend.");
  ASSERT_GE(prompt.size(), 16u);
  std::vector<float> la, lb;
  const std::vector<int32_t> ga = greedy(a, prompt, 24, &la), gb = greedy(b, prompt, 24, &lb);
  const int64_t vocab = bf.config.vocab_size, rows = static_cast<int64_t>(prompt.size());
  double max_err = 0, sum_sq = 0, err_sq = 0, mean = 0;
  for (float v : la) mean += v;
  mean /= static_cast<double>(la.size());
  for (size_t i = 0; i < la.size(); ++i) {
    max_err = std::max(max_err, static_cast<double>(std::fabs(la[i] - lb[i])));
    sum_sq += (la[i] - mean) * (la[i] - mean);
    err_sq += static_cast<double>(la[i] - lb[i]) * (la[i] - lb[i]);
  }
  const double spread = std::sqrt(sum_sq / static_cast<double>(la.size()));
  const double rms_err = std::sqrt(err_sq / static_cast<double>(la.size()));
  int top1_agree = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const auto ra = la.begin() + r * vocab, rb = lb.begin() + r * vocab;
    top1_agree += (std::max_element(ra, ra + vocab) - ra) == (std::max_element(rb, rb + vocab) - rb);
  }
  size_t same_prefix = 0;
  while (same_prefix < ga.size() && ga[same_prefix] == gb[same_prefix]) ++same_prefix;
  int same_tokens = 0;
  for (size_t i = 0; i < ga.size(); ++i) same_tokens += ga[i] == gb[i];
  std::cout << "fp8 vs bf16 (tiny, seed 7): logits std " << spread << ", RMS error " << rms_err << " ("
            << rms_err / spread << " of the std), max |error| " << max_err << " (" << max_err / spread
            << " of the std); top-1 agreement " << top1_agree << "/" << rows
            << " prompt positions; greedy: first " << same_prefix << " of " << ga.size() << " tokens identical, "
            << same_tokens << " equal by position\n";
  EXPECT_LT(rms_err, 0.15 * spread);
  EXPECT_LT(max_err, 1.0 * spread);
  EXPECT_GE(top1_agree * 10, rows * 8);  // at least 80% of the positions
  EXPECT_GE(same_prefix, 8u);
}

TEST(Fp8Commands, MakeRandomFp8IsTheQuantizedBf16ModelAndDeterministic) {
  TempDir tmp;
  for (const char* name : {"a", "b"}) {
    const auto r = run_abridge("model make-random " + quote(tmp / name) + " --preset tiny --seed 7 --dtype fp8");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  const std::string a = abridge::testing::read_file(tmp / "a" / "model.safetensors");
  EXPECT_EQ(a, abridge::testing::read_file(tmp / "b" / "model.safetensors"));
  EXPECT_EQ(a, abridge::testing::read_file(fp8_model_dir() / "model.safetensors"));  // quantize of seed 7 bf16
  EXPECT_FALSE(fs::exists(tmp / "a" / ".bf16-source.tmp"));
  for (const auto& e : fs::directory_iterator(tmp / "a")) EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos);
  const auto info = run_abridge("model info " + quote(tmp / "a"));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_TRUE(abridge::testing::contains(info.out, "fp8 e4m3, 128x128 weight tiles, dynamic per-token activations"))
      << info.out;
  EXPECT_TRUE(abridge::testing::contains(info.out, "F8_E4M3 x14")) << info.out;  // 7 linears x 2 layers
  EXPECT_TRUE(abridge::testing::contains(info.out, "F32 x14")) << info.out;      // their scales
  // The bytes: every linear at one byte per weight, its scales at four bytes per tile.
  const ModelConfig c = preset_config("tiny");
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  const int64_t linear = c.q_dim() * d + 2 * c.kv_dim() * d + d * c.q_dim() + 3 * f * d;
  const int64_t tiles = 2 * 2 + 2 * (1 * 2) + 2 * 2 + 3 * (4 * 2);
  EXPECT_TRUE(abridge::testing::contains(info.out, "F8_E4M3 " + std::to_string(c.num_hidden_layers * linear) + " ("))
      << info.out;
  EXPECT_TRUE(abridge::testing::contains(info.out, "F32 " + std::to_string(c.num_hidden_layers * tiles * 4) + " ("))
      << info.out;
  const auto bf_info = run_abridge("model info " + quote(random_model_dir()));
  EXPECT_TRUE(abridge::testing::contains(bf_info.out, "quantization              none")) << bf_info.out;
}

TEST(Fp8Commands, QuantizeWritesANewDirectoryOnly) {
  TempDir tmp;
  auto r = run_abridge("model quantize " + quote(random_model_dir()) + " " + quote(tmp / "q"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(abridge::testing::contains(r.err, "needs a target format: --fp8")) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "q"));
  r = run_abridge("model quantize " + quote(random_model_dir()) + " " + quote(fp8_model_dir()) + " --fp8");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(abridge::testing::contains(r.err, "already exists")) << r.err;
  r = run_abridge("model quantize " + quote(fp8_model_dir()) + " " + quote(tmp / "q") + " --fp8");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(abridge::testing::contains(r.err, "already an FP8 checkpoint")) << r.err;
  r = run_abridge("model quantize " + quote(random_model_dir()) + " " + quote(tmp / "no" / "q") + " --fp8");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(abridge::testing::contains(r.err, "parent directory does not exist")) << r.err;
  for (const auto& e : fs::directory_iterator(tmp.path())) ADD_FAILURE() << "left behind: " << e.path();
  fs::create_directory(tmp / "empty");
  r = run_abridge("model quantize " + quote(random_model_dir()) + " " + quote(tmp / "empty") + " --fp8");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(tmp / "empty" / "tokenizer_config.json"));
  EXPECT_EQ(abridge::testing::read_file(tmp / "empty" / "model.safetensors"),
            abridge::testing::read_file(fp8_model_dir() / "model.safetensors"));
}

TEST(Fp8Commands, GenerateRunsTheFp8ModelOnTheCpu) {
  const auto r = run_abridge("generate --device cpu --model " + quote(fp8_model_dir()) +
                             " --prompt 'Summarize: the sky is blue.' --max-new-tokens 8 --stats");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(abridge::testing::contains(r.err, "8 new tokens")) << r.err;
}

// --device cuda runs an FP8 checkpoint where a GPU is (tests/test_cuda.cpp compares it with the CPU);
// without one it stops with the same one line as for any model, which does not blame FP8.
TEST(Fp8Commands, CudaRunsFp8OrSaysWhyNotInOneLine) {
  const auto r = run_abridge("generate --device cuda --model " + quote(fp8_model_dir()) +
                             " --prompt 'Summarize: the sky is blue.' --max-new-tokens 8 --stats");
  if (gpu_count() > 0) {
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(abridge::testing::contains(r.err, "8 new tokens")) << r.err;
    return;
  }
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_TRUE(r.err.starts_with("abridge: ")) << r.err;
  EXPECT_FALSE(abridge::testing::contains(r.err, "FP8")) << r.err;
  const auto bf16 = run_abridge("generate --device cuda --model " + quote(random_model_dir()) + " --prompt hi");
  EXPECT_EQ(bf16.err, r.err);
}

// bench engine reads an FP8 model's decode ceiling from the bytes the GPU holds: codes at one byte with
// f32 tile scales, the rest bf16 (a bf16 model: 2 bytes a parameter, as before).
TEST(Fp8Commands, BenchEngineCountsTheFp8WeightBytes) {
  const ModelDir f8 = open_model_dir(fp8_model_dir().string());
  const ModelDir b16 = open_model_dir(random_model_dir().string());
  double want = 0;
  for (const TensorEntry& e : tensor_table(f8.config)) {
    if (!f8.checkpoint->find(e.name)) continue;
    int64_t numel = 1;
    for (int64_t d : e.shape) numel *= d;
    want += is_linear(e.role) && e.role != TensorRole::kLmHead
                ? static_cast<double>(numel + 4 * fp8_blocks(e.shape[0]) * fp8_blocks(e.shape[1]))
                : 2.0 * static_cast<double>(numel);
  }
  EXPECT_EQ(device_weight_bytes(f8.config, *f8.checkpoint), want);
  EXPECT_EQ(device_weight_bytes(b16.config, *b16.checkpoint), 2.0 * static_cast<double>(b16.config.n_params()));
  EXPECT_EQ(decode_step_bytes(f8.config, 1, 0, want), want);
  const auto r = run_abridge("bench engine --device cpu --model " + quote(fp8_model_dir()) +
                             " --prefill 64 --decode 1x32 --steps 2 --gemm-tflops 1 --copy-tbps 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  char line[128];
  std::snprintf(line, sizeof line, "FP8 checkpoint: %.2f GB of weights a decode step reads", want / 1e9);
  EXPECT_TRUE(abridge::testing::contains(r.out, line)) << r.out;
  EXPECT_TRUE(abridge::testing::contains(r.out, "| decode b1 ctx32 | ")) << r.out;
}

TEST(Fp8Commands, HostileFp8FilesRejectedWithOneLineAndStatus) {
  TempDir tmp;
  const std::string sname = scale_name(kUp0);
  struct Case {
    std::string label;
    std::function<void(const fs::path&)> make;
    std::string needle;
  };
  auto with_config = [&](const nlohmann::json& patch) {
    return [patch](const fs::path& out) {
      fs::create_directories(out);
      for (const auto& e : fs::directory_iterator(fp8_model_dir())) fs::copy_file(e.path(), out / e.path().filename());
      auto j = nlohmann::json::parse(abridge::testing::read_file(out / "config.json"));
      for (auto it = patch.begin(); it != patch.end(); ++it) j["quantization_config"][it.key()] = *it;
      abridge::testing::write_file(out / "config.json", j.dump());
    };
  };
  const std::vector<Case> cases = {
      {"scale shape wrong",
       [&](const fs::path& out) {
         rewrite_checkpoint(fp8_model_dir(), out, {[&](TensorSpec& s, std::vector<std::byte>&, bool&) {
                              if (s.name == sname) s.shape = {8, 1};
                            }});
       },
       "'" + sname + "' has shape [8, 1]"},
      {"scale missing",
       [&](const fs::path& out) {
         rewrite_checkpoint(fp8_model_dir(), out,
                            {[&](TensorSpec& s, std::vector<std::byte>&, bool& drop) { drop = s.name == sname; }});
       },
       "missing tensor '" + sname + "'"},
      {"NaN scale",
       [&](const fs::path& out) {
         rewrite_checkpoint(fp8_model_dir(), out, {[&](TensorSpec& s, std::vector<std::byte>& b, bool&) {
                              if (s.name == sname) set_f32(b, 5, std::numeric_limits<float>::quiet_NaN());
                            }});
       },
       "'" + sname + "' has a NaN scale"},
      {"unknown fmt", with_config({{"fmt", "e3m4"}}), "config.json: quantization_config: fmt \"e3m4\" is not supported"},
      {"block size 64", with_config({{"weight_block_size", {64, 64}}}),
       "config.json: quantization_config: weight_block_size [64,64] is not supported (only [128, 128])"},
      {"unsupported method", with_config({{"quant_method", "bitsandbytes"}}),
       "quant_method \"bitsandbytes\" is not supported"},
  };
  for (const Case& c : cases) {
    const fs::path out = tmp / c.label;
    c.make(out);
    for (const std::string& cmd : {"generate --device cpu --model " + quote(out) + " --prompt hi", "model info " + quote(out)}) {
      const auto r = run_abridge(cmd);
      EXPECT_EQ(r.exit_code, 2) << c.label << ": " << r.err;
      EXPECT_TRUE(abridge::testing::contains(r.err, c.needle)) << c.label << ": " << r.err;
      EXPECT_EQ(r.err.rfind("abridge: ", 0), 0u) << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.label << ": " << r.err;
    }
  }
}

// --- the FP8 KV cache on the CPU backend ---

namespace {

// One greedy run: the logits of every prompt position (one prefill step), then `new_tokens` decode
// steps, keeping each step's logits row (the row that chose the token).
struct GreedyRun {
  std::vector<float> prompt_logits;            // (prompt, vocab)
  std::vector<std::vector<float>> step_rows;   // (new_tokens) x (vocab)
  std::vector<int32_t> tokens;
};

GreedyRun greedy_run(Backend& b, const std::vector<int32_t>& prompt, int new_tokens) {
  const size_t vocab = static_cast<size_t>(b.config().vocab_size);
  GreedyRun r;
  BatchPlan plan;
  for (size_t i = 0; i < prompt.size(); ++i) plan.add(prompt[i], static_cast<int32_t>(i), 0, true);
  r.prompt_logits.resize(prompt.size() * vocab);
  b.forward(plan, r.prompt_logits);
  std::vector<float> row(r.prompt_logits.end() - static_cast<std::ptrdiff_t>(vocab), r.prompt_logits.end());
  for (int t = 0; t < new_tokens; ++t) {
    r.step_rows.push_back(row);
    r.tokens.push_back(argmax(row));
    BatchPlan step;
    step.add(r.tokens.back(), static_cast<int32_t>(prompt.size() + r.tokens.size() - 1), 0, true);
    b.forward(step, row);
  }
  b.release(0);
  return r;
}

double rms_diff(std::span<const float> x, std::span<const float> y) {
  double ss = 0;
  for (size_t v = 0; v < x.size(); ++v) ss += double(x[v] - y[v]) * (x[v] - y[v]);
  return std::sqrt(ss / static_cast<double>(x.size()));
}

// Where two runs' top tokens differ: the reference's margin between its choice and the other run's, in
// standard deviations of the runs' difference at that position (sqrt(2) x the RMS of the logits'
// difference), as tests/test_cuda.cpp counts FP8 disagreements. Below kTieSigmas it is a near-tie:
// the rounding moved two nearly equal logits past each other.
constexpr double kTieSigmas = 4.0;
double margin_sigmas(std::span<const float> ref, std::span<const float> other, int32_t ref_top, int32_t other_top) {
  return (ref[static_cast<size_t>(ref_top)] - ref[static_cast<size_t>(other_top)]) / (std::sqrt(2.0) * rms_diff(ref, other));
}

struct KvDtypeCompare {
  int positions = 0, top1_agree = 0, near_ties = 0;
  double rel_l2 = 0;                          // over all positions' logits together
  double worst_position_rel_l2 = 0, mean_position_rel_l2 = 0;
  std::vector<double> position_rel_l2;        // (positions) each position's logits rel L2
  int64_t worst_position = 0;
  double worst_margin_sigmas = 0;             // the largest reference margin at a top-1 disagreement
  int greedy_prefix = 0, greedy_equal = 0, greedy_tokens = 0;
  double greedy_part_sigmas = 0;              // at the first differing greedy token (0: none)
};

// The same prompt through the CPU backend with bf16 KV (the CPU keeps K and V in float32: no rounding)
// and with FP8 KV (each token's K and V per KV head rounded as engine/fp8.h's fp8_kv_round_trip), built
// through make_backend as the commands build them.
KvDtypeCompare compare_kv_dtypes(const std::string& preset, size_t prompt_tokens, int new_tokens) {
  const ModelDir model = open_model_dir(random_model_dir(preset, 7, "bf16").string());
  std::vector<int32_t> ids = model.tokenizer.encode(
      abridge::testing::read_file(abridge::testing::source_path("samples/a-scandal-in-bohemia.txt")).substr(0, 8 * prompt_tokens));
  EXPECT_GE(ids.size(), prompt_tokens);
  ids.resize(std::min(ids.size(), prompt_tokens));
  auto run = [&](KvCacheDtype dtype) {
    BackendOptions bo;
    bo.device = Device::kCpu;
    bo.threads = 2;
    bo.kv_cache_dtype = dtype;
    const std::unique_ptr<Backend> backend = make_backend(model, bo);  // one model's weights at a time
    return greedy_run(*backend, ids, new_tokens);
  };
  const GreedyRun a = run(KvCacheDtype::kBf16), b = run(KvCacheDtype::kFp8);
  const size_t vocab = static_cast<size_t>(model.config.vocab_size);
  KvDtypeCompare r;
  double num = 0, den = 0;
  for (size_t p = 0; p < ids.size(); ++p) {
    std::span<const float> ra(&a.prompt_logits[p * vocab], vocab), rb(&b.prompt_logits[p * vocab], vocab);
    double pn = 0, pd = 0;
    for (size_t v = 0; v < vocab; ++v) {
      pn += double(ra[v] - rb[v]) * (ra[v] - rb[v]);
      pd += double(ra[v]) * ra[v];
    }
    num += pn;
    den += pd;
    const double rel = std::sqrt(pn / pd);
    r.position_rel_l2.push_back(rel);
    r.mean_position_rel_l2 += rel / static_cast<double>(ids.size());
    if (rel > r.worst_position_rel_l2) r.worst_position_rel_l2 = rel, r.worst_position = static_cast<int64_t>(p);
    const int32_t ta = argmax(ra), tb = argmax(rb);
    ++r.positions;
    if (ta == tb) {
      ++r.top1_agree;
      continue;
    }
    const double sigmas = margin_sigmas(ra, rb, ta, tb);
    r.worst_margin_sigmas = std::max(r.worst_margin_sigmas, sigmas);
    if (sigmas < kTieSigmas) ++r.near_ties;
    else std::printf("[fp8 kv vs bf16 kv] %s position %zu: bf16 %d, fp8 %d, margin %.1f sigma\n", preset.c_str(), p, ta, tb, sigmas);
  }
  r.rel_l2 = std::sqrt(num / den);
  r.greedy_tokens = new_tokens;
  while (r.greedy_prefix < new_tokens && a.tokens[r.greedy_prefix] == b.tokens[r.greedy_prefix]) ++r.greedy_prefix;
  for (int t = 0; t < new_tokens; ++t) r.greedy_equal += a.tokens[t] == b.tokens[t];
  if (r.greedy_prefix < new_tokens) {
    // Up to here both ran on the same tokens, so the rows that chose them are comparable.
    const auto& ra = a.step_rows[static_cast<size_t>(r.greedy_prefix)];
    const auto& rb = b.step_rows[static_cast<size_t>(r.greedy_prefix)];
    r.greedy_part_sigmas = margin_sigmas(ra, rb, a.tokens[r.greedy_prefix], b.tokens[r.greedy_prefix]);
  }
  std::printf("[fp8 kv vs bf16 kv] %s, %d positions: logits rel L2 %.2e (per position: mean %.2e, worst %.2e at %lld); "
              "top-1 agree %d, near-ties (< %.0f sigma) %d, other %d, largest margin at a disagreement %.1f sigma; "
              "greedy %d tokens: first %d identical, %d equal by position%s\n",
              preset.c_str(), r.positions, r.rel_l2, r.mean_position_rel_l2, r.worst_position_rel_l2,
              static_cast<long long>(r.worst_position), r.top1_agree, kTieSigmas, r.near_ties,
              r.positions - r.top1_agree - r.near_ties, r.worst_margin_sigmas, r.greedy_tokens, r.greedy_prefix,
              r.greedy_equal,
              r.greedy_prefix < new_tokens ? (", parting at a margin of " + std::to_string(r.greedy_part_sigmas) + " sigma").c_str() : "");
  // The per-position figures in eight runs of positions: whether the error grows with the context.
  std::string runs;
  const size_t per_run = (r.position_rel_l2.size() + 7) / 8;
  for (size_t p0 = 0; p0 < r.position_rel_l2.size(); p0 += per_run) {
    const size_t p1 = std::min(r.position_rel_l2.size(), p0 + per_run);
    double mean = 0, worst = 0;
    for (size_t p = p0; p < p1; ++p) mean += r.position_rel_l2[p] / static_cast<double>(p1 - p0), worst = std::max(worst, r.position_rel_l2[p]);
    char part[96];
    std::snprintf(part, sizeof part, "%s%zu-%zu %.2e/%.2e", runs.empty() ? "" : ", ", p0, p1 - 1, mean, worst);
    runs += part;
  }
  std::printf("[fp8 kv vs bf16 kv] %s logits rel L2 by position (mean/worst): %s\n", preset.c_str(), runs.c_str());
  return r;
}

// What FP8 KV costs the CPU reference, on random-weight models (their logits are nearly flat, so every
// disturbance shows in the top-1; a trained model's peaked logits hide most of it). The bounds are twice
// the figures measured when the test was written (in each test's comment), or the measured count less
// a margin, and are firm where nothing should vary: a top-1 or greedy disagreement must be a near-tie.
// The lower bound on the error says the rounding reaches the cache at all. Where greedy decoding
// parts is chaotic on flat logits (one near-tie decides it); that it parts only at a near-tie is firm.
void expect_kv_dtype_bounds(const KvDtypeCompare& r, double rel_l2, double worst_position, double top1_share) {
  EXPECT_LT(r.rel_l2, rel_l2);
  EXPECT_GT(r.rel_l2, rel_l2 / 20);
  EXPECT_LT(r.worst_position_rel_l2, worst_position);
  EXPECT_EQ(r.top1_agree + r.near_ties, r.positions) << "a top-1 disagreement that is not a near-tie";
  EXPECT_GE(r.top1_agree, static_cast<int>(top1_share * r.positions));
  if (r.greedy_prefix < r.greedy_tokens) {
    EXPECT_LT(r.greedy_part_sigmas, kTieSigmas) << "greedy parts where it is no near-tie";
  }
}

}  // namespace

// Tiny (2 layers, 2 KV heads of 64), 1,024 prompt positions, 16 greedy tokens. Measured (power-of-two
// scales): logits rel L2 3.68e-2 (per position: mean 3.66e-2, worst 5.24e-2); top-1 994 of 1024, the
// 30 others near-ties (at most 1.8 sigma); greedy 16 of 16 identical. About 35 s on two busy cores.
TEST(Fp8KvCache, CpuTinyFp8KvFollowsBf16Kv) {
  expect_kv_dtype_bounds(compare_kv_dtypes("tiny", 1024, 16), 0.06, 0.10, 0.95);
}

// The Qwen3-0.6B shape (28 layers, 8 KV heads of 128), 256 prompt positions, 16 greedy tokens. The
// error of 28 layers compounds: measured logits rel L2 5.52e-2 (per position: mean 5.52e-2, worst
// 6.56e-2; 6.0e-2 over the first 32 positions, 5.3e-2 over the last 32); top-1 198 of 256, the 58
// others near-ties (at most 2.1 sigma); greedy parts after 3 tokens, at a 0.7 sigma near-tie.
// About 2 minutes on two busy cores, most of it making and loading the model.
TEST(Fp8KvCache, Cpu0_6bFp8KvFollowsBf16Kv) {
  expect_kv_dtype_bounds(compare_kv_dtypes("0.6b", 256, 16), 0.11, 0.13, 0.7);
}

// The FP8 KV cache's scale (engine/fp8.h): the smallest power of two with amax <= 448 * scale, one byte
// (exponent + 127), 0 for an all-zero head; and the round trip's bound on random heads of every size.
TEST(Fp8KvCache, ScaleIsTheSmallestPowerOfTwoThatHoldsTheLargestValue) {
  EXPECT_EQ(fp8_kv_scale_byte(0.0f), 0);
  EXPECT_EQ(fp8_kv_scale(0), 0.0f);
  EXPECT_EQ(fp8_kv_scale_byte(448.0f), 127);              // 448 / 2^0 = 448: in range
  EXPECT_EQ(fp8_kv_scale_byte(std::nextafter(448.0f, 1e9f)), 128);  // a hair above: 2^1
  EXPECT_EQ(fp8_kv_scale_byte(224.0f), 126);              // 224 <= 448 * 2^-1
  EXPECT_EQ(fp8_kv_scale_byte(std::numeric_limits<float>::infinity()), 254);
  std::mt19937 rng(11);
  for (int i = 0; i < 20000; ++i) {
    const float amax = std::ldexp(std::uniform_real_distribution<float>(0.5f, 1.0f)(rng), static_cast<int>(rng() % 200) - 100);
    const uint8_t b = fp8_kv_scale_byte(amax);
    const double s = fp8_kv_scale(b);
    ASSERT_EQ(s, std::ldexp(1.0, b - 127));
    ASSERT_LE(amax, 448 * s) << amax;         // nothing saturates
    ASSERT_GT(amax, 448 * s / 2) << amax;     // and the next power down would not hold it
  }
  for (int n : {64, 128, 256}) {
    std::vector<float> v(static_cast<size_t>(n)), before;
    for (int trial = 0; trial < 200; ++trial) {
      const float mag = std::ldexp(1.0f, static_cast<int>(rng() % 40) - 20);
      for (float& x : v) x = std::normal_distribution<float>(0.0f, mag)(rng);
      before = v;
      const uint8_t b = fp8_kv_round_trip(v.data(), n);
      const double s = fp8_kv_scale(b);
      double amax = 0;
      for (float x : before) amax = std::max(amax, double(std::fabs(x)));
      for (int i = 0; i < n; ++i)
        ASSERT_LE(std::fabs(double(v[i]) - before[i]), std::max(std::fabs(double(before[i])) / 16, s / 1024))
            << "n " << n << " value " << before[i] << " scale " << s;
      ASSERT_LE(s, 2 * amax / 448);
    }
  }
  std::vector<float> zeros(128, 0.0f);
  EXPECT_EQ(fp8_kv_round_trip(zeros.data(), 128), 0);
  EXPECT_TRUE(std::all_of(zeros.begin(), zeros.end(), [](float x) { return x == 0.0f; }));
}
