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
 *   - use_global_stats (frozen, as the paper trains: gamma and beta fixed
 *     too): a per-channel linear map, no input-sized buffer. In place with a
 *     learnt gamma (lr_mult not 0) in the TRAIN phase, one copy of the
 *     input: gamma's gradient needs the normalised input, which the output
 *     does not give back once a later in-place layer (Dropout, a leaky ReLU)
 *     has rewritten it. So in place a gamma fixed, or in a TEST net, gets no
 *     gradient even where force_backward asks for one (its diff is left as
 *     it is).
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

  /// Whether forward keeps a copy of its input for backward: in place, when
  /// backward needs xhat (batch statistics, or a learnt gamma). It depends
  /// on the net definition only, never on values (on the GPU a value would
  /// be read back to the host every pass).
  bool KeepsInput(bool in_place) const {
    return in_place && (!use_global_stats_ || learns_gamma_);
  }
  /// Whether backward adds gamma's gradient: where asked for and xhat is at
  /// hand (the input, or its copy).
  bool GammaDiff(bool in_place) {
    return this->param_propagate_down(3) && (!in_place || keep_input_);
  }

  // Per-channel bookkeeping of the CPU path (the GPU path has kernels).
  /// Sets mean_, inv_std_ and slope_ (gamma / std) from the stored
  /// statistics, or from the batch sums in sum1_ / sum2_, updating the moving
  /// averages.
  void ComputeAffine(bool from_batch);
  /// Adds the per-channel sums in sum1_ (of dy) and sum2_ (of dy * xhat) to
  /// the gradients of beta (where asked for) and of gamma (if gamma_diff).
  void AccumulateParamDiffs(bool gamma_diff);

  bool use_global_stats_;
  bool learns_gamma_;  ///< TRAIN phase, and gamma's lr_mult is not 0
  Dtype moving_average_fraction_;
  Dtype eps_;
  int channels_;
  int num_;
  int spatial_dim_;
  bool keep_input_;  ///< forward saved the input into input_copy_
  Blob<Dtype> input_copy_;
  // Per-channel vectors (C). Backward reads xhat = (x - mean_) * inv_std_
  // from the input or its copy.
  Blob<Dtype> mean_, inv_std_, slope_;
  Blob<Dtype> sum1_, sum2_;
  // GPU only: per-block partial sums of the channel reductions.
  Blob<Dtype> partials_;
};

}  // namespace caffe

#endif  // FCRN_LEAN_BATCH_NORM_LAYER_HPP_
