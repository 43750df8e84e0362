// Patch 0007's TF32 switch leaves Caffe's broadcasts exact: an SGEMM of inner
// length 1 (biases, BatchNorm's mean and variance), where TF32 would round
// each operand to 10 bits of mantissa and gain no time. GPU only; the file
// compiles in every build so that CI checks it.
#include <cmath>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/layers/batch_norm_layer.hpp"
#include "caffe/util/math_functions.hpp"

#include "caffe/test/test_caffe_main.hpp"

namespace caffe {

#ifndef CPU_ONLY

// Typed over the GPU, so that a binary without a usable GPU filters it out.
template <typename TypeParam>
class TF32GPUTest : public MultiDeviceTest<TypeParam> {
 protected:
  TF32GPUTest() { Caffe::set_tf32(true); }
  virtual ~TF32GPUTest() { Caffe::set_tf32(false); }
};

TYPED_TEST_CASE(TF32GPUTest, ::testing::Types<GPUDevice<float> >);

// (3 x 1) times (1 x 4): each product rounded once, as on the CPU. In TF32,
// 1000.3 would be 1000.5.
TYPED_TEST(TF32GPUTest, TestOuterProductStaysExact) {
  const float a[] = {1.0f + 1.0f / (1 << 20), 1000.3f, -0.1f};
  const float b[] = {3.0f, 1.0f / 3, -1000.7f, 1.0f};
  Blob<float> left(1, 1, 3, 1), right(1, 1, 1, 4), product(1, 1, 3, 4);
  caffe_copy(3, a, left.mutable_cpu_data());
  caffe_copy(4, b, right.mutable_cpu_data());
  caffe_gpu_gemm<float>(CblasNoTrans, CblasNoTrans, 3, 4, 1, 1.f,
      left.gpu_data(), right.gpu_data(), 0.f, product.mutable_gpu_data());
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 4; ++j) {
      EXPECT_FLOAT_EQ(a[i] * b[j], product.cpu_data()[i * 4 + j])
          << "row " << i << ", column " << j;
    }
  }
}

// A channel whose mean (about 1000.3) is large next to its spread (about
// 0.014): rounded to TF32, the mean that BatchNorm subtracts would be off by
// 0.2, fourteen standard deviations.
TYPED_TEST(TF32GPUTest, TestBatchNormOfALargeMeanStaysExact) {
  Blob<float> bottom(2, 1, 4, 4), top;
  float* x = bottom.mutable_cpu_data();
  for (int i = 0; i < bottom.count(); ++i) {
    x[i] = 1000.3f + 0.01f * ((i * 7) % 5 - 2);
  }
  double mean = 0, variance = 0;
  for (int i = 0; i < bottom.count(); ++i) { mean += x[i]; }
  mean /= bottom.count();
  for (int i = 0; i < bottom.count(); ++i) {
    variance += (x[i] - mean) * (x[i] - mean);
  }
  variance /= bottom.count();
  LayerParameter param;
  param.mutable_batch_norm_param()->set_use_global_stats(false);
  BatchNormLayer<float> layer(param);
  vector<Blob<float>*> bottom_vec(1, &bottom), top_vec(1, &top);
  layer.SetUp(bottom_vec, top_vec);
  layer.Forward(bottom_vec, top_vec);
  const double eps = param.batch_norm_param().eps();
  for (int i = 0; i < bottom.count(); ++i) {
    const double expected = (x[i] - mean) / std::sqrt(variance + eps);
    // Float sums of values near 1000 leave the mean about 1e-4 off.
    EXPECT_NEAR(expected, top.cpu_data()[i], 0.05) << "at " << i;
  }
}

#endif  // CPU_ONLY

}  // namespace caffe
