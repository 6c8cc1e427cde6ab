// libFuzzer target for chunk_text: random bytes in, the chunker's guarantees out. Any input either
// throws InvalidUtf8Error at the first invalid byte (when rejecting) or gives chunks whose spans tile
// the input, whose texts fit the budget by the counter's own count, and which repeat exactly on a
// second run. A crash, a sanitizer report, another exception or a broken invariant
// (__builtin_trap) is a finding. Built and run by tests/fuzz/run.sh chunker.
//
// input[0] picks the budget (8..71 tokens), input[1] the overlap and whether invalid UTF-8 is
// replaced or rejected; the rest is the text.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/utf8.h"
#include "chunker/chunker.h"

namespace {

using namespace abridge::chunker;
using abridge::find_invalid_utf8;

// Roughly like BPE: runs of ASCII letters cost one token per 4 bytes, every other byte one token.
// Not additive across boundaries, so the chunker's exact recount is exercised.
class FuzzCounter : public TokenCounter {
 public:
  size_t count(std::string_view text) const override {
    size_t n = 0, run = 0;
    for (unsigned char c : text) {
      if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') {
        if (run++ % 4 == 0) ++n;
      } else {
        run = 0;
        if (c != ' ') ++n;
      }
    }
    return n;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  Options options;
  options.max_tokens = 8 + (data[0] & 63);
  options.overlap_tokens = (data[1] & 15) % (options.max_tokens / 2);
  options.invalid_utf8 = (data[1] & 16) ? InvalidUtf8::kReplace : InvalidUtf8::kReject;
  options.drop_running_lines = (data[1] & 32) == 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 2), size - 2);
  const FuzzCounter counter;
  std::vector<Chunk> chunks;
  try {
    chunks = chunk_text(text, counter, options);
  } catch (const InvalidUtf8Error& e) {
    if (options.invalid_utf8 != InvalidUtf8::kReject || e.offset() != find_invalid_utf8(text)) __builtin_trap();
    return 0;
  }
  if (options.invalid_utf8 == InvalidUtf8::kReject && find_invalid_utf8(text) != std::string_view::npos)
    __builtin_trap();
  size_t pos = 0;
  for (const Chunk& c : chunks) {
    if (c.start != pos || c.end <= c.start || c.context_start > c.start) __builtin_trap();
    if (c.tokens > options.max_tokens || c.tokens != counter.count(c.text) || c.text.empty()) __builtin_trap();
    if (find_invalid_utf8(c.text) != std::string_view::npos) __builtin_trap();
    pos = c.end;
  }
  if (!chunks.empty() && pos != text.size()) __builtin_trap();
  // No chunks only when nothing would be shown to the model.
  if (chunks.empty() && !clean_text(text, options).empty()) __builtin_trap();
  const auto again = chunk_text(text, counter, options);
  if (again.size() != chunks.size()) __builtin_trap();
  for (size_t i = 0; i < chunks.size(); ++i)
    if (again[i].end != chunks[i].end || again[i].text != chunks[i].text) __builtin_trap();
  return 0;
}
