// Helpers for the net-level tests that train a small net twice and compare
// the runs bit for bit: the same inputs on every pass, the same solver.
#ifndef FCRN_TEST_TRAIN_NET_HPP_
#define FCRN_TEST_TRAIN_NET_HPP_

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/net.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

// The net's first input gets values in [-2, 2), its second labels in 0..3;
// the same on every call.
template <typename Dtype>
void FillDataAndLabel(Net<Dtype>* net) {
  Blob<Dtype>* data = net->input_blobs()[0];
  Blob<Dtype>* label = net->input_blobs()[1];
  Dtype* d = data->mutable_cpu_data();
  for (int i = 0; i < data->count(); ++i) { d[i] = Dtype((i * 37 % 101) - 50) / 25; }
  Dtype* l = label->mutable_cpu_data();
  for (int i = 0; i < label->count(); ++i) { l[i] = (i * 7 + i / 13) % 4; }
}

// SGD with momentum for three updates of iter_size 2 on `net_param`, seeded,
// in the current mode, without snapshots.
inline SolverParameter ThreeUpdates(const NetParameter& net_param) {
  SolverParameter param;
  *param.mutable_net_param() = net_param;
  param.set_base_lr(0.05);
  param.set_lr_policy("fixed");
  param.set_momentum(0.9);
  param.set_iter_size(2);
  param.set_max_iter(3);
  param.set_random_seed(1701);
  param.set_snapshot_after_train(false);
  param.set_solver_mode(Caffe::mode() == Caffe::GPU ?
      SolverParameter_SolverMode_GPU : SolverParameter_SolverMode_CPU);
  return param;
}

}  // namespace caffe

#endif  // FCRN_TEST_TRAIN_NET_HPP_
