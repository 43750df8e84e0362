#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/layers/softmax_loss_layer.hpp"
#include "fcrn/bootstrapped_softmax_loss_layer.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

// Equation (1) written the slow, obvious way: a full sort per image.
// Returns the loss and fills `kept` (one flag per pixel).
template <typename Dtype>
Dtype ReferenceBootstrappedLoss(const Blob<Dtype>& scores,
    const Blob<Dtype>& labels, int ignore_label, int min_kept,
    double threshold, vector<int>* kept) {
  const int num = scores.shape(0), channels = scores.shape(1);
  const int spatial = scores.count(2);
  kept->assign(num * spatial, 0);
  double loss = 0;
  int kept_count = 0;
  for (int n = 0; n < num; ++n) {
    vector<std::pair<double, int> > valid;  // (p, pixel)
    for (int s = 0; s < spatial; ++s) {
      const int label = static_cast<int>(labels.cpu_data()[n * spatial + s]);
      if (label == ignore_label) continue;
      double max_score = -std::numeric_limits<double>::infinity();
      for (int c = 0; c < channels; ++c) {
        max_score = std::max<double>(max_score, scores.data_at(n, c, 0, 0 + s));
      }
      double denominator = 0;
      for (int c = 0; c < channels; ++c) {
        denominator += std::exp(scores.data_at(n, c, 0, s) - max_score);
      }
      valid.push_back(std::make_pair(
          std::exp(scores.data_at(n, label, 0, s) - max_score) / denominator,
          s));
    }
    std::sort(valid.begin(), valid.end());
    for (int i = 0; i < valid.size(); ++i) {
      if (i < min_kept || valid[i].first < threshold) {
        (*kept)[n * spatial + valid[i].second] = 1;
        loss -= std::log(std::max(valid[i].first, double(FLT_MIN)));
        ++kept_count;
      }
    }
  }
  return loss / std::max(kept_count, 1);
}

template <typename TypeParam>
class BootstrappedSoftmaxWithLossLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  // Two images of 3 x 4 pixels, 5 classes. The true-class score of each
  // pixel is a distinct level, the others small noise, so the probabilities
  // are far apart and a gradient checker's step never changes the selection.
  BootstrappedSoftmaxWithLossLayerTest()
      : blob_bottom_data_(new Blob<Dtype>(2, 5, 1, 12)),
        blob_bottom_label_(new Blob<Dtype>(2, 1, 1, 12)),
        blob_top_loss_(new Blob<Dtype>()),
        blob_top_mask_(new Blob<Dtype>()) {
    FillerParameter filler_param;
    filler_param.set_std(0.1);
    GaussianFiller<Dtype> filler(filler_param);
    filler.Fill(blob_bottom_data_);
    const int spatial = 12;
    for (int n = 0; n < 2; ++n) {
      vector<int> levels(spatial);
      for (int s = 0; s < spatial; ++s) levels[s] = s;
      std::random_shuffle(levels.begin(), levels.end(), caffe_rng_rand_mod);
      for (int s = 0; s < spatial; ++s) {
        const int label = caffe_rng_rand() % 5;
        blob_bottom_label_->mutable_cpu_data()[n * spatial + s] = label;
        blob_bottom_data_->mutable_cpu_data()[blob_bottom_data_->offset(
            n, label, 0, s)] += -3 + 6.0 * levels[s] / (spatial - 1);
      }
    }
    blob_bottom_vec_.push_back(blob_bottom_data_);
    blob_bottom_vec_.push_back(blob_bottom_label_);
    blob_top_vec_.push_back(blob_top_loss_);
  }
  virtual ~BootstrappedSoftmaxWithLossLayerTest() {
    delete blob_bottom_data_;
    delete blob_bottom_label_;
    delete blob_top_loss_;
    delete blob_top_mask_;
  }
  static int caffe_rng_rand_mod(int n) { return caffe_rng_rand() % n; }

  LayerParameter Param(int min_kept, float threshold) {
    LayerParameter param;
    param.mutable_loss_param()->set_ignore_label(255);
    param.mutable_bootstrap_param()->set_min_kept(min_kept);
    param.mutable_bootstrap_param()->set_threshold(threshold);
    return param;
  }

  void IgnoreSomePixels() {
    Dtype* label = blob_bottom_label_->mutable_cpu_data();
    label[1] = label[5] = label[14] = 255;
  }

  // Forward value and mask against the reference implementation.
  void CheckAgainstReference(int min_kept, float threshold) {
    blob_top_vec_.push_back(blob_top_mask_);
    BootstrappedSoftmaxWithLossLayer<Dtype> layer(Param(min_kept, threshold));
    layer.SetUp(blob_bottom_vec_, blob_top_vec_);
    layer.Forward(blob_bottom_vec_, blob_top_vec_);
    vector<int> kept;
    const Dtype expected = ReferenceBootstrappedLoss(*blob_bottom_data_,
        *blob_bottom_label_, 255, min_kept, threshold, &kept);
    EXPECT_NEAR(blob_top_loss_->cpu_data()[0], expected, 1e-5 * (1 + expected));
    for (int i = 0; i < kept.size(); ++i) {
      EXPECT_EQ(blob_top_mask_->cpu_data()[i], kept[i]) << "pixel " << i;
    }
  }

  void TwoPasses(Layer<Dtype>* layer) {
    layer->Forward(blob_bottom_vec_, blob_top_vec_);
    layer->Forward(blob_bottom_vec_, blob_top_vec_);
  }

  void CheckGradient(int min_kept, float threshold) {
    LayerParameter param = Param(min_kept, threshold);
    param.add_loss_weight(3);
    BootstrappedSoftmaxWithLossLayer<Dtype> layer(param);
    GradientChecker<Dtype> checker(1e-2, 1e-2, 1701);
    checker.CheckGradientExhaustive(&layer, blob_bottom_vec_, blob_top_vec_, 0);
  }

  Blob<Dtype>* const blob_bottom_data_;
  Blob<Dtype>* const blob_bottom_label_;
  Blob<Dtype>* const blob_top_loss_;
  Blob<Dtype>* const blob_top_mask_;
  vector<Blob<Dtype>*> blob_bottom_vec_;
  vector<Blob<Dtype>*> blob_top_vec_;
};

TYPED_TEST_CASE(BootstrappedSoftmaxWithLossLayerTest, TestDtypesAndDevices);

TYPED_TEST(BootstrappedSoftmaxWithLossLayerTest, TestGradientMinKeptOnly) {
  this->IgnoreSomePixels();
  this->CheckGradient(4, 0);
}

TYPED_TEST(BootstrappedSoftmaxWithLossLayerTest, TestGradientThresholdOnly) {
  this->IgnoreSomePixels();
  this->CheckGradient(0, 0.3);
}

TYPED_TEST(BootstrappedSoftmaxWithLossLayerTest, TestGradientMinKeptAndThreshold) {
  this->CheckGradient(3, 0.2);
}

TYPED_TEST(BootstrappedSoftmaxWithLossLayerTest, TestGradientFewerValidThanMinKept) {
  this->IgnoreSomePixels();
  this->CheckGradient(100, 0);
}

TYPED_TEST(BootstrappedSoftmaxWithLossLayerTest, TestGradientUnnormalized) {
  typedef typename TypeParam::Dtype Dtype;
  LayerParameter param = this->Param(5, 0);
  param.mutable_loss_param()->set_normalize(false);
  BootstrappedSoftmaxWithLossLayer<Dtype> layer(param);
  GradientChecker<Dtype> checker(1e-2, 1e-2, 1701);
  checker.CheckGradientExhaustive(&layer, this->blob_bottom_vec_,
      this->blob_top_vec_, 0);
}

TYPED_TEST(BootstrappedSoftmaxWithLossLayerTest, TestForwardMinKeptOnly) {
  this->IgnoreSomePixels();
  this->CheckAgainstReference(4, 0);
}

TYPED_TEST(BootstrappedSoftmaxWithLossLayerTest, TestForwardThresholdOnly) {
  this->IgnoreSomePixels();
  this->CheckAgainstReference(0, 0.3);
}

TYPED_TEST(BootstrappedSoftmaxWithLossLayerTest, TestForwardPerImageSelection) {
  // Image 0 is made far easier than image 1: a batch-wide selection would
  // take all 6 pixels from image 1, the per-image one takes 3 from each.
  typedef typename TypeParam::Dtype Dtype;
  for (int s = 0; s < 12; ++s) {
    const int label = this->blob_bottom_label_->cpu_data()[s];
    this->blob_bottom_data_->mutable_cpu_data()[
        this->blob_bottom_data_->offset(0, label, 0, s)] += 10;
  }
  this->CheckAgainstReference(3, 0);
  const Dtype* mask = this->blob_top_mask_->cpu_data();
  EXPECT_EQ(3, std::accumulate(mask, mask + 12, Dtype(0)));
  EXPECT_EQ(3, std::accumulate(mask + 12, mask + 24, Dtype(0)));
}

// Scores chosen so that p is exact: two classes, score of class 1 = log k
// gives p(1) = k / (1 + k).
TYPED_TEST(BootstrappedSoftmaxWithLossLayerTest, TestForwardHandComputed) {
  typedef typename TypeParam::Dtype Dtype;
  Blob<Dtype> scores(1, 2, 1, 4), labels(1, 1, 1, 4), loss, mask;
  const Dtype class1[] = {log(1.), log(3.), log(3.), log(1. / 9)};
  const Dtype label[] = {1, 1, 0, 0};  // p = 0.5, 0.75, 0.25, 0.9
  for (int s = 0; s < 4; ++s) {
    scores.mutable_cpu_data()[s] = 0;
    scores.mutable_cpu_data()[4 + s] = class1[s];
    labels.mutable_cpu_data()[s] = label[s];
  }
  vector<Blob<Dtype>*> bottom(1, &scores), top(1, &loss);
  bottom.push_back(&labels);
  top.push_back(&mask);
  // The 2 hardest: p = 0.25 and 0.5.
  BootstrappedSoftmaxWithLossLayer<Dtype> layer(this->Param(2, 0));
  layer.SetUp(bottom, top);
  layer.Forward(bottom, top);
  EXPECT_NEAR(loss.cpu_data()[0], 1.5 * log(2.), 1e-6);
  const Dtype expected_mask[] = {1, 0, 1, 0};
  for (int s = 0; s < 4; ++s) EXPECT_EQ(mask.cpu_data()[s], expected_mask[s]);
  // Threshold 0.8 keeps three pixels, more than min_kept = 1.
  BootstrappedSoftmaxWithLossLayer<Dtype> layer2(this->Param(1, 0.8));
  layer2.SetUp(bottom, top);
  layer2.Forward(bottom, top);
  EXPECT_NEAR(loss.cpu_data()[0], (log(2.) + log(4. / 3) + log(4.)) / 3, 1e-6);
}

TYPED_TEST(BootstrappedSoftmaxWithLossLayerTest, TestForwardTiesBrokenByIndex) {
  typedef typename TypeParam::Dtype Dtype;
  caffe_set(this->blob_bottom_data_->count(), Dtype(0),
            this->blob_bottom_data_->mutable_cpu_data());  // p = 1/5 everywhere
  this->blob_top_vec_.push_back(this->blob_top_mask_);
  BootstrappedSoftmaxWithLossLayer<Dtype> layer(this->Param(3, 0));
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
  EXPECT_NEAR(this->blob_top_loss_->cpu_data()[0], log(5.), 1e-5);
  for (int n = 0; n < 2; ++n) {
    for (int s = 0; s < 12; ++s) {
      EXPECT_EQ(this->blob_top_mask_->cpu_data()[n * 12 + s], s < 3 ? 1 : 0);
    }
  }
}

TYPED_TEST(BootstrappedSoftmaxWithLossLayerTest, TestForwardKeepAllEqualsSoftmaxLoss) {
  // Fewer valid pixels than min_kept: every valid pixel counts, which is
  // Caffe's own SoftmaxWithLoss with the same ignore_label.
  typedef typename TypeParam::Dtype Dtype;
  this->IgnoreSomePixels();
  LayerParameter param = this->Param(1000, 0);
  BootstrappedSoftmaxWithLossLayer<Dtype> layer(param);
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
  const Dtype loss = this->blob_top_loss_->cpu_data()[0];
  SoftmaxWithLossLayer<Dtype> softmax_loss(param);
  softmax_loss.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  softmax_loss.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
  EXPECT_NEAR(loss, this->blob_top_loss_->cpu_data()[0], 1e-5);
}

TYPED_TEST(BootstrappedSoftmaxWithLossLayerTest, TestAllIgnoredGivesZero) {
  typedef typename TypeParam::Dtype Dtype;
  caffe_set(this->blob_bottom_label_->count(), Dtype(255),
            this->blob_bottom_label_->mutable_cpu_data());
  BootstrappedSoftmaxWithLossLayer<Dtype> layer(this->Param(4, 0.5));
  layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
  layer.Forward(this->blob_bottom_vec_, this->blob_top_vec_);
  EXPECT_EQ(this->blob_top_loss_->cpu_data()[0], 0);
  this->blob_top_loss_->mutable_cpu_diff()[0] = 1;
  vector<bool> propagate_down(1, true);
  propagate_down.push_back(false);
  layer.Backward(this->blob_top_vec_, propagate_down, this->blob_bottom_vec_);
  const Dtype* diff = this->blob_bottom_data_->cpu_diff();
  for (int i = 0; i < this->blob_bottom_data_->count(); ++i) {
    ASSERT_EQ(diff[i], 0) << "at " << i;
  }
}

// Bad input dies with a message that names the layer and the problem.
TYPED_TEST(BootstrappedSoftmaxWithLossLayerTest, TestBadInputDeath) {
  typedef typename TypeParam::Dtype Dtype;
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  LayerParameter param = this->Param(4, 0);
  param.set_name("boot");
  {
    LayerParameter bad(param);
    bad.mutable_bootstrap_param()->set_min_kept(-1);
    BootstrappedSoftmaxWithLossLayer<Dtype> layer(bad);
    EXPECT_DEATH(layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_),
                 "boot: bootstrap_param.min_kept must be >= 0");
  }
  {
    LayerParameter bad(param);
    bad.mutable_bootstrap_param()->set_threshold(1.5);
    BootstrappedSoftmaxWithLossLayer<Dtype> layer(bad);
    EXPECT_DEATH(layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_),
                 "boot: bootstrap_param.threshold must lie in \\[0, 1\\]");
  }
  {
    // The CPU dies in the pass that meets the bad pixel; the GPU, which
    // reads nothing back, in the layer's next pass.
    BootstrappedSoftmaxWithLossLayer<Dtype> layer(param);
    layer.SetUp(this->blob_bottom_vec_, this->blob_top_vec_);
    this->blob_bottom_label_->mutable_cpu_data()[7] = 5;
    this->blob_bottom_label_->mutable_cpu_data()[9] = -1;
    EXPECT_DEATH(this->TwoPasses(&layer),
                 "boot: label 5 of image 0, pixel 7 is outside \\[0, 5\\)");
    this->blob_bottom_label_->mutable_cpu_data()[7] = 0;
    this->blob_bottom_label_->mutable_cpu_data()[9] = 0;
    this->blob_bottom_data_->mutable_cpu_data()[this->blob_bottom_data_->offset(
        1, 2, 0, 3)] = std::numeric_limits<Dtype>::quiet_NaN();
    EXPECT_DEATH(this->TwoPasses(&layer),
                 "boot: the scores of image 1, pixel 3 are NaN or infinite");
  }
  {
    Blob<Dtype> labels(2, 1, 1, 11);
    vector<Blob<Dtype>*> bottom(1, this->blob_bottom_data_);
    bottom.push_back(&labels);
    BootstrappedSoftmaxWithLossLayer<Dtype> layer(param);
    EXPECT_DEATH(layer.SetUp(bottom, this->blob_top_vec_),
                 "boot: the labels 2 1 1 11 \\(22\\) must hold one value per "
                 "pixel");
  }
}

#ifndef CPU_ONLY

// The GPU layer (a radix select per image) against the CPU layer
// (std::nth_element) on the same inputs: the same pixels kept, ties
// included, and the same loss and gradient up to rounding.
template <typename TypeParam>
class BootstrappedSoftmaxWithLossGPUTest :
    public BootstrappedSoftmaxWithLossLayerTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  // Forward with the mask, and Backward with a top diff of 2, in `mode`;
  // returns the loss, the mask and the input gradient.
  Dtype Run(const LayerParameter& param, Caffe::Brew mode, vector<Dtype>* mask,
            vector<Dtype>* diff) {
    Caffe::set_mode(mode);
    Blob<Dtype> loss, kept;
    vector<Blob<Dtype>*> top(1, &loss);
    top.push_back(&kept);
    BootstrappedSoftmaxWithLossLayer<Dtype> layer(param);
    layer.SetUp(this->blob_bottom_vec_, top);
    layer.Forward(this->blob_bottom_vec_, top);
    loss.mutable_cpu_diff()[0] = 2;
    // Backward must write every element: start from NaN.
    caffe_set(this->blob_bottom_data_->count(),
        std::numeric_limits<Dtype>::quiet_NaN(),
        this->blob_bottom_data_->mutable_cpu_diff());
    vector<bool> propagate_down(1, true);
    propagate_down.push_back(false);
    layer.Backward(top, propagate_down, this->blob_bottom_vec_);
    mask->assign(kept.cpu_data(), kept.cpu_data() + kept.count());
    const Blob<Dtype>& bottom = *this->blob_bottom_data_;
    diff->assign(bottom.cpu_diff(), bottom.cpu_diff() + bottom.count());
    return loss.cpu_data()[0];
  }

  void ExpectGPUEqualsCPU(const LayerParameter& param, const string& name) {
    vector<Dtype> cpu_mask, gpu_mask, cpu_diff, gpu_diff;
    const Dtype cpu_loss = Run(param, Caffe::CPU, &cpu_mask, &cpu_diff);
    const Dtype gpu_loss = Run(param, Caffe::GPU, &gpu_mask, &gpu_diff);
    Caffe::set_mode(Caffe::GPU);
    // Both devices compute the softmax in Dtype: they may differ in the last
    // bits, never in which pixels the test data makes hardest.
    const Dtype epsilon = sizeof(Dtype) == 4 ? 1e-5 : 1e-12;
    EXPECT_GT(cpu_loss, 0) << name;
    EXPECT_NEAR(gpu_loss, cpu_loss, epsilon * cpu_loss) << name;
    int kept = 0;
    for (int i = 0; i < cpu_mask.size(); ++i) {
      EXPECT_EQ(cpu_mask[i], gpu_mask[i]) << name << ": pixel " << i;
      kept += cpu_mask[i] != 0;
    }
    EXPECT_GT(kept, 0) << name;
    for (int i = 0; i < cpu_diff.size(); ++i) {
      ASSERT_NEAR(gpu_diff[i], cpu_diff[i], epsilon) << name << ": at " << i;
    }
  }

  // Every option of the forward and gradient tests above, on their data.
  void CheckSmallCases() {
    const struct { int min_kept; float threshold; bool ignore; } cases[] = {
      {4, 0, true}, {0, 0.3, true}, {3, 0.2, false}, {100, 0, true},
      {1, 0.8, false}, {9, 0, false}, {11, 0, false},
    };
    const Blob<Dtype>& labels = *this->blob_bottom_label_;
    const vector<Dtype> all_valid(labels.cpu_data(),
                                  labels.cpu_data() + labels.count());
    for (int i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
      caffe_copy(labels.count(), all_valid.data(),
                 this->blob_bottom_label_->mutable_cpu_data());
      if (cases[i].ignore) this->IgnoreSomePixels();
      ExpectGPUEqualsCPU(this->Param(cases[i].min_kept, cases[i].threshold),
          "case " + std::to_string(i));
    }
  }

  // N x 21 x 65 x 65 scores in which every pixel takes one of 8 score
  // columns: column k scores 0 for its label and for 8 - k other classes,
  // -1000 for the rest, so that p = 1 / (9 - k) exactly on both devices
  // (the exponentials are 1 or 0), each value shared by hundreds of pixels;
  // a few pixels are ignored. More pixels per image than threads per block.
  void MakeTiedScores(int num) {
    const int channels = 21, spatial = 65 * 65;
    this->blob_bottom_data_->Reshape(num, channels, 65, 65);
    this->blob_bottom_label_->Reshape(num, 1, 65, 65);
    Dtype* data = this->blob_bottom_data_->mutable_cpu_data();
    Dtype* label = this->blob_bottom_label_->mutable_cpu_data();
    for (int n = 0; n < num; ++n) {
      for (int s = 0; s < spatial; ++s) {
        // Uneven frequencies: column k is taken by (k + 1) / 36 of the
        // pixels, in an order that jumps around the image.
        const int draw = (s * 7919 + n * 104729) % 36;
        int column = 0;
        while ((column + 1) * (column + 2) / 2 <= draw) ++column;
        const int true_class = column % 5;
        label[n * spatial + s] = s % 97 == 0 ? 255 : true_class;
        int others = 8 - column;
        for (int c = 0; c < channels; ++c) {
          Dtype score = -1000;
          if (c == true_class) {
            score = 0;
          } else if (others > 0) {
            score = 0;
            --others;
          }
          data[(n * channels + c) * spatial + s] = score;
        }
      }
    }
  }
};

typedef ::testing::Types<GPUDevice<float>, GPUDevice<double> > GPUDtypes;
TYPED_TEST_CASE(BootstrappedSoftmaxWithLossGPUTest, GPUDtypes);

TYPED_TEST(BootstrappedSoftmaxWithLossGPUTest, TestSmallCasesEqualCPU) {
  this->CheckSmallCases();
}

TYPED_TEST(BootstrappedSoftmaxWithLossGPUTest, TestTiesEqualCPU) {
  typedef typename TypeParam::Dtype Dtype;
  caffe_set(this->blob_bottom_data_->count(), Dtype(0),
            this->blob_bottom_data_->mutable_cpu_data());  // p = 1/5 everywhere
  this->ExpectGPUEqualsCPU(this->Param(3, 0), "all equal, min_kept 3");
  this->ExpectGPUEqualsCPU(this->Param(3, 0.5), "all below the threshold");
}

TYPED_TEST(BootstrappedSoftmaxWithLossGPUTest, TestLargeTiedImagesEqualCPU) {
  this->MakeTiedScores(3);
  // The paper's K values (each falls inside a group of equal
  // probabilities), a threshold that keeps more than K, one that keeps
  // fewer, and a K inside a later group.
  const struct { int min_kept; float threshold; } cases[] = {
    {256, 0}, {512, 0}, {1024, 0}, {512, 0.3}, {512, 0.115}, {2500, 0},
  };
  for (int i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    this->ExpectGPUEqualsCPU(this->Param(cases[i].min_kept,
        cases[i].threshold), "min_kept " + std::to_string(cases[i].min_kept) +
        ", threshold " + std::to_string(cases[i].threshold));
  }
}

#endif  // CPU_ONLY

}  // namespace caffe
