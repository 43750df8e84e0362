#ifndef FCRN_BOOTSTRAPPED_SOFTMAX_LOSS_LAYER_HPP_
#define FCRN_BOOTSTRAPPED_SOFTMAX_LOSS_LAYER_HPP_

#include <utility>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

#include "caffe/layers/loss_layer.hpp"

namespace caffe {

/// A pixel the GPU path found bad (label outside [0, C) and not ignored, or
/// a probability that is not finite): its index in the batch's pixels.
struct BadPixel {
  int index;  // -1: none
  int bad_label;  // 1: the label, 0: the scores
  double label;
};

/**
 * @brief Softmax cross-entropy over the hardest pixels only: online
 *        bootstrapping, equation (1) of Wu, Shen and van den Hengel,
 *        "High-performance Semantic Segmentation Using Very Deep Fully
 *        Convolutional Networks" (2016).
 *
 * For each image n and each pixel i whose label is not
 * loss_param.ignore_label, let @f$ p_i @f$ be the softmax probability of its
 * true class. Per image the layer keeps
 *   - every pixel with @f$ p_i < t @f$ (bootstrap_param.threshold), and
 *   - at least the K (bootstrap_param.min_kept) pixels with the smallest
 *     @f$ p_i @f$, ties broken by the lower pixel index;
 *   - all valid pixels if there are no more than K of them.
 * The loss is @f$ -\frac{1}{n_{kept}} \sum_{kept} \log p_i @f$ with
 * @f$ n_{kept} @f$ counted over the whole batch (loss_param.normalization
 * VALID, the default; the other modes behave as in SoftmaxWithLoss with
 * "valid" read as "kept"). threshold = 0 keeps exactly the K hardest pixels,
 * the setting of the paper's Table 4.
 *
 * The selection is a linear-time partial selection: std::nth_element on the
 * CPU; on the GPU, a radix select over the probabilities' bits, one block
 * per image, with ties broken by a scan in pixel order. Nothing travels
 * between host and device per pass on the GPU: the loss and the normalizer
 * stay on the device, and a bad label or score is reported by the layer's
 * next Forward or Backward, from a record in host-mapped memory that the
 * device writes only then (its loss is NaN meanwhile).
 *
 * @param bottom input Blob vector (length 2)
 *   -# @f$ (N \times C \times H \times W) @f$ the scores
 *   -# @f$ (N \times 1 \times H \times W) @f$ the labels, integers in
 *      [0, C) or ignore_label
 * @param top output Blob vector (length 1 or 2)
 *   -# @f$ (1) @f$ the loss
 *   -# (optional) shaped like the labels: 1 where a pixel was kept, else 0
 */
template <typename Dtype>
class BootstrappedSoftmaxWithLossLayer : public LossLayer<Dtype> {
 public:
  explicit BootstrappedSoftmaxWithLossLayer(const LayerParameter& param)
      : LossLayer<Dtype>(param), bad_pixel_(NULL), bad_pixel_device_(NULL) {}
  virtual ~BootstrappedSoftmaxWithLossLayer();
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const {
    return "BootstrappedSoftmaxWithLoss";
  }
  /// Keeps probabilities and the mask in buffers of its own and writes the
  /// score gradient in full: nets may share its blobs' memory.
  virtual inline BlobUse blob_use() const { return BLOB_USE_COMPUTES; }
  virtual inline int ExactNumTopBlobs() const { return -1; }
  virtual inline int MinTopBlobs() const { return 1; }
  virtual inline int MaxTopBlobs() const { return 2; }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  /// Checks labels and probabilities, fills kept_ and returns the summed
  /// -log p over kept pixels: the CPU path's selection. The GPU's
  /// (BootstrapSelectGPU in the .cu) keeps the same pixels, ties included.
  Dtype SelectHardPixels(const Dtype* label, const Dtype* true_prob);
  /// Writes the loss (and the optional mask) once the CPU path selected.
  void SetTop(Dtype loss_sum, const vector<Blob<Dtype>*>& top);
  Dtype GetNormalizer(int kept_count) const;
  /// What the layer dies with for the pixel `index` of the batch.
  string BadPixelMessage(int index, double label, bool bad_label) const;
  /// The GPU path's bad-pixel record, as the device sees it (allocated on
  /// first use), and its check on the host, which dies naming the pixel.
  BadPixel* BadPixelRecord();
  void ReportBadPixel() const;

  shared_ptr<Layer<Dtype> > softmax_layer_;
  Blob<Dtype> prob_;
  vector<Blob<Dtype>*> softmax_bottom_vec_;
  vector<Blob<Dtype>*> softmax_top_vec_;
  /// Per pixel: softmax probability of the labelled class.
  Blob<Dtype> true_prob_;
  /// Per pixel: 1 if the pixel contributes to the loss, else 0.
  Blob<Dtype> kept_;
  int kept_count_;
  /// Reused between iterations so that selection allocates nothing.
  vector<std::pair<Dtype, int> > candidates_;
  /// GPU path: per image, -sum(log p) over kept pixels and their count; the
  /// batch's normalizer; the lowest index of a bad pixel (INT_MAX if none);
  /// and the record of it in host-mapped memory (host and device pointers).
  Blob<Dtype> image_loss_;
  Blob<int> image_kept_;
  Blob<Dtype> normalizer_;
  Blob<int> first_bad_;
  BadPixel* bad_pixel_;
  BadPixel* bad_pixel_device_;

  bool has_ignore_label_;
  int ignore_label_;
  int min_kept_;
  Dtype threshold_;
  LossParameter_NormalizationMode normalization_;
  int softmax_axis_, outer_num_, inner_num_;
};

}  // namespace caffe

#endif  // FCRN_BOOTSTRAPPED_SOFTMAX_LOSS_LAYER_HPP_
