// The Session (summarize.h): documents prepared on worker threads, planned for the context and pool of
// its engines, run by one driver thread per engine, written by the workers; added to while it runs
// (watch), stopped at a signal. summarize.cpp holds the Summarizer and the command that runs a Session.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>

#include "base/error.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "pipeline/commands.h"
#include "pipeline/document_reader.h"
#include "pipeline/driver.h"
#include "pipeline/memory.h"
#include "pipeline/output_dir.h"
#include "pipeline/prepare.h"
#include "pipeline/run_report.h"
#include "pipeline/summarize.h"
#include "pipeline/summarizer_impl.h"

namespace abridge::pipeline {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

}  // namespace

struct Session::Impl {
  std::vector<Summarizer*> engines;
  const OutputDir& out;
  const Clock::time_point t0;
  SummaryRules rules;
  const SummarizeOptions& o;
  std::ostream& log;
  const bool tty;

  mutable std::mutex mu;  // guards everything below
  std::condition_variable cv;
  // Documents carry a sequence number from add() (smallest first within each call): prepared in that
  // order, and started in that order unless the next one is slow to prepare (a big PDF).
  std::deque<std::pair<uint64_t, SummaryInput>> to_prepare;
  std::map<uint64_t, Clock::time_point> in_preparation;  // since when
  std::map<uint64_t, PreparedDoc> ready;            // planned, waiting for a driver
  std::deque<std::function<void()>> writes;         // outputs and cache entries to write
  uint64_t next_seq = 0;
  size_t preparing = 0, in_engines = 0, writing = 0;
  size_t lookahead = 0;                             // planned documents kept ready at most
  bool stopping = false;
  BatchReport report;                               // documents finished since the last take
  std::optional<Clock::time_point> batch_start;     // the first add() since the last take
  std::vector<engine::EngineCounters> counters;     // per driver, as of its last step
  size_t docs_total = 0, docs_finished = 0;
  size_t chunks_total = 0, chunks_done = 0;  // level-0 requests (chunks, or whole documents) of planned documents
  int64_t tokens_started = 0;                // input tokens of the documents prepared so far
  Clock::time_point last_progress = Clock::now() - std::chrono::seconds(1);

  std::mutex log_mu;  // whole lines from every thread
  std::vector<std::thread> workers, drivers;

  Impl(std::vector<Summarizer*> e, const OutputDir& output, Clock::time_point start)
      : engines(std::move(e)),
        out(output),
        t0(start),
        o(engines.at(0)->options()),
        log(engines.at(0)->log()),
        tty(!o.quiet && o.progress_bar && ::isatty(STDERR_FILENO)) {
    Summarizer::Impl& first = *engines[0]->impl_;
    rules.options = &o;
    rules.llm = first.llm;
    rules.tokenizer = &first.tokenizer();
    rules.prompts = Prompts(first.custom_prompt, o.summary_tokens);
    rules.read = first.read;
    rules.model_label = first.llm ? o.model : "extractive";
    if (first.llm) {
      rules.stop_ids = engine::chat_stop_ids(*rules.tokenizer, first.engine->config().eos_token_ids);
      rules.context = first.context();
      int64_t pool = first.engine->kv_pool_tokens();
      for (Summarizer* s : engines) {
        rules.context = std::min(rules.context, s->impl_->context());  // any engine can run any plan
        pool = std::min(pool, s->impl_->engine->kv_pool_tokens());
      }
      // Chunks small enough that several share the pool (their prefill overlaps the others' decoding).
      rules.chunk_tokens = o.chunk_tokens > 0
                               ? o.chunk_tokens
                               : std::max<int64_t>(512, std::min<int64_t>({32768, rules.context / 2, pool / 4}));
    }
    json parameters = {{"engine", first.llm ? "llm" : "extractive"},
                             {"summary_tokens", o.summary_tokens},
                             {"lang", o.lang},
                             {"context_tokens", rules.context},
                             {"chunk_tokens", first.llm ? rules.chunk_tokens : 0},
                             {"sampling", "greedy"},
                             {"prompt_sha256", sha256_hex(first.custom_prompt)},
                             // How the text is read: a different reading is a different summary.
                             {"outline", o.outline},
                             {"reader", 2},
                             {"encoding", o.encoding},
                             {"ocr", o.ocr},
                             {"ocr_lang", o.ocr_lang}};
    // How the model reads: an FP8 KV cache or an attention window changes what it writes. Named only
    // when not the default, so that outputs of earlier runs without them stay up to date.
    if (first.llm && engine::parse_kv_cache_dtype(o.kv_cache_dtype) == engine::KvCacheDtype::kFp8)
      parameters["kv_cache"] = "fp8";
    if (first.llm && o.attention_window > 0) {
      parameters["attention_window"] = o.attention_window;
      parameters["sink_tokens"] = o.sink_tokens;
    }
    rules.parameters = parameters.dump();
    rules.param_key = sha256_hex(first.model_id + "\n" + rules.parameters);

    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    const size_t n_workers = rules.llm ? std::clamp<size_t>(cores / 2, 1, 4) : cores;
    // LLM: planned documents waiting for an engine hold their text and token ids, so only so many are
    // prepared ahead; the extractive engine finishes each document in its worker.
    lookahead = rules.llm ? 2 * static_cast<size_t>(engines.size()) * 64 : SIZE_MAX;
    counters.resize(engines.size());
    try {
      for (size_t i = 0; i < n_workers; ++i) workers.emplace_back([this] { work(); });
      if (rules.llm)
        for (size_t k = 0; k < engines.size(); ++k) drivers.emplace_back([this, k] { drive(k); });
    } catch (const std::system_error& e) {
      // A task limit (a container's pids cgroup, RLIMIT_NPROC): the threads already started are stopped
      // and joined (a joinable std::thread left behind would abort the process), then one error line.
      stop_threads();
      throw Error(std::string("cannot start a worker thread: ") + e.code().message() +
                  " (a limit on tasks or memory, such as a container's pids limit)");
    }
  }

  ~Impl() { stop_threads(); }

  void stop_threads() {
    {
      std::lock_guard lock(mu);
      stopping = true;
      to_prepare.clear();
      ready.clear();
      cv.notify_all();
    }
    for (auto& t : drivers) t.join();
    for (auto& t : workers) t.join();
    drivers.clear();
    workers.clear();
  }

  // One whole line (or a progress redraw) at a time, from any thread.
  void say(const std::string& line) {
    std::lock_guard lock(log_mu);
    if (tty) log << "\r\033[K";
    log << line << '\n' << std::flush;
  }

  void progress(bool force) {
    if (!tty) return;
    std::lock_guard lock(log_mu);
    const auto now = Clock::now();
    if (!force && now - last_progress < std::chrono::milliseconds(200)) return;
    last_progress = now;
    size_t total, finished, chunks, chunks_all;
    int64_t tokens;
    {
      std::lock_guard l2(mu);
      total = docs_total, finished = docs_finished, chunks = chunks_done, chunks_all = chunks_total, tokens = tokens_started;
    }
    const double secs = seconds_since(t0, now);
    const double rate = secs > 0 ? static_cast<double>(tokens) / secs : 0;
    const double left = finished > 0 && finished < total ? secs / static_cast<double>(finished) * static_cast<double>(total - finished) : 0;
    log << "\r\033[K[" << finished << "/" << total << " documents, " << chunks << "/" << chunks_all << " chunks] "
        << format_count(static_cast<double>(tokens)) << " tokens, " << format_count(rate) << " tok/s"
        << (left > 0 ? ", ETA " + format_duration(left) : "") << std::flush;
  }

  // Records a document's end (under mu).
  void record(const PreparedDoc& d, const std::string& status, double seconds) {
    DocumentReport r{d.input.path, d.input.output.string(), status, d.error, d.input_tokens, d.generated_tokens, seconds, {}, {}, {}};
    r.encoding = d.encoding;
    r.ocr_pages = d.ocr_pages;
    r.ocr_languages = d.ocr_languages;
    if (status == "summarized") {
      ++report.summarized;
      if (report.first_summary_seconds < 0) report.first_summary_seconds = seconds_since(t0);
    } else if (status == "up to date") {
      ++report.skipped;
    } else {
      ++report.failed;
    }
    report.input_tokens += d.input_tokens;
    report.generated_tokens += d.generated_tokens;
    report.documents.push_back(std::move(r));
    ++docs_finished;
  }

  // A document whose work is over: report it and say so.
  void ended(const PreparedDoc& d, const std::string& status, double seconds) {
    {
      std::lock_guard lock(mu);
      record(d, status, seconds);
      cv.notify_all();
    }
    const std::string path = shown_path(d.input.path);
    if (!o.quiet)
      for (const std::string& note : d.notes) say("abridge: " + path + ": " + note);
    if (status == "failed") say("abridge: " + path + ": " + shown_path(d.error));
    else if (status == "up to date" && !o.quiet && !tty) say("abridge: " + path + ": up to date");
    else if (status == "summarized" && !o.quiet && !tty)
      say("abridge: " + path + " -> " + shown_path(d.input.output.string()) + " (" + std::to_string(d.input_tokens) +
          " tokens, " + format_duration(seconds) + ")");
    progress(true);
  }

  // Writes a summarized document's output (on a worker thread) and reports it.
  void write_output(PreparedDoc& d) {
    const double seconds = seconds_since(d.started);
    try {
      out.write_output(d.input.output_rel, render_output(d, rules, seconds), d.job_key, d.input.path,
                       summary_mode(d.input.mode, d.input.reach), d.input.folder_modes);
    } catch (const std::exception& e) {
      d.error = error_text(e);
      ended(d, "failed", seconds);
      return;
    }
    ended(d, "summarized", seconds);
  }

  // An exception out of a document's bookkeeping (memory ran out even for its report line): one line
  // if it can be written, and the worker goes on; an exception must not end a thread (that aborts).
  void survive(const std::exception& e, const std::string& path) {
    try {
      say("abridge: " + (path.empty() ? std::string() : shown_path(path) + ": ") + error_text(e));
    } catch (const std::exception&) {
    }
  }

  // Worker threads: writes first, then preparing the next document.
  void work() {
    for (;;) {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] {
        return stopping || !writes.empty() || (!to_prepare.empty() && ready.size() + preparing < lookahead);
      });
      if (!writes.empty()) {
        std::function<void()> task = std::move(writes.front());
        writes.pop_front();
        lock.unlock();
        try {
          task();
        } catch (const std::exception& e) {
          survive(e, "");
        }
        lock.lock();
        --writing;
        cv.notify_all();
        continue;
      }
      if (stopping) return;
      auto [seq, input] = std::move(to_prepare.front());
      to_prepare.pop_front();
      ++preparing;
      in_preparation.emplace(seq, Clock::now());
      lock.unlock();
      try {
        PreparedDoc d = prepare_document(input, rules, out);
        switch (d.state) {
          case PreparedDoc::State::kUpToDate: ended(d, "up to date", 0); break;
          case PreparedDoc::State::kFailed: ended(d, "failed", seconds_since(d.started)); break;
          case PreparedDoc::State::kSummarized: write_output(d); break;  // the extractive engine
          case PreparedDoc::State::kPlanned: {
            std::lock_guard l2(mu);
            chunks_total += d.plan->level_size();
            tokens_started += d.input_tokens;
            ready.emplace(seq, std::move(d));
            break;
          }
        }
      } catch (const std::exception& e) {
        survive(e, input.path);
      }
      lock.lock();
      in_preparation.erase(seq);
      --preparing;
      cv.notify_all();
    }
  }

  void post_write(std::function<void()> task) {
    std::lock_guard lock(mu);
    writes.push_back(std::move(task));
    ++writing;
    cv.notify_all();
  }

  // One driver thread per engine: documents from `ready` into its engine, steps, outputs to the writers.
  void drive(size_t k) {
    engine::Engine& eng = *engines[k]->engine();
    Driver::Hooks hooks;
    hooks.finished = [this](PreparedDoc&& d) {
      {
        std::lock_guard lock(mu);
        --in_engines;
      }
      if (d.state == PreparedDoc::State::kFailed) {
        ended(d, "failed", seconds_since(d.started));
        return;
      }
      auto doc = std::make_shared<PreparedDoc>(std::move(d));
      post_write([this, doc] { write_output(*doc); });
    };
    hooks.cache_put = [this](const std::string& key, const std::string& summary) {
      post_write([this, key, summary] {
        try {
          out.cache_put(key, summary);
        } catch (const std::exception&) {
          // The cache only saves work on a later run; the summary itself is unaffected.
        }
      });
    };
    hooks.note = [this](const std::string& path, const std::string& note) { say("abridge: " + shown_path(path) + ": " + note); };
    hooks.chunk_done = [this] {
      std::lock_guard lock(mu);
      ++chunks_done;
    };
    Driver driver(eng, rules, out, std::move(hooks));
    for (;;) {
      while (driver.wants_more()) {
        std::optional<PreparedDoc> doc;
        {
          std::lock_guard lock(mu);
          if (!next_in_order()) break;
          doc = std::move(ready.begin()->second);
          ready.erase(ready.begin());
          ++in_engines;
          cv.notify_all();  // a worker may prepare the next one
        }
        try {
          driver.start(std::move(*doc));
        } catch (const std::exception& e) {
          driver.fail_all("engine: " + error_text(e));  // the environment (memory): no document is lost silently
        }
      }
      bool ran = false;
      try {
        ran = driver.step();
      } catch (const std::exception& e) {
        driver.fail_all("engine: " + error_text(e));
        ran = true;
      }
      try {
        std::lock_guard lock(mu);
        if (ran && report.first_step_seconds < 0) report.first_step_seconds = seconds_since(t0);
        counters[k] = driver.counters();
        for (const RequestRecord& r : driver.take_requests()) report.requests.push_back(r);
      } catch (const std::exception& e) {
        survive(e, "");  // the run report's figures of this step are lost, not the documents
      }
      if (ran) {
        try {
          progress(false);
        } catch (const std::exception&) {
        }
        continue;
      }
      std::unique_lock lock(mu);
      if (stopping && driver.idle()) return;
      // Idle: wait for the next document (or, when the one before it is slow to prepare, a moment).
      const auto wake = [&] { return stopping || next_in_order(); };
      if (in_preparation.empty()) cv.wait(lock, wake);
      else cv.wait_for(lock, std::chrono::milliseconds(200), wake);
      if (stopping && driver.idle()) return;
    }
  }

  // A planned document is ready and no document before it is still being prepared (for long: a PDF
  // that takes seconds does not hold the others back). Under mu.
  bool next_in_order() const {
    if (ready.empty()) return false;
    if (in_preparation.empty() || ready.begin()->first < in_preparation.begin()->first) return true;
    return Clock::now() - in_preparation.begin()->second > std::chrono::seconds(2);
  }

  bool idle_locked() const {
    return to_prepare.empty() && ready.empty() && preparing == 0 && in_engines == 0 && writing == 0;
  }

  BatchReport take_locked() {
    BatchReport r = std::move(report);
    report = BatchReport{};
    report.first_step_seconds = r.first_step_seconds;
    report.first_summary_seconds = r.first_summary_seconds;
    r.llm = rules.llm;
    r.seconds = seconds_since(batch_start.value_or(t0));
    batch_start.reset();
    for (size_t k = 0; k < engines.size(); ++k) {
      r.device += (k ? " + " : "") + engines[k]->device();
      r.load_seconds = std::max(r.load_seconds, engines[k]->load_seconds());
      if (!rules.llm) continue;
      const engine::EngineCounters& c = counters[k];
      EngineReport e{c.steps, c.prefill_tokens, c.decode_tokens, c.decode_only_steps, c.decode_only_seconds,
                     c.prefill_step_seconds, c.preemptions, c.recomputed_tokens, c.peak_kv_blocks,
                     c.kv_blocks, c.kv_block_tokens, {}};
      for (size_t b = 0; b < c.decode_by_batch.size(); ++b) {
        const engine::DecodeStepBucket& d = c.decode_by_batch[b];
        e.decode_by_batch.push_back({engine::kDecodeBucketFirst[b], d.steps, d.sequences, d.kv_tokens, d.seconds});
      }
      r.engine += e;
    }
    return r;
  }
};

Session::Session(std::vector<Summarizer*> engines, const OutputDir& out, Clock::time_point start)
    : impl_(std::make_unique<Impl>(std::move(engines), out, start)) {}

Session::~Session() { stop(); }

std::vector<SummaryInput> work_order(std::vector<SummaryInput> inputs, size_t engines) {
  auto by_size = [](const SummaryInput& a, const SummaryInput& b) { return a.bytes < b.bytes; };
  std::stable_sort(inputs.begin(), inputs.end(), by_size);
  if (engines <= 1 || inputs.size() <= engines) return inputs;
  // Several engines: each starts on one of the shortest documents (its first summary comes out at
  // once), then the rest go longest first, so that no engine is left with a long document alone at
  // the end while the others idle (longest processing time first).
  std::stable_sort(inputs.begin() + static_cast<std::ptrdiff_t>(engines), inputs.end(),
                   [&](const SummaryInput& a, const SummaryInput& b) { return by_size(b, a); });
  return inputs;
}

void Session::add(std::vector<SummaryInput> inputs) {
  inputs = work_order(std::move(inputs), impl_->engines.size());
  std::lock_guard lock(impl_->mu);
  if (!impl_->batch_start) impl_->batch_start = Clock::now();
  impl_->docs_total += inputs.size();
  for (SummaryInput& i : inputs) impl_->to_prepare.emplace_back(impl_->next_seq++, std::move(i));
  impl_->cv.notify_all();
}

BatchReport Session::wait() {
  std::unique_lock lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->idle_locked(); });
  BatchReport r = impl_->take_locked();
  lock.unlock();
  if (impl_->tty) {
    std::lock_guard l(impl_->log_mu);
    impl_->log << "\r\033[K" << std::flush;
  }
  return r;
}

BatchReport Session::take_report() {
  std::lock_guard lock(impl_->mu);
  return impl_->take_locked();
}

bool Session::idle() const {
  std::lock_guard lock(impl_->mu);
  return impl_->idle_locked();
}

size_t Session::stop() {
  size_t dropped = 0;
  {
    std::lock_guard lock(impl_->mu);
    dropped = impl_->to_prepare.size() + impl_->ready.size();
    impl_->to_prepare.clear();
    impl_->ready.clear();
  }
  {
    std::unique_lock lock(impl_->mu);
    impl_->cv.wait(lock, [&] { return impl_->in_engines == 0 && impl_->preparing == 0 && impl_->writing == 0; });
  }
  return dropped;
}

BatchReport summarize_inputs(std::vector<Summarizer*> engines, const OutputDir& out,
                             const std::vector<SummaryInput>& inputs, Session::Clock::time_point start) {
  Session session(std::move(engines), out, start);
  session.add(inputs);
  return session.wait();
}

}  // namespace abridge::pipeline
