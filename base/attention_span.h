// The keys a token attends to, one rule for the engine's KV bookkeeping, the CPU backend and the CUDA
// kernels (StreamingLLM's window and attention sinks, Xiao et al. 2023, or a model's own sliding window).
#pragma once

#include <cstdint>

#include "base/host_device.h"

namespace abridge {

// Keys of the token at position p: positions [0, sink_end) and [begin, p]. A window w (the engine's
// `window` when > 0, else the model's `layer_window` for the layer; <= 0: none) keeps (p - w, p]; the
// engine's window also keeps the first `sinks` positions (a model's own window keeps no sinks). With no
// window both are 0: every key [0, p].
struct AttentionSpan {
  int64_t sink_end;
  int64_t begin;
};

ABRIDGE_HOST_DEVICE constexpr AttentionSpan attention_span(int64_t p, int64_t window, int64_t sinks,
                                                           int64_t layer_window) {
  const int64_t w = window > 0 ? window : layer_window;
  if (w <= 0) return {0, 0};
  const int64_t begin = p - w + 1 > 0 ? p - w + 1 : 0;
  const int64_t sink_end = window > 0 ? (sinks < begin ? sinks : begin) : 0;
  return {sink_end, begin};
}

}  // namespace abridge
