// The extractive summarizer: language detection, budgets (recounted with the real tokenizer), spans
// that index the input, sentences from across the document, determinism, diversity against repeated
// sentences, junk lines skipped, a giant sentence cut to fit, and centrality on a synthetic text; then
// the same properties on the real documents under tests/data/texts and samples/.
#include <gtest/gtest.h>

#include "pipeline/token_counter.h"

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "engine/embedded_data.h"
#include "engine/tokenizer.h"
#include "pipeline/extractive.h"
#include "tests/test_support.h"

using namespace abridge;
using namespace abridge::pipeline;

namespace {

// The pipeline's counter over the real tokenizer (documents are encoded plain).
using RealCounter = abridge::pipeline::TokenizerCounter;

const chunker::TokenCounter& counter() {
  static const engine::Tokenizer tok = engine::Tokenizer::from_json(engine::bundled_tokenizer_json());
  static const RealCounter c(tok);
  return c;
}

std::string read_text(const std::string& relative) {
  std::string text = abridge::testing::read_file(abridge::testing::source_path(relative));
  if (text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);
  return text;
}

// Text with escape sequences, whitespace, controls and hyphens removed: what a span and the summary
// must agree on whatever the cleaning joined or dropped.
std::string squeeze(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0x1B && i + 1 < s.size() && s[i + 1] == '[') {
      i += 2;
      while (i < s.size() && !(s[i] >= 0x40 && s[i] <= 0x7E)) ++i;
      continue;
    }
    if (c <= 0x20 || c == 0x7F || c == '-') continue;
    out += static_cast<char>(c);
  }
  return out;
}

// Every property a summary must have, whatever the text.
void check_summary(std::string_view text, const ExtractiveSummary& s, int64_t budget) {
  EXPECT_LE(s.tokens, budget);
  EXPECT_EQ(s.tokens, static_cast<int64_t>(counter().count(s.text)));
  const std::string summary = squeeze(s.text);
  size_t prev_end = 0;
  for (const auto& [b, e] : s.spans) {
    ASSERT_LT(b, e);
    ASSERT_LE(e, text.size());
    EXPECT_GE(b, prev_end) << "spans overlap or are out of order";
    prev_end = e;
    const std::string piece = squeeze(text.substr(b, e - b));
    EXPECT_NE(summary.find(piece), std::string::npos) << "span [" << b << ", " << e << ") not in the summary: " << piece;
  }
  EXPECT_EQ(s.text.empty(), s.spans.empty());
}

TEST(Extractive, LanguageCodes) {
  EXPECT_STREQ(language_code(Language::kEnglish), "en");
  EXPECT_STREQ(language_code(Language::kChinese), "zh");
}

TEST(Extractive, DetectsLanguage) {
  EXPECT_EQ(detect_language("The quick brown fox jumps over the lazy dog."), Language::kEnglish);
  EXPECT_EQ(detect_language("白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"), Language::kChinese);
  // A Chinese manual full of commands is still Chinese; an English text quoting a poem is English.
  EXPECT_EQ(detect_language("运行 apt-get install debian-edu-config 命令来安装配置软件包。"), Language::kChinese);
  EXPECT_EQ(detect_language("The poem 静夜思 by Li Bai is one of the best known poems in the Chinese language, "
                            "learned by children everywhere."),
            Language::kEnglish);
  EXPECT_EQ(detect_language(""), Language::kEnglish);
  EXPECT_EQ(detect_language("12345 ... !!!"), Language::kEnglish);
}

TEST(Extractive, EmptyTextGivesEmptySummary) {
  for (const std::string_view text : {std::string_view(""), std::string_view("   \r\n\t\f  \n")}) {
    const ExtractiveSummary s = summarize_extractive(text, counter());
    EXPECT_TRUE(s.text.empty());
    EXPECT_TRUE(s.spans.empty());
    EXPECT_EQ(s.tokens, 0);
  }
  ExtractiveOptions zero;
  zero.max_tokens = 0;
  EXPECT_TRUE(summarize_extractive("A sentence of several plain words here.", counter(), zero).text.empty());
}

// A topic sentence shares words with every other sentence of its paragraph; the others share words
// only with it. At a budget of one sentence it is the one chosen.
TEST(Extractive, MostCentralSentenceFirst) {
  const std::string topic = "The harbor festival brings boats, music, lanterns, dancers and food to the old town.";
  const std::string text =
      "Fishing boats crowd the harbor long before the sun rises over the water.\n"
      "Volunteers hang paper lanterns along every street of the district.\n"
      "Weather stations recorded heavy rainfall across the northern valleys.\n"
      "Local bands rehearse their music in garages for weeks ahead.\n"
      "Dancers practise traditional steps on the pier every evening.\n" +
      topic +
      "\nStreet vendors sell grilled food and sweet pastries to visitors.\n"
      "The old town walls date from the fourteenth century.\n"
      "Quantum computers manipulate qubits using microwave pulses.\n"
      "Children race paper boats down the flooded gutters after storms.\n";
  ExtractiveOptions opt;
  opt.max_tokens = static_cast<int64_t>(counter().count(topic)) + 2;
  const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
  check_summary(text, s, opt.max_tokens);
  EXPECT_EQ(s.text, topic);
  ASSERT_EQ(s.spans.size(), 1u);
  EXPECT_EQ(text.substr(s.spans[0].first, s.spans[0].second - s.spans[0].first), topic);
}

// A sentence repeated many times is central, but it is taken once: no two chosen sentences are
// near-duplicates, even with diversity 0 (pure centrality).
TEST(Extractive, NoNearDuplicates) {
  const std::string repeated = "The committee approved the new budget for the city library after a long debate.";
  const std::vector<std::string> others = {
      "The library will extend its opening hours on weekends starting next month.",
      "Several members argued that the budget for the city parks was too small.",
      "A long debate about parking fees ended without any decision.",
      "The mayor thanked the committee for its careful work on the budget.",
      "New computers for the library reading rooms will arrive in the spring.",
      "Critics said the debate had ignored the needs of the older districts.",
  };
  std::string text;
  for (int k = 0; k < 30; ++k) {
    text += repeated + (k % 3 == 2 ? "\n\n" : " ");
    if (k % 5 == 0) text += others[static_cast<size_t>(k / 5)] + " ";
  }
  for (const double diversity : {0.0, 0.3, 0.7}) {
    ExtractiveOptions opt;
    opt.max_tokens = 120;
    opt.diversity = diversity;
    const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
    check_summary(text, s, opt.max_tokens);
    ASSERT_GE(s.spans.size(), 2u) << s.text;
    std::vector<std::string> chosen;
    for (const auto& [b, e] : s.spans) chosen.push_back(text.substr(b, e - b));
    EXPECT_EQ(std::count(chosen.begin(), chosen.end(), repeated), 1) << "diversity " << diversity << ": " << s.text;
    std::sort(chosen.begin(), chosen.end());
    EXPECT_EQ(std::adjacent_find(chosen.begin(), chosen.end()), chosen.end()) << s.text;
  }
}

// Headings, table-of-contents lines, page numbers and code are never part of the summary.
TEST(Extractive, SkipsJunkLines) {
  const std::string text =
      "Table of Contents\n"
      "1 Introduction . . . . . . . . . . . . . . . . . 3\n"
      "2 Vectors and assignment . . . . . . . . . . . . 8\n"
      "\f1 Introduction\n\n"
      "R is an integrated suite of software facilities for data manipulation, calculation and graphical display.\n"
      "It has an effective data handling and storage facility for vectors and arrays.\n"
      "\n"
      "> x <- c(10.4, 5.6, 3.1, 6.4, 21.7)\n"
      "> y <- sum((x - mean(x))^2) / (length(x) - 1)\n"
      "\n"
      "12\n"
      "\f2 Vectors and assignment\n\n"
      "R operates on named data structures, and the simplest such structure is the numeric vector.\n"
      "Vectors can be used in arithmetic expressions, in which case the operations are performed element by element.\n"
      "CHAPTER SUMMARY OF VECTOR STRUCTURES\n";
  ExtractiveOptions opt;
  opt.max_tokens = 1000;  // room for every sentence: only the rules keep lines out
  const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
  check_summary(text, s, opt.max_tokens);
  EXPECT_EQ(s.spans.size(), 4u) << s.text;
  for (const char* junk : {"Contents", ". . .", "<-", "12", "Introduction", "Vectors and assignment", "CHAPTER"})
    EXPECT_EQ(s.text.find(junk), std::string::npos) << junk << " in " << s.text;
  // Sentences of different paragraphs are joined by a newline, of the same one by a space.
  EXPECT_EQ(std::count(s.text.begin(), s.text.end(), '\n'), 1) << s.text;
}

// CRLF, form feeds, escape sequences and PDF line breaks: the summary is clean, the spans index the
// raw input.
TEST(Extractive, SpansIndexTheRawInput) {
  const std::string text =
      "\x1B[1mThe first sentence of this report describes the measure-\r\nment of river levels in spring.\x1B[0m\r\n"
      "Engineers compared the river levels with records from the previous\r\ncentury and found them higher.\r\n"
      "\f\r\nThe second page explains why the river levels rose so quickly during the spring floods.\r\n";
  ExtractiveOptions opt;
  opt.max_tokens = 500;
  const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
  check_summary(text, s, opt.max_tokens);
  ASSERT_EQ(s.spans.size(), 3u) << s.text;
  EXPECT_EQ(s.text,
            "The first sentence of this report describes the measurement of river levels in spring. Engineers "
            "compared the river levels with records from the previous century and found them higher.\n"
            "The second page explains why the river levels rose so quickly during the spring floods.");
  EXPECT_EQ(text.substr(s.spans[2].first, s.spans[2].second - s.spans[2].first),
            "The second page explains why the river levels rose so quickly during the spring floods.");
}

// One giant sentence, far over the budget: cut at a word boundary, marked with "…".
TEST(Extractive, GiantSentenceIsCut) {
  std::string text;
  const std::vector<std::string> words = {"river", "harbor", "lantern", "music", "street", "festival", "boats", "and"};
  for (size_t k = 0; k < 5000; ++k) text += words[(k * 7 + k / 3) % words.size()] + " ";
  for (const int64_t budget : {1, 3, 10, 64, 400}) {
    ExtractiveOptions opt;
    opt.max_tokens = budget;
    const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
    check_summary(text, s, budget);
    if (budget == 1) {
      EXPECT_TRUE(s.text.empty() || s.tokens <= 1);
      continue;
    }
    ASSERT_EQ(s.spans.size(), 1u) << budget;
    EXPECT_EQ(s.spans[0].first, 0u);
    EXPECT_TRUE(s.text.ends_with("\xE2\x80\xA6")) << s.text;
    const std::string cut = s.text.substr(0, s.text.size() - 3);
    EXPECT_EQ(text.substr(0, cut.size()), cut);  // a prefix ending at a word's end
    EXPECT_EQ(text[cut.size()], ' ');
    if (budget >= 64) {
      EXPECT_GE(s.tokens, budget - 4);  // the cut fills the budget
    }
  }
}

TEST(Extractive, GiantChineseSentenceIsCut) {
  std::string text;
  const std::string han = "江南好风景旧曾谙日出江花红胜火春来江水绿如蓝能不忆江南";
  for (int k = 0; k < 200; ++k) text += han;
  ExtractiveOptions opt;
  opt.max_tokens = 50;
  const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
  check_summary(text, s, opt.max_tokens);
  EXPECT_EQ(s.language, Language::kChinese);
  ASSERT_EQ(s.spans.size(), 1u);
  EXPECT_TRUE(s.text.ends_with("\xE2\x80\xA6"));
  EXPECT_GE(s.tokens, 40);
  EXPECT_EQ(text.substr(0, s.spans[0].second), s.text.substr(0, s.text.size() - 3));
}

// Chinese: sentences end at 。！？； and are joined without spaces; lines broken inside a sentence are
// joined without a space.
TEST(Extractive, ChineseSentencesJoinedWithoutSpaces) {
  const std::string text =
      "服务器提供网络服务，包括域名解析和时间同步服务。\n"
      "瘦客户端从服务器启动，并在服务器上运\n行所有程序！\n"
      "无盘工作站也从服务器启动，但在本地运行程序；\n"
      "网络客户端通过网络访问服务器上的文件？\n";
  ExtractiveOptions opt;
  opt.max_tokens = 500;
  const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
  check_summary(text, s, opt.max_tokens);
  EXPECT_EQ(s.language, Language::kChinese);
  EXPECT_EQ(s.spans.size(), 4u);
  EXPECT_EQ(s.text,
            "服务器提供网络服务，包括域名解析和时间同步服务。瘦客户端从服务器启动，并在服务器上运行所有程序！"
            "无盘工作站也从服务器启动，但在本地运行程序；网络客户端通过网络访问服务器上的文件？");
}

// A poem's title and author lines (with escape sequences, as in tang300.txt) are not glued to its first
// verse; a list item's bullet is left out of the sentence and its span.
TEST(Extractive, TitlesAndBullets) {
  const std::string poems =
      "\x1B[32m《登鹳雀楼》\x1B[m\n\x1B[33m作者：王之涣\x1B[m\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。\n%\n"
      "\x1B[32m《春晓》\x1B[m\n\x1B[33m作者：孟浩然\x1B[m\n春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。\n";
  ExtractiveOptions opt;
  opt.max_tokens = 500;
  const ExtractiveSummary s = summarize_extractive(poems, counter(), opt);
  check_summary(poems, s, opt.max_tokens);
  EXPECT_EQ(s.text, "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。");

  const std::string list =
      "The server offers several services to the clients of the school network:\n"
      "• It resolves the names of every machine on the network through DNS.\n"
      "• It gives each client its address and boot options through DHCP.\n";
  const ExtractiveSummary l = summarize_extractive(list, counter(), opt);
  check_summary(list, l, opt.max_tokens);
  ASSERT_EQ(l.spans.size(), 2u) << l.text;  // the line ending with a colon is no candidate
  EXPECT_EQ(list.substr(l.spans[0].first, l.spans[0].second - l.spans[0].first),
            "It resolves the names of every machine on the network through DNS.");
  EXPECT_EQ(l.text.find("\xE2\x80\xA2"), std::string::npos);
}

// Seeded random documents of words, punctuation, CRLF, form feeds, escapes, bullets and Han text:
// whatever the mix and the budget, every property of check_summary() holds.
TEST(Extractive, RandomDocumentsKeepThePromises) {
  const std::vector<std::string> pieces = {
      "river", "Harbor", "lantern", "the", "of", "music", "Street", "festival", "boats", "and", "x", "42",
      ".", ". ", "! ", "? ", ", ", "; ", ": ", "\r\n", "\n", "\n\n", "\f", " ", "  ", "\x1B[1m", "\x1B[m",
      "\xE2\x80\xA2 ", "(see", ")", "=", "--", "-\n", "\"", "白日", "依山尽", "，", "。", "！", "黄河入海流",
      "\xE2\x80\xA6", "Mr.", "e.g.", "3.14", ". . . . 7"};
  std::mt19937 rng(1234);
  int nonempty = 0, eligible = 0;  // documents with some words and a budget of 20 or more
  for (int doc = 0; doc < 150; ++doc) {
    std::string text;
    const size_t n = rng() % 400;
    for (size_t k = 0; k < n; ++k) {
      text += pieces[rng() % pieces.size()];
      if (rng() % 3 != 0) text += ' ';
    }
    ExtractiveOptions opt;
    opt.max_tokens = static_cast<int64_t>(rng() % 200);
    opt.diversity = static_cast<double>(rng() % 11) / 10.0;
    SCOPED_TRACE("document " + std::to_string(doc));
    const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
    check_summary(text, s, opt.max_tokens);
    EXPECT_EQ(summarize_extractive(text, counter(), opt).spans, s.spans);
    if (n >= 20 && opt.max_tokens >= 20) {
      ++eligible;
      nonempty += s.text.empty() ? 0 : 1;
    }
  }
  EXPECT_EQ(nonempty, eligible);
}

// --- The real documents ---

struct Document {
  const char* path;
  Language language;
};

class RealText : public ::testing::TestWithParam<Document> {};

TEST_P(RealText, SummaryHoldsItsPromises) {
  const Document& doc = GetParam();
  const std::string text = read_text(doc.path);
  EXPECT_EQ(detect_language(text), doc.language);
  for (const int64_t budget : {60, 400, 1500}) {
    ExtractiveOptions opt;
    opt.max_tokens = budget;
    const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
    SCOPED_TRACE(std::string(doc.path) + " budget " + std::to_string(budget));
    EXPECT_EQ(s.language, doc.language);
    check_summary(text, s, budget);
    ASSERT_FALSE(s.spans.empty());
    EXPECT_GE(s.tokens, budget / 2) << "the budget is used";
    if (budget >= 400) {
      EXPECT_GE(s.spans.size(), 3u);
      // From across the document, not only its opening.
      EXPECT_GT(s.spans.back().first, text.size() / 10) << s.text;
    }
    // Deterministic.
    const ExtractiveSummary again = summarize_extractive(text, counter(), opt);
    EXPECT_EQ(again.text, s.text);
    EXPECT_EQ(again.spans, s.spans);
    // Sentences, not fragments: each chosen English sentence has a few words, no dot leaders.
    EXPECT_EQ(s.text.find(". . . ."), std::string::npos);
    if (doc.language == Language::kChinese) {
      EXPECT_EQ(s.text.find('\n'), std::string::npos);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Texts, RealText,
                         ::testing::Values(Document{"tests/data/texts/sherlock-pg1661.txt", Language::kEnglish},
                                           Document{"tests/data/texts/R-intro.txt", Language::kEnglish},
                                           Document{"tests/data/texts/tang300.txt", Language::kChinese},
                                           Document{"tests/data/texts/debian-edu-bookworm-manual.zh-cn.txt",
                                                    Language::kChinese},
                                           Document{"samples/a-scandal-in-bohemia.txt", Language::kEnglish},
                                           Document{"samples/tang-poems.zh.txt", Language::kChinese}),
                         [](const auto& info) {
                           std::string name = info.param.path;
                           name = name.substr(name.rfind('/') + 1);
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// The Project Gutenberg header and licence are not the book.
TEST(Extractive, GutenbergLicenceLeftOut) {
  const std::string text = read_text("tests/data/texts/sherlock-pg1661.txt");
  const size_t start = text.find("*** START OF");
  const size_t end = text.find("*** END OF");
  ASSERT_NE(start, std::string::npos);
  ASSERT_NE(end, std::string::npos);
  ExtractiveOptions opt;
  opt.max_tokens = 2000;
  const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
  ASSERT_FALSE(s.spans.empty());
  EXPECT_GT(s.spans.front().first, start);
  EXPECT_LT(s.spans.back().second, end);
  EXPECT_EQ(s.text.find("Gutenberg"), std::string::npos);
}

// Higher diversity gives a summary whose sentences overlap less in words (measured crudely).
TEST(Extractive, DiversityChangesTheChoice) {
  const std::string text = read_text("tests/data/texts/sherlock-pg1661.txt");
  ExtractiveOptions a, b;
  a.diversity = 0.0;
  b.diversity = 0.9;
  const ExtractiveSummary sa = summarize_extractive(text, counter(), a);
  const ExtractiveSummary sb = summarize_extractive(text, counter(), b);
  check_summary(text, sa, a.max_tokens);
  check_summary(text, sb, b.max_tokens);
  EXPECT_NE(sa.spans, sb.spans);
}

}  // namespace
