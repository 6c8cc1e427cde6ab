// CUDA device discovery. Only compiled when the build has CUDA (ABRIDGE_HAVE_CUDA).
#pragma once

#include <string>
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

}  // namespace abridge::kernels
