#include <cfloat>
#include <climits>
#include <cmath>
#include <vector>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "fcrn/bootstrapped_softmax_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

namespace {

// Threads of the per-image selection kernel (a multiple of the warp size).
const int kSelectThreads = 512;
// Bits of the key examined per radix pass: a 256-bin histogram.
const int kRadixBits = 8;
const int kRadixBins = 1 << kRadixBits;

// Keys that order like the probabilities they come from, as unsigned
// integers: the sign bit flipped for positive values, all bits for negative
// ones. -0 becomes +0 first, so that the two compare equal, as on the CPU.
template <typename Dtype> struct OrderedKey;

template <> struct OrderedKey<float> {
  typedef unsigned int Type;
  static __device__ Type Of(float p) {
    const Type bits = __float_as_uint(p + 0.f);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  }
};

template <> struct OrderedKey<double> {
  typedef unsigned long long Type;  // NOLINT(runtime/int)
  static __device__ Type Of(double p) {
    const Type bits = static_cast<Type>(__double_as_longlong(p + 0.));
    return (bits >> 63) ? ~bits : (bits | (Type(1) << 63));
  }
};

}  // namespace

// One block per image: the true-class probability of every pixel (+inf for
// ignored ones), then the pixels the CPU layer keeps, with the same rule:
// with fewer than min_kept pixels below the threshold and more than min_kept
// valid ones, the min_kept smallest (p, pixel) pairs, found by a radix select
// over the probabilities' bits and, among pixels equal to the min_kept-th
// value, the lowest indices; otherwise those below the threshold, or all valid
// pixels if there are no more than min_kept. Writes the mask, the image's
// -sum(log p) over kept pixels and their count; a pixel whose label is outside
// [0, C) or whose probability is not finite lowers *first_bad to its index.
template <typename Dtype>
__global__ void BootstrapSelectGPU(const int spatial_dim, const int num_classes,
    const int dim, const Dtype* prob_data, const Dtype* label,
    const bool has_ignore_label, const int ignore_label, const int min_kept,
    const Dtype threshold, Dtype* true_prob, Dtype* kept, Dtype* image_loss,
    int* image_kept, int* first_bad) {
  typedef typename OrderedKey<Dtype>::Type Key;
  typedef cub::BlockScan<int, kSelectThreads> Scan;
  typedef cub::BlockReduce<Dtype, kSelectThreads> Reduce;
  __shared__ union {
    typename Scan::TempStorage scan;
    typename Reduce::TempStorage reduce;
  } temp;
  __shared__ int histogram[kRadixBins];
  __shared__ int valid_count, below_count, kept_count, shared_rank, tie_base;
  __shared__ Key shared_prefix;

  const int n = blockIdx.x;
  const Dtype* image_label = label + n * spatial_dim;
  Dtype* p = true_prob + n * spatial_dim;
  Dtype* keep = kept + n * spatial_dim;
  if (threadIdx.x == 0) {
    valid_count = below_count = kept_count = tie_base = 0;
  }
  __syncthreads();

  int valid = 0, below = 0;
  for (int s = threadIdx.x; s < spatial_dim; s += blockDim.x) {
    const int label_value = static_cast<int>(image_label[s]);
    Dtype value = Dtype(INFINITY);
    if (!has_ignore_label || label_value != ignore_label) {
      if (label_value >= 0 && label_value < num_classes) {
        value = prob_data[n * dim + label_value * spatial_dim + s];
      } else {
        value = Dtype(NAN);
      }
      if (isfinite(value)) {
        ++valid;
        below += value < threshold;
      } else {
        atomicMin(first_bad, n * spatial_dim + s);
        value = Dtype(INFINITY);
      }
    }
    p[s] = value;
  }
  atomicAdd(&valid_count, valid);
  atomicAdd(&below_count, below);
  __syncthreads();  // also makes p[] visible to the whole block

  // A pixel is kept if its key is below `cut`, or equal to it and among the
  // first `ties` such pixels.
  Key cut;
  int ties = 0;
  if (below_count < min_kept && min_kept < valid_count) {
    // The key of rank min_kept - 1, one digit at a time from the top.
    Key prefix = 0, mask = 0;
    int rank = min_kept - 1;
    for (int shift = 8 * sizeof(Key) - kRadixBits; shift >= 0;
         shift -= kRadixBits) {
      for (int b = threadIdx.x; b < kRadixBins; b += blockDim.x) {
        histogram[b] = 0;
      }
      __syncthreads();
      // Whole warps run every round, so that lanes with the same digit can
      // add their count once (most keys share their top digits).
      for (int base = 0; base < spatial_dim; base += blockDim.x) {
        const int s = base + threadIdx.x;
        int bin = -1;
        if (s < spatial_dim) {
          const Key key = OrderedKey<Dtype>::Of(p[s]);
          if ((key & mask) == prefix) {
            bin = static_cast<int>((key >> shift) & (kRadixBins - 1));
          }
        }
        const unsigned int peers = __match_any_sync(0xffffffffu, bin);
        if (bin >= 0 && __ffs(peers) - 1 == (threadIdx.x & 31)) {
          atomicAdd(&histogram[bin], __popc(peers));
        }
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        int b = 0;
        while (b < kRadixBins - 1 && rank >= histogram[b]) {
          rank -= histogram[b++];
        }
        shared_prefix = prefix | (Key(b) << shift);
        shared_rank = rank;
      }
      __syncthreads();
      prefix = shared_prefix;
      rank = shared_rank;
      mask |= Key(kRadixBins - 1) << shift;
    }
    cut = prefix;
    ties = rank + 1;  // the pixels below `cut` are min_kept - ties
  } else if (min_kept < valid_count) {
    cut = OrderedKey<Dtype>::Of(threshold);
  } else {
    cut = OrderedKey<Dtype>::Of(Dtype(INFINITY));  // every finite p
  }

  Dtype loss = 0;
  int count = 0;
  for (int base = 0; base < spatial_dim; base += blockDim.x) {
    const int s = base + threadIdx.x;
    const Key key = s < spatial_dim ? OrderedKey<Dtype>::Of(p[s]) : cut + 1;
    bool kept_here = key < cut;
    if (ties > 0) {  // the same for the whole block
      // Rank among the block's pixels equal to `cut`, in pixel order.
      int rank, equal_in_round;
      Scan(temp.scan).ExclusiveSum(key == cut ? 1 : 0, rank, equal_in_round);
      kept_here = kept_here || (key == cut && tie_base + rank < ties);
      __syncthreads();  // everyone has read tie_base and temp
      if (threadIdx.x == 0) tie_base += equal_in_round;
      __syncthreads();
    }
    if (s < spatial_dim) {
      keep[s] = kept_here ? Dtype(1) : Dtype(0);
      if (kept_here) {
        loss -= log(max(p[s], Dtype(FLT_MIN)));
        ++count;
      }
    }
  }
  atomicAdd(&kept_count, count);
  // A fixed tree over the threads: the same sum on every run.
  const Dtype image_sum = Reduce(temp.reduce).Sum(loss);
  __syncthreads();
  if (threadIdx.x == 0) {
    image_loss[n] = image_sum;
    image_kept[n] = kept_count;
  }
}

// One thread: the batch's loss and normalizer, from the images' sums in
// image order. A bad pixel makes the loss NaN (what the solver's check on
// the loss sees) and is written to the host-mapped record, which the next
// Forward_gpu or Backward_gpu reports; *first_bad is reset for the next pass.
template <typename Dtype>
__global__ void BootstrapLossGPU(const int num, const int spatial_dim,
    const int num_classes, const Dtype* label, const Dtype* image_loss,
    const int* image_kept, const bool normalize_by_kept,
    const Dtype fixed_normalizer, Dtype* loss, Dtype* normalizer,
    int* first_bad, BadPixel* bad_pixel) {
  Dtype sum = 0;
  int kept = 0;
  for (int n = 0; n < num; ++n) {
    sum += image_loss[n];
    kept += image_kept[n];
  }
  normalizer[0] = normalize_by_kept ?
      max(fixed_normalizer, Dtype(kept)) : fixed_normalizer;
  loss[0] = sum / normalizer[0];
  const int bad = *first_bad;
  if (bad != INT_MAX) {
    const int label_value = static_cast<int>(label[bad]);
    bad_pixel->label = label[bad];
    bad_pixel->bad_label = !(label_value >= 0 && label_value < num_classes);
    bad_pixel->index = bad;
    loss[0] = Dtype(NAN);
    *first_bad = INT_MAX;
  }
}

template <typename Dtype>
void BootstrappedSoftmaxWithLossLayer<Dtype>::Forward_gpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  ReportBadPixel();
  // First: its first call also sets first_bad_ to "none".
  BadPixel* bad_pixel = BadPixelRecord();
  softmax_layer_->Forward(softmax_bottom_vec_, softmax_top_vec_);
  // NOLINT_NEXT_LINE(whitespace/operators)
  BootstrapSelectGPU<Dtype><<<outer_num_, kSelectThreads>>>(inner_num_,
      prob_.shape(softmax_axis_), prob_.count() / outer_num_, prob_.gpu_data(),
      bottom[1]->gpu_data(), has_ignore_label_, ignore_label_, min_kept_,
      threshold_, true_prob_.mutable_gpu_data(), kept_.mutable_gpu_data(),
      image_loss_.mutable_gpu_data(), image_kept_.mutable_gpu_data(),
      first_bad_.mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
  // NOLINT_NEXT_LINE(whitespace/operators)
  BootstrapLossGPU<Dtype><<<1, 1>>>(outer_num_, inner_num_,
      prob_.shape(softmax_axis_), bottom[1]->gpu_data(),
      image_loss_.gpu_data(), image_kept_.gpu_data(),
      normalization_ == LossParameter_NormalizationMode_VALID,
      GetNormalizer(0), top[0]->mutable_gpu_data(),
      normalizer_.mutable_gpu_data(), first_bad_.mutable_gpu_data(),
      bad_pixel);
  CUDA_POST_KERNEL_CHECK;
  if (top.size() == 2) {
    caffe_copy(kept_.count(), kept_.gpu_data(), top[1]->mutable_gpu_data());
  }
}

// d loss / d score = (p - 1{c = label}) * top_diff / normalizer on kept
// pixels, 0 elsewhere; both factors are read on the device.
template <typename Dtype>
__global__ void BootstrapLossBackwardGPU(const int nthreads,
    const Dtype* prob_data, const Dtype* label, const Dtype* kept,
    const int num_classes, const int dim, const int spatial_dim,
    const Dtype* top_diff, const Dtype* normalizer, Dtype* bottom_diff) {
  const Dtype scale = top_diff[0] / normalizer[0];
  CUDA_KERNEL_LOOP(index, nthreads) {
    const int n = index / spatial_dim;
    const int s = index % spatial_dim;
    const int label_value = static_cast<int>(label[index]);
    const bool keep = kept[index] != 0;
    for (int c = 0; c < num_classes; ++c) {
      const int i = n * dim + c * spatial_dim + s;
      bottom_diff[i] = keep ? scale * (prob_data[i] - (c == label_value)) : 0;
    }
  }
}

template <typename Dtype>
void BootstrappedSoftmaxWithLossLayer<Dtype>::Backward_gpu(
    const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down[1]) {
    LOG(FATAL) << this->type()
               << " Layer cannot backpropagate to label inputs.";
  }
  ReportBadPixel();
  if (!propagate_down[0]) {
    return;
  }
  const int nthreads = outer_num_ * inner_num_;
  // NOLINT_NEXT_LINE(whitespace/operators)
  BootstrapLossBackwardGPU<Dtype><<<CAFFE_GET_BLOCKS(nthreads),
      CAFFE_CUDA_NUM_THREADS>>>(nthreads, prob_.gpu_data(),
      bottom[1]->gpu_data(), kept_.gpu_data(), prob_.shape(softmax_axis_),
      prob_.count() / outer_num_, inner_num_, top[0]->gpu_diff(),
      normalizer_.gpu_data(), bottom[0]->mutable_gpu_diff());
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
BadPixel* BootstrappedSoftmaxWithLossLayer<Dtype>::BadPixelRecord() {
  if (!bad_pixel_) {
    // Mapped host memory: the device writes the record only when a pixel is
    // bad, and the host reads it without a copy or a synchronisation.
    CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&bad_pixel_),
        sizeof(BadPixel), cudaHostAllocMapped));
    bad_pixel_->index = -1;
    CUDA_CHECK(cudaHostGetDevicePointer(
        reinterpret_cast<void**>(&bad_pixel_device_), bad_pixel_, 0));
    caffe_gpu_set(1, INT_MAX, first_bad_.mutable_gpu_data());
  }
  return bad_pixel_device_;
}

template <typename Dtype>
void BootstrappedSoftmaxWithLossLayer<Dtype>::ReportBadPixel() const {
  // Written by a kernel of an earlier pass, which has finished: Layer::Forward
  // reads the loss back to the host after Forward_gpu.
  if (bad_pixel_ && static_cast<volatile BadPixel*>(bad_pixel_)->index >= 0) {
    LOG(FATAL) << BadPixelMessage(bad_pixel_->index, bad_pixel_->label,
        bad_pixel_->bad_label);
  }
}

INSTANTIATE_LAYER_GPU_FUNCS(BootstrappedSoftmaxWithLossLayer);

}  // namespace caffe
