// Which files a run summarizes and where each summary goes: files, directories (--recursive,
// --include/--exclude), "-" (paths on standard input), --shard. Shared by `summarize` and `watch`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

namespace abridge::pipeline {

struct SummarizeOptions;

// One input and where its summary goes.
struct SummaryInput {
  std::string path;                // as the user named it (or as found under a directory)
  std::string rel;                 // relative to its input root: names the output
  std::filesystem::path output;    // OUT_DIR/<output_rel>, for messages
  std::string output_rel;          // <rel>.summary.<format>, relative to OUT_DIR
  int64_t bytes = 0;               // its size when found (orders the work: smaller documents first)
};

struct DiscoveredInputs {
  std::vector<SummaryInput> inputs;                      // sorted within each directory
  std::vector<std::pair<std::string, std::string>> bad;  // (path, reason): missing, unsupported type
};

// Files, directories (--recursive, --include/--exclude) and "-" (paths on `in`, one a line).
DiscoveredInputs discover_inputs(const SummarizeOptions& options, std::istream& in);

// Throws abridge::Error naming both inputs when two map to one output.
void check_output_collisions(const DiscoveredInputs& found);

// Parses "K/N" (0 <= K < N); throws abridge::Error otherwise.
std::pair<int64_t, int64_t> parse_shard(const std::string& spec);
// The shard (of n) a document belongs to: a hash of its path relative to its input root, the same on
// every machine, so N independent runs over a shared file system cover every input exactly once.
int64_t shard_of(const std::string& rel, int64_t n);
// Keeps the inputs (and bad paths) of shard `spec` ("K/N"); no-op for an empty spec.
void keep_shard(DiscoveredInputs& found, const std::string& spec);

}  // namespace abridge::pipeline
