"""Training-time augmentation of one image/label pair: random resize, random
crop of a fixed size (padding the image with the mean and the label with
ignore), random mirror, mean subtraction, HWC-BGR -> CHW.

Random parameters are drawn separately from applying them (`draw` then
`apply`), so that a sample's augmentation depends only on the seed and its
position in the stream, not on which worker process produced it.
"""
import cv2
import numpy as np

from .. import datasets

# INTER_NEAREST in OpenCV samples at floor(x / s), half a pixel off the
# pixel-centre convention of INTER_LINEAR; the exact variant keeps labels
# aligned with the bilinearly resized image.
_NEAREST = getattr(cv2, "INTER_NEAREST_EXACT", cv2.INTER_NEAREST)


class Augmenter:
    """train=False: no resize, no mirror; pad at the bottom/right to the
    crop size and take the centred crop of larger images (deterministic)."""

    def __init__(self, crop_size, scale=(0.5, 2.0), mirror=True,
                 mean=datasets.MEAN_BGR, ignore_label=datasets.IGNORE_LABEL,
                 num_classes=None, train=True):
        self.crop = tuple(int(c) for c in crop_size)
        self.scale = tuple(float(s) for s in scale)
        self.mirror = bool(mirror)
        self.mean = np.asarray(mean, np.float32)
        self.ignore = ignore_label
        self.num_classes = num_classes
        self.train = train

    def draw(self, rng):
        """(scale, crop position y, x in [0, 1), mirror) for one sample."""
        if not self.train:
            return 1.0, None, None, False
        lo, hi = self.scale
        s = float(rng.uniform(lo, hi)) if hi > lo else lo
        uy, ux = rng.random(2)
        return s, float(uy), float(ux), bool(self.mirror and rng.random() < 0.5)

    def apply(self, img, lbl, params, out_img, out_lbl):
        """Write the augmented crop into out_img (3,H,W float32) and out_lbl
        (H,W float32)."""
        s, uy, ux, flip = params
        h, w = lbl.shape
        if s != 1.0:
            size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
            img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
            lbl = cv2.resize(lbl, size, interpolation=_NEAREST)
            h, w = lbl.shape
        ch, cw = self.crop
        # Window of the crop in the image padded at the bottom/right to at
        # least the crop size: random in training, centred in testing.
        if uy is None:
            y0, x0 = max(h - ch, 0) // 2, max(w - cw, 0) // 2
        else:
            y0 = min(int(uy * (max(h, ch) - ch + 1)), max(h, ch) - ch)
            x0 = min(int(ux * (max(w, cw) - cw + 1)), max(w, cw) - cw)
        hh, ww = min(ch, h - y0), min(cw, w - x0)
        patch, lpatch = img[y0:y0 + hh, x0:x0 + ww], lbl[y0:y0 + hh, x0:x0 + ww]
        if flip:  # mirror the whole padded window: the padding moves to the left
            patch, lpatch = patch[:, ::-1], lpatch[:, ::-1]
            xs = slice(cw - ww, cw)
        else:
            xs = slice(0, ww)
        out_img[...] = 0.0  # the mean, after mean subtraction
        out_lbl[...] = self.ignore
        for c in range(3):
            np.subtract(patch[:, :, c], self.mean[c], out=out_img[c, :hh, xs], dtype=np.float32)
        out_lbl[:hh, xs] = lpatch
        return out_img, out_lbl
