// CUDA device discovery. Only compiled when the build has CUDA (ABRIDGE_HAVE_CUDA).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace abridge::kernels {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_major = 0, sm_minor = 0;
  size_t total_memory = 0;  // bytes
  size_t free_memory = 0;   // bytes
};

// The visible CUDA devices; empty when there is no driver or no device (never throws).
std::vector<DeviceInfo> list_devices();

// Which prefill attention kernel runs, a diagnostic for comparing kernels (the backend reads it from
// ABRIDGE_PREFILL_ATTENTION): kMma keeps the mma.sync kernel on Hopper too, kWgmmaCpAsync runs the
// Hopper kernel without TMA copies, kAuto picks the fastest for the device.
enum class PrefillAttention { kAuto, kMma, kWgmmaCpAsync };
// "mma", "wgmma-cp-async"; anything else (empty: unset) is kAuto.
PrefillAttention parse_prefill_attention(std::string_view value);

// What the launchers need to know of the device they launch on. The backend looks it up once
// (query_device_caps) and passes it to every launcher that chooses by it, so kernels code keeps no
// process-wide state and reads no environment.
struct DeviceCaps {
  int multiprocessors = 132;        // streaming multiprocessors (grid sizing of norms and GEMVs)
  int sm_major = 0, sm_minor = 0;   // compute capability
  // Blocks of the tensor-core decode attention kernel the whole device holds at once, for head_dim 64
  // and 128 (decode_item_count() sizes its grid by them); 0: unknown, taken as one per multiprocessor.
  int decode_slots_hd64 = 0, decode_slots_hd128 = 0;
  PrefillAttention prefill_attention = PrefillAttention::kAuto;
};
// The current device's capabilities (call after cudaSetDevice). Throws std::runtime_error naming the
// call when the runtime cannot answer.
DeviceCaps query_device_caps(PrefillAttention prefill_attention = PrefillAttention::kAuto);

}  // namespace abridge::kernels
