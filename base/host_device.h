// Functions that CUDA kernels and host code share (the sampling draw, the attention span) are marked
// ABRIDGE_HOST_DEVICE: __host__ __device__ under nvcc, nothing for the host compiler.
#pragma once

#if defined(__CUDACC__)
#define ABRIDGE_HOST_DEVICE __host__ __device__
#else
#define ABRIDGE_HOST_DEVICE
#endif
