// `abridge bench summarize`: the real pipeline on a corpus, beside the floor of the requests it made.
//
// The floor (docs/PERFORMANCE.md): for the requests the run sent to the engine, with prompt lengths n_i
// and g_i generated tokens,
//   floor = sum_i TTFT(n_i) + decode bytes / copy rate,
//   decode bytes = sum_i g_i * (n_i + g_i / 2) * KV bytes per token      (each token reads its cache)
//                + (decode-only steps) * weight bytes                     (weights read for decodes alone),
// where TTFT(n) is this engine's own time to prefill one prompt of n tokens alone on this device,
// interpolated between prompts timed here after the run (or given by --ttft-points, e.g. from
// `bench engine`). The lower
// bound counts the weights once per token of the longest reply instead of once per decode-only step.
// Model loading is reported apart and left out of the share.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "base/error.h"
#include "engine/bench.h"
#include "engine/engine.h"
#include "pipeline/atomic_file.h"
#include "pipeline/commands.h"
#include "pipeline/run_report.h"
#include "pipeline/summarize.h"

namespace abridge::pipeline {
namespace {

using Clock = std::chrono::steady_clock;

std::string fmt(double v, int precision) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(precision) << v;
  return s.str();
}

std::string thousands(int64_t v) {
  std::string s = std::to_string(v), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0 && s[0] != '-') out += ',';
    out += s[i];
  }
  return out;
}

std::vector<double> parse_numbers(const std::string& s, const std::string& option) {
  std::vector<double> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const double v = std::stod(item, &used);
      if (used != item.size() || !std::isfinite(v) || v < 0) throw std::invalid_argument(item);
      out.push_back(v);
    } catch (const std::exception&) {
      throw Error(option + ": \"" + item + "\" is not a number >= 0");
    }
  }
  return out;
}

// The engine's time to first token for one prompt of n tokens, alone: submitted to a fresh serving
// engine on the same backend, with the same step budget, one token generated.
double time_to_first_token(engine::Engine& eng, int64_t n) {
  engine::ServingEngine serving(eng.backend(), eng.scheduler_options());
  engine::Request r;
  const int64_t vocab = eng.tokenizer().n_tokens();
  for (int64_t i = 0; i < n; ++i) r.prompt.push_back(static_cast<int32_t>((i * 7919 + 104729) % vocab));
  r.max_new_tokens = 1;
  const auto t0 = Clock::now();
  serving.submit(std::move(r));
  const auto results = serving.run_until_idle();
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (results.size() != 1 || results[0].reason == engine::FinishReason::kError)
    throw Error("the TTFT probe of " + std::to_string(n) + " tokens failed" +
                (results.empty() ? std::string() : ": " + results[0].error));
  return s;
}

// TTFT(n) between measured points (n_k, t_k): the time per token, t/n, is linear in n for a prefill
// whose attention grows with the context (t = a*n + b*n^2), so it is interpolated linearly in n between
// neighbouring points and extended along the nearest segment outside them (never below half the
// smallest measured time per token).
class TtftCurve {
 public:
  explicit TtftCurve(std::vector<std::pair<int64_t, double>> points) : p_(std::move(points)) {
    std::sort(p_.begin(), p_.end());
    if (p_.empty()) throw Error("no TTFT points");
  }
  double operator()(int64_t n) const {
    if (n <= 0) return 0;
    auto per = [&](size_t k) { return p_[k].second / static_cast<double>(p_[k].first); };
    if (p_.size() == 1) return per(0) * static_cast<double>(n);
    size_t k = 1;
    while (k + 1 < p_.size() && p_[k].first < n) ++k;
    const double x0 = static_cast<double>(p_[k - 1].first), x1 = static_cast<double>(p_[k].first);
    double per_token = per(k - 1) + (per(k) - per(k - 1)) * (static_cast<double>(n) - x0) / (x1 - x0);
    double least = per(0);
    for (size_t i = 1; i < p_.size(); ++i) least = std::min(least, per(i));
    per_token = std::max(per_token, least / 2);
    return per_token * static_cast<double>(n);
  }
  const std::vector<std::pair<int64_t, double>>& points() const { return p_; }

 private:
  std::vector<std::pair<int64_t, double>> p_;
};

// "8192:0.140,32768:0.983" -> points.
std::vector<std::pair<int64_t, double>> parse_points(const std::string& s) {
  std::vector<std::pair<int64_t, double>> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t colon = item.find(':');
    try {
      if (colon == std::string::npos) throw std::invalid_argument(item);
      size_t u1 = 0, u2 = 0;
      const long long n = std::stoll(item.substr(0, colon), &u1);
      const double t = std::stod(item.substr(colon + 1), &u2);
      if (u1 != colon || u2 != item.size() - colon - 1 || n < 1 || !(t > 0) || !std::isfinite(t))
        throw std::invalid_argument(item);
      out.emplace_back(n, t);
    } catch (const std::exception&) {
      throw Error("--ttft-points: \"" + item + "\" is not TOKENS:SECONDS (e.g. 8192:0.140)");
    }
  }
  if (out.empty()) throw Error("--ttft-points is empty");
  return out;
}

// Host memory copy rate (read + write bytes per second): the CPU backend's ceiling.
double host_copy_rate() {
  const size_t n = size_t{256} << 20;
  std::vector<char> a(n, 1), b(n, 2);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = Clock::now();
    std::memcpy(b.data(), a.data(), n);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, 2.0 * static_cast<double>(n) / s);
    std::swap(a, b);
  }
  return best;
}

}  // namespace

int run_bench_summarize(const BenchSummarizeOptions& opt, std::istream& in, std::ostream& out, std::ostream& err) {
  const auto t_start = Clock::now();
  return run_command(err, "abridge bench summarize", [&]() -> int {
    const SummarizeOptions& o = opt.summarize;
    if (o.model.empty()) throw Error("bench summarize needs --model DIR (the floor is the engine's)");
    std::vector<std::pair<int64_t, double>> given;
    if (!opt.ttft_points.empty()) given = parse_points(opt.ttft_points);
    std::vector<double> lengths;
    if (!opt.ttft_lengths.empty()) lengths = parse_numbers(opt.ttft_lengths, "--ttft-lengths");
    if (opt.copy_tbps < 0 || !std::isfinite(opt.copy_tbps)) throw Error("--copy-tbps must be >= 0");

    SummarizeRun run;
    if (const auto code = run.open(o, in, err)) return *code;
    const BatchReport r = run.run(t_start);
    engine::Engine& eng = *run.engines().at(0)->engine();
    err << final_line(r) << '\n';

    // TTFT(n) of this engine alone: measured after the run, unless given.
    std::vector<std::pair<int64_t, double>> points = given;
    if (points.empty()) {
      int64_t longest = 0;
      for (const RequestRecord& q : r.requests) longest = std::max(longest, q.prompt_tokens);
      if (lengths.empty() && longest > 0)
        for (int64_t n : {longest / 16, longest / 4, longest})
          if (n >= 64) lengths.push_back(static_cast<double>(n));
      if (lengths.empty()) lengths = {512, 2048};
      time_to_first_token(eng, 256);  // warm-up
      for (double n : lengths) {
        const int64_t len = std::min<int64_t>(static_cast<int64_t>(n), eng.max_context() - 1);
        err << "abridge bench summarize: TTFT of " << len << " tokens alone..." << std::endl;
        points.emplace_back(len, time_to_first_token(eng, len));
      }
    }
    const TtftCurve ttft(points);

    // Ceilings.
    const std::string device = eng.device_description();
    double copy = opt.copy_tbps * 1e12;
    if (copy == 0 && device.find("H100") != std::string::npos) copy = 3.03e12;
    if (copy == 0 && device.find("H200") != std::string::npos) copy = 4.3e12;
    if (copy == 0 && !eng.on_gpu()) copy = host_copy_rate();
    const engine::ModelConfig& c = eng.config();
    const int value_bytes = eng.on_gpu() ? 2 : 4;  // bf16 on the GPU, float32 in the CPU reference
    // The KV bytes a decode step reads per token of context: the GPU's cache in its dtype
    // (--kv-cache-dtype), the CPU reference's float32 (twice bf16, whatever rounding it applies).
    const double kv_per_token =
        eng.on_gpu() ? static_cast<double>(c.kv_bytes_per_token(engine::parse_kv_cache_dtype(o.kv_cache_dtype)))
                     : 2.0 * static_cast<double>(c.kv_bytes_per_token());
    // On the GPU the weights as the CUDA backend holds them (an FP8 model's linear layers at one byte).
    const double weight_bytes = eng.on_gpu() ? engine::device_weight_bytes(c, *eng.model().checkpoint)
                                             : static_cast<double>(c.n_params()) * value_bytes;

    double prefill_floor = 0, kv_bytes = 0;
    int64_t prompt_tokens = 0, generated = 0, longest_reply = 0;
    for (const RequestRecord& q : r.requests) {
      prefill_floor += ttft(q.prompt_tokens);
      const double g = static_cast<double>(q.generated_tokens);
      kv_bytes += g * (static_cast<double>(q.prompt_tokens) + g / 2) * kv_per_token;
      prompt_tokens += q.prompt_tokens;
      generated += q.generated_tokens;
      longest_reply = std::max(longest_reply, q.generated_tokens);
    }
    const double decode_floor = copy > 0 ? (kv_bytes + static_cast<double>(r.engine.decode_only_steps) * weight_bytes) / copy : 0;
    const double decode_bound = copy > 0 ? (kv_bytes + static_cast<double>(longest_reply) * weight_bytes) / copy : 0;
    const double floor = prefill_floor + decode_floor;
    const double bound = prefill_floor + decode_bound;
    const double wall = r.seconds - r.load_seconds;

    char date[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
    out << "abridge " << version() << " bench summarize, " << date << ", " << device << " (" << eng.backend().name()
        << " backend)\nmodel: " << o.model << " (" << fmt(static_cast<double>(c.n_params()) / 1e9, 2) << " B params); KV pool "
        << thousands(eng.kv_pool_tokens()) << " tokens; " << thousands(eng.scheduler_options().max_batch_tokens)
        << " tokens per step; engine context " << thousands(eng.max_context()) << "\n";
    out << "TTFT points: ";
    for (size_t k = 0; k < ttft.points().size(); ++k)
      out << (k ? "," : "") << ttft.points()[k].first << ":" << fmt(ttft.points()[k].second, 4);
    out << (given.empty() ? " (one prompt alone through the serving engine, timed after the run)" : " (--ttft-points)")
        << "; TTFT(n) between them: time per token linear in n\n";
    out << "copy ceiling " << fmt(copy / 1e9, 1) << " GB/s" << (opt.copy_tbps == 0 && !eng.on_gpu() ? " (host memcpy, measured)" : "")
        << "\n\n";
    out << "| measure | value |\n|---|---:|\n";
    auto row = [&](const std::string& k, const std::string& v) { out << "| " << k << " | " << v << " |\n"; };
    row("documents (summarized / up to date / failed)",
        std::to_string(r.summarized) + " / " + std::to_string(r.skipped) + " / " + std::to_string(r.failed));
    row("input tokens", thousands(r.input_tokens));
    row("requests (prompt tokens / generated tokens)",
        thousands(static_cast<int64_t>(r.requests.size())) + " (" + thousands(prompt_tokens) + " / " + thousands(generated) + ")");
    row("model load", fmt(r.load_seconds, 2) + " s");
    row("wall time, model load excluded", fmt(wall, 2) + " s");
    row("floor: prefill + decode", fmt(floor, 2) + " s (" + fmt(prefill_floor, 2) + " + " + fmt(decode_floor, 2) + ")");
    row("share of floor", wall > 0 ? fmt(100.0 * floor / wall, 1) + "%" : "-");
    row("lower bound (weights once per reply token)", fmt(bound, 2) + " s (" + (wall > 0 ? fmt(100.0 * bound / wall, 1) + "%" : "-") + ")");
    row("first engine step (from start, load included)", r.first_step_seconds >= 0 ? fmt(r.first_step_seconds, 2) + " s" : "-");
    row("first summary written (after the first step)",
        r.first_summary_seconds >= 0 && r.first_step_seconds >= 0 ? fmt(r.first_summary_seconds - r.first_step_seconds, 2) + " s" : "-");
    row("engine steps (decode-only)", thousands(r.engine.steps) + " (" + thousands(r.engine.decode_only_steps) + ")");
    const int64_t prefill_steps = r.engine.steps - r.engine.decode_only_steps;
    auto per_step = [&](double s, int64_t n) { return n > 0 ? fmt(1e3 * s / static_cast<double>(n), 2) + " ms each" : std::string("-"); };
    row("time in steps with a prefill chunk", fmt(r.engine.prefill_step_seconds, 2) + " s (" +
                                                 per_step(r.engine.prefill_step_seconds, prefill_steps) + ")");
    row("time in decode-only steps", fmt(r.engine.decode_only_seconds, 2) + " s (" +
                                         per_step(r.engine.decode_only_seconds, r.engine.decode_only_steps) +
                                         "; the weights alone take " + (copy > 0 ? fmt(1e3 * weight_bytes / copy, 2) : "-") + " ms)");
    row("prefill / decode tokens", thousands(r.engine.prefill_tokens) + " / " + thousands(r.engine.decode_tokens));
    row("preempted sequences", thousands(r.engine.preempted_sequences));
    row("recomputed tokens", thousands(r.engine.recomputed_tokens));
    row("peak KV blocks", thousands(r.engine.peak_kv_blocks) + " of " + thousands(r.engine.kv_blocks) + " (" +
                              thousands(r.engine.kv_block_tokens) + " tokens each)");
    // Decode-only steps by batch size, each range beside its copy floor (its weights read once per step
    // and the KV its sequences read): where decode time is lost, by batch and context.
    if (r.engine.decode_only_steps > 0) {
      out << "\n| decode-only steps, batch | steps | mean context | ms per step | copy floor ms | share |\n"
             "|---|---:|---:|---:|---:|---:|\n";
      const auto& ranges = r.engine.decode_by_batch;
      for (size_t b = 0; b < ranges.size(); ++b) {
        const EngineReport::DecodeRange& d = ranges[b];
        if (d.steps == 0) continue;
        const std::string name = b + 1 < ranges.size() ? (ranges[b + 1].first_batch - 1 == d.first_batch
                                                              ? std::to_string(d.first_batch)
                                                              : std::to_string(d.first_batch) + "-" +
                                                                    std::to_string(ranges[b + 1].first_batch - 1))
                                                       : std::to_string(d.first_batch) + "+";
        const double steps = static_cast<double>(d.steps);
        const double ms = 1e3 * d.seconds / steps;
        const double floor_ms =
            copy > 0 ? 1e3 * (weight_bytes + static_cast<double>(d.kv_tokens) * kv_per_token / steps) / copy : 0;
        out << "| " << name << " (mean " << fmt(static_cast<double>(d.sequences) / steps, 1) << ") | " << thousands(d.steps)
            << " | " << thousands(d.sequences > 0 ? d.kv_tokens / d.sequences : 0) << " | " << fmt(ms, 2) << " | "
            << fmt(floor_ms, 2) << " | " << (ms > 0 ? fmt(100.0 * floor_ms / ms, 1) + "%" : "-") << " |\n";
      }
    }
    run.write_report(r, out);
    return r.failed > 0 ? kExitInputsFailed : kExitOk;
  });
}

}  // namespace abridge::pipeline
