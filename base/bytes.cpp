#include "base/bytes.h"

#include <cctype>
#include <cstdio>

namespace abridge {

std::optional<uint64_t> parse_bytes(std::string_view text) {
  size_t i = 0;
  uint64_t whole = 0;
  int whole_digits = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    if (++whole_digits > 19) return std::nullopt;
    whole = whole * 10 + static_cast<uint64_t>(text[i++] - '0');
  }
  double fraction = 0, place = 0.1;
  int fraction_digits = 0;
  if (i < text.size() && text[i] == '.') {
    ++i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      if (fraction_digits++ < 9) fraction += place * (text[i] - '0'), place /= 10;
      ++i;
    }
  }
  if (whole_digits == 0 && fraction_digits == 0) return std::nullopt;
  if (i < text.size() && text[i] == ' ') ++i;
  std::string unit;
  for (; i < text.size(); ++i) unit += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
  uint64_t scale = 1;
  if (unit.empty() || unit == "b") {
    scale = 1;
  } else {
    const std::string prefixes = "kmgt";
    const size_t p = prefixes.find(unit[0]);
    if (p == std::string::npos) return std::nullopt;
    const std::string rest = unit.substr(1);
    const bool iec = rest.empty() || rest == "ib";
    if (!iec && rest != "b") return std::nullopt;
    for (size_t k = 0; k <= p; ++k) scale *= iec ? 1024 : 1000;
  }
  constexpr uint64_t kMax = uint64_t{1} << 60;
  if (whole > kMax / scale) return std::nullopt;
  const double bytes = static_cast<double>(whole) * static_cast<double>(scale) + fraction * static_cast<double>(scale);
  if (bytes > static_cast<double>(kMax)) return std::nullopt;
  return whole * scale + static_cast<uint64_t>(fraction * static_cast<double>(scale));
}

std::string format_bytes(uint64_t bytes, int decimals, ByteUnit unit) {
  const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  const uint64_t smallest = unit == ByteUnit::kMiB ? uint64_t{1} << 20 : 1024;  // below it, in bytes
  if (bytes < smallest) return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes");
  // A division by 1024 is exact in a double: the steps give what one division by the unit gives.
  double v = static_cast<double>(bytes) / 1024;
  int u = 0;
  if (unit == ByteUnit::kMiB) {
    v /= 1024, u = 1;
  } else {
    while (v >= 1024 && u < 5) v /= 1024, ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f %s", decimals, v, units[u]);
  return buf;
}

}  // namespace abridge
