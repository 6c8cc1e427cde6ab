// Prefill attention for Hopper (sm_90a): warpgroup matrix instructions (wgmma) on shared-memory tiles
// in the 128-byte swizzled layout, two consumer warpgroups of 64 queries each sharing every K/V tile.
// Built only when the project targets compute capability 9.0; attention.cu calls it for 128-query tiles of
// head_dim 128 on such a device and keeps the mma.sync kernel for every other case.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cudaTypedefs.h>

#include <cmath>
#include <cstdint>

#include "base/attention_span.h"
#include "kernels/device_helpers.cuh"
#include "kernels/ops.h"
#include "kernels/sm90/attention_sm90.h"

namespace abridge::kernels::sm90 {
namespace {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ABRIDGE_SM90A_DEVICE 1
#endif

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

#ifdef ABRIDGE_SM90A_DEVICE
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins accumulator registers in place: the compiler may not move their reads or writes across this
// point, so none lands inside another warpgroup operation's issue window.
template <int N>
__device__ __forceinline__ void fence_operands(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// Waits until the barrier's phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// One box of a 3-D tensor map (x, y, z) into shared memory; completion counts bytes on `bar`.
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap* map, int x, int y, int z, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(z), "r"(bar)
      : "memory");
}

// A shared-memory matrix descriptor in the 128-byte swizzle mode: start address, leading and stride
// byte offsets (16-byte units). K-major operands ignore the leading offset; MN-major ones step by it
// from one 64-element column panel to the next. Tiles are 1024-byte aligned, so the base offset is 0.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(lbo >> 4) << 16) |
         (static_cast<uint64_t>(sbo >> 4) << 32) | (1ull << 62);
}

// D (64, 128) f32 {+}= A (64, 16) . B (128, 16)^T, both bf16 in shared memory (K-major descriptors).
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// D (64, 128) f32 += A (64, 16) bf16 in registers . B (16, 128) bf16 in shared memory (MN-major descriptor).
__device__ __forceinline__ void wgmma_m64n128k16_rs_tb(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}

#endif  // ABRIDGE_SM90A_DEVICE

constexpr int kHd = 128;             // head_dim of this kernel
constexpr int kRows = 64;            // queries per warpgroup
constexpr int kQueries = 2 * kRows;  // queries per block
constexpr int kConsumers = 256;      // two warpgroups

// kTma: a third warpgroup copies K/V with the tensor memory accelerator (whole cache blocks, swizzled
// by the hardware; one thread issues them) and gives its registers to the two computing warpgroups,
// which wait on per-stage barriers; otherwise every thread copies with cp.async and the block
// synchronizes once per tile.
template <int BC, bool kTma>
struct Layout {
  static_assert(BC == 128, "S tiles are m64n128 wgmma products");
  static constexpr int kThreads = kConsumers + (kTma ? 128 : 0);
  static constexpr int kQBytes = kQueries * kHd * 2;  // two warpgroups' tiles of (64, 128)
  static constexpr int kTileBytes = BC * kHd * 2;     // one K or V tile
  static constexpr int kStages = 3;
  static constexpr int kBarrierOffset = kQBytes + 2 * kStages * kTileBytes;  // then full K, full V, empty per stage
  static constexpr int kBytes = kBarrierOffset + 3 * kStages * 8;
  static constexpr int kAlloc = kBytes + 1024;  // room to align the base to 1024 bytes
};

// Byte offset of element chunk c (8 bf16, 0..15) of row r in a (rows, 128) tile stored as two
// column panels of (rows, 64), each row 128 bytes with its 16-byte chunks permuted by r mod 8.
__device__ __forceinline__ uint32_t swizzled(int r, int c, int rows) {
  return static_cast<uint32_t>((c >> 3) * rows * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4));
}

// grid (n_tiles, n_heads): warpgroup w takes queries [64 w, 64 w + 64) of the tile. K/V tiles of BC
// keys go through three shared-memory stages. Each warpgroup computes S = Q K^T with wgmma from shared
// memory, the online softmax in registers, and O += P V with P from registers and V read through a
// transposing (MN-major) descriptor. S of a tile and P V of the previous one are issued together, and
// the softmax runs while P V is still on the tensor cores.
template <int BC, bool kTma>
__global__ void __launch_bounds__(Layout<BC, kTma>::kThreads, 1)
    attention_kernel(const __grid_constant__ CUtensorMap k_map, const __grid_constant__ CUtensorMap v_map,
                     AttentionParams p) {
#ifdef ABRIDGE_SM90A_DEVICE
  using L = Layout<BC, kTma>;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  const uint32_t q_s = base;
  const uint32_t k_s = q_s + L::kQBytes;
  const uint32_t v_s = k_s + L::kStages * L::kTileBytes;
  const uint32_t full_k = base + L::kBarrierOffset, full_v = full_k + 8 * L::kStages, empty = full_v + 8 * L::kStages;

  const int tile = blockIdx.x, h = blockIdx.y, kvh = h / (p.n_heads / p.n_kv_heads);
  const int t0 = p.tiles[4 * tile], count = p.tiles[4 * tile + 1], table_offset = p.tiles[4 * tile + 3];
  const int p0 = p.tiles[4 * tile + 2];
  const int32_t* table = p.block_tables + table_offset;
  const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, warp = (tid >> 5) & 3;
  const uint32_t bs = static_cast<uint32_t>(p.block_size);

  // Key ranges: the sinks [0, sink_hi), then the main range [lo, last], its tiles starting at a
  // multiple of BC (keys below lo are masked). Positions fit in int32.
  const int last = p0 + count - 1;
  const AttentionSpan first_span = attention_span(p0, p.window, p.sinks, p.layer_window);
  const int lo = static_cast<int>(first_span.begin), sink_hi = static_cast<int>(first_span.sink_end);
  const int lo_tile = lo - lo % BC;
  const int n_sink_tiles = (sink_hi + BC - 1) / BC;
  const int n_key_tiles = n_sink_tiles + (last + 1 - lo_tile + BC - 1) / BC;
  auto tile_start = [&](int t) { return t < n_sink_tiles ? t * BC : lo_tile + (t - n_sink_tiles) * BC; };
  auto tile_end = [&](int t) { return t < n_sink_tiles ? sink_hi : last + 1; };

  if constexpr (kTma) {
    if (tid == 0) {
      for (int s = 0; s < L::kStages; ++s) {
        mbar_init(full_k + 8 * s, 1);
        mbar_init(full_v + 8 * s, 1);
        mbar_init(empty + 8 * s, kConsumers);
      }
      asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    if (tid >= kConsumers) {  // the copy warpgroup: one thread issues every box
      asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n" ::: "memory");
      if (tid == kConsumers) {
        const int oob = static_cast<int>(p.cache_rows);  // a row past the cache: the box reads as zeros
        for (int t = 0; t < n_key_tiles; ++t) {
          const int s = t % L::kStages, use = t / L::kStages;
          if (use > 0) mbar_wait(empty + 8 * s, (use - 1) & 1);
          const int k0 = tile_start(t), k_end = tile_end(t);
          const uint32_t stage = static_cast<uint32_t>(s) * L::kTileBytes;
          mbar_expect_tx(full_k + 8 * s, L::kTileBytes);
          mbar_expect_tx(full_v + 8 * s, L::kTileBytes);
          for (int b = 0; b < BC / p.block_size; ++b) {
            const int kp = k0 + b * p.block_size;
            int row = oob;
            if (kp < k_end) {
              const int32_t block = table[static_cast<uint32_t>(kp) / bs];
              if (block >= 0) row = block * p.block_size;
            }
            const uint32_t off = stage + static_cast<uint32_t>(b * p.block_size * 128);
            tma_load_3d(k_s + off, &k_map, 0, kvh, row, full_k + 8 * s);
            tma_load_3d(k_s + off + BC * 128, &k_map, 64, kvh, row, full_k + 8 * s);
            tma_load_3d(v_s + off, &v_map, 0, kvh, row, full_v + 8 * s);
            tma_load_3d(v_s + off + BC * 128, &v_map, 64, kvh, row, full_v + 8 * s);
          }
        }
      }
      return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n" ::: "memory");
  }

  // Q: rows past `count` are zeros. Row r of the tile lands in warpgroup r / 64's (64, 128) tile.
  {
    const int my = kTma ? (tid & 127) : tid, step = kTma ? 128 : kConsumers;
    for (int e = my; e < (kTma ? kRows : kQueries) * 16; e += step) {
      const int r = (kTma ? wg * kRows : 0) + (e >> 4), c = e & 15;
      const bool valid = r < count;
      const bf16* src = p.q + (static_cast<int64_t>(t0 + (valid ? r : 0)) * p.n_heads + h) * kHd + c * 8;
      cp_async16(q_s + (r >> 6) * (kRows * kHd * 2) + swizzled(r & 63, c, kRows), src, valid);
    }
    cp_async_commit();
    if constexpr (kTma) {  // each warpgroup waits for its own rows only
      cp_async_wait_group<0>();
      fence_proxy_async();
      asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wg) : "memory");
    }
  }

  // cp.async copies: key tile t into stage t % 3 (one commit group). Thread tid moves chunk tid % 16
  // of keys tid / 16 + 16 i; keys outside the range or in dropped blocks read as zeros.
  const int my_chunk = tid & 15, my_key = tid >> 4;
  const bf16* k_head = p.k_cache + kvh * kHd + my_chunk * 8;
  const bf16* v_head = p.v_cache + kvh * kHd + my_chunk * 8;
  const int64_t row_stride = static_cast<int64_t>(p.n_kv_heads) * kHd;
  auto issue = [&](int t) {
    const int k0 = tile_start(t), k_end = tile_end(t);
    const uint32_t stage = static_cast<uint32_t>(t % L::kStages) * L::kTileBytes;
#pragma unroll
    for (int i = 0; i < BC / 16; ++i) {
      const int r = my_key + 16 * i;
      const uint32_t kp = static_cast<uint32_t>(k0 + r);
      int64_t row = -1;
      if (static_cast<int>(kp) < k_end) {
        const uint32_t blk = kp / bs;
        const int32_t block = table[blk];
        if (block >= 0) row = static_cast<int64_t>(block) * bs + (kp - blk * bs);
      }
      const int64_t off = (row >= 0 ? row : 0) * row_stride;
      const uint32_t so = stage + swizzled(r, my_chunk, BC);
      cp_async16(k_s + so, k_head + off, row >= 0);
      cp_async16(v_s + so, v_head + off, row >= 0);
    }
    cp_async_commit();
  };

  // Per thread: rows rl and rl + 8 of its warpgroup's 64.
  const int rl = warp * 16 + (lane >> 2);
  const int qpos[2] = {p0 + wg * kRows + rl, p0 + wg * kRows + rl + 8};
  int q_sink_end[2], q_begin[2];
  for (int j = 0; j < 2; ++j) {
    const AttentionSpan q_span = attention_span(qpos[j], p.window, p.sinks, p.layer_window);
    q_begin[j] = static_cast<int>(q_span.begin), q_sink_end[j] = static_cast<int>(q_span.sink_end);
  }

  float o[kHd / 2];
#pragma unroll
  for (int i = 0; i < kHd / 2; ++i) o[i] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const float scale_log2 = p.scale * 1.4426950408889634f;
  const uint32_t q_wg = q_s + wg * (kRows * kHd * 2);

  auto issue_s = [&](float (&sc)[BC / 2], int t) {
    const uint32_t kt = k_s + static_cast<uint32_t>(t % L::kStages) * L::kTileBytes;
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kHd / 16; ++ks) {
      const uint32_t panel = ks >> 2, within = (ks & 3) * 32;
      const uint64_t da = smem_desc(q_wg + panel * (kRows * 128) + within, 16, 1024);
      const uint64_t db = smem_desc(kt + panel * (BC * 128) + within, 16, 1024);
      wgmma_m64n128k16_ss(sc, da, db, ks > 0);
    }
    wgmma_commit();
  };
  auto issue_pv = [&](const uint32_t (&pa)[BC / 16][4], int t) {
    const uint32_t vt = v_s + static_cast<uint32_t>(t % L::kStages) * L::kTileBytes;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk)
      wgmma_m64n128k16_rs_tb(o, pa[kk], smem_desc(vt + kk * 16 * 128, BC * 128, 1024));
    wgmma_commit();
  };

  // The online softmax of S_t (in `sc`, finished): masks it, updates m and l, leaves P_t in `sc`
  // and the factor that rescales O in alpha.
  auto softmax = [&](float (&sc)[BC / 2], int t, float (&alpha)[2]) {
    const int k0 = tile_start(t), k_end = tile_end(t), k_begin = t < n_sink_tiles ? 0 : lo;
    const int k_last = k0 + BC - 1;
    const bool whole = k_last < k_end && k0 >= k_begin && k_last <= qpos[0] &&
                       (k0 >= q_begin[0] || k_last < q_sink_end[0]) && (k0 >= q_begin[1] || k_last < q_sink_end[1]);
    if (!whole) {
#pragma unroll
      for (int i = 0; i < BC / 2; ++i) {
        const int j = (i >> 1) & 1;
        const int kp = k0 + (i >> 2) * 8 + (lane & 3) * 2 + (i & 1);
        const bool ok = kp < k_end && kp >= k_begin && kp <= qpos[j] && (kp < q_sink_end[j] || kp >= q_begin[j]);
        if (!ok) sc[i] = -INFINITY;
      }
    }
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int i = 0; i < BC / 2; ++i) mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], sc[i]);
    float neg[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      mx[j] = fmaxf(mx[j], __shfl_xor_sync(0xffffffffu, mx[j], 1));
      mx[j] = fmaxf(mx[j], __shfl_xor_sync(0xffffffffu, mx[j], 2));
      const float use = mx[j] == -INFINITY ? 0.0f : mx[j];
      alpha[j] = ex2((m[j] - use) * scale_log2);  // m = -inf: 0
      neg[j] = -use * scale_log2;
      m[j] = mx[j];
    }
    float sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < BC / 2; ++i) {
      const int j = (i >> 1) & 1;
      sc[i] = ex2(fmaf(sc[i], scale_log2, neg[j]));
      sum[j] += sc[i];
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      sum[j] += __shfl_xor_sync(0xffffffffu, sum[j], 1);
      sum[j] += __shfl_xor_sync(0xffffffffu, sum[j], 2);
      l[j] = l[j] * alpha[j] + sum[j];
    }
  };
  // P's accumulator layout is wgmma's A-register layout.
  uint32_t pa[BC / 16][4];
  auto pack = [&](const float (&sc)[BC / 2]) {
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
      pa[kk][0] = pack_bf16(sc[8 * kk + 0], sc[8 * kk + 1]);
      pa[kk][1] = pack_bf16(sc[8 * kk + 2], sc[8 * kk + 3]);
      pa[kk][2] = pack_bf16(sc[8 * kk + 4], sc[8 * kk + 5]);
      pa[kk][3] = pack_bf16(sc[8 * kk + 6], sc[8 * kk + 7]);
    }
  };
  auto rescale = [&](const float (&alpha)[2]) {
#pragma unroll
    for (int i = 0; i < kHd / 2; ++i) o[i] *= alpha[(i >> 1) & 1];
    fence_operands(o);
  };
  // cp.async copies: tile t has landed everywhere and every warpgroup is done with stage (t + 1) % 3
  // (tile t - 2): start the copy of tile t + 1 into it. TMA copies: wait for K of tile t.
  auto wait_k = [&](int t) {
    if constexpr (kTma) {
      mbar_wait(full_k + 8 * (t % L::kStages), (t / L::kStages) & 1);
    } else {
      cp_async_wait_group<0>();
      fence_proxy_async();  // the tensor cores read what cp.async wrote
      __syncthreads();
      if (t + 1 < n_key_tiles) issue(t + 1);
    }
  };
  auto wait_v = [&](int t) {
    if constexpr (kTma) mbar_wait(full_v + 8 * (t % L::kStages), (t / L::kStages) & 1);
  };
  auto release = [&](int t) {
    if constexpr (kTma) mbar_arrive(empty + 8 * (t % L::kStages));
  };

  // With TMA copies the two warpgroups take turns at issuing matrix work (barriers 3 and 4), so one
  // computes its softmax while the other's products run.
  auto my_turn = [&] {
    if constexpr (kTma) asm volatile("bar.sync %0, 256;\n" ::"r"(3 + wg) : "memory");
  };
  auto their_turn = [&] {
    if constexpr (kTma) asm volatile("bar.arrive %0, 256;\n" ::"r"(4 - wg) : "memory");
  };
  if (wg == 1) their_turn();  // warpgroup 0 goes first

  {
    float sc[BC / 2], alpha[2];
    if constexpr (!kTma) issue(0);
    wait_k(0);
    my_turn();
    issue_s(sc, 0);
    their_turn();
    wgmma_wait<0>();
    fence_operands(sc);
    softmax(sc, 0, alpha);
    pack(sc);
    // Tile t: S_t = Q K_t^T and P_{t-1} V_{t-1} go to the tensor cores together; the softmax of
    // S_t runs while P_{t-1} V_{t-1} is still being computed.
    for (int t = 1; t < n_key_tiles; ++t) {
      wait_k(t);
      wait_v(t - 1);
      my_turn();
      issue_s(sc, t);
      rescale(alpha);
      issue_pv(pa, t - 1);
      their_turn();
      wgmma_wait<1>();
      fence_operands(sc);
      softmax(sc, t, alpha);
      wgmma_wait<0>();
      fence_operands(o);
      release(t - 1);
      pack(sc);
    }
    rescale(alpha);
    wait_v(n_key_tiles - 1);
    my_turn();
    issue_pv(pa, n_key_tiles - 1);
    if (wg == 0) their_turn();  // warpgroup 1's last turn is the last of all
    wgmma_wait<0>();
    fence_operands(o);
  }

  if (wg * kRows >= count) return;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int r = wg * kRows + rl + 8 * j;
    if (r >= count) continue;
    const float inv = l[j] > 0 ? 1.0f / l[j] : 0.0f;
    bf16* dst = p.out + (static_cast<int64_t>(t0 + r) * p.n_heads + h) * kHd;
#pragma unroll
    for (int d = 0; d < kHd / 8; ++d) {
      const int col = d * 8 + (lane & 3) * 2;
      *reinterpret_cast<__nv_bfloat162*>(dst + col) =
          __floats2bfloat162_rn(o[4 * d + 2 * j] * inv, o[4 * d + 2 * j + 1] * inv);
    }
  }
#endif  // ABRIDGE_SM90A_DEVICE
}

constexpr int kKeys = 128;  // keys per tile

// A 3-D view (head_dim, kv_heads, cache rows) of a bf16 cache whose boxes are one block of one head's
// 64-element column panel, swizzled in 128-byte rows. False when the driver cannot make it.
bool make_cache_map(CUtensorMap* map, const bf16* cache, int n_kv_heads, int64_t rows, int block_size) {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult status{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &status) !=
            cudaSuccess ||
        status != cudaDriverEntryPointSuccess)
      fn = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  if (encode == nullptr) return false;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(kHd), static_cast<cuuint64_t>(n_kv_heads),
                              static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[2] = {kHd * 2, static_cast<cuuint64_t>(n_kv_heads) * kHd * 2};
  const cuuint32_t box[3] = {64, 1, static_cast<cuuint32_t>(block_size)};
  const cuuint32_t steps[3] = {1, 1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<bf16*>(cache), dims, strides, box, steps,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <bool kTma>
void launch(const CUtensorMap& k_map, const CUtensorMap& v_map, const AttentionParams& p, cudaStream_t s) {
  using L = Layout<kKeys, kTma>;
  // The shared-memory limit is a per-device attribute: raised at every launch.
  cudaFuncSetAttribute(attention_kernel<kKeys, kTma>, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kAlloc);
  attention_kernel<kKeys, kTma><<<dim3(p.n_tiles, p.n_heads), L::kThreads, L::kAlloc, s>>>(k_map, v_map, p);
}

}  // namespace

void attention_tiles(const AttentionParams& p, bool cp_async_only, cudaStream_t s) {
  CUtensorMap k_map{}, v_map{};
  // TMA boxes are whole cache blocks: 8 to 128 rows that tile a 128-key tile, rows addressable as int.
  const bool tma = !cp_async_only && p.block_size >= 8 && p.block_size <= kKeys && kKeys % p.block_size == 0 &&
                   p.cache_rows > 0 && p.cache_rows < (int64_t{1} << 31) &&
                   make_cache_map(&k_map, p.k_cache, p.n_kv_heads, p.cache_rows, p.block_size) &&
                   make_cache_map(&v_map, p.v_cache, p.n_kv_heads, p.cache_rows, p.block_size);
  if (tma)
    launch<true>(k_map, v_map, p, s);
  else
    launch<false>(k_map, v_map, p, s);
}

}  // namespace abridge::kernels::sm90
