// The chunker's token counter, backed by the real tokenizer (document text is always encoded plain).
#pragma once

#include "chunker/chunker.h"
#include "engine/tokenizer.h"

namespace abridge::pipeline {

class TokenizerCounter final : public chunker::TokenCounter {
 public:
  explicit TokenizerCounter(const engine::Tokenizer& tok) : tok_(tok) {}
  size_t count(std::string_view text) const override {
    return text.empty() ? 0 : tok_.count(text, engine::AddedTokens::kPlain);
  }

 private:
  const engine::Tokenizer& tok_;
};

}  // namespace abridge::pipeline
