// Element-wise ops of the forward pass: the embedding lookup and SwiGLU's silu(gate) * up (kernels/ops.h).
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/device_helpers.cuh"
#include "kernels/ops.h"

namespace abridge::kernels {
namespace {

// ---------------------------------------------------------------------------------------------
// kernels

__global__ void embed_kernel(const int32_t* tokens, const bf16* table, float* x, int d) {
  const int i = blockIdx.x;
  const bf16* row = table + static_cast<int64_t>(tokens[i]) * d;
  for (int j = threadIdx.x; j < d; j += blockDim.x) x[static_cast<int64_t>(i) * d + j] = __bfloat162float(row[j]);
}

// ffn % 4 == 0: four elements per thread, 16-byte loads. grid (n, ceil(ffn / 1024)), block 256 (rows
// in x: a step may have more than 65,535).
__global__ void silu_mul4_kernel(const float* gu, bf16* out, int ffn) {
  const int i = blockIdx.x, j = blockIdx.y * blockDim.x + threadIdx.x;
  if (j >= ffn / 4) return;
  const float4* g4 = reinterpret_cast<const float4*>(gu + static_cast<int64_t>(i) * 2 * ffn);
  const float4 g = g4[j], u = g4[ffn / 4 + j];
  __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(out + static_cast<int64_t>(i) * ffn) + 2 * j;
  o[0] = __floats2bfloat162_rn(silu(g.x) * u.x, silu(g.y) * u.y);
  o[1] = __floats2bfloat162_rn(silu(g.z) * u.z, silu(g.w) * u.w);
}

// grid (n, ceil(ffn / 256)): one element per thread, so a single decode row still fills the GPU.
__global__ void silu_mul_kernel(const float* gu, bf16* out, int ffn) {
  const int i = blockIdx.x, j = blockIdx.y * blockDim.x + threadIdx.x;
  if (j >= ffn) return;
  const float* g = gu + static_cast<int64_t>(i) * 2 * ffn;
  out[static_cast<int64_t>(i) * ffn + j] = __float2bfloat16(silu(g[j]) * g[ffn + j]);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// launchers

void embed(const int32_t* tokens, const bf16* table, float* x, int n, int d, cudaStream_t s) {
  if (n > 0) embed_kernel<<<n, 256, 0, s>>>(tokens, table, x, d);
}

void silu_mul(const float* gu, bf16* out, int n, int ffn, cudaStream_t s) {
  if (n <= 0) return;
  if (ffn % 4 == 0)
    silu_mul4_kernel<<<dim3(n, (ffn / 4 + 255) / 256), 256, 0, s>>>(gu, out, ffn);
  else
    silu_mul_kernel<<<dim3(n, (ffn + 255) / 256), 256, 0, s>>>(gu, out, ffn);
}

}  // namespace abridge::kernels
