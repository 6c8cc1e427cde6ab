#include "pipeline/prompts.h"

namespace abridge::pipeline {
namespace {

struct Builtin {
  const char *system, *single, *chunk, *merge, *section;  // {words} {section} placeholders
};

const Builtin& builtin(Language lang) {
  static const Builtin zh = {
      "你是一个认真、忠实的助手，负责为长文档撰写准确、简洁的摘要。",
      "请为下面的文档写一份摘要，保留关键的人物、数字、事实和结论，不要添加原文没有的内容。摘要不超过约{words}字。",
      "下面是一篇长文档的一部分{section}。请为这一部分写一份摘要，保留关键的人物、数字、事实和结论。摘要不超过约{words}字。",
      "下面是同一篇文档中按顺序排列的各部分摘要。请把它们合并成一份连贯的整体摘要，保留最重要的信息，去掉重复。摘要不超过约{words}字。",
      "下面是一篇长文档中的一个章节{section}。请用不超过约{words}字概括这一章节的要点。"};
  static const Builtin en = {
      "You are a careful assistant that writes faithful, concise summaries of long documents.",
      "Summarize the following document. Keep the key people, numbers, facts and conclusions; add nothing "
      "that is not in the text. Use at most about {words} words.",
      "The following is one part of a longer document{section}. Summarize this part. Keep the key people, "
      "numbers, facts and conclusions. Use at most about {words} words.",
      "The following are summaries of consecutive parts of one document, in order. Merge them into one "
      "coherent summary of the whole document, keeping what matters most and dropping repetition. Use at "
      "most about {words} words.",
      "The following is one section of a longer document{section}. Say in at most about {words} words what "
      "this section covers and concludes."};
  return lang == Language::kChinese ? zh : en;
}

}  // namespace

Prompts::Prompts(std::string custom, int64_t summary_tokens)
    : custom_(std::move(custom)), summary_tokens_(summary_tokens) {}

std::string Prompts::fill(const std::string& templ, const std::string& section, Language lang, int64_t words) const {
  std::string t = templ;
  auto replace = [&](const std::string& key, const std::string& value) {
    for (size_t p; (p = t.find(key)) != std::string::npos;) t.replace(p, key.size(), value);
  };
  replace("{words}", std::to_string(words > 0 ? words : summary_tokens_));
  std::string sec;
  if (!section.empty()) sec = lang == Language::kChinese ? "（章节：" + section + "）" : " (section: " + section + ")";
  replace("{section}", sec);
  return t;
}

std::string Prompts::system(Language lang) const { return builtin(lang).system; }
std::string Prompts::single(Language lang) const { return custom() ? custom_ : fill(builtin(lang).single, "", lang); }
std::string Prompts::chunk(Language lang, const std::string& section) const {
  return custom() ? custom_ : fill(builtin(lang).chunk, section, lang);
}
std::string Prompts::merge(Language lang) const { return custom() ? custom_ : fill(builtin(lang).merge, "", lang); }
std::string Prompts::section(Language lang, const std::string& title, int64_t words) const {
  return custom() ? custom_ : fill(builtin(lang).section, title, lang, words);
}

std::string Prompts::join(const std::vector<std::string>& parts, Language lang) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += "\n\n";
    out += (lang == Language::kChinese ? "第" + std::to_string(i + 1) + "部分：" : "Part " + std::to_string(i + 1) + ": ");
    out += parts[i];
  }
  return out;
}

}  // namespace abridge::pipeline
