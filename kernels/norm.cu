// RMSNorm of residual-stream rows to bf16 (kernels/ops.h).
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/device_helpers.cuh"
#include "kernels/ops.h"

namespace abridge::kernels {
namespace {

// ---------------------------------------------------------------------------------------------
// kernels

__global__ void rms_norm_kernel(const float* x, const int32_t* rows, const float* w, bf16* y, int d, float eps) {
  __shared__ float scratch[32];
  const int i = blockIdx.x;
  const float* xr = x + static_cast<int64_t>(rows ? rows[i] : i) * d;
  float ss = 0;
  for (int j = threadIdx.x; j < d; j += blockDim.x) ss += xr[j] * xr[j];
  ss = block_sum(ss, scratch);
  const float scale = rsqrtf(ss / static_cast<float>(d) + eps);
  for (int j = threadIdx.x; j < d; j += blockDim.x)
    y[static_cast<int64_t>(i) * d + j] = __float2bfloat16(w[j] * (xr[j] * scale));
}

// Many rows of width d % 4 == 0: one warp per row, 16-byte loads, the row re-read from L1 for the
// output. grid ceil(n / 8), block 256.
__global__ void __launch_bounds__(256) rms_norm_rows_kernel(const float* x, const int32_t* rows, const float* w, bf16* y,
                                                            int n, int d, float eps) {
  const int lane = threadIdx.x & 31, i = blockIdx.x * 8 + (threadIdx.x >> 5);
  if (i >= n) return;
  const float4* xr = reinterpret_cast<const float4*>(x + static_cast<int64_t>(rows ? rows[i] : i) * d);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float ss = 0;
  for (int j = lane; j < d / 4; j += 32) ss += sum_squares(xr[j]);
  const float scale = rsqrtf(warp_sum(ss) / static_cast<float>(d) + eps);
  __nv_bfloat162* out = reinterpret_cast<__nv_bfloat162*>(y + static_cast<int64_t>(i) * d);
  for (int j = lane; j < d / 4; j += 32) store_normalized(out + 2 * j, xr[j], w4[j], scale);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// launchers

void rms_norm(const float* x, const int32_t* rows, const float* w, bf16* y, int n, int d, float eps, const DeviceCaps& dev,
              cudaStream_t s) {
  if (n <= 0) return;
  // A warp per row needs many rows to fill the GPU (a prefill chunk); a few rows (decode steps) each
  // get a block, whose threads share the row's loads.
  if (d % 4 == 0 && n >= 16 * dev.multiprocessors)
    rms_norm_rows_kernel<<<(n + 7) / 8, 256, 0, s>>>(x, rows, w, y, n, d, eps);
  else
    rms_norm_kernel<<<n, d >= 1024 ? 1024 : 256, 0, s>>>(x, rows, w, y, d, eps);
}

}  // namespace abridge::kernels
