// Safetensors checkpoints: mmap'd, single file or sharded (model.safetensors.index.json).
//
// Validation follows the format's own loader: an 8-byte little-endian header length bounded by
// kMaxHeaderBytes, a JSON object header, known dtypes, every tensor's [begin, end) inside the data
// section, the tensors contiguous and non-overlapping and covering the data section, and
// nbytes == prod(shape) * dtype size with overflow checks. Any violation throws abridge::Error with one
// line that names the file and, where there is one, the tensor. Nothing here can crash on hostile
// bytes; tests/fuzz/fuzz_safetensors.cpp checks that.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace abridge::engine {

// kF8E4M3 is float8_e4m3fn (engine/fp8.h), for the weights of block-wise FP8 checkpoints.
enum class DType : uint8_t { kBF16, kF16, kF32, kF8E4M3 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);  // "BF16", "F16", "F32", "F8_E4M3" as in the format

inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;  // points into the mmap; valid while the owning file is open
  size_t nbytes = 0;
  std::string file;  // the file it lives in, for error messages
  int64_t numel() const;
};

// Parses and validates a header. `bytes` is the whole file; the returned views point into it.
// Throws abridge::Error("FILE: ..."), with `file_name` used in messages.
std::vector<TensorView> parse_safetensors(std::span<const std::byte> bytes, std::string_view file_name);

// One mmap'd .safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::vector<TensorView>& tensors() const { return tensors_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::vector<TensorView> tensors_;
};

// All tensors of a checkpoint directory: model.safetensors, or the shards that
// model.safetensors.index.json names (the index's weight_map is checked against the shards).
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& dir);
  // nullptr if absent.
  const TensorView* find(std::string_view name) const;
  const std::map<std::string, TensorView, std::less<>>& tensors() const { return by_name_; }
  uint64_t total_bytes() const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, TensorView, std::less<>> by_name_;
};

// Writes one .safetensors file, streaming: the header first, then each tensor's bytes from `fill`,
// which is called once per tensor in order with a buffer of exactly nbytes. Written to a fresh temporary
// name beside PATH (base/file.h AtomicWriter), fsync'd and renamed, so a reader never sees half a file.
struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};
void write_safetensors(const std::string& path, const std::vector<TensorSpec>& specs,
                       const std::function<void(const TensorSpec&, std::span<std::byte>)>& fill,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace abridge::engine
