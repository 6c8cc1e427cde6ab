// The ground floor (base/): UTF-8, hashes, random numbers, byte sizes, the check macro.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/error.h"
#include "base/hash.h"
#include "base/rng.h"
#include "base/sampling.h"
#include "base/utf8.h"

namespace abridge {
namespace {

TEST(Bytes, ParsesTheWaysSizesAreWritten) {
  constexpr uint64_t KiB = 1024, MiB = KiB * 1024, GiB = MiB * 1024, TiB = GiB * 1024;
  EXPECT_EQ(parse_bytes("0"), 0u);
  EXPECT_EQ(parse_bytes("8000000000"), 8000000000u);
  EXPECT_EQ(parse_bytes("17B"), 17u);
  EXPECT_EQ(parse_bytes("23GiB"), 23 * GiB);
  EXPECT_EQ(parse_bytes("23gib"), 23 * GiB);
  EXPECT_EQ(parse_bytes("23G"), 23 * GiB);
  EXPECT_EQ(parse_bytes("23 GiB"), 23 * GiB);
  EXPECT_EQ(parse_bytes("23GB"), 23000000000u);
  EXPECT_EQ(parse_bytes("500MiB"), 500 * MiB);
  EXPECT_EQ(parse_bytes("500M"), 500 * MiB);
  EXPECT_EQ(parse_bytes("64k"), 64 * KiB);
  EXPECT_EQ(parse_bytes("2TiB"), 2 * TiB);
  EXPECT_EQ(parse_bytes("1.5GiB"), GiB + GiB / 2);
  EXPECT_EQ(parse_bytes(".5K"), 512u);
  EXPECT_EQ(parse_bytes("1024T"), 1024 * TiB);
  for (const char* bad : {"", "G", "-1G", "1.2.3G", "12X", "12 GiBs", "12iB", "1e9", "  12", "12  G",
                          "99999999999999999999", "2048P", "1048577T"})
    EXPECT_FALSE(parse_bytes(bad).has_value()) << bad;
}

TEST(Bytes, FormatsForMessages) {
  EXPECT_EQ(format_bytes(0), "0 bytes");
  EXPECT_EQ(format_bytes(1), "1 byte");
  EXPECT_EQ(format_bytes(1023), "1023 bytes");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(uint64_t{23} << 30), "23.0 GiB");
  EXPECT_EQ(format_bytes(2 * 1000 * 1000), "1.9 MiB");
  EXPECT_EQ(format_bytes(uint64_t{8044936192}, 2), "7.49 GiB");  // `model info`: two decimals
  EXPECT_EQ(format_bytes(1536, 2), "1.50 KiB");
  // In MiB (file and memory bounds): bytes below 1 MiB, never GiB above it.
  constexpr auto kMiB = ByteUnit::kMiB;
  EXPECT_EQ(format_bytes(1, 1, kMiB), "1 byte");
  EXPECT_EQ(format_bytes(1536, 1, kMiB), "1536 bytes");
  EXPECT_EQ(format_bytes((1 << 20) - 1, 1, kMiB), "1048575 bytes");
  EXPECT_EQ(format_bytes(1 << 20, 1, kMiB), "1.0 MiB");
  EXPECT_EQ(format_bytes(2 * 1000 * 1000, 1, kMiB), "1.9 MiB");
  EXPECT_EQ(format_bytes(uint64_t{1} << 30, 1, kMiB), "1024.0 MiB");
  EXPECT_EQ(format_bytes(uint64_t{1} << 50, 1, kMiB), "1073741824.0 MiB");
}

TEST(Utf8, FindInvalid) {
  constexpr size_t npos = std::string_view::npos;
  using namespace std::string_view_literals;
  EXPECT_EQ(find_invalid_utf8(""), npos);
  EXPECT_EQ(find_invalid_utf8("plain ASCII, long enough for the 8-byte path"), npos);
  EXPECT_EQ(find_invalid_utf8("\xC3\xA9\xE4\xB8\xAD\xF0\x9F\xA6\x99"), npos);  // é 中 🦙
  EXPECT_EQ(find_invalid_utf8("\x00\x7F"sv), npos);
  EXPECT_EQ(find_invalid_utf8("\xEF\xBF\xBF\xF4\x8F\xBF\xBF\xED\x9F\xBF\xEE\x80\x80"), npos);  // U+FFFF U+10FFFF U+D7FF U+E000
  // Overlong forms.
  EXPECT_EQ(find_invalid_utf8("\xC0\xAF"), 0u);
  EXPECT_EQ(find_invalid_utf8("a\xC1\xBF"), 1u);
  EXPECT_EQ(find_invalid_utf8("ab\xE0\x80\xAF"), 2u);
  EXPECT_EQ(find_invalid_utf8("\xF0\x80\x80\xAF"), 0u);
  // Surrogates, and beyond U+10FFFF.
  EXPECT_EQ(find_invalid_utf8("\xED\xA0\x80"), 0u);
  EXPECT_EQ(find_invalid_utf8("x\xED\xBF\xBF"), 1u);
  EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);
  EXPECT_EQ(find_invalid_utf8("\xF5\x80\x80\x80"), 0u);
  EXPECT_EQ(find_invalid_utf8("\xFF"), 0u);
  // Truncated sequences and stray continuation bytes.
  EXPECT_EQ(find_invalid_utf8("abc\xE4\xB8"), 3u);
  EXPECT_EQ(find_invalid_utf8("\xF0\x9F\xA6"), 0u);
  EXPECT_EQ(find_invalid_utf8("\xE4\xB8" "a"), 0u);
  EXPECT_EQ(find_invalid_utf8("ab\x80"), 2u);
  EXPECT_EQ(find_invalid_utf8(std::string(20, 'a') + "\xBF" + std::string(20, 'b')), 20u);
  EXPECT_EQ(find_invalid_utf8(std::string(16, 'a') + "\xC3\xA9" + std::string(9, 'b') + "\xC3"), 27u);
}

// Readers that must go on past bad bytes: decode_utf8() takes one byte at a time (offsets stay exact),
// utf8_sequence() the maximal ill-formed subpart (what a lossy decoder replaces by one U+FFFD).
TEST(Utf8, DecodeAndSequence) {
  const std::string s = "a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\xA6\x99";
  std::u32string cps;
  for (size_t i = 0; i < s.size();) {
    const Utf8Char c = decode_utf8(s, i);
    ASSERT_TRUE(c.valid);
    cps += c.cp;
    i += c.len;
  }
  EXPECT_EQ(cps, U"a\u00E9\u4E2D\U0001F999");
  const Utf8Char bad = decode_utf8("\xE4\xB8" "a", 0);  // truncated: one byte, U+FFFD
  EXPECT_FALSE(bad.valid);
  EXPECT_EQ(bad.len, 1u);
  EXPECT_EQ(bad.cp, U'\uFFFD');
  auto seq = [](std::string_view t) { return utf8_sequence(reinterpret_cast<const unsigned char*>(t.data()), t.size()); };
  EXPECT_EQ(seq("\xE4\xB8" "a").kind, Utf8Kind::kInvalid);
  EXPECT_EQ(seq("\xE4\xB8" "a").len, 2u);  // E4 B8 is one maximal subpart
  EXPECT_EQ(seq("\xE4\xB8").kind, Utf8Kind::kIncomplete);
  EXPECT_EQ(seq("\xED\xA0\x80").len, 1u);  // a surrogate's lead byte alone
  EXPECT_EQ(seq("\xF0\x9F\xA6\x99").kind, Utf8Kind::kValid);
}

TEST(Utf8, AppendRoundTrips) {
  for (const char32_t cp : {U'\0', U'\x7F', U'\x80', U'\u07FF', U'\u0800', U'\uFFFF', U'\U00010000', U'\U0010FFFF'}) {
    std::string out;
    append_utf8(out, cp);
    EXPECT_EQ(find_invalid_utf8(out), std::string_view::npos);
    const Utf8Char c = decode_utf8(out, 0);
    EXPECT_TRUE(c.valid);
    EXPECT_EQ(c.cp, cp);
    EXPECT_EQ(c.len, out.size());
  }
}

TEST(Utf8, LossyConversions) {
  // One U+FFFD per bad byte: the valid text around them stays as it was.
  EXPECT_EQ(to_valid_utf8("ok\xFF\xFEok"), "ok\xEF\xBF\xBD\xEF\xBF\xBDok");
  EXPECT_EQ(to_valid_utf8("\xC3\xA9"), "\xC3\xA9");
  // A stream: an incomplete tail waits for its next bytes; a maximal subpart becomes one U+FFFD.
  std::string pending = "a\xE4\xB8";
  EXPECT_EQ(take_complete_utf8(pending, false), "a");
  EXPECT_EQ(pending, "\xE4\xB8");
  pending += "\xAD";
  EXPECT_EQ(take_complete_utf8(pending, false), "\xE4\xB8\xAD");
  pending = "\xE4\xB8" "b\xE4";
  EXPECT_EQ(take_complete_utf8(pending, true), "\xEF\xBF\xBD" "b\xEF\xBF\xBD");
  EXPECT_TRUE(pending.empty());
}

// The published FNV-1a test vectors (http://www.isthe.com/chongo/tech/comp/fnv/).
TEST(Hash, Fnv1aVectors) {
  EXPECT_EQ(fnv1a64(""), 0xCBF29CE484222325ull);
  EXPECT_EQ(fnv1a64("a"), 0xAF63DC4C8601EC8Cull);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171F73967E8ull);
  EXPECT_EQ(fnv1a32("a"), 0xE40C292Cu);
  EXPECT_EQ(fnv1a32("foobar"), 0xBF9CF968u);
  static_assert(fnv1a64("a") == 0xAF63DC4C8601EC8Cull);  // usable at compile time
}

// Against the reference algorithms (values from the authors' C code, re-run in Python): a change here
// would change every random checkpoint and every sampled token.
TEST(Rng, ReferenceValues) {
  uint64_t state = 0;
  EXPECT_EQ(splitmix64(state), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(splitmix64(state), 0x6E789E6AA1B965F4ull);
  Xoshiro256 x(42);
  EXPECT_EQ(x.next(), 0x15780B2E0C2EC716ull);
  EXPECT_EQ(x.next(), 0x6104D9866D113A7Eull);
  EXPECT_EQ(x.next(), 0xAE17533239E499A1ull);
  EXPECT_EQ(counter_uniform(42, 0), 6988387106960222.0 * 0x1.0p-53);
  EXPECT_EQ(counter_uniform(42, 1), 1390874072409861.0 * 0x1.0p-53);
  EXPECT_EQ(counter_uniform(0, 7), 192832954859715.0 * 0x1.0p-53);
}

TEST(Rng, CounterUniformIsUniform) {
  // 100,000 draws of one stream in ten bins: each within 4 sigma of 10,000.
  int bins[10] = {};
  for (uint64_t i = 0; i < 100000; ++i) {
    const double u = counter_uniform(7, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    ++bins[static_cast<int>(u * 10)];
  }
  for (const int b : bins) EXPECT_NEAR(b, 10000, 400);
}

// ---- the sampling rule (base/sampling.h)

TEST(SamplingRule, ExpIsCloseToLibm) {
  for (int i = 0; i <= 30000; ++i) {
    const float z = -static_cast<float>(i) * 0.001f;
    const double want = std::exp(static_cast<double>(z));
    EXPECT_NEAR(sampling::exp_nonpositive(z) / want, 1.0, 3e-7) << "z " << z;
  }
  EXPECT_EQ(sampling::exp_nonpositive(0.0f), 1.0f);
  // Weights: the maximum weighs 2^40; more than 30 temperatures below it, NaN and -inf weigh 0.
  EXPECT_EQ(sampling::token_weight(2.5f, 2.5f, 1.0f), uint64_t{1} << 40);
  EXPECT_EQ(sampling::token_weight(-28.0f, 2.5f, 1.0f), 0u);
  EXPECT_GT(sampling::token_weight(-20.0f, 2.5f, 1.0f), 0u);
  EXPECT_EQ(sampling::token_weight(NAN, 2.5f, 1.0f), 0u);
  EXPECT_EQ(sampling::token_weight(-INFINITY, 2.5f, 1.0f), 0u);
}

TEST(SamplingRule, GreedyIsTheFirstMaximumWithNaNIgnored) {
  const std::vector<float> a = {0.1f, 3.0f, NAN, 3.0f};
  EXPECT_EQ(sampling::sample_token(a.data(), 4, 0.0f, 1.0f, 1, 0), 1);
  const std::vector<float> b = {NAN, -1.0f, 2.0f};
  EXPECT_EQ(sampling::greedy_token(b.data(), 3), 2);
  const std::vector<float> none = {-INFINITY, NAN, -INFINITY};
  EXPECT_EQ(sampling::greedy_token(none.data(), 3), 0);
  // No token with a weight (no finite logit, or an infinite one): greedy at any temperature.
  EXPECT_EQ(sampling::sample_token(none.data(), 3, 1.0f, 0.9f, 5, 3), 0);
  const std::vector<float> inf = {0.0f, INFINITY, 1.0f};
  for (uint64_t c = 0; c < 20; ++c) EXPECT_EQ(sampling::sample_token(inf.data(), 3, 1.0f, 1.0f, 5, c), 1);
  EXPECT_THROW(sampling::sample_token(a.data(), 0, 1.0f, 1.0f, 1, 0), std::invalid_argument);
}

TEST(SamplingRule, TiesAtTheNucleusBoundaryAreAllKept) {
  // Three tokens tied at the top: top-p 0.1 keeps all three (the smallest set reaching 10% would be
  // one of them, but a tie has no order), and nothing else.
  std::vector<float> logits(100, -3.0f);
  logits[10] = logits[40] = logits[70] = 1.0f;
  std::map<int32_t, int> counts;
  for (uint64_t c = 0; c < 3000; ++c) ++counts[sampling::sample_token(logits.data(), 100, 1.0f, 0.1f, 9, c)];
  ASSERT_EQ(counts.size(), 3u);
  for (int32_t t : {10, 40, 70}) EXPECT_NEAR(counts[t], 1000, 120) << t;
}

// The rule against a plain double-precision reading of it: softmax at the temperature, the nucleus by
// sorting, the token whose interval of cumulative probability (in id order) holds u * kept. The two
// agree wherever the draw is not within rounding of an interval's edge.
TEST(SamplingRule, PicksTheTokenWhoseIntervalHoldsTheDraw) {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  for (const auto& [temperature, top_p] : std::vector<std::pair<float, float>>{{1.0f, 1.0f}, {0.7f, 0.9f}, {1.3f, 0.5f}}) {
    const int n = 700;
    std::vector<float> logits(n);
    for (float& x : logits) x = dist(rng);
    const double mx = *std::max_element(logits.begin(), logits.end());
    std::vector<double> p(n);
    double sum = 0;
    for (int i = 0; i < n; ++i) sum += p[i] = std::exp((logits[i] - mx) / temperature);
    std::vector<double> sorted = p;
    std::sort(sorted.rbegin(), sorted.rend());
    double theta = 0, mass = 0;
    for (double v : sorted) {
      mass += v;
      theta = v;
      if (top_p < 1.0f && mass >= top_p * sum) break;
    }
    double kept = 0;
    for (double v : p)
      if (v >= theta) kept += v;
    int skipped = 0;
    for (uint64_t c = 0; c < 2000; ++c) {
      const double target = counter_uniform(77, c) * kept;
      double acc = 0, edge = 1e300;
      int want = -1;
      for (int i = 0; i < n && want < 0; ++i) {
        if (p[i] < theta) continue;
        edge = std::min(edge, std::abs(target - acc));
        acc += p[i];
        edge = std::min(edge, std::abs(target - acc));
        if (target < acc) want = i;
      }
      if (edge < 1e-6 * kept) {  // the weights' float exponentials are within 3e-7 of the true ones
        ++skipped;
        continue;
      }
      EXPECT_EQ(sampling::sample_token(logits.data(), n, temperature, top_p, 77, c), want) << "counter " << c;
    }
    EXPECT_LT(skipped, 20) << "T " << temperature << " top_p " << top_p;
  }
}

TEST(Check, AbortsWithThePlaceAndTheValues) {
  const int blocks = 3;
  EXPECT_DEATH(ABRIDGE_CHECK(blocks < 2, "blocks " + std::to_string(blocks)),
               "internal error at .*test_base.cpp:[0-9]+: check failed: blocks < 2: blocks 3");
}

}  // namespace
}  // namespace abridge
