#include "pipeline/commands.h"

#include <unistd.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <map>
#include <sstream>

#include "base/bytes.h"
#include "base/error.h"
#include "base/file.h"
#include "base/format.h"
#include "base/utf8.h"
#include "engine/bench.h"
#include "engine/chat.h"
#include "engine/embedded_data.h"
#include "engine/engine.h"
#include "engine/fp8_checkpoint.h"
#include "engine/generate.h"
#include "engine/memory_plan.h"
#include "engine/serving.h"
#include "engine/weights.h"
#include "pipeline/atomic_file.h"
#include "pipeline/run_report.h"
#include "pipeline/shared_options.h"
#include "pipeline/text_input.h"

namespace abridge::pipeline {
namespace {

namespace fs = std::filesystem;
using engine::Tokenizer;

std::string read_input(const std::string& file) {
  if (file != "-") return read_text_file(file);
  std::string text;
  try {
    text = read_stream_bounded(std::cin, size_t{1} << 31);  // read_text_file()'s bound
  } catch (const Error& e) {
    throw Error(std::string("<stdin>: ") + e.what());
  }
  const size_t bad = find_invalid_utf8(text);
  if (bad != std::string::npos) throw Error("<stdin>: invalid UTF-8 at byte " + std::to_string(bad));
  return text;
}

Tokenizer load_tokenizer(const std::string& path) {
  if (path.empty()) return Tokenizer::from_json(engine::bundled_tokenizer_json(), "built-in Qwen3 tokenizer");
  return Tokenizer::from_path(path);
}

std::vector<int32_t> parse_ids(const std::string& text, const std::string& source, const Tokenizer& tok) {
  std::vector<int32_t> ids;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    int64_t v = 0;
    auto [p, ec] = std::from_chars(word.data(), word.data() + word.size(), v);
    if (ec != std::errc() || p != word.data() + word.size())
      throw Error(source + ": \"" + word + "\" is not a token id");
    if (v < 0 || v >= tok.n_tokens())
      throw Error(source + ": token id " + word + " is outside the vocabulary (0.." + std::to_string(tok.n_tokens() - 1) +
                  ")");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

}  // namespace

std::string version() { return ABRIDGE_VERSION; }

int run_command(std::ostream& err, std::string_view prefix, const std::function<int()>& body) {
  try {
    return body();
  } catch (const Error& e) {
    err << prefix << ": " << shown_message(e.what()) << '\n';
    return kExitFatal;
  }
}

int run_tokenize(const TokenizeOptions& opt, std::ostream& out, std::ostream& err) {
  return run_command(err, "abridge", [&]() -> int {
    const Tokenizer tok = load_tokenizer(opt.tokenizer);
    const std::string text = read_input(opt.file);
    if (opt.decode) {
      out << tok.decode(parse_ids(text, opt.file == "-" ? "<stdin>" : opt.file, tok));
      return kExitOk;
    }
    const auto ids = tok.encode(text, opt.plain ? engine::AddedTokens::kPlain : engine::AddedTokens::kMatch);
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) line += ' ';
      line += std::to_string(ids[i]);
    }
    out << line << '\n';
    return kExitOk;
  });
}

int run_generate(const GenerateOptions& opt, std::ostream& out, std::ostream& err) {
  return run_command(err, "abridge", [&]() -> int {
    engine::EngineOptions eo = engine_options(opt);
    eo.max_running = 1;  // one sequence: one row of logits a step
    const engine::BackendOptions backend_options = engine::backend_options(eo);
    if (!(opt.temperature >= 0) || !std::isfinite(opt.temperature))
      throw Error("--temperature must be a finite number, 0 or more, not " + shortest_number(opt.temperature));
    if (!(opt.top_p > 0 && opt.top_p <= 1)) throw Error("--top-p must be in (0, 1]");
    if (opt.max_new_tokens < 1) throw Error("--max-new-tokens must be at least 1");

    const engine::ModelDir model = engine::open_model_dir(opt.model);
    auto backend = engine::open_backend(model, backend_options, eo.device, err);

    std::vector<engine::ChatMessage> messages;
    if (!opt.system.empty()) messages.push_back({"system", opt.system});
    messages.push_back({"user", opt.prompt});

    engine::Request request;
    request.prompt = engine::encode_chat(model.tokenizer, messages);
    request.max_new_tokens = opt.max_new_tokens;
    request.sampling = {opt.temperature, opt.top_p, opt.seed};
    request.stop_ids = engine::chat_stop_ids(model.tokenizer, model.config.eos_token_ids);
    request.vocab_limit = model.tokenizer.n_tokens();

    // The serving engine, as the pipeline uses it: one request here, streamed as it is produced.
    engine::StreamDecoder decoder(model.tokenizer);
    engine::ServingEngine serving(
        *backend, engine::scheduler_options_for(*backend, 1, eo.attention, eo.step_tokens),
        [&](int64_t, int32_t token) { out << decoder.push(token) << std::flush; });
    serving.submit(std::move(request));
    const auto results = serving.run_until_idle();
    out << decoder.finish() << '\n' << std::flush;
    const engine::RequestResult& result = results.at(0);
    if (result.reason == engine::FinishReason::kError) throw Error(result.error);
    if (opt.stats) {
      const double n = static_cast<double>(result.tokens.size());
      err << std::fixed << std::setprecision(1) << "abridge: " << backend->device_description() << ": "
          << result.prompt_tokens << " prompt tokens in " << result.prefill_seconds * 1e3 << " ms; "
          << result.tokens.size() << " new tokens in " << result.decode_seconds * 1e3 << " ms ("
          << (result.decode_seconds > 0 ? n / result.decode_seconds : 0) << " tok/s); stop: "
          << engine::to_string(result.reason) << '\n';
    }
    return kExitOk;
  });
}

int run_make_random(const MakeRandomOptions& opt, std::ostream& out, std::ostream& err) {
  return run_command(err, "abridge", [&]() -> int {
    engine::ModelConfig config = engine::preset_config(opt.preset);
    engine::DType dtype;
    const bool fp8 = opt.dtype == "fp8";  // bf16 weights through the quantizer of `model quantize --fp8`
    if (fp8) config.quantization = engine::default_fp8_quantization();
    if (opt.dtype == "bf16" || fp8) {
      dtype = engine::DType::kBF16;
      config.torch_dtype = "bfloat16";
    } else if (opt.dtype == "f32") {
      dtype = engine::DType::kF32;
      config.torch_dtype = "float32";
    } else {
      throw Error("--dtype must be bf16, f32 or fp8, not \"" + opt.dtype + "\"");
    }
    std::error_code ec;
    fs::create_directories(opt.out_dir, ec);
    if (ec || !fs::is_directory(opt.out_dir)) throw Error(opt.out_dir + ": cannot create directory: " + ec.message());

    const fs::path dir(opt.out_dir);
    write_file_atomic((dir / "config.json").string(), config.to_json());
    write_file_atomic((dir / "tokenizer.json").string(), engine::bundled_tokenizer_json());
    write_file_atomic((dir / "tokenizer_config.json").string(), engine::bundled_tokenizer_config_json());
    if (!fp8) {
      engine::write_random_weights((dir / "model.safetensors").string(), config, opt.seed, dtype);
    } else {
      const fs::path src = dir / (".bf16-source.tmp." + std::to_string(::getpid()));
      std::error_code rm;
      fs::create_directories(src, ec);
      if (ec) throw Error(src.string() + ": cannot create directory: " + ec.message());
      try {
        engine::write_random_weights((src / "model.safetensors").string(), config, opt.seed, dtype);
        const engine::Checkpoint bf16(src.string());
        engine::quantize_checkpoint(config, bf16, *config.quantization, (dir / "model.safetensors").string());
      } catch (...) {
        fs::remove_all(src, rm);
        throw;
      }
      fs::remove_all(src, rm);
    }
    out << "wrote " << opt.out_dir << ": Qwen3 " << opt.preset << " shape, "
        << std::fixed << std::setprecision(3) << static_cast<double>(config.n_params()) / 1e9 << " B parameters, "
        << opt.dtype << ", seed " << opt.seed << '\n';
    return kExitOk;
  });
}

int run_model_info(const ModelInfoOptions& opt, std::ostream& out, std::ostream& err) {
  return run_command(err, "abridge", [&]() -> int {
    const engine::ModelDir model = engine::open_model_dir(opt.dir);
    const engine::ModelConfig& c = model.config;
    std::map<std::string, std::pair<int, uint64_t>> dtypes;  // dtype name -> tensors, bytes
    for (const auto& [name, t] : model.checkpoint->tensors()) {
      auto& [count, bytes] = dtypes[std::string(engine::dtype_name(t.dtype))];
      ++count;
      bytes += t.nbytes;
    }
    std::string dtype_list, dtype_bytes;
    for (const auto& [name, cb] : dtypes) {
      dtype_list += (dtype_list.empty() ? "" : ", ") + name + " x" + std::to_string(cb.first);
      dtype_bytes += (dtype_bytes.empty() ? "" : ", ") + name + " " + std::to_string(cb.second) + " (" + format_bytes(cb.second, 2) + ")";
    }

    auto row = [&](const std::string& key, const std::string& value) {
      out << std::left << std::setw(26) << key << value << '\n';
    };
    row("model", opt.dir);
    row("model_type", c.model_type);
    row("layers", std::to_string(c.num_hidden_layers));
    row("hidden_size", std::to_string(c.hidden_size));
    row("intermediate_size", std::to_string(c.intermediate_size));
    row("attention heads", std::to_string(c.num_attention_heads) + " query, " + std::to_string(c.num_key_value_heads) +
                               " key/value (GQA group " + std::to_string(c.gqa_group()) + "), head_dim " +
                               std::to_string(c.head_dim));
    row("vocab_size", std::to_string(c.vocab_size) + " (tokenizer: " + std::to_string(model.tokenizer.n_tokens()) + ")");
    row("context", std::to_string(c.max_position_embeddings) + " tokens");
    std::ostringstream theta;
    theta << c.rope_theta;
    row("rope_theta", theta.str());
    std::ostringstream eps;
    eps << c.rms_norm_eps;
    row("rms_norm_eps", eps.str());
    row("tied embeddings", c.tie_word_embeddings ? "yes" : "no");
    row("sliding window", c.use_sliding_window ? std::to_string(*c.sliding_window) + " tokens from layer " +
                                                     std::to_string(c.max_window_layers)
                                               : "none");
    std::ostringstream params;
    params << std::fixed << std::setprecision(3) << static_cast<double>(c.n_params()) / 1e9 << " B";
    row("parameters", params.str());
    row("tensors", std::to_string(model.checkpoint->tensors().size()) + " (" + dtype_list + ")");
    row("tensor bytes", std::to_string(model.checkpoint->total_bytes()) + " (" +
                            format_bytes(model.checkpoint->total_bytes(), 2) + ")");
    row("bytes by dtype", dtype_bytes);
    row("quantization", c.quantization ? c.quantization->describe() +
                                             (engine::has_fp8_weights(c, *model.checkpoint) ? "; runs on the CPU and CUDA backends"
                                                                                            : "; no FP8 tensors")
                                       : "none");
    const auto full_context = [&](engine::KvCacheDtype dtype) {
      return format_bytes(c.kv_bytes_per_token(dtype) * static_cast<uint64_t>(c.max_position_embeddings), 2);
    };
    row("KV bytes per token", std::to_string(c.kv_bytes_per_token()) + " (bf16; " + full_context(engine::KvCacheDtype::kBf16) +
                                  " for the full context), " + std::to_string(c.kv_bytes_per_token(engine::KvCacheDtype::kFp8)) +
                                  " (fp8; " + full_context(engine::KvCacheDtype::kFp8) + ")");

    // The KV pool the CUDA backend would hold on each reference card, as summarize opens it (default
    // steps, 64 logits rows); an FP8 checkpoint with the sm_80-89 GEMM scratch (Hopper keeps ~0.26 GB more).
    engine::CudaBufferOptions buffers;
    buffers.fp8_weights = engine::has_fp8_weights(c, *model.checkpoint);
    buffers.fp8_dequantized_gemm = buffers.fp8_weights;
    const uint64_t weight_bytes = static_cast<uint64_t>(engine::device_weight_bytes(c, *model.checkpoint));
    const uint64_t buffer_bytes = engine::cuda_buffer_bytes(c, buffers);
    const int64_t min_tokens = 2 * (buffers.step_tokens + engine::kCudaKvBlockTokens - 1) / engine::kCudaKvBlockTokens *
                               engine::kCudaKvBlockTokens;
    std::ostringstream table;
    table << std::left << std::setw(9) << "card" << std::setw(16) << "engine memory" << std::setw(12) << "bf16 KV"
          << "fp8 KV";
    row("KV tokens on a GPU", table.str());
    for (const engine::GpuCard& card : engine::reference_gpu_cards()) {
      std::ostringstream line;
      line << std::left << std::setw(9) << card.name << std::setw(16) << format_bytes(card.engine_bytes, 2);
      for (engine::KvCacheDtype dtype : {engine::KvCacheDtype::kBf16, engine::KvCacheDtype::kFp8}) {
        const int64_t tokens = engine::cuda_kv_tokens(c, card.engine_bytes, weight_bytes, buffer_bytes, dtype);
        line << std::setw(12) << (tokens >= min_tokens ? std::to_string(tokens) : "too small");
      }
      std::string text = line.str();
      text.erase(text.find_last_not_of(' ') + 1);
      row("", text);
    }
    row("", "(the pool left after " + format_bytes(weight_bytes, 2) + " of weights and " + format_bytes(buffer_bytes, 2) +
                " of buffers at steps of " + std::to_string(buffers.step_tokens) + " tokens;");
    row("", " 24 GB as --gpu-memory-limit 22GiB, the others 90% of the card less 1.2 GiB of CUDA context)");
    return kExitOk;
  });
}

}  // namespace abridge::pipeline
