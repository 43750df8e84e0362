// Memory sharing between blobs (NetParameter.share_memory, Caffe patch 0010)
// on each suite's device: a small net of Caffe's and the project's layers,
// trained for three updates with iter_size 2, gives bit-identical losses and
// weights with and without sharing, and its TEST net bit-identical outputs.
// tests/test_share_memory.py checks the same with the Python data, shift and
// label layers through pycaffe; this suite is what runs on a GPU (the kit).
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

// Branches, an in-place LeanBatchNorm with batch statistics, a dilated
// convolution, a pooling that sends no gradient back, both losses on one
// score (a Split), and the label as an input. Convolutions in Caffe's own
// engine: cuDNN's weight gradients may sum in another order on each run.
const char kNet[] =
    "layer { name: 'data' type: 'Input' top: 'data' top: 'label' "
    "  input_param { shape { dim: 2 dim: 3 dim: 11 dim: 13 } "
    "                shape { dim: 2 dim: 1 dim: 11 dim: 13 } } } "
    "layer { name: 'conv1' type: 'Convolution' bottom: 'data' top: 'conv1' "
    "  convolution_param { engine: CAFFE num_output: 8 kernel_size: 3 pad: 1 "
    "    weight_filler { type: 'gaussian' std: 0.3 } } } "
    "layer { name: 'bn1' type: 'LeanBatchNorm' bottom: 'conv1' top: 'conv1' "
    "  batch_norm_param { use_global_stats: false } } "
    "layer { name: 'relu1' type: 'ReLU' bottom: 'conv1' top: 'conv1' } "
    "layer { name: 'side' type: 'Pooling' bottom: 'conv1' top: 'side' "
    "  propagate_down: false "
    "  pooling_param { pool: AVE kernel_size: 3 stride: 1 pad: 1 } } "
    "layer { name: 'a' type: 'Convolution' bottom: 'conv1' top: 'a' "
    "  convolution_param { engine: CAFFE num_output: 8 kernel_size: 3 pad: 2 dilation: 2 "
    "    weight_filler { type: 'gaussian' std: 0.3 } } } "
    "layer { name: 'b' type: 'Convolution' bottom: 'conv1' top: 'b' "
    "  convolution_param { engine: CAFFE num_output: 8 kernel_size: 1 "
    "    weight_filler { type: 'gaussian' std: 0.3 } } } "
    "layer { name: 'sum' type: 'Eltwise' bottom: 'a' bottom: 'b' "
    "  bottom: 'side' top: 'sum' } "
    "layer { name: 'relu2' type: 'ReLU' bottom: 'sum' top: 'sum' } "
    "layer { name: 'pool' type: 'Pooling' bottom: 'sum' top: 'pool' "
    "  pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } } "
    "layer { name: 'score' type: 'Convolution' bottom: 'pool' top: 'score' "
    "  convolution_param { engine: CAFFE num_output: 4 kernel_size: 3 pad: 1 "
    "    weight_filler { type: 'gaussian' std: 0.3 } } } "
    "layer { name: 'hard' type: 'BootstrappedSoftmaxWithLoss' bottom: 'score' "
    "  bottom: 'label' top: 'hard' propagate_down: true propagate_down: false "
    "  bootstrap_param { min_kept: 20 } } "
    "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'score' "
    "  bottom: 'label' top: 'loss' propagate_down: true propagate_down: false "
    "  loss_weight: 0.5 } ";

}  // namespace

template <typename TypeParam>
class ShareMemoryNetTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  NetParameter NetParam(bool share) {
    NetParameter param;
    CHECK(google::protobuf::TextFormat::ParseFromString(kNet, &param));
    param.set_share_memory(share);
    return param;
  }

  // Trains three updates of iter_size 2; the losses after each and the weights.
  void Train(bool share, vector<Dtype>* losses, vector<vector<Dtype> >* weights) {
    SolverParameter solver_param = ThreeUpdates(NetParam(share));
    solver_param.set_weight_decay(0.001);
    SGDSolver<Dtype> solver(solver_param);
    Net<Dtype>& net = *solver.net();
    EXPECT_EQ(share, net.share_memory());
    for (int step = 0; step < 3; ++step) {
      FillDataAndLabel(&net);
      solver.Step(1);
      losses->push_back(net.blob_by_name("hard")->cpu_data()[0]);
      losses->push_back(net.blob_by_name("loss")->cpu_data()[0]);
    }
    for (int i = 0; i < net.learnable_params().size(); ++i) {
      const Blob<Dtype>& p = *net.learnable_params()[i];
      weights->push_back(vector<Dtype>(p.cpu_data(), p.cpu_data() + p.count()));
    }
    // The TEST net with the trained weights, whose data are shared.
    NetParameter test_param = NetParam(share);
    test_param.mutable_state()->set_phase(TEST);
    Net<Dtype> test_net(test_param);
    EXPECT_EQ(share, test_net.share_memory());
    test_net.ShareTrainedLayersWith(&net);
    FillDataAndLabel(&test_net);
    test_net.Forward();
    for (int i = 0; i < test_net.num_outputs(); ++i) {
      losses->push_back(test_net.output_blobs()[i]->cpu_data()[0]);
    }
  }
};

TYPED_TEST_CASE(ShareMemoryNetTest, TestDtypesAndDevices);

TYPED_TEST(ShareMemoryNetTest, TrainsAndTestsBitIdentically) {
  typedef typename TypeParam::Dtype Dtype;
  vector<Dtype> plain_losses, shared_losses;
  vector<vector<Dtype> > plain_weights, shared_weights;
  this->Train(false, &plain_losses, &plain_weights);
  this->Train(true, &shared_losses, &shared_weights);
  ASSERT_EQ(plain_losses.size(), shared_losses.size());
  for (int i = 0; i < plain_losses.size(); ++i) {
    EXPECT_EQ(plain_losses[i], shared_losses[i]) << "loss " << i;
  }
  // The losses fell: training happened, on what both runs computed.
  EXPECT_LT(plain_losses[4], plain_losses[0]);
  ASSERT_EQ(plain_weights.size(), shared_weights.size());
  for (int i = 0; i < plain_weights.size(); ++i) {
    EXPECT_TRUE(plain_weights[i] == shared_weights[i]) << "parameter " << i;
  }
}

// Passes that would read memory other blobs reused are refused with one
// fatal line (pycaffe raises before it calls them: tests/test_share_memory.py).
TYPED_TEST(ShareMemoryNetTest, RefusesPassesThatWouldReadSharedMemory) {
  typedef typename TypeParam::Dtype Dtype;
  NetParameter test_param = this->NetParam(true);
  test_param.mutable_state()->set_phase(TEST);
  Net<Dtype> test_net(test_param);
  FillDataAndLabel(&test_net);
  EXPECT_DEATH(test_net.ForwardFrom(1), "so Forward starts at the first layer; "
      "set share_memory: false to start at layer '" + test_net.layer_names()[1] +
      "'");
  test_net.Forward();
  EXPECT_DEATH(test_net.Backward(), "so Backward would read data that later "
      "layers overwrote");
  NetParameter train_param = this->NetParam(true);
  train_param.mutable_state()->set_phase(TRAIN);
  Net<Dtype> train_net(train_param);
  FillDataAndLabel(&train_net);
  train_net.Forward();
  const int before_last = train_net.layers().size() - 2;
  EXPECT_DEATH(train_net.BackwardFrom(before_last), "so Backward starts at the "
      "last layer; set share_memory: false to start at layer '" +
      train_net.layer_names()[before_last] + "'");
  train_net.Backward();  // from the last layer: runs
}

}  // namespace caffe
