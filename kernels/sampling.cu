// Token sampling on the device (kernels/ops.h).
#include <cuda_bf16.h>

#include <cfloat>
#include <cstdint>

#include "base/rng.h"
#include "kernels/device_helpers.cuh"
#include "kernels/ops.h"

namespace abridge::kernels {
namespace {

// ---------------------------------------------------------------------------------------------
// kernels

// ---- sampling

constexpr int kSampleThreads = 1024;

__global__ void __launch_bounds__(kSampleThreads) sample_kernel(const float* logits, int vocab, const SampleRow* rows,
                                                                int32_t* out) {
  __shared__ float scratch[32];
  __shared__ int iscratch[32];
  __shared__ float prefix[kSampleThreads];
  const int r = blockIdx.x, tid = threadIdx.x;
  const SampleRow row = rows[r];
  const int n = row.vocab_limit > 0 && row.vocab_limit < vocab ? row.vocab_limit : vocab;
  const float* x = logits + static_cast<int64_t>(r) * vocab;

  // The maximum and, for greedy, its first index.
  float best = -FLT_MAX;
  int best_i = n;
  for (int i = tid; i < n; i += kSampleThreads)
    if (x[i] > best) best = x[i], best_i = i;
  const float mx = block_max(best, scratch);
  if (row.temperature <= 0.0f) {
    int cand = best == mx ? best_i : n;
    for (int o = 16; o > 0; o >>= 1) cand = min(cand, __shfl_xor_sync(0xffffffffu, cand, o));
    __syncthreads();
    if ((tid & 31) == 0) iscratch[tid >> 5] = cand;
    __syncthreads();
    if (tid < 32) {
      int c = iscratch[tid];
      for (int o = 16; o > 0; o >>= 1) c = min(c, __shfl_xor_sync(0xffffffffu, c, o));
      if (tid == 0) out[r] = c;
    }
    return;
  }
  // Probabilities up to the normalizer: q_i = exp((x_i - max) / T) / sum.
  const float inv_t = 1.0f / row.temperature;
  float local = 0;
  for (int i = tid; i < n; i += kSampleThreads) local += __expf((x[i] - mx) * inv_t);
  const float sum = block_sum(local, scratch);
  // Nucleus: the largest threshold theta whose kept mass {q_i >= theta} still reaches top_p.
  float theta = 0.0f;
  if (row.top_p < 1.0f) {
    float lo = 0.0f, hi = 1.0f;
    for (int it = 0; it < 24; ++it) {
      const float mid = 0.5f * (lo + hi);
      float m = 0;
      for (int i = tid; i < n; i += kSampleThreads) {
        const float q = __expf((x[i] - mx) * inv_t) / sum;
        if (q >= mid) m += q;
      }
      m = block_sum(m, scratch);
      if (m >= row.top_p) lo = mid;
      else hi = mid;
    }
    theta = lo;
  }
  // Draw: walk the kept tokens in id order; each thread owns a contiguous range of ids.
  const int per = (n + kSampleThreads - 1) / kSampleThreads;
  const int begin = tid * per, end = min(n, begin + per);
  float mine = 0;
  for (int i = begin; i < end; ++i) {
    const float q = __expf((x[i] - mx) * inv_t) / sum;
    if (q >= theta) mine += q;
  }
  __syncthreads();
  prefix[tid] = mine;
  __syncthreads();
  if (tid == 0) {  // exclusive scan of the per-thread masses (1024 values)
    float acc = 0;
    for (int t = 0; t < kSampleThreads; ++t) {
      const float v = prefix[t];
      prefix[t] = acc;
      acc += v;
    }
    scratch[0] = acc;  // the kept mass
  }
  __syncthreads();
  const float target = static_cast<float>(counter_uniform(row.seed, row.counter)) * scratch[0];
  const float start = prefix[tid];
  if (target >= start && target < start + mine) {
    float acc = start;
    int pick = -1, last_kept = -1;
    for (int i = begin; i < end; ++i) {
      const float q = __expf((x[i] - mx) * inv_t) / sum;
      if (q < theta) continue;
      last_kept = i;
      acc += q;
      if (target < acc) {
        pick = i;
        break;
      }
    }
    out[r] = pick >= 0 ? pick : last_kept;
  }
  // Rounding can leave the target past the last range: then the last kept token wins.
  if (tid == kSampleThreads - 1 && target >= start + mine) {
    int last_kept = -1;
    for (int i = n - 1; i >= 0 && last_kept < 0; --i)
      if (__expf((x[i] - mx) * inv_t) / sum >= theta) last_kept = i;
    out[r] = last_kept;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// launchers

void sample(const float* logits, int vocab, const SampleRow* rows, int n_rows, int32_t* out, cudaStream_t s) {
  if (n_rows > 0) sample_kernel<<<n_rows, kSampleThreads, 0, s>>>(logits, vocab, rows, out);
}

}  // namespace abridge::kernels
