// The plan of one document's summary, host only (no engine, no files): which summaries the engine must
// write, level by level. A document that fits the context is one request; a longer one is cut into
// chunks (level 0, "map") whose summaries are merged in order, in groups that fit the context, level
// after level until one summary is left ("reduce"). The driver (driver.h) hands the requests to the
// engine and gives the summaries back; every level is smaller than the one before, so a plan ends.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace abridge::pipeline {

// One summary the engine must write.
struct PlanRequest {
  int level = 0;     // 0: the whole document, or one chunk of it; 1, 2, ...: merges; kSideLevel: side requests
  size_t index = 0;  // its place in its level
  std::string instruction, text;
  std::vector<int32_t> prompt_ids;  // the request's tokens when already encoded (level 0), else empty
  int64_t max_new_tokens = 0;       // the reply's length; 0: the summary length
};

// Side requests (an outline's section summaries) run beside level 0; their summaries are kept apart,
// never merged.
inline constexpr int kSideLevel = -1;

// A chunk of a map-reduce plan, with its summary once written.
struct PlanPiece {
  size_t start = 0, end = 0;  // byte range in the document's text
  std::string section;        // heading path, "" when none
  int64_t tokens = 0;
  std::string summary;
};

// Groups the summaries of a level, in order, for merging: each group's summaries together take at most
// `room` tokens (a summary larger than the room goes alone), and at most `max_group` summaries. Returns
// the size of each group. Throws abridge::Error when the level would not shrink (fewer than two
// summaries fit the room), so that merging always ends.
std::vector<size_t> merge_groups(const std::vector<int64_t>& tokens, int64_t room, size_t max_group);

// How a document's summaries are merged.
struct MergeRule {
  std::string instruction;                                       // the merge instruction
  int64_t room = 0;                                              // tokens for the summaries of one merge request
  size_t max_group = 16;                                         // summaries per merge request at most
  std::function<int64_t(std::string_view)> count;                // tokens of a summary as it is joined
  std::function<std::string(const std::vector<std::string>&)> join;  // the text of a merge request
};

class DocPlan {
 public:
  // One pass: `single` is the only request (level 0, index 0).
  DocPlan(PlanRequest single, MergeRule merge);
  // Map-reduce: one request per piece (level 0, in order), then merges.
  DocPlan(std::vector<PlanPiece> pieces, std::vector<PlanRequest> map, MergeRule merge);

  // Adds side requests (kSideLevel, indices 0, 1, ... in order); call before the first take_requests().
  void add_side_requests(std::vector<PlanRequest> side);
  // The current level's requests (and the side requests) not handed out yet; each is handed out once.
  std::vector<PlanRequest> take_requests();
  // The summary of request (level, index) of the current level. When it completes the level, the next
  // level's requests become available (or the plan is done). Throws abridge::Error when the summaries
  // cannot be merged (merge_groups).
  void complete(int level, size_t index, std::string summary);

  // The summary is written and every side request has its summary.
  bool done() const { return summary_.has_value() && side_completed_ == side_.size(); }
  const std::string& summary() const { return *summary_; }  // when done()
  const std::vector<PlanPiece>& pieces() const { return pieces_; }  // with their summaries once level 0 is complete
  const std::vector<std::string>& side_summaries() const { return side_; }  // in order, once done()
  int level() const { return level_; }
  size_t level_size() const { return results_.size(); }
  size_t outstanding() const { return outstanding_; }  // handed out, not completed

 private:
  void next_level();
  std::vector<PlanPiece> pieces_;
  MergeRule merge_;
  int level_ = 0;
  std::vector<PlanRequest> pending_;                 // not handed out yet
  std::vector<std::optional<std::string>> results_;  // (level size) the current level's summaries
  size_t outstanding_ = 0, completed_ = 0;
  std::optional<std::string> summary_;
  std::vector<std::string> side_;
  std::vector<bool> side_done_;
  size_t side_completed_ = 0;
};

}  // namespace abridge::pipeline
