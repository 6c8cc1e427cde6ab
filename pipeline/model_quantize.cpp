#include "pipeline/model_quantize.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <iomanip>

#include "base/error.h"
#include "engine/fp8_checkpoint.h"
#include "engine/read_file.h"
#include "pipeline/atomic_file.h"
#include "pipeline/commands.h"
#include "pipeline/run_report.h"

namespace abridge::pipeline {
namespace {

namespace fs = std::filesystem;

// The tokenizer and generation files a model directory may carry beside its weights, copied as they are.
constexpr const char* kSideFiles[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json",
                                      "vocab.json", "merges.txt"};
constexpr size_t kMaxSideFileBytes = engine::kMaxTokenizerJsonBytes;

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::string read_bounded(const fs::path& path) {
  try {
    return read_regular_file(path.string(), kMaxSideFileBytes);
  } catch (const Error& e) {
    throw Error(path.string() + ": " + e.what());
  }
}

}  // namespace

engine::QuantizeSummary write_fp8_model_dir(const std::string& src_dir, const engine::ModelConfig& config,
                                            const engine::Checkpoint& weights, const std::string& dst) {
  std::error_code ec;
  const fs::path target = fs::path(dst).lexically_normal();
  if (fs::exists(target, ec) && !(fs::is_directory(target, ec) && fs::is_empty(target, ec)))
    throw Error(dst + ": already exists (quantize writes a new directory)");
  fs::path parent = target.parent_path();
  if (parent.empty()) parent = ".";
  if (!fs::is_directory(parent, ec)) throw Error(dst + ": the parent directory does not exist");
  const fs::path tmp = parent / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec)) throw Error(tmp.string() + ": cannot create directory: " + ec.message());
  try {
    engine::ModelConfig out_config = config;
    out_config.quantization = engine::default_fp8_quantization();
    const engine::QuantizeSummary sum = engine::quantize_checkpoint(config, weights, *out_config.quantization,
                                                                    (tmp / "model.safetensors").string());
    write_file_atomic((tmp / "config.json").string(), out_config.to_json());
    for (const char* name : kSideFiles) {
      const fs::path p = fs::path(src_dir) / name;
      if (fs::is_regular_file(p, ec)) write_file_atomic((tmp / name).string(), read_bounded(p));
    }
    if (fs::exists(target, ec)) fs::remove(target, ec);  // the empty directory it may be
    fs::rename(tmp, target, ec);
    if (ec) throw Error(dst + ": cannot rename into place: " + ec.message());
    fsync_dir(parent);
    return sum;
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

int run_model_quantize(const QuantizeOptions& opt, std::ostream& out, std::ostream& err) {
  return run_command(err, "abridge", [&]() -> int {
    if (!opt.fp8) throw Error("model quantize needs a target format: --fp8");
    const engine::ModelDir src = engine::open_model_dir(opt.src);
    if (engine::has_fp8_weights(src.config, *src.checkpoint)) throw Error(opt.src + ": already an FP8 checkpoint");
    const engine::QuantizeSummary sum = write_fp8_model_dir(opt.src, src.config, *src.checkpoint, opt.dst);
    out << "wrote " << opt.dst << ": " << sum.fp8_tensors << " linear layers in FP8 e4m3 (128x128 tiles), "
        << sum.bf16_tensors << " tensors in bf16, " << sum.bytes << " tensor bytes (source: "
        << src.checkpoint->total_bytes() << ")\n";
    return kExitOk;
  });
}

}  // namespace abridge::pipeline
