// `abridge model quantize SRC DST --fp8`: an FP8 model directory (engine/quantization.h has the format)
// from a bf16/f16/f32 one, written whole or not at all.
#pragma once

#include <ostream>
#include <string>

#include "engine/fp8_checkpoint.h"
#include "engine/model_dir.h"

namespace abridge::pipeline {

struct QuantizeOptions {
  std::string src;
  std::string dst;
  bool fp8 = false;  // the only target format so far; required, so that a later one is a choice
};
int run_model_quantize(const QuantizeOptions& opt, std::ostream& out, std::ostream& err);

// Writes DST (which must not exist, or be an empty directory) with `src`'s config (plus
// quantization_config), tokenizer files and weights quantized by engine::quantize_checkpoint: all of it
// in a temporary directory beside DST, each file fsync'd, then renamed to DST and the parent fsync'd.
// On failure the temporary directory is removed. Throws abridge::Error naming the path.
engine::QuantizeSummary write_fp8_model_dir(const std::string& src_dir, const engine::ModelConfig& config,
                                            const engine::Checkpoint& weights, const std::string& dst);

}  // namespace abridge::pipeline
