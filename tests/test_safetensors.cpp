// Safetensors reading and writing: a round trip, a hand-written file, sharded checkpoints, and a table
// of hostile inputs, each of which must throw abridge::Error with one line naming the problem (and the
// tensor, where there is one). A seeded random smoke test stands in for the fuzzer in CI.

#include "engine/safetensors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "tests/test_support.h"

namespace abridge::engine {
namespace {

using abridge::testing::read_file;
using abridge::testing::TempDir;
using abridge::testing::write_file;

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// A file with a correct header length: le64(header.size()) + header + data.
std::string st_file(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// The message of the abridge::Error that `f` throws ("" and a test failure if it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const abridge::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected abridge::Error, nothing was thrown";
  return "";
}

// The byte pattern write tests fill tensor `name` with, and read tests expect.
std::byte pattern(const std::string& name, size_t i) {
  return static_cast<std::byte>((name.size() * 37 + i * 13 + (i >> 8)) & 0xff);
}

void fill_pattern(const TensorSpec& spec, std::span<std::byte> out) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = pattern(spec.name, i);
}

bool has_pattern(const TensorView& v) {
  for (size_t i = 0; i < v.nbytes; ++i) {
    if (v.data[i] != pattern(v.name, i)) return false;
  }
  return true;
}

// The files a write left in `dir` besides the ones it was asked for: temporary names of an atomic write.
size_t temp_files_in(const std::filesystem::path& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) n += e.path().filename().string().starts_with(".abridge-tmp-");
  return n;
}

const TensorView* find_view(const std::vector<TensorView>& views, const std::string& name) {
  const auto it = std::find_if(views.begin(), views.end(), [&](const TensorView& v) { return v.name == name; });
  return it == views.end() ? nullptr : &*it;
}

TEST(SafetensorsDType, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
  EXPECT_EQ(dtype_name(DType::kBF16), "BF16");
  EXPECT_EQ(dtype_name(DType::kF16), "F16");
  EXPECT_EQ(dtype_name(DType::kF32), "F32");
  EXPECT_EQ(dtype_size(DType::kF8E4M3), 1u);
  EXPECT_EQ(dtype_name(DType::kF8E4M3), "F8_E4M3");
}

// FP8 checkpoints store their quantized weights as F8_E4M3: one byte per value.
TEST(SafetensorsParse, F8E4M3Tensor) {
  const std::string header = R"({"w":{"dtype":"F8_E4M3","shape":[2,3],"data_offsets":[0,6]}})";
  const std::string data("\x38\x40\x7e\xfe\x00\x80", 6);
  const std::string file = st_file(header, data);
  const auto views = parse_safetensors(as_bytes(file), "f8.safetensors");
  ASSERT_EQ(views.size(), 1u);
  EXPECT_EQ(views[0].dtype, DType::kF8E4M3);
  EXPECT_EQ(views[0].nbytes, 6u);
  EXPECT_EQ(std::memcmp(views[0].data, data.data(), 6), 0);
}

TEST(SafetensorsTensorView, Numel) {
  TensorView v;
  v.shape = {3, 5, 7};
  EXPECT_EQ(v.numel(), 105);
  v.shape = {};
  EXPECT_EQ(v.numel(), 1);  // a scalar
  v.shape = {4, 0, 9};
  EXPECT_EQ(v.numel(), 0);
}

// Bytes written by hand to the format's spec, independent of write_safetensors.
TEST(SafetensorsParse, HandWrittenFile) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},)"
      R"("a":{"dtype":"BF16","shape":[1,2],"data_offsets":[0,4]}})";
  const std::string data = "\x01\x02\x03\x04" "ABCDEFGH";
  const std::string file = st_file(header + "   ", data);  // trailing-space padding is allowed
  const auto views = parse_safetensors(as_bytes(file), "hand.safetensors");
  ASSERT_EQ(views.size(), 2u);
  // In file order, whatever the header's order.
  EXPECT_EQ(views[0].name, "a");
  EXPECT_EQ(views[0].dtype, DType::kBF16);
  EXPECT_EQ(views[0].shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(views[0].nbytes, 4u);
  EXPECT_EQ(std::memcmp(views[0].data, "\x01\x02\x03\x04", 4), 0);
  EXPECT_EQ(views[1].name, "b");
  EXPECT_EQ(views[1].dtype, DType::kF32);
  EXPECT_EQ(views[1].numel(), 2);
  EXPECT_EQ(views[1].nbytes, 8u);
  EXPECT_EQ(std::memcmp(views[1].data, "ABCDEFGH", 8), 0);
  EXPECT_EQ(views[1].file, "hand.safetensors");
}

TEST(SafetensorsParse, EmptyHeaderObjectIsAnEmptyFile) {
  EXPECT_TRUE(parse_safetensors(as_bytes(st_file("{}", "")), "e.safetensors").empty());
  EXPECT_TRUE(parse_safetensors(as_bytes(st_file("{\"__metadata__\":{}}", "")), "e.safetensors").empty());
}

TEST(SafetensorsParse, ZeroSizeTensors) {
  const std::string header = R"({"z":{"dtype":"F16","shape":[0,5],"data_offsets":[2,2]},)"
                             R"("a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},)"
                             R"("y":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})";
  const auto views = parse_safetensors(as_bytes(st_file(header, "xy")), "z.safetensors");
  ASSERT_EQ(views.size(), 3u);
  EXPECT_EQ(find_view(views, "z")->nbytes, 0u);
  EXPECT_EQ(find_view(views, "z")->numel(), 0);
  EXPECT_EQ(find_view(views, "a")->nbytes, 2u);
}

TEST(SafetensorsWrite, RoundTrip) {
  TempDir dir;
  const std::string path = (dir / "model.safetensors").string();
  const std::vector<TensorSpec> specs = {
      {"model.embed_tokens.weight", DType::kBF16, {3, 5}},
      {"model.norm.weight", DType::kF32, {7}},
      {"empty", DType::kF16, {2, 0, 4}},
      {"scalar", DType::kF32, {}},
      {"odd", DType::kF16, {3}},
  };
  std::vector<std::string> filled;
  write_safetensors(
      path, specs,
      [&](const TensorSpec& spec, std::span<std::byte> out) {
        filled.push_back(spec.name);
        fill_pattern(spec, out);
      },
      {{"format", "pt"}});
  EXPECT_EQ(filled, (std::vector<std::string>{"model.embed_tokens.weight", "model.norm.weight", "empty", "scalar",
                                              "odd"}));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(temp_files_in(dir.path()), 0u);

  // The exact header: metadata first, tensors in the given order, offsets contiguous, padded with
  // spaces so the data section starts at a multiple of 8.
  const std::string bytes = read_file(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  EXPECT_EQ((8 + n) % 8, 0u);
  const std::string expected_header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("model.embed_tokens.weight":{"dtype":"BF16","shape":[3,5],"data_offsets":[0,30]},)"
      R"("model.norm.weight":{"dtype":"F32","shape":[7],"data_offsets":[30,58]},)"
      R"("empty":{"dtype":"F16","shape":[2,0,4],"data_offsets":[58,58]},)"
      R"("scalar":{"dtype":"F32","shape":[],"data_offsets":[58,62]},)"
      R"("odd":{"dtype":"F16","shape":[3],"data_offsets":[62,68]}})";
  ASSERT_LE(8 + n, bytes.size());
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.substr(0, expected_header.size()), expected_header);
  EXPECT_EQ(header.find_first_not_of(' ', expected_header.size()), std::string::npos) << "padding is spaces";
  EXPECT_LT(header.size() - expected_header.size(), 8u);
  EXPECT_EQ(bytes.size(), 8 + n + 68);

  SafetensorsFile file(path);
  EXPECT_EQ(file.path(), path);
  ASSERT_EQ(file.tensors().size(), specs.size());
  for (const TensorSpec& spec : specs) {
    const TensorView* v = find_view(file.tensors(), spec.name);
    ASSERT_NE(v, nullptr) << spec.name;
    EXPECT_EQ(v->dtype, spec.dtype) << spec.name;
    EXPECT_EQ(v->shape, spec.shape) << spec.name;
    EXPECT_EQ(v->nbytes, static_cast<size_t>(v->numel()) * dtype_size(spec.dtype)) << spec.name;
    EXPECT_TRUE(has_pattern(*v)) << spec.name;
    EXPECT_EQ(v->file, path);
  }
  // The data section starts 8-byte aligned in memory too (mmap is page-aligned).
  EXPECT_EQ(reinterpret_cast<uintptr_t>(find_view(file.tensors(), "model.embed_tokens.weight")->data) % 8, 0u);
}

TEST(SafetensorsWrite, NoMetadataAndOverwrite) {
  TempDir dir;
  const std::string path = (dir / "w.safetensors").string();
  write_file(path, "old contents");
  write_safetensors(path, {{"w", DType::kF16, {2, 2}}}, fill_pattern);
  const std::string bytes = read_file(path);
  EXPECT_EQ(bytes.substr(8, 1), "{");
  EXPECT_EQ(bytes.find("__metadata__"), std::string::npos);
  SafetensorsFile file(path);
  ASSERT_EQ(file.tensors().size(), 1u);
  EXPECT_TRUE(has_pattern(file.tensors()[0]));
}

TEST(SafetensorsWrite, ErrorsNameThePathAndLeaveNothing) {
  TempDir dir;
  const std::string missing_dir = (dir / "no" / "such" / "m.safetensors").string();
  std::string msg = error_of([&] { write_safetensors(missing_dir, {{"w", DType::kF32, {1}}}, fill_pattern); });
  EXPECT_NE(msg.find(missing_dir), std::string::npos) << msg;

  // A fill that throws: no file at the path, no temp file left behind.
  const std::string path = (dir / "m.safetensors").string();
  EXPECT_THROW(write_safetensors(path, {{"a", DType::kF32, {4}}, {"b", DType::kF32, {4}}},
                                 [](const TensorSpec& spec, std::span<std::byte>) {
                                   if (spec.name == "b") throw abridge::Error("source tensor unreadable");
                                 }),
               abridge::Error);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(temp_files_in(dir.path()), 0u);

  msg = error_of([&] {
    write_safetensors(path, {{"a", DType::kF32, {1}}, {"a", DType::kF32, {1}}}, fill_pattern);
  });
  EXPECT_NE(msg.find("duplicate tensor name 'a'"), std::string::npos) << msg;
  msg = error_of([&] { write_safetensors(path, {{"a", DType::kF32, {-1}}}, fill_pattern); });
  EXPECT_NE(msg.find("invalid shape"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(path));
}

// ---- hostile and malformed headers ----

struct BadCase {
  const char* what;
  std::string bytes;
  std::vector<std::string> expect;  // substrings the message must contain
};

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, uint64_t begin,
                  uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(begin) + "," + std::to_string(end) + "]}";
}

// "[1,1,...,1]" with `rank` entries.
std::string ones_shape(int rank) {
  std::string s = "[1";
  for (int i = 1; i < rank; ++i) s += ",1";
  return s + "]";
}

std::vector<BadCase> bad_cases() {
  const std::string w4 = entry("w", "BF16", "[2]", 0, 4);  // a valid 4-byte tensor
  return {
      {"empty file", "", {"empty file", "8-byte header length"}},
      {"7 bytes", std::string(7, '\x01'), {"truncated: 7 bytes", "8-byte header length"}},
      {"header length past the file", le64(100) + "{}", {"header length 100", "past the end of the file (10 bytes)"}},
      {"header length over 100 MB", le64(100'000'001) + "{}", {"header length 100000001", "100000000-byte limit"}},
      {"header length 2^64-1", le64(~uint64_t{0}) + "{}", {"header length 18446744073709551615"}},
      {"not JSON", st_file("{not json", ""), {"header is not valid JSON"}},
      {"JSON truncated", st_file("{\"w\":{\"dtype\":\"BF16\"", ""), {"header is not valid JSON"}},
      {"trailing garbage", st_file("{}x", ""), {"header is not valid JSON"}},
      {"trailing NULs", st_file(std::string("{}\0\0", 4), ""), {"header is not valid JSON", "NUL byte"}},
      {"NUL then more JSON", st_file(std::string("{}\0{\"w\":[]}", 11), ""), {"NUL byte at header offset 2"}},
      {"invalid UTF-8", st_file("{\"\xff\xfe\":1}", ""), {"header is not valid JSON"}},
      {"empty header", st_file("", ""), {"header is not valid JSON"}},
      {"JSON array", st_file("[1,2]", ""), {"header is not a JSON object", "an array"}},
      {"JSON string", st_file("\"x\"", ""), {"header is not a JSON object"}},
      {"deep nesting", st_file(std::string(200000, '['), ""), {"header is not a JSON object"}},
      {"deep nesting in shape", st_file("{\"w\":{\"shape\":[[[[[[[[[[[[" + std::string(100000, '['), ""),
       {"tensor 'w'", "shape entry is an array"}},
      {"entry not an object", st_file("{\"w\":[1]}", ""), {"tensor 'w'", "entry is an array"}},
      {"missing dtype", st_file(R"({"w":{"shape":[2],"data_offsets":[0,4]}})", "abcd"),
       {"tensor 'w'", "missing field 'dtype'"}},
      {"missing shape", st_file(R"({"w":{"dtype":"BF16","data_offsets":[0,4]}})", "abcd"),
       {"tensor 'w'", "missing field 'shape'"}},
      {"missing data_offsets", st_file(R"({"w":{"dtype":"BF16","shape":[2]}})", "abcd"),
       {"tensor 'w'", "missing field 'data_offsets'"}},
      {"extra field", st_file(R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4],"x":1}})", "abcd"),
       {"tensor 'w'", "unknown field 'x'"}},
      {"field twice", st_file(R"({"w":{"dtype":"BF16","dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd"),
       {"tensor 'w'", "field 'dtype' appears twice"}},
      {"dtype not a string", st_file(R"({"w":{"dtype":2,"shape":[2],"data_offsets":[0,4]}})", "abcd"),
       {"tensor 'w'", "dtype is an integer"}},
      {"unknown dtype", st_file("{" + entry("w", "Q7", "[2]", 0, 4) + "}", "abcd"),
       {"tensor 'w'", "unknown dtype 'Q7'"}},
      {"unsupported dtype F64", st_file("{" + entry("w", "F64", "[1]", 0, 8) + "}", "abcdefgh"),
       {"tensor 'w'", "unsupported dtype F64"}},
      {"unsupported dtype I64", st_file("{" + entry("ids", "I64", "[1]", 0, 8) + "}", "abcdefgh"),
       {"tensor 'ids'", "unsupported dtype I64"}},
      {"unsupported dtype F8_E5M2", st_file("{" + entry("q", "F8_E5M2", "[4]", 0, 4) + "}", "abcd"),
       {"tensor 'q'", "unsupported dtype F8_E5M2"}},
      {"F8_E4M3 with bytes for two per value", st_file("{" + entry("q", "F8_E4M3", "[2]", 0, 4) + "}", "abcd"),
       {"tensor 'q'", "F8_E4M3"}},
      {"shape not an array", st_file(R"({"w":{"dtype":"BF16","shape":2,"data_offsets":[0,4]}})", "abcd"),
       {"tensor 'w'", "shape is an integer"}},
      {"negative shape", st_file("{" + entry("w", "BF16", "[-2]", 0, 4) + "}", "abcd"),
       {"tensor 'w'", "shape entry is a negative integer"}},
      {"float shape", st_file("{" + entry("w", "BF16", "[2.0]", 0, 4) + "}", "abcd"),
       {"tensor 'w'", "shape entry is a non-integer"}},
      {"huge JSON number", st_file("{" + entry("w", "BF16", "[99999999999999999999999999]", 0, 4) + "}", "abcd"),
       {"tensor 'w'", "shape entry is a non-integer or out-of-range number"}},
      {"string in shape", st_file("{" + entry("w", "BF16", "[\"2\"]", 0, 4) + "}", "abcd"),
       {"tensor 'w'", "shape entry is a string"}},
      {"shape product overflows",
       st_file("{" + entry("w", "BF16", "[4294967296,4294967296,16]", 0, 4) + "}", "abcd"),
       {"tensor 'w'", "[4294967296, 4294967296, 16]", "overflows"}},
      {"shape entry over int64",
       st_file("{" + entry("w", "BF16", "[9223372036854775808]", 0, 4) + "}", "abcd"),
       {"tensor 'w'", "overflows"}},
      {"bytes overflow", st_file("{" + entry("w", "F32", "[4611686018427387904]", 0, 4) + "}", "abcd"),
       {"tensor 'w'", "overflows"}},
      {"too many dimensions", st_file("{" + entry("w", "BF16", ones_shape(65), 0, 2) + "}", "ab"),
       {"tensor 'w'", "more than 64 dimensions"}},
      {"size mismatch", st_file("{" + entry("model.norm.weight", "BF16", "[256]", 0, 10) + "}", "0123456789"),
       {"tensor 'model.norm.weight'", "data_offsets [0, 10) do not match shape [256] x BF16 = 512 bytes"}},
      {"one offset", st_file(R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[4]}})", "abcd"),
       {"tensor 'w'", "data_offsets has 1 entry,"}},
      {"no offsets", st_file(R"({"w":{"dtype":"BF16","shape":[0],"data_offsets":[]}})", ""),
       {"tensor 'w'", "data_offsets has 0 entries"}},
      {"three offsets", st_file(R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4,8]}})", "abcd"),
       {"tensor 'w'", "data_offsets has more than 2 entries"}},
      {"negative offset", st_file(R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[-4,0]}})", "abcd"),
       {"tensor 'w'", "data_offsets entry is a negative integer"}},
      {"offsets past the end", st_file("{" + entry("w", "BF16", "[4]", 0, 8) + "}", "abcd"),
       {"tensor 'w'", "data_offsets [0, 8) run past the end of the data section (4 bytes"}},
      {"huge offsets", st_file("{" + entry("w", "BF16", "[2]", 18446744073709551611u, 18446744073709551615u) + "}",
                               "abcd"),
       {"tensor 'w'", "run past the end of the data section"}},
      {"begin > end", st_file("{" + entry("w", "BF16", "[2]", 4, 0) + "}", "abcd"),
       {"tensor 'w'", "data_offsets [4, 0) have begin > end"}},
      {"gap between tensors",
       st_file("{" + w4 + "," + entry("v", "BF16", "[2]", 8, 12) + "}", "abcdefghijkl"),
       {"no tensor covers bytes [4, 8)", "tensor 'v'"}},
      {"gap at the start", st_file("{" + entry("v", "BF16", "[2]", 4, 8) + "}", "abcdefgh"),
       {"no tensor covers bytes [0, 4)", "tensor 'v'"}},
      {"overlapping tensors",
       st_file("{" + w4 + "," + entry("v", "BF16", "[2]", 2, 6) + "}", "abcdef"),
       {"tensor 'v'", "overlap tensor 'w' [0, 4)"}},
      {"same offsets twice",
       st_file("{" + w4 + "," + entry("v", "BF16", "[2]", 0, 4) + "}", "abcd"),
       {"overlap"}},
      {"data not fully covered", st_file("{" + w4 + "}", "abcdefgh"),
       {"tensors cover 4 of the 8 bytes of the data section"}},
      {"data but no tensors", st_file("{}", "abcd"), {"tensors cover 0 of the 4 bytes"}},
      {"duplicate names", st_file("{" + w4 + "," + w4 + "}", "abcd"), {"duplicate tensor name 'w'"}},
      {"duplicate __metadata__", st_file(R"({"__metadata__":{},"__metadata__":{}})", ""),
       {"duplicate \"__metadata__\""}},
      {"metadata value not a string", st_file(R"({"__metadata__":{"format":1}})", ""),
       {"__metadata__ value for 'format' is an integer"}},
      {"metadata value an object", st_file(R"({"__metadata__":{"format":{"a":"b"}}})", ""),
       {"__metadata__ value for 'format' is an object"}},
      {"metadata not an object", st_file(R"({"__metadata__":"pt"})", ""), {"__metadata__ is a string"}},
      {"truncated file", st_file("{" + w4 + "," + entry("v", "F32", "[4]", 4, 20) + "}", "abcdefgh"),
       {"tensor 'v'", "run past the end of the data section (8 bytes; is the file truncated?)"}},
      {"name with a newline",
       st_file("{" + entry("a\\nb", "BF16", "[2]", 0, 4) + "," + entry("a\\nb", "BF16", "[2]", 0, 4) + "}", "abcd"),
       {"duplicate tensor name 'a\\x0ab'"}},
  };
}

TEST(SafetensorsParse, HostileInputsThrowOneLineNamingTheProblem) {
  for (const BadCase& c : bad_cases()) {
    SCOPED_TRACE(c.what);
    const std::string msg = error_of([&] { parse_safetensors(as_bytes(c.bytes), "bad.safetensors"); });
    EXPECT_TRUE(msg.starts_with("bad.safetensors: ")) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_LT(msg.size(), 600u) << msg;
    for (const std::string& s : c.expect) EXPECT_NE(msg.find(s), std::string::npos) << "want '" << s << "' in: " << msg;
  }
}

TEST(SafetensorsParse, LongNamesAreCutInMessages) {
  const std::string name(5000, 'n');
  const std::string msg = error_of([&] {
    parse_safetensors(as_bytes(st_file("{" + entry(name, "Q9", "[2]", 0, 4) + "}", "abcd")), "bad.safetensors");
  });
  EXPECT_NE(msg.find("unknown dtype 'Q9'"), std::string::npos) << msg;
  EXPECT_LT(msg.size(), 400u);
}

// In-CI fuzz smoke: random and mutated headers either parse into views inside the buffer or throw
// abridge::Error; anything else (another exception, a crash) fails.
TEST(SafetensorsParse, RandomHeadersNeverCrash) {
  std::mt19937_64 rng(20240611);
  const std::string valid_header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  const std::string valid_data = "0123456789ab";
  const std::string alphabet = "{}[]\":,0123456789-.eE abdfhtnu_FBIS";
  int parsed = 0;
  int data_only_parsed = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    std::string header;
    std::string data = valid_data;
    const int kind = iter % 4;
    if (kind == 0) {  // random bytes
      header.resize(rng() % 200);
      for (char& c : header) c = static_cast<char>(rng());
    } else if (kind == 1) {  // random JSON-ish characters
      header.resize(rng() % 200);
      for (char& c : header) c = alphabet[rng() % alphabet.size()];
    } else if (kind == 2) {  // a valid header with a few bytes changed, inserted or removed
      header = valid_header;
      for (int k = 1 + rng() % 4; k > 0 && !header.empty(); --k) {
        const size_t at = rng() % header.size();
        switch (rng() % 3) {
          case 0: header[at] = alphabet[rng() % alphabet.size()]; break;
          case 1: header.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
          default: header.erase(at, 1);
        }
      }
      data.resize(rng() % 16);
    } else {  // a valid header, only the data bytes changed: must parse
      header = valid_header;
      for (char& c : data) c = static_cast<char>(rng());
    }
    std::string file = st_file(header, data);
    if (kind == 0 && rng() % 4 == 0) file.replace(0, 8, le64(rng()));  // a random header length too
    try {
      const auto views = parse_safetensors(as_bytes(file), "fuzz.safetensors");
      const auto* begin = reinterpret_cast<const std::byte*>(file.data());
      for (const TensorView& v : views) {
        ASSERT_GE(v.data, begin);
        ASSERT_LE(v.data + v.nbytes, begin + file.size());
        ASSERT_EQ(v.nbytes, static_cast<size_t>(v.numel()) * dtype_size(v.dtype));
      }
      ++parsed;
      if (kind == 3) ++data_only_parsed;
    } catch (const abridge::Error& e) {
      const std::string msg = e.what();
      ASSERT_TRUE(msg.starts_with("fuzz.safetensors: ")) << msg;
      ASSERT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
  EXPECT_EQ(data_only_parsed, 500);
  EXPECT_GT(parsed, data_only_parsed);  // some mutations leave a valid header
}

// ---- files and checkpoint directories ----

TEST(SafetensorsFileTest, OpenErrors) {
  TempDir dir;
  std::string msg = error_of([&] { SafetensorsFile f((dir / "missing.safetensors").string()); });
  EXPECT_NE(msg.find("missing.safetensors: cannot open"), std::string::npos) << msg;

  write_file(dir / "short.safetensors", "12345");
  msg = error_of([&] { SafetensorsFile f((dir / "short.safetensors").string()); });
  EXPECT_NE(msg.find("short.safetensors: truncated: 5 bytes, a safetensors file starts with an 8-byte header length"),
            std::string::npos)
      << msg;

  write_file(dir / "empty.safetensors", "");
  msg = error_of([&] { SafetensorsFile f((dir / "empty.safetensors").string()); });
  EXPECT_NE(msg.find("empty file"), std::string::npos) << msg;

  msg = error_of([&] { SafetensorsFile f(dir.path().string()); });
  EXPECT_NE(msg.find("not a regular file"), std::string::npos) << msg;

  // A file cut short after a valid header.
  const std::string path = (dir / "cut.safetensors").string();
  write_safetensors(path, {{"a", DType::kF32, {4}}, {"b", DType::kF32, {4}}}, fill_pattern);
  const std::string bytes = read_file(path);
  write_file(path, bytes.substr(0, bytes.size() - 3));
  msg = error_of([&] { SafetensorsFile f(path); });
  EXPECT_NE(msg.find("tensor 'b'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST(Checkpoint, SingleFile) {
  TempDir dir;
  write_safetensors((dir / "model.safetensors").string(), {{"a", DType::kBF16, {4, 4}}, {"b", DType::kF32, {3}}},
                    fill_pattern);
  Checkpoint ckpt(dir.path().string());
  ASSERT_EQ(ckpt.tensors().size(), 2u);
  const TensorView* a = ckpt.find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{4, 4}));
  EXPECT_TRUE(has_pattern(*a));
  EXPECT_EQ(ckpt.find("c"), nullptr);
  EXPECT_EQ(ckpt.total_bytes(), 32u + 12u);
}

// Two shards with an index, as Hugging Face writes them.
void write_sharded(const TempDir& dir, const std::string& weight_map) {
  write_safetensors((dir / "model-00001-of-00002.safetensors").string(),
                    {{"model.embed.weight", DType::kBF16, {8, 4}}, {"model.layers.0.w", DType::kBF16, {4, 4}}},
                    fill_pattern, {{"format", "pt"}});
  write_safetensors((dir / "model-00002-of-00002.safetensors").string(), {{"lm_head.weight", DType::kF32, {8, 4}}},
                    fill_pattern, {{"format", "pt"}});
  write_file(dir / "model.safetensors.index.json",
             R"({"metadata":{"total_size":224},"weight_map":)" + weight_map + "}");
}

const std::string kGoodWeightMap = R"({"model.embed.weight":"model-00001-of-00002.safetensors",)"
                                   R"("model.layers.0.w":"model-00001-of-00002.safetensors",)"
                                   R"("lm_head.weight":"model-00002-of-00002.safetensors"})";

TEST(Checkpoint, ShardedWithIndex) {
  TempDir dir;
  write_sharded(dir, kGoodWeightMap);
  // A stray model.safetensors is ignored when an index exists.
  write_file(dir / "model.safetensors", "not read");
  Checkpoint ckpt(dir.path().string());
  ASSERT_EQ(ckpt.tensors().size(), 3u);
  const TensorView* head = ckpt.find("lm_head.weight");
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->dtype, DType::kF32);
  EXPECT_TRUE(head->file.ends_with("model-00002-of-00002.safetensors")) << head->file;
  EXPECT_TRUE(has_pattern(*head));
  const TensorView* embed = ckpt.find("model.embed.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_TRUE(embed->file.ends_with("model-00001-of-00002.safetensors")) << embed->file;
  EXPECT_TRUE(has_pattern(*embed));
  EXPECT_EQ(ckpt.total_bytes(), 64u + 32u + 128u);

  // The views stay valid when the Checkpoint is moved (the maps are owned through pointers).
  auto moved = std::make_unique<Checkpoint>(std::move(ckpt));
  EXPECT_TRUE(has_pattern(*moved->find("model.layers.0.w")));
}

TEST(Checkpoint, BadDirectoriesAndIndexes) {
  struct Case {
    const char* what;
    std::string weight_map;  // written as the index's weight_map; "" = write no index
    std::string index_override;  // when set, the whole index file
    std::vector<std::string> expect;
  };
  const std::string shard1 = "model-00001-of-00002.safetensors";
  const std::string shard2 = "model-00002-of-00002.safetensors";
  const std::vector<Case> cases = {
      {"shard name escapes the directory",
       R"({"model.embed.weight":"../model-00001-of-00002.safetensors","model.layers.0.w":")" + shard1 +
           R"(","lm_head.weight":")" + shard2 + "\"}",
       "",
       {"model.safetensors.index.json", "tensor 'model.embed.weight'", "'../model-00001-of-00002.safetensors'",
        "plain file name"}},
      {"absolute shard name", R"({"lm_head.weight":"/etc/passwd"})", "", {"'/etc/passwd'", "plain file name"}},
      {"shard name ..", R"({"lm_head.weight":".."})", "", {"plain file name"}},
      {"tensor missing from its shard",
       R"({"model.embed.weight":")" + shard1 + R"(","model.layers.0.w":")" + shard1 +
           R"(","lm_head.weight":")" + shard2 + R"(","model.norm.weight":")" + shard2 + "\"}",
       "",
       {shard2, "tensor 'model.norm.weight'", "is missing"}},
      {"tensor listed for another shard",
       R"({"model.embed.weight":")" + shard1 + R"(","model.layers.0.w":")" + shard2 +
           R"(","lm_head.weight":")" + shard2 + "\"}",
       "",
       {shard1, "tensor 'model.layers.0.w'", "is listed in", "for shard '" + shard2 + "'"}},
      {"tensor not listed",
       R"({"model.embed.weight":")" + shard1 + R"(","lm_head.weight":")" + shard2 + "\"}",
       "",
       {shard1, "tensor 'model.layers.0.w' is not listed"}},
      {"shard file missing",
       kGoodWeightMap.substr(0, kGoodWeightMap.size() - 1) + R"(,"extra":"model-00003.safetensors"})", "",
       {"model-00003.safetensors: cannot open"}},
      {"duplicate weight_map key",
       kGoodWeightMap.substr(0, kGoodWeightMap.size() - 1) + R"(,"lm_head.weight":")" + shard1 + "\"}", "",
       {"model.safetensors.index.json", "duplicate JSON key 'lm_head.weight'"}},
      {"shard not a string", R"({"lm_head.weight":2})", "", {"weight_map['lm_head.weight'] is not a string"}},
      {"weight_map not an object", "[]", "", {"no \"weight_map\" object"}},
      {"weight_map empty", "{}", "", {"\"weight_map\" is empty"}},
      {"index not JSON", "", "{\"weight_map\":", {"model.safetensors.index.json: not valid JSON"}},
      {"index an array", "", "[1]", {"no \"weight_map\" object"}},
      {"index nested deeply", "", std::string(10000, '[') + std::string(10000, ']'), {"nested more than"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    TempDir dir;
    write_sharded(dir, c.weight_map.empty() ? "{}" : c.weight_map);
    if (!c.index_override.empty()) write_file(dir / "model.safetensors.index.json", c.index_override);
    const std::string msg = error_of([&] { Checkpoint ckpt(dir.path().string()); });
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const std::string& s : c.expect) EXPECT_NE(msg.find(s), std::string::npos) << "want '" << s << "' in: " << msg;
  }

  TempDir dir;
  const std::string missing = (dir / "nope").string();
  std::string msg = error_of([&] { Checkpoint ckpt(missing); });
  EXPECT_EQ(msg, missing + ": checkpoint directory does not exist");
  msg = error_of([&] { Checkpoint ckpt(dir.path().string()); });
  EXPECT_EQ(msg, dir.path().string() + ": no model.safetensors or model.safetensors.index.json");
  write_file(dir / "file", "x");
  msg = error_of([&] { Checkpoint ckpt((dir / "file").string()); });
  EXPECT_NE(msg.find("not a directory"), std::string::npos) << msg;
  // A bad single file is reported with its path.
  write_file(dir / "model.safetensors", "1234567");
  msg = error_of([&] { Checkpoint ckpt(dir.path().string()); });
  EXPECT_NE(msg.find("model.safetensors: truncated: 7 bytes"), std::string::npos) << msg;
}

}  // namespace
}  // namespace abridge::engine
