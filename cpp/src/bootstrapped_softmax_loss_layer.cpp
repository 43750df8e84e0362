#include <algorithm>
#include <cfloat>
#include <cmath>
#include <sstream>
#include <utility>
#include <vector>

#include "fcrn/bootstrapped_softmax_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
BootstrappedSoftmaxWithLossLayer<Dtype>::~BootstrappedSoftmaxWithLossLayer() {
#ifndef CPU_ONLY
  if (bad_pixel_) cudaFreeHost(bad_pixel_);
#endif
}

template <typename Dtype>
void BootstrappedSoftmaxWithLossLayer<Dtype>::LayerSetUp(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  // The mask top is no loss: without explicit weights, weigh it 0.
  if (top.size() == 2 && this->layer_param_.loss_weight_size() == 0) {
    this->layer_param_.add_loss_weight(Dtype(1));
    this->layer_param_.add_loss_weight(Dtype(0));
  }
  LossLayer<Dtype>::LayerSetUp(bottom, top);
  LayerParameter softmax_param(this->layer_param_);
  softmax_param.set_type("Softmax");
  softmax_param.clear_loss_weight();
  softmax_layer_ = LayerRegistry<Dtype>::CreateLayer(softmax_param);
  softmax_bottom_vec_.clear();
  softmax_bottom_vec_.push_back(bottom[0]);
  softmax_top_vec_.clear();
  softmax_top_vec_.push_back(&prob_);
  softmax_layer_->SetUp(softmax_bottom_vec_, softmax_top_vec_);

  const LossParameter& loss_param = this->layer_param_.loss_param();
  has_ignore_label_ = loss_param.has_ignore_label();
  ignore_label_ = loss_param.ignore_label();
  if (!loss_param.has_normalization() && loss_param.has_normalize()) {
    normalization_ = loss_param.normalize() ?
        LossParameter_NormalizationMode_VALID :
        LossParameter_NormalizationMode_BATCH_SIZE;
  } else {
    normalization_ = loss_param.normalization();
  }

  const BootstrapParameter& bootstrap_param =
      this->layer_param_.bootstrap_param();
  min_kept_ = bootstrap_param.min_kept();
  threshold_ = bootstrap_param.threshold();
  const string& name = this->layer_param_.name();
  CHECK_GE(min_kept_, 0) << "Layer " << name
      << ": bootstrap_param.min_kept must be >= 0, got " << min_kept_;
  CHECK(threshold_ >= 0 && threshold_ <= 1) << "Layer " << name
      << ": bootstrap_param.threshold must lie in [0, 1], got " << threshold_;
  CHECK(min_kept_ > 0 || threshold_ > 0) << "Layer " << name
      << ": min_kept = 0 and threshold = 0 would keep no pixel at all";
}

template <typename Dtype>
void BootstrappedSoftmaxWithLossLayer<Dtype>::Reshape(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  LossLayer<Dtype>::Reshape(bottom, top);
  softmax_layer_->Reshape(softmax_bottom_vec_, softmax_top_vec_);
  softmax_axis_ =
      bottom[0]->CanonicalAxisIndex(this->layer_param_.softmax_param().axis());
  outer_num_ = bottom[0]->count(0, softmax_axis_);
  inner_num_ = bottom[0]->count(softmax_axis_ + 1);
  CHECK_EQ(outer_num_ * inner_num_, bottom[1]->count())
      << "Layer " << this->layer_param_.name() << ": the labels "
      << bottom[1]->shape_string() << " must hold one value per pixel of the "
      << "scores " << bottom[0]->shape_string()
      << ", i.e. N x 1 x H x W for N x C x H x W scores";
  CHECK_EQ(inner_num_, bottom[1]->count(1))
      << "Layer " << this->layer_param_.name() << ": labels "
      << bottom[1]->shape_string() << " and scores "
      << bottom[0]->shape_string() << " differ in batch or spatial size";
  true_prob_.ReshapeLike(*bottom[1]);
  kept_.ReshapeLike(*bottom[1]);
  candidates_.reserve(inner_num_);
  image_loss_.Reshape(vector<int>(1, outer_num_));
  image_kept_.Reshape(vector<int>(1, outer_num_));
  normalizer_.Reshape(vector<int>(1, 1));
  first_bad_.Reshape(vector<int>(1, 1));
  if (top.size() >= 2) {
    top[1]->ReshapeLike(*bottom[1]);
  }
}

template <typename Dtype>
Dtype BootstrappedSoftmaxWithLossLayer<Dtype>::GetNormalizer(
    int kept_count) const {
  Dtype normalizer;
  switch (normalization_) {
    case LossParameter_NormalizationMode_FULL:
      normalizer = Dtype(outer_num_ * inner_num_);
      break;
    case LossParameter_NormalizationMode_VALID:
      normalizer = Dtype(kept_count);
      break;
    case LossParameter_NormalizationMode_BATCH_SIZE:
      normalizer = Dtype(outer_num_);
      break;
    case LossParameter_NormalizationMode_NONE:
      normalizer = Dtype(1);
      break;
    default:
      LOG(FATAL) << "Unknown normalization mode: "
          << LossParameter_NormalizationMode_Name(normalization_);
  }
  // A batch with every pixel ignored keeps none: loss and gradient are 0.
  return std::max(Dtype(1), normalizer);
}

template <typename Dtype>
string BootstrappedSoftmaxWithLossLayer<Dtype>::BadPixelMessage(int index,
    double label, bool bad_label) const {
  std::ostringstream message;
  message << "Layer " << this->layer_param_.name() << ": ";
  if (bad_label) {
    message << "label " << label << " of image " << index / inner_num_
        << ", pixel " << index % inner_num_ << " is outside [0, "
        << prob_.shape(softmax_axis_) << ")"
        << (has_ignore_label_ ? " and is not the ignore_label" : "");
  } else {
    message << "the scores of image " << index / inner_num_ << ", pixel "
        << index % inner_num_ << " are NaN or infinite";
  }
  return message.str();
}

template <typename Dtype>
Dtype BootstrappedSoftmaxWithLossLayer<Dtype>::SelectHardPixels(
    const Dtype* label, const Dtype* true_prob) {
  const int num_classes = prob_.shape(softmax_axis_);
  Dtype* kept = kept_.mutable_cpu_data();
  caffe_set(kept_.count(), Dtype(0), kept);
  kept_count_ = 0;
  Dtype loss = 0;
  for (int i = 0; i < outer_num_; ++i) {
    candidates_.clear();
    int below_threshold = 0;
    for (int j = 0; j < inner_num_; ++j) {
      const int index = i * inner_num_ + j;
      const Dtype label_float = label[index];
      const int label_value = static_cast<int>(label_float);
      if (has_ignore_label_ && label_value == ignore_label_) {
        continue;
      }
      if (!(label_value >= 0 && label_value < num_classes)) {
        LOG(FATAL) << BadPixelMessage(index, label_float, true);
      }
      const Dtype p = true_prob[index];
      if (!std::isfinite(p)) {
        LOG(FATAL) << BadPixelMessage(index, label_float, false);
      }
      candidates_.push_back(std::make_pair(p, index));
      below_threshold += p < threshold_;
    }
    const int valid = candidates_.size();
    if (below_threshold < min_kept_ && min_kept_ < valid) {
      // The min_kept smallest (p, index) pairs: every pixel below the
      // threshold is among them, and ties go to the lower index.
      std::nth_element(candidates_.begin(), candidates_.begin() + min_kept_,
                       candidates_.end());
      candidates_.resize(min_kept_);
    } else if (min_kept_ < valid) {
      candidates_.erase(std::remove_if(candidates_.begin(), candidates_.end(),
          [this](const std::pair<Dtype, int>& c) {
            return !(c.first < threshold_); }), candidates_.end());
    }
    for (const std::pair<Dtype, int>& c : candidates_) {
      kept[c.second] = 1;
      loss -= std::log(std::max(c.first, Dtype(FLT_MIN)));
    }
    kept_count_ += candidates_.size();
  }
  return loss;
}

template <typename Dtype>
void BootstrappedSoftmaxWithLossLayer<Dtype>::SetTop(Dtype loss_sum,
    const vector<Blob<Dtype>*>& top) {
  top[0]->mutable_cpu_data()[0] = loss_sum / GetNormalizer(kept_count_);
  if (top.size() == 2) {
    top[1]->CopyFrom(kept_);
  }
}

template <typename Dtype>
void BootstrappedSoftmaxWithLossLayer<Dtype>::Forward_cpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  softmax_layer_->Forward(softmax_bottom_vec_, softmax_top_vec_);
  const Dtype* prob_data = prob_.cpu_data();
  const Dtype* label = bottom[1]->cpu_data();
  const int num_classes = prob_.shape(softmax_axis_);
  const int dim = prob_.count() / outer_num_;
  Dtype* true_prob = true_prob_.mutable_cpu_data();
  for (int i = 0; i < outer_num_; ++i) {
    for (int j = 0; j < inner_num_; ++j) {
      const int index = i * inner_num_ + j;
      const int label_value = static_cast<int>(label[index]);
      // Out-of-range labels are reported by SelectHardPixels.
      true_prob[index] = (label_value >= 0 && label_value < num_classes) ?
          prob_data[i * dim + label_value * inner_num_ + j] : Dtype(0);
    }
  }
  SetTop(SelectHardPixels(label, true_prob), top);
}

template <typename Dtype>
void BootstrappedSoftmaxWithLossLayer<Dtype>::Backward_cpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down[1]) {
    LOG(FATAL) << this->type()
               << " Layer cannot backpropagate to label inputs.";
  }
  if (!propagate_down[0]) {
    return;
  }
  // Most pixels are not kept: clear everything, then write the kept ones.
  Dtype* bottom_diff = bottom[0]->mutable_cpu_diff();
  caffe_set(prob_.count(), Dtype(0), bottom_diff);
  const Dtype* prob_data = prob_.cpu_data();
  const Dtype* label = bottom[1]->cpu_data();
  const Dtype* kept = kept_.cpu_data();
  const int num_classes = prob_.shape(softmax_axis_);
  const int dim = prob_.count() / outer_num_;
  const Dtype loss_weight = top[0]->cpu_diff()[0] / GetNormalizer(kept_count_);
  for (int i = 0; i < outer_num_; ++i) {
    for (int j = 0; j < inner_num_; ++j) {
      if (!kept[i * inner_num_ + j]) {
        continue;
      }
      const int label_value = static_cast<int>(label[i * inner_num_ + j]);
      for (int c = 0; c < num_classes; ++c) {
        const int index = i * dim + c * inner_num_ + j;
        bottom_diff[index] =
            loss_weight * (prob_data[index] - (c == label_value));
      }
    }
  }
}

#ifdef CPU_ONLY
STUB_GPU(BootstrappedSoftmaxWithLossLayer);
#endif

INSTANTIATE_CLASS(BootstrappedSoftmaxWithLossLayer);
REGISTER_LAYER_CLASS(BootstrappedSoftmaxWithLoss);

}  // namespace caffe
