#include <vector>

#include "fcrn/bootstrapped_softmax_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
__global__ void TrueClassProbGPU(const int nthreads, const Dtype* prob_data,
    const Dtype* label, const int num_classes, const int dim,
    const int spatial_dim, Dtype* true_prob) {
  CUDA_KERNEL_LOOP(index, nthreads) {
    const int n = index / spatial_dim;
    const int s = index % spatial_dim;
    const int label_value = static_cast<int>(label[index]);
    // Out-of-range labels are reported on the host by SelectHardPixels.
    true_prob[index] = (label_value >= 0 && label_value < num_classes) ?
        prob_data[n * dim + label_value * spatial_dim + s] : Dtype(0);
  }
}

template <typename Dtype>
void BootstrappedSoftmaxWithLossLayer<Dtype>::Forward_gpu(
    const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {
  softmax_layer_->Forward(softmax_bottom_vec_, softmax_top_vec_);
  const int nthreads = outer_num_ * inner_num_;
  // NOLINT_NEXT_LINE(whitespace/operators)
  TrueClassProbGPU<Dtype><<<CAFFE_GET_BLOCKS(nthreads),
      CAFFE_CUDA_NUM_THREADS>>>(nthreads, prob_.gpu_data(),
      bottom[1]->gpu_data(), prob_.shape(softmax_axis_),
      prob_.count() / outer_num_, inner_num_, true_prob_.mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
  // Selection on the host: cpu_data() copies N*H*W values, 1/C of the scores.
  SetTop(SelectHardPixels(bottom[1]->cpu_data(), true_prob_.cpu_data()), top);
}

template <typename Dtype>
__global__ void BootstrappedSoftmaxLossBackwardGPU(const int nthreads,
    const Dtype* label, const Dtype* kept, const int num_classes,
    const int dim, const int spatial_dim, Dtype* bottom_diff) {
  CUDA_KERNEL_LOOP(index, nthreads) {
    const int n = index / spatial_dim;
    const int s = index % spatial_dim;
    if (kept[index] != 0) {
      bottom_diff[n * dim + static_cast<int>(label[index]) * spatial_dim + s]
          -= 1;
    } else {
      for (int c = 0; c < num_classes; ++c) {
        bottom_diff[n * dim + c * spatial_dim + s] = 0;
      }
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
  if (!propagate_down[0]) {
    return;
  }
  Dtype* bottom_diff = bottom[0]->mutable_gpu_diff();
  caffe_copy(prob_.count(), prob_.gpu_data(), bottom_diff);
  const int nthreads = outer_num_ * inner_num_;
  // NOLINT_NEXT_LINE(whitespace/operators)
  BootstrappedSoftmaxLossBackwardGPU<Dtype><<<CAFFE_GET_BLOCKS(nthreads),
      CAFFE_CUDA_NUM_THREADS>>>(nthreads, bottom[1]->gpu_data(),
      kept_.gpu_data(), prob_.shape(softmax_axis_), prob_.count() / outer_num_,
      inner_num_, bottom_diff);
  CUDA_POST_KERNEL_CHECK;
  const Dtype loss_weight = top[0]->cpu_diff()[0] / GetNormalizer(kept_count_);
  caffe_gpu_scal(prob_.count(), loss_weight, bottom_diff);
}

INSTANTIATE_LAYER_GPU_FUNCS(BootstrappedSoftmaxWithLossLayer);

}  // namespace caffe
