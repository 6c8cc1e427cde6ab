// ChatML prompts, as Qwen3's chat template renders them:
//   <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n
// Control tokens are inserted as ids; message text is always encoded plain, so text that contains
// "<|im_end|>" stays text.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/tokenizer.h"

namespace abridge::engine {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

std::vector<int32_t> encode_chat(const Tokenizer& tok, std::span<const ChatMessage> messages,
                                 bool add_generation_prompt = true);

// The ids that end a reply: <|im_end|> and <|endoftext|> where the vocabulary has them, plus `extra`.
std::vector<int32_t> chat_stop_ids(const Tokenizer& tok, std::span<const int32_t> extra = {});

}  // namespace abridge::engine
