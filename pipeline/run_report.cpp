#include "pipeline/run_report.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/utf8.h"

namespace abridge::pipeline {

EngineReport& operator+=(EngineReport& e, const EngineReport& p) {
  e.steps += p.steps;
  e.prefill_tokens += p.prefill_tokens;
  e.decode_tokens += p.decode_tokens;
  e.decode_only_steps += p.decode_only_steps;
  e.decode_only_seconds += p.decode_only_seconds;
  e.prefill_step_seconds += p.prefill_step_seconds;
  e.preempted_sequences += p.preempted_sequences;
  e.recomputed_tokens += p.recomputed_tokens;
  e.peak_kv_blocks = std::max(e.peak_kv_blocks, p.peak_kv_blocks);
  if (e.kv_blocks == 0) e.kv_blocks = p.kv_blocks, e.kv_block_tokens = p.kv_block_tokens;
  if (e.decode_by_batch.size() < p.decode_by_batch.size()) e.decode_by_batch.resize(p.decode_by_batch.size());
  for (size_t b = 0; b < p.decode_by_batch.size(); ++b) {
    EngineReport::DecodeRange& t = e.decode_by_batch[b];
    const EngineReport::DecodeRange& q = p.decode_by_batch[b];
    t.first_batch = q.first_batch;
    t.steps += q.steps, t.sequences += q.sequences, t.kv_tokens += q.kv_tokens, t.seconds += q.seconds;
  }
  return e;
}

std::string format_duration(double s) {
  const int64_t total = static_cast<int64_t>(std::llround(s));
  std::ostringstream o;
  if (total >= 3600) o << total / 3600 << "h" << std::setw(2) << std::setfill('0') << (total % 3600) / 60 << "m";
  else if (total >= 60) o << total / 60 << "m" << std::setw(2) << std::setfill('0') << total % 60 << "s";
  else o << std::fixed << std::setprecision(1) << s << "s";
  return o.str();
}

std::string format_count(double n) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(1);
  if (n >= 1e6) o << n / 1e6 << "M";
  else if (n >= 1e3) o << n / 1e3 << "K";
  else o << std::setprecision(0) << n;
  return o.str();
}

std::string final_line(const BatchReport& r) {
  std::ostringstream s;
  s << "abridge: " << r.summarized << " summarized"
    << (r.skipped ? ", " + std::to_string(r.skipped) + " up to date" : "") << ", " << r.failed << " failed, "
    << format_count(static_cast<double>(r.input_tokens)) << " tokens in " << format_duration(r.seconds)
    << (r.device.empty() || r.device.rfind("cpu", 0) == 0 ? "" : " (" + r.device + ")");
  return s.str();
}

namespace {

std::string escaped(std::string_view b, bool escape_backslash) {
  std::string out;
  out.reserve(b.size());
  auto escape = [&](unsigned char c) {
    static const char* hex = "0123456789ABCDEF";
    out += "\\x";
    out += hex[c >> 4];
    out += hex[c & 15];
  };
  for (size_t i = 0; i < b.size();) {
    const auto c = static_cast<unsigned char>(b[i]);
    if (c == '\\' && escape_backslash) {
      out += "\\\\";
      ++i;
      continue;
    }
    const Utf8Char u = decode_utf8(b, i);  // strict: overlongs, surrogates and stray bytes are escaped
    if (!u.valid) {
      escape(c);
      ++i;
      continue;
    }
    if (is_display_control(u.cp)) {  // each of its bytes: U+009B is \xC2\x9B
      for (uint32_t k = 0; k < u.len; ++k) escape(static_cast<unsigned char>(b[i + k]));
      i += u.len;
      continue;
    }
    out.append(b.substr(i, u.len));
    i += u.len;
  }
  return out;
}

}  // namespace

std::string shown_path(std::string_view b) { return escaped(b, true); }

std::string shown_message(std::string_view b) { return escaped(b, false); }

std::string report_json(const BatchReport& r) {
  using nlohmann::json;
  json docs = json::array();
  for (const auto& d : r.documents)
    docs.push_back({{"path", shown_path(d.path)}, {"output", shown_path(d.output)}, {"status", d.status},
                    {"error", shown_path(d.error)}, {"input_tokens", d.input_tokens},
                    {"generated_tokens", d.generated_tokens}, {"seconds", d.seconds},
                    {"encoding", d.encoding}, {"ocr_pages", d.ocr_pages}, {"ocr_languages", d.ocr_languages}});
  json j = {{"summarized", r.summarized}, {"up_to_date", r.skipped}, {"failed", r.failed},
            {"input_tokens", r.input_tokens}, {"generated_tokens", r.generated_tokens}, {"seconds", r.seconds},
            {"device", r.device}, {"documents", docs}};
  if (r.llm) {
    const EngineReport& e = r.engine;
    j["engine"] = {{"steps", e.steps},
                   {"prefill_tokens", e.prefill_tokens},
                   {"decode_tokens", e.decode_tokens},
                   {"decode_only_steps", e.decode_only_steps},
                   {"decode_only_seconds", e.decode_only_seconds},
                   {"prefill_step_seconds", e.prefill_step_seconds},
                   {"preempted_sequences", e.preempted_sequences},
                   {"recomputed_tokens", e.recomputed_tokens},
                   {"peak_kv_blocks", e.peak_kv_blocks},
                   {"kv_blocks", e.kv_blocks},
                   {"kv_block_tokens", e.kv_block_tokens},
                   {"decode_by_batch", [&] {
                      json a = json::array();
                      for (const auto& d : e.decode_by_batch)
                        a.push_back({{"first_batch", d.first_batch}, {"steps", d.steps}, {"seconds", d.seconds},
                                     {"sequences", d.sequences}, {"kv_tokens", d.kv_tokens}});
                      return a;
                    }()},
                   {"requests", static_cast<int64_t>(r.requests.size())},
                   {"model_load_seconds", r.load_seconds},
                   {"first_step_seconds", r.first_step_seconds},
                   {"first_summary_seconds", r.first_summary_seconds}};
  }
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace abridge::pipeline
