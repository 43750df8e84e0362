#include <algorithm>
#include <cmath>
#include <vector>

#include "fcrn/lean_batch_norm_layer.hpp"
#include "caffe/filler.hpp"
#include "caffe/util/math_functions.hpp"
#include "caffe/util/parallel.hpp"

namespace caffe {

namespace {

// Per channel c, over every (n, s): with v = (src - offset[c]) * scale[c]
// (a missing offset or scale is 0 or 1) and w = weight if given, else v,
// sum1[c] = sum of w and sum2[c] = sum of w * v. This one reduction gives
// sum x, sum (x - mean)^2, and in backward sum dy and sum dy * xhat.
template <typename Dtype>
void ChannelSums(int num, int channels, int spatial_dim, const Dtype* src,
    const Dtype* offset, const Dtype* scale, const Dtype* weight,
    Dtype* sum1, Dtype* sum2) {
#pragma omp parallel for if (ParallelLoop(num * channels * spatial_dim))
  for (int c = 0; c < channels; ++c) {
    const Dtype off = offset ? offset[c] : Dtype(0);
    const Dtype scl = scale ? scale[c] : Dtype(1);
    double s1 = 0, s2 = 0;  // double: channels can hold millions of values
    for (int n = 0; n < num; ++n) {
      const int base = (n * channels + c) * spatial_dim;
      for (int s = 0; s < spatial_dim; ++s) {
        const Dtype v = (src[base + s] - off) * scl;
        const Dtype w = weight ? weight[base + s] : v;
        s1 += w;
        s2 += w * v;
      }
    }
    sum1[c] = s1;
    sum2[c] = s2;
  }
}

// out = (in - offset[c]) * scale[c] + shift[c]; offset and shift may be null;
// relu: negative results are 0, as ReLULayer makes them.
template <typename Dtype>
void ChannelAffine(int num, int channels, int spatial_dim, const Dtype* in,
    const Dtype* offset, const Dtype* scale, const Dtype* shift, bool relu,
    Dtype* out) {
#pragma omp parallel for if (ParallelLoop(num * channels * spatial_dim))
  for (int plane = 0; plane < num * channels; ++plane) {
    const int c = plane % channels;
    // Copies: out may alias in, and the compiler must not reload these.
    const Dtype off = offset ? offset[c] : Dtype(0);
    const Dtype scl = scale[c];
    const Dtype add = shift ? shift[c] : Dtype(0);
    const Dtype* x = in + plane * spatial_dim;
    Dtype* y = out + plane * spatial_dim;
    if (relu) {
      for (int s = 0; s < spatial_dim; ++s) {
        y[s] = std::max((x[s] - off) * scl + add, Dtype(0));
      }
    } else {
      for (int s = 0; s < spatial_dim; ++s) {
        y[s] = (x[s] - off) * scl + add;
      }
    }
  }
}

}  // namespace

template <typename Dtype>
void LeanBatchNormLayer<Dtype>::LayerSetUp(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const BatchNormParameter& param = this->layer_param_.batch_norm_param();
  moving_average_fraction_ = param.moving_average_fraction();
  use_global_stats_ = param.has_use_global_stats() ?
      param.use_global_stats() : this->phase_ == TEST;
  eps_ = param.eps();
  const string& name = this->layer_param_.name();
  CHECK_GE(bottom[0]->num_axes(), 2) << "Layer " << name
      << ": input " << bottom[0]->shape_string() << " has no channel axis";
  channels_ = bottom[0]->shape(1);
  if (this->blobs_.size() > 0) {
    LOG(INFO) << "Skipping parameter initialization";
  } else {
    this->blobs_.resize(5);
    const vector<int> channel_shape(1, channels_);
    for (int i = 0; i < 5; ++i) {
      this->blobs_[i].reset(new Blob<Dtype>(
          i == 2 ? vector<int>(1, 1) : channel_shape));
      caffe_set(this->blobs_[i]->count(), Dtype(0),
                this->blobs_[i]->mutable_cpu_data());
    }
    const ScaleParameter& scale_param = this->layer_param_.scale_param();
    FillerParameter gamma_filler(scale_param.filler());
    if (!scale_param.has_filler()) {
      gamma_filler.set_type("constant");
      gamma_filler.set_value(1);
    }
    shared_ptr<Filler<Dtype> > filler(GetFiller<Dtype>(gamma_filler));
    filler->Fill(this->blobs_[3].get());
    filler.reset(GetFiller<Dtype>(scale_param.bias_filler()));
    filler->Fill(this->blobs_[4].get());
  }
  // The statistics are not learnt: force their lr_mult to 0, as BatchNorm.
  for (int i = 0; i < 3; ++i) {
    if (this->layer_param_.param_size() == i) {
      this->layer_param_.add_param()->set_lr_mult(0.f);
    } else {
      CHECK_EQ(this->layer_param_.param(i).lr_mult(), 0.f) << "Layer " << name
          << ": param " << i << " holds batch statistics and cannot be learnt;"
          << " give lr_mult 0 to params 0-2 and gamma, beta as params 3, 4";
    }
  }
  // A TEST net runs Forward only: it keeps no copy for gamma's gradient.
  learns_gamma_ = this->phase_ == TRAIN &&
      (this->layer_param_.param_size() <= 3 ||
       this->layer_param_.param(3).lr_mult() != 0);
  const vector<int> channel_shape(1, channels_);
  mean_.Reshape(channel_shape);
  inv_std_.Reshape(channel_shape);
  slope_.Reshape(channel_shape);
  sum1_.Reshape(channel_shape);
  sum2_.Reshape(channel_shape);
  keep_input_ = false;
}

template <typename Dtype>
void LeanBatchNormLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const string& name = this->layer_param_.name();
  CHECK_GE(bottom[0]->num_axes(), 2) << "Layer " << name
      << ": input " << bottom[0]->shape_string() << " has no channel axis";
  CHECK_EQ(bottom[0]->shape(1), channels_) << "Layer " << name
      << ": input " << bottom[0]->shape_string() << " has "
      << bottom[0]->shape(1) << " channels, its parameters " << channels_;
  for (int i = 0; i < 5; ++i) {
    CHECK_EQ(this->blobs_[i]->count(), i == 2 ? 1 : channels_)
        << "Layer " << name << ": blob " << i << " has shape "
        << this->blobs_[i]->shape_string() << " for " << channels_
        << " channels";
  }
  if (bottom[0] != top[0]) {
    top[0]->ReshapeLike(*bottom[0]);
  }
  num_ = bottom[0]->shape(0);
  spatial_dim_ = bottom[0]->count(2);
}

template <typename Dtype>
void LeanBatchNormLayer<Dtype>::ComputeAffine(bool from_batch) {
  Dtype* mean = mean_.mutable_cpu_data();
  Dtype* inv_std = inv_std_.mutable_cpu_data();
  if (from_batch) {
    // mean_ holds the batch mean, sum2_ the summed squared deviations.
    const int m = num_ * spatial_dim_;
    const Dtype bias_correction = m > 1 ? Dtype(m) / (m - 1) : Dtype(1);
    const Dtype* sum2 = sum2_.cpu_data();
    Dtype* running_mean = this->blobs_[0]->mutable_cpu_data();
    Dtype* running_var = this->blobs_[1]->mutable_cpu_data();
    Dtype* factor = this->blobs_[2]->mutable_cpu_data();
    factor[0] = factor[0] * moving_average_fraction_ + 1;
    for (int c = 0; c < channels_; ++c) {
      const Dtype var = sum2[c] / m;
      running_mean[c] = running_mean[c] * moving_average_fraction_ + mean[c];
      running_var[c] = running_var[c] * moving_average_fraction_
          + bias_correction * var;
      inv_std[c] = 1 / std::sqrt(var + eps_);
    }
  } else {
    const Dtype factor = this->blobs_[2]->cpu_data()[0];
    const Dtype scale = factor == 0 ? Dtype(0) : 1 / factor;
    const Dtype* running_mean = this->blobs_[0]->cpu_data();
    const Dtype* running_var = this->blobs_[1]->cpu_data();
    for (int c = 0; c < channels_; ++c) {
      mean[c] = scale * running_mean[c];
      inv_std[c] = 1 / std::sqrt(scale * running_var[c] + eps_);
    }
  }
  caffe_mul(channels_, this->blobs_[3]->cpu_data(), inv_std,
            slope_.mutable_cpu_data());
}

template <typename Dtype>
void LeanBatchNormLayer<Dtype>::AccumulateParamDiffs(bool gamma_diff) {
  if (gamma_diff) {
    caffe_axpy(channels_, Dtype(1), sum2_.cpu_data(),
               this->blobs_[3]->mutable_cpu_diff());
  }
  if (this->param_propagate_down(4)) {
    caffe_axpy(channels_, Dtype(1), sum1_.cpu_data(),
               this->blobs_[4]->mutable_cpu_diff());
  }
}

template <typename Dtype>
void LeanBatchNormLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const Dtype* bottom_data = bottom[0]->cpu_data();
  if (!use_global_stats_) {
    ChannelSums<Dtype>(num_, channels_, spatial_dim_, bottom_data, NULL, NULL,
        NULL, sum1_.mutable_cpu_data(), sum2_.mutable_cpu_data());
    caffe_cpu_scale(channels_, Dtype(1) / (num_ * spatial_dim_),
                    sum1_.cpu_data(), mean_.mutable_cpu_data());
    ChannelSums<Dtype>(num_, channels_, spatial_dim_, bottom_data,
        mean_.cpu_data(), NULL, NULL, sum1_.mutable_cpu_data(),
        sum2_.mutable_cpu_data());
  }
  ComputeAffine(!use_global_stats_);
  keep_input_ = KeepsInput(bottom[0] == top[0]);
  if (keep_input_) {
    input_copy_.ReshapeLike(*bottom[0]);
    caffe_copy(bottom[0]->count(), bottom_data,
               input_copy_.mutable_cpu_data());
  }
  ChannelAffine(num_, channels_, spatial_dim_, bottom_data, mean_.cpu_data(),
      slope_.cpu_data(), this->blobs_[4]->cpu_data(), this->fused_relu_,
      top[0]->mutable_cpu_data());
}

template <typename Dtype>
void LeanBatchNormLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  const Dtype* top_diff = top[0]->cpu_diff();
  // The input, or its copy where the layer ran in place and needs xhat
  // (KeepsInput); in place without one, src is the output and only sum1
  // (beta's gradient, the sum of dy) is used.
  const Dtype* src =
      keep_input_ ? input_copy_.cpu_data() : bottom[0]->cpu_data();
  const bool gamma_diff = GammaDiff(bottom[0] == top[0]);
  if (!use_global_stats_ || gamma_diff || this->param_propagate_down(4)) {
    ChannelSums(num_, channels_, spatial_dim_, src, mean_.cpu_data(),
        inv_std_.cpu_data(), top_diff, sum1_.mutable_cpu_data(),
        sum2_.mutable_cpu_data());
    AccumulateParamDiffs(gamma_diff);
  }
  if (!propagate_down[0]) {
    return;
  }
  Dtype* bottom_diff = bottom[0]->mutable_cpu_diff();
  const Dtype* slope = slope_.cpu_data();
  if (use_global_stats_) {
    ChannelAffine<Dtype>(num_, channels_, spatial_dim_, top_diff, NULL, slope,
                         NULL, false, bottom_diff);
    return;
  }
  // dx = gamma / std * (dy - mean(dy) - xhat * mean(dy * xhat))
  const Dtype inv_m = Dtype(1) / (num_ * spatial_dim_);
  const Dtype* sum1 = sum1_.cpu_data();
  const Dtype* sum2 = sum2_.cpu_data();
  const Dtype* mean = mean_.cpu_data();
  const Dtype* inv_std = inv_std_.cpu_data();
#pragma omp parallel for if (ParallelLoop(bottom[0]->count()))
  for (int plane = 0; plane < num_ * channels_; ++plane) {
    const int c = plane % channels_;
    const int base = plane * spatial_dim_;
    for (int s = 0; s < spatial_dim_; ++s) {
      const Dtype xhat = (src[base + s] - mean[c]) * inv_std[c];
      bottom_diff[base + s] = slope[c] * (top_diff[base + s]
          - sum1[c] * inv_m - xhat * sum2[c] * inv_m);
    }
  }
}

#ifdef CPU_ONLY
STUB_GPU(LeanBatchNormLayer);
#endif

INSTANTIATE_CLASS(LeanBatchNormLayer);
REGISTER_LAYER_CLASS(LeanBatchNorm);

}  // namespace caffe
