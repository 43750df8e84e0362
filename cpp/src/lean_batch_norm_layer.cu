#include <vector>

#include "fcrn/lean_batch_norm_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

// One block per channel; see ChannelSums in lean_batch_norm_layer.cpp.
template <typename Dtype>
__global__ void ChannelSumsGPU(const int num, const int channels,
    const int spatial_dim, const Dtype* src, const Dtype* offset,
    const Dtype* scale, const Dtype* weight, Dtype* sum1, Dtype* sum2) {
  __shared__ double partial1[CAFFE_CUDA_NUM_THREADS];
  __shared__ double partial2[CAFFE_CUDA_NUM_THREADS];
  const int c = blockIdx.x;
  const Dtype off = offset ? offset[c] : Dtype(0);
  const Dtype scl = scale ? scale[c] : Dtype(1);
  double s1 = 0, s2 = 0;
  for (int k = threadIdx.x; k < num * spatial_dim; k += blockDim.x) {
    const int i = ((k / spatial_dim) * channels + c) * spatial_dim
        + k % spatial_dim;
    const Dtype v = (src[i] - off) * scl;
    const Dtype w = weight ? weight[i] : v;
    s1 += w;
    s2 += w * v;
  }
  partial1[threadIdx.x] = s1;
  partial2[threadIdx.x] = s2;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      partial1[threadIdx.x] += partial1[threadIdx.x + stride];
      partial2[threadIdx.x] += partial2[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    sum1[c] = partial1[0];
    sum2[c] = partial2[0];
  }
}

template <typename Dtype>
__global__ void ChannelAffineGPU(const int count, const int channels,
    const int spatial_dim, const Dtype* in, const Dtype* offset,
    const Dtype* scale, const Dtype* shift, Dtype* out) {
  CUDA_KERNEL_LOOP(i, count) {
    const int c = (i / spatial_dim) % channels;
    out[i] = (in[i] - (offset ? offset[c] : Dtype(0))) * scale[c]
        + (shift ? shift[c] : Dtype(0));
  }
}

template <typename Dtype>
__global__ void BatchStatsBackwardGPU(const int count, const int channels,
    const int spatial_dim, const Dtype inv_m, const Dtype* top_diff,
    const Dtype* src, const Dtype* xhat_offset, const Dtype* xhat_scale,
    const Dtype* slope, const Dtype* sum1, const Dtype* sum2,
    Dtype* bottom_diff) {
  CUDA_KERNEL_LOOP(i, count) {
    const int c = (i / spatial_dim) % channels;
    const Dtype xhat = (src[i] - xhat_offset[c]) * xhat_scale[c];
    bottom_diff[i] = slope[c] * (top_diff[i] - sum1[c] * inv_m
        - xhat * sum2[c] * inv_m);
  }
}

template <typename Dtype>
void LeanBatchNormLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const Dtype* bottom_data = bottom[0]->gpu_data();
  if (!use_global_stats_) {
    // NOLINT_NEXT_LINE(whitespace/operators)
    ChannelSumsGPU<Dtype><<<channels_, CAFFE_CUDA_NUM_THREADS>>>(num_,
        channels_, spatial_dim_, bottom_data, NULL, NULL, NULL,
        sum1_.mutable_gpu_data(), sum2_.mutable_gpu_data());
    CUDA_POST_KERNEL_CHECK;
    caffe_gpu_scale(channels_, Dtype(1) / (num_ * spatial_dim_),
                    sum1_.gpu_data(), mean_.mutable_gpu_data());
    // NOLINT_NEXT_LINE(whitespace/operators)
    ChannelSumsGPU<Dtype><<<channels_, CAFFE_CUDA_NUM_THREADS>>>(num_,
        channels_, spatial_dim_, bottom_data, mean_.gpu_data(), NULL, NULL,
        sum1_.mutable_gpu_data(), sum2_.mutable_gpu_data());
    CUDA_POST_KERNEL_CHECK;
  }
  ComputeAffine(!use_global_stats_);  // per-channel, on the host
  keep_input_ = NeedsInputCopy(bottom[0] == top[0]);
  if (keep_input_) {
    input_copy_.ReshapeLike(*bottom[0]);
    caffe_copy(bottom[0]->count(), bottom_data,
               input_copy_.mutable_gpu_data());
  }
  const int count = bottom[0]->count();
  // NOLINT_NEXT_LINE(whitespace/operators)
  ChannelAffineGPU<Dtype><<<CAFFE_GET_BLOCKS(count), CAFFE_CUDA_NUM_THREADS>>>(
      count, channels_, spatial_dim_, bottom_data, mean_.gpu_data(),
      slope_.gpu_data(), this->blobs_[4]->gpu_data(),
      top[0]->mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void LeanBatchNormLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  const Dtype* top_diff = top[0]->gpu_diff();
  const bool need_xhat = !use_global_stats_ || this->param_propagate_down(3);
  const Dtype* src = NULL;
  if (need_xhat || this->param_propagate_down(4)) {
    const bool from_output = bottom[0] == top[0] && !keep_input_;
    src = keep_input_ ? input_copy_.gpu_data() : from_output ?
        top[0]->gpu_data() : bottom[0]->gpu_data();
    SetUpXhat(from_output);
    // NOLINT_NEXT_LINE(whitespace/operators)
    ChannelSumsGPU<Dtype><<<channels_, CAFFE_CUDA_NUM_THREADS>>>(num_,
        channels_, spatial_dim_, src, xhat_offset_.gpu_data(),
        xhat_scale_.gpu_data(), top_diff, sum1_.mutable_gpu_data(),
        sum2_.mutable_gpu_data());
    CUDA_POST_KERNEL_CHECK;
    AccumulateParamDiffs();
  }
  if (!propagate_down[0]) {
    return;
  }
  const int count = bottom[0]->count();
  Dtype* bottom_diff = bottom[0]->mutable_gpu_diff();
  if (use_global_stats_) {
    // NOLINT_NEXT_LINE(whitespace/operators)
    ChannelAffineGPU<Dtype><<<CAFFE_GET_BLOCKS(count),
        CAFFE_CUDA_NUM_THREADS>>>(count, channels_, spatial_dim_, top_diff,
        NULL, slope_.gpu_data(), NULL, bottom_diff);
  } else {
    // NOLINT_NEXT_LINE(whitespace/operators)
    BatchStatsBackwardGPU<Dtype><<<CAFFE_GET_BLOCKS(count),
        CAFFE_CUDA_NUM_THREADS>>>(count, channels_, spatial_dim_,
        Dtype(1) / (num_ * spatial_dim_), top_diff, src,
        xhat_offset_.gpu_data(), xhat_scale_.gpu_data(), slope_.gpu_data(),
        sum1_.gpu_data(), sum2_.gpu_data(), bottom_diff);
  }
  CUDA_POST_KERNEL_CHECK;
}

INSTANTIATE_LAYER_GPU_FUNCS(LeanBatchNormLayer);

}  // namespace caffe
