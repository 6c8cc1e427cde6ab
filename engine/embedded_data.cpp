#include "engine/embedded_data.h"

#include <zstd.h>


#include "base/error.h"

// The zstd files are assembled into .rodata; ABRIDGE_DATA_DIR is set by engine/CMakeLists.txt.
#define ABRIDGE_INCBIN(sym, file)                                                  \
  asm(".section .rodata\n.balign 16\n.global " #sym "_begin\n" #sym "_begin:\n" \
      ".incbin \"" ABRIDGE_DATA_DIR "/" file "\"\n.global " #sym "_end\n" #sym "_end:\n.byte 0\n.previous\n")

ABRIDGE_INCBIN(abridge_tokenizer_json_zst, "qwen3-tokenizer/tokenizer.json.zst");
ABRIDGE_INCBIN(abridge_tokenizer_config_json_zst, "qwen3-tokenizer/tokenizer_config.json.zst");

extern "C" {
extern const unsigned char abridge_tokenizer_json_zst_begin[], abridge_tokenizer_json_zst_end[];
extern const unsigned char abridge_tokenizer_config_json_zst_begin[], abridge_tokenizer_config_json_zst_end[];
}

namespace abridge::engine {
namespace {

std::string decompress(const unsigned char* begin, const unsigned char* end) {
  const size_t n = static_cast<size_t>(end - begin);
  const unsigned long long size = ZSTD_getFrameContentSize(begin, n);
  ABRIDGE_CHECK(size != ZSTD_CONTENTSIZE_ERROR && size != ZSTD_CONTENTSIZE_UNKNOWN, "bundled data frame");
  std::string out(size, '\0');
  const size_t got = ZSTD_decompress(out.data(), out.size(), begin, n);
  ABRIDGE_CHECK(!ZSTD_isError(got) && got == size, "bundled data decompression");
  return out;
}

}  // namespace

const std::string& bundled_tokenizer_json() {
  static const std::string text = decompress(abridge_tokenizer_json_zst_begin, abridge_tokenizer_json_zst_end);
  return text;
}

const std::string& bundled_tokenizer_config_json() {
  static const std::string text =
      decompress(abridge_tokenizer_config_json_zst_begin, abridge_tokenizer_config_json_zst_end);
  return text;
}

}  // namespace abridge::engine
