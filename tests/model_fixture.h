// A tiny random-weight Qwen3 checkpoint made by the project itself (the real vocabulary), shared by
// the engine, CLI and parity suites. Made once per test binary, in a temp dir.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "engine/config.h"
#include "engine/model_dir.h"
#include "engine/weights.h"
#include "tests/test_support.h"

namespace abridge::testing {

// The directory of `abridge model make-random --preset PRESET --seed SEED --dtype DTYPE`, made with
// the library call the command uses.
inline const std::filesystem::path& random_model_dir(const std::string& preset = "tiny", uint64_t seed = 7,
                                                     const std::string& dtype = "bf16") {
  static std::map<std::string, std::pair<std::unique_ptr<TempDir>, std::filesystem::path>> made;
  const std::string key = preset + "/" + std::to_string(seed) + "/" + dtype;
  auto it = made.find(key);
  if (it == made.end()) {
    auto dir = std::make_unique<TempDir>();
    const auto path = dir->path() / "model";
    const RunResult r = run_abridge("model make-random '" + path.string() + "' --preset " + preset + " --seed " +
                                    std::to_string(seed) + " --dtype " + dtype);
    if (r.exit_code != 0) throw std::runtime_error("make-random failed: " + r.err);
    it = made.emplace(key, std::make_pair(std::move(dir), path)).first;
  }
  return it->second.second;
}

}  // namespace abridge::testing
