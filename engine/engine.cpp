#include "engine/engine.h"

#include <algorithm>
#include <cmath>
#include <ostream>

#include "base/bytes.h"
#include "base/error.h"
#include "base/format.h"
#include "engine/cpu_backend.h"
#include "engine/kv_blocks.h"
#ifdef ABRIDGE_HAVE_CUDA
#include "engine/cuda/cuda_backend.h"
#include "kernels/device.h"
#endif

namespace abridge::engine {

int gpu_count() {
#ifdef ABRIDGE_HAVE_CUDA
  return static_cast<int>(kernels::list_devices().size());
#else
  return 0;
#endif
}

std::unique_ptr<Backend> make_backend(const ModelDir& model, const BackendOptions& options) {
  switch (options.device) {
    case Device::kCpu:
      return std::make_unique<CpuBackend>(model.config, *model.checkpoint, options.threads, options.attention,
                                          options.kv_cache_dtype);
    case Device::kCuda: {
#ifdef ABRIDGE_HAVE_CUDA
      CudaOptions cuda;
      cuda.device = options.gpu;
      cuda.attention = options.attention;
      cuda.gpu_memory_fraction = options.gpu_memory_fraction;
      cuda.gpu_memory_limit = options.gpu_memory_limit;
      cuda.max_batch_tokens = options.max_batch_tokens;
      cuda.max_logit_rows = options.max_logit_rows;
      cuda.kv_cache_dtype = options.kv_cache_dtype;
      if (options.kv_cache_tokens > 0) cuda.max_kv_blocks = (options.kv_cache_tokens + cuda.block_size - 1) / cuda.block_size;
      return std::make_unique<CudaBackend>(model.config, *model.checkpoint, cuda);
#else
      throw Error("this build of abridge has no CUDA support (built without nvcc); use --device cpu");
#endif
    }
  }
  ABRIDGE_CHECK(false, "unknown device");
}

void check_device(const std::string& device) {
  if (device != "auto" && device != "cpu" && device != "cuda")
    throw Error("--device must be auto, cpu or cuda, not \"" + device + "\"");
}

void check_threads(int64_t threads) {
  if (threads < 0 || threads > 1024) throw Error("--threads must be in 0..1024 (0: one per core), not " + std::to_string(threads));
}

void check_gpu_memory_fraction(double fraction) {
  if (!(fraction >= 0.01 && fraction <= 1))
    throw Error("--gpu-memory-fraction must be in 0.01..1, not " + shortest_number(fraction));
}

void check_gpu_memory_limit(uint64_t bytes) {
  if (bytes != 0 && bytes < kMinGpuMemoryLimit)
    throw Error("--gpu-memory-limit must be 0 (no limit) or at least " + format_bytes(kMinGpuMemoryLimit) + ", not " +
                format_bytes(bytes));
}

void check_kv_cache_tokens(int64_t tokens) {
  if (tokens < 0 || tokens > kMaxKvCacheTokens)
    throw Error("--kv-cache-tokens must be 0 (as much as memory allows) or 1.." + std::to_string(kMaxKvCacheTokens) +
                ", not " + std::to_string(tokens));
}

KvCacheDtype parse_kv_cache_dtype(const std::string& dtype) {
  if (dtype == "auto" || dtype == "bf16") return KvCacheDtype::kBf16;
  if (dtype == "fp8") return KvCacheDtype::kFp8;
  throw Error("--kv-cache-dtype must be auto, bf16 or fp8, not \"" + dtype + "\"");
}

void check_step_tokens(int64_t tokens) {
  if (tokens != 0 && (tokens < kMinStepTokens || tokens > kMaxStepTokens))
    throw Error("--prefill-chunk must be in " + std::to_string(kMinStepTokens) + ".." + std::to_string(kMaxStepTokens) +
                " tokens (0: the default, " + std::to_string(kDefaultStepTokens) + "), not " + std::to_string(tokens));
}

void check_attention(int64_t window, int64_t sinks) {
  if (window < 0 || sinks < 0) throw Error("--attention-window and --sink-tokens must be >= 0");
}

void EngineOptions::validate() const {
  check_device(device);
  if (gpu < 0) throw Error("the GPU index must be >= 0, got " + std::to_string(gpu));
  check_threads(threads);
  check_gpu_memory_fraction(gpu_memory_fraction);
  check_gpu_memory_limit(gpu_memory_limit);
  check_kv_cache_tokens(kv_cache_tokens);
  parse_kv_cache_dtype(kv_cache_dtype);
  check_step_tokens(step_tokens);
  if (max_running < 1) throw Error("max_running must be >= 1");
  check_attention(attention.window, attention.sinks);
}

BackendOptions backend_options(const EngineOptions& options) {
  BackendOptions bo;
  bo.threads = options.threads;
  bo.gpu = options.gpu;
  bo.gpu_memory_fraction = options.gpu_memory_fraction;
  bo.gpu_memory_limit = options.gpu_memory_limit;
  bo.attention = options.attention;
  bo.max_batch_tokens = options.step_tokens > 0 ? options.step_tokens : kDefaultStepTokens;
  bo.max_logit_rows = options.max_running;
  bo.kv_cache_tokens = options.kv_cache_tokens;
  bo.kv_cache_dtype = parse_kv_cache_dtype(options.kv_cache_dtype);
  return bo;
}

std::unique_ptr<Backend> open_backend(const ModelDir& model, BackendOptions options, const std::string& device,
                                      std::ostream& notes, bool quiet) {
  if (device == "cpu" || device == "cuda") {
    options.device = device == "cpu" ? Device::kCpu : Device::kCuda;
    return make_backend(model, options);
  }
  check_device(device);
  // Without a visible GPU there is nothing to try (and a CPU-only build's "use --device cpu" hint would
  // be beside the point); with one, whatever stops its engine is said before falling back.
  if (gpu_count() == 0) {
    if (!quiet) notes << "abridge: no CUDA GPU found; running on the CPU\n";
  } else {
    try {
      options.device = Device::kCuda;
      return make_backend(model, options);
    } catch (const Error& e) {
      if (!quiet) notes << "abridge: no GPU engine (" << e.what() << "); running on the CPU\n";
    }
  }
  options.device = Device::kCpu;
  return make_backend(model, options);
}

std::unique_ptr<Engine> Engine::open(const EngineOptions& options, std::ostream& notes, bool quiet) {
  options.validate();
  ModelDir model = open_model_dir(options.model);
  const BackendOptions bo = backend_options(options);
  std::unique_ptr<Backend> backend = open_backend(model, bo, options.device, notes, quiet);
  return std::unique_ptr<Engine>(new Engine(std::move(model), std::move(backend), options));
}

Engine::Engine(ModelDir model, std::unique_ptr<Backend> backend, const EngineOptions& options)
    : model_(std::move(model)), backend_(std::move(backend)), options_(options) {
  scheduler_ = scheduler_options_for(*backend_, options.max_running, options.attention, options.step_tokens);
  scheduler_.admission = options.admission;
  if (options.kv_cache_tokens > 0 && backend_->kv_block_size() == 0) {
    // A backend with its own per-slot caches: the scheduler's pool is what paces admission, so the cap
    // applies there (the same pool behaviour as on a GPU of that size).
    const int64_t blocks = (options.kv_cache_tokens + scheduler_.block_size - 1) / scheduler_.block_size;
    scheduler_.num_blocks = static_cast<int32_t>(std::min<int64_t>(blocks, INT32_MAX));
  }
  scheduler_.validate();
}

int64_t Engine::max_context() const {
  const int64_t model_context = model_.config.max_position_embeddings;
  if (options_.attention.window > 0) {
    const KvBlockManager shape(1, scheduler_.block_size, options_.attention);  // only its arithmetic is used
    if (shape.min_blocks_to_run(model_context) <= scheduler_.num_blocks) return model_context;
  }
  return std::min(model_context, kv_pool_tokens());
}

}  // namespace abridge::engine
