#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/syncedmem.hpp"
#include "caffe/layers/batch_norm_layer.hpp"
#include "caffe/layers/scale_layer.hpp"
#include "fcrn/lean_batch_norm_layer.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

template <typename TypeParam>
class LeanBatchNormLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  LeanBatchNormLayerTest()
      : blob_bottom_(new Blob<Dtype>(2, 3, 4, 5)),
        blob_top_(new Blob<Dtype>()) {
    FillerParameter filler_param;
    filler_param.set_mean(0.5);
    GaussianFiller<Dtype> filler(filler_param);
    filler.Fill(blob_bottom_);
    blob_bottom_vec_.push_back(blob_bottom_);
    blob_top_vec_.push_back(blob_top_);
  }
  virtual ~LeanBatchNormLayerTest() {
    delete blob_bottom_;
    delete blob_top_;
  }

  LayerParameter Param(bool use_global_stats) {
    LayerParameter param;
    param.mutable_batch_norm_param()->set_use_global_stats(use_global_stats);
    return param;
  }

  // Statistics as BatchNorm stores them (scaled by the factor 2) and a
  // random gamma and beta.
  void FillParams(Layer<Dtype>* layer) {
    vector<shared_ptr<Blob<Dtype> > >& blobs = layer->blobs();
    FillerParameter filler_param;
    filler_param.set_min(0.5);
    filler_param.set_max(1.5);
    UniformFiller<Dtype> filler(filler_param);
    for (int i = 0; i < 5; ++i) {
      if (i != 2) filler.Fill(blobs[i].get());
    }
    caffe_scal(3, Dtype(2), blobs[0]->mutable_cpu_data());
    caffe_scal(3, Dtype(2), blobs[1]->mutable_cpu_data());
    blobs[2]->mutable_cpu_data()[0] = 2;
    layer->set_param_propagate_down(3, true);
    layer->set_param_propagate_down(4, true);
  }

  // The same computation with Caffe's BatchNorm + Scale, in a scratch copy.
  void StockForwardBackward(Layer<Dtype>* lean, bool use_global_stats,
      const Blob<Dtype>& top_diff, Blob<Dtype>* top, Blob<Dtype>* bottom_diff,
      Blob<Dtype>* gamma_diff, Blob<Dtype>* beta_diff) {
    Blob<Dtype> bottom, normalized;
    bottom.CopyFrom(*blob_bottom_, false, true);
    vector<Blob<Dtype>*> bn_bottom(1, &bottom), bn_top(1, &normalized);
    vector<Blob<Dtype>*> scale_top(1, top);
    BatchNormLayer<Dtype> bn(Param(use_global_stats));
    bn.SetUp(bn_bottom, bn_top);
    LayerParameter scale_param;
    scale_param.mutable_scale_param()->set_bias_term(true);
    ScaleLayer<Dtype> scale(scale_param);
    scale.SetUp(bn_top, scale_top);
    for (int i = 0; i < 3; ++i) bn.blobs()[i]->CopyFrom(*lean->blobs()[i]);
    for (int i = 0; i < 2; ++i) scale.blobs()[i]->CopyFrom(*lean->blobs()[3 + i]);
    scale.set_param_propagate_down(0, true);
    scale.set_param_propagate_down(1, true);
    bn.Forward(bn_bottom, bn_top);
    scale.Forward(bn_top, scale_top);
    caffe_copy(top->count(), top_diff.cpu_data(), top->mutable_cpu_diff());
    const vector<bool> propagate_down(1, true);
    scale.Backward(scale_top, propagate_down, bn_top);
    bn.Backward(bn_top, propagate_down, bn_bottom);
    bottom_diff->CopyFrom(bottom, true, true);
    gamma_diff->CopyFrom(*scale.blobs()[0], true, true);
    beta_diff->CopyFrom(*scale.blobs()[1], true, true);
  }

  // LeanBatchNorm, in place or not, against BatchNorm + Scale.
  void CheckAgainstStock(bool use_global_stats, bool in_place) {
    LeanBatchNormLayer<Dtype> layer(Param(use_global_stats));
    Blob<Dtype> input;
    input.CopyFrom(*blob_bottom_, false, true);
    vector<Blob<Dtype>*> top_vec(1, in_place ? blob_bottom_ : blob_top_);
    layer.SetUp(blob_bottom_vec_, top_vec);
    FillParams(&layer);
    Blob<Dtype> top_diff(blob_bottom_->shape());
    GaussianFiller<Dtype>(FillerParameter()).Fill(&top_diff);
    Blob<Dtype> expected_top, expected_bottom_diff, gamma_diff, beta_diff;
    StockForwardBackward(&layer, use_global_stats, top_diff, &expected_top,
        &expected_bottom_diff, &gamma_diff, &beta_diff);

    layer.Forward(blob_bottom_vec_, top_vec);
    for (int i = 0; i < expected_top.count(); ++i) {
      EXPECT_NEAR(top_vec[0]->cpu_data()[i], expected_top.cpu_data()[i], 1e-4);
    }
    caffe_copy(top_diff.count(), top_diff.cpu_data(),
               top_vec[0]->mutable_cpu_diff());
    layer.Backward(top_vec, vector<bool>(1, true), blob_bottom_vec_);
    for (int i = 0; i < expected_bottom_diff.count(); ++i) {
      EXPECT_NEAR(blob_bottom_->cpu_diff()[i],
                  expected_bottom_diff.cpu_diff()[i], 1e-4) << "at " << i;
    }
    // Sums over every value of a channel: their rounding grows with it.
    for (int c = 0; c < 3; ++c) {
      const Dtype gamma = gamma_diff.cpu_diff()[c], beta = beta_diff.cpu_diff()[c];
      EXPECT_NEAR(layer.blobs()[3]->cpu_diff()[c], gamma,
                  1e-3 * std::max(Dtype(1), std::fabs(gamma)));
      EXPECT_NEAR(layer.blobs()[4]->cpu_diff()[c], beta,
                  1e-3 * std::max(Dtype(1), std::fabs(beta)));
    }
  }

  // Frozen and in place: forward, backward with dy = 1; gamma's diff must
  // stay as it was (7), beta's and the input's be exact.
  void CheckNoGammaDiff(const LayerParameter& param) {
    LeanBatchNormLayer<Dtype> layer(param);
    layer.SetUp(blob_bottom_vec_, blob_bottom_vec_);
    FillParams(&layer);
    caffe_set(3, Dtype(7), layer.blobs()[3]->mutable_cpu_diff());
    layer.Forward(blob_bottom_vec_, blob_bottom_vec_);
    caffe_set(blob_bottom_->count(), Dtype(1), blob_bottom_->mutable_cpu_diff());
    layer.Backward(blob_bottom_vec_, vector<bool>(1, true), blob_bottom_vec_);
    const vector<shared_ptr<Blob<Dtype> > >& p = layer.blobs();
    for (int c = 0; c < 3; ++c) {
      EXPECT_EQ(p[3]->cpu_diff()[c], 7);
      EXPECT_NEAR(p[4]->cpu_diff()[c], 2 * 4 * 5, 1e-4);
      const double inv_std = 1 / std::sqrt(p[1]->cpu_data()[c] / 2 + 1e-5);
      EXPECT_NEAR(blob_bottom_->diff_at(0, c, 1, 2),
                  p[3]->cpu_data()[c] * inv_std, 1e-4);
    }
  }
  // Forward and backward with every parameter blob's data and diff last
  // written on the device in use: they must still be only there. A host
  // read of GPU memory makes a head SYNCED, a host write HEAD_AT_CPU, and
  // then the solver (or NCCL, reading gpu_diff) would miss or re-copy them.
  void CheckParamsStayOnDevice(bool use_global_stats, bool in_place) {
    LeanBatchNormLayer<Dtype> layer(Param(use_global_stats));
    vector<Blob<Dtype>*> top_vec(1, in_place ? blob_bottom_ : blob_top_);
    layer.SetUp(blob_bottom_vec_, top_vec);
    FillParams(&layer);
    const bool gpu = Caffe::mode() == Caffe::GPU;
    for (int i = 0; i < 5; ++i) {
      Blob<Dtype>* blob = layer.blobs()[i].get();
      if (gpu) {
        blob->mutable_gpu_data();
        blob->mutable_gpu_diff();
      } else {
        blob->mutable_cpu_data();
        blob->mutable_cpu_diff();
      }
    }
    layer.Forward(blob_bottom_vec_, top_vec);
    caffe_set(top_vec[0]->count(), Dtype(1), top_vec[0]->mutable_cpu_diff());
    layer.Backward(top_vec, vector<bool>(1, true), blob_bottom_vec_);
    const SyncedMemory::SyncedHead head =
        gpu ? SyncedMemory::HEAD_AT_GPU : SyncedMemory::HEAD_AT_CPU;
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(head, layer.blobs()[i]->data()->head()) << "data of blob " << i;
      EXPECT_EQ(head, layer.blobs()[i]->diff()->head()) << "diff of blob " << i;
    }
  }

  Blob<Dtype>* const blob_bottom_;
  Blob<Dtype>* const blob_top_;
  vector<Blob<Dtype>*> blob_bottom_vec_;
  vector<Blob<Dtype>*> blob_top_vec_;
};

TYPED_TEST_CASE(LeanBatchNormLayerTest, TestDtypesAndDevices);

TYPED_TEST(LeanBatchNormLayerTest, TestForwardFrozenByHand) {
  typedef typename TypeParam::Dtype Dtype;
  LeanBatchNormLayer<Dtype> layer(this->Param(true));
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  this->FillParams(&layer);
  layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
  const vector<shared_ptr<Blob<Dtype> > >& p = layer.blobs();
  for (int n = 0; n < 2; ++n) {
    for (int c = 0; c < 3; ++c) {
      const double mean = p[0]->cpu_data()[c] / 2, var = p[1]->cpu_data()[c] / 2;
      for (int h = 0; h < 4; ++h) {
        for (int w = 0; w < 5; ++w) {
          const double x = this->blob_bottom_->data_at(n, c, h, w);
          const double y = p[3]->cpu_data()[c] * (x - mean) /
              std::sqrt(var + 1e-5) + p[4]->cpu_data()[c];
          EXPECT_NEAR(this->blob_top_->data_at(n, c, h, w), y, 1e-5);
        }
      }
    }
  }
}

TYPED_TEST(LeanBatchNormLayerTest, TestForwardBatchStatsByHand) {
  // Default parameters (gamma 1, beta 0): every channel of the output has
  // mean 0 and variance 1, and the moving averages hold the batch's values.
  typedef typename TypeParam::Dtype Dtype;
  LeanBatchNormLayer<Dtype> layer(this->Param(false));
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
  const int m = 2 * 4 * 5;
  for (int c = 0; c < 3; ++c) {
    double sum_x = 0, sum_xx = 0, sum_y = 0, sum_yy = 0;
    for (int n = 0; n < 2; ++n) {
      for (int h = 0; h < 4; ++h) {
        for (int w = 0; w < 5; ++w) {
          const double x = this->blob_bottom_->data_at(n, c, h, w);
          const double y = this->blob_top_->data_at(n, c, h, w);
          sum_x += x; sum_xx += x * x; sum_y += y; sum_yy += y * y;
        }
      }
    }
    const double var = sum_xx / m - (sum_x / m) * (sum_x / m);
    EXPECT_NEAR(sum_y / m, 0, 1e-5);
    EXPECT_NEAR(sum_yy / m, var / (var + 1e-5), 1e-4);
    EXPECT_NEAR(layer.blobs()[0]->cpu_data()[c], sum_x / m, 1e-4);
    EXPECT_NEAR(layer.blobs()[1]->cpu_data()[c], var * m / (m - 1), 1e-4);
  }
  EXPECT_EQ(layer.blobs()[2]->cpu_data()[0], 1);
}

TYPED_TEST(LeanBatchNormLayerTest, TestFrozenEqualsBatchNormScale) {
  this->CheckAgainstStock(true, false);
}

TYPED_TEST(LeanBatchNormLayerTest, TestFrozenInPlaceEqualsBatchNormScale) {
  this->CheckAgainstStock(true, true);
}

TYPED_TEST(LeanBatchNormLayerTest, TestBatchStatsEqualsBatchNormScale) {
  this->CheckAgainstStock(false, false);
}

TYPED_TEST(LeanBatchNormLayerTest, TestBatchStatsInPlaceEqualsBatchNormScale) {
  this->CheckAgainstStock(false, true);
}

// 2 x 48 x 48 = 4,608 values per channel: on the GPU, batch statistics and
// the parameter gradients reduce each channel in several blocks (one per
// 2,048 values) and merge them; the blobs above fit in one.
TYPED_TEST(LeanBatchNormLayerTest, TestBatchStatsManyValuesEqualsBatchNormScale) {
  typedef typename TypeParam::Dtype Dtype;
  this->blob_bottom_->Reshape(2, 3, 48, 48);
  FillerParameter filler_param;
  filler_param.set_mean(0.5);
  GaussianFiller<Dtype>(filler_param).Fill(this->blob_bottom_);
  this->CheckAgainstStock(false, false);
  this->CheckAgainstStock(false, true);
}

TYPED_TEST(LeanBatchNormLayerTest, TestFrozenInPlaceLearntGammaAfterRewrite) {
  // Frozen, in place, gamma learnt (one gamma 0): a later in-place layer
  // rewrites the output before backward, as Dropout or a leaky ReLU do. The
  // gradients are those of the input as it was: gamma's is sum dy * xhat,
  // beta's sum dy, the input's dy * gamma / std.
  typedef typename TypeParam::Dtype Dtype;
  LeanBatchNormLayer<Dtype> layer(this->Param(true));
  layer.SetUp(this->blob_bottom_vec_, this->blob_bottom_vec_);
  this->FillParams(&layer);
  layer.blobs()[3]->mutable_cpu_data()[1] = 0;
  Blob<Dtype> input;
  input.CopyFrom(*this->blob_bottom_, false, true);
  layer.Forward(this->blob_bottom_vec_, this->blob_bottom_vec_);
  Dtype* output = this->blob_bottom_->mutable_cpu_data();
  for (int i = 0; i < this->blob_bottom_->count(); ++i) {
    output[i] = i % 3 ? 2 * output[i] : 0;
  }
  Blob<Dtype> top_diff(this->blob_bottom_->shape());
  GaussianFiller<Dtype>(FillerParameter()).Fill(&top_diff);
  caffe_copy(top_diff.count(), top_diff.cpu_data(),
             this->blob_bottom_->mutable_cpu_diff());
  layer.Backward(this->blob_bottom_vec_, vector<bool>(1, true),
                 this->blob_bottom_vec_);
  const vector<shared_ptr<Blob<Dtype> > >& p = layer.blobs();
  for (int c = 0; c < 3; ++c) {
    const double mean = p[0]->cpu_data()[c] / 2;
    const double inv_std = 1 / std::sqrt(p[1]->cpu_data()[c] / 2 + 1e-5);
    double gamma_diff = 0, beta_diff = 0;
    for (int n = 0; n < 2; ++n) {
      for (int h = 0; h < 4; ++h) {
        for (int w = 0; w < 5; ++w) {
          const double dy = top_diff.data_at(n, c, h, w);
          gamma_diff += dy * (input.data_at(n, c, h, w) - mean) * inv_std;
          beta_diff += dy;
          EXPECT_NEAR(this->blob_bottom_->diff_at(n, c, h, w),
                      dy * p[3]->cpu_data()[c] * inv_std, 1e-4);
        }
      }
    }
    EXPECT_NEAR(p[3]->cpu_diff()[c], gamma_diff, 1e-3);
    EXPECT_NEAR(p[4]->cpu_diff()[c], beta_diff, 1e-4);
  }
}

TYPED_TEST(LeanBatchNormLayerTest, TestFrozenInPlaceFixedGammaGetsNoGradient) {
  // gamma fixed (lr_mult 0), or in a TEST net, but asked for its gradient,
  // as force_backward does: in place the layer keeps no copy of its input,
  // so it leaves gamma's diff as it is; beta's and the input's are exact.
  typedef typename TypeParam::Dtype Dtype;
  for (int test_phase = 0; test_phase < 2; ++test_phase) {
    SCOPED_TRACE(test_phase ? "TEST, gamma learnt" : "TRAIN, gamma fixed");
    FillerParameter filler_param;
    filler_param.set_mean(0.5);
    GaussianFiller<Dtype>(filler_param).Fill(this->blob_bottom_);
    LayerParameter param = this->Param(true);
    param.set_phase(test_phase ? TEST : TRAIN);
    for (int i = 0; i < 5; ++i) {
      param.add_param()->set_lr_mult(i == 4 || (test_phase && i == 3));
    }
    this->CheckNoGammaDiff(param);
  }
}

TYPED_TEST(LeanBatchNormLayerTest, TestParamsStayOnDevice) {
  for (int global = 0; global < 2; ++global) {
    for (int in_place = 0; in_place < 2; ++in_place) {
      SCOPED_TRACE(::testing::Message() << "use_global_stats " << global
          << ", in place " << in_place);
      this->CheckParamsStayOnDevice(global, in_place);
    }
  }
}

TYPED_TEST(LeanBatchNormLayerTest, TestGradientFrozen) {
  // GradientChecker perturbs every blob of a layer, and the frozen map does
  // depend on the stored statistics, which have no gradient by design. So
  // central differences are taken here for what has one: the input, gamma
  // and beta, with GradientChecker's objective sum(top .* weights).
  typedef typename TypeParam::Dtype Dtype;
  LeanBatchNormLayer<Dtype> layer(this->Param(true));
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  this->FillParams(&layer);
  Blob<Dtype> weights(this->blob_bottom_->shape());
  GaussianFiller<Dtype>(FillerParameter()).Fill(&weights);
  layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
  caffe_copy(weights.count(), weights.cpu_data(),
             this->blob_top_->mutable_cpu_diff());
  layer.Backward(this->blob_top_vec_, vector<bool>(1, true),
                 this->blob_bottom_vec_);
  Blob<Dtype>* checked[] = {this->blob_bottom_, layer.blobs()[3].get(),
                            layer.blobs()[4].get()};
  const Dtype step = 1e-2;
  for (int b = 0; b < 3; ++b) {
    for (int i = 0; i < checked[b]->count(); ++i) {
      const Dtype analytic = checked[b]->cpu_diff()[i];
      Dtype objective[2];
      for (int sign = 0; sign < 2; ++sign) {
        checked[b]->mutable_cpu_data()[i] += sign ? -2 * step : step;
        layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
        objective[sign] = caffe_cpu_dot(weights.count(), weights.cpu_data(),
                                        this->blob_top_->cpu_data());
      }
      checked[b]->mutable_cpu_data()[i] += step;
      EXPECT_NEAR(analytic, (objective[0] - objective[1]) / (2 * step),
                  1e-3 * std::max(Dtype(1), std::fabs(analytic)))
          << "blob " << b << " element " << i;
    }
  }
}

TYPED_TEST(LeanBatchNormLayerTest, TestGradientBatchStats) {
  // Output does not depend on the stored statistics here: the checker
  // verifies the bottom, gamma and beta (and zero for the statistics).
  typedef typename TypeParam::Dtype Dtype;
  LeanBatchNormLayer<Dtype> layer(this->Param(false));
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  this->FillParams(&layer);
  GradientChecker<Dtype> checker(1e-2, 1e-3);
  checker.CheckGradientExhaustive(&layer, this->blob_bottom_vec_,
      this->blob_top_vec_);
}

TYPED_TEST(LeanBatchNormLayerTest, TestBadInputDeath) {
  typedef typename TypeParam::Dtype Dtype;
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  LayerParameter param = this->Param(true);
  param.set_name("bn_x");
  {
    LeanBatchNormLayer<Dtype> layer(param);
    layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
    Blob<Dtype> other(2, 4, 4, 5);
    vector<Blob<Dtype>*> bottom(1, &other);
    EXPECT_DEATH(layer.Reshape(bottom, this->blob_top_vec_),
                 "bn_x: input 2 4 4 5 \\(160\\) has 4 channels, its "
                 "parameters 3");
  }
  {
    LayerParameter bad(param);
    bad.add_param()->set_lr_mult(1);
    LeanBatchNormLayer<Dtype> layer(bad);
    EXPECT_DEATH(layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_),
                 "bn_x: param 0 holds batch statistics and cannot be learnt");
  }
}

}  // namespace caffe
