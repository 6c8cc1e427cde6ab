#include "engine/model_dir.h"

#include <filesystem>

#include "base/error.h"
#include "engine/weights.h"

namespace abridge::engine {

ModelDir open_model_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw Error(dir + ": no such model directory");
  if (!fs::is_directory(dir, ec))
    throw Error(dir + ": not a directory (--model takes a directory with config.json, *.safetensors, tokenizer.json)");
  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(config_path, ec)) throw Error(dir + ": no config.json (is this a Hugging Face model directory?)");
  if (!fs::exists(fs::path(dir) / "tokenizer.json", ec)) throw Error(dir + ": no tokenizer.json");
  ModelConfig config = ModelConfig::from_file(config_path);
  auto ckpt = std::make_unique<Checkpoint>(dir);
  check_checkpoint(config, *ckpt);
  Tokenizer tok = Tokenizer::from_path(dir);
  if (tok.n_tokens() > config.vocab_size)
    throw Error(dir + ": tokenizer.json has " + std::to_string(tok.n_tokens()) +
                " tokens but the model's vocab_size is " + std::to_string(config.vocab_size));
  return ModelDir{dir, std::move(config), std::move(ckpt), std::move(tok)};
}

}  // namespace abridge::engine
