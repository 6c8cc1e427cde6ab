#include "pipeline/discovery.h"

#include <fnmatch.h>

#include <algorithm>
#include <istream>
#include <map>

#include "base/error.h"
#include "base/hash.h"
#include "pipeline/summarize.h"

namespace abridge::pipeline {
namespace {

namespace fs = std::filesystem;

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return e;
}

bool supported(const fs::path& p) {
  const std::string e = lower_ext(p);
  return e == ".txt" || e == ".md" || e == ".pdf";
}

bool glob_match(const std::vector<std::string>& globs, const std::string& rel) {
  const std::string base = fs::path(rel).filename().string();
  for (const auto& g : globs)
    if (fnmatch(g.c_str(), rel.c_str(), 0) == 0 || fnmatch(g.c_str(), base.c_str(), 0) == 0) return true;
  return false;
}

int64_t size_of(const fs::path& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

}  // namespace

DiscoveredInputs discover_inputs(const SummarizeOptions& o, std::istream& in) {
  DiscoveredInputs d;
  std::vector<std::string> args;
  for (const auto& a : o.inputs) {
    if (a != "-") {
      args.push_back(a);
      continue;
    }
    std::string line;
    while (std::getline(in, line)) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (!line.empty()) args.push_back(line);
    }
  }
  auto keep = [&](const std::string& rel) {
    if (!o.include.empty() && !glob_match(o.include, rel)) return false;
    return !glob_match(o.exclude, rel);
  };
  for (const auto& a : args) {
    std::error_code ec;
    const auto st = fs::status(a, ec);
    if (ec || !fs::exists(st)) {
      d.bad.emplace_back(a, "no such file or directory");
    } else if (fs::is_directory(st)) {
      std::vector<fs::path> found;
      if (o.recursive) {
        for (auto it = fs::recursive_directory_iterator(a, fs::directory_options::skip_permission_denied, ec);
             !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
          if (it->path().filename().string().rfind(".", 0) == 0 && it->is_directory()) {
            it.disable_recursion_pending();  // hidden folders, our own .abridge among them
            continue;
          }
          if (it->is_regular_file() && supported(it->path())) found.push_back(it->path());
        }
      } else {
        for (const auto& e : fs::directory_iterator(a, ec))
          if (e.is_regular_file() && supported(e.path())) found.push_back(e.path());
      }
      std::sort(found.begin(), found.end());
      for (const auto& f : found) {
        const std::string rel = fs::relative(f, a).generic_string();
        if (keep(rel)) d.inputs.push_back({f.string(), rel, {}, {}, size_of(f)});
      }
    } else if (!supported(a)) {
      d.bad.emplace_back(a, "unsupported file type \"" + fs::path(a).extension().string() +
                                "\" (abridge reads .txt, .md and .pdf)");
    } else {
      const std::string rel = fs::path(a).filename().string();
      if (keep(rel)) d.inputs.push_back({a, rel, {}, {}, size_of(a)});
    }
  }
  const std::string ext = o.format == "json" ? "json" : o.format == "txt" ? "txt" : "md";
  for (auto& i : d.inputs) {
    i.output_rel = i.rel + ".summary." + ext;
    i.output = fs::path(o.out_dir) / i.output_rel;
  }
  return d;
}

void check_output_collisions(const DiscoveredInputs& found) {
  std::map<std::string, std::string> owners;
  for (const auto& i : found.inputs) {
    auto [it, fresh] = owners.emplace(i.output_rel, i.path);
    if (!fresh)
      throw Error(it->second + " and " + i.path + " would both write " + i.output.string() +
                  "; rename one or summarize them into different output directories");
  }
}

std::pair<int64_t, int64_t> parse_shard(const std::string& spec) {
  const size_t slash = spec.find('/');
  try {
    if (slash == std::string::npos) throw std::invalid_argument(spec);
    size_t u1 = 0, u2 = 0;
    const long long k = std::stoll(spec.substr(0, slash), &u1), n = std::stoll(spec.substr(slash + 1), &u2);
    if (u1 != slash || u2 != spec.size() - slash - 1 || n < 1 || k < 0 || k >= n) throw std::invalid_argument(spec);
    return {k, n};
  } catch (const std::exception&) {
    throw Error("--shard must be K/N with 0 <= K < N (e.g. 0/8), not \"" + spec + "\"");
  }
}

int64_t shard_of(const std::string& rel, int64_t n) {
  return static_cast<int64_t>(fnv1a64(rel) % static_cast<uint64_t>(n));  // stable across machines and builds
}

void keep_shard(DiscoveredInputs& found, const std::string& spec) {
  if (spec.empty()) return;
  const auto [k, n] = parse_shard(spec);
  auto mine = [&](const std::string& key) { return shard_of(key, n) == k; };
  std::erase_if(found.inputs, [&](const SummaryInput& i) { return !mine(i.rel); });
  std::erase_if(found.bad, [&](const auto& b) { return !mine(fs::path(b.first).filename().string()); });
}

}  // namespace abridge::pipeline
