// The CUDNN engine of Convolution and Deconvolution against the CAFFE engine
// (im2col + GEMM) on the same weights and inputs: forward, and the gradients
// of input, weights and bias. Dilated and grouped cases are the point: the
// project's cuDNN patch sends dilated convolutions to cuDNN; the FCRN-sized
// ones are those for which cuDNN chooses its algorithms in the benchmark
// nets. And the shared workspace's growth. GPU only; the file compiles in
// every build so that CI checks it.
#include <string>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/common.hpp"
#include "caffe/layer_factory.hpp"
#ifdef USE_CUDNN
#include "caffe/util/cudnn.hpp"
#endif

#include "caffe/test/test_caffe_main.hpp"
#include "conv_engines.hpp"

namespace caffe {

#ifdef USE_CUDNN

typedef ::testing::Types<GPUDevice<float>, GPUDevice<double> > GPUDtypes;

template <typename TypeParam>
class CuDNNEquivalenceTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  void CheckAll(double tolerance) {
    const ConvCase cases[] = {
      {"Convolution", 3, 1, 1, 1, 1, true},
      {"Convolution", 3, 2, 1, 2, 1, false},
      {"Convolution", 3, 4, 1, 4, 2, true},
      {"Convolution", 3, 2, 2, 2, 2, true},
      {"Convolution", 3, 1, 2, 1, 1, false},
      {"Deconvolution", 3, 1, 1, 1, 1, true},
      {"Deconvolution", 3, 2, 2, 2, 1, true},
      {"Deconvolution", 3, 2, 1, 2, 2, false},
    };
    const vector<int> shape = {2, 4, 13, 11};
    for (const ConvCase& c : cases) {
      shared_ptr<Layer<Dtype> > caffe_layer = LayerRegistry<Dtype>::CreateLayer(
          ConvParam(c, ConvolutionParameter_Engine_CAFFE));
      shared_ptr<Layer<Dtype> > cudnn_layer = LayerRegistry<Dtype>::CreateLayer(
          ConvParam(c, ConvolutionParameter_Engine_CUDNN));
      ExpectSameAsReference(caffe_layer.get(), cudnn_layer.get(), shape,
                            tolerance, c.Name());
    }
  }

  // The convolutions of FCRN-101 at 1/8 (Table 1's k 5, d 12), with their
  // channel counts, at a small spatial size: the classifier, the dilated
  // 3x3s of res5 and res4, and the 1x1s around them.
  void CheckFCRNShapes(double tolerance) {
    struct SizedCase {
      ConvCase conv;
      int channels, num_output;
    };
    const SizedCase cases[] = {
      {{"Convolution", 5, 24, 1, 12, 1, true}, 2048, 21},
      {{"Convolution", 3, 4, 1, 4, 1, false}, 512, 512},
      {{"Convolution", 3, 2, 1, 2, 1, false}, 256, 256},
      {{"Convolution", 1, 0, 1, 1, 1, false}, 1024, 2048},
      {{"Convolution", 1, 0, 2, 1, 1, false}, 256, 512},
    };
    for (const SizedCase& c : cases) {
      shared_ptr<Layer<Dtype> > caffe_layer = LayerRegistry<Dtype>::CreateLayer(
          ConvParam(c.conv, ConvolutionParameter_Engine_CAFFE, c.num_output));
      shared_ptr<Layer<Dtype> > cudnn_layer = LayerRegistry<Dtype>::CreateLayer(
          ConvParam(c.conv, ConvolutionParameter_Engine_CUDNN, c.num_output));
      ExpectSameAsReference(caffe_layer.get(), cudnn_layer.get(),
          vector<int>{1, c.channels, 33, 33}, tolerance, c.conv.Name() + ", " +
          std::to_string(c.channels) + " to " + std::to_string(c.num_output) +
          " channels");
    }
  }
};

TYPED_TEST_CASE(CuDNNEquivalenceTest, GPUDtypes);

// Exact FP32 (and FP64): only the order of summation differs.
TYPED_TEST(CuDNNEquivalenceTest, TestExactMatchesCaffeEngine) {
  Caffe::set_tf32(false);
  this->CheckAll(sizeof(typename TypeParam::Dtype) == 4 ? 1e-5 : 1e-12);
}

// TF32 keeps 10 bits of mantissa in each product; sums of a few hundred
// products stay well within 1% of the output's scale.
TYPED_TEST(CuDNNEquivalenceTest, TestTF32MatchesCaffeEngine) {
  Caffe::set_tf32(true);
  this->CheckAll(sizeof(typename TypeParam::Dtype) == 4 ? 1e-2 : 1e-12);
  Caffe::set_tf32(false);
}

// Sums of up to 51,200 products (the classifier): the rounding of exact FP32
// grows with the square root of the length, to about 1e-5 of the largest
// output here.
TYPED_TEST(CuDNNEquivalenceTest, TestFCRNShapesExact) {
  Caffe::set_tf32(false);
  this->CheckFCRNShapes(sizeof(typename TypeParam::Dtype) == 4 ? 1e-4 : 1e-12);
}

// TF32's error comes from rounding each operand to 10 bits of mantissa: about
// 1e-3 of each product, which does not grow relative to the output with the
// length of the sum.
TYPED_TEST(CuDNNEquivalenceTest, TestFCRNShapesTF32) {
  Caffe::set_tf32(true);
  this->CheckFCRNShapes(sizeof(typename TypeParam::Dtype) == 4 ? 1e-2 : 1e-12);
  Caffe::set_tf32(false);
}

template <typename TypeParam>
class CuDNNWorkspaceTest : public MultiDeviceTest<TypeParam> {};

TYPED_TEST_CASE(CuDNNWorkspaceTest, ::testing::Types<GPUDevice<float> >);

// A larger workspace is allocated before the old one is freed: when it
// cannot be had, the old one stays and still serves what it can (before,
// it was freed first, and the next request of its size could fail too).
TYPED_TEST(CuDNNWorkspaceTest, TestFailedGrowthKeepsTheOldBuffer) {
  const size_t mib = size_t(1) << 20;
  void* buffer = cudnn::Workspace(256 * mib);
  ASSERT_TRUE(buffer != NULL);
  size_t free_before, free_after, total;
  CUDA_CHECK(cudaMemGetInfo(&free_before, &total));
  EXPECT_TRUE(cudnn::Workspace(2 * total) == NULL);
  EXPECT_EQ(cudaSuccess, cudaGetLastError());
  CUDA_CHECK(cudaMemGetInfo(&free_after, &total));
  EXPECT_LT(free_after, free_before + 128 * mib) << "the old buffer was freed";
  EXPECT_EQ(buffer, cudnn::Workspace(256 * mib));
}

#endif  // USE_CUDNN

}  // namespace caffe
