#include "engine/model.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "engine/cpu_backend.h"
#include "engine/error.h"
#include "engine/fp8_checkpoint.h"
#include "engine/weights.h"
#ifdef ABRIDGE_HAVE_CUDA
#include "engine/cuda/cuda_backend.h"
#include "kernels/device.h"
#endif

namespace abridge::engine {

ModelDir open_model_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw Error(dir + ": no such model directory");
  if (!fs::is_directory(dir, ec))
    throw Error(dir + ": not a directory (--model takes a directory with config.json, *.safetensors, tokenizer.json)");
  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(config_path, ec)) throw Error(dir + ": no config.json (is this a Hugging Face model directory?)");
  if (!fs::exists(fs::path(dir) / "tokenizer.json", ec)) throw Error(dir + ": no tokenizer.json");
  ModelConfig config = ModelConfig::from_file(config_path);
  auto ckpt = std::make_unique<Checkpoint>(dir);
  check_checkpoint(config, *ckpt);
  Tokenizer tok = Tokenizer::from_path(dir);
  if (tok.n_tokens() > config.vocab_size)
    throw Error(dir + ": tokenizer.json has " + std::to_string(tok.n_tokens()) +
                " tokens but the model's vocab_size is " + std::to_string(config.vocab_size));
  return ModelDir{dir, std::move(config), std::move(ckpt), std::move(tok)};
}

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
      return std::make_unique<CpuBackend>(model.config, *model.checkpoint, options.threads, options.attention);
    case Device::kCuda: {
      // Checked before the build's own CUDA support, so that every build says the same about FP8.
      if (has_fp8_weights(model.config, *model.checkpoint)) throw Error(kCudaNoFp8);
#ifdef ABRIDGE_HAVE_CUDA
      CudaOptions cuda;
      cuda.device = options.gpu;
      cuda.attention = options.attention;
      cuda.gpu_memory_fraction = options.gpu_memory_fraction;
      cuda.max_batch_tokens = options.max_batch_tokens;
      cuda.max_logit_rows = options.max_logit_rows;
      if (options.kv_cache_tokens > 0) cuda.max_kv_blocks = (options.kv_cache_tokens + cuda.block_size - 1) / cuda.block_size;
      return std::make_unique<CudaBackend>(model.config, *model.checkpoint, cuda);
#else
      throw Error("this build of abridge has no CUDA support (built without nvcc); use --device cpu");
#endif
    }
  }
  ABRIDGE_CHECK(false, "unknown device");
}

namespace {

// FNV-1a: a stable 64-bit hash of a tensor name.
uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

// xoshiro256** seeded by splitmix64: fast and the same on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (uint64_t& w : s_) {
      uint64_t z = (seed += 0x9E3779B97F4A7C15ull);
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      w = z ^ (z >> 31);
    }
  }
  // Uniform float in [-1, 1), exact arithmetic (no libm), so every platform gets the same bytes.
  float symmetric() {
    const uint64_t r = next() >> 40;  // 24 bits
    return static_cast<float>(static_cast<int64_t>(r) - (int64_t{1} << 23)) * 0x1.0p-23f;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  uint64_t s_[4];
};

}  // namespace

void write_random_weights(const std::string& path, const ModelConfig& config, uint64_t seed, DType dtype) {
  ABRIDGE_CHECK(dtype == DType::kBF16 || dtype == DType::kF32, "random weights are bf16 or f32");
  std::vector<TensorSpec> specs;
  for (const TensorEntry& e : tensor_table(config)) {
    if (e.optional) continue;  // tied lm_head: not written, as transformers saves it
    specs.push_back({e.name, dtype, e.shape});
  }
  const float kUniformHalfWidth = 0.02f * std::sqrt(3.0f);  // uniform(-a, a) has std a / sqrt(3)
  write_safetensors(
      path, specs,
      [&](const TensorSpec& spec, std::span<std::byte> out) {
        Rng rng(seed ^ fnv1a(spec.name));
        const bool norm = spec.shape.size() == 1;
        const size_t n = out.size() / dtype_size(dtype);
        for (size_t i = 0; i < n; ++i) {
          const float u = rng.symmetric();
          const float value = norm ? 1.0f + 0.5f * u : kUniformHalfWidth * u;
          if (dtype == DType::kBF16) {
            const uint16_t h = f32_to_bf16(value);
            std::memcpy(out.data() + 2 * i, &h, 2);
          } else {
            std::memcpy(out.data() + 4 * i, &value, 4);
          }
        }
      },
      {{"format", "pt"}});
}

}  // namespace abridge::engine
