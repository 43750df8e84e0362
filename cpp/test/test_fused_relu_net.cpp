// In-place ReLUs applied by the layer before them (Caffe patch 0019) on each
// suite's device: a net of LeanBatchNorms (batch statistics and frozen) and
// sums followed by ReLUs trains to bit-identical losses, weights and blobs
// with fusion and with FCRN_UNFUSED_RELU set, also when a Forward alone
// reshapes it; ReLUs that must run on their own do; a Forward that stops
// before a fused ReLU leaves its input as is.
#include <cstdlib>
#include <string>
#include <vector>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/net.hpp"
#include "caffe/sgd_solvers.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "train_net.hpp"

namespace caffe {

namespace {

// bn1, bn2 and sum apply the ReLU after them. Not fused: the ReLU after a
// product, the leaky one, the one out of place, and relu1b, which follows a
// ReLU. Convolutions in Caffe's own engine (cuDNN's weight gradients may sum
// in another order on each run).
const char kNet[] =
    "layer { name: 'data' type: 'Input' top: 'data' top: 'label' "
    "  input_param { shape { dim: 2 dim: 3 dim: 9 dim: 11 } "
    "                shape { dim: 2 dim: 1 dim: 9 dim: 11 } } } "
    "layer { name: 'conv1' type: 'Convolution' bottom: 'data' top: 'conv1' "
    "  convolution_param { engine: CAFFE num_output: 6 kernel_size: 3 pad: 1 "
    "    weight_filler { type: 'gaussian' std: 0.3 } } } "
    "layer { name: 'bn1' type: 'LeanBatchNorm' bottom: 'conv1' top: 'conv1' "
    "  batch_norm_param { use_global_stats: false } } "
    "layer { name: 'relu1' type: 'ReLU' bottom: 'conv1' top: 'conv1' } "
    "layer { name: 'relu1b' type: 'ReLU' bottom: 'conv1' top: 'conv1' } "
    "layer { name: 'conv2' type: 'Convolution' bottom: 'conv1' top: 'conv2' "
    "  convolution_param { engine: CAFFE num_output: 6 kernel_size: 3 pad: 1 "
    "    weight_filler { type: 'gaussian' std: 0.3 } } } "
    "layer { name: 'bn2' type: 'LeanBatchNorm' bottom: 'conv2' top: 'conv2' "
    "  batch_norm_param { use_global_stats: true eps: 1 } "
    "  scale_param { bias_filler { type: 'constant' value: -0.2 } } } "
    "layer { name: 'relu2' type: 'ReLU' bottom: 'conv2' top: 'conv2' } "
    "layer { name: 'conv3' type: 'Convolution' bottom: 'conv1' top: 'conv3' "
    "  convolution_param { engine: CAFFE num_output: 6 kernel_size: 1 "
    "    weight_filler { type: 'gaussian' std: 0.3 } } } "
    "layer { name: 'sum' type: 'Eltwise' bottom: 'conv2' bottom: 'conv3' "
    "  top: 'sum' } "
    "layer { name: 'relu3' type: 'ReLU' bottom: 'sum' top: 'sum' } "
    "layer { name: 'prod' type: 'Eltwise' bottom: 'sum' bottom: 'conv3' "
    "  top: 'prod' eltwise_param { operation: PROD } } "
    "layer { name: 'relu4' type: 'ReLU' bottom: 'prod' top: 'prod' } "
    "layer { name: 'bn3' type: 'LeanBatchNorm' bottom: 'prod' top: 'prod' "
    "  batch_norm_param { use_global_stats: false } } "
    "layer { name: 'leaky' type: 'ReLU' bottom: 'prod' top: 'prod' "
    "  relu_param { negative_slope: 0.1 } } "
    "layer { name: 'sum2' type: 'Eltwise' bottom: 'prod' bottom: 'sum' "
    "  top: 'sum2' } "
    "layer { name: 'relu5' type: 'ReLU' bottom: 'sum2' top: 'out' } "
    "layer { name: 'score' type: 'Convolution' bottom: 'out' top: 'score' "
    "  convolution_param { engine: CAFFE num_output: 4 kernel_size: 3 pad: 1 "
    "    weight_filler { type: 'gaussian' std: 0.3 } } } "
    "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'score' "
    "  bottom: 'label' top: 'loss' propagate_down: true propagate_down: false } ";

// Sets FCRN_UNFUSED_RELU for its lifetime when asked to.
class UnfusedReLU {
 public:
  explicit UnfusedReLU(bool unfused) : unfused_(unfused) {
    if (unfused_) { setenv("FCRN_UNFUSED_RELU", "1", 1); }
  }
  ~UnfusedReLU() {
    if (unfused_) { unsetenv("FCRN_UNFUSED_RELU"); }
  }

 private:
  const bool unfused_;
};

}  // namespace

template <typename TypeParam>
class FusedReLUNetTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  NetParameter NetParam() {
    NetParameter param;
    CHECK(google::protobuf::TextFormat::ParseFromString(kNet, &param));
    return param;
  }

  // The names of the layers that apply the ReLU after them.
  static vector<string> Fusing(const Net<Dtype>& net) {
    vector<string> names;
    for (int i = 0; i < net.layers().size(); ++i) {
      if (net.fuses_next_relu(i)) { names.push_back(net.layer_names()[i]); }
    }
    return names;
  }

  // Trains three updates of iter_size 2; the loss after each, then every
  // blob's data and diff after the last, then the weights.
  void Train(bool unfused, vector<vector<Dtype> >* values) {
    UnfusedReLU env(unfused);
    SGDSolver<Dtype> solver(ThreeUpdates(NetParam()));
    Net<Dtype>& net = *solver.net();
    const vector<string> fused = Fusing(net);
    if (unfused) {
      EXPECT_TRUE(fused.empty());
    } else {
      const char* expected[] = {"bn1", "bn2", "sum"};
      EXPECT_EQ(vector<string>(expected, expected + 3), fused);
    }
    vector<Dtype> losses;
    for (int step = 0; step < 3; ++step) {
      FillDataAndLabel(&net);
      solver.Step(1);
      losses.push_back(net.blob_by_name("loss")->cpu_data()[0]);
    }
    values->push_back(losses);
    for (int i = 0; i < net.blobs().size(); ++i) {
      const Blob<Dtype>& b = *net.blobs()[i];
      values->push_back(vector<Dtype>(b.cpu_data(), b.cpu_data() + b.count()));
      values->push_back(vector<Dtype>(b.cpu_diff(), b.cpu_diff() + b.count()));
    }
    for (int i = 0; i < net.learnable_params().size(); ++i) {
      const Blob<Dtype>& p = *net.learnable_params()[i];
      values->push_back(vector<Dtype>(p.cpu_data(), p.cpu_data() + p.count()));
    }
  }
};

TYPED_TEST_CASE(FusedReLUNetTest, TestDtypesAndDevices);

TYPED_TEST(FusedReLUNetTest, TrainsBitIdentically) {
  typedef typename TypeParam::Dtype Dtype;
  vector<vector<Dtype> > fused, unfused;
  this->Train(false, &fused);
  this->Train(true, &unfused);
  ASSERT_EQ(unfused.size(), fused.size());
  // The loss fell: training happened, on what both runs computed.
  EXPECT_LT(fused[0][2], fused[0][0]);
  for (int i = 0; i < fused.size(); ++i) {
    EXPECT_TRUE(unfused[i] == fused[i]) << "value set " << i;
  }
}

// Inputs reshaped without Net::Reshape: each layer's Forward reshapes it
// first, and so must a fused ReLU's skipped Forward, whose Backward reads
// the shape it set (cuDNN's ReLU keeps its tensor shapes from Reshape; had
// it kept 9 x 11, the rest of the grown blob would pass its gradient
// unmasked). The blobs and gradients of both passes match an unfused net's.
TYPED_TEST(FusedReLUNetTest, InputsReshapedByForwardAlone) {
  typedef typename TypeParam::Dtype Dtype;
  vector<vector<Dtype> > values[2];
  for (int unfused = 0; unfused < 2; ++unfused) {
    UnfusedReLU env(unfused);
    NetParameter param = this->NetParam();
    param.set_share_memory(false);  // a shared net reshapes with its inputs
    Caffe::set_random_seed(1701);  // the same weights in both nets
    Net<Dtype> net(param);
    ASSERT_EQ(unfused ? 0 : 3, this->Fusing(net).size());
    for (int grown = 0; grown < 2; ++grown) {
      if (grown) {
        net.input_blobs()[0]->Reshape(2, 3, 13, 15);
        net.input_blobs()[1]->Reshape(2, 1, 13, 15);
      }
      FillDataAndLabel(&net);
      net.ClearParamDiffs();
      net.Forward();
      net.Backward();
      for (int i = 0; i < net.blobs().size(); ++i) {
        const Blob<Dtype>& b = *net.blobs()[i];
        values[unfused].push_back(
            vector<Dtype>(b.cpu_data(), b.cpu_data() + b.count()));
        values[unfused].push_back(
            vector<Dtype>(b.cpu_diff(), b.cpu_diff() + b.count()));
      }
    }
    EXPECT_EQ(13 * 15, net.blob_by_name("conv1")->count(2));
  }
  ASSERT_EQ(values[1].size(), values[0].size());
  for (int i = 0; i < values[0].size(); ++i) {
    EXPECT_TRUE(values[1][i] == values[0][i]) << "value set " << i;
  }
}

TYPED_TEST(FusedReLUNetTest, ForwardStoppingBeforeTheReLULeavesItsInput) {
  typedef typename TypeParam::Dtype Dtype;
  NetParameter param = this->NetParam();
  param.set_share_memory(false);  // a shared TEST net starts at layer 0
  Net<Dtype> net(param);
  ASSERT_TRUE(net.fuses_next_relu(2));  // bn1, then relu1 at 3
  FillDataAndLabel(&net);
  const Blob<Dtype>& conv1 = *net.blob_by_name("conv1");
  int negative = 0;
  net.ForwardTo(2);
  for (int i = 0; i < conv1.count(); ++i) { negative += conv1.cpu_data()[i] < 0; }
  EXPECT_GT(negative, 0);
  // Started at the ReLU, the ReLU runs.
  net.ForwardFromTo(3, 3);
  for (int i = 0; i < conv1.count(); ++i) { EXPECT_GE(conv1.cpu_data()[i], 0); }
  net.ForwardTo(1);
  net.ForwardFromTo(2, 3);
  for (int i = 0; i < conv1.count(); ++i) { EXPECT_GE(conv1.cpu_data()[i], 0); }
}

}  // namespace caffe
