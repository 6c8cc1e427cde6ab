#include <cmath>
#include <cstdio>
#include <ctime>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "base/error.h"
#include "engine/bench.h"
#include "engine/engine.h"
#include "engine/fp8_checkpoint.h"
#include "pipeline/commands.h"
#include "pipeline/run_report.h"
#include "pipeline/shared_options.h"

namespace abridge::pipeline {
namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

int64_t parse_count(const std::string& s, const std::string& option) {
  try {
    size_t used = 0;
    const long long v = std::stoll(s, &used);
    if (used != s.size() || v < 1) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception&) {
    throw Error(option + ": \"" + s + "\" is not a positive integer");
  }
}

std::string fmt(double v, int precision) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(precision) << v;
  return s.str();
}

}  // namespace

int run_bench_engine(const BenchEngineOptions& opt, std::ostream& out, std::ostream& err) {
  return run_command(err, "abridge", [&]() -> int {
    engine::EngineBenchOptions bo;
    bo.prefill_lengths.clear();
    for (const auto& p : split(opt.prefill, ',')) bo.prefill_lengths.push_back(parse_count(p, "--prefill"));
    bo.decodes.clear();
    for (const auto& d : split(opt.decode, ',')) {
      const auto parts = split(d, 'x');
      if (parts.size() != 2) throw Error("--decode: \"" + d + "\" is not BATCHxCONTEXT");
      bo.decodes.push_back({parse_count(parts[0], "--decode"), parse_count(parts[1], "--decode")});
    }
    check_range("--steps", opt.decode_steps, 1, 1 << 20);
    bo.decode_steps = opt.decode_steps;
    engine::EngineOptions eo = engine_options(opt);  // --device, the GPU memory, --prefill-chunk
    if (eo.step_tokens > 0) bo.prefill_chunk = eo.step_tokens;  // 0: the default, as elsewhere
    check_range("--time-limit", opt.time_limit, 0.0, 86400.0);
    bo.time_limit_s = opt.time_limit;
    if (!(opt.gemm_tflops >= 0) || !(opt.copy_tbps >= 0) || !std::isfinite(opt.gemm_tflops) || !std::isfinite(opt.copy_tbps))
      throw Error("--gemm-tflops and --copy-tbps must be 0 (auto) or more");

    const engine::ModelDir model = engine::open_model_dir(opt.model);
    eo.max_running = 1;  // a row of logits for each sequence of the largest decode batch
    for (const auto& d : bo.decodes) eo.max_running = static_cast<int32_t>(std::clamp<int64_t>(d.batch, eo.max_running, INT32_MAX));
    const engine::BackendOptions backend_options = engine::backend_options(eo);
    auto backend = engine::open_backend(model, backend_options, eo.device, err);

    // Ceilings measured on this project's GPU machines (see docs/PERFORMANCE.md).
    const std::string device = backend->device_description();
    bo.gemm_tflops = opt.gemm_tflops;
    bo.copy_tbps = opt.copy_tbps;
    const bool fp8 = engine::has_fp8_weights(model.config, *model.checkpoint);
    bo.weight_bytes = engine::device_weight_bytes(model.config, *model.checkpoint);
    bo.kv_cache_dtype = backend_options.kv_cache_dtype;
    if (bo.gemm_tflops == 0 && device.find("H100") != std::string::npos) bo.gemm_tflops = 809, bo.copy_tbps = 3.03;
    if (bo.gemm_tflops == 0 && device.find("H200") != std::string::npos) bo.gemm_tflops = 790, bo.copy_tbps = 4.3;

    err << "abridge bench engine: " << opt.model << " on " << device << std::endl;
    const auto rows = engine::run_engine_bench(*backend, bo, err);

    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
    const engine::ModelConfig& c = model.config;
    out << "abridge " << version() << " bench engine, " << date << ", " << device << " (" << backend->name()
        << " backend)\nmodel: " << opt.model << " (" << fmt(static_cast<double>(c.n_params()) / 1e9, 2) << " B params, "
        << c.num_hidden_layers << " layers, d=" << c.hidden_size << ")\n";
    if (bo.gemm_tflops > 0)
      out << "ceilings: bf16 GEMM " << fmt(bo.gemm_tflops, 0) << " TFLOP/s, copy " << fmt(bo.copy_tbps, 2)
          << " TB/s (prefill: FLOPs / GEMM rate; decode: weight + KV bytes / copy rate)\n";
    if (fp8)
      out << "FP8 checkpoint: " << fmt(bo.weight_bytes / 1e9, 2)
          << " GB of weights a decode step reads; FP8 tensor cores run twice the bf16 GEMM rate, so prefill may pass "
             "the ceiling\n";
    const bool fp8_kv = bo.kv_cache_dtype == engine::KvCacheDtype::kFp8;
    out << "KV cache: " << (fp8_kv ? "fp8 (e4m3 codes, a power-of-two scale per token and KV head)" : "bf16") << ", "
        << fmt(static_cast<double>(c.kv_bytes_per_token(bo.kv_cache_dtype)) / 1024, 1) << " KiB a token";
    if (backend->kv_block_size() > 0)
      out << ", " << backend->kv_blocks() * backend->kv_block_size() << " tokens in the pool";
    out << "\n";
    out << "\n| measurement | time | tok/s | ceiling tok/s | % of ceiling |\n|---|---:|---:|---:|---:|\n";
    for (const auto& r : rows) {
      out << "| " << r.what << " | ";
      if (r.skipped) {
        out << r.note << " | | | |\n";
        continue;
      }
      const bool decode = r.what.rfind("decode", 0) == 0;
      out << (decode ? fmt(r.seconds * 1e3, 2) + " ms/step" : "TTFT " + fmt(r.seconds, 3) + " s") << " | "
          << fmt(r.tokens_per_s, 0) << " | "
          << (r.ceiling_tokens_per_s > 0 ? fmt(r.ceiling_tokens_per_s, 0) : "-") << " | "
          << (r.ceiling_tokens_per_s > 0 ? fmt(100.0 * r.tokens_per_s / r.ceiling_tokens_per_s, 1) + "%" : "-") << " |\n";
    }
    out << "\ndevice memory held by the engine: " << fmt(static_cast<double>(backend->device_memory_bytes()) / (1ull << 30), 1)
        << " GiB (weights, buffers and the KV pool, sized by --gpu-memory-fraction " << opt.gpu_memory_fraction
        << (backend_options.gpu_memory_limit > 0 ? " and --gpu-memory-limit " + opt.gpu_memory_limit : std::string()) << ")\n";
    return kExitOk;
  });
}

}  // namespace abridge::pipeline
