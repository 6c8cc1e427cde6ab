// libFuzzer target for parse_safetensors: every input must either parse into views that lie inside
// the buffer and agree with their shape, or throw abridge::Error. A crash, a sanitizer report, another
// exception or a broken invariant (__builtin_trap) is a finding. Built and run by tests/fuzz/run.sh.
//
// Each input is tried twice: as the raw file bytes, and as a header behind a correct length prefix
// (input[0] = size of a zero-filled data section, the rest = header JSON), so the fuzzer reaches the
// JSON validation without having to guess the 8-byte length.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "base/error.h"
#include "engine/safetensors.h"

namespace {

void check(std::span<const std::byte> file) {
  using abridge::engine::dtype_size;
  try {
    const auto views = abridge::engine::parse_safetensors(file, "fuzz.safetensors");
    for (const auto& v : views) {
      if (v.data < file.data() || v.nbytes > static_cast<size_t>(file.data() + file.size() - v.data)) __builtin_trap();
      if (v.nbytes != static_cast<size_t>(v.numel()) * dtype_size(v.dtype)) __builtin_trap();
      if (v.nbytes > 0) {  // touch both ends, so AddressSanitizer sees an out-of-bounds view
        volatile std::byte first = v.data[0];
        volatile std::byte last = v.data[v.nbytes - 1];
        (void)first;
        (void)last;
      }
    }
  } catch (const abridge::Error& e) {
    if (std::strchr(e.what(), '\n') != nullptr) __builtin_trap();  // messages are one line
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  check({reinterpret_cast<const std::byte*>(data), size});
  if (size >= 1) {
    const size_t header = size - 1;
    std::vector<std::byte> file(8 + header + data[0]);  // the data section is zeros
    for (int i = 0; i < 8; ++i) file[i] = static_cast<std::byte>(static_cast<uint64_t>(header) >> (8 * i));
    if (header > 0) std::memcpy(file.data() + 8, data + 1, header);
    check(file);
  }
  return 0;
}
