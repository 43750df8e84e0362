#ifndef FCRN_LEAN_BATCH_NORM_LAYER_HPP_
#define FCRN_LEAN_BATCH_NORM_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

/**
 * @brief Batch normalization and its affine scale in one in-place layer that
 *        keeps no buffer the size of its input where it can avoid one: the
 *        "more conservative" batch norm of Wu, Shen and van den Hengel (2016).
 *
 * Computes @f$ y = \gamma (x - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta @f$
 * per channel. Its blobs are those of a stock BatchNorm followed by a Scale
 * with bias, in that order, so that converting pretrained weights is a copy:
 *   -# mean and -# variance (C), accumulated and unnormalised as BatchNorm
 *      stores them, -# the moving-average factor (1) that divides them,
 *   -# gamma (C) and -# beta (C) as Scale stores them, initialised by
 *      scale_param.filler (default 1) and scale_param.bias_filler (default 0).
 * The first three are statistics: their lr_mult is forced to 0, as BatchNorm
 * does. Options come from batch_norm_param (use_global_stats, defaulting to
 * true in the TEST phase; moving_average_fraction; eps).
 *
 * Memory, beyond per-channel vectors:
 *   - use_global_stats (frozen, as the paper trains): a per-channel linear
 *     map, no input-sized buffer. When gamma is learnt and the layer runs in
 *     place, the normalised input is recovered from the output as
 *     (y - beta) / gamma, which stays exact under in-place layers that keep y
 *     wherever its gradient is non-zero (ReLU). Where gamma is exactly zero
 *     the input is lost, and gamma's gradient there is NaN rather than a
 *     wrong number (zero-initialise gamma with batch statistics, as
 *     `--bn-stats batch` nets do, or run the layer out of place).
 *   - batch statistics: no buffer out of place; one copy of the input in
 *     place (BatchNorm + Scale in place keep four input-sized buffers).
 */
template <typename Dtype>
class LeanBatchNormLayer : public Layer<Dtype> {
 public:
  explicit LeanBatchNormLayer(const LayerParameter& param)
      : Layer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "LeanBatchNorm"; }
  /// Writes its top (its bottom, in place) in full and keeps what backward
  /// needs in buffers of its own: nets may share its blobs' memory.
  virtual inline BlobUse blob_use() const { return BLOB_USE_COMPUTES; }
  /// Applies the in-place ReLU after it as it writes its top (Net skips that
  /// layer's Forward); backward is unchanged: the ReLU's own Backward masks dy.
  virtual inline bool CanFuseReLU() const { return true; }
  virtual inline int ExactNumBottomBlobs() const { return 1; }
  virtual inline int ExactNumTopBlobs() const { return 1; }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  /// Whether forward keeps a copy of its input for backward: only in place
  /// with batch statistics, whose backward needs xhat everywhere, where an
  /// in-place ReLU zeroed the output too. Frozen, xhat is recovered from the
  /// output, so the decision never depends on gamma's values (on the GPU
  /// that would be a read back to the host every pass).
  bool KeepsInput(bool in_place) const {
    return in_place && !use_global_stats_;
  }

  // Per-channel bookkeeping of the CPU path (the GPU path has kernels).
  /// Sets mean_, inv_std_, slope_ (gamma / std) and, when frozen, inv_gamma_
  /// from the stored statistics, or from the batch sums in sum1_ / sum2_,
  /// updating the moving averages.
  void ComputeAffine(bool from_batch);
  /// Adds the per-channel sums in sum1_ (of dy) and sum2_ (of dy * xhat) to
  /// the gradients of beta and gamma where these are learnt.
  void AccumulateParamDiffs();

  bool use_global_stats_;
  Dtype moving_average_fraction_;
  Dtype eps_;
  int channels_;
  int num_;
  int spatial_dim_;
  bool keep_input_;  ///< forward saved the input into input_copy_
  Blob<Dtype> input_copy_;
  // Per-channel vectors (C). Backward reads xhat = (x - mean_) * inv_std_
  // from the input, or (y - beta) * inv_gamma_ from the output (inv_gamma_ is
  // NaN where gamma is 0: xhat cannot be recovered there).
  Blob<Dtype> mean_, inv_std_, slope_, inv_gamma_;
  Blob<Dtype> sum1_, sum2_;
  // GPU only: per-block partial sums of the channel reductions.
  Blob<Dtype> partials_;
};

}  // namespace caffe

#endif  // FCRN_LEAN_BATCH_NORM_LAYER_HPP_
