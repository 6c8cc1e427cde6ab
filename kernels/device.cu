#include <cuda_runtime.h>

#include "kernels/device.h"

#include <stdexcept>
#include <string>

#include "kernels/ops.h"

namespace abridge::kernels {

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> out;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return out;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    DeviceInfo d;
    d.index = i;
    d.name = prop.name;
    d.sm_major = prop.major;
    d.sm_minor = prop.minor;
    d.total_memory = prop.totalGlobalMem;
    if (cudaSetDevice(i) == cudaSuccess) cudaMemGetInfo(&d.free_memory, &d.total_memory);
    out.push_back(d);
  }
  return out;
}

PrefillAttention parse_prefill_attention(std::string_view value) {
  if (value == "mma") return PrefillAttention::kMma;
  if (value == "wgmma-cp-async") return PrefillAttention::kWgmmaCpAsync;
  return PrefillAttention::kAuto;
}

DeviceCaps query_device_caps(PrefillAttention prefill_attention) {
  auto ok = [](cudaError_t e, const char* call) {
    if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA: ") + call + ": " + cudaGetErrorString(e));
  };
  DeviceCaps caps;
  int device = 0;
  ok(cudaGetDevice(&device), "cudaGetDevice");
  ok(cudaDeviceGetAttribute(&caps.multiprocessors, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  if (caps.multiprocessors <= 0) caps.multiprocessors = 132;
  ok(cudaDeviceGetAttribute(&caps.sm_major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  ok(cudaDeviceGetAttribute(&caps.sm_minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute");
  caps.decode_slots_hd64 = attention_decode_slots(64, caps.multiprocessors);
  caps.decode_slots_hd128 = attention_decode_slots(128, caps.multiprocessors);
  caps.prefill_attention = prefill_attention;
  return caps;
}

}  // namespace abridge::kernels
