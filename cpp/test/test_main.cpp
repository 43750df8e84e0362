// main() for the layer tests, as Caffe's test_caffe_main.cpp. Typed tests run
// on the CPU and, in a CUDA build, on GPU 0. Without a usable GPU the suites
// instantiated on GPUDevice are filtered out, with a line that says why, so
// the same binary passes on the project's GPU-less machines.
#include <iostream>
#include <string>

#include "caffe/caffe.hpp"
#include "caffe/test/test_caffe_main.hpp"

#ifndef CPU_ONLY
namespace {

// Adds every test suite whose type parameter is a GPUDevice to the negative
// part of --gtest_filter; returns how many there were.
int FilterOutGpuSuites() {
  const ::testing::UnitTest& tests = *::testing::UnitTest::GetInstance();
  std::string patterns;
  int count = 0;
  for (int i = 0; i < tests.total_test_suite_count(); ++i) {
    const ::testing::TestSuite& suite = *tests.GetTestSuite(i);
    const char* type = suite.type_param();
    if (type && std::string(type).find("GPUDevice") != std::string::npos) {
      patterns += std::string(count++ ? ":" : "") + suite.name() + ".*";
    }
  }
  if (count) {
    std::string filter = GTEST_FLAG_GET(filter);
    filter += (filter.find('-') == std::string::npos ? "-" : ":") + patterns;
    GTEST_FLAG_SET(filter, filter);
  }
  return count;
}

}  // namespace
#endif

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  caffe::GlobalInit(&argc, &argv);
  // Gradient checks compare against finite differences in exact FP32.
  caffe::Caffe::set_tf32(false);
#ifndef CPU_ONLY
  int devices = 0;
  const cudaError_t error = cudaGetDeviceCount(&devices);
  if (error != cudaSuccess || devices == 0) {
    const int skipped = FilterOutGpuSuites();
    std::cout << "GPU tests skipped (" << skipped << " suites), no usable GPU: "
        << (error != cudaSuccess ? cudaGetErrorString(error) :
            "no CUDA device") << std::endl;
  } else {
    caffe::Caffe::SetDevice(0);
  }
#endif
  return RUN_ALL_TESTS();
}
