// Rules that the options of several commands share, so that the commands agree: one check for a
// numeric range (the range each `--help` line states) and one meaning of `--device`.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>

#include "engine/model.h"

namespace abridge::pipeline {

// Throws abridge::Error "OPTION must be in LO..HI, not V" unless lo <= value <= hi (both bounds
// included; NaN is outside every range).
void check_range(const std::string& option, int64_t value, int64_t lo, int64_t hi);
void check_range(const std::string& option, double value, double lo, double hi);

// --device: auto | cpu | cuda; throws abridge::Error otherwise.
void check_device(const std::string& device);

// Builds the backend that --device names, for every command that opens a model. cpu and cuda are
// taken as said (cuda throws abridge::Error when no GPU engine opens: no CUDA in this build, no GPU,
// too little memory). auto takes the GPU when its engine opens and otherwise the CPU, saying why on
// `err` in one line unless `quiet`. `options.device` is ignored.
std::unique_ptr<engine::Backend> open_backend(const engine::ModelDir& model, engine::BackendOptions options,
                                              const std::string& device, std::ostream& err, bool quiet = false);

}  // namespace abridge::pipeline
