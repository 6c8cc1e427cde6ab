// FNV-1a (Fowler, Noll, Vo): a small, stable hash of bytes, the same on every machine and build. Used
// where a hash names something that must not change between runs: a tensor's random-weight stream, an
// input's shard, a term in the chunker's cohesion sets. Not for adversarial keys.
#pragma once

#include <cstdint>
#include <string_view>

namespace abridge {

// 64-bit FNV-1a (offset basis 0xCBF29CE484222325, prime 0x100000001B3).
constexpr uint64_t fnv1a64(std::string_view s, uint64_t h = 0xCBF29CE484222325ull) {
  for (const char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001B3ull;
  return h;
}

// 32-bit FNV-1a (offset basis 2166136261, prime 16777619).
constexpr uint32_t fnv1a32(std::string_view s, uint32_t h = 2166136261u) {
  for (const char c : s) h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
  return h;
}

}  // namespace abridge
