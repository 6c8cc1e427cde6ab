// libFuzzer target for the reading stage's text half: random bytes through decode_text() (encodings,
// UTF-16 without a mark, files that are not text) and normalize_text() for text files and PDFs. Either
// decoding throws abridge::Error with one line, or it gives valid UTF-8; normalizing valid UTF-8 gives
// valid UTF-8 with as many form feeds (page breaks) and without the characters it removes (soft hyphens,
// VT, NEL, LS, PS); invalid bytes pass through without harm. A crash, a sanitizer report, another
// exception or a broken invariant (__builtin_trap) is a finding. Built and run by tests/fuzz/run.sh reading.
//
// input[0] bit 0 keeps invalid UTF-8 (chunk --replace-invalid); the rest is the file.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "base/error.h"
#include "base/utf8.h"
#include "chunker/chunker.h"
#include "pipeline/text_encoding.h"
#include "pipeline/text_normalize.h"

namespace {

using namespace abridge::pipeline;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

void check_normalized(const std::string& in) {
  const bool valid = abridge::find_invalid_utf8(in) == std::string::npos;
  for (const TextSource source : {TextSource::kTextFile, TextSource::kPdf}) {
    const std::string out = normalize_text(in, source);
    if (!valid) continue;
    check(abridge::find_invalid_utf8(out) == std::string::npos);
    check(std::count(out.begin(), out.end(), '\f') == std::count(in.begin(), in.end(), '\f'));
    check(out.find('\v') == std::string::npos);
    for (const char* gone : {"\xC2\xAD", "\xC2\x85", "\xE2\x80\xA8", "\xE2\x80\xA9"}) check(out.find(gone) == std::string::npos);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool keep_invalid = (data[0] & 1) != 0;
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  check_normalized(bytes);
  try {
    const DecodedText d = decode_text(bytes, "", keep_invalid);
    check(!d.encoding.empty());
    if (!keep_invalid) check(abridge::find_invalid_utf8(d.text) == std::string::npos);
    check_normalized(d.text);
  } catch (const abridge::Error& e) {
    check(std::string(e.what()).find('\n') == std::string::npos);
  }
  return 0;
}
