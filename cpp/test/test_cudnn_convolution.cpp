// The CUDNN engine of Convolution and Deconvolution against the CAFFE engine
// (im2col + GEMM) on the same weights and inputs: forward, and the gradients
// of input, weights and bias. Dilated and grouped cases are the point: the
// project's cuDNN patch sends dilated convolutions to cuDNN. GPU only; the
// file compiles in every build so that CI checks it.
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/layer.hpp"
#include "caffe/layer_factory.hpp"

#include "caffe/test/test_caffe_main.hpp"

namespace caffe {

#ifdef USE_CUDNN

typedef ::testing::Types<GPUDevice<float>, GPUDevice<double> > GPUDtypes;

struct ConvCase {
  const char* type;
  int group, stride, dilation;
  bool bias;
};

template <typename TypeParam>
class CuDNNEquivalenceTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  // Largest difference between a and b, relative to the largest |a|.
  static double RelativeError(const Dtype* a, const Dtype* b, int count) {
    double error = 0, scale = 0;
    for (int i = 0; i < count; ++i) {
      error = std::max(error, std::fabs(double(a[i]) - double(b[i])));
      scale = std::max(scale, std::fabs(double(a[i])));
    }
    return error / std::max(scale, 1e-12);
  }

  static shared_ptr<Layer<Dtype> > MakeLayer(const ConvCase& c,
      ConvolutionParameter_Engine engine) {
    LayerParameter param;
    param.set_type(c.type);
    ConvolutionParameter* conv = param.mutable_convolution_param();
    conv->set_num_output(6);
    conv->add_kernel_size(3);
    conv->add_pad(c.dilation);
    conv->add_stride(c.stride);
    conv->add_dilation(c.dilation);
    conv->set_group(c.group);
    conv->set_bias_term(c.bias);
    conv->mutable_weight_filler()->set_type("gaussian");
    conv->mutable_weight_filler()->set_std(0.1);
    conv->mutable_bias_filler()->set_type("gaussian");
    conv->mutable_bias_filler()->set_std(0.1);
    conv->set_engine(engine);
    return LayerRegistry<Dtype>::CreateLayer(param);
  }

  // Runs one case through both engines and compares every output.
  void Check(const ConvCase& c, double tolerance) {
    Blob<Dtype> bottom_caffe(2, 4, 13, 11), bottom_cudnn, top_caffe,
        top_cudnn;
    FillerParameter filler_param;
    filler_param.set_std(1);
    GaussianFiller<Dtype> filler(filler_param);
    filler.Fill(&bottom_caffe);
    bottom_cudnn.CopyFrom(bottom_caffe, false, true);
    vector<Blob<Dtype>*> bottom_vec_caffe(1, &bottom_caffe),
        bottom_vec_cudnn(1, &bottom_cudnn), top_vec_caffe(1, &top_caffe),
        top_vec_cudnn(1, &top_cudnn);
    shared_ptr<Layer<Dtype> > caffe_layer =
        MakeLayer(c, ConvolutionParameter_Engine_CAFFE);
    shared_ptr<Layer<Dtype> > cudnn_layer =
        MakeLayer(c, ConvolutionParameter_Engine_CUDNN);
    caffe_layer->SetUp(bottom_vec_caffe, top_vec_caffe);
    cudnn_layer->SetUp(bottom_vec_cudnn, top_vec_cudnn);
    ASSERT_EQ(caffe_layer->blobs().size(), cudnn_layer->blobs().size());
    for (int i = 0; i < caffe_layer->blobs().size(); ++i) {
      cudnn_layer->blobs()[i]->CopyFrom(*caffe_layer->blobs()[i]);
    }
    const std::string name = std::string(c.type) + " group " +
        std::to_string(c.group) + " stride " + std::to_string(c.stride) +
        " dilation " + std::to_string(c.dilation) +
        (c.bias ? " with bias" : "");

    caffe_layer->Forward(bottom_vec_caffe, top_vec_caffe);
    cudnn_layer->Forward(bottom_vec_cudnn, top_vec_cudnn);
    ASSERT_TRUE(top_caffe.shape() == top_cudnn.shape()) << name;
    EXPECT_LT(RelativeError(top_caffe.cpu_data(), top_cudnn.cpu_data(),
        top_caffe.count()), tolerance) << name << ": forward";

    filler.Fill(&top_caffe);  // fills data; the diff is what backward reads
    caffe_copy(top_caffe.count(), top_caffe.cpu_data(),
        top_caffe.mutable_cpu_diff());
    caffe_copy(top_caffe.count(), top_caffe.cpu_diff(),
        top_cudnn.mutable_cpu_diff());
    for (int i = 0; i < caffe_layer->blobs().size(); ++i) {
      caffe_set(caffe_layer->blobs()[i]->count(), Dtype(0),
          caffe_layer->blobs()[i]->mutable_cpu_diff());
      caffe_set(cudnn_layer->blobs()[i]->count(), Dtype(0),
          cudnn_layer->blobs()[i]->mutable_cpu_diff());
    }
    const vector<bool> propagate_down(1, true);
    caffe_layer->Backward(top_vec_caffe, propagate_down, bottom_vec_caffe);
    cudnn_layer->Backward(top_vec_cudnn, propagate_down, bottom_vec_cudnn);
    EXPECT_LT(RelativeError(bottom_caffe.cpu_diff(), bottom_cudnn.cpu_diff(),
        bottom_caffe.count()), tolerance) << name << ": input gradient";
    for (int i = 0; i < caffe_layer->blobs().size(); ++i) {
      EXPECT_LT(RelativeError(caffe_layer->blobs()[i]->cpu_diff(),
          cudnn_layer->blobs()[i]->cpu_diff(), caffe_layer->blobs()[i]->count()),
          tolerance) << name << ": gradient of parameter " << i;
    }
  }

  void CheckAll(double tolerance) {
    const ConvCase cases[] = {
      {"Convolution", 1, 1, 1, true}, {"Convolution", 1, 1, 2, false},
      {"Convolution", 2, 1, 4, true}, {"Convolution", 2, 2, 2, true},
      {"Convolution", 1, 2, 1, false},
      {"Deconvolution", 1, 1, 1, true}, {"Deconvolution", 1, 2, 2, true},
      {"Deconvolution", 2, 1, 2, false},
    };
    for (int i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
      Check(cases[i], tolerance);
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
