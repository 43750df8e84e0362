"""Python layers for multi-pass shifted resolution (Wu et al. 2016, Sec. 3.2).

A 1/8 FCRN simulates the 1/4 one in four passes. Before the last stride-2
stage, `ShiftLayer` crops the first dy rows and dx columns of the map, with
(dy, dx) = divmod(pass, 2), so that the stage's stride-2 1x1 convolutions
sample x[dy::2, dx::2] instead of x[0::2, 0::2]. Every later layer is a
stride-1 convolution zero-padded by its dilation or a pointwise op, so pass
(dy, dx) computes exactly the phase out[dy::2, dx::2] of the network with that
stride removed and the later dilations doubled, borders included: a tap that
leaves the phase sub-map is exactly a tap that leaves the full map.

`LabelSampleLayer` gives the loss the label each score pixel is centred on,
on the pass's phase, so training sees the labels of the finer network too.

Usage in prototxt (the generator in fcrn/net emits these):
  layer { name: "res3_shift" type: "Python" bottom: "res2c" bottom: "pass"
          top: "res3_shift" python_param { module: "fcrn_shift" layer: "ShiftLayer" } }
  layer { name: "label_sample" type: "Python" bottom: "label" bottom: "score"
          bottom: "pass" top: "label_sample" python_param { module: "fcrn_shift"
          layer: "LabelSampleLayer" param_str: '{"stride": 8, "origin": 2, "phase_step": 4}' } }
`pass` is a blob of shape (1,) holding the pass index 0..3 as a float: a top of
the data layer in training, an Input of the deploy net in testing.
"""
import numpy as np

from fcrn import datasets, pylayer


def pass_phase(blob, name):
    """(dy, dx) of the pass index held in a (1,)-shaped blob."""
    if blob.count != 1:
        raise ValueError('%s: the pass bottom must hold one value, not shape %s'
                         % (name, blob.data.shape))
    value = float(blob.data.flat[0])
    index = int(round(value))
    if index != value or not 0 <= index < 4:
        raise ValueError('%s: pass must be 0, 1, 2 or 3, not %r' % (name, value))
    return divmod(index, 2)


class ShiftLayer(pylayer.Layer):
    """bottoms (feature N x C x H x W, pass) -> feature[:, :, dy:, dx:]."""

    blob_use = "computes"

    def setup(self, bottom, top):
        self.name = self.describe()
        pylayer.parse_param_str(self.name, self.param_str, {})
        if len(bottom) != 2 or len(top) != 1:
            raise ValueError('%s: needs bottoms (feature, pass) and one top' % self.name)
        if bottom[0].data.ndim != 4:
            raise ValueError('%s: feature must be N x C x H x W' % self.name)

    def reshape(self, bottom, top):
        self.dy, self.dx = pass_phase(bottom[1], self.name)
        n, c, h, w = bottom[0].data.shape
        if h <= self.dy or w <= self.dx:
            raise ValueError('%s: a %dx%d map cannot be shifted' % (self.name, h, w))
        top[0].reshape(n, c, h - self.dy, w - self.dx)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[:, :, self.dy:, self.dx:]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            bottom[0].diff[:, :, self.dy:, self.dx:] = top[0].diff
        if propagate_down[1]:  # force_backward: the pass index has no gradient
            bottom[1].diff[...] = 0


class LabelSampleLayer(pylayer.Layer):
    """bottoms (label N x 1 x H x W, score N x K x h x w[, pass]) -> N x 1 x h x w.

    Score pixel (i, j) is centred on input pixel origin + stride * (i, j),
    moved by phase_step * (dy, dx) on pass (dy, dx). Positions outside the
    label take `ignore_label`. Labels depend on neither the scores nor the
    pass: their gradients are zero.
    """

    blob_use = "computes"

    def setup(self, bottom, top):
        self.name = self.describe()
        params = pylayer.parse_param_str(self.name, self.param_str,
                                         dict(origin=0, phase_step=0, ignore_label=datasets.IGNORE_LABEL),
                                         required=('stride',))
        self.stride = int(params['stride'])
        self.origin = int(params['origin'])
        self.phase_step = int(params['phase_step'])
        self.ignore_label = float(params['ignore_label'])
        if self.stride <= 0 or self.origin < 0 or self.phase_step < 0:
            raise ValueError('%s: stride must be positive, origin and phase_step '
                             'non-negative' % self.name)
        if len(bottom) not in (2, 3) or len(top) != 1:
            raise ValueError('%s: needs bottoms (label, score[, pass]) and one top' % self.name)
        if bottom[0].data.ndim != 4 or bottom[0].data.shape[1] != 1:
            raise ValueError('%s: label must be N x 1 x H x W' % self.name)

    def reshape(self, bottom, top):
        dy, dx = pass_phase(bottom[2], self.name) if len(bottom) == 3 else (0, 0)
        if bottom[0].data.shape[0] != bottom[1].data.shape[0]:
            raise ValueError('%s: label and score batch sizes differ' % self.name)
        n, _, h, w = bottom[1].data.shape
        self.rows = self.origin + self.phase_step * dy + self.stride * np.arange(h)
        self.cols = self.origin + self.phase_step * dx + self.stride * np.arange(w)
        top[0].reshape(n, 1, h, w)

    def forward(self, bottom, top):
        label = bottom[0].data
        height, width = label.shape[2:]
        out = top[0].data
        out[...] = self.ignore_label
        rows, cols = self.rows[self.rows < height], self.cols[self.cols < width]
        out[:, :, :len(rows), :len(cols)] = label[:, :, rows[:, None], cols[None, :]]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise ValueError('%s: cannot back-propagate to labels' % self.name)
        for blob, down in zip(bottom[1:], propagate_down[1:]):
            if down:
                blob.diff[...] = 0
