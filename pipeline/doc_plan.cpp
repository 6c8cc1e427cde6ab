#include "pipeline/doc_plan.h"

#include "base/error.h"

namespace abridge::pipeline {

std::vector<size_t> merge_groups(const std::vector<int64_t>& tokens, int64_t room, size_t max_group) {
  ABRIDGE_CHECK(max_group >= 2, "a merge group must take two summaries");
  std::vector<size_t> groups;
  int64_t used = 0;
  for (const int64_t t : tokens) {
    if (groups.empty() || used + t > room || groups.back() >= max_group) {
      groups.push_back(0);
      used = 0;
    }
    ++groups.back();
    used += t;
  }
  if (tokens.size() > 1 && groups.size() >= tokens.size())
    throw Error("the summaries of " + std::to_string(tokens.size()) + " parts cannot be merged: the merge prompt " +
                "leaves room for " + std::to_string(std::max<int64_t>(room, 0)) +
                " tokens, less than two summaries (lower --summary-tokens, shorten --prompt or raise --context-tokens)");
  return groups;
}

DocPlan::DocPlan(PlanRequest single, MergeRule merge) : merge_(std::move(merge)) {
  single.level = 0;
  single.index = 0;
  pending_.push_back(std::move(single));
  results_.resize(1);
}

DocPlan::DocPlan(std::vector<PlanPiece> pieces, std::vector<PlanRequest> map, MergeRule merge)
    : pieces_(std::move(pieces)), merge_(std::move(merge)), pending_(std::move(map)) {
  ABRIDGE_CHECK(!pending_.empty() && pending_.size() == pieces_.size());
  for (size_t i = 0; i < pending_.size(); ++i) pending_[i].level = 0, pending_[i].index = i;
  results_.resize(pending_.size());
}

void DocPlan::add_side_requests(std::vector<PlanRequest> side) {
  ABRIDGE_CHECK(outstanding_ == 0 && completed_ == 0 && level_ == 0, "side requests come before the first take");
  for (PlanRequest& r : side) {
    r.level = kSideLevel;
    r.index = side_.size();
    side_.emplace_back();
    side_done_.push_back(false);
    pending_.push_back(std::move(r));
  }
}

std::vector<PlanRequest> DocPlan::take_requests() {
  std::vector<PlanRequest> out = std::move(pending_);
  pending_.clear();
  outstanding_ += out.size();
  return out;
}

void DocPlan::complete(int level, size_t index, std::string summary) {
  if (level == kSideLevel) {
    ABRIDGE_CHECK(index < side_.size() && !side_done_[index] && outstanding_ > 0,
                  "side request " + std::to_string(index) + " completed twice");
    side_[index] = std::move(summary);
    side_done_[index] = true;
    ++side_completed_;
    --outstanding_;
    return;
  }
  ABRIDGE_CHECK(!summary_ && level == level_ && index < results_.size() && !results_[index] && outstanding_ > 0,
                "request " + std::to_string(level) + "/" + std::to_string(index) + " completed twice or out of turn");
  results_[index] = std::move(summary);
  --outstanding_;
  if (++completed_ == results_.size()) next_level();
}

void DocPlan::next_level() {
  std::vector<std::string> level;
  for (auto& r : results_) level.push_back(std::move(*r));
  if (level_ == 0)
    for (size_t k = 0; k < pieces_.size(); ++k) pieces_[k].summary = level[k];
  if (level.size() == 1) {
    summary_ = std::move(level[0]);
    return;
  }
  std::vector<int64_t> tokens;
  for (const std::string& s : level) tokens.push_back(merge_.count(s));
  const std::vector<size_t> groups = merge_groups(tokens, merge_.room, merge_.max_group);
  ABRIDGE_CHECK(groups.size() < level.size());  // every level is smaller: the plan ends
  ++level_;
  results_.assign(groups.size(), std::nullopt);
  completed_ = 0;
  size_t at = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::vector<std::string> part(level.begin() + static_cast<std::ptrdiff_t>(at),
                                        level.begin() + static_cast<std::ptrdiff_t>(at + groups[g]));
    at += groups[g];
    pending_.push_back({level_, g, merge_.instruction, merge_.join(part), {}, 0});
  }
}

}  // namespace abridge::pipeline
