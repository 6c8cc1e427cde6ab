#include "engine/chat.h"

#include <algorithm>

#include "base/error.h"

namespace abridge::engine {
namespace {

int32_t required_token(const Tokenizer& tok, std::string_view name) {
  const int32_t id = tok.token_id(name);
  if (id < 0) throw Error("the tokenizer has no " + std::string(name) + " token; ChatML prompts need it");
  return id;
}

void append(std::vector<int32_t>& out, const std::vector<int32_t>& ids) { out.insert(out.end(), ids.begin(), ids.end()); }

}  // namespace

std::vector<int32_t> encode_chat(const Tokenizer& tok, std::span<const ChatMessage> messages,
                                 bool add_generation_prompt) {
  const int32_t start = required_token(tok, "<|im_start|>"), end = required_token(tok, "<|im_end|>");
  std::vector<int32_t> ids;
  for (const ChatMessage& m : messages) {
    ids.push_back(start);
    append(ids, tok.encode(m.role + "\n" + m.content, AddedTokens::kPlain));
    ids.push_back(end);
    append(ids, tok.encode("\n", AddedTokens::kPlain));
  }
  if (add_generation_prompt) {
    ids.push_back(start);
    append(ids, tok.encode("assistant\n", AddedTokens::kPlain));
  }
  return ids;
}

std::vector<int32_t> chat_stop_ids(const Tokenizer& tok, std::span<const int32_t> extra) {
  std::vector<int32_t> ids(extra.begin(), extra.end());
  for (std::string_view name : {"<|im_end|>", "<|endoftext|>"})
    if (int32_t id = tok.token_id(name); id >= 0) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

}  // namespace abridge::engine
