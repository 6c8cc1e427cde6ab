#include "pipeline/summarize.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/file.h>
#include <unistd.h>
#include <zstd.h>

#include <Poco/DigestEngine.h>
#include <Poco/SHA2Engine.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <mutex>
#include <sstream>
#include <thread>

#include "chunker/chunker.h"
#include "engine/chat.h"
#include "engine/embedded_data.h"
#include "engine/error.h"
#include "engine/model.h"
#include "engine/serving.h"
#include "pipeline/commands.h"
#include "pipeline/atomic_file.h"
#include "pipeline/commands.h"
#include "pipeline/extractive.h"
#include "pipeline/document_reader.h"
#include "pipeline/run_lock.h"
#include "pipeline/text_input.h"
#include "pipeline/token_counter.h"

namespace abridge::pipeline {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr size_t kMaxDocumentBytes = size_t{512} << 20;

std::string sha256_hex(std::string_view bytes) {
  Poco::SHA2Engine engine(Poco::SHA2Engine::SHA_256);
  engine.update(bytes.data(), static_cast<unsigned>(bytes.size()));
  return Poco::DigestEngine::digestToHex(engine.digest());
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error(p.string() + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e;
}

bool supported(const fs::path& p) {
  const std::string e = lower_ext(p);
  return e == ".txt" || e == ".md" || e == ".pdf";
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

// ---- discovery -------------------------------------------------------------------------------

using Input = SummaryInput;
using Discovery = DiscoveredInputs;

bool glob_match(const std::vector<std::string>& globs, const std::string& rel) {
  const std::string base = fs::path(rel).filename().string();
  for (const auto& g : globs)
    if (fnmatch(g.c_str(), rel.c_str(), 0) == 0 || fnmatch(g.c_str(), base.c_str(), 0) == 0) return true;
  return false;
}

Discovery discover(const SummarizeOptions& o, std::istream& in) {
  Discovery d;
  std::vector<std::string> args;
  for (const auto& a : o.inputs) {
    if (a != "-") {
      args.push_back(a);
      continue;
    }
    std::string line;
    while (std::getline(in, line)) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (!line.empty()) args.push_back(line);
    }
  }
  auto keep = [&](const std::string& rel) {
    if (!o.include.empty() && !glob_match(o.include, rel)) return false;
    return !glob_match(o.exclude, rel);
  };
  for (const auto& a : args) {
    std::error_code ec;
    const auto st = fs::status(a, ec);
    if (ec || !fs::exists(st)) {
      d.bad.emplace_back(a, "no such file or directory");
    } else if (fs::is_directory(st)) {
      std::vector<fs::path> found;
      if (o.recursive) {
        for (auto it = fs::recursive_directory_iterator(a, fs::directory_options::skip_permission_denied, ec);
             !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
          if (it->path().filename().string().rfind(".", 0) == 0 && it->is_directory()) {
            it.disable_recursion_pending();  // hidden folders, our own .abridge among them
            continue;
          }
          if (it->is_regular_file() && supported(it->path())) found.push_back(it->path());
        }
      } else {
        for (const auto& e : fs::directory_iterator(a, ec))
          if (e.is_regular_file() && supported(e.path())) found.push_back(e.path());
      }
      std::sort(found.begin(), found.end());
      for (const auto& f : found) {
        const std::string rel = fs::relative(f, a).generic_string();
        if (keep(rel)) d.inputs.push_back({f.string(), rel, {}});
      }
    } else if (!supported(a)) {
      d.bad.emplace_back(a, "unsupported file type \"" + fs::path(a).extension().string() +
                                "\" (abridge reads .txt, .md and .pdf)");
    } else {
      const std::string rel = fs::path(a).filename().string();
      if (keep(rel)) d.inputs.push_back({a, rel, {}});
    }
  }
  const std::string ext = o.format == "json" ? "json" : o.format == "txt" ? "txt" : "md";
  for (auto& i : d.inputs) i.output = fs::path(o.out_dir) / (i.rel + ".summary." + ext);
  return d;
}

// ---- prompts ---------------------------------------------------------------------------------

struct Prompts {
  std::string system, single, chunk, merge;  // {words} {section} placeholders
};

Prompts builtin_prompts(Language lang) {
  if (lang == Language::kChinese)
    return {"你是一个认真、忠实的助手，负责为长文档撰写准确、简洁的摘要。",
            "请为下面的文档写一份摘要，保留关键的人物、数字、事实和结论，不要添加原文没有的内容。摘要不超过约{words}字。",
            "下面是一篇长文档的一部分{section}。请为这一部分写一份摘要，保留关键的人物、数字、事实和结论。摘要不超过约{words}字。",
            "下面是同一篇文档中按顺序排列的各部分摘要。请把它们合并成一份连贯的整体摘要，保留最重要的信息，去掉重复。摘要不超过约{words}字。"};
  return {"You are a careful assistant that writes faithful, concise summaries of long documents.",
          "Summarize the following document. Keep the key people, numbers, facts and conclusions; add nothing "
          "that is not in the text. Use at most about {words} words.",
          "The following is one part of a longer document{section}. Summarize this part. Keep the key people, "
          "numbers, facts and conclusions. Use at most about {words} words.",
          "The following are summaries of consecutive parts of one document, in order. Merge them into one "
          "coherent summary of the whole document, keeping what matters most and dropping repetition. Use at "
          "most about {words} words."};
}

std::string fill(std::string t, int64_t words, const std::string& section, Language lang) {
  auto replace = [&](const std::string& key, const std::string& value) {
    for (size_t p; (p = t.find(key)) != std::string::npos;) t.replace(p, key.size(), value);
  };
  replace("{words}", std::to_string(words));
  std::string sec;
  if (!section.empty()) sec = lang == Language::kChinese ? "（章节：" + section + "）" : " (section: " + section + ")";
  replace("{section}", sec);
  return t;
}

// ---- the cache -------------------------------------------------------------------------------

class Cache {
 public:
  explicit Cache(fs::path dir) : dir_(std::move(dir)) {}
  std::optional<std::string> get(const std::string& key) const {
    const fs::path p = dir_ / (key + ".zst");
    std::error_code ec;
    if (!fs::exists(p, ec)) return std::nullopt;
    const std::string z = read_bytes(p);
    const unsigned long long n = ZSTD_getFrameContentSize(z.data(), z.size());
    if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN || n > (size_t{64} << 20)) return std::nullopt;
    std::string out(n, '\0');
    const size_t got = ZSTD_decompress(out.data(), out.size(), z.data(), z.size());
    if (ZSTD_isError(got) || got != n) return std::nullopt;  // a damaged entry is recomputed
    return out;
  }
  void put(const std::string& key, const std::string& value) const {
    std::string z(ZSTD_compressBound(value.size()), '\0');
    const size_t n = ZSTD_compress(z.data(), z.size(), value.data(), value.size(), 3);
    if (ZSTD_isError(n)) throw Error("zstd: " + std::string(ZSTD_getErrorName(n)));
    z.resize(n);
    write_file_atomic((dir_ / (key + ".zst")).string(), z);
  }

 private:
  fs::path dir_;
};

// ---- documents -------------------------------------------------------------------------------

struct Piece {  // one chunk (level 0) with its summary
  size_t start = 0, end = 0;
  std::string section;
  int64_t tokens = 0;
  std::string summary;
};

struct Doc {
  Input input;
  std::string sha;
  std::string job_key;
  std::string text;
  Language lang = Language::kEnglish;
  int64_t input_tokens = 0;
  std::vector<Piece> pieces;                 // the map level (empty for one pass)
  std::vector<std::string> level;            // summaries of the current level
  int level_index = 0;                       // 0: map (or single); 1, 2, ...: merges
  size_t pending = 0;                        // requests of this level not finished yet
  std::string summary;
  bool done = false, failed = false;
  std::string error;
  Clock::time_point started;
  double seconds = 0;
  int64_t generated_tokens = 0;
};

struct Tag {
  size_t doc;
  int level;
  size_t index;
  std::string cache_key;
};

std::string join_summaries(const std::vector<std::string>& parts, Language lang) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += "\n\n";
    out += (lang == Language::kChinese ? "第" + std::to_string(i + 1) + "部分：" : "Part " + std::to_string(i + 1) + ": ");
    out += parts[i];
  }
  return out;
}

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

}  // namespace


struct Summarizer::Impl {
  SummarizeOptions o;
  std::ostream& err;
  bool llm = false, tty = false;
  fs::path state_dir;
  Cache cache{fs::path()};
  std::optional<engine::ModelDir> model;
  std::unique_ptr<engine::Backend> backend;
  std::string model_id = "extractive";
  std::string device_used = "cpu";
  int64_t context = 0;
  std::optional<engine::Tokenizer> own_tokenizer;
  const engine::Tokenizer* tok = nullptr;
  std::optional<TokenizerCounter> counter;
  std::string prompt_override;
  int64_t chunk_tokens = 0;
  json parameters;
  std::string param_key;

  Impl(const SummarizeOptions& options, std::ostream& e) : o(options), err(e) {
  {
      if (o.out_dir.empty()) throw Error("-o OUT_DIR is required");
      if (o.inputs.empty()) throw Error("no INPUT given (files, directories, or - to read paths from stdin)");
      if (o.format != "md" && o.format != "json" && o.format != "txt") throw Error("--format must be md, json or txt");
      if (o.engine != "auto" && o.engine != "llm" && o.engine != "extractive")
        throw Error("--engine must be auto, llm or extractive");
      if (o.device != "auto" && o.device != "cpu" && o.device != "cuda") throw Error("--device must be auto, cpu or cuda");
      if (o.lang != "auto" && o.lang != "en" && o.lang != "zh") throw Error("--lang must be auto, en or zh");
      if (o.summary_tokens < 16 || o.summary_tokens > 16384) throw Error("--summary-tokens must be in 16..16384");
      check_prefill_chunk(o.prefill_chunk);
      if (o.engine == "llm" && o.model.empty()) throw Error("--engine llm needs --model DIR");
    }
    llm = o.engine == "llm" || (o.engine == "auto" && !o.model.empty());
    tty = !o.quiet && o.progress_bar && ::isatty(STDERR_FILENO);
  std::error_code ec;
    state_dir = fs::path(o.out_dir) / ".abridge";
    fs::create_directories(state_dir / "cache", ec);
    fs::create_directories(state_dir / "done", ec);
    if (ec || !fs::is_directory(state_dir))
      throw Error(o.out_dir + ": cannot create the output directory: " + ec.message());
    cache = Cache(state_dir / "cache");
  
    // The engine: a model (LLM) or the built-in extractive summarizer. Either way the real tokenizer
    // counts tokens.
    {
      if (llm) {
        model.emplace(engine::open_model_dir(o.model));
        engine::BackendOptions bo;
        bo.threads = o.threads;
        bo.gpu = o.gpu;
        bo.gpu_memory_fraction = o.gpu_memory_fraction;
        if (o.prefill_chunk > 0) bo.max_batch_tokens = o.prefill_chunk;
        if (o.device == "cpu") {
          bo.device = engine::Device::kCpu;
        } else {
          bo.device = engine::Device::kCuda;
        }
        try {
          backend = engine::make_backend(*model, bo);
        } catch (const Error& e) {
          if (o.device == "cuda") throw;
          if (!o.quiet) err << "abridge: no GPU engine (" << e.what() << "); running on the CPU\n";
          bo.device = engine::Device::kCpu;
          backend = engine::make_backend(*model, bo);
        }
        device_used = backend->device_description();
        model_id = "model:" + sha256_hex(read_bytes(fs::path(o.model) / "config.json")) + ":" +
                   std::to_string(model->checkpoint->total_bytes());
        context = o.context_tokens > 0 ? std::min(o.context_tokens, model->config.max_position_embeddings)
                                       : model->config.max_position_embeddings;
        if (backend->kv_block_size() > 0)
          context = std::min(context, backend->kv_blocks() * backend->kv_block_size() / 2);
        if (context < 4 * o.summary_tokens + 512)
          throw Error("the context (" + std::to_string(context) + " tokens) is too small for summaries of " +
                      std::to_string(o.summary_tokens) + " tokens; raise --context-tokens or lower --summary-tokens");
      }
    }
    tok = model ? &model->tokenizer : &own_tokenizer.emplace(engine::Tokenizer::from_json(engine::bundled_tokenizer_json()));
    counter.emplace(*tok);
  
    // What a summary depends on besides the document: the cache and the up-to-date check key on it.
    if (!o.prompt_file.empty()) {
      try {
        prompt_override = read_text_file(o.prompt_file, size_t{1} << 20);
      } catch (const Error& e) {
        throw Error(std::string("--prompt: ") + e.what());
      }
    }
    chunk_tokens =
        o.chunk_tokens > 0 ? o.chunk_tokens : std::max<int64_t>(512, std::min<int64_t>(32768, context / 2));
    parameters = {{"engine", llm ? "llm" : "extractive"}, {"summary_tokens", o.summary_tokens},
                             {"lang", o.lang}, {"context_tokens", context}, {"chunk_tokens", llm ? chunk_tokens : 0},
                             {"sampling", "greedy"}, {"prompt_sha256", sha256_hex(prompt_override)}};
    param_key = sha256_hex(model_id + "\n" + parameters.dump());
  
  }
};

Summarizer::Summarizer(const SummarizeOptions& options, std::ostream& err)
    : impl_(std::make_unique<Impl>(options, err)) {}
Summarizer::~Summarizer() = default;

BatchReport Summarizer::run(const std::vector<SummaryInput>& inputs) {
  Impl& m = *impl_;
  const SummarizeOptions& o = m.o;
  std::ostream& err = m.err;
  const bool llm = m.llm, tty = m.tty;
  const fs::path& state_dir = m.state_dir;
  const Cache& cache = m.cache;
  const auto& model = m.model;
  engine::Backend* backend = m.backend.get();
  const std::string& device_used = m.device_used;
  const int64_t context = m.context;
  const engine::Tokenizer& tok = *m.tok;
  const TokenizerCounter& counter = *m.counter;
  const std::string& prompt_override = m.prompt_override;
  const json& parameters = m.parameters;
  const std::string& param_key = m.param_key;
  const int64_t chunk_tokens = m.chunk_tokens;
  const auto t_start = Clock::now();
  int failed = 0;
  std::vector<DocumentReport> reports;

  // Per document: read, hash, skip when up to date, extract.
  std::vector<Doc> docs;
  int skipped = 0;
  ReadOptions read_options = make_read_options(o.encoding, o.ocr, o.ocr_lang, o.pdf_timeout, o.pdf_max_memory_mb);
  read_options.max_bytes = kMaxDocumentBytes;
  for (const Input& i : inputs) {
    Doc d;
    d.input = i;
    d.started = Clock::now();
    try {
      std::error_code fec;
      const auto size = fs::file_size(i.path, fec);
      if (fec) throw Error("cannot read: " + fec.message());
      if (size == 0) throw Error("empty file");
      if (size > kMaxDocumentBytes)
        throw Error("file is too large (" + std::to_string(size >> 20) + " MiB; the limit is " +
                    std::to_string(kMaxDocumentBytes >> 20) + " MiB)");
      const std::string bytes = read_bytes(i.path);
      d.sha = sha256_hex(bytes);
      d.job_key = sha256_hex(d.sha + "\n" + param_key + "\n" + o.format);
      const fs::path done_file = state_dir / "done" / (sha256_hex(i.output.generic_string()) + ".json");
      if (!o.force && fs::exists(i.output) && fs::exists(done_file)) {
        try {
          if (json::parse(read_bytes(done_file)).value("key", "") == d.job_key) {
            ++skipped;
            reports.push_back({i.path, i.output.string(), "up to date", "", 0, 0, 0});
            if (!o.quiet && !tty) err << "abridge: " << i.path << ": up to date\n";
            continue;
          }
        } catch (const json::exception&) {
          // A damaged record: summarize again.
        }
      }
      // On a terminal, the page OCR is reading; in any case a line naming the pages it read.
      bool ocr_line = false;
      read_options.ocr.progress = [&](const OcrProgress& p) {
        if (o.quiet || !tty) return;
        err << "\r\033[Kabridge: " << i.path << ": OCR of page " << p.page << " (" << p.done + 1 << " of " << p.total
            << ")" << std::flush;
        ocr_line = true;
      };
      Document doc;
      try {
        doc = read_document(i.path, read_options);
      } catch (const Error&) {
        if (ocr_line) err << "\r\033[K";
        throw;
      }
      if (ocr_line) err << "\r\033[K";
      if (!o.quiet && !doc.ocr_pages.empty()) err << "abridge: " << i.path << ": " << describe_ocr(doc) << " read by OCR\n";
      d.text = std::move(doc.text);
      if (d.text.find_first_not_of(" \t\r\n\f\v") == std::string::npos) throw Error("no text in the document");
      d.lang = o.lang == "zh" ? Language::kChinese : o.lang == "en" ? Language::kEnglish : detect_language(d.text);
    } catch (const Error& e) {
      err << "abridge: " << i.path << ": " << e.what() << '\n';
      ++failed;
      reports.push_back({i.path, i.output.string(), "failed", e.what(), 0, 0, 0});
      continue;
    }
    docs.push_back(std::move(d));
  }

  int64_t total_input_tokens = 0;
  size_t docs_finished = 0;
  size_t chunks_total = 0, chunks_done = 0;  // map-level summaries (one per chunk, or per one-pass document)
  auto last_progress = Clock::now() - std::chrono::seconds(1);
  auto progress = [&](bool force_line) {
    if (!tty) return;
    auto& last = last_progress;
    const auto now = Clock::now();
    if (!force_line && now - last < std::chrono::milliseconds(200)) return;
    last = now;
    const double secs = std::chrono::duration<double>(now - t_start).count();
    const double rate = secs > 0 ? static_cast<double>(total_input_tokens) / secs : 0;
    const double left = docs_finished > 0 && docs_finished < docs.size()
                            ? secs / static_cast<double>(docs_finished) * static_cast<double>(docs.size() - docs_finished)
                            : 0;
    err << "\r\033[K[" << docs_finished << "/" << docs.size() << " documents, " << chunks_done << "/" << chunks_total
        << " chunks] " << format_count(total_input_tokens)
        << " tokens, " << format_count(rate) << " tok/s" << (left > 0 ? ", ETA " + format_duration(left) : "")
        << std::flush;
  };

  // Writes a finished document's output atomically, then records it as done.
  auto write_output = [&](Doc& d) {
    d.seconds = std::chrono::duration<double>(Clock::now() - d.started).count();
    std::string body;
    const std::string name = fs::path(d.input.path).filename().string();
    if (o.format == "txt") {
      body = d.summary + "\n";
    } else if (o.format == "md") {
      body = "# " + name + "\n\n" + d.summary + "\n";
    } else {
      json chunks = json::array();
      for (const Piece& p : d.pieces)
        chunks.push_back({{"start", p.start}, {"end", p.end}, {"section", p.section}, {"tokens", p.tokens},
                          {"summary", p.summary}});
      const json j = {{"summary", d.summary},
                      {"chunks", chunks},
                      {"source", d.input.path},
                      {"sha256", d.sha},
                      {"model", llm ? o.model : "extractive"},
                      {"prompt", prompt_override.empty() ? "built-in (" + std::string(language_code(d.lang)) + ")" : o.prompt_file},
                      {"parameters", parameters},
                      {"language", language_code(d.lang)},
                      {"tokens", {{"input", d.input_tokens}, {"generated", d.generated_tokens}}},
                      {"timings", {{"seconds", d.seconds}}}};
      body = j.dump(2) + "\n";
    }
    std::error_code dec;
    fs::create_directories(d.input.output.parent_path(), dec);
    write_file_atomic(d.input.output.string(), body);
    write_file_atomic((state_dir / "done" / (sha256_hex(d.input.output.generic_string()) + ".json")).string(),
                      json({{"key", d.job_key}, {"source", d.input.path}}).dump() + "\n");
    d.done = true;
    ++docs_finished;
    if (!o.quiet && !tty)
      err << "abridge: " << d.input.path << " -> " << d.input.output.string() << " (" << d.input_tokens << " tokens, "
          << format_duration(d.seconds) << ")\n";
    progress(true);
  };
  auto fail_doc = [&](Doc& d, const std::string& why) {
    if (d.done || d.failed) return;
    d.failed = true;
    d.error = why;
    ++failed;
    ++docs_finished;
    if (tty) err << "\r\033[K";
    err << "abridge: " << d.input.path << ": " << why << '\n';
  };

  if (!llm) {
    // The extractive engine: one pass per document on the CPU.
    for (Doc& d : docs) {
      try {
        ExtractiveOptions eo;
        eo.max_tokens = o.summary_tokens;
        const ExtractiveSummary s = summarize_extractive(d.text, counter, eo);
        d.input_tokens = static_cast<int64_t>(counter.count(d.text));
        total_input_tokens += d.input_tokens;
        d.summary = s.text;
        for (const auto& [b, e] : s.spans) d.pieces.push_back({b, e, "", 0, d.text.substr(b, e - b)});
        if (d.summary.empty()) throw Error("no sentences to summarize");
        write_output(d);
      } catch (const std::exception& e) {
        fail_doc(d, e.what());
      }
    }
  } else {
    // The LLM: every request of every document goes to one serving engine, so they batch; a
    // document's next level is submitted as soon as its current one is complete.
    std::map<int64_t, Tag> tags;
    const auto stop_ids = engine::chat_stop_ids(tok, model->config.eos_token_ids);
    engine::ServingEngine* serving_ptr = nullptr;
    std::function<void(size_t)> advance;  // submits the next level of document `di`, or finishes it

    auto request_for = [&](const Doc& d, const std::string& instruction, const std::string& text) {
      const Prompts p = builtin_prompts(d.lang);
      engine::Request r;
      const std::vector<engine::ChatMessage> messages = {
          {"system", p.system}, {"user", instruction + "\n\n" + text}};
      r.prompt = engine::encode_chat(tok, messages);
      r.max_new_tokens = o.summary_tokens;
      r.stop_ids = stop_ids;
      r.vocab_limit = tok.n_tokens();
      return r;
    };
    // Submits (or takes from the cache) one summary: level/index of document di.
    auto submit = [&](size_t di, int level, size_t index, const std::string& instruction, const std::string& text) {
      Doc& d = docs[di];
      const std::string key = sha256_hex(param_key + "\n" + std::to_string(level) + "\n" + instruction + "\n" + text);
      if (auto hit = cache.get(key)) {
        d.level[index] = *hit;
        chunks_done += level == 0;
        return false;
      }
      engine::Request r = request_for(d, instruction, text);
      if (static_cast<int64_t>(r.prompt.size()) + o.summary_tokens > context)
        throw Error("a prompt of " + std::to_string(r.prompt.size()) + " tokens does not fit the context");
      const int64_t id = serving_ptr->submit(std::move(r));
      tags[id] = {di, level, index, key};
      ++d.pending;
      return true;
    };

    auto on_finish = [&](int64_t id, const engine::RequestResult& res) {
      auto it = tags.find(id);
      if (it == tags.end()) return;
      const Tag tag = it->second;
      tags.erase(it);
      Doc& d = docs[tag.doc];
      --d.pending;
      if (d.failed) return;
      if (res.reason == engine::FinishReason::kError || res.reason == engine::FinishReason::kCancelled) {
        fail_doc(d, "engine: " + (res.error.empty() ? std::string("request cancelled") : res.error));
        return;
      }
      engine::StreamDecoder dec(tok);
      std::string text;
      for (int32_t t : res.tokens) text += dec.push(t);
      text = trim(text + dec.finish());
      d.generated_tokens += static_cast<int64_t>(res.tokens.size());
      try {
        cache.put(tag.cache_key, text);
      } catch (const Error& e) {
        fail_doc(d, e.what());
        return;
      }
      d.level[tag.index] = text;
      chunks_done += tag.level == 0;
      if (d.pending == 0) advance(tag.doc);
    };

    engine::ServingEngine serving(*backend, engine::scheduler_options_for(*backend, 64, {}, o.prefill_chunk), {},
                                  on_finish);
    serving_ptr = &serving;
    advance = [&](size_t di) {
      Doc& d = docs[di];
      try {
        for (;;) {  // levels whose summaries all came from the cache complete at once
          if (d.level_index == 0 && !d.pieces.empty())
            for (size_t k = 0; k < d.pieces.size(); ++k) d.pieces[k].summary = d.level[k];
          if (d.level.size() == 1) {
            d.summary = d.level[0];
            write_output(d);
            return;
          }
          // Merge the level's summaries in order, in groups whose prompt fits the context.
          const Prompts p = builtin_prompts(d.lang);
          const std::string instruction =
              prompt_override.empty() ? fill(p.merge, o.summary_tokens, "", d.lang) : prompt_override;
          const int64_t room = context - o.summary_tokens - 256 - static_cast<int64_t>(counter.count(instruction));
          std::vector<std::vector<std::string>> groups(1);
          int64_t used = 0;
          for (const std::string& s : d.level) {
            const int64_t t = static_cast<int64_t>(counter.count(s)) + 8;
            if (!groups.back().empty() && (used + t > room || groups.back().size() >= 16)) {
              groups.emplace_back();
              used = 0;
            }
            groups.back().push_back(s);
            used += t;
          }
          ++d.level_index;
          d.level.assign(groups.size(), "");
          for (size_t g = 0; g < groups.size(); ++g)
            submit(di, d.level_index, g, instruction, join_summaries(groups[g], d.lang));
          if (d.pending > 0) return;
        }
      } catch (const std::exception& e) {
        fail_doc(d, e.what());
      }
    };

    for (size_t di = 0; di < docs.size(); ++di) {
      Doc& d = docs[di];
      try {
        const Prompts p = builtin_prompts(d.lang);
        d.input_tokens = static_cast<int64_t>(counter.count(d.text));
        total_input_tokens += d.input_tokens;
        const std::string single = prompt_override.empty() ? fill(p.single, o.summary_tokens, "", d.lang) : prompt_override;
        const int64_t overhead = static_cast<int64_t>(counter.count(single)) + 64;
        if (d.input_tokens + overhead + o.summary_tokens <= context) {
          // One pass: the whole document in one prompt (the engine prefills it in chunks).
          const std::string cleaned = chunker::clean_text(d.text);
          d.level.assign(1, "");
          ++chunks_total;
          submit(di, 0, 0, single, cleaned);
        } else {
          chunker::Options co;
          co.max_tokens = static_cast<size_t>(std::min<int64_t>(chunk_tokens, context - overhead - o.summary_tokens - 64));
          const auto chunks = chunker::chunk_text(d.text, counter, co);
          if (chunks.empty()) throw Error("no text to summarize");
          d.level.assign(chunks.size(), "");
          chunks_total += chunks.size();
          for (size_t k = 0; k < chunks.size(); ++k) {
            d.pieces.push_back({chunks[k].start, chunks[k].end, chunks[k].section,
                                static_cast<int64_t>(chunks[k].tokens), ""});
            const std::string instruction = prompt_override.empty()
                                                ? fill(p.chunk, o.summary_tokens, chunks[k].section, d.lang)
                                                : prompt_override;
            submit(di, 0, k, instruction, chunks[k].text);
          }
        }
        if (d.pending == 0) advance(di);  // everything came from the cache
      } catch (const std::exception& e) {
        fail_doc(d, e.what());
      }
    }
    while (serving.step()) progress(false);
  }

  if (tty) err << "\r\033[K";
  BatchReport report;
  for (const Doc& d : docs) {
    if (!d.done && !d.failed) continue;
    reports.push_back({d.input.path, d.input.output.string(), d.done ? "summarized" : "failed", d.error, d.input_tokens,
                       d.generated_tokens, d.seconds});
    report.summarized += d.done;
  }
  report.documents = std::move(reports);
  report.skipped = skipped;
  report.failed = failed;
  report.input_tokens = total_input_tokens;
  report.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  report.device = llm ? device_used : "cpu (extractive)";
  return report;
}

std::string final_line(const BatchReport& r) {
  std::ostringstream s;
  s << "abridge: " << r.summarized << " summarized"
    << (r.skipped ? ", " + std::to_string(r.skipped) + " up to date" : "") << ", " << r.failed << " failed, "
    << format_count(static_cast<double>(r.input_tokens)) << " tokens in " << format_duration(r.seconds)
    << (r.device.rfind("cpu", 0) == 0 ? "" : " (" + r.device + ")");
  return s.str();
}

DiscoveredInputs discover_inputs(const SummarizeOptions& o, std::istream& in) { return discover(o, in); }

void check_output_collisions(const DiscoveredInputs& found) {
  std::map<fs::path, std::string> owners;
  for (const auto& i : found.inputs) {
    auto [it, fresh] = owners.emplace(i.output, i.path);
    if (!fresh)
      throw Error(it->second + " and " + i.path + " would both write " + i.output.string() +
                  "; rename one or summarize them into different output directories");
  }
}

std::pair<int64_t, int64_t> parse_shard(const std::string& spec) {
  const size_t slash = spec.find('/');
  try {
    if (slash == std::string::npos) throw std::invalid_argument(spec);
    size_t u1 = 0, u2 = 0;
    const long long k = std::stoll(spec.substr(0, slash), &u1), n = std::stoll(spec.substr(slash + 1), &u2);
    if (u1 != slash || u2 != spec.size() - slash - 1 || n < 1 || k < 0 || k >= n) throw std::invalid_argument(spec);
    return {k, n};
  } catch (const std::exception&) {
    throw Error("--shard must be K/N with 0 <= K < N (e.g. 0/8), not \"" + spec + "\"");
  }
}

int64_t shard_of(const std::string& rel, int64_t n) {
  uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a: stable across machines and builds
  for (unsigned char c : rel) h = (h ^ c) * 0x100000001B3ull;
  return static_cast<int64_t>(h % static_cast<uint64_t>(n));
}

namespace {

void write_report(const std::string& path, const BatchReport& r) {
  json docs = json::array();
  for (const auto& d : r.documents)
    docs.push_back({{"path", d.path}, {"output", d.output}, {"status", d.status}, {"error", d.error},
                    {"input_tokens", d.input_tokens}, {"generated_tokens", d.generated_tokens}, {"seconds", d.seconds}});
  const json j = {{"summarized", r.summarized}, {"up_to_date", r.skipped}, {"failed", r.failed},
                  {"input_tokens", r.input_tokens}, {"seconds", r.seconds}, {"device", r.device}, {"documents", docs}};
  write_file_atomic(path, j.dump(2) + "\n");
}

}  // namespace

class SyncedStream::Buf : public std::stringbuf {
 public:
  Buf(std::ostream& out, std::mutex& mu) : out_(out), mu_(mu) {}
  int sync() override {
    pending_ += str();
    str("");
    const size_t end = pending_.rfind('\n');
    if (end == std::string::npos) return 0;
    {
      std::lock_guard lock(mu_);
      out_.write(pending_.data(), static_cast<std::streamsize>(end + 1));
      out_.flush();
    }
    pending_.erase(0, end + 1);
    return 0;
  }

 private:
  std::ostream& out_;
  std::mutex& mu_;
  std::string pending_;  // the start of a line not finished yet
};

SyncedStream::SyncedStream(std::ostream& out, std::mutex& mu)
    : std::ostream(nullptr), buf_(std::make_unique<Buf>(out, mu)) {
  rdbuf(buf_.get());
  setf(std::ios::unitbuf);  // hand on lines as they complete
}
SyncedStream::~SyncedStream() { buf_->pubsync(); }

BatchReport run_on_engines(std::vector<std::unique_ptr<Summarizer>>& engines, const std::vector<SummaryInput>& inputs) {
  constexpr size_t kTake = 4;  // documents an engine takes at a time: enough to batch, small enough to balance
  std::atomic<size_t> next{0};
  std::mutex mu;
  BatchReport total;
  std::vector<std::thread> workers;
  for (auto& engine : engines) {
    workers.emplace_back([&, e = engine.get()] {
      for (;;) {
        const size_t begin = next.fetch_add(kTake);
        if (begin >= inputs.size()) return;
        const std::vector<SummaryInput> group(inputs.begin() + static_cast<std::ptrdiff_t>(begin),
                                              inputs.begin() + static_cast<std::ptrdiff_t>(std::min(inputs.size(), begin + kTake)));
        BatchReport r = e->run(group);
        std::lock_guard lock(mu);
        total.summarized += r.summarized;
        total.skipped += r.skipped;
        total.failed += r.failed;
        total.input_tokens += r.input_tokens;
        for (auto& d : r.documents) total.documents.push_back(std::move(d));
        if (total.device.find(r.device) == std::string::npos)
          total.device += (total.device.empty() ? "" : " + ") + r.device;
      }
    });
  }
  for (auto& w : workers) w.join();
  return total;
}

std::vector<std::unique_ptr<Summarizer>> open_summarizers(const std::vector<SummarizeOptions>& options,
                                                          std::vector<std::ostream*> logs, bool keep_going,
                                                          std::ostream& err) {
  ABRIDGE_CHECK(logs.size() == options.size());
  std::vector<std::unique_ptr<Summarizer>> opened(options.size());
  std::vector<std::string> errors(options.size());
  std::vector<std::thread> loaders;
  for (size_t i = 0; i < options.size(); ++i) {
    loaders.emplace_back([&, i] {
      try {
        opened[i] = std::make_unique<Summarizer>(options[i], *logs[i]);
      } catch (const std::exception& e) {
        errors[i] = e.what();
        if (errors[i].empty()) errors[i] = "cannot open the engine";
      }
    });
  }
  for (auto& t : loaders) t.join();
  std::vector<std::unique_ptr<Summarizer>> out;
  std::string first_error;
  for (size_t i = 0; i < options.size(); ++i) {
    if (opened[i]) {
      out.push_back(std::move(opened[i]));
      continue;
    }
    if (!keep_going) throw Error(errors[i]);
    if (first_error.empty()) first_error = errors[i];
    err << "abridge: GPU " << options[i].gpu << " not used: " << errors[i] << '\n';
  }
  if (out.empty()) throw Error(first_error);
  return out;
}

namespace {

// "0,1,3" or "all" (every visible GPU) -> device indices.
std::vector<int> parse_devices(const std::string& spec) {
  std::vector<int> out;
  if (spec == "all") {
    const int count = engine::gpu_count();
    for (int i = 0; i < count; ++i) out.push_back(i);
    if (out.empty()) throw Error("--devices all: no CUDA device is visible");
    return out;
  }
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int v = -1;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
    }
    if (used != item.size() || v < 0) throw Error("--devices must be a list of GPU indices (e.g. 0,1) or all, not \"" + spec + "\"");
    if (std::find(out.begin(), out.end(), v) != out.end()) throw Error("--devices lists GPU " + item + " twice");
    out.push_back(v);
  }
  if (out.empty()) throw Error("--devices is empty");
  return out;
}

}  // namespace

int run_summarize(const SummarizeOptions& o, std::istream& in, std::ostream& out, std::ostream& err) {
  (void)out;
  const auto t_start = Clock::now();
  try {
    std::optional<std::pair<int64_t, int64_t>> shard;
    if (!o.shard.empty()) shard = parse_shard(o.shard);
    if (o.out_dir.empty()) throw Error("-o OUT_DIR is required");
    // One run per OUT_DIR at a time: cron may start the next before the last has finished.
    std::error_code ec;
    const fs::path state_dir = fs::path(o.out_dir) / ".abridge";
    fs::create_directories(state_dir, ec);
    if (ec) throw Error(o.out_dir + ": cannot create the output directory: " + ec.message());
    RunLock lock(state_dir, o.wait_lock, err);
    if (!lock.held_by_other().empty()) {
      err << "abridge: " << o.out_dir << " is in use by " << lock.held_by_other()
          << "; not starting (use --wait-lock to wait for it)\n";
      return kExitLocked;
    }
    remove_stale_temp_files(o.out_dir);  // left by a run killed mid-write; ours now that we hold the lock
    // The engines: one, or one per GPU of --devices (each loads the model on its GPU).
    std::mutex err_mu;
    std::vector<std::unique_ptr<SyncedStream>> streams;  // one per engine, each written by one thread
    std::vector<std::unique_ptr<Summarizer>> engines;
    if (o.devices.empty()) {
      engines.push_back(std::make_unique<Summarizer>(o, err));  // options and model checked first
    } else {
      if (o.model.empty() || o.device == "cpu") throw Error("--devices needs --model and the GPU");
      std::vector<SummarizeOptions> per_gpu;
      std::vector<std::ostream*> logs;
      for (int gpu : parse_devices(o.devices)) {
        SummarizeOptions one = o;
        one.device = "cuda";
        one.gpu = gpu;
        one.progress_bar = false;
        per_gpu.push_back(std::move(one));
        streams.push_back(std::make_unique<SyncedStream>(err, err_mu));
        logs.push_back(streams.back().get());
      }
      // "all": every GPU that opens; a list: each must.
      SyncedStream notes(err, err_mu);
      engines = open_summarizers(per_gpu, logs, o.devices == "all", notes);
    }
    DiscoveredInputs found = discover_inputs(o, in);
    check_output_collisions(found);
    if (shard) {
      auto mine = [&](const std::string& key) { return shard_of(key, shard->second) == shard->first; };
      std::erase_if(found.inputs, [&](const SummaryInput& i) { return !mine(i.rel); });
      std::erase_if(found.bad, [&](const auto& b) { return !mine(fs::path(b.first).filename().string()); });
    }
    for (const auto& [path, reason] : found.bad) err << "abridge: " << path << ": " << reason << '\n';
    BatchReport report = engines.size() == 1 ? engines[0]->run(found.inputs) : run_on_engines(engines, found.inputs);
    report.failed += static_cast<int>(found.bad.size());
    for (const auto& [path, reason] : found.bad) report.documents.push_back({path, "", "failed", reason, 0, 0, 0});
    report.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();  // model loading included
    if (!o.report.empty()) write_report(o.report, report);
    err << final_line(report) << '\n';
    return report.failed > 0 ? kExitInputsFailed : kExitOk;
  } catch (const Error& e) {
    err << "abridge summarize: " << e.what() << '\n';
    return kExitFatal;
  }
}

}  // namespace abridge::pipeline
