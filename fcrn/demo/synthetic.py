"""A synthetic segmentation dataset in PASCAL VOC 2012's on-disk layout.

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png   palette PNG, 255 = void band
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

so that scripts/prepare_voc.py reads it as it reads the real thing.

Each image is a textured background with a few textured shapes. The shape
classes are stored under VOC ids 1..len(SHAPES) (the palette colours of
aeroplane, bicycle, ...; only the ids matter). Each class has its own kind of
high-frequency texture (in random colours) and the background a smooth one,
so a pixel's class is read from a neighbourhood of a few texture periods
(the field of view has to cover them), and the outline of the shape tells
where the texture stops. The demo has to learn from random weights within
minutes on a CPU, so the classes are told apart by texture, not by outline
alone.
"""
import math
import os

import cv2
import numpy as np

from fcrn import datasets, imageio, lists

# Shape classes, in VOC label order 1, 2, ...
SHAPES = ('disc', 'square', 'triangle', 'cross')
NUM_LABELS = len(SHAPES) + 1          # plus background (0)
VOID = datasets.IGNORE_LABEL
VOID_WIDTH = 2                        # VOC's void band around objects, in pixels


def _colour(rng, low=0, high=256):
    return rng.integers(low, high, 3).astype(np.float32)


def _foreground_texture(rng, h, w, kind):
    """High-frequency, two-colour pattern of one of four kinds. Cross-hatching,
    tried first as the fourth, drew 24-39% of the other shapes' pixels."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(4, 9)

    def stripes(angle):
        return np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period) > 0

    if kind == 0:                      # stripes at a random angle
        mask = stripes(rng.uniform(0, math.pi))
    elif kind == 1:                    # checks
        mask = ((x // period).astype(int) + (y // period).astype(int)) % 2 == 0
    elif kind == 2:                    # dots
        mask = ((x % period - period / 2) ** 2 + (y % period - period / 2) ** 2) < (period / 3) ** 2
    else:                              # speckle: random 2x2 cells, no period
        cells = rng.random(((h + 1) // 2, (w + 1) // 2)) < 0.5
        mask = np.repeat(np.repeat(cells, 2, axis=0), 2, axis=1)[:h, :w]
    a, b = _colour(rng), _colour(rng)
    return np.where(mask[..., None], a, b)


def _background_texture(rng, h, w):
    """Low-frequency texture: smooth blobs of noise over a colour gradient."""
    small = rng.uniform(0, 1, (max(2, h // 16), max(2, w // 16), 1)).astype(np.float32)
    blobs = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    a, b, c = _colour(rng), _colour(rng), _colour(rng)
    img = a * (1 - ramp) + b * ramp
    return img * 0.6 + c * blobs * 0.4


def _shape_mask(rng, shape, h, w):
    """Boolean mask of one shape at a random place, size and rotation."""
    mask = np.zeros((h, w), np.uint8)
    size = rng.uniform(0.18, 0.35) * min(h, w)     # half-extent
    cy, cx = rng.uniform(size * 0.6, h - size * 0.6), rng.uniform(size * 0.6, w - size * 0.6)
    angle = rng.uniform(0, 2 * math.pi)

    def polygon(points):
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        pts = (np.asarray(points, np.float64) * size) @ rot.T + (cx, cy)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)

    if shape == 'disc':
        cv2.circle(mask, (int(cx), int(cy)), int(size), 1, -1)
    elif shape == 'square':
        polygon([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)])
    elif shape == 'triangle':
        polygon([(math.cos(t), math.sin(t)) for t in (0, 2 * math.pi / 3, 4 * math.pi / 3)])
    elif shape == 'cross':
        polygon([(-1, -0.3), (1, -0.3), (1, 0.3), (-1, 0.3)])
        polygon([(-0.3, -1), (0.3, -1), (0.3, 1), (-0.3, 1)])
    else:
        raise ValueError('unknown shape %r' % shape)
    return mask.astype(bool)


def sample(rng, h, w, max_shapes=3):
    """One (BGR uint8 image, uint8 label) pair."""
    img = _background_texture(rng, h, w)
    label = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, max_shapes + 1)):
        cls = int(rng.integers(len(SHAPES)))
        mask = _shape_mask(rng, SHAPES[cls], h, w)
        img[mask] = _foreground_texture(rng, h, w, cls)[mask]
        label[mask] = cls + 1          # later shapes occlude earlier ones
    noise = rng.normal(0, 6, img.shape).astype(np.float32)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    # VOC marks object outlines as void: a band where the label is uncertain.
    kernel = np.ones((2 * VOID_WIDTH - 1,) * 2, np.uint8)
    edges = cv2.dilate(label, kernel) != cv2.erode(label, kernel)
    label[edges] = VOID
    return img, label


def image_ids(split, count):
    """VOC-like ids: 2012_000000 (train), 2012_100000 (val), ..."""
    base = {'train': 0, 'val': 100000}[split]
    return ['2012_%06d' % (base + k) for k in range(count)]


def write_voc(root, train=200, val=50, size=(128, 192), seed=0, progress=None):
    """Write VOCdevkit/VOC2012 under `root`; image sides drawn from `size`.

    Returns {split: [ids]}. `progress` wraps the iterable of ids (e.g. tqdm).
    """
    rng = np.random.default_rng(seed)
    voc = os.path.join(root, 'VOCdevkit', 'VOC2012')
    for sub in ('JPEGImages', 'SegmentationClass', os.path.join('ImageSets', 'Segmentation')):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    splits = {'train': image_ids('train', train), 'val': image_ids('val', val)}
    ids = splits['train'] + splits['val']
    palette = datasets.get('voc').palette()
    for image_id in (progress(ids) if progress else ids):
        h, w = (int(v) for v in rng.integers(size[0], size[1] + 1, 2))
        img, label = sample(rng, h, w)
        imageio.write_image(os.path.join(voc, 'JPEGImages', image_id + '.jpg'), img, quality=95)
        imageio.write_label_png(os.path.join(voc, 'SegmentationClass', image_id + '.png'),
                                label, palette)
    splits['trainval'] = ids
    for name, names in splits.items():
        lists.write(os.path.join(voc, 'ImageSets', 'Segmentation', name + '.txt'),
                    [[i] for i in names])
    del splits['trainval']
    return splits
