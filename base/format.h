// Numbers in messages.
#pragma once

#include <charconv>
#include <string>

namespace abridge {

// The shortest text that reads back as `v` (1.0000001, 0.01, 86400, 1e+300): a value is shown in an
// error as it was given, never rounded to six places ("1.000000" for 1.0000001) or padded.
inline std::string shortest_number(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}
// The same for a float option (0.1f reads "0.1", not "0.10000000149011612").
inline std::string shortest_number(float v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

}  // namespace abridge
