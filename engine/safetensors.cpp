// Safetensors: the header validator, the mmap'd file, checkpoint directories, the streaming writer.
//
// The header is read by a SAX state machine rather than into a JSON DOM, so the memory it takes is
// what a valid header needs and no more: a valid header is at most three levels deep
// ({name: {field: [int, ...]}}), so any bracket deeper than that is rejected where it opens, shapes
// are capped at kMaxRank dimensions, and each number is checked as it arrives. Every size is
// computed in uint64_t with explicit overflow checks before anything is indexed with it.
//
// To support another dtype: add it to kDTypes (and to DType in the header), and remove it from
// kOtherFormatDTypes.

#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <system_error>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/fd.h"
#include "base/file.h"
#include "engine/read_file.h"

namespace abridge::engine {
namespace {

constexpr size_t kLengthBytes = 8;               // the little-endian u64 header length
constexpr size_t kDataAlignment = 8;             // the writer pads the header to this
constexpr size_t kMaxRank = 64;                  // far above any real tensor; bounds a hostile shape
constexpr size_t kMaxQuoted = 120;               // bytes of a name shown in an error message
constexpr uint64_t kMaxIndexBytes = 100'000'000;  // model.safetensors.index.json (real ones: ~100 KB)
constexpr int kMaxIndexDepth = 16;               // a valid index is 3 deep
constexpr uint64_t kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {{DType::kBF16, "BF16", 2}, {DType::kF16, "F16", 2}, {DType::kF32, "F32", 4},
                               {DType::kF8E4M3, "F8_E4M3", 1}};

// The format's other dtypes: a checkpoint using one gets "unsupported dtype", not "unknown dtype".
constexpr std::string_view kOtherFormatDTypes[] = {
    "BOOL", "F4",  "F6_E2M3", "F6_E3M2", "U8",  "I8",  "F8_E5M2", "F8_E8M0", "F8_E4M3FNUZ",
    "F8_E5M2FNUZ", "I16", "U16", "I32", "U32", "C64", "F64", "I64", "U64"};

const DTypeInfo& info_of(DType t) {
  for (const DTypeInfo& d : kDTypes) {
    if (d.dtype == t) return d;
  }
  ABRIDGE_CHECK(false, "DType value " + std::to_string(static_cast<int>(t)) + " missing from kDTypes");
}

// Text from a header for an error message: control bytes (and, for text that may not be UTF-8, all
// non-ASCII bytes) escaped and cut after `limit` bytes at a UTF-8 boundary, so the message stays one
// printable line of reasonable length whatever the header holds.
std::string escaped(std::string_view s, size_t limit, bool escape_non_ascii = false) {
  size_t n = std::min(s.size(), limit);
  while (!escape_non_ascii && n < s.size() && n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f || (escape_non_ascii && c >= 0x80)) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  return n < s.size() ? out + "..." : out;
}

// (Built by appending: g++ 12 gives a false -Wrestrict for "'" + std::string&&.)
std::string quote_name(std::string_view name) {
  std::string out = "'";
  out += escaped(name, kMaxQuoted);
  out += '\'';
  return out;
}

// nlohmann's messages without the "[json.exception.parse_error.101] " prefix, one line, bounded
// ("last read: '...'" can quote a long token).
std::string json_message(std::string_view what) {
  if (what.starts_with("[json.exception.")) {
    const size_t close = what.find("] ");
    if (close != std::string_view::npos) what.remove_prefix(close + 2);
  }
  return escaped(what, 300, /*escape_non_ascii=*/true);
}

std::string errno_message(int e) { return std::generic_category().message(e); }

// a * b, or false if it does not fit in 64 bits.
bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  if (b != 0 && a > std::numeric_limits<uint64_t>::max() / b) return false;
  *out = a * b;
  return true;
}

std::string format_shape(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string format_range(uint64_t begin, uint64_t end) {
  std::string out = "[";
  out += std::to_string(begin);
  out += ", ";
  out += std::to_string(end);
  out += ')';
  return out;
}

// One validated header entry; offsets are relative to the data section.
struct Entry {
  std::string name;
  DType dtype = DType::kBF16;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// The header's SAX handler. The parser only produces events that are well-formed JSON; this class
// decides whether they are a well-formed safetensors header, and throws abridge::Error at the first
// event that is not. States, by where the parser is:
//   kStart          before the top-level '{'
//   kTopKey         in the top object: a tensor name, "__metadata__" or '}'
//   kEntryValue     after a tensor name: '{'
//   kEntryKey       in a tensor entry: "dtype", "shape", "data_offsets" or '}'
//   kFieldValue     after a field name: a string (dtype) or '[' (shape, data_offsets)
//   kArray          in shape or data_offsets: non-negative integers or ']'
//   kMetadataValue  after "__metadata__": '{'
//   kMetadataKey    in __metadata__: a key or '}'
//   kMetadataString after a metadata key: a string
//   kEnd            after the top-level '}'
class HeaderHandler final : public nlohmann::json_sax<nlohmann::json> {
 public:
  HeaderHandler(const std::string& file, uint64_t data_size) : file_(file), data_size_(data_size) {}

  std::vector<Entry> take() {
    ABRIDGE_CHECK(state_ == State::kEnd, "header parse ended in state " + std::to_string(static_cast<int>(state_)));
    return std::move(entries_);
  }

  bool null() override { unexpected("null"); }
  bool boolean(bool) override { unexpected("a boolean"); }
  bool number_integer(number_integer_t v) override {
    if (v >= 0) return number_unsigned(static_cast<uint64_t>(v));  // "-0"
    unexpected("a negative integer");
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (state_ != State::kArray) unexpected("an integer");
    if (field_ == Field::kShape) {
      if (shape_.size() == kMaxRank) fail_tensor("shape has more than " + std::to_string(kMaxRank) + " dimensions");
      shape_.push_back(v);
    } else {
      if (offsets_.size() == 2) fail_tensor("data_offsets has more than 2 entries, expected [begin, end]");
      offsets_.push_back(v);
    }
    return true;
  }
  // Integers too large for uint64_t arrive here too.
  bool number_float(number_float_t, const string_t&) override { unexpected("a non-integer or out-of-range number"); }
  bool string(string_t& s) override {
    if (state_ == State::kFieldValue && field_ == Field::kDType) {
      dtype_ = s;
      state_ = State::kEntryKey;
      return true;
    }
    if (state_ == State::kMetadataString) {
      state_ = State::kMetadataKey;
      return true;
    }
    unexpected("a string");
  }
  bool binary(binary_t&) override { unexpected("binary data"); }  // never produced from JSON text

  bool start_object(std::size_t) override {
    switch (state_) {
      case State::kStart: state_ = State::kTopKey; return true;
      case State::kEntryValue:
        seen_ = {};
        dtype_.clear();
        shape_.clear();
        offsets_.clear();
        state_ = State::kEntryKey;
        return true;
      case State::kMetadataValue: state_ = State::kMetadataKey; return true;
      default: unexpected("an object");
    }
  }
  bool key(string_t& k) override {
    switch (state_) {
      case State::kTopKey:
        if (!top_keys_.insert(k).second) {
          fail(k == "__metadata__" ? "duplicate \"__metadata__\"" : "duplicate tensor name " + quote_name(k));
        }
        if (k == "__metadata__") {
          state_ = State::kMetadataValue;
        } else {
          name_ = k;
          state_ = State::kEntryValue;
        }
        return true;
      case State::kEntryKey: {
        if (k == "dtype") {
          field_ = Field::kDType;
        } else if (k == "shape") {
          field_ = Field::kShape;
        } else if (k == "data_offsets") {
          field_ = Field::kOffsets;
        } else {
          fail_tensor("unknown field " + quote_name(k) + " (an entry has exactly dtype, shape and data_offsets)");
        }
        bool& seen = seen_[static_cast<int>(field_)];
        if (seen) fail_tensor("field " + quote_name(k) + " appears twice");
        seen = true;
        state_ = State::kFieldValue;
        return true;
      }
      case State::kMetadataKey:
        if (!metadata_keys_.insert(k).second) fail("__metadata__: duplicate key " + quote_name(k));
        metadata_key_ = k;
        state_ = State::kMetadataString;
        return true;
      default: ABRIDGE_CHECK(false, "JSON key in header state " + std::to_string(static_cast<int>(state_)));
    }
  }
  bool end_object() override {
    switch (state_) {
      case State::kTopKey: state_ = State::kEnd; return true;
      case State::kEntryKey: finish_entry(); state_ = State::kTopKey; return true;
      case State::kMetadataKey: state_ = State::kTopKey; return true;
      default: ABRIDGE_CHECK(false, "JSON '}' in header state " + std::to_string(static_cast<int>(state_)));
    }
  }
  bool start_array(std::size_t) override {
    if (state_ == State::kFieldValue && field_ != Field::kDType) {
      state_ = State::kArray;
      return true;
    }
    unexpected("an array");
  }
  bool end_array() override {
    ABRIDGE_CHECK(state_ == State::kArray, "JSON ']' in header state " + std::to_string(static_cast<int>(state_)));
    if (field_ == Field::kOffsets && offsets_.size() != 2) {
      const size_t n = offsets_.size();
      fail_tensor("data_offsets has " + std::to_string(n) + (n == 1 ? " entry" : " entries") +
                  ", expected [begin, end]");
    }
    state_ = State::kEntryKey;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    fail("header is not valid JSON: " + json_message(e.what()));
  }

 private:
  enum class State {
    kStart, kTopKey, kEntryValue, kEntryKey, kFieldValue, kArray,
    kMetadataValue, kMetadataKey, kMetadataString, kEnd,
  };
  enum class Field { kDType, kShape, kOffsets };

  [[noreturn]] void fail(const std::string& reason) const { throw Error(file_ + ": " + reason); }
  [[noreturn]] void fail_tensor(const std::string& reason) const {
    fail("tensor " + quote_name(name_) + ": " + reason);
  }

  static std::string_view field_name(Field f) {
    switch (f) {
      case Field::kDType: return "dtype";
      case Field::kShape: return "shape";
      case Field::kOffsets: return "data_offsets";
    }
    return "?";
  }

  // A JSON value where the state expects something else; `got` says what it was.
  [[noreturn]] void unexpected(const std::string& got) const {
    switch (state_) {
      case State::kStart: fail("header is not a JSON object (it is " + got + ")");
      case State::kEntryValue:
        fail_tensor("entry is " + got + ", expected an object with dtype, shape and data_offsets");
      case State::kFieldValue:
        fail_tensor(std::string(field_name(field_)) + " is " + got + ", expected " +
                    (field_ == Field::kDType   ? "a string"
                     : field_ == Field::kShape ? "an array of non-negative integers"
                                               : "[begin, end]"));
      case State::kArray:
        fail_tensor(std::string(field_name(field_)) + " entry is " + got + ", expected a non-negative integer");
      case State::kMetadataValue: fail("__metadata__ is " + got + ", expected an object of strings");
      case State::kMetadataString:
        fail("__metadata__ value for " + quote_name(metadata_key_) + " is " + got + ", expected a string");
      default: ABRIDGE_CHECK(false, "JSON value in header state " + std::to_string(static_cast<int>(state_)));
    }
  }

  void finish_entry() {
    for (Field f : {Field::kDType, Field::kShape, Field::kOffsets}) {
      if (!seen_[static_cast<int>(f)]) fail_tensor("missing field '" + std::string(field_name(f)) + "'");
    }
    Entry e;
    e.name = name_;
    const DTypeInfo* info = nullptr;
    for (const DTypeInfo& d : kDTypes) {
      if (d.name == dtype_) info = &d;
    }
    if (info == nullptr) {
      const bool known = std::find(std::begin(kOtherFormatDTypes), std::end(kOtherFormatDTypes), dtype_) !=
                         std::end(kOtherFormatDTypes);
      if (known) fail_tensor("unsupported dtype " + dtype_ + " (abridge reads BF16, F16, F32 and F8_E4M3)");
      fail_tensor("unknown dtype " + quote_name(dtype_));
    }
    e.dtype = info->dtype;

    // Elements multiplied in shape order with a check at every step, as the reference loader does.
    uint64_t numel = 1;
    for (uint64_t d : shape_) {
      if (d > kInt64Max || !checked_mul(numel, d, &numel) || numel > kInt64Max) {
        fail_tensor("shape " + format_shape(shape_) + " has too many elements (overflows 64 bits)");
      }
      e.shape.push_back(static_cast<int64_t>(d));
    }
    uint64_t nbytes = 0;
    if (!checked_mul(numel, info->size, &nbytes)) {
      fail_tensor("shape " + format_shape(shape_) + " x " + dtype_ + " has too many bytes (overflows 64 bits)");
    }
    e.begin = offsets_[0];
    e.end = offsets_[1];
    if (e.begin > e.end) fail_tensor("data_offsets " + format_range(e.begin, e.end) + " have begin > end");
    if (e.end - e.begin != nbytes) {
      fail_tensor("data_offsets " + format_range(e.begin, e.end) + " do not match shape " + format_shape(shape_) +
                  " x " + dtype_ + " = " + std::to_string(nbytes) + " bytes");
    }
    if (e.end > data_size_) {
      fail_tensor("data_offsets " + format_range(e.begin, e.end) + " run past the end of the data section (" +
                  std::to_string(data_size_) + " bytes; is the file truncated?)");
    }
    entries_.push_back(std::move(e));
  }

  const std::string& file_;
  const uint64_t data_size_;
  State state_ = State::kStart;
  std::unordered_set<std::string> top_keys_;       // tensor names and "__metadata__", for duplicates
  std::unordered_set<std::string> metadata_keys_;
  std::string metadata_key_;
  // The entry being read.
  std::string name_;
  Field field_ = Field::kDType;
  std::array<bool, 3> seen_ = {};  // by Field
  std::string dtype_;
  std::vector<uint64_t> shape_;
  std::vector<uint64_t> offsets_;
  std::vector<Entry> entries_;
};

// A file descriptor, closed on destruction.
// A shard name from an index must name a file inside the checkpoint directory itself.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

}  // namespace

size_t dtype_size(DType t) { return info_of(t).size; }

std::string_view dtype_name(DType t) { return info_of(t).name; }

int64_t TensorView::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) {
    ABRIDGE_CHECK(d >= 0 && checked_mul(n, static_cast<uint64_t>(d), &n) && n <= kInt64Max,
                  "tensor " + quote_name(name) + " has an invalid shape");
  }
  return static_cast<int64_t>(n);
}

std::vector<TensorView> parse_safetensors(std::span<const std::byte> bytes, std::string_view file_name) {
  const std::string file(file_name);
  constexpr const char* kStartsWith = ", a safetensors file starts with an 8-byte header length";
  if (bytes.empty()) throw Error(file + ": empty file" + kStartsWith);
  if (bytes.size() < kLengthBytes) {
    throw Error(file + ": truncated: " + std::to_string(bytes.size()) + " bytes" + kStartsWith);
  }
  uint64_t n = 0;
  for (size_t i = 0; i < kLengthBytes; ++i) n |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  if (n > kMaxHeaderBytes) {
    throw Error(file + ": header length " + std::to_string(n) + " is over the " + std::to_string(kMaxHeaderBytes) +
                "-byte limit (not a safetensors file?)");
  }
  if (n > bytes.size() - kLengthBytes) {
    throw Error(file + ": header length " + std::to_string(n) + " runs past the end of the file (" +
                std::to_string(bytes.size()) + " bytes)");
  }
  const std::span<const std::byte> header = bytes.subspan(kLengthBytes, n);
  const std::span<const std::byte> data = bytes.subspan(kLengthBytes + n);

  const char* text = reinterpret_cast<const char*>(header.data());
  // nlohmann's lexer takes a NUL byte for the end of input and would accept "{}\0anything"; valid
  // JSON text never holds one (inside strings it must be escaped), so any NUL is an error.
  if (const void* nul = std::memchr(text, '\0', header.size())) {
    throw Error(file + ": header is not valid JSON: a NUL byte at header offset " +
                std::to_string(static_cast<const char*>(nul) - text));
  }
  HeaderHandler handler(file, data.size());
  const bool parsed = nlohmann::json::sax_parse(text, text + header.size(), &handler);
  ABRIDGE_CHECK(parsed, "header handler returned false instead of throwing");
  std::vector<Entry> entries = handler.take();

  // Sorted by offset, each tensor starts where the previous one ended and the last ends at the end
  // of the data section: no byte is shared, none is left over.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.begin > covered) {
      throw Error(file + ": no tensor covers bytes " + format_range(covered, e.begin) +
                  " of the data section (a gap before tensor " + quote_name(e.name) + ")");
    }
    if (e.begin < covered) {
      const Entry& prev = entries[i - 1];
      throw Error(file + ": tensor " + quote_name(e.name) + ": data_offsets " + format_range(e.begin, e.end) +
                  " overlap tensor " + quote_name(prev.name) + " " + format_range(prev.begin, prev.end));
    }
    covered = e.end;
  }
  if (covered != data.size()) {
    throw Error(file + ": tensors cover " + std::to_string(covered) + " of the " + std::to_string(data.size()) +
                " bytes of the data section (the data section must be fully covered)");
  }

  std::vector<TensorView> views;
  views.reserve(entries.size());
  for (Entry& e : entries) {
    TensorView v;
    v.name = std::move(e.name);
    v.dtype = e.dtype;
    v.shape = std::move(e.shape);
    v.data = data.data() + e.begin;
    v.nbytes = static_cast<size_t>(e.end - e.begin);
    v.file = file;
    views.push_back(std::move(v));
  }
  return views;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: a FIFO named like a checkpoint is refused below, not waited on.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.ok()) throw Error(path + ": cannot open: " + errno_message(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw Error(path + ": cannot stat: " + errno_message(errno));
  if (!S_ISREG(st.st_mode)) throw Error(path + ": not a regular file (a FIFO, device or socket is not read)");
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {  // mmap of 0 bytes fails; parse_safetensors reports the empty file
    void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (map == MAP_FAILED) {
      throw Error(path + ": cannot mmap " + std::to_string(size_) + " bytes: " + errno_message(errno));
    }
    map_ = map;
  }
  try {
    tensors_ = parse_safetensors({static_cast<const std::byte*>(map_), size_}, path_);
  } catch (...) {
    if (map_ != nullptr) ::munmap(map_, size_);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, size_);
}

Checkpoint::Checkpoint(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(dir, ec);
  if (!fs::exists(status)) throw Error(dir + ": checkpoint directory does not exist");
  if (!fs::is_directory(status)) throw Error(dir + ": not a directory");

  auto add_file = [&](std::unique_ptr<SafetensorsFile> file) {
    for (const TensorView& t : file->tensors()) {
      const auto [it, inserted] = by_name_.emplace(t.name, t);
      if (!inserted) {
        throw Error(file->path() + ": tensor " + quote_name(t.name) + " is also in " + it->second.file);
      }
    }
    files_.push_back(std::move(file));
  };

  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  const std::string single_path = (fs::path(dir) / "model.safetensors").string();
  if (!fs::exists(index_path, ec)) {
    if (!fs::exists(single_path, ec)) throw Error(dir + ": no model.safetensors or model.safetensors.index.json");
    add_file(std::make_unique<SafetensorsFile>(single_path));
    return;
  }

  nlohmann::json index;
  try {
    index = parse_json_bounded(read_regular_file(index_path, kMaxIndexBytes), kMaxIndexDepth, /*unique_keys=*/true);
  } catch (const Error& e) {
    throw Error(index_path + ": " + e.what());
  }
  const auto map_it = index.is_object() ? index.find("weight_map") : index.end();
  if (!index.is_object() || map_it == index.end() || !map_it->is_object()) {
    throw Error(index_path + ": no \"weight_map\" object (tensor name -> shard file)");
  }
  if (map_it->empty()) throw Error(index_path + ": \"weight_map\" is empty");

  std::unordered_map<std::string, std::string> shard_of;    // tensor -> shard file name
  std::map<std::string, std::vector<std::string>> by_shard;  // shard -> tensors, opened in name order
  for (const auto& [name, shard] : map_it->items()) {
    if (!shard.is_string()) throw Error(index_path + ": weight_map[" + quote_name(name) + "] is not a string");
    const auto& shard_name = shard.get_ref<const std::string&>();
    if (!is_plain_file_name(shard_name)) {
      throw Error(index_path + ": tensor " + quote_name(name) + ": shard name " + quote_name(shard_name) +
                  " must be a plain file name inside " + dir);
    }
    shard_of.emplace(name, shard_name);
    by_shard[shard_name].push_back(name);
  }

  for (const auto& [shard_name, names] : by_shard) {
    auto file = std::make_unique<SafetensorsFile>((fs::path(dir) / shard_name).string());
    std::unordered_set<std::string_view> present;
    for (const TensorView& t : file->tensors()) {
      const auto it = shard_of.find(t.name);
      if (it == shard_of.end()) {
        throw Error(file->path() + ": tensor " + quote_name(t.name) + " is not listed in " + index_path);
      }
      if (it->second != shard_name) {
        throw Error(file->path() + ": tensor " + quote_name(t.name) + " is listed in " + index_path + " for shard " +
                    quote_name(it->second));
      }
      present.insert(t.name);
    }
    for (const std::string& name : names) {
      if (!present.contains(name)) {
        throw Error(file->path() + ": tensor " + quote_name(name) + " listed in " + index_path + " is missing");
      }
    }
    add_file(std::move(file));
  }
}

const TensorView* Checkpoint::find(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &it->second;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, t] : by_name_) total += t.nbytes;
  return total;
}

void write_safetensors(const std::string& path, const std::vector<TensorSpec>& specs,
                       const std::function<void(const TensorSpec&, std::span<std::byte>)>& fill,
                       const std::map<std::string, std::string>& metadata) {
  // The header: "__metadata__" first, then the tensors in the caller's order with contiguous offsets,
  // each entry's fields in the order dtype, shape, data_offsets (as the reference writer emits them).
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::unordered_set<std::string_view> names;
  std::vector<size_t> sizes;  // bytes of each tensor
  size_t max_size = 0;
  uint64_t offset = 0;
  for (const TensorSpec& s : specs) {
    if (s.name == "__metadata__") throw Error(path + ": a tensor cannot be named \"__metadata__\"");
    if (!names.insert(s.name).second) throw Error(path + ": duplicate tensor name " + quote_name(s.name));
    uint64_t nbytes = dtype_size(s.dtype);
    for (int64_t d : s.shape) {
      if (d < 0 || !checked_mul(nbytes, static_cast<uint64_t>(d), &nbytes)) {
        throw Error(path + ": tensor " + quote_name(s.name) + ": invalid shape");
      }
    }
    if (nbytes > std::numeric_limits<uint64_t>::max() - offset) {
      throw Error(path + ": tensor " + quote_name(s.name) + ": data section overflows 64 bits");
    }
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(dtype_name(s.dtype));
    entry["shape"] = s.shape;
    entry["data_offsets"] = {offset, offset + nbytes};
    header[s.name] = std::move(entry);
    offset += nbytes;
    sizes.push_back(static_cast<size_t>(nbytes));
    max_size = std::max(max_size, static_cast<size_t>(nbytes));
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // a name or metadata string that is not UTF-8
    throw Error(path + ": cannot write header: " + json_message(e.what()));
  }
  text.append((kDataAlignment - text.size() % kDataAlignment) % kDataAlignment, ' ');
  if (text.size() > kMaxHeaderBytes) {
    throw Error(path + ": header of " + std::to_string(text.size()) + " bytes is over the " +
                std::to_string(kMaxHeaderBytes) + "-byte limit readers accept");
  }

  // Atomically (base/file.h): a fresh temporary name beside it, renamed over it once whole, the folder
  // flushed; a fill that throws leaves nothing behind.
  std::string name;
  const Fd dir = open_parent_folder(path, name);
  AtomicWriter out(dir.get(), name, path);
  const auto as_text = [](const std::byte* p, size_t n) { return std::string_view(reinterpret_cast<const char*>(p), n); };
  std::byte length[kLengthBytes];
  for (size_t i = 0; i < kLengthBytes; ++i) length[i] = static_cast<std::byte>(text.size() >> (8 * i));
  out.write(as_text(length, kLengthBytes));
  out.write(text);
  // One buffer, the size of the largest tensor, reused for all: the file is never in memory whole.
  const auto buffer = std::make_unique_for_overwrite<std::byte[]>(max_size);
  for (size_t i = 0; i < specs.size(); ++i) {
    fill(specs[i], std::span<std::byte>(buffer.get(), sizes[i]));
    out.write(as_text(buffer.get(), sizes[i]));
  }
  out.commit();
}

}  // namespace abridge::engine
