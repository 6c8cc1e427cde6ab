// Rules that the options of several commands share, so that the commands agree: one check for a
// numeric range (the range each `--help` line states) and one meaning of `--device` (engine::open_backend
// builds what it names).
#pragma once

#include <cstdint>
#include <string>

namespace abridge::pipeline {

// Throws abridge::Error "OPTION must be in LO..HI, not V" unless lo <= value <= hi (both bounds
// included; NaN is outside every range).
void check_range(const std::string& option, int64_t value, int64_t lo, int64_t hi);
void check_range(const std::string& option, double value, double lo, double hi);

// --device: auto | cpu | cuda; throws abridge::Error otherwise.
void check_device(const std::string& device);

// A glob of --include/--exclude as fnmatch(3) reads it (the rules of glob(7)). glibc takes a '[' without
// its ']' as a literal and a trailing '\\' or an unknown [:class:] as matching nothing, all without a
// word; these are refused: abridge::Error("PATTERN: invalid pattern (OPTION: an unmatched '[' ...)").
void check_glob(const std::string& option, const std::string& pattern);

}  // namespace abridge::pipeline
