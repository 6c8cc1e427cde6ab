// The CUDA backend against its CPU twins. One table-driven test per op (seeded random inputs, odd
// lengths, tile edges, GQA ratios, paged layouts, windows and sinks), then the whole model against the
// CPU backend and against Hugging Face transformers. Tolerances are relative to what bf16 storage of
// activations costs: an op whose output is rounded to bf16 is within 2^-8 (0.4%) per element, so the
// relative L2 error of a correct kernel is ~2e-3; 1e-2 fails on any indexing or masking error.
// Without a GPU (or without CUDA in the build) every test here is skipped with a message.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <map>
#include <numeric>
#include <random>

#include "engine/generate.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine/serving.h"
#include "tests/model_fixture.h"

#ifdef ABRIDGE_HAVE_CUDA
#include <cuda_runtime.h>

#include <cublas_v2.h>

#include <cstring>
#include <set>

#include "base/sampling.h"
#include "engine/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/cuda_fp8.h"
#include "engine/fp8.h"
#include "engine/bench.h"
#include "engine/fp8_checkpoint.h"
#include "engine/memory_plan.h"
#include "engine/safetensors.h"
#include "engine/weights.h"
#include "kernels/fp8.h"
#include "kernels/ops.h"
#endif

using namespace abridge;
using namespace abridge::engine;
using abridge::testing::random_model_dir;

#ifndef ABRIDGE_HAVE_CUDA
TEST(Cuda, Skipped) { GTEST_SKIP() << "this build has no CUDA (nvcc was not found)"; }
#else

namespace {

bool have_gpu() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

#define REQUIRE_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device visible: GPU tests skipped"

template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)), cudaSuccess); }
  explicit Dev(const std::vector<T>& host) : Dev(host.size()) { upload(host); }
  ~Dev() { cudaFree(p); }
  void upload(const std::vector<T>& host) { cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }
};

using kernels::bf16;

std::vector<bf16> to_bf16(const std::vector<float>& f) {
  std::vector<bf16> b(f.size());
  for (size_t i = 0; i < f.size(); ++i) b[i] = __float2bfloat16(f[i]);
  return b;
}
std::vector<float> to_f32(const std::vector<bf16>& b) {
  std::vector<float> f(b.size());
  for (size_t i = 0; i < b.size(); ++i) f[i] = __bfloat162float(b[i]);
  return f;
}
// Values exactly representable in bf16, so the twins see identical inputs.
std::vector<float> random_bf16_values(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = __bfloat162float(__float2bfloat16(dist(rng)));
  return v;
}

double rel_l2(const std::vector<float>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

void sync_ok() {
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

constexpr double kBf16OutTolerance = 1e-2;
// Logits of a model with an FP8 KV cache against a bf16 one (random weights, tiny and 0.6b): each cached
// value within 1/16 of its head's largest.
constexpr double kFp8KvLogitsTolerance = 0.15;

// The current device's capabilities, as the backend passes them to the launchers (looked up once).
const kernels::DeviceCaps& caps() {
  static const kernels::DeviceCaps c = kernels::query_device_caps();
  return c;
}

}  // namespace

TEST(CudaOps, EmbedRmsNormSiluMul) {
  REQUIRE_GPU();
  std::mt19937 rng(1);
  for (int d : {64, 256, 1000, 1002, 2560}) {  // 1002: the kernels for widths not a multiple of 4
    for (int n : {1, 7, 33, 4099}) {  // 4099 rows: the warp-per-row RMSNorm of prefill chunks
      SCOPED_TRACE("d=" + std::to_string(d) + " n=" + std::to_string(n));
      // embed: exact.
      const int vocab = 97;
      const auto table = random_bf16_values(static_cast<size_t>(vocab) * d, rng);
      std::vector<int32_t> tokens(n);
      for (auto& t : tokens) t = static_cast<int32_t>(rng() % vocab);
      Dev<bf16> table_d(to_bf16(table));
      Dev<int32_t> tokens_d(tokens);
      Dev<float> x_d(static_cast<size_t>(n) * d);
      kernels::embed(tokens_d.p, table_d.p, x_d.p, n, d, nullptr);
      sync_ok();
      const auto x = x_d.download();
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < d; ++j) ASSERT_EQ(x[i * d + j], table[tokens[i] * d + j]);

      // rms_norm over selected rows.
      std::vector<float> xs = random_bf16_values(static_cast<size_t>(n) * d, rng, 3.0f);
      std::vector<float> w = random_bf16_values(d, rng);
      std::vector<int32_t> rows(n);
      for (int i = 0; i < n; ++i) rows[i] = (i * 5 + 3) % n;
      Dev<float> xs_d(xs), w_d(w);
      Dev<int32_t> rows_d(rows);
      Dev<bf16> y_d(static_cast<size_t>(n) * d);
      kernels::rms_norm(xs_d.p, rows_d.p, w_d.p, y_d.p, n, d, 1e-6f, caps(), nullptr);
      sync_ok();
      std::vector<double> ref(static_cast<size_t>(n) * d);
      for (int i = 0; i < n; ++i) {
        double ss = 0;
        for (int j = 0; j < d; ++j) ss += double(xs[rows[i] * d + j]) * xs[rows[i] * d + j];
        const double sc = 1.0 / std::sqrt(ss / d + 1e-6);
        for (int j = 0; j < d; ++j) ref[i * d + j] = w[j] * xs[rows[i] * d + j] * sc;
      }
      EXPECT_LT(rel_l2(to_f32(y_d.download()), ref), kBf16OutTolerance);

      // silu_mul.
      const auto gu = random_bf16_values(static_cast<size_t>(n) * 2 * d, rng, 2.0f);
      Dev<float> gu_d(gu);
      Dev<bf16> out_d(static_cast<size_t>(n) * d);
      kernels::silu_mul(gu_d.p, out_d.p, n, d, nullptr);
      sync_ok();
      std::vector<double> ref2(static_cast<size_t>(n) * d);
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < d; ++j) {
          const double g = gu[i * 2 * d + j], u = gu[i * 2 * d + d + j];
          ref2[i * d + j] = g / (1 + std::exp(-g)) * u;
        }
      EXPECT_LT(rel_l2(to_f32(out_d.download()), ref2), kBf16OutTolerance);
    }
  }
}

TEST(CudaOps, QkvNormRopeAndPagedWrite) {
  REQUIRE_GPU();
  std::mt19937 rng(2);
  struct Case { int n, heads, kv_heads, hd; };
  for (const Case& cs : {Case{1, 4, 2, 64}, Case{19, 32, 8, 128}, Case{5, 16, 16, 128}, Case{3, 4, 2, 32}}) {
    SCOPED_TRACE("n=" + std::to_string(cs.n) + " heads=" + std::to_string(cs.heads) + " hd=" + std::to_string(cs.hd));
    const int width = (cs.heads + 2 * cs.kv_heads) * cs.hd, half = cs.hd / 2, cache_rows = 3 * cs.n + 5;
    const auto qkv = random_bf16_values(static_cast<size_t>(cs.n) * width, rng, 2.0f);
    const auto qn = random_bf16_values(cs.hd, rng), kn = random_bf16_values(cs.hd, rng);
    std::vector<float> inv(half);
    for (int j = 0; j < half; ++j) inv[j] = static_cast<float>(1.0 / std::pow(5e6, 2.0 * j / cs.hd));
    std::vector<int32_t> pos(cs.n), rows(cs.n);
    for (int i = 0; i < cs.n; ++i) {
      pos[i] = static_cast<int32_t>(rng() % 262144);
      rows[i] = 3 * i + 2;
    }
    Dev<float> qkv_d(qkv), qn_d(qn), kn_d(kn), inv_d(inv);
    Dev<int32_t> pos_d(pos), rows_d(rows);
    Dev<bf16> q_d(static_cast<size_t>(cs.n) * cs.heads * cs.hd), k_d(static_cast<size_t>(cache_rows) * cs.kv_heads * cs.hd),
        v_d(static_cast<size_t>(cache_rows) * cs.kv_heads * cs.hd);
    kernels::QkvParams p{qkv_d.p, qn_d.p, kn_d.p, inv_d.p, pos_d.p, rows_d.p, q_d.p, k_d.p, v_d.p,
                         cs.n, cs.heads, cs.kv_heads, cs.hd, 1e-6f};
    kernels::qkv_post(p, nullptr);
    sync_ok();
    const auto q = to_f32(q_d.download()), k = to_f32(k_d.download()), v = to_f32(v_d.download());
    std::vector<float> got;
    std::vector<double> ref;
    for (int i = 0; i < cs.n; ++i) {
      for (int h = 0; h < cs.heads + 2 * cs.kv_heads; ++h) {
        const float* src = &qkv[static_cast<size_t>(i) * width + h * cs.hd];
        std::vector<double> r(src, src + cs.hd);
        const bool is_v = h >= cs.heads + cs.kv_heads, is_q = h < cs.heads;
        if (!is_v) {
          double ss = 0;
          for (double e : r) ss += e * e;
          const double sc = 1 / std::sqrt(ss / cs.hd + 1e-6);
          const auto& w = is_q ? qn : kn;
          for (int j = 0; j < cs.hd; ++j) r[j] = w[j] * r[j] * sc;
          for (int j = 0; j < half; ++j) {
            const double ang = static_cast<float>(pos[i]) * inv[j];
            const double a = r[j], b = r[j + half];
            r[j] = a * std::cos(ang) - b * std::sin(ang);
            r[j + half] = b * std::cos(ang) + a * std::sin(ang);
          }
        }
        const float* out = is_q ? &q[(static_cast<size_t>(i) * cs.heads + h) * cs.hd]
                         : is_v ? &v[(static_cast<size_t>(rows[i]) * cs.kv_heads + (h - cs.heads - cs.kv_heads)) * cs.hd]
                                : &k[(static_cast<size_t>(rows[i]) * cs.kv_heads + (h - cs.heads)) * cs.hd];
        got.insert(got.end(), out, out + cs.hd);
        ref.insert(ref.end(), r.begin(), r.end());
      }
    }
    EXPECT_LT(rel_l2(got, ref), kBf16OutTolerance);

    // The FP8 cache (kernels/ops.h QkvParams): V is stored from the very floats of qkv, so its codes and
    // scales are engine::fp8_kv_round_trip's bit for bit; K comes from the kernel's own norm and RoPE,
    // so each value read back is checked against the stated bound around the double reference.
    Dev<uint8_t> k8_d(static_cast<size_t>(cache_rows) * cs.kv_heads * cs.hd), v8_d(k8_d.n);
    const int ld = static_cast<int>(kv_scale_row_bytes(cs.kv_heads));
    Dev<uint8_t> ks_d(static_cast<size_t>(cache_rows) * ld), vs_d(ks_d.n);
    p.k_fp8 = k8_d.p, p.v_fp8 = v8_d.p, p.k_scale = ks_d.p, p.v_scale = vs_d.p;
    if (cs.hd != 64 && cs.hd != 128 && cs.hd != 256) {
      EXPECT_THROW(kernels::qkv_post(p, nullptr), std::invalid_argument);
      continue;
    }
    kernels::qkv_post(p, nullptr);
    sync_ok();
    const auto k8 = k8_d.download(), v8 = v8_d.download();
    const auto ks = ks_d.download(), vs = vs_d.download();
    int v_exact = 0, k_checked = 0;
    double k_worst = 0;  // the largest |error| / bound among K values
    for (int i = 0; i < cs.n; ++i) {
      for (int g = 0; g < cs.kv_heads; ++g) {
        const size_t head = static_cast<size_t>(rows[i]) * cs.kv_heads + g, sc = static_cast<size_t>(rows[i]) * ld + g;
        std::vector<float> vv(&qkv[static_cast<size_t>(i) * width + (cs.heads + cs.kv_heads + g) * cs.hd],
                              &qkv[static_cast<size_t>(i) * width + (cs.heads + cs.kv_heads + g + 1) * cs.hd]);
        const uint8_t byte = fp8_kv_round_trip(vv.data(), cs.hd);
        const float s = fp8_kv_scale(byte);
        ASSERT_EQ(vs[sc], byte) << "token " << i << " V head " << g;
        for (int j = 0; j < cs.hd; ++j) {
          ASSERT_EQ(e4m3_to_f32(v8[head * cs.hd + j]) * s, vv[j]) << "token " << i << " V head " << g << " value " << j;
          ++v_exact;
        }
        // K: the double reference of this head (its place in `ref` follows the loop above).
        const size_t at = (static_cast<size_t>(i) * (cs.heads + 2 * cs.kv_heads) + cs.heads + g) * cs.hd;
        double amax = 0;
        for (int j = 0; j < cs.hd; ++j) amax = std::max(amax, std::fabs(ref[at + j]));
        // The smallest power of two with amax <= 448 scale (or the next one down, where the kernel's
        // float amax fell just under a power of two that the double one passes).
        const double k_scale = fp8_kv_scale(ks[sc]);
        EXPECT_GE(k_scale * 448, amax * (1 - 1e-5)) << "token " << i << " K head " << g;
        EXPECT_LT(k_scale * 224, amax * (1 + 1e-5)) << "token " << i << " K head " << g;
        for (int j = 0; j < cs.hd; ++j) {
          const double got_k = double(e4m3_to_f32(k8[head * cs.hd + j])) * k_scale;
          // Stated bound max(|v| / 16, scale * 2^-10), plus the float32 arithmetic's own 1e-5 of amax.
          const double bound = std::max(std::fabs(ref[at + j]) / 16, k_scale / 1024.0) + 1e-5 * amax;
          k_worst = std::max(k_worst, std::fabs(got_k - ref[at + j]) / bound);
          ++k_checked;
        }
      }
    }
    EXPECT_LE(k_worst, 1.0);
    std::printf("[qkv fp8 cache] n %d, heads %d/%d, hd %d: V %d values bit for bit, K %d values, worst |error| / bound %.2f\n",
                cs.n, cs.heads, cs.kv_heads, cs.hd, v_exact, k_checked, k_worst);
  }
}

TEST(CudaOps, PagedAttention) {
  REQUIRE_GPU();
  std::mt19937 rng(3);
  struct Case {
    int heads, kv_heads, hd, block_size;
    std::vector<int> lengths;  // per sequence: cached + new tokens; the last `fresh` are queries
    int fresh;
    int64_t window, sinks, layer_window;
  };
  const std::vector<Case> cases = {
      {4, 2, 64, 16, {1, 17, 300}, 1, 0, 0, 0},            // decode, GQA 2
      {32, 8, 128, 16, {1000, 33}, 7, 0, 0, 0},            // prefill chunks, GQA 4
      {16, 16, 128, 32, {5000}, 1, 0, 0, 0},               // long decode: many key splits, MHA
      {8, 1, 128, 16, {257, 64}, 3, 0, 0, 0},              // GQA 8 (MQA), tile edges
      {32, 8, 128, 16, {3000, 200}, 5, 512, 4, 0},         // engine window with sinks
      {4, 2, 64, 16, {400}, 9, 0, 0, 100},                 // the model's own sliding window
      {32, 8, 128, 16, {700, 130}, 100, 0, 0, 0},          // prefill tiles: full and partial (100 = 64 + 36)
      {16, 8, 128, 16, {64}, 64, 0, 0, 0},                 // a whole prompt in one tile, from position 0
      {4, 2, 64, 16, {2000}, 200, 0, 0, 0},                // head_dim 64 tiles, long context
      {32, 8, 128, 16, {3000}, 150, 512, 4, 0},            // tiles with window and sinks
      {4, 2, 64, 16, {1000}, 77, 0, 0, 100},               // tiles with the model's window
      {32, 8, 128, 16, {300, 40, 2}, 40, 0, 0, 0},         // a mixed batch: tiles, a 40-run, singles
      {16, 8, 128, 16, {100}, 100, 0, 0, 0},               // one partial 128-tile from position 0
      {32, 8, 128, 16, {129, 1300}, 129, 0, 0, 0},         // 128 + 1 queries; a long prefix, 128-key edges
      {32, 8, 128, 16, {2100}, 300, 1000, 16, 0},          // 128-tiles with window and sinks past one tile
      {32, 1, 128, 16, {600, 90}, 2, 0, 0, 0},             // GQA 32: the split-key decode kernel
  };
  for (const Case& cs : cases) {
    SCOPED_TRACE("heads=" + std::to_string(cs.heads) + "/" + std::to_string(cs.kv_heads) + " hd=" +
                 std::to_string(cs.hd) + " window=" + std::to_string(cs.window));
    const int kvd = cs.kv_heads * cs.hd, bs = cs.block_size;
    int total_blocks = 0;
    for (int len : cs.lengths) total_blocks += (len + bs - 1) / bs;
    total_blocks += 3;
    // A shuffled pool: each sequence's blocks are scattered.
    std::vector<int32_t> perm(total_blocks);
    for (int i = 0; i < total_blocks; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    const auto kc = random_bf16_values(static_cast<size_t>(total_blocks) * bs * kvd, rng);
    const auto vc = random_bf16_values(static_cast<size_t>(total_blocks) * bs * kvd, rng);
    std::vector<int32_t> tables, offsets, positions;
    std::vector<std::vector<int32_t>> seq_tables;
    int used = 0, max_pos = 0;
    for (int len : cs.lengths) {
      const int nb = (len + bs - 1) / bs;
      std::vector<int32_t> t(perm.begin() + used, perm.begin() + used + nb);
      used += nb;
      const int offset = static_cast<int>(tables.size());
      tables.insert(tables.end(), t.begin(), t.end());
      seq_tables.push_back(t);
      for (int p = std::max(0, len - cs.fresh); p < len; ++p) {
        positions.push_back(p);
        offsets.push_back(offset);
        max_pos = std::max(max_pos, p);
      }
    }
    const int n = static_cast<int>(positions.size());
    const auto q = random_bf16_values(static_cast<size_t>(n) * cs.heads * cs.hd, rng);
    Dev<bf16> q_d(to_bf16(q)), k_d(to_bf16(kc)), v_d(to_bf16(vc)), out_d(static_cast<size_t>(n) * cs.heads * cs.hd);
    Dev<int32_t> pos_d(positions), off_d(offsets), tab_d(tables);
    const float scale = 1.0f / std::sqrt(static_cast<float>(cs.hd));
    // CPU twin, in double, with the span rule of AttentionOptions, over the cache values `kv` and `vv`.
    const AttentionOptions opt{cs.window, cs.sinks};
    auto reference = [&](const std::vector<float>& kv, const std::vector<float>& vv) {
      std::vector<double> ref(static_cast<size_t>(n) * cs.heads * cs.hd);
      for (int i = 0; i < n; ++i) {
        const int seq = [&] { int o = 0, s = 0; for (const auto& t : seq_tables) { if (o == offsets[i]) return s; o += static_cast<int>(t.size()); ++s; } return -1; }();
        const auto span = opt.span(positions[i], cs.layer_window);
        std::vector<int> keys;
        for (int j = 0; j < span.sink_end; ++j) keys.push_back(j);
        for (int j = static_cast<int>(span.begin); j <= positions[i]; ++j) keys.push_back(j);
        for (int h = 0; h < cs.heads; ++h) {
          const int kvh = h / (cs.heads / cs.kv_heads);
          std::vector<double> s(keys.size());
          double mx = -INFINITY;
          for (size_t kk = 0; kk < keys.size(); ++kk) {
            const int row = seq_tables[seq][keys[kk] / bs] * bs + keys[kk] % bs;
            double dot = 0;
            for (int e = 0; e < cs.hd; ++e)
              dot += double(q[(static_cast<size_t>(i) * cs.heads + h) * cs.hd + e]) * kv[(static_cast<size_t>(row) * cs.kv_heads + kvh) * cs.hd + e];
            s[kk] = dot * scale;
            mx = std::max(mx, s[kk]);
          }
          double sum = 0;
          for (double& e : s) sum += (e = std::exp(e - mx));
          for (int e = 0; e < cs.hd; ++e) {
            double acc = 0;
            for (size_t kk = 0; kk < keys.size(); ++kk) {
              const int row = seq_tables[seq][keys[kk] / bs] * bs + keys[kk] % bs;
              acc += s[kk] / sum * vv[(static_cast<size_t>(row) * cs.kv_heads + kvh) * cs.hd + e];
            }
            ref[(static_cast<size_t>(i) * cs.heads + h) * cs.hd + e] = acc;
          }
        }
      }
      return ref;
    };
    // The FP8 cache of the same values (kernels/ops.h): codes and a scale per row and KV head, and the
    // values it holds, decoded on the host (engine/fp8.h), which its reference reads.
    const size_t cache_rows = static_cast<size_t>(total_blocks) * bs, heads = cache_rows * cs.kv_heads;
    const int ld = static_cast<int>(kv_scale_row_bytes(cs.kv_heads));
    std::vector<uint8_t> k8(heads * cs.hd), v8(heads * cs.hd), ks(cache_rows * ld, 0xEE), vs(cache_rows * ld, 0xEE);
    std::vector<float> k_held(kc), v_held(vc);
    // Magnitudes spread over 2^-8..2^8 by head so that a wrong scale index shows, some past the bf16
    // fast path's 2^7 limit.
    for (size_t hh = 0; hh < heads; ++hh) {
      const float spread = std::ldexp(1.0f, static_cast<int>(hh * 7 % 17) - 8);
      for (int e = 0; e < cs.hd; ++e) k_held[hh * cs.hd + e] *= spread, v_held[hh * cs.hd + e] *= spread * 2;
    }
    const std::vector<float> k_exact(k_held), v_exact(v_held);
    for (size_t hh = 0; hh < heads; ++hh) {
      const size_t sc = hh / cs.kv_heads * ld + hh % cs.kv_heads;
      for (auto [held, codes, scales] : {std::tuple{&k_held, &k8, &ks}, std::tuple{&v_held, &v8, &vs}}) {
        float* x = held->data() + hh * cs.hd;
        std::vector<float> before(x, x + cs.hd);
        (*scales)[sc] = fp8_kv_round_trip(x, cs.hd);
        const float s = fp8_kv_scale((*scales)[sc]);
        for (int e = 0; e < cs.hd; ++e) (*codes)[hh * cs.hd + e] = s > 0 ? f32_to_e4m3(before[e] / s) : 0;
      }
    }
    Dev<uint8_t> k8_d(k8), v8_d(v8), ks_d(ks), vs_d(vs);
    for (const bool fp8 : {false, true}) {
      if (fp8 && cs.hd != 64 && cs.hd != 128) continue;
      const std::vector<double> ref = fp8 ? reference(k_held, v_held) : reference(kc, vc);
      if (fp8) {  // what the FP8 rounding itself costs here: the reference over the unrounded values
        const auto exact = reference(k_exact, v_exact);
        std::vector<float> held(ref.begin(), ref.end());
        std::printf("[attention] fp8 cache, heads %d/%d hd %d: the rounded cache's reference against the unrounded one: rel %.2e\n",
                    cs.heads, cs.kv_heads, cs.hd, rel_l2(held, exact));
      }
      // Both prefill kernels where the device has two: 64-query mma.sync tiles everywhere, and the
      // tile size attention_tile_queries() picks here (128-query wgmma tiles on compute capability 9.0,
      // bf16 caches only).
      std::vector<int> tile_sizes = {kernels::kAttentionTileQueries};
      if (kernels::attention_tile_queries(cs.hd, caps(), fp8) != kernels::kAttentionTileQueries)
        tile_sizes.push_back(kernels::attention_tile_queries(cs.hd, caps(), fp8));
      for (int tile_queries : tile_sizes) {
        std::vector<int32_t> tiles(4 * n), singles(n);
        int n_tiles = 0, n_singles = 0;
        kernels::partition_attention(positions.data(), offsets.data(), n, cs.hd, tile_queries, tiles.data(), &n_tiles,
                                     singles.data(), &n_singles);
        Dev<int32_t> tiles_d(tiles), singles_d(singles);
        for (int max_splits : {1, 64}) {
          Dev<float> ws(kernels::attention_workspace_floats(n, cs.heads, cs.hd, max_splits));
          const int n_items = kernels::decode_item_count(n_singles, cs.kv_heads, cs.hd, std::max(n_singles, 1) * max_splits, caps());
          std::vector<int32_t> plan(static_cast<size_t>(3 * n_items + n_singles + 1));
          kernels::plan_decode_items(positions.data(), singles.data(), n_singles, n_items, plan.data(), plan.data() + 3 * n_items);
          Dev<int32_t> plan_d(plan);
          kernels::AttentionParams p{};
          p.q = q_d.p, p.positions = pos_d.p, p.table_offsets = off_d.p;
          if (fp8) p.k_fp8 = k8_d.p, p.v_fp8 = v8_d.p, p.k_scale = ks_d.p, p.v_scale = vs_d.p;
          else p.k_cache = k_d.p, p.v_cache = v_d.p;
          p.block_tables = tab_d.p, p.out = out_d.p, p.workspace = ws.p;
          p.n = n, p.n_heads = cs.heads, p.n_kv_heads = cs.kv_heads, p.head_dim = cs.hd, p.block_size = bs;
          p.cache_rows = static_cast<int64_t>(total_blocks) * bs;
          p.window = cs.window, p.sinks = cs.sinks, p.layer_window = cs.layer_window, p.max_position = max_pos;
          p.scale = scale;
          p.tiles = tiles_d.p, p.n_tiles = n_tiles, p.singles = singles_d.p, p.n_singles = n_singles;
          p.tile_queries = tile_queries;
          p.decode_items = plan_d.p, p.decode_first = plan_d.p + 3 * n_items, p.n_decode_items = n_items;
          ASSERT_EQ(cudaMemset(out_d.p, 0xFF, out_d.n * sizeof(bf16)), cudaSuccess);  // NaN: every output is written
          kernels::attention(p, max_splits, caps(), nullptr);
          sync_ok();
          const auto out = to_f32(out_d.download());
          const double err = rel_l2(out, ref);
          EXPECT_LT(err, kBf16OutTolerance) << "max_splits=" << max_splits << " tile_queries=" << tile_queries
                                            << (fp8 ? " fp8 cache" : " bf16 cache");
          std::printf("[attention] %s cache, heads %d/%d hd %d, %zu seqs, %d queries (%d tiles of <= %d, %d single), window %ld+%ld, layer window %ld, splits<=%d: rel err %.2e\n",
                      fp8 ? "fp8" : "bf16", cs.heads, cs.kv_heads, cs.hd, cs.lengths.size(), n, n_tiles, tile_queries,
                      n_singles, static_cast<long>(cs.window), static_cast<long>(cs.sinks), static_cast<long>(cs.layer_window),
                      max_splits, err);
        }
      }
    }
  }
}

// The decode work plan (host code, runs without a GPU): every token's keys covered once by its own
// runs of whole 64-key tiles, at least one run each, no more runs than the grid, and a long context
// beside short ones cut into runs about as long as everyone else's (not into the same number of runs).
TEST(CudaOps, DecodeItemsCoverEachTokenOnceInRunsOfAboutEqualLength) {
  struct Case {
    std::vector<int32_t> positions;
    int n_items;
  };
  const std::vector<Case> cases = {
      {{69999, 7999, 3999}, 100},       // one long context among short ones
      {{4095}, 34},                     // batch 1
      {{0, 1, 63, 64, 65}, 5},          // one item each: the grid is the tokens
      {{200000, 100, 300000}, 600},     // a token's runs are capped at kMaxAttentionSplits
      {{2047, 2047, 2047, 2047}, 12},
  };
  for (const Case& cs : cases) {
    const int n = static_cast<int>(cs.positions.size());
    std::vector<int32_t> singles(n);
    std::iota(singles.begin(), singles.end(), 0);
    std::vector<int32_t> items(3 * cs.n_items, 99), first(n + 1, -7);
    kernels::plan_decode_items(cs.positions.data(), singles.data(), n, cs.n_items, items.data(), first.data());
    int64_t total_tiles = 0;
    for (int32_t p : cs.positions) total_tiles += (p + 64) / 64;
    const int64_t chunk = cs.n_items > n ? (total_tiles + cs.n_items - n - 1) / (cs.n_items - n) : INT64_MAX;
    EXPECT_EQ(first[0], 0);
    EXPECT_LE(first[n], cs.n_items);
    for (int c = 0; c < n; ++c) {
      const int count = first[c + 1] - first[c];
      ASSERT_GE(count, 1);
      ASSERT_LE(count, kernels::kMaxAttentionSplits);
      int64_t next = 0;
      for (int j = first[c]; j < first[c + 1]; ++j) {
        EXPECT_EQ(items[3 * j], c);
        EXPECT_EQ(items[3 * j + 1], next) << "runs of token " << c << " leave a gap or overlap";
        EXPECT_EQ(items[3 * j + 1] % 64, 0);
        EXPECT_GT(items[3 * j + 2], items[3 * j + 1]) << "empty run";
        const int64_t tiles = (items[3 * j + 2] - items[3 * j + 1] + 63) / 64;
        if (count < kernels::kMaxAttentionSplits) {
          EXPECT_LE(tiles, chunk) << "token " << c << " run " << j - first[c];
        }
        next = items[3 * j + 2];
      }
      EXPECT_EQ(next, cs.positions[c] + 1) << "token " << c << "'s keys are not all covered";
    }
    for (int j = first[n]; j < cs.n_items; ++j) EXPECT_EQ(items[3 * j], -1);
  }
}

TEST(CudaOps, DecodeGemv) {
  REQUIRE_GPU();
  std::mt19937 rng(5);
  // Shapes give one warp per row (6144 rows), rows split between 2 and 4 warps (2560, 37, 13 rows)
  // and uneven splits of a row (k = 1000: 125 pieces of 8).
  EXPECT_FALSE(kernels::gemv_supports(kernels::kGemvMaxRows + 1, 2560));
  EXPECT_FALSE(kernels::gemv_supports(1, 2564));
  for (int n = 1; n <= kernels::kGemvMaxRows; ++n) {
    for (auto [k, m] : {std::pair{2560, 6144}, std::pair{1024, 13}, std::pair{9728, 2560}, std::pair{1000, 37}}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " k=" + std::to_string(k) + " m=" + std::to_string(m));
      ASSERT_TRUE(kernels::gemv_supports(n, k));
      const auto x = random_bf16_values(static_cast<size_t>(n) * k, rng);
      const auto w = random_bf16_values(static_cast<size_t>(m) * k, rng, 0.05f);
      const auto y0 = random_bf16_values(static_cast<size_t>(n) * m, rng);
      Dev<bf16> x_d(to_bf16(x)), w_d(to_bf16(w));
      for (float beta : {0.0f, 1.0f}) {
        Dev<float> y_d(y0);
        kernels::gemv_bf16(x_d.p, w_d.p, y_d.p, n, k, m, beta, caps(), nullptr);
        sync_ok();
        std::vector<double> ref(static_cast<size_t>(n) * m);
        for (int t = 0; t < n; ++t)
          for (int j = 0; j < m; ++j) {
            double acc = beta * y0[static_cast<size_t>(t) * m + j];
            for (int e = 0; e < k; ++e) acc += double(x[static_cast<size_t>(t) * k + e]) * w[static_cast<size_t>(j) * k + e];
            ref[static_cast<size_t>(t) * m + j] = acc;
          }
        EXPECT_LT(rel_l2(y_d.download(), ref), 1e-5) << "beta=" << beta;  // float32 accumulation
      }
    }
  }
}

// The decode GEMV that RMS-normalizes its float input rows itself, and the one that also applies
// SwiGLU to a gate/up pair of rows, against double-precision references. The normalized inputs are
// rounded to bf16 in both (as rms_norm() does); where the float and double normalizers straddle a
// rounding edge one input differs by one bf16 step, hence 1e-3 instead of 1e-5 for the products.
TEST(CudaOps, DecodeGemvNormAndSwiGlu) {
  REQUIRE_GPU();
  std::mt19937 rng(6);
  const float eps = 1e-6f;
  for (int n = 1; n <= kernels::kGemvMaxRows; ++n) {
    for (auto [k, m] : {std::pair{2560, 6144}, std::pair{2560, 2560}, std::pair{1000, 13}}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " k=" + std::to_string(k) + " m=" + std::to_string(m));
      ASSERT_TRUE(kernels::gemv_can_normalize(n, k));
      const auto x = random_bf16_values(static_cast<size_t>(n) * k, rng, 3.0f);
      const auto g = random_bf16_values(k, rng);
      const auto w = random_bf16_values(static_cast<size_t>(2 * m) * k, rng, 0.05f);  // gate rows, then up rows
      std::vector<float> h(static_cast<size_t>(n) * k);
      for (int t = 0; t < n; ++t) {
        double ss = 0;
        for (int e = 0; e < k; ++e) ss += double(x[t * k + e]) * x[t * k + e];
        const double sc = 1.0 / std::sqrt(ss / k + eps);
        for (int e = 0; e < k; ++e) h[t * k + e] = __bfloat162float(__float2bfloat16(float(g[e] * (x[t * k + e] * sc))));
      }
      auto dot = [&](int t, int row) {
        double acc = 0;
        for (int e = 0; e < k; ++e) acc += double(h[static_cast<size_t>(t) * k + e]) * w[static_cast<size_t>(row) * k + e];
        return acc;
      };
      Dev<float> x_d(x), g_d(g);
      Dev<bf16> w_d(to_bf16(w));
      kernels::GemvParams p;
      p.x_f32 = x_d.p, p.norm_w = g_d.p, p.eps = eps, p.w = w_d.p, p.n = n, p.k = k, p.m = m;

      Dev<float> y_d(static_cast<size_t>(n) * m);
      p.y = y_d.p;
      kernels::gemv(p, caps(), nullptr);
      sync_ok();
      std::vector<double> ref(static_cast<size_t>(n) * m);
      for (int t = 0; t < n; ++t)
        for (int j = 0; j < m; ++j) ref[static_cast<size_t>(t) * m + j] = dot(t, j);
      EXPECT_LT(rel_l2(y_d.download(), ref), 1e-3) << "normalized input";

      Dev<bf16> act_d(static_cast<size_t>(n) * m);
      ASSERT_EQ(cudaMemset(act_d.p, 0xFF, act_d.n * sizeof(bf16)), cudaSuccess);  // NaN: every output is written
      p.y = nullptr, p.act = act_d.p;
      kernels::gemv(p, caps(), nullptr);
      sync_ok();
      for (int t = 0; t < n; ++t)
        for (int j = 0; j < m; ++j) {
          const double gate = dot(t, j), up = dot(t, m + j);
          ref[static_cast<size_t>(t) * m + j] = gate / (1 + std::exp(-gate)) * up;
        }
      EXPECT_LT(rel_l2(to_f32(act_d.download()), ref), kBf16OutTolerance) << "SwiGLU";
    }
  }
}

TEST(CudaOps, Sampling) {
  REQUIRE_GPU();
  std::mt19937 rng(4);
  const int vocab = 151936;
  // Greedy: the first maximum below the limit, against the CPU.
  {
    const int rows = 16;
    std::vector<float> logits(static_cast<size_t>(rows) * vocab);
    std::normal_distribution<float> dist(0, 3);
    for (auto& x : logits) x = dist(rng);
    std::vector<kernels::SampleRow> how(rows);
    for (int r = 0; r < rows; ++r) {
      how[r] = {0.0f, 1.0f, 1, 0, r % 2 ? 151669 : 0, 0};
      logits[static_cast<size_t>(r) * vocab + vocab - 1] = 100;  // a padding id wins unless limited
      logits[static_cast<size_t>(r) * vocab + 1000 + r] = 50;    // the best real token, twice
      logits[static_cast<size_t>(r) * vocab + 2000 + r] = 50;
    }
    Dev<float> logits_d(logits);
    Dev<kernels::SampleRow> how_d(how);
    Dev<int32_t> out_d(rows);
    kernels::sample(logits_d.p, vocab, how_d.p, rows, out_d.p, nullptr);
    sync_ok();
    const auto out = out_d.download();
    for (int r = 0; r < rows; ++r) EXPECT_EQ(out[r], r % 2 ? 1000 + r : vocab - 1) << "row " << r;
  }
  // Temperature and top-p: the nucleus, the frequencies, and the same draw for the same counter.
  auto draw = [&](float temperature, float top_p, int n) {
    std::vector<float> row(vocab, -30.0f);
    row[5] = std::log(0.5f), row[7] = std::log(0.3f), row[9] = std::log(0.15f);
    std::vector<float> logits;
    std::vector<kernels::SampleRow> how;
    for (int i = 0; i < n; ++i) {
      logits.insert(logits.end(), row.begin(), row.end());
      how.push_back({temperature, top_p, 42, static_cast<uint64_t>(i), 0, 0});
    }
    Dev<float> logits_d(logits);
    Dev<kernels::SampleRow> how_d(how);
    Dev<int32_t> out_d(n);
    kernels::sample(logits_d.p, vocab, how_d.p, n, out_d.p, nullptr);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    return out_d.download();
  };
  const int n = 2000;
  const auto nucleus = draw(1.0f, 0.7f, n);  // 0.5 < 0.7 <= 0.5 + 0.3: tokens 5 and 7 only, 5:3
  int c5 = 0;
  for (int32_t t : nucleus) {
    ASSERT_TRUE(t == 5 || t == 7) << t;
    c5 += t == 5;
  }
  EXPECT_NEAR(c5 / double(n), 0.625, 0.04);
  const auto all = draw(1.0f, 1.0f, n);
  std::map<int32_t, int> counts;
  for (int32_t t : all) ++counts[t];
  EXPECT_NEAR(counts[5] / double(n), 0.5 / 0.95, 0.04);
  EXPECT_NEAR(counts[7] / double(n), 0.3 / 0.95, 0.04);
  EXPECT_NEAR(counts[9] / double(n), 0.15 / 0.95, 0.04);
  // A low temperature sharpens: at T = 0.1 the mode has 1 / (1 + 0.6^10 + 0.3^10) = 99.4%.
  const auto sharp = draw(0.1f, 1.0f, 2000);
  EXPECT_NEAR(std::count(sharp.begin(), sharp.end(), 5) / 2000.0, 0.994, 0.006);
  EXPECT_EQ(draw(1.0f, 1.0f, n), all);  // (seed, counter) fixes every draw
}

// The device sampler against the host rule (base/sampling.h), token for token: the same logits, seed
// and counter give the same token on both, whatever the temperature, top-p, vocabulary limit, logit
// scale, masked (-inf) ids, NaN logits or ties.
TEST(CudaOps, SamplingMatchesTheHostRuleTokenForToken) {
  REQUIRE_GPU();
  std::mt19937 rng(21);
  const float temperatures[] = {0.0f, 0.3f, 0.7f, 1.0f, 1.5f};
  const float top_ps[] = {1.0f, 0.95f, 0.8f, 0.5f, 0.1f};
  const float scales[] = {1.0f, 3.0f, 8.0f};
  int compared = 0, non_greedy = 0;
  for (const int vocab : {151936, 32007, 1000}) {
    const int rows = 100;
    for (int round = 0; round < 3; ++round) {
      std::vector<float> logits(static_cast<size_t>(rows) * vocab);
      std::vector<kernels::SampleRow> how(rows);
      for (int r = 0; r < rows; ++r) {
        float* row = logits.data() + static_cast<size_t>(r) * vocab;
        std::normal_distribution<float> dist(0.0f, scales[(r + round) % 3]);
        for (int i = 0; i < vocab; ++i) row[i] = dist(rng);
        if (r % 7 == 1)  // masked ids
          for (int i = 0; i < vocab; i += 3) row[i] = -INFINITY;
        if (r % 11 == 2) row[r] = NAN;
        if (r % 13 == 3) row[5] = row[9] = row[17] = 40.0f;  // a tie at the top
        const int32_t limit = r % 5 == 4 ? vocab - 37 : 0;
        how[r] = {temperatures[r % 5], top_ps[(r / 5 + round) % 5], rng(), static_cast<uint64_t>(rng() % 5000), limit, 0};
      }
      Dev<float> logits_d(logits);
      Dev<kernels::SampleRow> how_d(how);
      Dev<int32_t> out_d(rows);
      kernels::sample(logits_d.p, vocab, how_d.p, rows, out_d.p, nullptr);
      sync_ok();
      const auto out = out_d.download();
      for (int r = 0; r < rows; ++r) {
        const int n = how[r].vocab_limit > 0 ? how[r].vocab_limit : vocab;
        const int32_t want = sampling::sample_token(logits.data() + static_cast<size_t>(r) * vocab, n, how[r].temperature,
                                                    how[r].top_p, how[r].seed, how[r].counter);
        EXPECT_EQ(out[r], want) << "vocab " << vocab << " round " << round << " row " << r << " T " << how[r].temperature
                                << " top_p " << how[r].top_p << " seed " << how[r].seed << " counter " << how[r].counter;
        ++compared;
        non_greedy += want != sampling::greedy_token(logits.data() + static_cast<size_t>(r) * vocab, n);
      }
    }
  }
  EXPECT_EQ(compared, 900);
  EXPECT_GT(non_greedy, 200);  // the draws, not only the greedy rows, were compared
}

// One sequence's draws over many counters: the device and the host pick the same token at every step.
TEST(CudaOps, SamplingSameTokensAsTheHostOverManySeeds) {
  REQUIRE_GPU();
  std::mt19937 rng(5);
  const int vocab = 151936, rows = 256;
  std::vector<float> row(vocab);
  std::normal_distribution<float> dist(0.0f, 2.5f);
  for (float& x : row) x = dist(rng);
  std::vector<float> logits;
  std::vector<kernels::SampleRow> how;
  for (int r = 0; r < rows; ++r) {
    logits.insert(logits.end(), row.begin(), row.end());
    how.push_back({0.8f, 0.95f, static_cast<uint64_t>(1000 + r / 8), static_cast<uint64_t>(r % 8), 0, 0});
  }
  Dev<float> logits_d(logits);
  Dev<kernels::SampleRow> how_d(how);
  Dev<int32_t> out_d(rows);
  kernels::sample(logits_d.p, vocab, how_d.p, rows, out_d.p, nullptr);
  sync_ok();
  const auto out = out_d.download();
  std::set<int32_t> distinct;
  for (int r = 0; r < rows; ++r) {
    EXPECT_EQ(out[r], sampling::sample_token(row.data(), vocab, 0.8f, 0.95f, how[r].seed, how[r].counter)) << "row " << r;
    distinct.insert(out[r]);
  }
  EXPECT_GT(distinct.size(), 20u);  // a flat distribution: the seeds do draw different tokens
}

namespace {

struct ModelCompare {
  int positions = 0, top1_agree = 0, top1_close_ties = 0;
  double rel = 0;           // relative L2 error of all logits, b against a
  double worst_sigmas = 0;  // Ties::kSigmas: a's largest margin at a disagreement, in sigmas
};

// What counts as a near-tie where the top-1 tokens differ. kMargin: a's own top-2 margin is under 0.02
// (bf16 noise, for backends that compute the same arithmetic). kSigmas: where each backend rounds its
// own inputs to FP8 (weights, activations, the KV cache), a's margin between the two tokens is under
// kTieSigmas standard deviations of the difference of the two rows (sqrt(2) x their RMS difference).
enum class Ties { kMargin, kSigmas };
constexpr double kTieSigmas = 4.0;

double rms_diff(std::span<const float> x, std::span<const float> y) {
  double ss = 0;
  for (size_t v = 0; v < x.size(); ++v) ss += double(x[v] - y[v]) * (x[v] - y[v]);
  return std::sqrt(ss / static_cast<double>(x.size()));
}

// Logits rows (positions, vocab) of a reference `a` and `b`: their relative L2 difference and top-1
// agreement, disagreements counted as near-ties by `ties` (others printed under `label`).
ModelCompare compare_logits(const std::vector<float>& a, const std::vector<float>& b, size_t positions, size_t vocab,
                            Ties ties = Ties::kMargin, const char* label = "") {
  ModelCompare r;
  double num = 0, den = 0;
  for (size_t p = 0; p < positions; ++p) {
    std::span<const float> ra(&a[p * vocab], vocab), rb(&b[p * vocab], vocab);
    for (size_t v = 0; v < vocab; ++v) {
      num += double(ra[v] - rb[v]) * (ra[v] - rb[v]);
      den += double(ra[v]) * ra[v];
    }
    const int32_t ta = argmax(ra), tb = argmax(rb);
    ++r.positions;
    if (ta == tb) {
      ++r.top1_agree;
    } else if (ties == Ties::kMargin) {
      if (std::fabs(ra[ta] - ra[tb]) < 0.02f) ++r.top1_close_ties;
    } else {
      const double sigmas = (ra[ta] - ra[tb]) / (std::sqrt(2.0) * rms_diff(ra, rb));
      r.worst_sigmas = std::max(r.worst_sigmas, sigmas);
      if (sigmas < kTieSigmas) ++r.top1_close_ties;
      else std::printf("[%s] position %zu: reference %d, other %d, reference margin %.4f = %.1f sigma\n", label, p, ta, tb,
                       ra[ta] - ra[tb], sigmas);
    }
  }
  r.rel = std::sqrt(num / den);
  return r;
}

}  // namespace

// The whole model on CUDA against the float32 CPU reference, on the same checkpoint.
TEST(CudaModel, MatchesCpuBackend) {
  REQUIRE_GPU();
  for (const std::string preset : {"tiny", "0.6b"}) {
    const ModelDir model = open_model_dir(random_model_dir(preset, 7, "bf16").string());
    CpuBackend cpu(model.config, *model.checkpoint);
    CudaBackend gpu(model.config, *model.checkpoint, CudaOptions{});
    const auto ids = model.tokenizer.encode(abridge::testing::read_file(abridge::testing::source_path("samples/a-scandal-in-bohemia.txt")).substr(0, preset == "tiny" ? 4000 : 600));
    const auto a = all_logits(cpu, 0, ids, 64);
    const auto b = all_logits(gpu, 0, ids, 64);
    const ModelCompare r = compare_logits(a, b, ids.size(), static_cast<size_t>(model.config.vocab_size));
    std::printf("[cuda vs cpu] %s: %d positions, logits rel L2 %.2e, top-1 agree %d, near-ties (< 0.02) %d\n",
                preset.c_str(), r.positions, r.rel, r.top1_agree, r.top1_close_ties);
    EXPECT_LT(r.rel, 2e-2);
    EXPECT_EQ(r.top1_agree + r.top1_close_ties, r.positions);
    EXPECT_GE(r.top1_agree, r.positions * 95 / 100);
  }
}

// Against Hugging Face transformers' float32 reference outputs (tests/parity/).
TEST(CudaModel, MatchesTransformers) {
  REQUIRE_GPU();
  for (const auto& [preset, fixture] : {std::pair<std::string, std::string>{"tiny", "hf_tiny_seed7.json"},
                                        std::pair<std::string, std::string>{"0.6b", "hf_0.6b_seed7.json"}}) {
    const auto ref = nlohmann::json::parse(abridge::testing::read_file(abridge::testing::source_path("tests/parity/" + fixture)));
    const ModelDir model = open_model_dir(random_model_dir(preset, 7, "bf16").string());
    CudaBackend gpu(model.config, *model.checkpoint, CudaOptions{});
    const size_t vocab = static_cast<size_t>(model.config.vocab_size);
    int positions = 0, agree = 0, greedy_same = 0, greedy_total = 0;
    float max_diff = 0;
    for (const auto& r : ref.at("results")) {
      const auto ids = r.at("ids").get<std::vector<int32_t>>();
      const auto top_ids = r.at("topk_ids").get<std::vector<std::vector<int32_t>>>();
      const auto top_logits = r.at("topk_logits").get<std::vector<std::vector<float>>>();
      const auto greedy = r.at("greedy").get<std::vector<int32_t>>();
      const auto logits = all_logits(gpu, 0, ids);
      for (size_t p = 0; p < ids.size(); ++p) {
        std::span<const float> row(&logits[p * vocab], vocab);
        const int32_t t = argmax(row);
        ++positions;
        // Top-1 must agree unless the reference's own top-2 margin is within bf16 noise.
        const float margin = top_logits[p][0] - top_logits[p][1];
        if (t == top_ids[p][0]) ++agree;
        else EXPECT_LT(margin, 0.02f) << "position " << p << ": ours " << t << ", reference " << top_ids[p][0];
        for (size_t k = 0; k < top_ids[p].size(); ++k)
          max_diff = std::max(max_diff, std::fabs(row[top_ids[p][k]] - top_logits[p][k]));
      }
      GenerationOptions opt;
      opt.max_new_tokens = static_cast<int64_t>(greedy.size());
      const auto out = generate(gpu, 0, ids, opt);
      greedy_total += static_cast<int>(greedy.size());
      for (size_t i = 0; i < std::min(out.tokens.size(), greedy.size()) && out.tokens[i] == greedy[i]; ++i) ++greedy_same;
    }
    std::printf("[cuda vs transformers] %s: %d positions, top-1 agree %d, top-20 logits max |diff| %.3e, greedy %d/%d identical\n",
                preset.c_str(), positions, agree, max_diff, greedy_same, greedy_total);
    EXPECT_LT(max_diff, 0.05f);
    EXPECT_GE(agree, positions * 95 / 100);
    EXPECT_EQ(greedy_same, greedy_total);
  }
}

// The same prompt gives the same greedy tokens alone and inside a batch of 64 mixed-length sequences
// (continuous batching, chunked prefill, decodes and prefills sharing steps).
TEST(CudaModel, BatchingInvariance) {
  REQUIRE_GPU();
  const ModelDir model = open_model_dir(random_model_dir("tiny", 7, "bf16").string());
  CudaOptions co;
  co.max_logit_rows = 64;
  CudaBackend gpu(model.config, *model.checkpoint, co);
  const std::string text = abridge::testing::read_file(abridge::testing::source_path("samples/a-scandal-in-bohemia.txt"));
  const auto all_ids = model.tokenizer.encode(text);
  std::vector<Request> requests;
  for (int i = 0; i < 64; ++i) {
    Request r;
    const size_t len = 5 + (static_cast<size_t>(i) * 37) % 300, start = static_cast<size_t>(i) * 101;
    r.prompt.assign(all_ids.begin() + start, all_ids.begin() + start + len);
    r.max_new_tokens = 4 + i % 13;
    r.vocab_limit = model.tokenizer.n_tokens();
    requests.push_back(r);
  }
  auto options = scheduler_options_for(gpu, 64);
  options.max_batch_tokens = 512;  // forces prefill chunks to share steps with decodes
  std::vector<std::vector<int32_t>> alone;
  for (const Request& r : requests) {
    ServingEngine one(gpu, options);
    one.submit(r);
    alone.push_back(one.run_until_idle().at(0).tokens);
  }
  ServingEngine batch(gpu, options);
  for (const Request& r : requests) batch.submit(r);
  const auto results = batch.run_until_idle();
  int same = 0, tokens = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(results[i].tokens, alone[i]) << "request " << i << " (prompt " << requests[i].prompt.size() << " tokens)";
    same += results[i].tokens == alone[i];
    tokens += static_cast<int>(alone[i].size());
  }
  std::printf("[batching] 64 sequences (prompts 5..300 tokens, %d generated tokens), %lld steps: %d/64 identical to running alone\n",
              tokens, static_cast<long long>(batch.counters().steps), same);
}

// The FP8 KV cache (--kv-cache-dtype fp8) on CUDA against the CPU backend's FP8 rounding of the same
// cache. Each backend rounds its own K and V: the GPU's come out of bf16 products, so about one value
// in twenty lands on the other side of an e4m3 rounding boundary (a step of 1/8) and the logits part
// more than bf16 against bf16 (measured on an H200: tiny 1.3e-2, 0.6b 3.2e-2); disagreements must be
// near-ties (Ties::kSigmas), as for FP8 weights. Then what FP8 costs against a bf16 cache on the same
// GPU: logits error, top-1 agreement, greedy tokens (tiny 3.8e-2, 0.6b 5.6e-2).
TEST(CudaModel, Fp8KvCacheMatchesCpuBackend) {
  REQUIRE_GPU();
  for (const std::string preset : {"tiny", "0.6b"}) {
    const ModelDir model = open_model_dir(random_model_dir(preset, 7, "bf16").string());
    const size_t vocab = static_cast<size_t>(model.config.vocab_size);
    CpuBackend cpu(model.config, *model.checkpoint, 0, {}, KvCacheDtype::kFp8);
    CudaOptions co;
    co.gpu_memory_limit = uint64_t{8} << 30;  // two engines on one GPU
    CudaBackend gpu_bf16(model.config, *model.checkpoint, co);
    co.kv_cache_dtype = KvCacheDtype::kFp8;
    CudaBackend gpu(model.config, *model.checkpoint, co);
    const auto ids = model.tokenizer.encode(abridge::testing::read_file(abridge::testing::source_path(
        "samples/a-scandal-in-bohemia.txt")).substr(0, preset == "tiny" ? 4000 : 600));
    const auto a = all_logits(cpu, 0, ids, 64);
    for (int64_t chunk : {64, 37}) {  // 64: prefill tiles; 37: tiles, then runs too short for one, decoded
      const ModelCompare r = compare_logits(a, all_logits(gpu, 0, ids, chunk), ids.size(), vocab, Ties::kSigmas,
                                            "cuda fp8 kv vs cpu fp8 kv");
      std::printf("[cuda fp8 kv vs cpu fp8 kv] %s, steps of %lld: %d positions, logits rel L2 %.2e, top-1 agree %d, "
                  "near-ties (< %.0f sigma) %d, largest CPU margin at a disagreement %.1f sigma\n", preset.c_str(),
                  static_cast<long long>(chunk), r.positions, r.rel, r.top1_agree, kTieSigmas, r.top1_close_ties,
                  r.worst_sigmas);
      EXPECT_LT(r.rel, kFp8KvLogitsTolerance);
      EXPECT_EQ(r.top1_agree + r.top1_close_ties, r.positions);
      EXPECT_GE(r.top1_agree, r.positions * 60 / 100);
    }
    // FP8 against bf16 KV, both on the GPU.
    const auto g16 = all_logits(gpu_bf16, 0, ids, 64), g8 = all_logits(gpu, 0, ids, 64);
    const ModelCompare kv = compare_logits(g16, g8, ids.size(), vocab, Ties::kSigmas, "fp8 kv vs bf16 kv");
    GenerationOptions gen;
    gen.max_new_tokens = 32;
    const std::vector<int32_t> prompt(ids.begin(), ids.begin() + std::min<size_t>(ids.size(), 200));
    const auto t16 = generate(gpu_bf16, 0, prompt, gen).tokens, t8 = generate(gpu, 0, prompt, gen).tokens;
    size_t same = 0;
    while (same < std::min(t16.size(), t8.size()) && t16[same] == t8[same]) ++same;
    std::printf("[fp8 kv vs bf16 kv, cuda] %s: %d positions, logits rel L2 %.2e, top-1 agree %d, near-ties (< %.0f sigma) %d, "
                "greedy %zu/%zu tokens identical\n", preset.c_str(), kv.positions, kv.rel, kv.top1_agree, kTieSigmas,
                kv.top1_close_ties, same, t16.size());
    EXPECT_LT(kv.rel, kFp8KvLogitsTolerance);
    EXPECT_EQ(kv.top1_agree + kv.top1_close_ties, kv.positions);
    EXPECT_GE(kv.top1_agree, kv.positions * 60 / 100);
  }
}

// The pool of an FP8 cache holds bf16's tokens times kv_bytes_per_token(bf16) / (fp8) in the same memory
// (1.98 for 8 KV heads of 128: a byte a value plus a one-byte scale per head).
TEST(CudaModel, Fp8KvCacheHoldsTwiceTheTokens) {
  REQUIRE_GPU();
  const ModelDir model = open_model_dir(random_model_dir("0.6b", 7, "bf16").string());
  CudaOptions co;
  co.gpu_memory_limit = uint64_t{6} << 30;  // 0.6b: 2.3 GiB of weights and buffers
  const int64_t bf16_blocks = CudaBackend(model.config, *model.checkpoint, co).kv_blocks();
  co.kv_cache_dtype = KvCacheDtype::kFp8;
  const int64_t fp8_blocks = CudaBackend(model.config, *model.checkpoint, co).kv_blocks();
  const double want = static_cast<double>(model.config.kv_bytes_per_token()) /
                      static_cast<double>(model.config.kv_bytes_per_token(KvCacheDtype::kFp8));
  std::printf("[fp8 kv pool] 0.6b under a 6 GiB limit: %lld bf16 blocks, %lld fp8 blocks (x%.3f; bytes per token say x%.3f)\n",
              static_cast<long long>(bf16_blocks), static_cast<long long>(fp8_blocks),
              static_cast<double>(fp8_blocks) / static_cast<double>(bf16_blocks), want);
  EXPECT_GT(bf16_blocks, 100);
  EXPECT_NEAR(static_cast<double>(fp8_blocks) / static_cast<double>(bf16_blocks), want, 0.01 * want);
  // engine/memory_plan.h's arithmetic (what `model info` and the README print) against the real pools:
  // the same blocks, give or take the few the plan's estimate of the allocator's rounding moves.
  CudaBufferOptions bo;
  bo.logit_rows = co.max_logit_rows;
  const uint64_t weights = static_cast<uint64_t>(device_weight_bytes(model.config, *model.checkpoint));
  for (auto [dtype, blocks] : {std::pair{KvCacheDtype::kBf16, bf16_blocks}, std::pair{KvCacheDtype::kFp8, fp8_blocks}}) {
    const int64_t planned = cuda_kv_tokens(model.config, co.gpu_memory_limit, weights, cuda_buffer_bytes(model.config, bo), dtype);
    std::printf("[fp8 kv pool] %s: %lld tokens in the pool, memory_plan says %lld\n",
                dtype == KvCacheDtype::kFp8 ? "fp8" : "bf16", static_cast<long long>(blocks * 64),
                static_cast<long long>(planned));
    EXPECT_NEAR(static_cast<double>(planned), static_cast<double>(blocks * 64), 0.01 * static_cast<double>(blocks * 64));
  }
}

// ---- FP8 checkpoints: kernels/fp8.h and engine/cuda/cuda_fp8.h against their CPU twins in engine/fp8.h.
// References are double sums over the same quantized operands the CPU makes (quantize_tiles,
// quantize_activations), so a kernel's error is its own arithmetic: float32 sums (GEMV, ~1e-7),
// Hopper's FP8 tensor cores within each 128-wide K block (cuBLASLt, ~1e-4), or bf16 rounding of the
// scaled operands (the dequantized fallback, ~1e-3). Every case prints what it measured.

namespace {

constexpr double kFp8GemvTolerance = 1e-5;      // float32 accumulation, as the bf16 GEMV
constexpr double kFp8TensorCoreTolerance = 1e-3;  // FP8 wgmma partial sums, promoted per 128-wide K block
constexpr double kFp8FallbackTolerance = 5e-3;  // bf16(decode * scale) operands: 2^-9 relative each

int blocks128(int n) { return (n + 127) / 128; }

// An FP8 product's output y (rows, ldy) f32 = x . w^T + beta * y0 against its reference ref (n, m): the
// relative L2 error over the n real rows and m columns, and how many other entries are wrong (columns
// past m must keep y0; padding rows n..rows must be beta * y0, their products being 0).
std::pair<double, int> compare_beta_output(const std::vector<float>& y, const std::vector<float>& y0,
                                           const std::vector<double>& ref, int n, int rows, int m, int ldy, float beta) {
  std::vector<float> got;
  std::vector<double> want;
  int wrong = 0;
  for (int t = 0; t < rows; ++t)
    for (int j = 0; j < ldy; ++j) {
      const size_t o = static_cast<size_t>(t) * ldy + j;
      if (j >= m) wrong += y[o] != y0[o];
      else if (t >= n) wrong += y[o] != beta * y0[o];
      else {
        got.push_back(y[o]);
        want.push_back(ref[static_cast<size_t>(t) * m + j] + beta * y0[o]);
      }
    }
  return {rel_l2(got, want), wrong};
}

// A random weight quantized by the CPU, its tiles' magnitudes spread over 2^-6..2^6 so that a wrong
// scale index shows.
struct HostFp8Weight {
  int m = 0, k = 0;
  std::vector<uint8_t> codes;   // (m, k)
  std::vector<float> scales;    // (blocks(m), blocks(k)), as a checkpoint stores them
  std::vector<float> decoded;   // (m, k) decode(code), unscaled
  std::vector<float> padded_scales() const {  // the device layout: rows of fp8_scale_ld(k)
    const int bm = blocks128(m), bk = blocks128(k), ld = kernels::fp8_scale_ld(k);
    std::vector<float> out(static_cast<size_t>(bm) * ld, 0.0f);
    for (int r = 0; r < bm; ++r) std::copy_n(&scales[static_cast<size_t>(r) * bk], bk, &out[static_cast<size_t>(r) * ld]);
    return out;
  }
};

HostFp8Weight random_fp8_weight(int m, int k, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::uniform_int_distribution<int> expo(-6, 6);
  const int bm = blocks128(m), bk = blocks128(k);
  std::vector<float> gain(static_cast<size_t>(bm) * bk);
  for (auto& g : gain) g = std::ldexp(1.0f, expo(rng));
  std::vector<float> w(static_cast<size_t>(m) * k);
  for (int r = 0; r < m; ++r)
    for (int c = 0; c < k; ++c) w[static_cast<size_t>(r) * k + c] = dist(rng) * gain[(r / 128) * bk + c / 128];
  HostFp8Weight h;
  h.m = m, h.k = k;
  h.codes.resize(w.size());
  h.scales.resize(gain.size());
  quantize_tiles(w.data(), m, k, h.codes.data(), h.scales.data());
  h.decoded.resize(w.size());
  for (size_t i = 0; i < w.size(); ++i) h.decoded[i] = e4m3_to_f32(h.codes[i]);
  return h;
}

struct DevFp8Weight {
  Dev<uint8_t> codes;
  Dev<float> scales;
  int m, k;
  explicit DevFp8Weight(const HostFp8Weight& h) : codes(h.codes), scales(h.padded_scales()), m(h.m), k(h.k) {}
  kernels::Fp8Matrix view() const { return {codes.p, scales.p, m, k}; }
};

// bf16 activations, each 128-wide group with its own power-of-two gain; some groups all zero.
std::vector<float> random_activations(int n, int k, std::mt19937& rng) {
  auto x = random_bf16_values(static_cast<size_t>(n) * k, rng);
  std::uniform_int_distribution<int> expo(-4, 4);
  for (int i = 0; i < n; ++i)
    for (int g = 0; g < blocks128(k); ++g) {
      const float gain = (i + g) % 7 == 3 ? 0.0f : std::ldexp(1.0f, expo(rng));
      for (int c = g * 128; c < std::min(k, g * 128 + 128); ++c) x[static_cast<size_t>(i) * k + c] *= gain;
    }
  return x;
}

// y (n, m) in double = sum over K blocks of (quantized x . codes) * x scale * tile scale.
std::vector<double> fp8_reference(const Fp8Activations& a, const HostFp8Weight& w) {
  const int n = static_cast<int>(a.n), k = w.k, m = w.m, groups = blocks128(k);
  std::vector<double> y(static_cast<size_t>(n) * m);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < m; ++j) {
      double acc = 0;
      for (int g = 0; g < groups; ++g) {
        double dot = 0;
        for (int c = g * 128; c < std::min(k, g * 128 + 128); ++c)
          dot += double(a.q[static_cast<size_t>(i) * k + c]) * w.decoded[static_cast<size_t>(j) * k + c];
        acc += dot * a.scale[static_cast<size_t>(i) * groups + g] * w.scales[(j / 128) * groups + g];
      }
      y[static_cast<size_t>(i) * m + j] = acc;
    }
  return y;
}

// RMS-normalized rows rounded to bf16, as kernels::rms_norm and the quantizer's norm compute them.
std::vector<float> normalized_bf16(const std::vector<float>& x, const std::vector<float>& w, int n, int k, float eps) {
  std::vector<float> h(x.size());
  for (int i = 0; i < n; ++i) {
    double ss = 0;
    for (int c = 0; c < k; ++c) ss += double(x[static_cast<size_t>(i) * k + c]) * x[static_cast<size_t>(i) * k + c];
    const float rs = static_cast<float>(1.0 / std::sqrt(ss / k + eps));
    for (int c = 0; c < k; ++c)
      h[static_cast<size_t>(i) * k + c] = bf16_to_f32(f32_to_bf16(w[c] * (x[static_cast<size_t>(i) * k + c] * rs)));
  }
  return h;
}

double silu_d(double g) { return g / (1 + std::exp(-g)); }

}  // namespace

// The quantizer gives the CPU's codes and scales bit for bit on the same bf16 values (IEEE divisions,
// round to nearest even, saturation), zero padding rows, and dequantized rows bf16(decode * scale).
// With the RMS norm fused, the normalized values themselves may differ from a host computation by one
// bf16 step where the two normalizers straddle a rounding edge; those groups are counted and shown.
TEST(CudaFp8, QuantizeActivationsBitForBitAsTheCpu) {
  REQUIRE_GPU();
  std::mt19937 rng(11);
  for (auto [n, k] : {std::pair{1, 2560}, std::pair{2, 128}, std::pair{7, 1008}, std::pair{300, 2560},
                      std::pair{5, 200}, std::pair{33, 9728}}) {
    SCOPED_TRACE("n=" + std::to_string(n) + " k=" + std::to_string(k));
    const int groups = blocks128(k), n_pad = kernels::fp8_gemm_rows(n);
    const auto x = random_activations(n, k, rng);
    Fp8Activations ref;
    quantize_activations(x.data(), n, k, ref);
    Dev<bf16> x_d(to_bf16(x));
    Dev<uint8_t> codes_d(static_cast<size_t>(n_pad) * k);
    Dev<float> scales_d(static_cast<size_t>(groups) * n_pad);
    Dev<bf16> dq_d(static_cast<size_t>(n) * k);
    ASSERT_EQ(cudaMemset(codes_d.p, 0xAB, codes_d.n), cudaSuccess);
    ASSERT_EQ(cudaMemset(scales_d.p, 0xFF, scales_d.n * 4), cudaSuccess);  // NaN: every scale is written
    kernels::Fp8QuantizeParams p;
    p.x = x_d.p, p.n = n, p.n_pad = n_pad, p.k = k, p.codes = codes_d.p, p.scales = scales_d.p, p.dequantized = dq_d.p;
    kernels::fp8_quantize(p, nullptr);
    sync_ok();
    const auto codes = codes_d.download();
    const auto scales = scales_d.download();
    const auto dq = dq_d.download();
    int64_t code_diff = 0, scale_diff = 0, pad_bad = 0, dq_diff = 0;
    for (int i = 0; i < n_pad; ++i)
      for (int c = 0; c < k; ++c) {
        const size_t o = static_cast<size_t>(i) * k + c;
        if (i >= n) {
          pad_bad += codes[o] != 0;
          continue;
        }
        const float sc = ref.scale[static_cast<size_t>(i) * groups + c / 128];
        code_diff += e4m3_to_f32(codes[o]) != ref.q[o];
        const uint16_t want = f32_to_bf16(ref.q[o] * sc);
        uint16_t got;
        std::memcpy(&got, &dq[o], 2);
        dq_diff += got != want;
      }
    for (int g = 0; g < groups; ++g)
      for (int i = 0; i < n_pad; ++i) {
        const float got = scales[static_cast<size_t>(g) * n_pad + i];
        if (i >= n) pad_bad += got != 0.0f;
        else scale_diff += got != ref.scale[static_cast<size_t>(i) * groups + g];
      }
    std::printf("[fp8 quantize] n %d (padded %d) k %d: %lld/%lld codes differ from the CPU, %lld/%lld scales, "
                "%lld dequantized values, %lld padding entries not zero\n",
                n, n_pad, k, static_cast<long long>(code_diff), static_cast<long long>(n) * k,
                static_cast<long long>(scale_diff), static_cast<long long>(n) * groups, static_cast<long long>(dq_diff),
                static_cast<long long>(pad_bad));
    EXPECT_EQ(code_diff, 0);
    EXPECT_EQ(scale_diff, 0);
    EXPECT_EQ(dq_diff, 0);
    EXPECT_EQ(pad_bad, 0);
  }
  // RMS norm fused.
  const float eps = 1e-6f;
  for (auto [n, k] : {std::pair{1, 2560}, std::pair{2, 1024}, std::pair{40, 2560}}) {
    SCOPED_TRACE("normalized n=" + std::to_string(n) + " k=" + std::to_string(k));
    const int groups = blocks128(k);
    std::normal_distribution<float> dist(0.0f, 3.0f);
    std::vector<float> x(static_cast<size_t>(n) * k);
    for (auto& v : x) v = dist(rng);
    const auto w = random_bf16_values(k, rng);
    const auto h = normalized_bf16(x, w, n, k, eps);
    Fp8Activations ref;
    quantize_activations(h.data(), n, k, ref);
    Dev<float> x_d(x), w_d(w);
    Dev<uint8_t> codes_d(static_cast<size_t>(n) * k);
    Dev<float> scales_d(static_cast<size_t>(groups) * n);
    kernels::Fp8QuantizeParams p;
    p.x_f32 = x_d.p, p.norm_w = w_d.p, p.eps = eps, p.n = n, p.n_pad = n, p.k = k, p.codes = codes_d.p,
    p.scales = scales_d.p;
    kernels::fp8_quantize(p, nullptr);
    sync_ok();
    const auto codes = codes_d.download();
    const auto scales = scales_d.download();
    int groups_diff = 0;
    for (int i = 0; i < n; ++i)
      for (int g = 0; g < groups; ++g) {
        bool same = scales[static_cast<size_t>(g) * n + i] == ref.scale[static_cast<size_t>(i) * groups + g];
        for (int c = g * 128; c < std::min(k, g * 128 + 128); ++c)
          same = same && e4m3_to_f32(codes[static_cast<size_t>(i) * k + c]) == ref.q[static_cast<size_t>(i) * k + c];
        groups_diff += !same;
      }
    std::printf("[fp8 quantize, RMS norm fused] n %d k %d: %d/%d groups differ from the CPU's quantization of the "
                "host-normalized rows\n", n, k, groups_diff, n * groups);
    EXPECT_LE(groups_diff, std::max(1, n * groups / 100));
  }
}

// The decode GEMV over FP8 codes: plain (beta 0 and 1, an output row stride wider than m whose other
// columns stay untouched) and SwiGLU, on shapes with one warp per row, rows split between warps, a
// partial last K block (k = 1008) and partial tiles of rows (m = 37, 200, 13).
TEST(CudaFp8, DecodeGemvMatchesTheCpuTwin) {
  REQUIRE_GPU();
  std::mt19937 rng(12);
  const int max_rows = kernels::fp8_gemv_max_rows(caps());
  EXPECT_EQ(max_rows, kernels::fp8_gemv_tensor_cores(2, caps()) ? 8 : kernels::kFp8GemvMaxRows);
  EXPECT_FALSE(kernels::fp8_gemv_supports(max_rows + 1, 2560, caps()));
  EXPECT_FALSE(kernels::fp8_gemv_supports(1, 2568, caps()));
  // The tensor cores' sums within a 128-wide K block are theirs (as cuBLASLt's), the CUDA-core kernel's f32.
  std::printf("[fp8 gemv] up to %d rows; 2 rows on the %s\n", max_rows,
              kernels::fp8_gemv_tensor_cores(2, caps()) ? "tensor cores" : "CUDA cores");
  for (int n = 1; n <= max_rows; ++n) {
    const double tolerance = kernels::fp8_gemv_tensor_cores(n, caps()) ? kFp8TensorCoreTolerance : kFp8GemvTolerance;
    for (auto [k, m] : {std::pair{2560, 6144}, std::pair{2560, 2560}, std::pair{9728, 2560}, std::pair{1008, 37},
                        std::pair{256, 200}, std::pair{4096, 13}}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " k=" + std::to_string(k) + " m=" + std::to_string(m));
      ASSERT_TRUE(kernels::fp8_gemv_supports(n, k, caps()));
      const auto hw = random_fp8_weight(m, k, rng), hu = random_fp8_weight(m, k, rng);
      const DevFp8Weight w(hw), up(hu);
      const auto x = random_activations(n, k, rng);
      Fp8Activations a;
      quantize_activations(x.data(), n, k, a);
      const auto ref = fp8_reference(a, hw);
      // The CPU twin's own distance from the double reference, for scale.
      Fp8Matrix cw;
      cw.rows = m, cw.cols = k, cw.q = hw.decoded, cw.scale_inv = hw.scales;
      std::vector<float> cpu(static_cast<size_t>(n) * m);
      fp8_linear(a, cw, cpu.data(), 0, m);
      const double cpu_err = rel_l2(cpu, ref);

      Dev<bf16> x_d(to_bf16(x));
      Dev<uint8_t> codes_d(static_cast<size_t>(n) * k);
      Dev<float> scales_d(static_cast<size_t>(blocks128(k)) * n);
      kernels::Fp8QuantizeParams q;
      q.x = x_d.p, q.n = n, q.n_pad = n, q.k = k, q.codes = codes_d.p, q.scales = scales_d.p;
      kernels::fp8_quantize(q, nullptr);
      const int ldy = m + 3;
      const auto y0 = random_bf16_values(static_cast<size_t>(n) * ldy, rng);
      for (float beta : {0.0f, 1.0f}) {
        Dev<float> y_d(y0);
        kernels::Fp8GemvParams g;
        g.x_codes = codes_d.p, g.x_scales = scales_d.p, g.w = w.view(), g.y = y_d.p, g.ldy = ldy, g.beta = beta, g.n = n;
        kernels::fp8_gemv(g, caps(), nullptr);
        sync_ok();
        const auto [err, untouched_bad] = compare_beta_output(y_d.download(), y0, ref, n, n, m, ldy, beta);
        std::printf("[fp8 gemv] n %d k %d m %d beta %.0f: rel err %.2e (CPU twin %.2e), columns past m changed: %d\n", n,
                    k, m, beta, err, cpu_err, untouched_bad);
        EXPECT_LT(err, tolerance) << "beta=" << beta;
        EXPECT_EQ(untouched_bad, 0);
      }
      // SwiGLU: silu(x . gate^T) * (x . up^T) into bf16.
      const auto ref_up = fp8_reference(a, hu);
      Dev<bf16> act_d(static_cast<size_t>(n) * m);
      ASSERT_EQ(cudaMemset(act_d.p, 0xFF, act_d.n * sizeof(bf16)), cudaSuccess);  // NaN: every output is written
      kernels::Fp8GemvParams g;
      g.x_codes = codes_d.p, g.x_scales = scales_d.p, g.w = w.view(), g.up = up.view(), g.act = act_d.p, g.n = n;
      kernels::fp8_gemv(g, caps(), nullptr);
      sync_ok();
      std::vector<double> want(static_cast<size_t>(n) * m);
      for (size_t i = 0; i < want.size(); ++i) want[i] = silu_d(ref[i]) * ref_up[i];
      const double err = rel_l2(to_f32(act_d.download()), want);
      std::printf("[fp8 gemv swiglu] n %d k %d m %d: rel err %.2e (bf16 output)\n", n, k, m, err);
      EXPECT_LT(err, kBf16OutTolerance) << "SwiGLU";
    }
  }
}

// cuBLASLt's block-scaled FP8 GEMM (Hopper): 3..300 token rows (padded to 16), beta 0 and 1, an output
// stride wider than m. The padding rows get 0 + beta * y and the columns past m stay as they were.
// Shapes of the Qwen3 layers must have an algorithm; edge shapes (m not a multiple of 128, a partial
// K block) may be refused, which the backend answers with the dequantized fallback: shown, not failed.
TEST(CudaFp8, BlockScaledGemmMatchesTheCpuTwin) {
  REQUIRE_GPU();
  int device = 0, major = 0, minor = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  if (major != 9)
    GTEST_SKIP() << "cuBLASLt's 128-block FP8 scaling is Hopper's (compute capability 9.0); this GPU is " << major << "."
                 << minor << " and runs the dequantized fallback (CudaFp8.LinearPathsMatchTheCpuTwin)";
  const size_t ws_bytes = size_t{32} << 20;
  Dev<unsigned char> ws(ws_bytes);
  kernels::Fp8BlockGemm gemm(ws.p, ws_bytes);
  std::mt19937 rng(13);
  struct Case {
    int m, k;
    bool required;
  };
  for (const Case& cs : {Case{4096, 2560, true}, Case{2560, 9728, true}, Case{1024, 3072, true}, Case{256, 256, true},
                         Case{200, 256, false}, Case{328, 1008, false}}) {
    const auto hw = random_fp8_weight(cs.m, cs.k, rng);
    const DevFp8Weight w(hw);
    for (int n : {3, 16, 17, 100, 300}) {
      SCOPED_TRACE("m=" + std::to_string(cs.m) + " k=" + std::to_string(cs.k) + " n=" + std::to_string(n));
      const int n_pad = kernels::fp8_gemm_rows(n), ldy = cs.m + 4, groups = blocks128(cs.k);
      if (!gemm.supports(cs.m, cs.k, n_pad, ldy)) {
        std::printf("[fp8 cublaslt] m %d k %d n %d: no algorithm (the backend uses the dequantized GEMM here)\n", cs.m,
                    cs.k, n);
        EXPECT_FALSE(cs.required) << "cuBLASLt refuses a shape of the Qwen3 layers";
        continue;
      }
      const auto x = random_activations(n, cs.k, rng);
      Fp8Activations a;
      quantize_activations(x.data(), n, cs.k, a);
      const auto ref = fp8_reference(a, hw);
      Dev<bf16> x_d(to_bf16(x));
      Dev<uint8_t> codes_d(static_cast<size_t>(n_pad) * cs.k);
      Dev<float> scales_d(static_cast<size_t>(groups) * n_pad);
      kernels::Fp8QuantizeParams q;
      q.x = x_d.p, q.n = n, q.n_pad = n_pad, q.k = cs.k, q.codes = codes_d.p, q.scales = scales_d.p;
      kernels::fp8_quantize(q, nullptr);
      const auto y0 = random_bf16_values(static_cast<size_t>(n_pad) * ldy, rng);
      for (float beta : {0.0f, 1.0f}) {
        Dev<float> y_d(y0);
        kernels::Fp8GemmArgs g;
        g.x_codes = codes_d.p, g.x_scales = scales_d.p, g.w = w.view(), g.y = y_d.p, g.ldy = ldy, g.beta = beta,
        g.n_pad = n_pad;
        ASSERT_NO_THROW(gemm.run(g, nullptr));
        sync_ok();
        const auto [err, outside_bad] = compare_beta_output(y_d.download(), y0, ref, n, n_pad, cs.m, ldy, beta);
        std::printf("[fp8 cublaslt] m %d k %d n %d (padded %d) beta %.0f: rel err %.2e, padding/outside entries wrong: %d\n",
                    cs.m, cs.k, n, n_pad, beta, err, outside_bad);
        EXPECT_LT(err, kFp8TensorCoreTolerance) << "beta=" << beta;
        EXPECT_EQ(outside_bad, 0);
      }
    }
  }
}

namespace {

// A checkpoint of FP8 linear layers (and their scales) for CudaFp8::upload, written to a real file.
struct Fp8TestCheckpoint {
  abridge::testing::TempDir dir;
  std::map<std::string, HostFp8Weight> weights;
  std::unique_ptr<Checkpoint> ckpt;

  // bf16_scales: store this weight's scales as BF16 (the host copy is rounded to match).
  void add(const std::string& name, int m, int k, std::mt19937& rng, bool bf16_scales = false) {
    HostFp8Weight h = random_fp8_weight(m, k, rng);
    if (bf16_scales)
      for (auto& s : h.scales) s = bf16_to_f32(f32_to_bf16(s));
    weights[name] = std::move(h);
    if (bf16_scales) bf16_scale_names.insert(name);
  }
  void write() {
    std::vector<TensorSpec> specs;
    for (const auto& [name, h] : weights) {
      specs.push_back({name, DType::kF8E4M3, {h.m, h.k}});
      specs.push_back({scale_name(name), bf16_scale_names.count(name) ? DType::kBF16 : DType::kF32,
                       {blocks128(h.m), blocks128(h.k)}});
    }
    write_safetensors((dir.path() / "model.safetensors").string(), specs, [&](const TensorSpec& spec, std::span<std::byte> out) {
      if (spec.dtype == DType::kF8E4M3) {
        const auto& h = weights.at(spec.name);
        std::memcpy(out.data(), h.codes.data(), out.size());
        return;
      }
      const auto& h = weights.at(spec.name.substr(0, spec.name.size() - std::string("_scale_inv").size()));
      for (size_t i = 0; i < h.scales.size(); ++i) {
        if (spec.dtype == DType::kBF16) {
          const uint16_t b = f32_to_bf16(h.scales[i]);
          std::memcpy(out.data() + 2 * i, &b, 2);
        } else {
          std::memcpy(out.data() + 4 * i, &h.scales[i], 4);
        }
      }
    });
    ckpt = std::make_unique<Checkpoint>(dir.path().string());
  }
  std::set<std::string> bf16_scale_names;
};

}  // namespace

// The backend's FP8 products end to end (upload, quantization, path choice) on groups that fuse
// (q/k/v rows 256/128/128, gate/up 256 each) and groups that cannot (rows 200/72/56, gate/up 192: one
// part each, writing their own columns), bf16 and f32 scales, inputs bf16 or RMS-normalized in the
// quantizer; decode rows (GEMV), then 3..64 rows on cuBLASLt where it runs and on the dequantized
// fallback (forced, as on compute capability 8.0-8.9).
TEST(CudaFp8, LinearPathsMatchTheCpuTwin) {
  REQUIRE_GPU();
  std::mt19937 rng(14);
  Fp8TestCheckpoint f;
  f.add("a.q", 256, 256, rng), f.add("a.k", 128, 256, rng, true), f.add("a.v", 128, 256, rng);
  f.add("b.q", 200, 1008, rng), f.add("b.k", 72, 1008, rng, true), f.add("b.v", 56, 1008, rng);
  f.add("c.gate", 192, 256, rng), f.add("c.up", 192, 256, rng);
  f.add("d.gate", 256, 512, rng), f.add("d.up", 256, 512, rng, true);
  f.write();
  const std::vector<std::vector<std::string>> linear_groups = {{"a.q", "a.k", "a.v"}, {"b.q", "b.k", "b.v"}};
  const std::vector<std::vector<std::string>> glu_groups = {{"c.gate", "c.up"}, {"d.gate", "d.up"}};
  cublasHandle_t blas = nullptr;
  ASSERT_EQ(cublasCreate(&blas), CUBLAS_STATUS_SUCCESS);
  const size_t ws_bytes = size_t{32} << 20;
  Dev<unsigned char> ws(ws_bytes);
  const int max_tokens = 64;
  const float eps = 1e-6f;
  for (bool block_gemm : {true, false}) {
    std::vector<std::unique_ptr<Dev<unsigned char>>> memory;
    CudaFp8 fp8([&](size_t bytes) { return static_cast<void*>(memory.emplace_back(std::make_unique<Dev<unsigned char>>(bytes))->p); },
                blas, ws.p, ws_bytes, max_tokens, block_gemm, caps());
    std::vector<CudaFp8Linear> lins, glus;
    for (const auto& g : linear_groups) lins.push_back(fp8.upload(*f.ckpt, g));
    for (const auto& g : glu_groups) glus.push_back(fp8.upload(*f.ckpt, g));
    fp8.finish();
    EXPECT_EQ(lins[0].parts.size(), 1u) << "q/k/v rows 256/128/128 fuse";
    EXPECT_EQ(lins[1].parts.size(), 3u) << "rows 200/72/56 do not";
    EXPECT_EQ(glus[0].parts.size(), 2u) << "gate/up of 192 rows do not fuse";
    EXPECT_EQ(glus[1].parts.size(), 1u);
    std::printf("[fp8 linear] %s: %s\n", block_gemm ? "cuBLASLt allowed" : "dequantized fallback forced",
                fp8.describe().c_str());
    for (int n : {1, 2, 3, 17, 64}) {
      for (bool normed : {false, true}) {
        // Tolerance by the path the rows take (the GEMV for <= 2 rows, else per part).
        auto tolerance = [&](const CudaFp8Linear& l) {
          if (kernels::fp8_gemv_supports(n, static_cast<int>(l.k), caps()))  // normed: see the quantize test
            return normed || kernels::fp8_gemv_tensor_cores(n, caps()) ? kFp8TensorCoreTolerance : kFp8GemvTolerance;
          bool fallback = false;
          for (const auto& p : l.parts) fallback = fallback || !p.block_gemm;
          return fallback ? kFp8FallbackTolerance : kFp8TensorCoreTolerance;
        };
        auto run_input = [&](int k, auto&& fn) {
          const auto w = random_bf16_values(k, rng);
          std::vector<float> xin;
          std::vector<float> h;
          if (normed) {
            std::normal_distribution<float> dist(0.0f, 2.0f);
            xin.resize(static_cast<size_t>(n) * k);
            for (auto& v : xin) v = dist(rng);
            h = normalized_bf16(xin, w, n, k, eps);
          } else {
            h = random_activations(n, k, rng);
          }
          Dev<bf16> x_d(to_bf16(h));
          Dev<float> xf_d(normed ? xin : std::vector<float>(1)), w_d(w);
          CudaFp8Input in;
          if (normed) in.x_f32 = xf_d.p, in.norm_w = w_d.p, in.eps = eps;
          else in.x = x_d.p;
          Fp8Activations a;
          quantize_activations(h.data(), n, k, a);
          fn(in, a);
        };
        for (size_t gi = 0; gi < linear_groups.size(); ++gi) {
          const CudaFp8Linear& l = lins[gi];
          SCOPED_TRACE("group " + std::to_string(gi) + " n=" + std::to_string(n) + (normed ? " normed" : ""));
          run_input(static_cast<int>(l.k), [&](const CudaFp8Input& in, const Fp8Activations& a) {
            std::vector<std::vector<double>> refs;
            for (const auto& name : linear_groups[gi]) refs.push_back(fp8_reference(a, f.weights.at(name)));
            const int m = static_cast<int>(l.m);
            Dev<float> y_d(static_cast<size_t>(kernels::fp8_gemm_rows(max_tokens)) * m);
            fp8.linear(in, l, y_d.p, m, n, 0.0f, nullptr);
            sync_ok();
            const auto y = y_d.download();
            std::vector<float> got;
            std::vector<double> want;
            for (int t = 0; t < n; ++t) {
              int col = 0;
              for (size_t r = 0; r < refs.size(); ++r) {
                const int mr = f.weights.at(linear_groups[gi][r]).m;
                for (int j = 0; j < mr; ++j) {
                  got.push_back(y[static_cast<size_t>(t) * m + col + j]);
                  want.push_back(refs[r][static_cast<size_t>(t) * mr + j]);
                }
                col += mr;
              }
            }
            const double err = rel_l2(got, want), tol = tolerance(l);
            std::printf("[fp8 linear] %s, group %zu (%zu parts, k %lld), n %d%s: rel err %.2e (limit %.0e)\n",
                        block_gemm ? "cuBLASLt allowed" : "fallback forced", gi, l.parts.size(),
                        static_cast<long long>(l.k), n, normed ? ", RMS norm fused" : "", err, tol);
            EXPECT_LT(err, tol);
          });
        }
        for (size_t gi = 0; gi < glu_groups.size(); ++gi) {
          const CudaFp8Linear& l = glus[gi];
          SCOPED_TRACE("glu group " + std::to_string(gi) + " n=" + std::to_string(n) + (normed ? " normed" : ""));
          run_input(static_cast<int>(l.k), [&](const CudaFp8Input& in, const Fp8Activations& a) {
            const auto gate = fp8_reference(a, f.weights.at(glu_groups[gi][0]));
            const auto up = fp8_reference(a, f.weights.at(glu_groups[gi][1]));
            const int ffn = static_cast<int>(l.m / 2);
            Dev<float> gu_d(static_cast<size_t>(kernels::fp8_gemm_rows(max_tokens)) * 2 * ffn);
            Dev<bf16> act_d(static_cast<size_t>(n) * ffn);
            fp8.swiglu(in, l, gu_d.p, act_d.p, n, nullptr);
            sync_ok();
            std::vector<double> want(static_cast<size_t>(n) * ffn);
            for (size_t i = 0; i < want.size(); ++i) want[i] = silu_d(gate[i]) * up[i];
            const double err = rel_l2(to_f32(act_d.download()), want), tol = std::max(tolerance(l), kBf16OutTolerance);
            std::printf("[fp8 swiglu] %s, group %zu (%zu parts), n %d%s: rel err %.2e (limit %.0e, bf16 output)\n",
                        block_gemm ? "cuBLASLt allowed" : "fallback forced", gi, l.parts.size(), n,
                        normed ? ", RMS norm fused" : "", err, tol);
            EXPECT_LT(err, tol);
          });
        }
      }
    }
  }
  cublasDestroy(blas);
}

// The weight dequantizer of the fallback: bf16(decode(code) * tile scale), bit for bit the host's.
TEST(CudaFp8, DequantizedTilesBitForBitAsTheHost) {
  REQUIRE_GPU();
  std::mt19937 rng(15);
  for (auto [m, k] : {std::pair{256, 256}, std::pair{200, 1008}, std::pair{37, 2560}}) {
    const auto hw = random_fp8_weight(m, k, rng);
    const DevFp8Weight w(hw);
    Dev<bf16> out_d(static_cast<size_t>(m) * k);
    kernels::fp8_dequantize(w.view(), out_d.p, nullptr);
    sync_ok();
    const auto out = out_d.download();
    std::vector<float> f(static_cast<size_t>(m) * k);
    dequantize_tiles(hw.codes.data(), hw.scales.data(), m, k, f.data());
    int64_t diff = 0;
    for (size_t i = 0; i < f.size(); ++i) {
      uint16_t got;
      std::memcpy(&got, &out[i], 2);
      diff += got != f32_to_bf16(f[i]);
    }
    std::printf("[fp8 dequantize] m %d k %d: %lld/%zu values differ from the host's\n", m, k, static_cast<long long>(diff),
                f.size());
    EXPECT_EQ(diff, 0) << "m=" << m << " k=" << k;
  }
}

// FP8 checkpoints (make-random --dtype fp8: the bf16 model of the same seed quantized) on CUDA against
// the CPU backend's FP8 reference: logits at every position (prefill in steps of 64 and of 37 tokens,
// the second padding the GEMM's rows), top-1 agreement, and greedy continuations (decode steps: the
// FP8 GEMV). Both GEMM paths where the GPU has both: cuBLASLt's (Hopper) and the dequantized one.
// Both backends quantize bf16 activations, but their bf16 values still differ in the last bit where
// the float32 sums before them differ (the bf16 model's logits differ by about 0.6%), and each such
// value near an e4m3 rounding edge takes the neighbouring code, a step of 6-12%: every one of the four
// quantized products of a layer multiplies the difference, so the logits differ by 5% (tiny) to 8%
// (0.6b, 28 layers) on random weights, whose logits are nearly flat. Hence 0.15 on the logits and 60%
// top-1 agreement; the firm check is that a top-1 or greedy disagreement is a near-tie: the CPU's
// margin between the two tokens within 4 standard deviations of the backends' difference at that
// position (4 sqrt(2) x the RMS of the logits' difference there). The kernels themselves are held to
// their CPU twins op by op (the CudaFp8 tests).
TEST(CudaModel, Fp8MatchesCpuBackend) {
  REQUIRE_GPU();
  constexpr double kLogitsTolerance = 0.15;
  for (const std::string preset : {"tiny", "0.6b"}) {
    const ModelDir model = open_model_dir(random_model_dir(preset, 7, "fp8").string());
    CpuBackend cpu(model.config, *model.checkpoint);
    const auto ids = model.tokenizer.encode(abridge::testing::read_file(abridge::testing::source_path(
        "samples/a-scandal-in-bohemia.txt")).substr(0, preset == "tiny" ? 4000 : 600));
    const auto a = all_logits(cpu, 0, ids, 64);
    const size_t vocab = static_cast<size_t>(model.config.vocab_size);
    GenerationOptions gen;
    gen.max_new_tokens = 24;
    gen.prefill_chunk = 64;
    const std::vector<int32_t> prompt(ids.begin(), ids.begin() + std::min<size_t>(ids.size(), 40));
    const auto cpu_greedy = generate(cpu, 0, prompt, gen).tokens;
    for (bool dequantized : {false, true}) {
      CudaOptions co;
      co.fp8_dequantized_gemm = dequantized;
      CudaBackend gpu(model.config, *model.checkpoint, co);
      for (int64_t chunk : {64, 37}) {
        const ModelCompare r = compare_logits(a, all_logits(gpu, 0, ids, chunk), ids.size(), vocab, Ties::kSigmas,
                                              "cuda fp8 vs cpu fp8");
        const double rel = r.rel, worst_margin_sigmas = r.worst_sigmas;
        std::printf("[cuda fp8 vs cpu fp8] %s, %s, steps of %lld: %d positions, logits rel L2 %.2e, top-1 agree %d, "
                    "near-ties (< %.0f sigma) %d, largest CPU margin at a disagreement %.1f sigma\n",
                    preset.c_str(), gpu.fp8_paths().c_str(), static_cast<long long>(chunk), r.positions, rel, r.top1_agree,
                    kTieSigmas, r.top1_close_ties, worst_margin_sigmas);
        EXPECT_LT(rel, kLogitsTolerance) << gpu.fp8_paths() << ", steps of " << chunk;
        EXPECT_EQ(r.top1_agree + r.top1_close_ties, r.positions) << gpu.fp8_paths() << ", steps of " << chunk;
        EXPECT_GE(r.top1_agree, r.positions * 60 / 100) << gpu.fp8_paths() << ", steps of " << chunk;
      }
      // Greedy continuation: a prefill, then decode steps of one token.
      const auto gpu_greedy = generate(gpu, 0, prompt, gen).tokens;
      size_t same = 0;
      while (same < std::min(cpu_greedy.size(), gpu_greedy.size()) && cpu_greedy[same] == gpu_greedy[same]) ++same;
      std::printf("[cuda fp8 vs cpu fp8] %s, %s: greedy %zu/%zu tokens identical\n", preset.c_str(),
                  gpu.fp8_paths().c_str(), same, cpu_greedy.size());
      if (same < cpu_greedy.size()) {
        // Where they part, both backends' logits on the common prefix say whether it was a near-tie.
        std::vector<int32_t> ctx = prompt;
        ctx.insert(ctx.end(), cpu_greedy.begin(), cpu_greedy.begin() + static_cast<std::ptrdiff_t>(same));
        const auto lc = all_logits(cpu, 0, ctx, 64), lg = all_logits(gpu, 0, ctx, 64);
        std::span<const float> rc(&lc[(ctx.size() - 1) * vocab], vocab), rg(&lg[(ctx.size() - 1) * vocab], vocab);
        const double margin = rc[static_cast<size_t>(cpu_greedy[same])] - rc[static_cast<size_t>(gpu_greedy[same])];
        const double sigmas = margin / (std::sqrt(2.0) * rms_diff(rc, rg));
        std::printf("[cuda fp8 vs cpu fp8] %s: first different token at %zu: CPU %d, GPU %d, CPU margin %.4f = %.1f sigma\n",
                    preset.c_str(), same, cpu_greedy[same], gpu_greedy[same], margin, sigmas);
        EXPECT_LT(sigmas, kTieSigmas) << "greedy tokens part at " << same << " where the CPU's choice is not a near-tie";
      }
    }
  }
}

#endif
