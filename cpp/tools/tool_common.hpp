// What the project's C++ tools (fcrn_time, fcrn_output) share: choosing the
// device and waiting for it.
#ifndef FCRN_TOOLS_TOOL_COMMON_HPP_
#define FCRN_TOOLS_TOOL_COMMON_HPP_

#include "caffe/caffe.hpp"

namespace fcrn {

// Waits for the GPU's queued work, so that a host clock measures it.
inline void Synchronize() {
#ifndef CPU_ONLY
  if (caffe::Caffe::mode() == caffe::Caffe::GPU) {
    CUDA_CHECK(cudaDeviceSynchronize());
  }
#endif
}

// Device memory in use on the current GPU (total - free), 0 on the CPU.
inline double DeviceUsedBytes() {
#ifndef CPU_ONLY
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return static_cast<double>(total_bytes - free_bytes);
#else
  return 0;
#endif
}

// GPU `gpu`, with its CUDA context made now (outside any measurement), or the
// CPU for a negative `gpu`.
inline void UseDevice(int gpu) {
  if (gpu >= 0) {
    caffe::Caffe::SetDevice(gpu);
    caffe::Caffe::set_mode(caffe::Caffe::GPU);
#ifndef CPU_ONLY
    CUDA_CHECK(cudaFree(0));
#endif
  } else {
    caffe::Caffe::set_mode(caffe::Caffe::CPU);
  }
}

}  // namespace fcrn

#endif  // FCRN_TOOLS_TOOL_COMMON_HPP_
