// The CUDNN engine of Convolution and Deconvolution against the CAFFE engine
// (im2col + GEMM) on the same weights and inputs: forward, and the gradients
// of input, weights and bias. Dilated and grouped cases are the point: the
// project's cuDNN patch sends dilated convolutions to cuDNN. GPU only; the
// file compiles in every build so that CI checks it.
#include <vector>

#include "gtest/gtest.h"

#include "caffe/common.hpp"
#include "caffe/layer_factory.hpp"

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

#endif  // USE_CUDNN

}  // namespace caffe
