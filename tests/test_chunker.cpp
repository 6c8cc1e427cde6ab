// The chunker, rule by rule (headings, sentences, joined lines, running headers, budgets, long
// sentences, overlap, blocks kept whole, cohesion, invalid UTF-8), then on the real documents with
// the real tokenizer: offsets round-trip, budgets hold, cuts land on sentence or paragraph ends.
#include <gtest/gtest.h>

#include "pipeline/token_counter.h"

#include <cstdio>
#include <random>

#include "chunker/chunker.h"
#include "chunker/document.h"
#include "chunker/terms.h"
#include "engine/embedded_data.h"
#include "engine/tokenizer.h"
#include "tests/test_support.h"

using namespace abridge;
using namespace abridge::chunker;

namespace {

// A stand-in tokenizer: a run of ASCII letters/digits is one token, any other non-space character
// one token. Near-additive, like BPE, and cheap.
class ToyCounter : public TokenCounter {
 public:
  size_t count(std::string_view text) const override {
    size_t n = 0;
    bool in_word = false;
    for (unsigned char c : text) {
      const bool word = std::isalnum(c) != 0;
      if ((c & 0xC0) == 0x80) continue;  // UTF-8 continuation byte
      if (word) {
        if (!in_word) ++n;
      } else if (c != ' ' && c != '\n' && c != '\t') {
        ++n;
      }
      in_word = word;
    }
    return n;
  }
};

// Costs more for longer texts than the sum of their parts: the chunker's summed estimate is
// optimistic and the exact recount must move cuts back.
class SuperAdditiveCounter : public ToyCounter {
 public:
  size_t count(std::string_view text) const override {
    const size_t n = ToyCounter::count(text);
    return n + n / 8;
  }
};

// The pipeline's counter over the real tokenizer (documents are encoded plain).
using RealCounter = abridge::pipeline::TokenizerCounter;

const engine::Tokenizer& real_tokenizer() {
  static const engine::Tokenizer tok = engine::Tokenizer::from_json(engine::bundled_tokenizer_json());
  return tok;
}

Options budget(size_t max_tokens, size_t overlap = 0) {
  Options o;
  o.max_tokens = max_tokens;
  o.overlap_tokens = overlap;
  return o;
}

// The invariants every chunking must keep.
void expect_invariants(std::string_view text, const std::vector<Chunk>& chunks, const TokenCounter& counter,
                       const Options& options) {
  std::string joined;
  size_t pos = 0;
  for (const Chunk& c : chunks) {
    ASSERT_EQ(c.start, pos);
    ASSERT_LT(c.start, c.end);
    ASSERT_LE(c.context_start, c.start);
    joined.append(text.substr(c.start, c.end - c.start));
    pos = c.end;
    EXPECT_LE(c.tokens, options.max_tokens);
    EXPECT_EQ(c.tokens, counter.count(c.text)) << c.text;
    EXPECT_FALSE(c.text.empty());
  }
  if (!chunks.empty()) {
    EXPECT_EQ(pos, text.size());
    EXPECT_EQ(joined, text);
    EXPECT_EQ(chunks.back().cut, CutKind::kEnd);
  }
}

std::vector<std::string> starts_as_text(std::string_view text, const std::vector<size_t>& ends) {
  std::vector<std::string> out;
  size_t a = 0;
  for (size_t e : ends) {
    out.emplace_back(text.substr(a, e - a));
    a = e;
  }
  out.emplace_back(text.substr(a));
  return out;
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

}  // namespace

TEST(ChunkerUtf8, RejectNamesTheOffsetOrReplaces) {
  const std::string text = "Good text here. More \xFF\xFE text follows.";
  ToyCounter counter;
  try {
    chunk_text(text, counter, budget(64));
    FAIL() << "no error";
  } catch (const InvalidUtf8Error& e) {
    EXPECT_EQ(e.offset(), 21u);
    EXPECT_STREQ(e.what(), "invalid UTF-8 at byte 21");
  }
  Options o = budget(64);
  o.invalid_utf8 = InvalidUtf8::kReplace;
  const auto chunks = chunk_text(text, counter, o);
  expect_invariants(text, chunks, counter, o);
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].text, "Good text here. More \xEF\xBF\xBD\xEF\xBF\xBD text follows.");
}

TEST(Chunker, EmptyAndWhitespaceGiveNoChunks) {
  ToyCounter counter;
  EXPECT_TRUE(chunk_text("", counter, budget(16)).empty());
  EXPECT_TRUE(chunk_text(" \n\r\n\t\f \n", counter, budget(16)).empty());
  EXPECT_TRUE(chunk_text("\x1B[32m\x1B[m\n", counter, budget(16)).empty());
  EXPECT_THROW(chunk_text("x", counter, budget(4)), Error);
  EXPECT_THROW(chunk_text("x", counter, budget(16, 8)), Error);
}

TEST(ChunkerHeadings, RecognizesHeadingForms) {
  struct Case {
    const char* line;
    Heading::Family family;
    int level;
  };
  for (const Case& c : std::initializer_list<Case>{{"# Title", Heading::kMarkdown, 1},
                                                   {"### Deep ###", Heading::kMarkdown, 3},
                                                   {"1 Introduction and preliminaries", Heading::kNumbered, 1},
                                                   {"3. Results", Heading::kNumbered, 1},
                                                   {"3.2 Latency", Heading::kNumbered, 2},
                                                   {"6.3.7 一些典型的注意事项", Heading::kNumbered, 3},
                                                   {"What is R? maybe", Heading::kNumbered, -1},
                                                   {"第一章 总则", Heading::kChineseChapter, 2},
                                                   {"第三节 适用范围", Heading::kChineseChapter, 3},
                                                   {"一、总体要求", Heading::kChineseEnum, 1},
                                                   {"（二）工作目标", Heading::kChineseEnum, 2},
                                                   {"Abstract", Heading::kTitle, 1},
                                                   {"Executive Summary:", Heading::kTitle, 1},
                                                   {"CONCLUSIONS", Heading::kTitle, 1},
                                                   {"摘要", Heading::kTitle, 1},
                                                   {"结论：", Heading::kTitle, 1},
                                                   {"SUMMARY OF THE INVENTION", Heading::kTitle, 1},
                                                   {"ADVENTURE I. A SCANDAL IN BOHEMIA", Heading::kTitle, 1}}) {
    const auto h = parse_heading(c.line);
    if (c.level < 0) {
      EXPECT_FALSE(h) << c.line;
      continue;
    }
    ASSERT_TRUE(h) << c.line;
    EXPECT_EQ(h->family, c.family) << c.line;
    EXPECT_EQ(h->level, c.level) << c.line;
  }
  EXPECT_EQ(parse_heading("## Two words  ")->title, "Two words");
  EXPECT_EQ(parse_heading("3.2 Latency")->title, "3.2 Latency");
  // Not headings: list items that are sentences, decimals, tables of contents, prose.
  for (const char* line : {"1. Create a separate sub-directory, say work, to hold data files on which you will use R for",
                           "3.14 is the value of pi", "1 2 3 4", "1.1 The R environment . . . . . . . 2",
                           "2. Start the R program with the command.", "一、要加强管理；", "#hashtag", "12345",
                           "1 x <- c(1, 2)", "第一章节很好的书籍描述了这个问题。",
                           // Capitals that are table or list entries, or prose; a mixed-case line
                           // that is no known section name.
                           "BATCH", "DHCP", "DNS (BIND)", "THE END.", "NOTE: SEE BELOW.", "MAX_SIZE = 3",
                           "Field of the Invention", "Summary statistics were computed for each site.",
                           "摘要如下所述的内容很长"})
    EXPECT_FALSE(parse_heading(line)) << line;
}

TEST(ChunkerHeadings, SectionPathsAndHeadingsStartChunks) {
  ToyCounter counter;
  std::string doc = "Preamble text. It is short.\n\n";
  for (const char* h : {"# Methods", "## Setup", "### Hardware", "## Procedure", "# Results", "## Latency"}) {
    doc += std::string(h) + "\n\n";
    doc += repeat("Measurements were taken carefully and written down. ", 4) + "\n\n";
  }
  const Options o = budget(60);
  const auto chunks = chunk_text(doc, counter, o);
  expect_invariants(doc, chunks, counter, o);
  std::vector<std::string> sections;
  for (const Chunk& c : chunks) sections.push_back(c.section);
  // Every section fits, so every chunk after the preamble starts with its heading.
  for (size_t i = 1; i < chunks.size(); ++i) EXPECT_EQ(chunks[i].text[0], '#') << chunks[i].text;
  EXPECT_NE(std::find(sections.begin(), sections.end(), "Methods > Setup > Hardware"), sections.end());
  EXPECT_NE(std::find(sections.begin(), sections.end(), "Methods > Procedure"), sections.end());
  EXPECT_NE(std::find(sections.begin(), sections.end(), "Results > Latency"), sections.end());
  EXPECT_EQ(chunks[0].section, "");

  // Numbered and Chinese schemes nest the same way.
  const std::string zh = "第一章 总则\n\n一、目的\n\n为了规范管理，制定本办法。\n\n（一）范围\n\n本办法适用于全体人员。\n\n"
                         "第二章 职责\n\n各部门负责执行。\n";
  const auto zc = chunk_text(zh, counter, budget(16));
  expect_invariants(zh, zc, counter, budget(16));
  std::vector<std::string> zs;
  for (const Chunk& c : zc) zs.push_back(c.section);
  EXPECT_NE(std::find(zs.begin(), zs.end(), "第一章 总则 > 一、目的 > （一）范围"), zs.end()) << zc.size();
  EXPECT_EQ(zc.back().section, "第二章 职责");
  EXPECT_EQ(zc.back().text.rfind("第二章 职责", 0), 0u) << zc.back().text;  // a top-level heading starts a chunk

  const std::string num = "3 Results\nWe ran it.\n3.2 Latency\nIt was fast.\n4 Discussion\nGood.\n";
  const auto nc = chunk_text(num, counter, budget(64));
  ASSERT_EQ(nc.size(), 2u);  // the top-level "4 Discussion" starts a chunk even though all fits
  EXPECT_EQ(nc[0].section, "3 Results");
  EXPECT_EQ(nc[1].section, "4 Discussion");
}

TEST(ChunkerHeadings, NumberedListIsNotAHeading) {
  ToyCounter counter;
  const std::string doc = "Steps follow.\n1. Create a directory\n$ mkdir work\n2. Start the program\n$ R\n3. Quit\n";
  const auto chunks = chunk_text(doc, counter, budget(64));
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].section, "");
}

TEST(ChunkerSentences, English) {
  const std::string text =
      "Dr. Watson met Mr. Holmes at 3.15 p.m. on Baker St. yesterday. He said, e.g. the value 3.14 is at "
      "www.example.com/a.b today. Was it? \"Yes!\" he cried. J. R. R. Tolkien wrote it. The end... Then more.";
  const auto parts = starts_as_text(text, split_sentences(text));
  const std::vector<std::string> want = {
      "Dr. Watson met Mr. Holmes at 3.15 p.m. on Baker St. yesterday. ",
      "He said, e.g. the value 3.14 is at www.example.com/a.b today. ", "Was it? ", "\"Yes!\" he cried. ",
      "J. R. R. Tolkien wrote it. ", "The end... ", "Then more."};
  EXPECT_EQ(parts, want);
  // A line break is a space; a list number is not a sentence end.
  EXPECT_EQ(starts_as_text("One line\nbroken. Next\n1. item", split_sentences("One line\nbroken. Next\n1. item")).size(), 2u);
}

TEST(ChunkerSentences, ChineseJapaneseAndMixed) {
  const std::string zh = "他来了。你好！真的吗？是的；“走吧。”他说。好……再见";
  const auto parts = starts_as_text(zh, split_sentences(zh));
  const std::vector<std::string> want = {"他来了。", "你好！", "真的吗？", "是的；", "“走吧。”", "他说。", "好……", "再见"};
  EXPECT_EQ(parts, want);
  const std::string ja = "今日は晴れです。「行きましょう！」と言った。";
  EXPECT_EQ(starts_as_text(ja, split_sentences(ja)).size(), 2u);
  const std::string mixed = "We use Qwen3 模型。It works well. 效果很好！Done.";
  const auto m = starts_as_text(mixed, split_sentences(mixed));
  const std::vector<std::string> want_m = {"We use Qwen3 模型。", "It works well. ", "效果很好！", "Done."};
  EXPECT_EQ(m, want_m);
}

TEST(ChunkerClean, JoinsLinesBrokenInsideSentences) {
  EXPECT_EQ(clean_text("The quick brown fox jumps over the lazy dog and then it runs far away into the\n"
                       "forest where noth-\ning can see it any more at all, not even the old owl who lives\n"
                       "there.\nA new sentence on a new line.\n\n\n\nNew paragraph.\r\n"),
            "The quick brown fox jumps over the lazy dog and then it runs far away into the forest where "
            "nothing can see it any more at all, not even the old owl who lives there.\n"
            "A new sentence on a new line.\n\nNew paragraph.");
  // CJK: no space; form feeds and escape codes gone.
  EXPECT_EQ(clean_text("这是一个很长的句子，被排版软件在这里断开了，然后继续写到下一行\n的开头。\f\x1B[32m第二页\x1B[m。"),
            "这是一个很长的句子，被排版软件在这里断开了，然后继续写到下一行的开头。\n\n第二页。");
  // Code fences and tables keep their lines.
  EXPECT_EQ(clean_text("Text before it\n```\nint x;\n\n  return x;\n```\n| a | b |\n| 1 | 2 |\n"),
            "Text before it\n```\nint x;\n\n  return x;\n```\n| a | b |\n| 1 | 2 |");
}

TEST(ChunkerRunningLines, DroppedFromTextKeptInSpans) {
  std::string doc;
  for (int page = 1; page <= 6; ++page) {
    if (page > 1) doc += "\f";
    doc += "ACME Annual Report 2024\n\n";
    const std::string topic[] = {"apples", "bridges", "comets", "dunes", "eagles", "ferns"};
    doc += "Page " + std::to_string(page) + " body text talks about " + topic[page - 1] +
           " in some detail, and the sentence goes on across the page\n";
    doc += "end with more words on " + topic[page - 1] + ". Another sentence here.\n\n" + std::to_string(page) + "\n";
  }
  const auto running = find_running_lines(doc);
  EXPECT_EQ(running.size(), 12u);  // the title and the page number on 6 pages
  const std::string clean = clean_text(doc);
  EXPECT_EQ(clean.find("ACME"), std::string::npos) << clean;
  EXPECT_NE(clean.find("Page 3 body"), std::string::npos);
  ToyCounter counter;
  const auto chunks = chunk_text(doc, counter, budget(40));
  expect_invariants(doc, chunks, counter, budget(40));
  for (const Chunk& c : chunks) EXPECT_EQ(c.text.find("ACME"), std::string::npos);
  Options keep = budget(40);
  keep.drop_running_lines = false;
  EXPECT_NE(clean_text(doc, keep).find("ACME"), std::string::npos);
}

TEST(ChunkerBudget, LongSentencesSplitAtClausesThenSpacesThenCharacters) {
  ToyCounter counter;
  const Options o = budget(20);
  std::string clauses = "It began";
  for (int i = 0; i < 30; ++i) clauses += ", and then clause " + std::to_string(i) + " came";
  clauses += ".";
  auto chunks = chunk_text(clauses, counter, o);
  expect_invariants(clauses, chunks, counter, o);
  ASSERT_GT(chunks.size(), 3u);
  for (size_t i = 0; i + 1 < chunks.size(); ++i) EXPECT_EQ(chunks[i].cut, CutKind::kClause) << i;

  const std::string words = repeat("word ", 100);
  chunks = chunk_text(words, counter, o);
  expect_invariants(words, chunks, counter, o);
  for (size_t i = 0; i + 1 < chunks.size(); ++i) EXPECT_EQ(chunks[i].cut, CutKind::kSpace) << i;

  const std::string cjk = repeat("长", 300);  // no punctuation, no spaces
  chunks = chunk_text(cjk, counter, o);
  expect_invariants(cjk, chunks, counter, o);
  EXPECT_EQ(chunks.size(), 15u);
  for (size_t i = 0; i + 1 < chunks.size(); ++i) EXPECT_EQ(chunks[i].cut, CutKind::kChar) << i;
}

TEST(ChunkerBudget, ExactRecountMovesCutsBack) {
  SuperAdditiveCounter counter;
  std::string doc;
  for (int i = 0; i < 200; ++i) doc += "Sentence number " + std::to_string(i) + " has a few words in it. ";
  for (size_t max : {16u, 40u, 100u, 333u}) {
    const auto chunks = chunk_text(doc, counter, budget(max));
    expect_invariants(doc, chunks, counter, budget(max));
    for (size_t i = 0; i + 1 < chunks.size(); ++i) EXPECT_EQ(chunks[i].cut, CutKind::kSentence);
  }
}

TEST(ChunkerBudget, OverlapRepeatsTheEndOfThePreviousChunk) {
  ToyCounter counter;
  std::string doc;
  for (int i = 0; i < 60; ++i) doc += "Fact " + std::to_string(i) + " is stated plainly. ";
  const Options o = budget(40, 12);
  const auto chunks = chunk_text(doc, counter, o);
  expect_invariants(doc, chunks, counter, o);
  ASSERT_GT(chunks.size(), 2u);
  for (size_t i = 1; i < chunks.size(); ++i) {
    EXPECT_LT(chunks[i].context_start, chunks[i].start);
    EXPECT_GE(chunks[i].context_start, chunks[i - 1].start);
    const std::string repeated(doc.substr(chunks[i].context_start, chunks[i].start - chunks[i].context_start));
    EXPECT_LE(counter.count(repeated), 12u);
    EXPECT_EQ(chunks[i].text.rfind(repeated.substr(0, 8), 0), 0u) << chunks[i].text;
  }
  // A last sentence longer than the overlap: its tail words are repeated.
  const std::string longs = repeat("This sentence is long enough to exceed the overlap on its own. ", 8);
  const auto lc = chunk_text(longs, counter, budget(32, 4));
  expect_invariants(longs, lc, counter, budget(32, 4));
  for (size_t i = 1; i < lc.size(); ++i) EXPECT_LT(lc[i].context_start, lc[i].start);
}

TEST(ChunkerBlocks, ListsCodeAndTablesStayWholeWhereTheyFit) {
  ToyCounter counter;
  std::string doc = repeat("Intro sentence with words. ", 6) + "\n\n";
  doc += "- first item of the list\n- second item here\n- third item\n- fourth item\n\n";
  doc += repeat("Middle sentence with words. ", 6) + "\n\n";
  doc += "```\nfor (i in 1:10) {\n  print(i)\n}\n```\n\n";
  doc += repeat("More prose follows here. ", 6) + "\n\n| col | val |\n|-----|-----|\n| a | 1 |\n| b | 2 |\n\nEnd.\n";
  const Options o = budget(40);
  const auto chunks = chunk_text(doc, counter, o);
  expect_invariants(doc, chunks, counter, o);
  auto whole = [&](const std::string& first, const std::string& last) {
    const size_t a = doc.find(first), b = doc.find(last);
    for (const Chunk& c : chunks) {
      const bool has_a = c.start <= a && a < c.end, has_b = c.start <= b && b < c.end;
      if (has_a || has_b) {
        EXPECT_TRUE(has_a && has_b) << first << " / " << last;
        return;
      }
    }
  };
  whole("- first", "- fourth");
  whole("for (i", "  print");
  whole("| col", "| b |");
}

TEST(ChunkerCohesion, CutsWhereTheTopicChanges) {
  ToyCounter counter;
  // One paragraph (no structural hint): five sentences about cats, then five about the stock market.
  std::string doc;
  for (const char* s : {"Cats sleep most of the day in warm sunny spots.", "A cat grooms its fur with a rough tongue.",
                        "Kittens learn hunting from their mother cat.", "Cats purr when content and sometimes when hurt.",
                        "Whiskers help a cat judge narrow gaps.", "Stock markets fell sharply on Monday morning.",
                        "Investors sold shares as bond yields rose.", "The market index lost three percent by noon.",
                        "Traders expect more volatility in stock prices.", "Shares of banks led the market decline."})
    doc += std::string(s) + " ";
  const size_t topic_change = doc.find("Stock markets");
  const Options o = budget(75);  // the whole is ~105 toy tokens: one cut, anywhere from half full
  const auto chunks = chunk_text(doc, counter, o);
  expect_invariants(doc, chunks, counter, o);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].end, topic_change) << chunks[0].text;
}

TEST(ChunkerProperties, RandomTextKeepsInvariantsAndIsDeterministic) {
  std::mt19937 rng(7);
  const std::vector<std::string> pieces = {"word ", "Dr. ", "end. ", "\n", "\n\n", "\f", "# Head\n", "1.2 Title\n",
                                           "，", "。", "中文", "- item\n", "```\n", "| t |\n", "\r\n", "e.g. ",
                                           "\x1B[31m", "   ", "long-\n", "?! ", "第一章 开始\n", "%\n"};
  ToyCounter counter;
  for (int trial = 0; trial < 300; ++trial) {
    std::string doc;
    const int n = static_cast<int>(rng() % 200);
    for (int i = 0; i < n; ++i) doc += pieces[rng() % pieces.size()];
    const size_t max_tokens = 8 + rng() % 40, overlap = rng() % 4;
    const Options o = budget(max_tokens, overlap);
    SCOPED_TRACE(::testing::PrintToString(doc) + " max_tokens " + std::to_string(o.max_tokens));
    const auto a = chunk_text(doc, counter, o);
    expect_invariants(doc, a, counter, o);
    const auto b = chunk_text(doc, counter, o);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].text, b[i].text);
  }
}

// --- The real documents, with the real tokenizer ---

namespace {

char32_t last_char(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i == 0) return 0;
  --i;
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return b;
  char32_t cp = b & (b >= 0xF0 ? 0x07 : b >= 0xE0 ? 0x0F : 0x1F);
  for (size_t k = i + 1; k < s.size(); ++k) cp = cp << 6 | (static_cast<unsigned char>(s[k]) & 0x3F);
  return cp;
}

bool is_end_mark(char32_t c) {
  return std::u32string_view(U".!?。！？；…:：").find(c) != std::u32string_view::npos;
}

// Judged from the texts, independently of the chunker's own classification: the cut follows a
// sentence end, a blank line or page break, a separator line, or precedes a heading or list item.
bool cut_on_sentence_or_paragraph(const std::string& doc, const Chunk& c, const Chunk& next) {
  std::string_view text = c.text;
  for (int k = 0; k < 3 && std::u32string_view(U"\"')]”’」』）》").find(last_char(text)) != std::u32string_view::npos; ++k) {
    size_t i = text.size();  // drop the last character
    while (i > 0 && (static_cast<unsigned char>(text[i - 1]) & 0xC0) == 0x80) --i;
    text = text.substr(0, i > 0 ? i - 1 : 0);
  }
  if (is_end_mark(last_char(text))) return true;
  // Blank line or page break in the original bytes just before the cut.
  size_t p = c.end;
  int newlines = 0;
  while (p > c.start && std::isspace(static_cast<unsigned char>(doc[p - 1]))) {
    if (doc[p - 1] == '\n') ++newlines;
    if (doc[p - 1] == '\f') return true;
    --p;
  }
  if (newlines >= 2) return true;
  const std::string last_line = c.text.substr(c.text.find_last_of('\n') == std::string::npos ? 0 : c.text.find_last_of('\n') + 1);
  if (std::none_of(last_line.begin(), last_line.end(), [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || (ch & 0x80); }))
    return true;  // a separator line such as "%"
  const std::string_view head = next.text;
  if (!next.section.empty() && head.substr(0, std::min<size_t>(head.size(), 120)).find(next.section.substr(next.section.rfind('>') == std::string::npos ? 0 : next.section.rfind('>') + 2)) == 0)
    return true;  // the next chunk opens with its heading
  for (std::string_view bullet : {"• ", "- ", "* ", "1. "})
    if (head.substr(0, bullet.size()) == bullet) return true;
  return false;
}

// Otherwise, the cut may fall at the end of a line that the model sees as a line of its own (a
// table-of-contents entry, a line of code or of a poem): the whole document's cleaned text has the
// two lines on either side of the cut separated by a line break, not joined into one sentence.
bool cut_on_kept_line_end(const std::string& clean, const Chunk& c, const Chunk& next) {
  const size_t nl = c.text.find_last_of('\n');
  const std::string tail = c.text.substr(nl == std::string::npos ? 0 : nl + 1);
  const std::string head = next.text.substr(0, next.text.find('\n'));
  return clean.find(tail + "\n" + head) != std::string::npos;
}

}  // namespace

TEST(ChunkerRealTexts, RoundTripBudgetsAndBoundaries) {
  const RealCounter counter(real_tokenizer());
  for (const char* name : {"sherlock-pg1661.txt", "tang300.txt", "R-intro.txt", "debian-edu-bookworm-manual.zh-cn.txt"}) {
    std::string doc = abridge::testing::read_file(abridge::testing::source_path(std::string("tests/data/texts/") + name));
    if (doc.rfind("\xEF\xBB\xBF", 0) == 0) doc.erase(0, 3);  // as read_text_file reads it
    const std::string clean = clean_text(doc);
    for (size_t max : {256u, 1024u}) {
      const Options o = budget(max);
      const auto chunks = chunk_text(doc, counter, o);
      expect_invariants(doc, chunks, counter, o);
      size_t strict = 0, lines = 0;
      std::vector<std::string> bad;
      for (size_t i = 0; i + 1 < chunks.size(); ++i) {
        if (cut_on_sentence_or_paragraph(doc, chunks[i], chunks[i + 1])) ++strict;
        else if (cut_on_kept_line_end(clean, chunks[i], chunks[i + 1])) ++lines;
        else if (bad.size() < 3) bad.push_back(chunks[i].text.substr(chunks[i].text.size() > 60 ? chunks[i].text.size() - 60 : 0));
      }
      const double cuts = static_cast<double>(std::max<size_t>(chunks.size() - 1, 1));
      const double fraction = static_cast<double>(strict + lines) / cuts;
      std::printf("  %-38s max %4zu: %4zu chunks; cuts on sentence/paragraph ends %5.1f%%, on kept line ends %4.1f%%\n",
                  name, max, chunks.size(), 100.0 * static_cast<double>(strict) / cuts,
                  100.0 * static_cast<double>(lines) / cuts);
      EXPECT_GE(fraction, 0.98) << name << " " << max << (bad.empty() ? "" : ": ..." + bad[0]);
    }
  }
}

TEST(ChunkerRealTexts, PdfTextHeadingsHeadersAndOverlap) {
  const RealCounter counter(real_tokenizer());
  const std::string doc = abridge::testing::read_file(abridge::testing::source_path("tests/data/texts/R-intro.txt"));
  // Running headers ("Chapter 1: Introduction and preliminaries") and page numbers are dropped.
  const auto running = find_running_lines(doc);
  EXPECT_GT(running.size(), 150u);
  const Options o = budget(1024, 128);
  const auto chunks = chunk_text(doc, counter, o);
  expect_invariants(doc, chunks, counter, o);
  bool saw_chapter_2 = false;
  for (const Chunk& c : chunks) {
    EXPECT_EQ(c.text.find("Chapter 1: Introduction and preliminaries"), std::string::npos);
    EXPECT_EQ(c.text.find('\f'), std::string::npos);
    if (doc.compare(c.start, 43, "2 Simple manipulations; numbers and vectors") == 0) {
      saw_chapter_2 = true;
      EXPECT_EQ(c.section, "2 Simple manipulations; numbers and vectors");
    }
  }
  EXPECT_TRUE(saw_chapter_2);  // a top-level heading starts a chunk
  // A sentence broken over a page break is joined: "A few of these are built" + "into the base R".
  const std::string clean = clean_text(doc);
  EXPECT_NE(clean.find("A few of these are built into the base R environment"), std::string::npos);

  const std::string zh = abridge::testing::read_file(abridge::testing::source_path("tests/data/texts/debian-edu-bookworm-manual.zh-cn.txt"));
  const std::string zclean = clean_text(zh);
  EXPECT_EQ(zclean.find("25 / 92"), std::string::npos);
  EXPECT_NE(zclean.find("6.3.7 一些典型的注意事项"), std::string::npos);
}

// --- The document model (chunker/document.h) ---

TEST(ChunkerDocument, GluedHeadingsAreSplitOff) {
  // As PDF extraction gives a paper: numbered headings in capitals at the ends of paragraphs.
  const std::string text =
      "1 INTRODUCTION\n"
      "Novelty detection separates unseen samples from the training distribution. We propose a detector.\n"
      "It is evaluated on hard benchmarks and works well in them. 3 METHODOLOGY\n"
      "In this section we motivate the use of blurred data. It helps. 3.1 GENERATING BLURRED DATA\n"
      "Blurred images act as adversarial examples for the detector.\n"
      "We looked at Section 3. 4 of the runs failed and were repeated.\n";
  const Document doc(text, Options{});
  std::vector<std::string> titles;
  for (const Heading& h : doc.headings()) titles.push_back(h.title);
  const std::vector<std::string> want = {"1 INTRODUCTION", "3 METHODOLOGY", "3.1 GENERATING BLURRED DATA"};
  EXPECT_EQ(titles, want);
  // The heading's line starts at its first byte; the paragraph's line ends before it.
  const size_t h = text.find("3 METHODOLOGY");
  const size_t li = doc.line_of(h);
  EXPECT_EQ(doc.lines()[li].begin, h);
  EXPECT_EQ(doc.lines()[li].kind, LineKind::kHeading);
  EXPECT_EQ(text.substr(doc.lines()[li - 1].begin, doc.lines()[li - 1].end - doc.lines()[li - 1].begin),
            "It is evaluated on hard benchmarks and works well in them.");
  // The cleaned text gives the heading a line of its own; chunks cut there and are named by it.
  EXPECT_NE(clean_text(text).find("in them.\n3 METHODOLOGY\nIn this section"), std::string::npos) << clean_text(text);
  ToyCounter counter;
  const auto chunks = chunk_text(text, counter, budget(1000));
  expect_invariants(text, chunks, counter, budget(1000));
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[1].start, h);
  EXPECT_EQ(chunks[1].section, "3 METHODOLOGY");
}

TEST(ChunkerDocument, SectionsNestAndTile) {
  const std::string text =
      "Title page text here.\n\n"
      "Abstract\n\nWe study things.\n\n"
      "1 Introduction\n\nThings matter.\n\n"
      "1.1 Scope\n\nSome of them.\n\n"
      "2 Results\n\nThey work.\n\n"
      "REFERENCES\n\n[1] A paper.\n";
  const Document doc(text, Options{});
  const auto& sections = doc.sections();
  ASSERT_EQ(sections.size(), 5u);
  std::vector<std::string> paths;
  for (size_t s = 0; s < sections.size(); ++s) paths.push_back(doc.section_path(static_cast<int>(s)));
  const std::vector<std::string> want = {"Abstract", "1 Introduction", "1 Introduction > 1.1 Scope", "2 Results",
                                         "REFERENCES"};
  EXPECT_EQ(paths, want);
  // Titles are siblings of the numbered chapters; the top level tiles the text after the title page.
  size_t at = text.find("Abstract");
  for (const Section& s : sections) {
    if (s.depth != 0) {
      EXPECT_EQ(sections[s.parent].heading, 1);
      EXPECT_LE(sections[s.parent].begin, s.begin);
      EXPECT_LE(s.end, sections[s.parent].end);
      continue;
    }
    EXPECT_EQ(s.begin, at);
    at = s.end;
  }
  EXPECT_EQ(at, text.size());
  EXPECT_EQ(sections[2].end, text.find("2 Results"));
}

TEST(ChunkerDocument, LineShapesTitlesPagesAndGaps) {
  const std::string text =
      "《春晓》\n作者：孟浩然\n春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。\n%\n"  // lines 0-4
      "Contents . . . . . . . . 3\n"                                                  // 5
      "> x <- c(1, 2, 3)\n"                                                           // 6
      "12   14   16   18\n"                                                           // 7
      "The first sentence ends here. The second one follows it\n"                     // 8
      "on the next line.\fA new page starts here.\n";                                 // 9, 10
  const Document doc(text, Options{});
  const auto& lines = doc.lines();
  ASSERT_EQ(lines.size(), 11u);
  EXPECT_TRUE(lines[0].title);
  EXPECT_TRUE(lines[1].title);
  EXPECT_FALSE(lines[2].title);
  EXPECT_FALSE(lines[3].title);
  EXPECT_TRUE(lines[5].leaders);
  EXPECT_TRUE(lines[6].code_like);
  EXPECT_TRUE(lines[7].numeric);
  for (size_t li : {2u, 3u, 8u, 9u, 10u})
    EXPECT_FALSE(lines[li].leaders || lines[li].code_like || lines[li].numeric || lines[li].title) << li;
  EXPECT_EQ(doc.page_of(text.find("on the next")), 1u);
  EXPECT_EQ(doc.page_of(text.find("A new page")), 2u);
  // What lies between two excerpts: verses of a poem keep their line break, a separator or a page
  // break makes a paragraph break, sentences of one line a space, CJK sentences nothing.
  const size_t verse1_end = text.find("鸟。") + std::string("鸟。").size();
  EXPECT_EQ(doc.gap(verse1_end, text.find("夜来")), "\n");
  EXPECT_EQ(doc.gap(text.find("多少。") + std::string("多少。").size(), text.find("The first")), "\n\n");
  EXPECT_EQ(doc.gap(text.find("here.") + 5, text.find("The second")), " ");
  EXPECT_EQ(doc.gap(text.find("line.") + 5, text.find("A new page")), "\n\n");
  const Document zh("他来了。你好！\n", Options{});
  EXPECT_EQ(zh.gap(std::string("他来了。").size(), std::string("他来了。").size()), "");
  EXPECT_EQ(zh.gap(std::string("他").size(), std::string("他来了。").size()), "");
  // Sentences of lines, a line break read as a space.
  std::vector<size_t> starts;
  doc.sentence_starts(8, 9, starts);
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_EQ(starts[0], text.find("The second"));
}

TEST(ChunkerTerms, WordsStemsBigramsAndProfile) {
  TermScanner scanner;
  const std::string en = "\xE2\x80\xA2 The vectors' values were computed (see Fig. 2) and it's done.";
  TextProfile p = scanner.scan(en, 0, en.size());
  std::vector<std::string> terms(scanner.terms().begin(), scanner.terms().end());
  const std::vector<std::string> want = {"vector", "value", "comput", "fig"};
  EXPECT_EQ(terms, want);
  EXPECT_EQ(p.begin, en.find("The"));  // the bullet is left out
  EXPECT_EQ(p.end, en.size());
  EXPECT_EQ(p.first, U'T');
  EXPECT_TRUE(p.ends_sentence);
  EXPECT_TRUE(p.starts_sentence);
  EXPECT_FALSE(p.unopened_close);
  EXPECT_EQ(p.words, 10u);  // "2" is no word
  EXPECT_EQ(p.terms, 4u);
  EXPECT_EQ(p.code_marks, 0u);
  EXPECT_TRUE(is_stopword("the"));
  EXPECT_FALSE(is_stopword("vector"));

  // Han bigrams; a line break inside Chinese text joins its halves, punctuation separates.
  const std::string zh = "白日依山\n尽，黄河";
  p = scanner.scan(zh, 0, zh.size());
  terms.assign(scanner.terms().begin(), scanner.terms().end());
  const std::vector<std::string> want_zh = {"白日", "日依", "依山", "山尽", "黄河"};
  EXPECT_EQ(terms, want_zh);
  EXPECT_EQ(p.han, 7u);
  EXPECT_FALSE(p.ends_sentence);

  const std::string code = "x = f(y) + g(z) ) end";
  p = scanner.scan(code, 0, code.size());
  EXPECT_TRUE(p.unopened_close);
  EXPECT_EQ(p.code_marks, 3u);
  EXPECT_FALSE(p.starts_sentence);
  const ScriptCounts n = count_scripts("We use 模型 here");
  EXPECT_EQ(n.han, 2u);
  EXPECT_EQ(n.words, 3u);
}
