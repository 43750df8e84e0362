// main() for the layer tests, as Caffe's test_caffe_main.cpp: tests run on the
// CPU and, in a CUDA build with a GPU present, on GPU 0 too.
#include "caffe/caffe.hpp"
#include "caffe/test/test_caffe_main.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  caffe::GlobalInit(&argc, &argv);
#ifndef CPU_ONLY
  caffe::Caffe::SetDevice(0);
#endif
  return RUN_ALL_TESTS();
}
