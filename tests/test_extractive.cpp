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
#include "pipeline/pdf_extract.h"
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
  // The sentences and the spans agree; a sentence's text is its span as the summary shows it; a
  // break between two sentences stands where the document breaks a line.
  ASSERT_EQ(s.sentences.size(), s.spans.size());
  size_t at = 0;  // where the sentence k begins in the summary's text
  for (size_t k = 0; k < s.sentences.size(); ++k) {
    const ExtractedSentence& e = s.sentences[k];
    EXPECT_EQ(std::pair(e.begin, e.end), s.spans[k]);
    // The text is the range cleaned, or (a sentence cut to fit) the range cleaned and "…".
    const std::string range = squeeze(text.substr(e.begin, e.end - e.begin));
    EXPECT_TRUE(squeeze(e.text) == range ||
                (e.text.ends_with("\xE2\x80\xA6") && squeeze(e.text.substr(0, e.text.size() - 3)) == range))
        << e.text << " vs " << range;
    at = s.text.find(e.text, at);
    ASSERT_NE(at, std::string::npos) << e.text;
    ASSERT_GE(e.section, 0);
    ASSERT_LT(static_cast<size_t>(e.section), s.sections.size());
    const SectionSummary& sec = s.sections[static_cast<size_t>(e.section)];
    EXPECT_LE(sec.begin, e.begin);
    EXPECT_LE(e.end, sec.end);
    if (k + 1 < s.sentences.size()) {
      const size_t after = at + e.text.size();
      const size_t next = s.text.find(s.sentences[k + 1].text, after);
      ASSERT_NE(next, std::string::npos);
      const std::string sep = s.text.substr(after, next - after);
      const std::string_view between = text.substr(e.end, s.sentences[k + 1].begin - e.end);
      if (sep.find('\n') != std::string::npos) {
        EXPECT_NE(between.find_first_of("\n\r\f"), std::string_view::npos)
            << "a line break that is not in the text: [" << sep << "] for [" << between << "] in " << s.text;
      }
      at = after;
    }
  }
  // The sections tile the document in order.
  for (size_t t = 0; t + 1 < s.sections.size(); ++t) EXPECT_LE(s.sections[t].end, s.sections[t + 1].begin);
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
  // The document's breaks are kept: a line break within a section, a blank line between the two.
  EXPECT_EQ(s.text,
            "R is an integrated suite of software facilities for data manipulation, calculation and graphical "
            "display.\nIt has an effective data handling and storage facility for vectors and arrays.\n\n"
            "R operates on named data structures, and the simplest such structure is the numeric vector.\nVectors "
            "can be used in arithmetic expressions, in which case the operations are performed element by element.");
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
            "The first sentence of this report describes the measurement of river levels in spring.\nEngineers "
            "compared the river levels with records from the previous century and found them higher.\n\n"
            "The second page explains why the river levels rose so quickly during the spring floods.");
  EXPECT_EQ(s.sentences[2].first_page, 2u);  // after the form feed
  EXPECT_EQ(s.sentences[0].last_page, 1u);
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

// Chinese: sentences end at 。！？；, sentences of one line are joined without spaces, lines broken
// inside a sentence are joined without a space, and a sentence that ends a line keeps its line break.
TEST(Extractive, ChineseSentencesAndLines) {
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
            "服务器提供网络服务，包括域名解析和时间同步服务。\n瘦客户端从服务器启动，并在服务器上运行所有程序！\n"
            "无盘工作站也从服务器启动，但在本地运行程序；\n网络客户端通过网络访问服务器上的文件？");
  const std::string one_line = "服务器提供网络服务，包括域名解析和时间同步服务。瘦客户端从服务器启动，并在服务器上运行所有程序！\n";
  const ExtractiveSummary l = summarize_extractive(one_line, counter(), opt);
  check_summary(one_line, l, opt.max_tokens);
  EXPECT_EQ(l.text, one_line.substr(0, one_line.size() - 1));
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
  EXPECT_EQ(s.text, "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。\n\n春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。");

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

// --- Signals: the document's own summary, its sections, its lines ---

// A paper whose body repeats its key terms (its sentences are the most central) and whose abstract
// says the same in fewer, plainer words. Under a budget of about the abstract's length, the
// sentences come from the abstract; under another title ("Preliminaries") the same section loses
// to the body.
std::string paper(const std::string& first_title) {
  return "Lumen: planning nights at shared telescopes\n\n" + first_title +
         "\n\n"
         "We present Lumen, a planner that prepares a night of observations a day ahead.\n"
         "On two observatories it cut idle time by a third.\n"
         "It is open source and runs on a laptop.\n\n"
         "1 Introduction\n\n"
         "Observation requests wait in the telescope queue until the weather allows the observation.\n"
         "The telescope queue orders observation requests by priority, weather and the position of targets.\n"
         "Weather changes force the telescope queue to reorder observation requests during the night.\n"
         "A telescope operator reviews the observation requests in the queue before the night begins.\n\n"
         "2 Method\n\n"
         "Each observation request in the queue has a target, an exposure time and weather limits.\n"
         "The queue assigns observation requests to telescope time slots when the weather forecast allows.\n"
         "Observation requests that miss their weather window return to the telescope queue.\n\n"
         "3 Results\n\n"
         "Over forty nights the queue completed more observation requests than the manual telescope plan.\n"
         "Weather losses in the telescope queue fell because observation requests were reordered early.\n";
}

TEST(Extractive, AbstractIsPreferred) {
  const std::string abstract_text = "We present Lumen, a planner that prepares a night of observations a day ahead. "
                                    "On two observatories it cut idle time by a third. "
                                    "It is open source and runs on a laptop.";
  ExtractiveOptions opt;
  opt.max_tokens = static_cast<int64_t>(counter().count(abstract_text)) + 4;
  for (const char* title : {"Abstract", "ABSTRACT", "Summary", "Executive Summary", "Highlights"}) {
    const std::string text = paper(title);
    const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
    check_summary(text, s, opt.max_tokens);
    SCOPED_TRACE(title);
    EXPECT_EQ(std::count_if(s.sections.begin(), s.sections.end(), [&](const auto& x) { return x.title == title; }), 1);
    const size_t abstract_end = text.find("1 Introduction");
    size_t from_abstract = 0;
    for (const ExtractedSentence& e : s.sentences) from_abstract += e.end <= abstract_end ? 1 : 0;
    EXPECT_GE(from_abstract, 2u) << s.text;
    EXPECT_EQ(from_abstract, s.sentences.size()) << s.text;
  }
  // The control: the same section under a title that promises no summary.
  const std::string text = paper("Preliminaries");
  const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
  check_summary(text, s, opt.max_tokens);
  size_t from_first = 0;
  for (const ExtractedSentence& e : s.sentences) from_first += e.end <= text.find("1 Introduction") ? 1 : 0;
  EXPECT_LT(from_first, s.sentences.size()) << s.text;

  // Chinese: 摘要 the same.
  const std::string zh =
      "引言\n\n"
      "望远镜观测队列按照天气和优先级安排观测请求。天气变化使望远镜观测队列在夜间重新安排观测请求。"
      "望远镜操作员在夜晚开始之前检查观测队列中的观测请求。观测队列把观测请求分配给望远镜时间段。\n\n"
      "摘要\n\n"
      "我们提出一个提前一天准备整夜观测的规划工具。它在两个天文台把空闲时间减少了三分之一。\n";
  ExtractiveOptions zopt;
  zopt.max_tokens = static_cast<int64_t>(counter().count("我们提出一个提前一天准备整夜观测的规划工具。它在两个天文台把空闲时间减少了三分之一。")) + 2;
  const ExtractiveSummary z = summarize_extractive(zh, counter(), zopt);
  check_summary(zh, z, zopt.max_tokens);
  ASSERT_FALSE(z.sentences.empty()) << z.text;
  for (const ExtractedSentence& e : z.sentences) EXPECT_GT(e.begin, zh.find("摘要")) << z.text;
}

// A long document of six chapters, the first far larger than the others and made of sentences that
// all share its words (so that centrality alone would take them all): each chapter is represented.
TEST(Extractive, LongDocumentSectionsAreEachRepresented) {
  std::string text = "# The harbour\n\n";
  const char* boats[] = {"fishing boats", "ferry boats", "sailing boats", "cargo boats", "rowing boats", "police boats"};
  const char* acts[] = {"crowd the harbour quay at dawn", "leave the harbour quay at noon",
                        "return to the harbour quay at dusk", "wait by the harbour quay in storms"};
  for (const char* b : boats)
    for (const char* a : acts) text += std::string("The ") + b + " " + a + " every day of the harbour season.\n";
  const char* chapters[][4] = {
      {"# The market", "Farmers bring cheese, apples and bread to the square on Saturdays.",
       "Prices at the stalls are written on slates in chalk.", "The square empties by two in the afternoon."},
      {"# The school", "Forty pupils learn reading and arithmetic in one stone building.",
       "The teacher rings a brass bell at eight each morning.", "Lessons end with a song before the pupils walk home."},
      {"# The church", "The church tower was rebuilt after the fire of 1821.",
       "Its bells are rung by volunteers for weddings and funerals.", "A painted ceiling shows ships and saints."},
      {"# The mill", "Water from the river turns the wheel of the old mill.",
       "The miller grinds rye and wheat for three villages.", "In dry summers the wheel stands still for weeks."},
      {"# The lighthouse", "A keeper lights the lamp at the headland every evening.",
       "Its beam reaches twenty miles over the sea on clear nights.", "The keeper records the weather in a logbook."}};
  for (const auto& c : chapters) text += std::string("\n") + c[0] + "\n\n" + c[1] + "\n" + c[2] + "\n" + c[3] + "\n";
  ExtractiveOptions opt;
  opt.max_tokens = 240;  // about twelve sentences of the 39: without the coverage reward, three chapters are left out
  const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
  check_summary(text, s, opt.max_tokens);
  ASSERT_EQ(s.sections.size(), 6u);
  std::vector<int> per_section(6, 0);
  for (const ExtractedSentence& e : s.sentences) ++per_section[static_cast<size_t>(e.section)];
  for (size_t t = 0; t < 6; ++t) EXPECT_GE(per_section[t], 1) << s.sections[t].title << ":\n" << s.text;
  EXPECT_EQ(s.sections[0].title, "The harbour");
  EXPECT_EQ(s.sections[5].title, "The lighthouse");
}

// The Chinese sample: selected verses keep the poem's line breaks, poems are set apart by a blank
// line, and every line of the summary is made of whole lines of the document (a long verse broken
// after a comma is joined).
TEST(Extractive, ChineseLineBreaksKept) {
  const std::string text = read_text("samples/tang-poems.zh.txt");
  std::vector<std::string> doc_lines;
  for (size_t at = 0; at < text.size();) {
    size_t nl = text.find('\n', at);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(at, nl - at);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    doc_lines.push_back(line);
    at = nl + 1;
  }
  ExtractiveOptions opt;
  opt.max_tokens = 400;
  const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
  check_summary(text, s, opt.max_tokens);
  size_t lines = 0, blank = 0;
  for (size_t at = 0; at <= s.text.size();) {
    size_t nl = s.text.find('\n', at);
    if (nl == std::string::npos) nl = s.text.size();
    const std::string line = s.text.substr(at, nl - at);
    if (line.empty()) {
      ++blank;
    } else {
      ++lines;
      bool whole = false;
      for (size_t i = 0; i < doc_lines.size() && !whole; ++i) {
        std::string run;
        for (size_t j = i; j < doc_lines.size() && run.size() < line.size() && !whole; ++j)
          whole = (run += doc_lines[j]) == line;
      }
      EXPECT_TRUE(whole) << line;
    }
    at = nl + 1;
  }
  EXPECT_GE(lines, 8u) << s.text;
  EXPECT_GE(blank, 1u) << s.text;
  EXPECT_GT(lines, blank + 1) << "some verses of one poem follow each other:\n" << s.text;
}

// Byte ranges and pages point at the selected sentences; with outline, each top-level section has
// its own summary from its own sentences.
TEST(Extractive, SentencesAndSectionsPointBackToTheDocument) {
  std::string text = "Survey of the harbour district\n\nSUMMARY\n\n"
                     "The survey counted boats, moorings and warehouses in the harbour district.\n"
                     "Most moorings were sound, but two warehouses need new roofs before winter.\n\f";
  text += "1 Boats\n\nInspectors counted one hundred and twelve boats at anchor in the harbour.\n"
          "Most of the boats were fishing boats registered in the town.\n\f"
          "Twenty boats were visitors from other ports along the coast.\n\f";
  text += "2 Warehouses\n\nThe eight warehouses on the quay date from the last century.\n"
          "Two warehouses have roofs that leak after heavy rain.\n"
          "The owners have agreed to repair both roofs before the winter storms.\n";
  ExtractiveOptions opt;
  opt.max_tokens = 120;
  opt.outline = true;
  opt.section_tokens = 40;
  const ExtractiveSummary s = summarize_extractive(text, counter(), opt);
  check_summary(text, s, opt.max_tokens);
  // The title page holds no sentence, so it is no section of its own.
  ASSERT_EQ(s.sections.size(), 3u);
  const std::vector<std::string> titles = {"SUMMARY", "1 Boats", "2 Warehouses"};
  const std::vector<uint32_t> first_pages = {1, 2, 4}, last_pages = {1, 3, 4};
  for (size_t t = 0; t < 3; ++t) {
    const SectionSummary& sec = s.sections[t];
    EXPECT_EQ(sec.title, titles[t]);
    EXPECT_EQ(sec.first_page, first_pages[t]) << t;
    EXPECT_EQ(sec.last_page, last_pages[t]) << t;
    EXPECT_EQ(text.compare(sec.begin, sec.title.size(), sec.title), 0) << t;
    EXPECT_EQ(sec.end, t + 1 < 3 ? s.sections[t + 1].begin : text.size());
    EXPECT_LE(sec.tokens, opt.section_tokens);
    EXPECT_EQ(sec.tokens, static_cast<int64_t>(counter().count(sec.text)));
    // Each section's summary is made of its own sentences.
    EXPECT_FALSE(sec.sentences.empty()) << t;
    for (const ExtractedSentence& e : sec.sentences) {
      EXPECT_EQ(e.section, static_cast<int>(t));
      EXPECT_LE(sec.begin, e.begin);
      EXPECT_LE(e.end, sec.end);
      EXPECT_EQ(text.substr(e.begin, e.end - e.begin), e.text);
      EXPECT_NE(sec.text.find(e.text), std::string::npos);
    }
  }
  // Each selected sentence's range is exactly the sentence, and its pages are the form feeds' count.
  std::vector<ExtractedSentence> all = s.sentences;
  for (const SectionSummary& sec : s.sections) all.insert(all.end(), sec.sentences.begin(), sec.sentences.end());
  for (const ExtractedSentence& e : all) {
    EXPECT_EQ(text.substr(e.begin, e.end - e.begin), e.text);
    const auto feeds = static_cast<uint32_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(e.begin), '\f'));
    EXPECT_EQ(e.first_page, feeds + 1) << e.text;
    EXPECT_EQ(e.last_page, e.first_page);
  }
  // Without outline, no section summaries (the sections are still listed).
  opt.outline = false;
  const ExtractiveSummary plain = summarize_extractive(text, counter(), opt);
  ASSERT_EQ(plain.sections.size(), 3u);
  for (const SectionSummary& sec : plain.sections) EXPECT_TRUE(sec.text.empty() && sec.sentences.empty());
  EXPECT_EQ(plain.text, s.text);
}

// A real PDF: the pages of the sentences and of the top-level sections are the PDF's pages (its
// text has a form feed between pages), each sentence's start lies on its first page, and the outline
// follows the chapters in page order.
TEST(Extractive, PagesOfARealPdf) {
  const PdfText pdf = extract_pdf_text(abridge::testing::source_path("tests/data/pdf/real/R-intro.pdf"));
  ASSERT_EQ(pdf.status, PdfStatus::kOk) << pdf.message;
  std::vector<size_t> page_start = {0};  // byte offset where each page begins
  for (size_t i = 0; i < pdf.text.size(); ++i)
    if (pdf.text[i] == '\f') page_start.push_back(i + 1);
  ASSERT_EQ(page_start.size(), static_cast<size_t>(pdf.pages));
  auto page_of = [&](size_t offset) {
    return static_cast<uint32_t>(std::upper_bound(page_start.begin(), page_start.end(), offset) - page_start.begin());
  };
  ExtractiveOptions opt;
  opt.outline = true;
  const ExtractiveSummary s = summarize_extractive(pdf.text, counter(), opt);
  check_summary(pdf.text, s, opt.max_tokens);
  std::vector<ExtractedSentence> all = s.sentences;
  for (const SectionSummary& sec : s.sections) all.insert(all.end(), sec.sentences.begin(), sec.sentences.end());
  ASSERT_GE(all.size(), 20u);
  for (const ExtractedSentence& e : all) {
    EXPECT_EQ(e.first_page, page_of(e.begin)) << e.text;
    EXPECT_EQ(e.last_page, page_of(e.end - 1)) << e.text;
    EXPECT_LE(e.first_page, e.last_page);
    // The sentence as shown begins on its first page, as poppler gave that page.
    const size_t b = page_start[e.first_page - 1];
    const size_t end = e.first_page < page_start.size() ? page_start[e.first_page] : pdf.text.size();
    EXPECT_NE(squeeze(std::string_view(pdf.text).substr(b, end - b)).find(squeeze(e.text).substr(0, 16)), std::string::npos)
        << e.text;
  }
  // Chapters "1 Introduction and preliminaries" to the appendices, in page order.
  ASSERT_GE(s.sections.size(), 10u);
  uint32_t last = 0;
  for (const SectionSummary& sec : s.sections) {
    EXPECT_EQ(sec.first_page, page_of(sec.begin)) << sec.title;
    EXPECT_GE(sec.first_page, last) << sec.title;
    EXPECT_LE(sec.last_page, static_cast<uint32_t>(pdf.pages));
    last = sec.last_page;
  }
  EXPECT_NE(std::find_if(s.sections.begin(), s.sections.end(),
                         [](const SectionSummary& sec) { return sec.title == "2 Simple manipulations; numbers and vectors"; }),
            s.sections.end());
}

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
