// The driver: moves the requests of document plans into one serving engine and the summaries back.
//
// It runs on one thread (the session's driver thread for its engine), which also runs the engine's
// steps. start() takes a planned document and submits its first requests (a request whose summary is
// in the cache completes at once). step() runs one engine step, then takes the requests it finished
// (the engine's callback only collects them): each summary goes to the cache and to its plan, which
// may make the next level's merge requests, submitted before the next step; a document whose plan is
// done is handed to the `finished` hook.
//
// What to start when: the session starts documents smallest first whenever wants_more() says less than
// two steps' prompts wait in the engine's queue. From idle, when the first document is short, the first
// documents (up to one step's tokens) run as a wave of their own: wants_more() holds the rest back until
// one of them is finished, so the first summaries are written within seconds while the engine decodes a
// small batch (it costs one short run of decode-only steps); afterwards
// decodes ride along with the prefill chunks of later documents. In the engine's queue, requests of the
// document with the least left to read go first (shortest remaining work first: a document's merges,
// and a short document that arrives during a long one, are not queued behind a long document's
// chunks). docs/ARCHITECTURE.md, "Batches".
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/serving.h"
#include "pipeline/prepare.h"
#include "pipeline/run_report.h"

namespace abridge::engine {
class Engine;
}

namespace abridge::pipeline {

class OutputDir;

class Driver {
 public:
  struct Hooks {
    // A document left the driver: plan done (doc.summary set) or failed (doc.error set).
    std::function<void(PreparedDoc&& doc)> finished;
    // A request's summary, to be cached (may run the write elsewhere).
    std::function<void(const std::string& key, const std::string& summary)> cache_put;
    // One line about a document (a damaged cache entry).
    std::function<void(const std::string& path, const std::string& note)> note;
    // A level-0 request (a chunk, or a whole document) was summarized or found in the cache.
    std::function<void()> chunk_done;
  };
  Driver(engine::Engine& engine, const SummaryRules& rules, const OutputDir& out, Hooks hooks);
  ~Driver();
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  // A kPlanned document.
  void start(PreparedDoc doc);
  // One engine step and what it finished; false when the engine had nothing to run.
  bool step();
  // Less than two steps' prompts wait in the engine and no first wave is held: start another document.
  bool wants_more() const;
  bool idle() const { return docs_.empty(); }
  size_t active() const { return docs_.size(); }
  // Ends every document in the driver as failed with `why` (their requests are cancelled).
  void fail_all(const std::string& why);

  engine::EngineCounters counters() const { return serving_.counters(); }
  // The requests that ran on the engine (cache hits are not here), taken since the last call.
  std::vector<RequestRecord> take_requests();

 private:
  struct Tag {
    uint64_t doc;
    int level;
    size_t index;
    std::string cache_key;
  };
  void submit_ready(uint64_t doc);                  // the plan's new requests: cache or engine
  void complete(uint64_t doc, int level, size_t index, std::string summary);
  void fail(uint64_t doc, const std::string& why);
  void finish(uint64_t doc);

  engine::Engine& engine_;
  const SummaryRules& rules_;
  const OutputDir& out_;
  Hooks hooks_;
  std::vector<engine::RequestResult> done_;         // filled by the engine's callback during a step
  engine::ServingEngine serving_;
  std::map<uint64_t, PreparedDoc> docs_;            // in the driver, by start order
  std::map<int64_t, Tag> tags_;                     // engine request id -> its document's request
  uint64_t next_doc_ = 0;
  std::vector<RequestRecord> requests_;
  // The first wave (see above): counted from the last time the driver was idle.
  int64_t wave_tokens_ = 0, wave_finished_ = 0, wave_first_ = 0;
  int64_t first_wave_tokens_;
};

}  // namespace abridge::pipeline
