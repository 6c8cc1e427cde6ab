// Sizes in bytes as people write them on a command line: "23GiB", "22.5G", "500MiB", "8000000000".
//
// Suffixes (case-insensitive, an optional space before them): none or B (bytes); K, M, G, T and KiB,
// MiB, GiB, TiB (powers of 1024, as coreutils' numfmt --from=iec and ulimit count); KB, MB, GB, TB
// (powers of 1000, SI). A decimal fraction is allowed ("1.5GiB"); the result is rounded down to whole
// bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace abridge {

// The size `text` names, or nullopt when it is not a size: empty, negative, an unknown suffix, or
// above 2^60 bytes (1 EiB).
std::optional<uint64_t> parse_bytes(std::string_view text);

// The unit format_bytes() writes a size in.
enum class ByteUnit : uint8_t {
  kFitted,  // the largest binary unit that leaves a whole number: "23.0 GiB", "1.2 KiB", "17 bytes"
  kMiB,     // bytes below 1 MiB, else MiB: "1.9 MiB", "1024.0 MiB", "17 bytes"; for sizes set beside a
            // bound in MiB (the file and memory limits: "too large (1024.0 MiB; the limit is 64.0 MiB)")
};

// A size for messages: "23.0 GiB", "512.0 MiB", "1.2 KiB", "17 bytes"; with `decimals` 2 (reports
// such as `model info`), "7.49 GiB".
std::string format_bytes(uint64_t bytes, int decimals = 1, ByteUnit unit = ByteUnit::kFitted);

}  // namespace abridge
