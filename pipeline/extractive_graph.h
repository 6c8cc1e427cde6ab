// The extractive summarizer's graph (extractive.cpp): the candidates' tf-idf vectors as rows and an
// inverted index, the sparse similarity graph of each sentence's strongest neighbours, and the
// centralities read from it (TextRank; PacSum's directed, position-aware one). Pure functions over
// these structures; the sentences and their terms, the priors and the selection stay in extractive.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace abridge::pipeline::extractive_graph {

// Sparse, L2-normalized tf-idf vectors of the candidates, rows and an inverted index (by term). With
// the graph below, the largest structure of a long document: 8 bytes an entry on each side (a sentence
// of prose has some ten distinct terms). Weights are computed in double and kept in float: a cosine
// needs no more than float's seven digits, and double would take a third more memory.
struct Vectors {
  std::vector<size_t> row_begin;    // (n + 1) offsets into row_term / row_weight
  std::vector<uint32_t> row_term;   // distinct terms of each row that other rows share, ascending
  std::vector<float> row_weight;    // tf * idf / the row's L2 norm
  std::vector<size_t> post_begin;   // (terms of two rows or more + 1) offsets into post_row / post_weight
  std::vector<uint32_t> post_row;   // rows holding each term, ascending
  std::vector<float> post_weight;

  size_t rows() const { return row_begin.size() - 1; }
  size_t df(uint32_t t) const { return post_begin[t + 1] - post_begin[t]; }
};

// The kTopNeighbours strongest edges (cosines) of each row, by row, in ascending order of the other row:
// 8 bytes an edge.
struct Graph {
  std::vector<size_t> edge_begin;  // (n + 1) offsets into edge_to / edge_w
  std::vector<uint32_t> edge_to;
  std::vector<float> edge_w;
};

// Cosines of row r with every row that shares a term of document frequency <= max_df, accumulated in
// acc (size rows, all zero on entry); the rows touched are listed in touched.
void similarities(const Vectors& v, size_t r, size_t max_df, std::vector<double>& acc, std::vector<uint32_t>& touched);

// The graph of `v`: each row's kTopNeighbours strongest edges, over the terms in at most
// max(kMinPostingCap, rows / kCapDivisor) rows (a term in more says little of what a sentence is about).
Graph build_graph(const Vectors& v);

// TextRank (PageRank over the cosine edges): each row's centrality, summing to 1.
std::vector<double> textrank(const Graph& g);

// Directed, position-aware centrality (PacSum, Zheng and Lapata 2019): a sentence is central when
// the sentences after it elaborate on it; an edge to an earlier sentence counts `back` times (a
// negative weight: a sentence that repeats what came before is less central). Edge weights are
// taken above the weakest edge of the graph (PacSum's threshold min + beta (max - min) with
// beta = 0; a higher beta was worse).
std::vector<double> directed_centrality(const Graph& g, double back);

// Scales xs to [0, 1] (all equal: all 1).
void normalize(std::vector<double>& xs);

}  // namespace abridge::pipeline::extractive_graph
