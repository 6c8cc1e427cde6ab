// The FP8 KV cache's two rules that the engine (its rounding twin and byte counts, engine/fp8.h and
// engine/config.h) and the CUDA kernels (kernels/rope_kv.cu writes, the attention kernels read) share,
// so that both follow one copy.
#pragma once

#include <math.h>

#include <cstdint>

#include "base/host_device.h"

namespace abridge {

// The scale byte of one token's KV head whose largest |value| is amax: the smallest power of two 2^E
// with amax <= 448 * 2^E (448: e4m3fn's largest finite value), so no value saturates, as E + 127
// (1..254; the e8m0 form of OCP's microscaling formats), 0 for an all-zero head (scale 0) and 254 for an
// infinite one. E comes from amax / 448 rounded to float (frexpf), raised by one where that rounding
// fell short: exact float steps, the same bits on the CPU and the GPU.
ABRIDGE_HOST_DEVICE inline uint8_t fp8_kv_scale_byte(float amax) {
  if (!(amax > 0.0f)) return 0;
  if (!(amax <= 3.402823466e38f)) return 254;  // infinite
  int e = 0;
  const float f = frexpf(amax / 448.0f, &e);  // amax / 448 ~= f * 2^e, f in [0.5, 1)
  if (f == 0.5f) --e;                         // an exact power of two: 2^(e - 1)
  if (amax > ldexpf(448.0f, e)) ++e;          // the division rounded down past 2^e
  const int b = e + 127;
  return static_cast<uint8_t>(b < 1 ? 1 : b > 254 ? 254 : b);
}

// Bytes of one cache row's scales: one per KV head, padded to a multiple of 4 so that a reader copies
// the 4-byte word that holds its head's byte (cp.async's smallest piece).
ABRIDGE_HOST_DEVICE constexpr int64_t kv_scale_row_bytes(int64_t n_kv_heads) { return (n_kv_heads + 3) / 4 * 4; }

}  // namespace abridge
