// Hopper-only kernels (sm_90a), compiled when the build targets compute capability 9.0.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/ops.h"

namespace abridge::kernels::sm90 {

// Prefill attention over tiles of up to 128 queries (AttentionParams::tiles made with
// kAttentionTileQueriesSm90), head_dim 128 only. cp_async_only: copy K/V with cp.async instead of TMA
// (PrefillAttention::kWgmmaCpAsync, a diagnostic).
void attention_tiles(const AttentionParams& p, bool cp_async_only, cudaStream_t s);

}  // namespace abridge::kernels::sm90
