// A model directory in Hugging Face layout: config.json, model.safetensors (or shards with
// model.safetensors.index.json) and tokenizer.json. Opening it validates all three.
#pragma once

#include <memory>
#include <string>

#include "engine/config.h"
#include "engine/safetensors.h"
#include "engine/tokenizer.h"

namespace abridge::engine {

struct ModelDir {
  std::string dir;
  ModelConfig config;
  std::unique_ptr<Checkpoint> checkpoint;  // mmap'd; every tensor of the config checked
  Tokenizer tokenizer;
};

// Throws abridge::Error with one line naming the directory or file and what is wrong.
ModelDir open_model_dir(const std::string& dir);

}  // namespace abridge::engine
