// Helpers for comparing convolution engines: a layer made with one engine
// against one made with another (CAFFE's im2col + GEMM as the reference), on
// the same weights, inputs and top gradients.
#ifndef FCRN_TEST_CONV_ENGINES_HPP_
#define FCRN_TEST_CONV_ENGINES_HPP_

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/filler.hpp"
#include "caffe/layer.hpp"
#include "caffe/layer_factory.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

struct ConvCase {
  const char* type;
  int kernel, pad, stride, dilation, group;
  bool bias;

  std::string Name() const {
    return std::string(type) + " kernel " + std::to_string(kernel) +
        " pad " + std::to_string(pad) + " stride " + std::to_string(stride) +
        " dilation " + std::to_string(dilation) + " group " +
        std::to_string(group) + (bias ? " with bias" : "");
  }
};

inline LayerParameter ConvParam(const ConvCase& c,
    ConvolutionParameter_Engine engine, int num_output = 6) {
  LayerParameter param;
  param.set_type(c.type);
  ConvolutionParameter* conv = param.mutable_convolution_param();
  conv->set_num_output(num_output);
  conv->add_kernel_size(c.kernel);
  conv->add_pad(c.pad);
  conv->add_stride(c.stride);
  conv->add_dilation(c.dilation);
  conv->set_group(c.group);
  conv->set_bias_term(c.bias);
  conv->mutable_weight_filler()->set_type("gaussian");
  conv->mutable_weight_filler()->set_std(0.1);
  conv->mutable_bias_filler()->set_type("gaussian");
  conv->mutable_bias_filler()->set_std(0.1);
  conv->set_engine(engine);
  return param;
}

// Largest difference between a and b, relative to the largest |a|.
template <typename Dtype>
double RelativeError(const Dtype* a, const Dtype* b, int count) {
  double error = 0, scale = 0;
  for (int i = 0; i < count; ++i) {
    error = std::max(error, std::fabs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::fabs(double(a[i])));
  }
  return error / std::max(scale, 1e-12);
}

// Sets both layers up on an input of `shape`, gives `layer` the reference's
// parameters, and expects the same output, input gradient and parameter
// gradients within `tolerance`. The parameter gradients start from the same
// nonzero values: Caffe adds to them.
template <typename Dtype>
void ExpectSameAsReference(Layer<Dtype>* reference, Layer<Dtype>* layer,
    const vector<int>& shape, double tolerance, const std::string& name) {
  Blob<Dtype> bottom_ref(shape), bottom, top_ref, top;
  FillerParameter filler_param;
  filler_param.set_std(1);
  GaussianFiller<Dtype> filler(filler_param);
  filler.Fill(&bottom_ref);
  bottom.CopyFrom(bottom_ref, false, true);
  vector<Blob<Dtype>*> bottom_vec_ref(1, &bottom_ref), bottom_vec(1, &bottom),
      top_vec_ref(1, &top_ref), top_vec(1, &top);
  reference->SetUp(bottom_vec_ref, top_vec_ref);
  layer->SetUp(bottom_vec, top_vec);
  ASSERT_EQ(reference->blobs().size(), layer->blobs().size()) << name;
  for (int i = 0; i < reference->blobs().size(); ++i) {
    Blob<Dtype>* param = reference->blobs()[i].get();
    filler.Fill(param);  // the data; the diff is a copy of it
    caffe_copy(param->count(), param->cpu_data(), param->mutable_cpu_diff());
    layer->blobs()[i]->CopyFrom(*param, false, true);
    layer->blobs()[i]->CopyFrom(*param, true, false);
  }

  reference->Forward(bottom_vec_ref, top_vec_ref);
  layer->Forward(bottom_vec, top_vec);
  ASSERT_TRUE(top_ref.shape() == top.shape()) << name;
  EXPECT_LT(RelativeError(top_ref.cpu_data(), top.cpu_data(), top.count()),
      tolerance) << name << ": forward";

  filler.Fill(&top_ref);  // fills data; the diff is what backward reads
  caffe_copy(top_ref.count(), top_ref.cpu_data(), top_ref.mutable_cpu_diff());
  caffe_copy(top.count(), top_ref.cpu_diff(), top.mutable_cpu_diff());
  // Backward writes the input gradient over whatever was there.
  caffe_set(bottom_ref.count(), Dtype(7), bottom_ref.mutable_cpu_diff());
  caffe_set(bottom.count(), Dtype(-7), bottom.mutable_cpu_diff());
  const vector<bool> propagate_down(1, true);
  reference->Backward(top_vec_ref, propagate_down, bottom_vec_ref);
  layer->Backward(top_vec, propagate_down, bottom_vec);
  EXPECT_LT(RelativeError(bottom_ref.cpu_diff(), bottom.cpu_diff(),
      bottom.count()), tolerance) << name << ": input gradient";
  for (int i = 0; i < reference->blobs().size(); ++i) {
    EXPECT_LT(RelativeError(reference->blobs()[i]->cpu_diff(),
        layer->blobs()[i]->cpu_diff(), reference->blobs()[i]->count()),
        tolerance) << name << ": gradient of parameter " << i;
  }
}

}  // namespace caffe

#endif  // FCRN_TEST_CONV_ENGINES_HPP_
