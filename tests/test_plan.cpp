// A document's plan (pipeline/doc_plan.h), host only: the requests of each level, in order, each
// handed out once; merges grouped within the room of the context; every level smaller than the last, or
// a clear error. The counts come from the real Qwen3 tokenizer where a plan counts text.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/embedded_data.h"
#include "engine/tokenizer.h"
#include "pipeline/doc_plan.h"
#include "pipeline/prompts.h"
#include "pipeline/summarize.h"

using namespace abridge;
using namespace abridge::pipeline;

namespace {

const engine::Tokenizer& tokenizer() {
  static const engine::Tokenizer tok = engine::Tokenizer::from_json(engine::bundled_tokenizer_json());
  return tok;
}

int64_t count(std::string_view s) {
  return static_cast<int64_t>(tokenizer().encode(s, engine::AddedTokens::kPlain).size());
}

MergeRule rule(int64_t room, size_t max_group = 16) {
  MergeRule m;
  m.instruction = Prompts("", 64).merge(Language::kEnglish);
  m.room = room;
  m.max_group = max_group;
  m.count = [](std::string_view s) { return count(s) + 8; };
  m.join = [](const std::vector<std::string>& parts) { return Prompts::join(parts, Language::kEnglish); };
  return m;
}

DocPlan map_reduce(size_t n, MergeRule m) {
  std::vector<PlanPiece> pieces;
  std::vector<PlanRequest> map;
  for (size_t k = 0; k < n; ++k) {
    pieces.push_back({k * 100, (k + 1) * 100, "", 100, ""});
    map.push_back({0, k, "Summarize this part.", "part " + std::to_string(k), {}, 0});
  }
  return DocPlan(std::move(pieces), std::move(map), std::move(m));
}

// A summary of about `words` words.
std::string summary(size_t index, int words) {
  std::string s = "Summary " + std::to_string(index) + ":";
  for (int w = 0; w < words; ++w) s += " word";
  return s + ".";
}

}  // namespace

struct GroupCase {
  std::vector<int64_t> tokens;
  int64_t room;
  size_t max_group;
  std::vector<size_t> groups;
};

TEST(MergeGroups, PackInOrderWithinTheRoomAndTheGroupSize) {
  const std::vector<GroupCase> cases = {
      {{10, 10, 10, 10}, 100, 16, {4}},                   // all fit
      {{40, 40, 40, 40}, 100, 16, {2, 2}},                // two a group
      {{60, 30, 30, 60, 10}, 100, 16, {2, 3}},            // greedy, in order
      {{10, 10, 10, 10, 10}, 1000, 2, {2, 2, 1}},         // the group size caps
      {{150, 10, 10}, 100, 16, {1, 2}},                   // an oversized summary goes alone
      {{5}, 1, 16, {1}},                                  // one summary: nothing to merge, no shrink needed
      {{50, 50, 50}, 100, 16, {2, 1}},                    // exactly the room
  };
  for (const GroupCase& c : cases) EXPECT_EQ(merge_groups(c.tokens, c.room, c.max_group), c.groups) << c.room;
}

// A level that would not shrink (no two summaries fit the room) is an error, never an endless merge.
TEST(MergeGroups, ALevelThatCannotShrinkIsAnError) {
  for (int64_t room : {-500, 0, 50, 99}) {
    try {
      merge_groups({60, 60, 60}, room, 16);
      ADD_FAILURE() << "room " << room << " merged three summaries of 60 tokens";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cannot be merged"), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(merge_groups({60, 60, 60}, 120, 16));
}

TEST(DocPlan, OnePassIsOneRequest) {
  DocPlan p(PlanRequest{0, 0, "Summarize.", "the text", {}, 0}, rule(1000));
  auto r = p.take_requests();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].text, "the text");
  EXPECT_TRUE(p.take_requests().empty());  // handed out once
  EXPECT_EQ(p.outstanding(), 1u);
  EXPECT_FALSE(p.done());
  p.complete(0, 0, "the summary");
  ASSERT_TRUE(p.done());
  EXPECT_EQ(p.summary(), "the summary");
  EXPECT_TRUE(p.pieces().empty());
}

// Summaries that come back in any order make the same merges, in document order, within the room.
TEST(DocPlan, MapThenMergeLevelsInOrderWithinTheRoom) {
  const int64_t room = 3 * (count(summary(0, 20)) + 8);  // three summaries a merge
  for (unsigned seed : {1u, 2u, 3u}) {
    DocPlan p = map_reduce(10, rule(room));
    std::vector<PlanRequest> level0 = p.take_requests();
    ASSERT_EQ(level0.size(), 10u);
    std::mt19937 rng(seed);
    std::shuffle(level0.begin(), level0.end(), rng);
    for (const PlanRequest& r : level0) {
      EXPECT_EQ(r.level, 0);
      EXPECT_TRUE(p.take_requests().empty()) << "the merge level came before the map level was complete";
      p.complete(0, r.index, summary(r.index, 20));
    }
    for (size_t k = 0; k < 10; ++k) EXPECT_EQ(p.pieces()[k].summary, summary(k, 20));
    // Level 1: ten summaries in groups of three: 3, 3, 3, 1; each merge holds its parts in order.
    std::vector<PlanRequest> level1 = p.take_requests();
    ASSERT_EQ(level1.size(), 4u);
    EXPECT_EQ(p.level(), 1);
    size_t part = 0;
    for (const PlanRequest& r : level1) {
      EXPECT_EQ(r.level, 1);
      EXPECT_EQ(r.instruction, rule(room).instruction);
      EXPECT_LE(count(r.text), room) << r.text;
      for (size_t k = 0; k < (r.index < 3 ? 3u : 1u); ++k, ++part)
        EXPECT_NE(r.text.find(summary(part, 20)), std::string::npos) << r.text;
    }
    EXPECT_EQ(part, 10u);
    std::reverse(level1.begin(), level1.end());
    for (const PlanRequest& r : level1) p.complete(1, r.index, summary(r.index, 20));
    // Level 2: four summaries, 3 + 1; level 3: two, merged into one.
    std::vector<PlanRequest> level2 = p.take_requests();
    ASSERT_EQ(level2.size(), 2u);
    for (const PlanRequest& r : level2) p.complete(2, r.index, summary(r.index, 20));
    std::vector<PlanRequest> level3 = p.take_requests();
    ASSERT_EQ(level3.size(), 1u);
    EXPECT_FALSE(p.done());
    p.complete(3, 0, "the whole document");
    ASSERT_TRUE(p.done());
    EXPECT_EQ(p.summary(), "the whole document");
  }
}

// A custom prompt so long that the merge room holds less than two summaries: the document fails with
// the reason when its map level completes, instead of merging one summary at a time forever.
TEST(DocPlan, SummariesThatCannotBeMergedFailTheDocument) {
  const int64_t one = count(summary(0, 20)) + 8;
  DocPlan p = map_reduce(3, rule(one + one / 2));
  const auto level0 = p.take_requests();
  p.complete(0, 0, summary(0, 20));
  p.complete(0, 1, summary(1, 20));
  try {
    p.complete(0, 2, summary(2, 20));
    ADD_FAILURE() << "a level that cannot shrink was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot be merged"), std::string::npos) << e.what();
  }
}

TEST(DocPlanDeathTest, ASummaryGivenTwiceOrOutOfTurnAborts) {
  DocPlan p = map_reduce(2, rule(10000));
  p.take_requests();
  p.complete(0, 0, "a");
  EXPECT_DEATH(p.complete(0, 0, "again"), "completed twice or out of turn");
  EXPECT_DEATH(p.complete(1, 0, "a merge before its level"), "completed twice or out of turn");
}

// The order documents start in: smallest first on one engine; on several, one short document per
// engine, then longest first (the long ones must not be left to one engine at the end).
TEST(WorkOrder, SmallestFirstOnOneEngineLongestFirstOnSeveral) {
  std::vector<SummaryInput> in;
  for (int64_t bytes : {50, 10, 40, 30, 20, 60}) in.push_back({std::to_string(bytes), "", "", {}, "", bytes});
  auto order = [](const std::vector<SummaryInput>& v) {
    std::vector<int64_t> b;
    for (const auto& i : v) b.push_back(i.bytes);
    return b;
  };
  EXPECT_EQ(order(work_order(in, 1)), (std::vector<int64_t>{10, 20, 30, 40, 50, 60}));
  EXPECT_EQ(order(work_order(in, 2)), (std::vector<int64_t>{10, 20, 60, 50, 40, 30}));
  EXPECT_EQ(order(work_order(in, 8)), (std::vector<int64_t>{10, 20, 30, 40, 50, 60}));
}
