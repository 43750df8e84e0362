#include <algorithm>
#include <vector>

#include "fcrn/lean_batch_norm_layer.hpp"
#include "caffe/util/math_functions.hpp"

// Every per-channel quantity is computed on the device, so that no forward or
// backward waits on a host copy: the parameter blobs stay where the solver
// (and NCCL, which reads gpu_diff) keeps them. Launches per layer: frozen
// forward 2 (affine, map), batch-statistics forward 3 (reduction, statistics,
// map), backward 1 (map) with fixed parameters, else 3 (reduction, sums, map).

namespace caffe {

namespace {

// Blocks per channel of a reduction over m = num * spatial_dim values: about
// 4 values per thread, and at most 32, which already gives a 64-channel layer
// 2048 blocks (an H100 holds 132 x 4 blocks of 512 threads at once).
int ReductionChunks(int m) {
  const int per_block = 4 * CAFFE_CUDA_NUM_THREADS;
  return std::min(32, std::max(1, (m + per_block - 1) / per_block));
}

}  // namespace

// Index of the j-th of the num * spatial_dim values of channel c.
__device__ inline int ChannelValue(int j, int c, int channels,
    int spatial_dim) {
  return ((j / spatial_dim) * channels + c) * spatial_dim + j % spatial_dim;
}

// Chan et al.'s merge of (count, mean, sum of squared deviations) b into a;
// b = (1, x, 0) is Welford's update. One pass, without the cancellation of
// sum(x^2) - sum(x)^2 / n.
template <typename T>
__device__ void MergeMoments(T* n, T* mean, T* m2, T n_b, T mean_b, T m2_b) {
  if (n_b == 0) return;
  const T w_b = n_b / (*n + n_b);
  const T delta = mean_b - *mean;
  *mean += delta * w_b;
  *m2 += m2_b + delta * delta * *n * w_b;
  *n += n_b;
}

// Block (k, c) = (blockIdx.x, blockIdx.y) reduces its share of channel c's
// values to partials[i][c][k], i = count, mean, M2. Deterministic: a fixed
// tree in shared memory, and BatchStatsGPU merges the chunks in order.
template <typename Dtype>
__global__ void ChannelMomentsGPU(const int m, const int channels,
    const int spatial_dim, const Dtype* src, Dtype* partials) {
  __shared__ Dtype n_s[CAFFE_CUDA_NUM_THREADS];
  __shared__ Dtype mean_s[CAFFE_CUDA_NUM_THREADS];
  __shared__ Dtype m2_s[CAFFE_CUDA_NUM_THREADS];
  const int c = blockIdx.y;
  const int t = threadIdx.x;
  Dtype n = 0, mean = 0, m2 = 0;
  CUDA_KERNEL_LOOP(j, m) {
    MergeMoments(&n, &mean, &m2, Dtype(1),
        src[ChannelValue(j, c, channels, spatial_dim)], Dtype(0));
  }
  n_s[t] = n;
  mean_s[t] = mean;
  m2_s[t] = m2;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) {
      MergeMoments(&n_s[t], &mean_s[t], &m2_s[t], n_s[t + stride],
                   mean_s[t + stride], m2_s[t + stride]);
    }
    __syncthreads();
  }
  if (t == 0) {
    const int size = channels * gridDim.x;
    const int k = c * gridDim.x + blockIdx.x;
    partials[k] = n_s[0];
    partials[size + k] = mean_s[0];
    partials[2 * size + k] = m2_s[0];
  }
}

// As ChannelMomentsGPU, partials[i][c][k] for i = sum of w, sum of w * xhat,
// with xhat = (src - offset[c]) * scale[c] (sum dy and sum dy * xhat).
template <typename Dtype>
__global__ void ChannelDotsGPU(const int m, const int channels,
    const int spatial_dim, const Dtype* src, const Dtype* offset,
    const Dtype* scale, const Dtype* w, Dtype* partials) {
  __shared__ Dtype sum1_s[CAFFE_CUDA_NUM_THREADS];
  __shared__ Dtype sum2_s[CAFFE_CUDA_NUM_THREADS];
  const int c = blockIdx.y;
  const int t = threadIdx.x;
  const Dtype off = offset[c];
  const Dtype scl = scale[c];
  Dtype sum1 = 0, sum2 = 0;
  CUDA_KERNEL_LOOP(j, m) {
    const int i = ChannelValue(j, c, channels, spatial_dim);
    sum1 += w[i];
    sum2 += w[i] * (src[i] - off) * scl;
  }
  sum1_s[t] = sum1;
  sum2_s[t] = sum2;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) {
      sum1_s[t] += sum1_s[t + stride];
      sum2_s[t] += sum2_s[t + stride];
    }
    __syncthreads();
  }
  if (t == 0) {
    const int k = c * gridDim.x + blockIdx.x;
    partials[k] = sum1_s[0];
    partials[channels * gridDim.x + k] = sum2_s[0];
  }
}

// Frozen statistics, as ComputeAffine(false).
template <typename Dtype>
__global__ void FrozenAffineGPU(const int channels, const Dtype eps,
    const Dtype* running_mean, const Dtype* running_var, const Dtype* factor,
    const Dtype* gamma, Dtype* mean, Dtype* inv_std, Dtype* slope) {
  const Dtype scale = factor[0] == 0 ? Dtype(0) : 1 / factor[0];
  CUDA_KERNEL_LOOP(c, channels) {
    mean[c] = scale * running_mean[c];
    inv_std[c] = 1 / sqrt(scale * running_var[c] + eps);
    slope[c] = gamma[c] * inv_std[c];
  }
}

// Batch statistics from ChannelMomentsGPU's partials, as
// ComputeAffine(true): affine and moving averages (unbiased variance).
template <typename Dtype>
__global__ void BatchStatsGPU(const int channels, const int chunks,
    const Dtype* partials, const Dtype eps, const Dtype fraction,
    const Dtype* gamma, Dtype* mean, Dtype* inv_std, Dtype* slope,
    Dtype* running_mean, Dtype* running_var, Dtype* factor) {
  const int size = channels * chunks;
  CUDA_KERNEL_LOOP(c, channels) {
    double n = 0, mu = 0, m2 = 0;
    for (int k = c * chunks; k < (c + 1) * chunks; ++k) {
      MergeMoments<double>(&n, &mu, &m2, partials[k], partials[size + k],
                           partials[2 * size + k]);
    }
    const double var = m2 / n;
    mean[c] = mu;
    inv_std[c] = 1 / sqrt(var + eps);
    slope[c] = gamma[c] * inv_std[c];
    running_mean[c] = running_mean[c] * fraction + mu;
    running_var[c] = running_var[c] * fraction
        + (n > 1 ? n / (n - 1) : 1) * var;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    factor[0] = factor[0] * fraction + 1;
  }
}

// Totals of ChannelDotsGPU's partials into sum1, sum2, added to the
// gradients of beta and gamma where given.
template <typename Dtype>
__global__ void ChannelDotTotalsGPU(const int channels, const int chunks,
    const Dtype* partials, Dtype* sum1, Dtype* sum2, Dtype* beta_diff,
    Dtype* gamma_diff) {
  const int size = channels * chunks;
  CUDA_KERNEL_LOOP(c, channels) {
    double s1 = 0, s2 = 0;
    for (int k = c * chunks; k < (c + 1) * chunks; ++k) {
      s1 += partials[k];
      s2 += partials[size + k];
    }
    sum1[c] = s1;
    sum2[c] = s2;
    if (beta_diff) beta_diff[c] += s1;
    if (gamma_diff) gamma_diff[c] += s2;
  }
}

// out = (in - offset[c]) * scale[c] + shift[c]; offset and shift may be null;
// relu: negative results are 0. save, if given, gets a copy of in on the way
// (in place, out is in).
template <typename Dtype>
__global__ void ChannelAffineGPU(const int count, const int channels,
    const int spatial_dim, const Dtype* in, const Dtype* offset,
    const Dtype* scale, const Dtype* shift, const bool relu, Dtype* save,
    Dtype* out) {
  CUDA_KERNEL_LOOP(i, count) {
    const int c = (i / spatial_dim) % channels;
    const Dtype x = in[i];
    if (save) save[i] = x;
    const Dtype y = (x - (offset ? offset[c] : Dtype(0))) * scale[c]
        + (shift ? shift[c] : Dtype(0));
    out[i] = relu && y < 0 ? Dtype(0) : y;
  }
}

template <typename Dtype>
__global__ void BatchStatsBackwardGPU(const int count, const int channels,
    const int spatial_dim, const Dtype inv_m, const Dtype* top_diff,
    const Dtype* src, const Dtype* mean, const Dtype* inv_std,
    const Dtype* slope, const Dtype* sum1, const Dtype* sum2,
    Dtype* bottom_diff) {
  CUDA_KERNEL_LOOP(i, count) {
    const int c = (i / spatial_dim) % channels;
    const Dtype xhat = (src[i] - mean[c]) * inv_std[c];
    bottom_diff[i] = slope[c] * (top_diff[i] - sum1[c] * inv_m
        - xhat * sum2[c] * inv_m);
  }
}

template <typename Dtype>
void LeanBatchNormLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const Dtype* bottom_data = bottom[0]->gpu_data();
  const Dtype* gamma = this->blobs_[3]->gpu_data();
  if (use_global_stats_) {
    // NOLINT_NEXT_LINE(whitespace/operators)
    FrozenAffineGPU<Dtype><<<CAFFE_GET_BLOCKS(channels_),
        CAFFE_CUDA_NUM_THREADS>>>(channels_, eps_, this->blobs_[0]->gpu_data(),
        this->blobs_[1]->gpu_data(), this->blobs_[2]->gpu_data(), gamma,
        mean_.mutable_gpu_data(), inv_std_.mutable_gpu_data(),
        slope_.mutable_gpu_data());
    CUDA_POST_KERNEL_CHECK;
  } else {
    const int m = num_ * spatial_dim_;
    const int chunks = ReductionChunks(m);
    partials_.Reshape(vector<int>(1, 3 * channels_ * chunks));
    // NOLINT_NEXT_LINE(whitespace/operators)
    ChannelMomentsGPU<Dtype><<<dim3(chunks, channels_),
        CAFFE_CUDA_NUM_THREADS>>>(m, channels_, spatial_dim_, bottom_data,
        partials_.mutable_gpu_data());
    CUDA_POST_KERNEL_CHECK;
    // NOLINT_NEXT_LINE(whitespace/operators)
    BatchStatsGPU<Dtype><<<CAFFE_GET_BLOCKS(channels_),
        CAFFE_CUDA_NUM_THREADS>>>(channels_, chunks, partials_.gpu_data(),
        eps_, moving_average_fraction_, gamma, mean_.mutable_gpu_data(),
        inv_std_.mutable_gpu_data(), slope_.mutable_gpu_data(),
        this->blobs_[0]->mutable_gpu_data(),
        this->blobs_[1]->mutable_gpu_data(),
        this->blobs_[2]->mutable_gpu_data());
    CUDA_POST_KERNEL_CHECK;
  }
  keep_input_ = KeepsInput(bottom[0] == top[0]);
  if (keep_input_) {
    input_copy_.ReshapeLike(*bottom[0]);
  }
  const int count = bottom[0]->count();
  // NOLINT_NEXT_LINE(whitespace/operators)
  ChannelAffineGPU<Dtype><<<CAFFE_GET_BLOCKS(count), CAFFE_CUDA_NUM_THREADS>>>(
      count, channels_, spatial_dim_, bottom_data, mean_.gpu_data(),
      slope_.gpu_data(), this->blobs_[4]->gpu_data(), this->fused_relu_,
      keep_input_ ? input_copy_.mutable_gpu_data() : NULL,
      top[0]->mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void LeanBatchNormLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  const Dtype* top_diff = top[0]->gpu_diff();
  // As Backward_cpu: the input or its copy; in place without one, only
  // sum1 is used.
  const Dtype* src =
      keep_input_ ? input_copy_.gpu_data() : bottom[0]->gpu_data();
  const bool gamma_diff = GammaDiff(bottom[0] == top[0]);
  if (!use_global_stats_ || gamma_diff || this->param_propagate_down(4)) {
    const int m = num_ * spatial_dim_;
    const int chunks = ReductionChunks(m);
    partials_.Reshape(vector<int>(1, 2 * channels_ * chunks));
    // NOLINT_NEXT_LINE(whitespace/operators)
    ChannelDotsGPU<Dtype><<<dim3(chunks, channels_),
        CAFFE_CUDA_NUM_THREADS>>>(m, channels_, spatial_dim_, src,
        mean_.gpu_data(), inv_std_.gpu_data(), top_diff,
        partials_.mutable_gpu_data());
    CUDA_POST_KERNEL_CHECK;
    // NOLINT_NEXT_LINE(whitespace/operators)
    ChannelDotTotalsGPU<Dtype><<<CAFFE_GET_BLOCKS(channels_),
        CAFFE_CUDA_NUM_THREADS>>>(channels_, chunks, partials_.gpu_data(),
        sum1_.mutable_gpu_data(), sum2_.mutable_gpu_data(),
        this->param_propagate_down(4) ?
            this->blobs_[4]->mutable_gpu_diff() : NULL,
        gamma_diff ? this->blobs_[3]->mutable_gpu_diff() : NULL);
    CUDA_POST_KERNEL_CHECK;
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
        NULL, slope_.gpu_data(), NULL, false, NULL, bottom_diff);
  } else {
    // NOLINT_NEXT_LINE(whitespace/operators)
    BatchStatsBackwardGPU<Dtype><<<CAFFE_GET_BLOCKS(count),
        CAFFE_CUDA_NUM_THREADS>>>(count, channels_, spatial_dim_,
        Dtype(1) / (num_ * spatial_dim_), top_diff, src, mean_.gpu_data(),
        inv_std_.gpu_data(), slope_.gpu_data(), sum1_.gpu_data(),
        sum2_.gpu_data(), bottom_diff);
  }
  CUDA_POST_KERNEL_CHECK;
}

INSTANTIATE_LAYER_GPU_FUNCS(LeanBatchNormLayer);

}  // namespace caffe
