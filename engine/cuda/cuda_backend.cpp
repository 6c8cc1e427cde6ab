#include "engine/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <map>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/bytes.h"
#include "base/error.h"
#include "engine/cuda/cuda_fp8.h"
#include "engine/fp8_checkpoint.h"
#include "engine/kv_blocks.h"
#include "engine/weights.h"
#include "kernels/ops.h"

namespace abridge::engine {
namespace {

using kernels::bf16;

void cuda_check(cudaError_t e, const char* call) {
  if (e != cudaSuccess) throw Error(std::string("CUDA error in ") + call + ": " + cudaGetErrorString(e));
}
void blas_check(cublasStatus_t e, const char* call) {
  if (e != CUBLAS_STATUS_SUCCESS) throw Error(std::string("cuBLAS error in ") + call + ": status " + std::to_string(e));
}
#define CUDA_OK(call) cuda_check((call), #call)
#define BLAS_OK(call) blas_check((call), #call)

}  // namespace

struct CudaBackend::Impl {
  struct Layer {
    bf16* wqkv = nullptr;   // (q_dim + 2 kv_dim, d): rows of q_proj, then k_proj, then v_proj
    bf16* wo = nullptr;     // (d, q_dim)
    bf16* wgu = nullptr;    // (2 ffn, d): rows of gate_proj, then up_proj
    bf16* wd = nullptr;     // (d, ffn)
    float* input_norm = nullptr;  // (d)
    float* post_norm = nullptr;   // (d)
    float* q_norm = nullptr;      // (head_dim)
    float* k_norm = nullptr;      // (head_dim)
    // FP8 checkpoints: the same products as block-scaled FP8 (engine/cuda/cuda_fp8.h); where one is
    // set, its bf16 pointer above is null.
    CudaFp8Linear qkv8, o8, gu8, d8;
  };

  ModelConfig cfg;
  CudaOptions opt;
  std::string device_name;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  std::vector<void*> allocations;
  size_t allocated = 0;

  bf16* embed = nullptr;        // (vocab, d)
  bf16* lm_head = nullptr;      // (vocab, d); == embed when tied
  float* final_norm = nullptr;  // (d)
  float* inv_freq = nullptr;    // (head_dim / 2)
  std::vector<Layer> layers;
  std::unique_ptr<CudaFp8> fp8;  // FP8 checkpoints only

  // Activations, for up to T = max_batch_tokens tokens and R = max_logit_rows logits rows.
  float* x = nullptr;       // (T, d) residual stream
  bf16* h = nullptr;        // (T, max(d, q_dim)) normed input of a GEMM
  float* qkv = nullptr;     // (T, q_dim + 2 kv_dim)
  bf16* q = nullptr;        // (T, q_dim) after q-norm and RoPE
  bf16* att = nullptr;      // (T, q_dim) attention output
  float* gu = nullptr;      // (T, 2 ffn)
  bf16* act = nullptr;      // (T, ffn)
  bf16* hl = nullptr;       // (R, d) final-normed rows that need logits
  float* logits = nullptr;  // (R, vocab)
  float* attn_ws = nullptr;
  size_t attn_ws_floats = 0;

  // Plan metadata: one int32 array on the device and its pinned host twin, in this order:
  // tokens (T), positions (T), kv_rows (T), table_offsets (T), attention tiles (4 T), single tokens (T),
  // logit_rows (R), block tables (rest).
  int32_t* meta_d = nullptr;
  int32_t* meta_h = nullptr;
  // Decode work items of a step (kernels::plan_decode_items): 3 ints per item, then n_singles + 1 offsets.
  int64_t decode_item_capacity = 0;
  int32_t* decode_d = nullptr;
  int32_t* decode_h = nullptr;
  int64_t meta_capacity = 0;

  kernels::SampleRow* sample_rows_d = nullptr;  // (R)
  kernels::SampleRow* sample_rows_h = nullptr;  // (R) pinned
  int32_t* sampled_d = nullptr;                 // (R)
  int32_t* sampled_h = nullptr;                 // (R) pinned

  bf16* kv_pool = nullptr;  // bf16 cache: K of every layer, then V of every layer: (layers, blocks * bs, kv_dim)
  // FP8 cache (KvCacheDtype::kFp8, kernels/ops.h QkvParams): codes in kv_pool's layout, one byte a
  // value, and scale bytes, K of every layer, then V of every layer: (layers, blocks * bs, kv_scale_row_bytes).
  uint8_t* kv_codes = nullptr;
  uint8_t* kv_scales = nullptr;
  int64_t num_blocks = 0;
  kernels::DeviceCaps dev;  // the device's capabilities, looked up once
  int tile_queries = kernels::kAttentionTileQueries;  // prefill attention tiles for this device
  std::unordered_map<int32_t, int64_t> cached;  // tokens held per slot
  std::map<std::array<int64_t, 5>, cudaGraphExec_t> graphs;  // decode steps by shape
  void* blas_workspace = nullptr;

  template <typename T>
  T* alloc(size_t count) {
    void* p = nullptr;
    const size_t bytes = std::max<size_t>(count * sizeof(T), 16);
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess)
      throw Error("CUDA: cannot allocate " + std::to_string(bytes >> 20) + " MiB on " + device_name + " (" +
                  cudaGetErrorString(e) + "); lower --gpu-memory-fraction users or use a smaller model");
    allocations.push_back(p);
    allocated += bytes;
    return static_cast<T*>(p);
  }

  // Where layer l's K (v = false) or V (v = true) starts in a cache of rows `row_width` elements wide:
  // kv_dim values, or kv_scale_row_bytes scale bytes.
  int64_t cache_offset(int64_t l, bool v, int64_t row_width) const {
    return ((v ? cfg.num_hidden_layers : 0) + l) * num_blocks * opt.block_size * row_width;
  }
  int64_t cache_values(int64_t l, bool v) const { return cache_offset(l, v, cfg.kv_dim()); }
  int64_t cache_scales(int64_t l, bool v) const { return cache_offset(l, v, kv_scale_row_bytes(cfg.num_key_value_heads)); }
  bf16* k_cache(int64_t l) const { return kv_pool ? kv_pool + cache_values(l, false) : nullptr; }
  bf16* v_cache(int64_t l) const { return kv_pool ? kv_pool + cache_values(l, true) : nullptr; }

  // C (n, m) f32 = A (n, k) bf16 . W (m, k)^T bf16 + beta * C.
  void gemm(const bf16* a, const bf16* w, float* c, int64_t n, int64_t k, int64_t m, float beta) {
    if (kernels::gemv_supports(static_cast<int>(n), static_cast<int>(k))) {  // decode: bound by reading w once
      kernels::gemv_bf16(a, w, c, static_cast<int>(n), static_cast<int>(k), static_cast<int>(m), beta, dev, stream);
      return;
    }
    const float alpha = 1.0f;
    BLAS_OK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
                         &alpha, w, CUDA_R_16BF, static_cast<int>(k), a, CUDA_R_16BF, static_cast<int>(k), &beta, c,
                         CUDA_R_32F, static_cast<int>(m), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
};

namespace {

// Copies a checkpoint tensor into device memory as bf16 (converting F16/F32 on the host, and
// dequantizing an F8_E4M3 weight that runs in bf16: an lm_head, or a group of mixed dtypes).
void upload_bf16(const Checkpoint& ckpt, const TensorView& v, bf16* dst) {
  const size_t n = static_cast<size_t>(v.numel());
  if (v.dtype == DType::kBF16) {
    CUDA_OK(cudaMemcpy(dst, v.data, n * 2, cudaMemcpyHostToDevice));
    return;
  }
  if (v.dtype == DType::kF8E4M3) {
    const std::vector<uint16_t> b = dequantize_fp8_bf16(ckpt, v);
    CUDA_OK(cudaMemcpy(dst, b.data(), n * 2, cudaMemcpyHostToDevice));
    return;
  }
  std::vector<float> f(n);
  to_f32(v.dtype, v.data, f.data(), n);
  std::vector<uint16_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = f32_to_bf16(f[i]);
  CUDA_OK(cudaMemcpy(dst, b.data(), n * 2, cudaMemcpyHostToDevice));
}

void upload_f32(const TensorView& v, float* dst) {
  std::vector<float> f(static_cast<size_t>(v.numel()));
  to_f32(v.dtype, v.data, f.data(), f.size());
  CUDA_OK(cudaMemcpy(dst, f.data(), f.size() * 4, cudaMemcpyHostToDevice));
}

}  // namespace

CudaBackend::CudaBackend(const ModelConfig& config, const Checkpoint& ckpt, const CudaOptions& options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.cfg = config;
  m.opt = options;
  const ModelConfig& c = m.cfg;
  if (options.max_batch_tokens < 1 || options.max_logit_rows < 1 || options.block_size < 1)
    throw Error("CUDA backend: batch tokens, logits rows and block size must be positive");
  if (c.head_dim % 64 != 0 || c.head_dim > 256)
    throw Error("CUDA backend: head_dim " + std::to_string(c.head_dim) + " is not supported (64, 128, 192 or 256)");
  if (c.gqa_group() > 32) throw Error("CUDA backend: more than 32 query heads per KV head is not supported");
  const bool fp8_cache = options.kv_cache_dtype == KvCacheDtype::kFp8;
  if (fp8_cache && c.head_dim != 64 && c.head_dim != 128)
    throw Error("--kv-cache-dtype fp8: the CUDA kernels read an FP8 cache for head_dim 64 or 128, not " +
                std::to_string(c.head_dim) + " (use --kv-cache-dtype bf16)");

  int n_devices = 0;
  if (cudaGetDeviceCount(&n_devices) != cudaSuccess || n_devices == 0) {
    cudaGetLastError();
    throw Error("--device cuda: no CUDA device is visible (check the driver and CUDA_VISIBLE_DEVICES)");
  }
  if (options.device < 0 || options.device >= n_devices)
    throw Error("CUDA device " + std::to_string(options.device) + " does not exist (" + std::to_string(n_devices) +
                " visible)");
  CUDA_OK(cudaSetDevice(options.device));
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, options.device));
  m.device_name = prop.name;
  {
    // ABRIDGE_PREFILL_ATTENTION, a diagnostic for comparing kernels (docs/PERFORMANCE.md): "mma" keeps
    // the mma.sync prefill kernel on Hopper too, "wgmma-cp-async" runs the Hopper kernel without TMA.
    const char* prefill = std::getenv("ABRIDGE_PREFILL_ATTENTION");
    try {
      m.dev = kernels::query_device_caps(kernels::parse_prefill_attention(prefill ? prefill : ""));
    } catch (const std::exception& e) {
      throw Error(std::string("CUDA backend: ") + e.what());
    }
  }
  m.tile_queries = kernels::attention_tile_queries(static_cast<int>(c.head_dim), m.dev, fp8_cache);
  CUDA_OK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  BLAS_OK(cublasCreate(&m.blas));
  BLAS_OK(cublasSetStream(m.blas, m.stream));
  // A fixed cuBLAS workspace: nothing is allocated per call, which graph capture requires.
  constexpr size_t kBlasWorkspace = size_t{32} << 20;
  m.blas_workspace = m.alloc<unsigned char>(kBlasWorkspace);
  BLAS_OK(cublasSetWorkspace(m.blas, m.blas_workspace, kBlasWorkspace));

  const int64_t d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), ffn = c.intermediate_size, hd = c.head_dim;
  const int64_t T = options.max_batch_tokens, R = options.max_logit_rows, V = c.vocab_size;

  // FP8 checkpoints: a group of linear layers runs as FP8 when all its members are F8_E4M3; the GEMM
  // writes whole 16-row blocks, so the buffers it writes hold Tp rows.
  if (has_fp8_weights(c, ckpt)) {
    if (prop.major < 8)
      throw Error("CUDA backend: FP8 checkpoints need compute capability 8.0 or newer; " + m.device_name + " has " +
                  std::to_string(prop.major) + "." + std::to_string(prop.minor) + " (use --device cpu)");
    Impl* impl = &m;
    m.fp8 = std::make_unique<CudaFp8>([impl](size_t bytes) { return static_cast<void*>(impl->alloc<unsigned char>(bytes)); },
                                      m.blas, m.blas_workspace, kBlasWorkspace, T, !options.fp8_dequantized_gemm, m.dev);
  }
  const int64_t Tp = m.fp8 ? kernels::fp8_gemm_rows(static_cast<int>(T)) : T;
  std::vector<std::map<TensorRole, std::string>> layer_names(static_cast<size_t>(c.num_hidden_layers));
  for (const TensorEntry& e : tensor_table(c))
    if (e.layer >= 0) layer_names[static_cast<size_t>(e.layer)][e.role] = e.name;
  auto fp8_group = [&](int64_t l, std::initializer_list<TensorRole> roles) {
    std::vector<std::string> names;
    for (TensorRole r : roles) {
      names.push_back(layer_names[static_cast<size_t>(l)].at(r));
      if (!m.fp8 || ckpt.find(names.back())->dtype != DType::kF8E4M3) return CudaFp8Linear{};
    }
    return m.fp8->upload(ckpt, names);
  };

  // Weights.
  m.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    Impl::Layer& L = m.layers[static_cast<size_t>(l)];
    L.qkv8 = fp8_group(l, {TensorRole::kQ, TensorRole::kK, TensorRole::kV});
    L.o8 = fp8_group(l, {TensorRole::kO});
    L.gu8 = fp8_group(l, {TensorRole::kGate, TensorRole::kUp});
    L.d8 = fp8_group(l, {TensorRole::kDown});
    if (!L.qkv8) L.wqkv = m.alloc<bf16>((qd + 2 * kvd) * d);
    if (!L.o8) L.wo = m.alloc<bf16>(d * qd);
    if (!L.gu8) L.wgu = m.alloc<bf16>(2 * ffn * d);
    if (!L.d8) L.wd = m.alloc<bf16>(d * ffn);
    L.input_norm = m.alloc<float>(d);
    L.post_norm = m.alloc<float>(d);
    L.q_norm = m.alloc<float>(hd);
    L.k_norm = m.alloc<float>(hd);
  }
  m.embed = m.alloc<bf16>(V * d);
  m.final_norm = m.alloc<float>(d);
  m.lm_head = m.embed;
  for (const TensorEntry& e : tensor_table(c)) {
    const TensorView* v = ckpt.find(e.name);
    if (!v) continue;  // the optional tied lm_head
    Impl::Layer* L = e.layer >= 0 ? &m.layers[static_cast<size_t>(e.layer)] : nullptr;
    if (L && ((L->qkv8 && (e.role == TensorRole::kQ || e.role == TensorRole::kK || e.role == TensorRole::kV)) ||
              (L->o8 && e.role == TensorRole::kO) || (L->gu8 && (e.role == TensorRole::kGate || e.role == TensorRole::kUp)) ||
              (L->d8 && e.role == TensorRole::kDown)))
      continue;  // uploaded as FP8 above
    switch (e.role) {
      case TensorRole::kEmbedding: upload_bf16(ckpt, *v, m.embed); break;
      case TensorRole::kLmHead:
        m.lm_head = m.alloc<bf16>(V * d);
        upload_bf16(ckpt, *v, m.lm_head);
        break;
      case TensorRole::kFinalNorm: upload_f32(*v, m.final_norm); break;
      case TensorRole::kInputNorm: upload_f32(*v, L->input_norm); break;
      case TensorRole::kPostNorm: upload_f32(*v, L->post_norm); break;
      case TensorRole::kQNorm: upload_f32(*v, L->q_norm); break;
      case TensorRole::kKNorm: upload_f32(*v, L->k_norm); break;
      case TensorRole::kQ: upload_bf16(ckpt, *v, L->wqkv); break;
      case TensorRole::kK: upload_bf16(ckpt, *v, L->wqkv + qd * d); break;
      case TensorRole::kV: upload_bf16(ckpt, *v, L->wqkv + (qd + kvd) * d); break;
      case TensorRole::kO: upload_bf16(ckpt, *v, L->wo); break;
      case TensorRole::kGate: upload_bf16(ckpt, *v, L->wgu); break;
      case TensorRole::kUp: upload_bf16(ckpt, *v, L->wgu + ffn * d); break;
      case TensorRole::kDown: upload_bf16(ckpt, *v, L->wd); break;
    }
  }
  std::vector<float> inv(static_cast<size_t>(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i)
    inv[i] = static_cast<float>(1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / static_cast<double>(hd)));
  m.inv_freq = m.alloc<float>(inv.size());
  CUDA_OK(cudaMemcpy(m.inv_freq, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice));
  if (m.fp8) m.fp8->finish();

  // Activations.
  m.x = m.alloc<float>(Tp * d);
  m.h = m.alloc<bf16>(T * std::max(d, qd));
  m.qkv = m.alloc<float>(Tp * (qd + 2 * kvd));
  m.q = m.alloc<bf16>(T * qd);
  m.att = m.alloc<bf16>(T * qd);
  m.gu = m.alloc<float>(Tp * 2 * ffn);
  m.act = m.alloc<bf16>(T * ffn);
  m.hl = m.alloc<bf16>(R * d);
  m.logits = m.alloc<float>(R * V);
  m.sample_rows_d = m.alloc<kernels::SampleRow>(R);
  m.sampled_d = m.alloc<int32_t>(R);
  CUDA_OK(cudaMallocHost(&m.sample_rows_h, static_cast<size_t>(R) * sizeof(kernels::SampleRow)));
  CUDA_OK(cudaMallocHost(&m.sampled_h, static_cast<size_t>(R) * sizeof(int32_t)));
  // Attention partials: at least 8 key splits for a full batch, more for small batches.
  m.attn_ws_floats = std::max<size_t>(kernels::attention_workspace_floats(static_cast<int>(T), static_cast<int>(c.num_attention_heads),
                                                                           static_cast<int>(hd), 8),
                                      size_t{64} << 20);
  m.attn_ws = m.alloc<float>(m.attn_ws_floats);

  // The KV pool: what the memory fraction leaves after everything else.
  size_t free_b = 0, total_b = 0;
  CUDA_OK(cudaMemGetInfo(&free_b, &total_b));
  double budget = options.gpu_memory_fraction * static_cast<double>(total_b) - static_cast<double>(total_b - free_b);
  if (options.gpu_memory_limit > 0)
    budget = std::min(budget, static_cast<double>(options.gpu_memory_limit) - static_cast<double>(m.allocated));
  const int64_t max_position_blocks = (c.max_position_embeddings + options.block_size - 1) / options.block_size;
  m.num_blocks = budget > 0 ? kv_blocks_for_memory(c, static_cast<uint64_t>(budget), static_cast<int32_t>(options.block_size),
                                                   options.kv_cache_dtype)
                            : 0;
  if (options.max_kv_blocks > 0) m.num_blocks = std::min(m.num_blocks, options.max_kv_blocks);
  if (m.num_blocks < 2 * (T + options.block_size - 1) / options.block_size)
    throw Error("CUDA: not enough GPU memory for the KV cache on " + m.device_name + " (" +
                std::to_string(m.num_blocks) + " blocks of " + std::to_string(options.block_size) +
                " tokens fit" +
                (options.gpu_memory_limit > 0
                     ? "; weights and buffers take " + format_bytes(m.allocated) + " of --gpu-memory-limit " +
                           format_bytes(options.gpu_memory_limit) + "): raise --gpu-memory-limit or lower --prefill-chunk"
                     : "); raise --gpu-memory-fraction or lower the batch size"));
  const size_t pool_elements = static_cast<size_t>(2 * c.num_hidden_layers * m.num_blocks * options.block_size * kvd);
  // Zeros, not whatever the allocation held: attention may read a block's rows past a sequence's end
  // (then masked), and masked garbage could still be NaN.
  if (fp8_cache) {
    const size_t scale_bytes = static_cast<size_t>(2 * c.num_hidden_layers * m.num_blocks * options.block_size *
                                                   kv_scale_row_bytes(c.num_key_value_heads));
    m.kv_codes = m.alloc<uint8_t>(pool_elements);
    m.kv_scales = m.alloc<uint8_t>(scale_bytes);
    CUDA_OK(cudaMemset(m.kv_codes, 0, pool_elements));
    CUDA_OK(cudaMemset(m.kv_scales, 0, scale_bytes));
  } else {
    m.kv_pool = m.alloc<bf16>(pool_elements);
    CUDA_OK(cudaMemset(m.kv_pool, 0, pool_elements * sizeof(bf16)));
  }

  // Block tables of a step: every slot's table, at most all positions of the context per sequence in
  // the step (bounded by T sequences, but in practice the pool bounds live entries).
  m.meta_capacity = 9 * T + R + std::max<int64_t>(m.num_blocks, max_position_blocks) * 2 + T;
  m.meta_d = m.alloc<int32_t>(static_cast<size_t>(m.meta_capacity));
  CUDA_OK(cudaMallocHost(&m.meta_h, static_cast<size_t>(m.meta_capacity) * 4));
  m.decode_item_capacity = std::min<int64_t>(
      4 * T, static_cast<int64_t>(m.attn_ws_floats / kernels::attention_workspace_floats(1, static_cast<int>(c.num_attention_heads),
                                                                                         static_cast<int>(hd), 1)));
  const size_t decode_ints = static_cast<size_t>(3 * m.decode_item_capacity + T + 1);
  m.decode_d = m.alloc<int32_t>(decode_ints);
  CUDA_OK(cudaMallocHost(&m.decode_h, decode_ints * 4));
}

CudaBackend::~CudaBackend() {
  Impl& m = *impl_;
  if (m.stream) cudaStreamSynchronize(m.stream);
  for (auto& [key, exec] : m.graphs) cudaGraphExecDestroy(exec);
  for (void* p : m.allocations) cudaFree(p);
  if (m.meta_h) cudaFreeHost(m.meta_h);
  if (m.decode_h) cudaFreeHost(m.decode_h);
  if (m.sample_rows_h) cudaFreeHost(m.sample_rows_h);
  if (m.sampled_h) cudaFreeHost(m.sampled_h);
  if (m.blas) cublasDestroy(m.blas);
  if (m.stream) cudaStreamDestroy(m.stream);
}

const ModelConfig& CudaBackend::config() const { return impl_->cfg; }
int64_t CudaBackend::kv_block_size() const { return impl_->opt.block_size; }
int64_t CudaBackend::kv_blocks() const { return impl_->num_blocks; }
int64_t CudaBackend::max_batch_tokens() const { return impl_->opt.max_batch_tokens; }
int64_t CudaBackend::max_logit_rows() const { return impl_->opt.max_logit_rows; }
std::string CudaBackend::device_description() const { return impl_->device_name; }
std::string CudaBackend::fp8_paths() const { return impl_->fp8 ? impl_->fp8->describe() : ""; }
size_t CudaBackend::device_memory_bytes() const { return impl_->allocated; }

void CudaBackend::release(int32_t slot) { impl_->cached.erase(slot); }

int64_t CudaBackend::cached_tokens(int32_t slot) const {
  auto it = impl_->cached.find(slot);
  return it == impl_->cached.end() ? 0 : it->second;
}

void CudaBackend::forward(const BatchPlan& plan, std::span<float> logits) {
  ABRIDGE_CHECK(logits.size() == plan.logit_rows.size() * static_cast<size_t>(impl_->cfg.vocab_size));
  run(plan);
  Impl& m = *impl_;
  if (!logits.empty())
    CUDA_OK(cudaMemcpyAsync(logits.data(), m.logits, logits.size() * 4, cudaMemcpyDeviceToHost, m.stream));
  CUDA_OK(cudaStreamSynchronize(m.stream));
}

void CudaBackend::forward_sampled(const BatchPlan& plan, std::span<const RowSampling> rows, std::span<int32_t> tokens) {
  Impl& m = *impl_;
  const size_t nl = plan.logit_rows.size();
  ABRIDGE_CHECK(rows.size() == nl && tokens.size() == nl);
  for (size_t r = 0; r < nl; ++r)
    m.sample_rows_h[r] = {rows[r].temperature, rows[r].top_p, rows[r].seed, rows[r].counter, rows[r].vocab_limit, 0};
  run(plan);
  if (nl == 0) return;
  CUDA_OK(cudaMemcpyAsync(m.sample_rows_d, m.sample_rows_h, nl * sizeof(kernels::SampleRow), cudaMemcpyHostToDevice,
                          m.stream));
  kernels::sample(m.logits, static_cast<int>(m.cfg.vocab_size), m.sample_rows_d, static_cast<int>(nl), m.sampled_d,
                  m.stream);
  CUDA_OK(cudaMemcpyAsync(m.sampled_h, m.sampled_d, nl * sizeof(int32_t), cudaMemcpyDeviceToHost, m.stream));
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaStreamSynchronize(m.stream));
  std::copy_n(m.sampled_h, nl, tokens.begin());
}

void CudaBackend::run(const BatchPlan& plan) {
  Impl& m = *impl_;
  const ModelConfig& c = m.cfg;
  CUDA_OK(cudaSetDevice(m.opt.device));  // the current device is per thread; engines may share a process
  const int64_t n = static_cast<int64_t>(plan.size()), nl = static_cast<int64_t>(plan.logit_rows.size());
  const int64_t T = m.opt.max_batch_tokens, R = m.opt.max_logit_rows, bs = m.opt.block_size;
  const int64_t d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), ffn = c.intermediate_size, V = c.vocab_size;
  ABRIDGE_CHECK(n <= T, "plan of " + std::to_string(n) + " tokens exceeds max_batch_tokens " + std::to_string(T));
  ABRIDGE_CHECK(nl <= R, "plan wants " + std::to_string(nl) + " logits rows, max " + std::to_string(R));
  if (n == 0) return;

  // Host side: positions continue each slot's cache; every token's KV row comes from its slot's table.
  int32_t* tokens = m.meta_h;
  int32_t* positions = tokens + T;
  int32_t* kv_rows = positions + T;
  int32_t* table_offsets = kv_rows + T;
  int32_t* attn_tiles = table_offsets + T;
  int32_t* attn_singles = attn_tiles + 4 * T;
  int32_t* logit_rows = attn_singles + T;
  int32_t* tables = logit_rows + R;
  const int64_t table_capacity = m.meta_capacity - (9 * T + R);
  int64_t tables_used = 0;
  std::unordered_map<int32_t, std::pair<int64_t, int64_t>> slot_state;  // slot -> (table offset, next position)
  int32_t max_position = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t s = plan.slots[i];
    auto it = slot_state.find(s);
    if (it == slot_state.end()) {
      auto t = plan.block_tables.find(s);
      ABRIDGE_CHECK(t != plan.block_tables.end(), "no block table for slot " + std::to_string(s));
      const auto& table = t->second;
      ABRIDGE_CHECK(tables_used + static_cast<int64_t>(table.size()) <= table_capacity, "block tables overflow");
      std::copy(table.begin(), table.end(), tables + tables_used);
      it = slot_state.emplace(s, std::make_pair(tables_used, cached_tokens(s))).first;
      tables_used += static_cast<int64_t>(table.size());
    }
    auto& [offset, next] = it->second;
    const int32_t pos = plan.positions[i];
    ABRIDGE_CHECK(pos == next, "slot " + std::to_string(s) + " expects position " + std::to_string(next) + ", got " +
                                   std::to_string(pos));
    ABRIDGE_CHECK(plan.tokens[i] >= 0 && plan.tokens[i] < V, "token id " + std::to_string(plan.tokens[i]));
    const auto& table = plan.block_tables.find(s)->second;
    ABRIDGE_CHECK(pos / bs < static_cast<int64_t>(table.size()), "block table too short for position " + std::to_string(pos));
    const int32_t block = table[pos / bs];
    ABRIDGE_CHECK(block >= 0 && block < m.num_blocks, "bad block " + std::to_string(block));
    tokens[i] = plan.tokens[i];
    positions[i] = pos;
    kv_rows[i] = static_cast<int32_t>(block * bs + pos % bs);
    table_offsets[i] = static_cast<int32_t>(offset);
    max_position = std::max(max_position, pos);
    ++next;
  }
  for (int64_t r = 0; r < nl; ++r) {
    ABRIDGE_CHECK(plan.logit_rows[r] >= 0 && plan.logit_rows[r] < n);
    logit_rows[r] = plan.logit_rows[r];
  }
  int n_tiles = 0, n_singles = 0;
  kernels::partition_attention(positions, table_offsets, static_cast<int>(n), static_cast<int>(c.head_dim),
                               m.tile_queries, attn_tiles, &n_tiles, attn_singles, &n_singles);
  CUDA_OK(cudaMemcpyAsync(m.meta_d, m.meta_h, static_cast<size_t>(9 * T + R + tables_used) * 4, cudaMemcpyHostToDevice,
                          m.stream));
  // The single tokens' keys as work items of about equal length (a fixed count for the step's shape).
  const int n_decode_items =
      kernels::decode_item_count(n_singles, static_cast<int>(c.num_key_value_heads), static_cast<int>(c.head_dim),
                                 static_cast<int>(m.decode_item_capacity), m.dev);
  if (n_singles > 0) {
    kernels::plan_decode_items(positions, attn_singles, n_singles, n_decode_items, m.decode_h,
                               m.decode_h + 3 * n_decode_items);
    CUDA_OK(cudaMemcpyAsync(m.decode_d, m.decode_h, static_cast<size_t>(3 * n_decode_items + n_singles + 1) * 4,
                            cudaMemcpyHostToDevice, m.stream));
  }
  const int32_t* tokens_d = m.meta_d;
  const int32_t* positions_d = tokens_d + T;
  const int32_t* kv_rows_d = positions_d + T;
  const int32_t* table_offsets_d = kv_rows_d + T;
  const int32_t* attn_tiles_d = table_offsets_d + T;
  const int32_t* attn_singles_d = attn_tiles_d + 4 * T;
  const int32_t* logit_rows_d = attn_singles_d + T;
  const int32_t* tables_d = logit_rows_d + R;

  const float eps = static_cast<float>(c.rms_norm_eps);
  const int max_splits = static_cast<int>(std::min<size_t>(
      kernels::kMaxAttentionSplits,
      m.attn_ws_floats / kernels::attention_workspace_floats(std::max(n_singles, 1), static_cast<int>(c.num_attention_heads),
                                                             static_cast<int>(c.head_dim), 1)));
  // Decode-only steps repeat the same launches with new data: they are captured once per shape
  // (tokens, logits rows, key-split bucket) as a CUDA graph and replayed. The split count comes from
  // max_position rounded up to a power of two, so one graph serves a range of contexts.
  const bool graphable = m.opt.cuda_graphs && n_tiles == 0;
  int attn_max_position = max_position;
  if (graphable) {
    attn_max_position = 255;
    while (attn_max_position < max_position) attn_max_position = attn_max_position * 2 + 1;
  }
  // A step of a few tokens runs its products as GEMVs that normalize their own input and, for gate/up,
  // apply SwiGLU on the way out: no norm or SwiGLU kernels between them.
  const bool fused = kernels::gemv_can_normalize(static_cast<int>(n), static_cast<int>(d));
  auto normed_gemv = [&](const float* norm_w, const bf16* w, int64_t rows, float* y, bf16* act) {
    kernels::GemvParams gp;
    gp.x_f32 = m.x, gp.norm_w = norm_w, gp.eps = eps, gp.w = w, gp.y = y, gp.act = act;
    gp.n = static_cast<int>(n), gp.k = static_cast<int>(d), gp.m = static_cast<int>(rows);
    kernels::gemv(gp, m.dev, m.stream);
  };
  auto enqueue = [&] {
    kernels::embed(tokens_d, m.embed, m.x, static_cast<int>(n), static_cast<int>(d), m.stream);
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const Impl::Layer& L = m.layers[static_cast<size_t>(l)];
      if (L.qkv8) {
        m.fp8->linear({nullptr, m.x, L.input_norm, eps}, L.qkv8, m.qkv, qd + 2 * kvd, n, 0.0f, m.stream);
      } else if (fused) {
        normed_gemv(L.input_norm, L.wqkv, qd + 2 * kvd, m.qkv, nullptr);
      } else {
        kernels::rms_norm(m.x, nullptr, L.input_norm, m.h, static_cast<int>(n), static_cast<int>(d), eps, m.dev, m.stream);
        m.gemm(m.h, L.wqkv, m.qkv, n, d, qd + 2 * kvd, 0.0f);
      }
      kernels::QkvParams qp{m.qkv, L.q_norm, L.k_norm, m.inv_freq, positions_d, kv_rows_d, m.q, m.k_cache(l), m.v_cache(l),
                            static_cast<int>(n), static_cast<int>(c.num_attention_heads),
                            static_cast<int>(c.num_key_value_heads), static_cast<int>(c.head_dim), eps};
      kernels::AttentionParams ap{};
      if (m.kv_codes) {
        qp.k_fp8 = m.kv_codes + m.cache_values(l, false);
        qp.v_fp8 = m.kv_codes + m.cache_values(l, true);
        qp.k_scale = m.kv_scales + m.cache_scales(l, false);
        qp.v_scale = m.kv_scales + m.cache_scales(l, true);
        ap.k_fp8 = qp.k_fp8, ap.v_fp8 = qp.v_fp8, ap.k_scale = qp.k_scale, ap.v_scale = qp.v_scale;
      }
      kernels::qkv_post(qp, m.stream);
      ap.q = m.q;
      ap.k_cache = m.k_cache(l);
      ap.v_cache = m.v_cache(l);
      ap.positions = positions_d;
      ap.table_offsets = table_offsets_d;
      ap.block_tables = tables_d;
      ap.out = m.att;
      ap.workspace = m.attn_ws;
      ap.n = static_cast<int>(n);
      ap.n_heads = static_cast<int>(c.num_attention_heads);
      ap.n_kv_heads = static_cast<int>(c.num_key_value_heads);
      ap.head_dim = static_cast<int>(c.head_dim);
      ap.block_size = static_cast<int>(bs);
      ap.cache_rows = m.num_blocks * bs;
      ap.window = m.opt.attention.window;
      ap.sinks = m.opt.attention.sinks;
      ap.layer_window = c.layer_window(l);
      ap.max_position = attn_max_position;
      ap.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      ap.tiles = attn_tiles_d;
      ap.n_tiles = n_tiles;
      ap.tile_queries = m.tile_queries;
      ap.singles = attn_singles_d;
      ap.n_singles = n_singles;
      ap.decode_items = m.decode_d;
      ap.decode_first = m.decode_d + 3 * n_decode_items;
      ap.n_decode_items = n_decode_items;
      kernels::attention(ap, max_splits, m.dev, m.stream);
      if (L.o8) m.fp8->linear({m.att}, L.o8, m.x, d, n, 1.0f, m.stream);
      else m.gemm(m.att, L.wo, m.x, n, qd, d, 1.0f);
      if (L.gu8) {
        m.fp8->swiglu({nullptr, m.x, L.post_norm, eps}, L.gu8, m.gu, m.act, n, m.stream);
      } else if (fused) {
        normed_gemv(L.post_norm, L.wgu, ffn, nullptr, m.act);
      } else {
        kernels::rms_norm(m.x, nullptr, L.post_norm, m.h, static_cast<int>(n), static_cast<int>(d), eps, m.dev, m.stream);
        m.gemm(m.h, L.wgu, m.gu, n, d, 2 * ffn, 0.0f);
        kernels::silu_mul(m.gu, m.act, static_cast<int>(n), static_cast<int>(ffn), m.stream);
      }
      if (L.d8) m.fp8->linear({m.act}, L.d8, m.x, d, n, 1.0f, m.stream);
      else m.gemm(m.act, L.wd, m.x, n, ffn, d, 1.0f);
    }
    if (nl > 0) {
      kernels::rms_norm(m.x, logit_rows_d, m.final_norm, m.hl, static_cast<int>(nl), static_cast<int>(d), eps, m.dev, m.stream);
      m.gemm(m.hl, m.lm_head, m.logits, nl, d, V, 0.0f);
    }
  };
  if (graphable) {
    const std::array<int64_t, 5> key{n, nl, attn_max_position, max_splits, n_decode_items};
    auto it = m.graphs.find(key);
    if (it == m.graphs.end()) {
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      CUDA_OK(cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeThreadLocal));
      enqueue();
      CUDA_OK(cudaStreamEndCapture(m.stream, &graph));
      CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
      CUDA_OK(cudaGraphDestroy(graph));
      it = m.graphs.emplace(key, exec).first;
    }
    CUDA_OK(cudaGraphLaunch(it->second, m.stream));
  } else {
    enqueue();
  }
  CUDA_OK(cudaGetLastError());
  for (auto& [s, st] : slot_state) m.cached[s] = st.second;
}

}  // namespace abridge::engine
