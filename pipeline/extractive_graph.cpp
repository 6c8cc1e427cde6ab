#include "pipeline/extractive_graph.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace abridge::pipeline::extractive_graph {
namespace {

constexpr size_t kTopNeighbours = 32;   // edges kept per sentence: enough for centrality, bounded cost
constexpr size_t kMinPostingCap = 32;   // a term in more sentences than max(this, n / kCapDivisor)
constexpr size_t kCapDivisor = 64;      // is left out of the graph (not of the MMR similarity)
constexpr double kDamping = 0.85;       // TextRank's damping factor
constexpr int kMaxIterations = 100;
constexpr double kTolerance = 1e-9;     // L1 change of the scores that ends the power iteration

}  // namespace

// Cosines of row r with every row that shares a term of document frequency <= max_df, accumulated in
// acc (size rows, all zero on entry); the rows touched are listed in touched.
void similarities(const Vectors& v, size_t r, size_t max_df, std::vector<double>& acc, std::vector<uint32_t>& touched) {
  touched.clear();
  for (size_t k = v.row_begin[r]; k < v.row_begin[r + 1]; ++k) {
    const uint32_t t = v.row_term[k];
    if (v.df(t) > max_df) continue;
    const double w = v.row_weight[k];
    for (size_t p = v.post_begin[t]; p < v.post_begin[t + 1]; ++p) {
      const uint32_t j = v.post_row[p];
      if (acc[j] == 0) touched.push_back(j);
      acc[j] += w * v.post_weight[p];
    }
  }
}


Graph build_graph(const Vectors& v) {
  const size_t n = v.rows();
  const size_t max_df = std::max(kMinPostingCap, n / kCapDivisor);
  Graph g;
  g.edge_begin.reserve(n + 1);
  g.edge_begin.assign(1, 0);
  // The most edges there can be, reserved once (a vector that doubles holds three times its size while
  // it moves); pages of the reservation that are never written take no memory.
  g.edge_to.reserve(n * std::min(kTopNeighbours, n));
  g.edge_w.reserve(n * std::min(kTopNeighbours, n));
  std::vector<double> acc(n, 0.0);
  std::vector<uint32_t> touched;
  std::vector<std::pair<double, uint32_t>> row;
  for (size_t r = 0; r < n; ++r) {
    similarities(v, r, max_df, acc, touched);
    row.clear();
    for (const uint32_t j : touched) {
      if (j != r && acc[j] > 1e-12) row.emplace_back(acc[j], j);
      acc[j] = 0;
    }
    auto stronger = [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; };
    if (row.size() > kTopNeighbours) {
      std::nth_element(row.begin(), row.begin() + kTopNeighbours, row.end(), stronger);
      row.resize(kTopNeighbours);
    }
    std::sort(row.begin(), row.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    for (const auto& [w, j] : row) {
      g.edge_to.push_back(j);
      g.edge_w.push_back(static_cast<float>(w));
    }
    g.edge_begin.push_back(g.edge_to.size());
  }
  return g;
}

// TextRank (PageRank over the cosine edges): each row's centrality, summing to 1.
std::vector<double> textrank(const Graph& g) {
  const size_t n = g.edge_begin.size() - 1;
  std::vector<double> out_sum(n, 0.0);
  for (size_t r = 0; r < n; ++r)
    for (size_t k = g.edge_begin[r]; k < g.edge_begin[r + 1]; ++k) out_sum[r] += g.edge_w[k];
  std::vector<double> score(n, 1.0 / static_cast<double>(n)), next(n);
  for (int it = 0; it < kMaxIterations; ++it) {
    double dangling = 0;
    for (size_t r = 0; r < n; ++r)
      if (out_sum[r] == 0) dangling += score[r];
    std::fill(next.begin(), next.end(), (1 - kDamping + kDamping * dangling) / static_cast<double>(n));
    for (size_t r = 0; r < n; ++r) {
      if (out_sum[r] == 0) continue;
      const double share = kDamping * score[r] / out_sum[r];
      for (size_t k = g.edge_begin[r]; k < g.edge_begin[r + 1]; ++k) next[g.edge_to[k]] += share * g.edge_w[k];
    }
    double change = 0;
    for (size_t r = 0; r < n; ++r) change += std::fabs(next[r] - score[r]);
    score.swap(next);
    if (change < kTolerance) break;
  }
  return score;
}

// Directed, position-aware centrality (PacSum, Zheng and Lapata 2019): a sentence is central when
// the sentences after it elaborate on it; an edge to an earlier sentence counts `back` times (a
// negative weight: a sentence that repeats what came before is less central). Edge weights are
// taken above the weakest edge of the graph (PacSum's threshold min + beta (max - min) with
// beta = 0; a higher beta was worse).
std::vector<double> directed_centrality(const Graph& g, double back) {
  const size_t n = g.edge_begin.size() - 1;
  const double floor = g.edge_w.empty() ? 0.0 : *std::min_element(g.edge_w.begin(), g.edge_w.end());
  std::vector<double> c(n, 0.0);
  for (size_t r = 0; r < n; ++r)
    for (size_t k = g.edge_begin[r]; k < g.edge_begin[r + 1]; ++k) {
      const double w = g.edge_w[k] - floor;
      c[r] += g.edge_to[k] > r ? w : back * w;
    }
  return c;
}

// Scales xs to [0, 1] (all equal: all 1).
void normalize(std::vector<double>& xs) {
  if (xs.empty()) return;
  const auto [lo, hi] = std::minmax_element(xs.begin(), xs.end());
  const double a = *lo, span = *hi - *lo;
  for (double& x : xs) x = span > 0 ? (x - a) / span : 1.0;
}

}  // namespace abridge::pipeline::extractive_graph
