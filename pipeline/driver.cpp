#include "pipeline/driver.h"

#include <algorithm>
#include <climits>

#include "base/error.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "pipeline/output_dir.h"
#include "pipeline/summarize.h"

namespace abridge::pipeline {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

}  // namespace

Driver::Driver(engine::Engine& engine, const SummaryRules& rules, const OutputDir& out, Hooks hooks)
    : engine_(engine),
      rules_(rules),
      out_(out),
      hooks_(std::move(hooks)),
      serving_(engine.backend(), engine.scheduler_options(), {},
               [this](int64_t, const engine::RequestResult& r) { done_.push_back(r); }),
      first_wave_tokens_(engine.scheduler_options().max_batch_tokens) {}

Driver::~Driver() = default;

void Driver::start(PreparedDoc doc) {
  ABRIDGE_CHECK(doc.state == PreparedDoc::State::kPlanned && doc.plan);
  if (docs_.empty()) wave_tokens_ = 0, wave_finished_ = 0, wave_first_ = doc.input_tokens;  // from idle: a new wave
  wave_tokens_ += doc.input_tokens;
  const uint64_t id = next_doc_++;
  docs_.emplace(id, std::move(doc));
  submit_ready(id);
}

bool Driver::wants_more() const {
  // A first wave is held only when its first document is short (two steps' prompts at most): then its
  // summary can be out within seconds. A long first document gains nothing from it.
  const bool holding = wave_finished_ == 0 && wave_first_ <= 2 * first_wave_tokens_ &&
                       wave_tokens_ >= first_wave_tokens_ && !docs_.empty();
  // Less than two steps' prompts wait in the engine: room to take a document without holding back
  // work that another engine could do.
  return !holding && serving_.queued_tokens() < 2 * first_wave_tokens_;
}

void Driver::submit_ready(uint64_t id) {
  // Cache hits complete requests at once, which may complete a level and make the next one's.
  for (;;) {
    auto it = docs_.find(id);
    if (it == docs_.end()) return;  // finished or failed
    PreparedDoc& d = it->second;
    std::vector<PlanRequest> requests = d.plan->take_requests();
    if (requests.empty()) return;
    // Shortest remaining work first: a document's requests go ahead of those of documents with more
    // left to read (a short document that arrives during a long one is not queued behind all of it;
    // a document's merges, short, go ahead of other documents' chunks).
    int64_t remaining = 0;
    for (const PlanRequest& r : requests)  // merges are not encoded yet: about 3 bytes a token is close enough
      remaining += r.prompt_ids.empty() ? static_cast<int64_t>(r.text.size() / 3) : static_cast<int64_t>(r.prompt_ids.size());
    const int32_t priority = static_cast<int32_t>(-std::min<int64_t>(remaining, INT32_MAX));
    for (PlanRequest& r : requests) {
      const std::string key = rules_.cache_key(r);
      const OutputDir::CacheEntry hit = out_.cache_get(key);
      if (hit.damaged && hooks_.note) hooks_.note(d.input.path, "a damaged cache entry (checksum) is summarized again");
      if (hit.value) {
        complete(id, r.level, r.index, *hit.value);
        if (!docs_.count(id)) return;
        continue;
      }
      engine::Request er;
      er.prompt = r.prompt_ids.empty() ? rules_.encode_request(d.lang, r.instruction, r.text) : std::move(r.prompt_ids);
      er.max_new_tokens = r.max_new_tokens > 0 ? r.max_new_tokens : rules_.options->summary_tokens;
      er.stop_ids = rules_.stop_ids;
      er.vocab_limit = rules_.tokenizer->n_tokens();
      er.priority = priority;
      try {
        if (static_cast<int64_t>(er.prompt.size()) + er.max_new_tokens > rules_.context)
          throw Error("a prompt of " + std::to_string(er.prompt.size()) + " tokens does not fit the context of " +
                      std::to_string(rules_.context) + " tokens");
        const int64_t rid = serving_.submit(std::move(er));
        tags_[rid] = {id, r.level, r.index, key};
      } catch (const Error& e) {
        fail(id, e.what());
        return;
      }
    }
  }
}

bool Driver::step() {
  const bool ran = serving_.step();
  std::vector<engine::RequestResult> results = std::move(done_);
  done_.clear();
  for (engine::RequestResult& res : results) {
    auto t = tags_.find(res.id);
    if (t == tags_.end()) continue;
    const Tag tag = t->second;
    tags_.erase(t);
    if (!docs_.count(tag.doc)) continue;  // its document already failed
    if (res.reason == engine::FinishReason::kError || res.reason == engine::FinishReason::kCancelled) {
      fail(tag.doc, "engine: " + (res.error.empty() ? std::string("request cancelled") : res.error));
      continue;
    }
    requests_.push_back({res.prompt_tokens, static_cast<int64_t>(res.tokens.size())});
    engine::StreamDecoder dec(*rules_.tokenizer);
    std::string text;
    for (int32_t tok : res.tokens) text += dec.push(tok);
    text = trim(text + dec.finish());
    docs_.at(tag.doc).generated_tokens += static_cast<int64_t>(res.tokens.size());
    if (hooks_.cache_put) hooks_.cache_put(tag.cache_key, text);
    complete(tag.doc, tag.level, tag.index, std::move(text));
    if (docs_.count(tag.doc)) submit_ready(tag.doc);
  }
  return ran || !results.empty();
}

void Driver::complete(uint64_t id, int level, size_t index, std::string summary) {
  PreparedDoc& d = docs_.at(id);
  if (level == 0 && hooks_.chunk_done) hooks_.chunk_done();  // side requests are not chunks
  try {
    d.plan->complete(level, index, std::move(summary));
  } catch (const Error& e) {
    fail(id, e.what());
    return;
  }
  if (d.plan->done()) finish(id);
}

void Driver::finish(uint64_t id) {
  auto it = docs_.find(id);
  PreparedDoc d = std::move(it->second);
  docs_.erase(it);
  ++wave_finished_;
  d.summary = d.plan->summary();
  d.pieces = d.plan->pieces();
  fill_outline(d, *d.plan);
  d.plan.reset();
  if (d.summary.empty()) {
    d.state = PreparedDoc::State::kFailed;
    d.error = "the model returned an empty summary";
  } else {
    d.state = PreparedDoc::State::kSummarized;
  }
  if (hooks_.finished) hooks_.finished(std::move(d));
}

void Driver::fail(uint64_t id, const std::string& why) {
  auto it = docs_.find(id);
  if (it == docs_.end()) return;
  for (auto t = tags_.begin(); t != tags_.end();) {
    if (t->second.doc == id) {
      serving_.cancel(t->first);
      t = tags_.erase(t);
    } else {
      ++t;
    }
  }
  PreparedDoc d = std::move(it->second);
  docs_.erase(it);
  ++wave_finished_;
  d.plan.reset();
  d.state = PreparedDoc::State::kFailed;
  d.error = why;
  if (hooks_.finished) hooks_.finished(std::move(d));
}

void Driver::fail_all(const std::string& why) {
  while (!docs_.empty()) fail(docs_.begin()->first, why);
}

std::vector<RequestRecord> Driver::take_requests() {
  std::vector<RequestRecord> out = std::move(requests_);
  requests_.clear();
  return out;
}

}  // namespace abridge::pipeline
