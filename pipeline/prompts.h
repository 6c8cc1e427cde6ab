// The instructions the model is given: built-in ones per language (or the user's --prompt), with the
// summary length filled in, and how summaries are joined for a merge.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pipeline/extractive.h"  // Language

namespace abridge::pipeline {

class Prompts {
 public:
  // `custom`: the --prompt file's text, which replaces every built-in instruction; empty: built-in.
  // `summary_tokens` fills the "at most about N words" of the built-in instructions.
  Prompts(std::string custom, int64_t summary_tokens);

  std::string system(Language lang) const;
  std::string single(Language lang) const;  // a whole document in one request
  std::string chunk(Language lang, const std::string& section) const;  // one part of a longer document
  std::string merge(Language lang) const;  // summaries of consecutive parts, to be merged
  // One top-level section, for an outline, in at most about `words` words.
  std::string section(Language lang, const std::string& title, int64_t words) const;
  // "Part 1: ...\n\nPart 2: ..." (第1部分：...): the text of a merge request.
  static std::string join(const std::vector<std::string>& summaries, Language lang);
  bool custom() const { return !custom_.empty(); }

 private:
  std::string fill(const std::string& templ, const std::string& section, Language lang, int64_t words = 0) const;
  std::string custom_;
  int64_t summary_tokens_;
};

}  // namespace abridge::pipeline
