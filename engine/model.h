// A model directory in Hugging Face layout: config.json, model.safetensors (or shards with
// model.safetensors.index.json) and tokenizer.json. Opening it validates all three.
#pragma once

#include <memory>
#include <string>

#include "engine/backend.h"
#include "engine/config.h"
#include "engine/safetensors.h"
#include "engine/tokenizer.h"

namespace abridge::engine {

struct ModelDir {
  std::string dir;
  ModelConfig config;
  std::unique_ptr<Checkpoint> checkpoint;  // mmap'd; every tensor of the config checked
  Tokenizer tokenizer;
};

// Throws abridge::Error with one line naming the directory or file and what is wrong.
ModelDir open_model_dir(const std::string& dir);

enum class Device { kCpu, kCuda };

// How to build a backend: user knobs, separate from the model's config.
struct BackendOptions {
  Device device = Device::kCpu;
  int threads = 0;                    // CPU: 0 is one per core
  AttentionOptions attention;
  int gpu = 0;                        // CUDA: device index
  double gpu_memory_fraction = 0.90;  // CUDA: of the card's memory, KV pool included
  int64_t max_batch_tokens = 8192;    // CUDA: tokens per forward step (kDefaultStepTokens)
  int64_t max_logit_rows = 256;       // CUDA: logits rows per step
  int64_t kv_cache_tokens = 0;        // CUDA: caps the KV pool at this many tokens; 0: as memory allows
};

// CUDA devices visible to this process; 0 without CUDA (in the build or the machine).
int gpu_count();

// What make_backend says when asked to run an FP8 checkpoint on CUDA (no FP8 kernels yet).
inline constexpr const char* kCudaNoFp8 = "the CUDA backend does not run FP8 checkpoints yet; use --device cpu";

// Builds the backend; kCuda throws abridge::Error when this build or machine has no CUDA, or with
// kCudaNoFp8 when the checkpoint has FP8 weights.
std::unique_ptr<Backend> make_backend(const ModelDir& model, const BackendOptions& options);

// Writes model.safetensors with deterministic random weights for `config` (same seed, same bytes):
// linear and embedding weights uniform with standard deviation 0.02, norm weights uniform in
// [0.5, 1.5] so that a wrong norm shows in comparisons. Each tensor's stream is seeded from the seed
// and the tensor's name, so values do not depend on the order of the table.
void write_random_weights(const std::string& path, const ModelConfig& config, uint64_t seed, DType dtype);

}  // namespace abridge::engine
