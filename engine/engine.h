// The engine's front door for commands: one set of user knobs (EngineOptions) with one set of defaults,
// and Engine, which opens a model directory, builds its backend and answers what it can hold.
//
// What the pipeline needs from the engine comes through here and through serving.h (requests and
// results), chat.h (prompts) and tokenizer.h (text <-> ids); it computes no engine capacity itself.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>

#include "engine/backend.h"
#include "engine/config.h"
#include "engine/model_dir.h"
#include "engine/scheduler.h"
#include "engine/serving.h"
#include "engine/tokenizer.h"

namespace abridge::engine {

struct EngineOptions {
  std::string model;                  // model directory (config.json, *.safetensors, tokenizer.json)
  std::string device = "auto";        // auto (CUDA when this build and machine have it, else the CPU) | cpu | cuda
  int gpu = 0;                        // CUDA device index
  int threads = 0;                    // CPU backend threads; 0: one per core
  double gpu_memory_fraction = kDefaultGpuMemoryFraction;  // of the card's memory, weights and KV pool included; (0, 1]
  uint64_t gpu_memory_limit = 0;      // bytes of device memory the engine may hold (weights, buffers, KV pool); 0: no limit
  int64_t kv_cache_tokens = 0;        // caps the KV pool at this many tokens; 0: as many as memory allows
  std::string kv_cache_dtype = "auto";  // auto | bf16 | fp8 (--kv-cache-dtype; auto: bf16, the activations' dtype)
  int64_t step_tokens = 0;            // tokens per engine step (--prefill-chunk); 0: kDefaultStepTokens
  int32_t max_running = 64;           // sequences in one batch at once
  Admission admission = Admission::kReserve;
  AttentionOptions attention;         // window/sinks (StreamingLLM); 0: full attention

  // Every knob against its range, the one place the commands' engine options are checked (the check_*
  // functions below, in this order). Throws abridge::Error naming the option and its range.
  void validate() const;
};

// The range of each engine knob, as its --help line states it; each throws abridge::Error naming the
// option and its range otherwise.
// --device: auto | cpu | cuda.
void check_device(const std::string& device);
// --threads: 0 (one per core) or 1..1024.
void check_threads(int64_t threads);
// --gpu-memory-fraction: 0.01..1.
void check_gpu_memory_fraction(double fraction);
// --gpu-memory-limit in bytes: 0 (no limit) or at least kMinGpuMemoryLimit.
void check_gpu_memory_limit(uint64_t bytes);
// --kv-cache-tokens: 0 (as much as memory allows) or 1..kMaxKvCacheTokens.
void check_kv_cache_tokens(int64_t tokens);
// --kv-cache-dtype: auto | bf16 | fp8, as the cache stores it (auto: bf16, the dtype the model's
// activations are held in, for bf16 and FP8 checkpoints alike).
KvCacheDtype parse_kv_cache_dtype(const std::string& dtype);
// --prefill-chunk: 0 (kDefaultStepTokens) or kMinStepTokens..kMaxStepTokens.
void check_step_tokens(int64_t tokens);
// --attention-window and --sink-tokens: 0 or more each (checked as given, before sinks without a window
// are dropped).
void check_attention(int64_t window, int64_t sinks);

// How to build a backend: user knobs, separate from the model's config.
enum class Device { kCpu, kCuda };

struct BackendOptions {
  Device device = Device::kCpu;
  int threads = 0;                    // CPU: 0 is one per core
  AttentionOptions attention;
  int gpu = 0;                        // CUDA: device index
  double gpu_memory_fraction = kDefaultGpuMemoryFraction;  // CUDA: of the card's memory, KV pool included
  uint64_t gpu_memory_limit = 0;      // CUDA: bytes the backend may hold in all; 0: no limit
  int64_t max_batch_tokens = kDefaultStepTokens;  // CUDA: tokens per forward step
  int64_t max_logit_rows = 256;       // CUDA: logits rows per step
  int64_t kv_cache_tokens = 0;        // CUDA: caps the KV pool at this many tokens; 0: as memory allows
  KvCacheDtype kv_cache_dtype = KvCacheDtype::kBf16;
};

// CUDA devices visible to this process; 0 without CUDA (in the build or the machine).
int gpu_count();

// The backend options an EngineOptions asks for (threads, GPU and its memory, attention, tokens per step,
// logits rows = max_running, KV cap); the device is open_backend()'s argument.
BackendOptions backend_options(const EngineOptions& options);

// Builds the backend; kCuda throws abridge::Error when this build or machine has no CUDA (or, for an
// FP8 checkpoint, a GPU older than compute capability 8.0).
std::unique_ptr<Backend> make_backend(const ModelDir& model, const BackendOptions& options);

// Builds the backend that `device` names (auto | cpu | cuda). cpu and cuda are taken as said (cuda
// throws abridge::Error when no GPU engine opens: no CUDA in this build, no GPU, too little memory);
// auto takes the GPU when its engine opens and otherwise the CPU, saying why on `notes` in one line
// unless `quiet`. `options.device` is ignored.
std::unique_ptr<Backend> open_backend(const ModelDir& model, BackendOptions options, const std::string& device,
                                      std::ostream& notes, bool quiet = false);

class Engine {
 public:
  // Opens and checks the model directory, then builds the backend for options.device (open_backend).
  // Throws abridge::Error with one line.
  static std::unique_ptr<Engine> open(const EngineOptions& options, std::ostream& notes, bool quiet = false);

  const ModelDir& model() const { return model_; }
  const ModelConfig& config() const { return model_.config; }
  const Tokenizer& tokenizer() const { return model_.tokenizer; }
  Backend& backend() { return *backend_; }
  const Backend& backend() const { return *backend_; }
  std::string device_description() const { return backend_->device_description(); }
  bool on_gpu() const { return backend_->name() != "cpu"; }

  // The scheduler options every ServingEngine on this backend uses (pool, step budget, admission).
  const SchedulerOptions& scheduler_options() const { return scheduler_; }
  // The most tokens (prompt + new tokens) one sequence can have: the model's context, capped by the KV
  // pool (a sequence runs alone if it must) unless an attention window bounds what a sequence holds to
  // less than the pool (KvBlockManager::min_blocks_to_run).
  int64_t max_context() const;
  // Tokens the KV pool holds (every sequence together).
  int64_t kv_pool_tokens() const { return int64_t{scheduler_.num_blocks} * scheduler_.block_size; }

 private:
  Engine(ModelDir model, std::unique_ptr<Backend> backend, const EngineOptions& options);
  ModelDir model_;
  std::unique_ptr<Backend> backend_;
  EngineOptions options_;
  SchedulerOptions scheduler_;
};

}  // namespace abridge::engine
