#include "engine/fp8_checkpoint.h"

#include <cmath>
#include <cstring>
#include <sstream>
#include <unordered_map>

#include "base/error.h"
#include "engine/weights.h"

namespace abridge::engine {
namespace {


std::string module_of(const std::string& weight_name) {
  const std::string suffix = ".weight";
  return weight_name.size() > suffix.size() && weight_name.ends_with(suffix)
             ? weight_name.substr(0, weight_name.size() - suffix.size())
             : weight_name;
}

std::vector<int64_t> scale_shape(const std::vector<int64_t>& weight_shape) {
  return {fp8_blocks(weight_shape[0]), fp8_blocks(weight_shape[1])};
}

std::string number_str(float v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

bool is_linear(TensorRole role) {
  switch (role) {
    case TensorRole::kQ: case TensorRole::kK: case TensorRole::kV: case TensorRole::kO:
    case TensorRole::kGate: case TensorRole::kUp: case TensorRole::kDown: case TensorRole::kLmHead:
      return true;
    default:
      return false;
  }
}

std::string scale_name(const std::string& weight_name) { return weight_name + "_scale_inv"; }

void check_fp8_tensors(const ModelConfig& c, const Checkpoint& ckpt) {
  for (const TensorEntry& e : tensor_table(c)) {
    const TensorView* w = ckpt.find(e.name);
    if (!w || w->dtype != DType::kF8E4M3) continue;
    const std::string where = w->file + ": tensor '" + e.name + "' is F8_E4M3";
    if (!is_linear(e.role)) throw Error(where + ", but only linear layers may be (embeddings and norms stay bf16)");
    if (!c.quantization) throw Error(where + ", but config.json has no quantization_config");
    if (!c.quantization->converts(module_of(e.name)))
      throw Error(where + ", but config.json's quantization_config keeps '" + module_of(e.name) +
                  "' unquantized (modules_to_not_convert)");
    const std::string sname = scale_name(e.name);
    const std::vector<int64_t> want = scale_shape(e.shape);
    const TensorView* s = ckpt.find(sname);
    if (!s)
      throw Error("checkpoint: missing tensor '" + sname + "' (the F8_E4M3 weight '" + e.name +
                  "' needs one scale per 128x128 tile, shape " + shape_str(want) + ")");
    if (s->dtype == DType::kF8E4M3)
      throw Error(s->file + ": tensor '" + sname + "' is F8_E4M3; scales must be BF16, F16 or F32");
    if (s->shape != want)
      throw Error(s->file + ": tensor '" + sname + "' has shape " + shape_str(s->shape) + ", the weight " +
                  shape_str(e.shape) + " in 128x128 tiles needs " + shape_str(want));
    std::vector<float> v(static_cast<size_t>(s->numel()));
    to_f32(s->dtype, s->data, v.data(), v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      if (std::isfinite(v[i]) && v[i] > 0) continue;
      const int64_t r = static_cast<int64_t>(i) / want[1], col = static_cast<int64_t>(i) % want[1];
      const char* what = std::isnan(v[i]) ? "a NaN" : std::isinf(v[i]) ? "an infinite" : "a non-positive";
      throw Error(s->file + ": tensor '" + sname + "' has " + what + " scale (" + number_str(v[i]) + ") at [" +
                  std::to_string(r) + ", " + std::to_string(col) + "]");
    }
  }
}

bool has_fp8_weights(const ModelConfig& c, const Checkpoint& ckpt) {
  for (const TensorEntry& e : tensor_table(c)) {
    const TensorView* w = ckpt.find(e.name);
    if (w && w->dtype == DType::kF8E4M3) return true;
  }
  return false;
}

Fp8Matrix load_fp8_matrix(const Checkpoint& ckpt, const std::string& weight_name) {
  const TensorView* w = ckpt.find(weight_name);
  const TensorView* s = ckpt.find(scale_name(weight_name));
  ABRIDGE_CHECK(w && s && w->dtype == DType::kF8E4M3 && w->shape.size() == 2, weight_name);  // checked at open
  Fp8Matrix m;
  m.rows = w->shape[0];
  m.cols = w->shape[1];
  m.q.resize(static_cast<size_t>(w->numel()));
  to_f32(w->dtype, w->data, m.q.data(), m.q.size());
  m.scale_inv.resize(static_cast<size_t>(s->numel()));
  to_f32(s->dtype, s->data, m.scale_inv.data(), m.scale_inv.size());
  return m;
}

QuantizationConfig default_fp8_quantization() {
  QuantizationConfig q;
  q.modules_to_not_convert = {"lm_head"};
  return q;
}

QuantizeSummary quantize_checkpoint(const ModelConfig& c, const Checkpoint& src, const QuantizationConfig& q,
                                    const std::string& path) {
  QuantizeSummary sum;
  std::vector<TensorSpec> specs;
  std::unordered_map<std::string, const TensorView*> source;  // spec name -> the source weight
  for (const TensorEntry& e : tensor_table(c)) {
    const TensorView* v = src.find(e.name);
    if (!v) {
      ABRIDGE_CHECK(e.optional, e.name);  // check_checkpoint ran when src was opened
      continue;
    }
    if (v->dtype == DType::kF8E4M3) throw Error(v->file + ": tensor '" + e.name + "' is already F8_E4M3");
    source[e.name] = v;
    if (is_linear(e.role) && q.converts(module_of(e.name))) {
      specs.push_back({e.name, DType::kF8E4M3, e.shape});
      specs.push_back({scale_name(e.name), DType::kF32, scale_shape(e.shape)});
      source[scale_name(e.name)] = v;
      ++sum.fp8_tensors;
    } else {
      specs.push_back({e.name, DType::kBF16, e.shape});
      ++sum.bf16_tensors;
    }
  }
  // write_safetensors fills in spec order, so a weight's scales (its next spec) are kept from its fill.
  std::vector<float> pending_scales;
  std::vector<float> f;
  write_safetensors(
      path, specs,
      [&](const TensorSpec& spec, std::span<std::byte> out) {
        const TensorView* v = source.at(spec.name);
        if (spec.dtype == DType::kF32) {  // the scales of the weight just written
          ABRIDGE_CHECK(pending_scales.size() * 4 == out.size(), spec.name);
          std::memcpy(out.data(), pending_scales.data(), out.size());
          return;
        }
        f.resize(static_cast<size_t>(v->numel()));
        to_f32(v->dtype, v->data, f.data(), f.size());
        for (size_t i = 0; i < f.size(); ++i)
          if (!std::isfinite(f[i])) throw Error(v->file + ": tensor '" + v->name + "' has a non-finite value");
        if (spec.dtype == DType::kBF16) {
          for (size_t i = 0; i < f.size(); ++i) {
            const uint16_t h = f32_to_bf16(f[i]);
            std::memcpy(out.data() + 2 * i, &h, 2);
          }
          return;
        }
        pending_scales.resize(static_cast<size_t>(fp8_blocks(spec.shape[0]) * fp8_blocks(spec.shape[1])));
        quantize_tiles(f.data(), spec.shape[0], spec.shape[1], reinterpret_cast<uint8_t*>(out.data()),
                       pending_scales.data());
      },
      {{"format", "pt"}});
  for (const TensorSpec& spec : specs) {
    uint64_t n = dtype_size(spec.dtype);
    for (int64_t d : spec.shape) n *= static_cast<uint64_t>(d);
    sum.bytes += n;
  }
  return sum;
}

}  // namespace abridge::engine
