// The engine without a GPU: config validation, dtype conversion, sampling, and the CPU backend's
// cache, batching and sliding-window behaviour on a tiny random model. (Agreement with Hugging Face
// transformers is tests/test_parity.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <set>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/sampling.h"
#include "engine/chat.h"
#include "engine/cpu_backend.h"
#include "engine/generate.h"
#include "engine/memory_plan.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine/weights.h"
#include "tests/model_fixture.h"

using namespace abridge;
using namespace abridge::engine;
using abridge::testing::random_model_dir;

namespace {

std::string valid_config() { return preset_config("tiny").to_json(); }

std::string with(const std::string& key, const nlohmann::json& value) {
  auto j = nlohmann::json::parse(valid_config());
  if (value.is_discarded()) j.erase(key);
  else j[key] = value;
  return j.dump();
}

void expect_config_error(const std::string& text, const std::string& needle) {
  try {
    ModelConfig::from_json(text, "cfg.json");
    FAIL() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("cfg.json: ", 0), 0u) << e.what();
  }
}

float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

}  // namespace

TEST(Config, RoundTripsThroughJson) {
  const ModelConfig a = preset_config("4b");
  const ModelConfig b = ModelConfig::from_json(a.to_json());
  EXPECT_EQ(b.hidden_size, 2560);
  EXPECT_EQ(b.num_hidden_layers, 36);
  EXPECT_EQ(b.num_attention_heads, 32);
  EXPECT_EQ(b.num_key_value_heads, 8);
  EXPECT_EQ(b.head_dim, 128);
  EXPECT_EQ(b.intermediate_size, 9728);
  EXPECT_TRUE(b.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(b.rope_theta, 5e6);
  // PERF.md: 144 KiB of bf16 K and V per token for Qwen3-4B.
  EXPECT_EQ(b.kv_bytes_per_token(), 147456u);
  // FP8 KV: one byte a value plus a one-byte scale per KV head, for K and V of 36 layers: 74304.
  EXPECT_EQ(b.kv_bytes_per_token(KvCacheDtype::kFp8), 2u * 36 * (8 * 128 + 8));
  EXPECT_NEAR(static_cast<double>(b.n_params()) / 1e9, 4.02, 0.01);
}

TEST(Config, ReadsTheRealQwen3InstructConfig) {
  // config.json of Qwen3-4B-Instruct-2507 as published.
  const char* text = R"({"architectures":["Qwen3ForCausalLM"],"attention_bias":false,"attention_dropout":0.0,
    "bos_token_id":151643,"eos_token_id":151645,"head_dim":128,"hidden_act":"silu","hidden_size":2560,
    "initializer_range":0.02,"intermediate_size":9728,"max_position_embeddings":262144,"max_window_layers":36,
    "model_type":"qwen3","num_attention_heads":32,"num_hidden_layers":36,"num_key_value_heads":8,
    "rms_norm_eps":1e-06,"rope_scaling":null,"rope_theta":5000000,"sliding_window":null,"tie_word_embeddings":true,
    "torch_dtype":"bfloat16","transformers_version":"4.51.0","use_cache":true,"use_sliding_window":false,
    "vocab_size":151936})";
  const ModelConfig c = ModelConfig::from_json(text);
  EXPECT_EQ(c.max_position_embeddings, 262144);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{151645});
  EXPECT_EQ(c.layer_window(35), 0);
}

TEST(Config, TransformersFiveRopeParameters) {
  auto j = nlohmann::json::parse(valid_config());
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1234567.0}};
  EXPECT_DOUBLE_EQ(ModelConfig::from_json(j.dump()).rope_theta, 1234567.0);
}

TEST(Config, SlidingWindowLayers) {
  auto j = nlohmann::json::parse(valid_config());
  j["use_sliding_window"] = true;
  j["sliding_window"] = 64;
  j["max_window_layers"] = 1;
  const ModelConfig c = ModelConfig::from_json(j.dump());
  EXPECT_EQ(c.layer_window(0), 0);
  EXPECT_EQ(c.layer_window(1), 64);
}

TEST(Config, RejectsBadConfigsWithTheField) {
  expect_config_error("{not json", "not valid JSON");
  expect_config_error("[1,2]", "JSON object");
  expect_config_error(with("hidden_size", nlohmann::json::value_t::discarded), "missing field \"hidden_size\"");
  expect_config_error(with("hidden_size", "big"), "\"hidden_size\" must be an integer");
  expect_config_error(with("num_hidden_layers", -3), "num_hidden_layers");
  expect_config_error(with("num_key_value_heads", 3), "multiple of num_key_value_heads");
  expect_config_error(with("model_type", "llama"), "model_type \"llama\" is not supported");
  expect_config_error(with("rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}), "yarn");
  expect_config_error(with("rms_norm_eps", 0), "rms_norm_eps");
  expect_config_error(with("eos_token_id", 999999999), "eos_token_id");
  expect_config_error(with("vocab_size", 1e12), "vocab_size");
}

TEST(Weights, Bf16AndF16Conversions) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-2.5f)), -2.5f);
  // Round to nearest even: 1 + 2^-8 is halfway between two bf16 values and goes to the even one (1.0).
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 0x1.0p-8f)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 0x1.8p-8f)), 1.0f + 0x1.0p-7f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_EQ(f16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xC000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x0001), 0x1.0p-24f);  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7C00)));
}

TEST(Weights, TensorTableCoversTheModel) {
  const ModelConfig c = preset_config("tiny");
  const auto table = tensor_table(c);
  EXPECT_EQ(table.size(), 1u + 11u * 2u + 1u + 1u);
  int64_t params = 0;
  for (const auto& e : table) {
    if (e.optional) continue;
    int64_t n = 1;
    for (int64_t s : e.shape) n *= s;
    params += n;
  }
  EXPECT_EQ(params, c.n_params());
}

TEST(Sampler, GreedyTakesTheFirstMaximum) {
  const std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  Sampler s({0.0f, 1.0f, 0});
  EXPECT_EQ(s.sample(logits), 1);
}

TEST(Sampler, SameSeedSameDraws) {
  std::vector<float> logits(1000);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i)) * 3;
  Sampler a({0.8f, 0.95f, 42}), b({0.8f, 0.95f, 42}), c({0.8f, 0.95f, 43});
  int differ = 0;
  for (int i = 0; i < 50; ++i) {
    const int32_t x = a.sample(logits), y = b.sample(logits), z = c.sample(logits);
    EXPECT_EQ(x, y);
    differ += x != z;
  }
  EXPECT_GT(differ, 0);
}

// Call i of a Sampler is draw i of the shared rule (base/sampling.h), the draw the GPU makes for the
// i-th token of a sequence with the same seed.
TEST(Sampler, CallIIsTheRulesDrawI) {
  std::vector<float> logits(1000);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i) * 0.37f) * 4;
  Sampler s({0.9f, 0.9f, 1234});
  std::set<int32_t> distinct;
  for (uint64_t i = 0; i < 300; ++i) {
    ASSERT_EQ(s.draws(), i);
    const int32_t t = s.sample(logits);
    EXPECT_EQ(t, sampling::sample_token(logits.data(), 1000, 0.9f, 0.9f, 1234, i)) << "draw " << i;
    distinct.insert(t);
  }
  EXPECT_GT(distinct.size(), 10u);
}

TEST(Sampler, TopPKeepsOnlyTheNucleus) {
  // Probabilities about 0.6, 0.3, 0.1/998 each for the rest: top-p 0.8 keeps ids 0 and 1 only.
  std::vector<float> logits(1000, -10.0f);
  logits[0] = std::log(0.6f);
  logits[1] = std::log(0.3f);
  Sampler s({1.0f, 0.8f, 1});
  int counts[2] = {0, 0};
  for (int i = 0; i < 2000; ++i) {
    const int32_t t = s.sample(logits);
    ASSERT_TRUE(t == 0 || t == 1) << t;
    ++counts[t];
  }
  // 2:1 odds within the nucleus; 2000 draws put the share of id 0 near 0.667.
  EXPECT_NEAR(counts[0] / 2000.0, 0.667, 0.05);
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  std::vector<float> logits = {1.0f, 0.0f};
  auto share = [&](float t) {
    Sampler s({t, 1.0f, 3});
    int zero = 0;
    for (int i = 0; i < 4000; ++i) zero += s.sample(logits) == 0;
    return zero / 4000.0;
  };
  EXPECT_NEAR(share(1.0f), 1 / (1 + std::exp(-1.0)), 0.03);   // 0.731
  EXPECT_NEAR(share(0.25f), 1 / (1 + std::exp(-4.0)), 0.02);  // 0.982
  EXPECT_NEAR(share(4.0f), 1 / (1 + std::exp(-0.25)), 0.03);  // 0.562
}

class TinyModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = new ModelDir(open_model_dir(random_model_dir().string()));
    backend_ = new CpuBackend(model_->config, *model_->checkpoint, 2);
  }
  static void TearDownTestSuite() {
    delete backend_;
    delete model_;
  }
  static std::vector<int32_t> prompt() {
    return model_->tokenizer.encode("The quick brown fox jumps over the lazy dog. 敏捷的棕色狐狸", AddedTokens::kPlain);
  }
  static ModelDir* model_;
  static CpuBackend* backend_;
};
ModelDir* TinyModel::model_ = nullptr;
CpuBackend* TinyModel::backend_ = nullptr;

TEST_F(TinyModel, ChunkedPrefillEqualsOneStepEqualsDecode) {
  const auto ids = prompt();
  const int64_t vocab = model_->config.vocab_size, n = static_cast<int64_t>(ids.size());
  ASSERT_GT(n, 10);
  const auto whole = all_logits(*backend_, 0, ids, n);
  const auto chunked = all_logits(*backend_, 0, ids, 3);
  const auto single = all_logits(*backend_, 0, ids, 1);
  // Same math in a different grouping of tokens: differences are float32 rounding only.
  EXPECT_LT(max_abs_diff(whole.data(), chunked.data(), whole.size()), 1e-4f);
  EXPECT_LT(max_abs_diff(whole.data(), single.data(), whole.size()), 1e-4f);
  EXPECT_EQ(backend_->cached_tokens(0), 0);  // released
  // Logits differ from position to position (the cache is used, not ignored).
  EXPECT_GT(max_abs_diff(whole.data(), whole.data() + vocab, static_cast<size_t>(vocab)), 1e-3f);
}

TEST_F(TinyModel, SequencesInOneBatchDoNotSeeEachOther) {
  const auto a = prompt();
  const auto b = model_->tokenizer.encode("Completely different text, in a second sequence.", AddedTokens::kPlain);
  const int64_t vocab = model_->config.vocab_size;
  const auto alone_a = all_logits(*backend_, 0, a);
  const auto alone_b = all_logits(*backend_, 0, b);
  // Interleave the two sequences token by token in shared steps, slots 5 and 9.
  BatchPlan plan;
  std::vector<std::pair<int, size_t>> rows;  // (sequence, position) of each logits row
  for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
    if (i < a.size()) plan.add(a[i], static_cast<int32_t>(i), 5, true), rows.emplace_back(0, i);
    if (i < b.size()) plan.add(b[i], static_cast<int32_t>(i), 9, true), rows.emplace_back(1, i);
  }
  std::vector<float> logits(rows.size() * vocab);
  backend_->forward(plan, logits);
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto& ref = rows[r].first == 0 ? alone_a : alone_b;
    ASSERT_LT(max_abs_diff(&logits[r * vocab], &ref[rows[r].second * vocab], static_cast<size_t>(vocab)), 1e-4f)
        << "row " << r;
  }
  backend_->release(5);
  backend_->release(9);
}

TEST_F(TinyModel, SlidingWindowAtLeastTheSequenceIsFullAttention) {
  const auto ids = prompt();
  const int64_t n = static_cast<int64_t>(ids.size());
  const auto full = all_logits(*backend_, 0, ids);
  ModelConfig windowed = model_->config;
  windowed.use_sliding_window = true;
  windowed.max_window_layers = 0;
  windowed.sliding_window = n;
  CpuBackend wide(windowed, *model_->checkpoint, 2);
  const auto same = all_logits(wide, 0, ids);
  EXPECT_EQ(full, same);  // exactly: the same keys in the same order
  windowed.sliding_window = 4;
  CpuBackend narrow(windowed, *model_->checkpoint, 2);
  const auto differ = all_logits(narrow, 0, ids);
  const size_t vocab = static_cast<size_t>(model_->config.vocab_size);
  // The first 4 positions see the same keys; later ones lose the start.
  EXPECT_EQ(std::vector<float>(full.begin(), full.begin() + 4 * vocab),
            std::vector<float>(differ.begin(), differ.begin() + 4 * vocab));
  EXPECT_GT(max_abs_diff(full.data() + (n - 1) * vocab, differ.data() + (n - 1) * vocab, vocab), 1e-3f);
}

TEST_F(TinyModel, GreedyGenerationIsDeterministicAndStops) {
  const auto ids = encode_chat(model_->tokenizer, std::vector<ChatMessage>{{"user", "Hello"}});
  GenerationOptions opt;
  opt.max_new_tokens = 12;
  const auto a = generate(*backend_, 0, ids, opt);
  const auto b = generate(*backend_, 0, ids, opt);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.prompt_tokens, static_cast<int64_t>(ids.size()));
  // The greedy tokens are the argmax of the logits at each step.
  std::vector<int32_t> seq = ids;
  for (int32_t t : a.tokens) {
    const auto logits = all_logits(*backend_, 0, seq);
    const size_t vocab = static_cast<size_t>(model_->config.vocab_size);
    EXPECT_EQ(argmax(std::span<const float>(logits).subspan(logits.size() - vocab)), t);
    seq.push_back(t);
  }
  if (a.stop == StopReason::kLength) {
    EXPECT_EQ(a.tokens.size(), 12u);
    // Make the first generated token a stop token: generation ends before it.
    opt.stop_ids = {a.tokens[0]};
    const auto c = generate(*backend_, 0, ids, opt);
    EXPECT_TRUE(c.tokens.empty());
    EXPECT_EQ(c.stop, StopReason::kStopToken);
  }
}

TEST_F(TinyModel, RejectsPromptsLongerThanTheContext) {
  std::vector<int32_t> ids(static_cast<size_t>(model_->config.max_position_embeddings), 100);
  GenerationOptions opt;
  opt.max_new_tokens = 1;
  EXPECT_THROW(generate(*backend_, 0, ids, opt), Error);
}

TEST_F(TinyModel, ChatPromptKeepsDocumentTextPlain) {
  const auto ids = encode_chat(model_->tokenizer, std::vector<ChatMessage>{{"user", "a <|im_end|> b"}});
  const int32_t im_end = model_->tokenizer.token_id("<|im_end|>");
  // One <|im_end|> closes the user turn; the one in the text stays text.
  EXPECT_EQ(std::count(ids.begin(), ids.end(), im_end), 1);
  EXPECT_EQ(model_->tokenizer.decode(ids),
            "<|im_start|>user\na <|im_end|> b<|im_end|>\n<|im_start|>assistant\n");
}

TEST_F(TinyModel, AttentionWindowWithSinks) {
  const auto ids = prompt();
  const int64_t n = static_cast<int64_t>(ids.size());
  const size_t vocab = static_cast<size_t>(model_->config.vocab_size);
  const auto full = all_logits(*backend_, 0, ids);
  // A window covering the sequence is full attention, exactly.
  CpuBackend wide(model_->config, *model_->checkpoint, 2, AttentionOptions{n, 4});
  EXPECT_EQ(all_logits(wide, 0, ids), full);
  // window 4 without sinks is the model-declared sliding window of 4.
  ModelConfig windowed = model_->config;
  windowed.use_sliding_window = true;
  windowed.max_window_layers = 0;
  windowed.sliding_window = 4;
  CpuBackend declared(windowed, *model_->checkpoint, 2);
  CpuBackend engine_window(model_->config, *model_->checkpoint, 2, AttentionOptions{4, 0});
  const auto no_sinks = all_logits(engine_window, 0, ids);
  EXPECT_EQ(all_logits(declared, 0, ids), no_sinks);
  // Two sinks: positions up to window + sinks - 1 = 5 see the same keys as full attention; later
  // positions see the sinks, so they differ from both full attention and the sink-less window.
  CpuBackend sinks(model_->config, *model_->checkpoint, 2, AttentionOptions{4, 2});
  const auto with_sinks = all_logits(sinks, 0, ids);
  EXPECT_EQ(std::vector<float>(full.begin(), full.begin() + 6 * vocab),
            std::vector<float>(with_sinks.begin(), with_sinks.begin() + 6 * vocab));
  const size_t last = (n - 1) * vocab;
  EXPECT_GT(max_abs_diff(&full[last], &with_sinks[last], vocab), 1e-3f);
  EXPECT_GT(max_abs_diff(&no_sinks[last], &with_sinks[last], vocab), 1e-3f);
}

TEST(AttentionOptions, Spans) {
  const AttentionOptions full{};
  EXPECT_EQ(full.span(100, 0).begin, 0);
  const AttentionOptions w{8, 4};
  EXPECT_EQ(w.span(5, 0).begin, 0);       // inside the first window: everything
  EXPECT_EQ(w.span(5, 0).sink_end, 0);
  EXPECT_EQ(w.span(100, 0).begin, 93);    // (100 - 8, 100]
  EXPECT_EQ(w.span(100, 0).sink_end, 4);  // plus [0, 4)
  EXPECT_EQ(w.span(10, 0).begin, 3);
  EXPECT_EQ(w.span(10, 0).sink_end, 3);   // sinks and window overlap: no key twice
  EXPECT_EQ(full.span(100, 16).begin, 85);  // the model's own window, no sinks
  EXPECT_EQ(full.span(100, 16).sink_end, 0);
}

namespace {

// A backend whose logits always rank the highest ids first: the padding rows past a tokenizer's
// vocabulary win unless generate() keeps sampling inside the limit.
class TailHeavyBackend final : public Backend {
 public:
  explicit TailHeavyBackend(const ModelConfig& c) : config_(c) {}
  std::string_view name() const override { return "tail-heavy"; }
  const ModelConfig& config() const override { return config_; }
  void forward(const BatchPlan& plan, std::span<float> logits) override {
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>(i % config_.vocab_size) * 1e-3f;
    for (size_t i = 0; i < plan.size(); ++i) ++cached_[plan.slots[i]];
  }
  void release(int32_t slot) override { cached_.erase(slot); }
  int64_t cached_tokens(int32_t slot) const override { return cached_.count(slot) ? cached_.at(slot) : 0; }

 private:
  ModelConfig config_;
  std::map<int32_t, int64_t> cached_;
};

}  // namespace

TEST(Generate, SamplingStaysBelowTheVocabularyLimit) {
  TailHeavyBackend backend(preset_config("tiny"));
  const std::vector<int32_t> prompt = {1, 2, 3};
  GenerationOptions opt;
  opt.max_new_tokens = 5;
  EXPECT_EQ(generate(backend, 0, prompt, opt).tokens, std::vector<int32_t>(5, 151935));  // no limit: padding
  opt.vocab_limit = 151669;
  EXPECT_EQ(generate(backend, 0, prompt, opt).tokens, std::vector<int32_t>(5, 151668));
  opt.sampling = {2.0f, 0.9f, 3};
  for (int32_t t : generate(backend, 0, prompt, opt).tokens) EXPECT_LT(t, 151669);
}

// --- the CUDA backend's memory, worked out on the host (engine/memory_plan.h) ---

namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t k4bBf16WeightBytes = 8044936192;  // 2 bytes x 4,022,468,096 parameters (README, `model info`)

// The weights of the published Qwen3-4B FP8 checkpoint as the CUDA backend holds them: each linear layer's
// F8_E4M3 codes with an f32 scale per 128x128 tile, embeddings, norms and the lm_head it stores (although
// the config ties it) in bf16: what device_weight_bytes() counts on that checkpoint.
uint64_t fp8_4b_weight_bytes() {
  const ModelConfig c = preset_config("4b");
  uint64_t bytes = 0;
  for (const TensorEntry& e : tensor_table(c)) {
    uint64_t numel = 1;
    for (int64_t d : e.shape) numel *= static_cast<uint64_t>(d);
    const bool fp8 = e.role == TensorRole::kQ || e.role == TensorRole::kK || e.role == TensorRole::kV ||
                     e.role == TensorRole::kO || e.role == TensorRole::kGate || e.role == TensorRole::kUp ||
                     e.role == TensorRole::kDown;
    bytes += fp8 ? numel + 4 * static_cast<uint64_t>(((e.shape[0] + 127) / 128) * ((e.shape[1] + 127) / 128)) : 2 * numel;
  }
  return bytes;
}

std::string with_commas(int64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return s;
}

}  // namespace

// Every allocation CudaBackend's constructor makes before its KV pool, the weights apart, written out
// for the 4B shape (T = 8,192 tokens a step, R = 64 logits rows): the plan must add up to them.
TEST(MemoryPlan, BuffersOfThe4bShapeAsTheCudaBackendAllocatesThem) {
  const ModelConfig c = preset_config("4b");
  const std::vector<uint64_t> allocations = {
      33554432,                          // the cuBLAS workspace, 32 MiB
      36 * (2 * 2560 + 2 * 128) * 2 + 2560 * 2,  // norms in f32: 2 bytes a value beyond device_weight_bytes
      64 * 4,                            // RoPE inverse frequencies, head_dim / 2 floats
      8192ull * 2560 * 4,                // x, the f32 residual stream (T, d)
      8192ull * 4096 * 2,                // h, bf16 (T, max(d, q_dim))
      8192ull * 6144 * 4,                // qkv, f32 (T, q_dim + 2 kv_dim)
      8192ull * 4096 * 2,                // q, bf16 (T, q_dim)
      8192ull * 4096 * 2,                // att, bf16 (T, q_dim)
      8192ull * 19456 * 4,               // gu, f32 (T, 2 ffn)
      8192ull * 9728 * 2,                // act, bf16 (T, ffn)
      64ull * 2560 * 2,                  // hl, bf16 (R, d)
      64ull * 151936 * 4,                // logits, f32 (R, vocab)
      64ull * 32,                        // sampling rows (R)
      64ull * 4,                         // sampled ids (R)
      8192ull * 32 * 8 * 130 * 4,        // attention partials: T x heads x 8 splits x (head_dim + 2) floats
  };
  uint64_t sum = 0;
  for (uint64_t a : allocations) sum += a;
  EXPECT_EQ(sum, 2447148544u);  // 2.28 GiB, the header's worked example
  EXPECT_EQ(cuda_buffer_bytes(c), sum);

  // FP8 weights: the step's activation codes (T, 9,728 = the widest input) and their f32 scales (76 groups
  // a row); on the dequantized path also those activations in bf16 and the fused gate/up weight
  // (19,456 x 2,560) in bf16.
  CudaBufferOptions fp8;
  fp8.fp8_weights = true;
  EXPECT_EQ(cuda_buffer_bytes(c, fp8), sum + 8192ull * 9728 + 76ull * 8192 * 4);
  fp8.fp8_dequantized_gemm = true;
  EXPECT_EQ(cuda_buffer_bytes(c, fp8), sum + 8192ull * 9728 + 76ull * 8192 * 4 + 8192ull * 9728 * 2 + 19456ull * 2560 * 2);

  // Smaller steps: every per-token buffer shrinks (289,792 bytes a token of step: 0.28 MiB), the
  // attention partials down to their floor of 64 Mi floats and no further.
  CudaBufferOptions small;
  small.step_tokens = 2048;
  EXPECT_EQ(sum - cuda_buffer_bytes(c, small), 6144ull * 289792);
  small.step_tokens = 64;
  EXPECT_EQ(cuda_buffer_bytes(c, small), 33554432 + 392192 + 256 + 64ull * 156672 + 64ull * 2560 * 2 +
                                             64ull * 151936 * 4 + 64ull * 36 + (64ull << 20) * 4);
}

// The pool a 4B model leaves under --gpu-memory-limit 22GiB, in whole blocks of 64 tokens, and its edges.
TEST(MemoryPlan, KvTokensOfThe4bShapeUnderALimit) {
  const ModelConfig c = preset_config("4b");
  const uint64_t buffers = cuda_buffer_bytes(c);
  // 22 GiB - 8,044,936,192 - 2,447,148,544 = 13,130,168,704 bytes: 1,391 blocks of 64 x 147,456 bytes (bf16
  // KV), 2,761 blocks of 64 x 74,304 (FP8 KV, 1.98x the tokens).
  EXPECT_EQ(cuda_kv_tokens(c, 22 * kGiB, k4bBf16WeightBytes, buffers, KvCacheDtype::kBf16), 1391 * 64);
  EXPECT_EQ(cuda_kv_tokens(c, 22 * kGiB, k4bBf16WeightBytes, buffers, KvCacheDtype::kFp8), 2761 * 64);
  const uint64_t held = k4bBf16WeightBytes + buffers, block = 147456 * 64;
  EXPECT_EQ(cuda_kv_tokens(c, held + 1391 * block, k4bBf16WeightBytes, buffers, KvCacheDtype::kBf16), 1391 * 64);
  EXPECT_EQ(cuda_kv_tokens(c, held + 1391 * block - 1, k4bBf16WeightBytes, buffers, KvCacheDtype::kBf16), 1390 * 64);
  EXPECT_EQ(cuda_kv_tokens(c, held + block - 1, k4bBf16WeightBytes, buffers, KvCacheDtype::kBf16), 0);
  EXPECT_EQ(cuda_kv_tokens(c, held, k4bBf16WeightBytes, buffers, KvCacheDtype::kBf16), 0);
  EXPECT_EQ(cuda_kv_tokens(c, held / 2, k4bBf16WeightBytes, buffers, KvCacheDtype::kBf16), 0);  // no wrap-around
  EXPECT_EQ(cuda_kv_tokens(c, held + 1391 * block, k4bBf16WeightBytes, buffers, KvCacheDtype::kBf16, 16), 1391 * 64);
}

// The reference cards reproduce what the engine held on real GPUs (docs/PERFORMANCE.md): 70.6 GiB on an
// 80 GB H100 at the default fraction, and a KV pool of 840,384 tokens for a 4B model with bf16 weights
// on a 141 GB H200 (steps of 8,192, 64 logits rows); within 1%.
TEST(MemoryPlan, ReferenceCardsMatchMeasuredRuns) {
  const std::vector<GpuCard> cards = reference_gpu_cards();
  ASSERT_EQ(cards.size(), 4u);
  EXPECT_EQ(cards[0].name, "24 GB");
  EXPECT_EQ(cards[0].engine_bytes, 22 * kGiB);
  EXPECT_EQ(cards[2].name, "80 GB");
  EXPECT_NEAR(static_cast<double>(cards[2].engine_bytes) / static_cast<double>(kGiB), 70.6, 0.706);
  EXPECT_EQ(cards[3].name, "141 GB");
  const ModelConfig c = preset_config("4b");
  const int64_t h200 = cuda_kv_tokens(c, cards[3].engine_bytes, k4bBf16WeightBytes, cuda_buffer_bytes(c), KvCacheDtype::kBf16);
  EXPECT_NEAR(static_cast<double>(h200), 840384.0, 8403.84);
}

// The README's table of context per card is this plan's: Qwen3-4B with bf16 or FP8 weights (the
// published checkpoints, 8.04 GB and 5.19 GB on the device) and bf16 or FP8 KV, at the default steps;
// the FP8 rows count the sm_80-89 GEMM scratch, as `model info` does.
TEST(MemoryPlan, TheReadmeTableIsThisPlan) {
  const ModelConfig c = preset_config("4b");
  EXPECT_EQ(fp8_4b_weight_bytes(), 5190419712u);
  CudaBufferOptions fp8;
  fp8.fp8_weights = fp8.fp8_dequantized_gemm = true;
  const std::string readme = abridge::testing::read_file(abridge::testing::source_path("README.md"));
  for (const GpuCard& card : reference_gpu_cards()) {
    char memory[32];
    std::snprintf(memory, sizeof memory, "%.1f", static_cast<double>(card.engine_bytes) / static_cast<double>(kGiB));
    std::string row = "| " + card.name + " (" + memory + " GiB) |";
    for (KvCacheDtype kv : {KvCacheDtype::kBf16, KvCacheDtype::kFp8})
      row += " " + with_commas(cuda_kv_tokens(c, card.engine_bytes, k4bBf16WeightBytes, cuda_buffer_bytes(c), kv)) + " |";
    for (KvCacheDtype kv : {KvCacheDtype::kBf16, KvCacheDtype::kFp8})
      row += " " + with_commas(cuda_kv_tokens(c, card.engine_bytes, fp8_4b_weight_bytes(), cuda_buffer_bytes(c, fp8), kv)) + " |";
    std::printf("%s\n", row.c_str());
    EXPECT_NE(readme.find(row + "\n"), std::string::npos) << "README.md lacks the row: " << row;
  }
}
