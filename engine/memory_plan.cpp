#include "engine/memory_plan.h"

#include <algorithm>
#include <climits>

#include "base/error.h"
#include "engine/kv_blocks.h"

namespace abridge::engine {
namespace {

// One cudaMalloc of the backend (Impl::alloc): `count` elements of `size` bytes, at least 16 bytes.
uint64_t alloc(int64_t count, int64_t size) { return std::max<uint64_t>(static_cast<uint64_t>(count * size), 16); }

int64_t fp8_gemm_rows(int64_t n) { return (n + 15) / 16 * 16; }  // kernels::fp8_gemm_rows
int64_t fp8_groups(int64_t k) { return (k + 127) / 128; }         // kernels::fp8_blocks

constexpr int64_t kBlasWorkspace = int64_t{32} << 20;  // CudaBackend: cuBLAS's fixed workspace
constexpr int64_t kSampleRowBytes = 32;                // sizeof(kernels::SampleRow): 2 floats, 2 u64, 2 i32
constexpr int64_t kMinAttentionWorkspaceFloats = int64_t{64} << 20;
constexpr int64_t kAttentionSplits = 8;                // the backend's partials: 8 key splits for a full batch

}  // namespace

uint64_t cuda_buffer_bytes(const ModelConfig& c, const CudaBufferOptions& o) {
  ABRIDGE_CHECK(o.step_tokens > 0 && o.logit_rows > 0);
  const int64_t d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), ffn = c.intermediate_size, hd = c.head_dim;
  const int64_t L = c.num_hidden_layers, V = c.vocab_size, T = o.step_tokens, R = o.logit_rows;
  uint64_t b = alloc(kBlasWorkspace, 1);
  // CudaFp8::finish(): the step's activation codes and scales; for the dequantized path also the
  // activations as bf16 and one scratch of the largest fallback part (q/k/v and gate/up fused where
  // every member but the last ends on a 128-row tile, as CudaFp8::upload fuses them).
  const int64_t Tp = o.fp8_weights ? fp8_gemm_rows(T) : T;
  if (o.fp8_weights) {
    const int64_t max_k = std::max({d, qd, ffn});
    b += alloc(Tp * max_k, 1) + alloc(fp8_groups(max_k) * Tp, 4);
    if (o.fp8_dequantized_gemm) {
      const int64_t qkv = qd % 128 == 0 && kvd % 128 == 0 ? (qd + 2 * kvd) * d : std::max(qd, kvd) * d;
      const int64_t gate_up = ffn % 128 == 0 ? 2 * ffn * d : ffn * d;
      b += alloc(T * max_k, 2) + alloc(std::max({qkv, d * qd, gate_up, d * ffn}), 2);
    }
  }
  // Norms: input, post, q and k of each layer and the final one, f32 on the device where
  // device_weight_bytes counts two bytes a value; each its own allocation. Then the RoPE frequencies.
  b += static_cast<uint64_t>(L) * (2 * (alloc(d, 4) - alloc(d, 2)) + 2 * (alloc(hd, 4) - alloc(hd, 2))) +
       (alloc(d, 4) - alloc(d, 2));
  b += alloc(hd / 2, 4);
  // Activations (Impl: x, h, qkv, q, att, gu, act, hl, logits, sampling rows and results).
  b += alloc(Tp * d, 4) + alloc(T * std::max(d, qd), 2) + alloc(Tp * (qd + 2 * kvd), 4) + alloc(T * qd, 2) +
       alloc(T * qd, 2) + alloc(Tp * 2 * ffn, 4) + alloc(T * ffn, 2) + alloc(R * d, 2) + alloc(R * V, 4) +
       alloc(R, kSampleRowBytes) + alloc(R, 4);
  // Attention partials: kernels::attention_workspace_floats(T, heads, head_dim, 8), at least 64 Mi floats.
  const int64_t ws = std::max(T * c.num_attention_heads * kAttentionSplits * (hd + 2), kMinAttentionWorkspaceFloats);
  b += alloc(ws, 4);
  return b;
}

int64_t cuda_kv_tokens(const ModelConfig& c, uint64_t memory, uint64_t weight_bytes, uint64_t buffer_bytes,
                       KvCacheDtype dtype, int64_t block_tokens) {
  ABRIDGE_CHECK(block_tokens > 0 && block_tokens <= INT32_MAX);
  const uint64_t held = weight_bytes + buffer_bytes;
  if (memory <= held) return 0;
  return int64_t{kv_blocks_for_memory(c, memory - held, static_cast<int32_t>(block_tokens), dtype)} * block_tokens;
}

std::vector<GpuCard> reference_gpu_cards() {
  constexpr uint64_t GiB = uint64_t{1} << 30;
  auto by_fraction = [](double card_gib) {
    return static_cast<uint64_t>((kDefaultGpuMemoryFraction * card_gib - 1.2) * static_cast<double>(GiB));
  };
  return {{"24 GB", 22 * GiB}, {"48 GB", by_fraction(48)}, {"80 GB", by_fraction(80)}, {"141 GB", by_fraction(141)}};
}

}  // namespace abridge::engine
