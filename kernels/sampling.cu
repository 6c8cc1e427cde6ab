// Token sampling on the device (kernels/ops.h).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "base/sampling.h"
#include "kernels/device_helpers.cuh"
#include "kernels/ops.h"

namespace abridge::kernels {
namespace {

// ---------------------------------------------------------------------------------------------
// kernels

constexpr int kSampleThreads = 1024;

// Sum of 64-bit integers over the block (exact in any order); every thread gets it. `scratch` holds 32.
__device__ uint64_t block_sum_u64(uint64_t v, unsigned long long* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < (kSampleThreads >> 5) ? scratch[lane] : 0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One block per row: the rule of base/sampling.h. Each pass recomputes the weights from the logits (a
// row of 151,936 floats is read from L2 once per pass): the maximum, the total weight, top-p's
// threshold by a radix select over the weights' bits (8 at a time: six passes), and the draw.
__global__ void __launch_bounds__(kSampleThreads) sample_kernel(const float* logits, int vocab, const SampleRow* rows,
                                                                int32_t* out) {
  __shared__ float scratch[32];
  __shared__ int iscratch[32];
  __shared__ unsigned long long uscratch[32];
  __shared__ unsigned long long hist[256];
  __shared__ unsigned long long prefix[kSampleThreads];
  __shared__ unsigned long long chosen[2];
  const int r = blockIdx.x, tid = threadIdx.x;
  const SampleRow row = rows[r];
  const int n = row.vocab_limit > 0 && row.vocab_limit < vocab ? row.vocab_limit : vocab;
  const float* x = logits + static_cast<int64_t>(r) * vocab;

  // The maximum (NaN ignored) and its first index: the greedy token (0 when no logit is above -inf).
  float best = -INFINITY;
  int best_i = n;
  for (int i = tid; i < n; i += kSampleThreads)
    if (x[i] > best) best = x[i], best_i = i;
  const float mx = block_max(best, scratch);
  int greedy = best == mx ? best_i : n;
  for (int o = 16; o > 0; o >>= 1) greedy = min(greedy, __shfl_xor_sync(0xffffffffu, greedy, o));
  __syncthreads();
  if ((tid & 31) == 0) iscratch[tid >> 5] = greedy;
  __syncthreads();
  greedy = iscratch[tid & 31];
  for (int o = 16; o > 0; o >>= 1) greedy = min(greedy, __shfl_xor_sync(0xffffffffu, greedy, o));
  if (greedy >= n) greedy = 0;
  if (row.temperature <= 0.0f) {
    if (tid == 0) out[r] = greedy;
    return;
  }
  const float inv_t = sampling::recip_rn(row.temperature);
  auto weight = [&](int i) { return sampling::token_weight(x[i], mx, inv_t); };
  uint64_t local = 0;
  for (int i = tid; i < n; i += kSampleThreads) local += weight(i);
  const uint64_t total = block_sum_u64(local, uscratch);
  if (total == 0) {
    if (tid == 0) out[r] = greedy;
    return;
  }
  // Top-p's theta: the largest value whose kept weight {W_i >= theta} reaches the target, found digit
  // by digit from the top. `above` is the weight of the tokens whose digits so far exceed the prefix.
  uint64_t theta = 1;
  if (row.top_p < 1.0f) {
    const uint64_t target = sampling::nucleus_target(row.top_p, total);
    uint64_t high = 0, above = 0;
    for (int shift = 40; shift >= 0; shift -= 8) {
      for (int b = tid; b < 256; b += kSampleThreads) hist[b] = 0;
      __syncthreads();
      for (int i = tid; i < n; i += kSampleThreads) {
        const uint64_t w = weight(i);
        if (w != 0 && (w >> (shift + 8)) == high) atomicAdd(&hist[(w >> shift) & 255], static_cast<unsigned long long>(w));
      }
      __syncthreads();
      if (tid == 0) {  // the largest digit whose tokens, with all above them, still reach the target
        uint64_t cum = above;
        int b = 255;
        for (; b > 0; --b) {
          if (cum + hist[b] >= target) break;
          cum += hist[b];
        }
        chosen[0] = (high << 8) | static_cast<uint64_t>(b);
        chosen[1] = cum;
      }
      __syncthreads();
      high = chosen[0];
      above = chosen[1];
    }
    theta = high;
  }
  // The draw: each thread owns a contiguous range of ids; an exclusive scan of the ranges' kept
  // weights finds the range that holds the draw's point, and its thread walks it in id order.
  const int per = (n + kSampleThreads - 1) / kSampleThreads;
  const int begin = min(n, tid * per), end = min(n, begin + per);
  uint64_t mine = 0;
  for (int i = begin; i < end; ++i) {
    const uint64_t w = weight(i);
    if (w >= theta) mine += w;
  }
  __syncthreads();
  prefix[tid] = mine;
  __syncthreads();
  if (tid == 0) {  // exclusive scan of the per-thread weights (1024 values)
    uint64_t acc = 0;
    for (int t = 0; t < kSampleThreads; ++t) {
      const uint64_t v = prefix[t];
      prefix[t] = acc;
      acc += v;
    }
    chosen[0] = acc;  // the kept weight
  }
  __syncthreads();
  const uint64_t point = sampling::draw_point(row.seed, row.counter, chosen[0]);
  const uint64_t start = prefix[tid];
  if (point >= start && point < start + mine) {
    uint64_t acc = start;
    for (int i = begin; i < end; ++i) {
      const uint64_t w = weight(i);
      if (w < theta) continue;
      acc += w;
      if (point < acc) {
        out[r] = i;
        break;
      }
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// launchers

void sample(const float* logits, int vocab, const SampleRow* rows, int n_rows, int32_t* out, cudaStream_t s) {
  if (vocab < 1 || vocab >= sampling::kMaxCandidates)
    throw std::invalid_argument("sample: a vocabulary of " + std::to_string(vocab) + " (1 to " +
                                std::to_string(sampling::kMaxCandidates - 1) + ")");
  if (n_rows > 0) sample_kernel<<<n_rows, kSampleThreads, 0, s>>>(logits, vocab, rows, out);
}

}  // namespace abridge::kernels
