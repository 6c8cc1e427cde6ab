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

#include "engine/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/weights.h"
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
      kernels::rms_norm(xs_d.p, rows_d.p, w_d.p, y_d.p, n, d, 1e-6f, nullptr);
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
    // CPU twin, in double, with the span rule of AttentionOptions.
    std::vector<double> ref(static_cast<size_t>(n) * cs.heads * cs.hd);
    const AttentionOptions opt{cs.window, cs.sinks};
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
            dot += double(q[(static_cast<size_t>(i) * cs.heads + h) * cs.hd + e]) * kc[(static_cast<size_t>(row) * cs.kv_heads + kvh) * cs.hd + e];
          s[kk] = dot * scale;
          mx = std::max(mx, s[kk]);
        }
        double sum = 0;
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (int e = 0; e < cs.hd; ++e) {
          double acc = 0;
          for (size_t kk = 0; kk < keys.size(); ++kk) {
            const int row = seq_tables[seq][keys[kk] / bs] * bs + keys[kk] % bs;
            acc += s[kk] / sum * vc[(static_cast<size_t>(row) * cs.kv_heads + kvh) * cs.hd + e];
          }
          ref[(static_cast<size_t>(i) * cs.heads + h) * cs.hd + e] = acc;
        }
      }
    }
    // Both prefill kernels where the device has two: 64-query mma.sync tiles everywhere, and the
    // tile size attention_tile_queries() picks here (128-query wgmma tiles on compute capability 9.0).
    std::vector<int> tile_sizes = {kernels::kAttentionTileQueries};
    if (kernels::attention_tile_queries(cs.hd) != kernels::kAttentionTileQueries)
      tile_sizes.push_back(kernels::attention_tile_queries(cs.hd));
    for (int tile_queries : tile_sizes) {
      std::vector<int32_t> tiles(4 * n), singles(n);
      int n_tiles = 0, n_singles = 0;
      kernels::partition_attention(positions.data(), offsets.data(), n, cs.hd, tile_queries, tiles.data(), &n_tiles,
                                   singles.data(), &n_singles);
      Dev<int32_t> tiles_d(tiles), singles_d(singles);
      for (int max_splits : {1, 64}) {
        Dev<float> ws(kernels::attention_workspace_floats(n, cs.heads, cs.hd, max_splits));
        const int n_items = kernels::decode_item_count(n_singles, cs.kv_heads, cs.hd, std::max(n_singles, 1) * max_splits);
        std::vector<int32_t> plan(static_cast<size_t>(3 * n_items + n_singles + 1));
        kernels::plan_decode_items(positions.data(), singles.data(), n_singles, n_items, plan.data(), plan.data() + 3 * n_items);
        Dev<int32_t> plan_d(plan);
        kernels::AttentionParams p{};
        p.q = q_d.p, p.k_cache = k_d.p, p.v_cache = v_d.p, p.positions = pos_d.p, p.table_offsets = off_d.p;
        p.block_tables = tab_d.p, p.out = out_d.p, p.workspace = ws.p;
        p.n = n, p.n_heads = cs.heads, p.n_kv_heads = cs.kv_heads, p.head_dim = cs.hd, p.block_size = bs;
        p.cache_rows = static_cast<int64_t>(total_blocks) * bs;
        p.window = cs.window, p.sinks = cs.sinks, p.layer_window = cs.layer_window, p.max_position = max_pos;
        p.scale = scale;
        p.tiles = tiles_d.p, p.n_tiles = n_tiles, p.singles = singles_d.p, p.n_singles = n_singles;
        p.tile_queries = tile_queries;
        p.decode_items = plan_d.p, p.decode_first = plan_d.p + 3 * n_items, p.n_decode_items = n_items;
        ASSERT_EQ(cudaMemset(out_d.p, 0xFF, out_d.n * sizeof(bf16)), cudaSuccess);  // NaN: every output is written
        kernels::attention(p, max_splits, nullptr);
        sync_ok();
        const auto out = to_f32(out_d.download());
        const double err = rel_l2(out, ref);
        EXPECT_LT(err, kBf16OutTolerance) << "max_splits=" << max_splits << " tile_queries=" << tile_queries;
        std::printf("[attention] heads %d/%d hd %d, %zu seqs, %d queries (%d tiles of <= %d, %d single), window %ld+%ld, layer window %ld, splits<=%d: rel err %.2e\n",
                    cs.heads, cs.kv_heads, cs.hd, cs.lengths.size(), n, n_tiles, tile_queries, n_singles,
                    static_cast<long>(cs.window), static_cast<long>(cs.sinks), static_cast<long>(cs.layer_window),
                    max_splits, err);
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
        kernels::gemv_bf16(x_d.p, w_d.p, y_d.p, n, k, m, beta, nullptr);
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
      kernels::gemv(p, nullptr);
      sync_ok();
      std::vector<double> ref(static_cast<size_t>(n) * m);
      for (int t = 0; t < n; ++t)
        for (int j = 0; j < m; ++j) ref[static_cast<size_t>(t) * m + j] = dot(t, j);
      EXPECT_LT(rel_l2(y_d.download(), ref), 1e-3) << "normalized input";

      Dev<bf16> act_d(static_cast<size_t>(n) * m);
      ASSERT_EQ(cudaMemset(act_d.p, 0xFF, act_d.n * sizeof(bf16)), cudaSuccess);  // NaN: every output is written
      p.y = nullptr, p.act = act_d.p;
      kernels::gemv(p, nullptr);
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

namespace {

struct ModelCompare {
  int positions = 0, top1_agree = 0, top1_close_ties = 0;
  double max_rel = 0;
};

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
    const size_t vocab = static_cast<size_t>(model.config.vocab_size);
    ModelCompare r;
    double num = 0, den = 0;
    for (size_t p = 0; p < ids.size(); ++p) {
      std::span<const float> ra(&a[p * vocab], vocab), rb(&b[p * vocab], vocab);
      for (size_t v = 0; v < vocab; ++v) {
        num += double(ra[v] - rb[v]) * (ra[v] - rb[v]);
        den += double(ra[v]) * ra[v];
      }
      const int32_t ta = argmax(ra), tb = argmax(rb);
      ++r.positions;
      if (ta == tb) ++r.top1_agree;
      else if (std::fabs(ra[ta] - ra[tb]) < 0.02f) ++r.top1_close_ties;  // a near-tie in the reference itself
    }
    const double rel = std::sqrt(num / den);
    std::printf("[cuda vs cpu] %s: %d positions, logits rel L2 %.2e, top-1 agree %d, near-ties (< 0.02) %d\n",
                preset.c_str(), r.positions, rel, r.top1_agree, r.top1_close_ties);
    EXPECT_LT(rel, 2e-2);
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


#endif
