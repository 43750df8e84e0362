"""A synthetic segmentation dataset in PASCAL VOC 2012's on-disk layout.

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png   palette PNG, 255 = void band
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

so that scripts/prepare_voc.py reads it as it reads the real thing.

Built for the paper's bootstrapping question (Table 4: hard-pixel mining
helps the infrequent classes most): frequent large classes and rare small
ones, told apart by texture and by context.

- background: a smooth texture (blobs of noise over a colour gradient);
- three frequent region classes, large shapes (1 to 3 an image) each with
  its own kind of high-frequency texture (stripes at a random angle, checks,
  dots; period 4-9 px) in a light and a dark shade of its own colour family
  (reds, greens, blues; the hue varies by +-30 degrees), so that a pixel's
  class is read from its colour and a neighbourhood of a few texture
  periods (the background may take any colour, smoothly);
- two rare object classes, small ellipses speckled in random colours (about
  1% of the pixels each, in about a third of the images). Both look alike:
  a cow always lies on a striped region and a horse on a dotted one, so only
  the context around an object (the field of view has to reach past it)
  tells which.

Classes are stored under VOC ids (only the ids matter): the regions under
1-3 (aeroplane, bicycle, bird), the rare objects under the ids of the
paper's own rare VOC classes, cow (10) and horse (13). VOC marks outlines as
void: a band of VOID_WIDTH pixels along every class boundary is 255.
"""
import collections
import math
import os

import cv2
import numpy as np

from fcrn import datasets, imageio, lists

# hue: centre of the colour family (OpenCV's 0-180 scale); None: random colours.
Class = collections.namedtuple('Class', 'id name texture hue')
BACKGROUND = Class(0, 'background', 'smooth', None)
REGIONS = (Class(1, 'red stripes', 'stripes', 0), Class(2, 'green checks', 'checks', 60),
           Class(3, 'blue dots', 'dots', 120))
# Rare objects: (class, the region class it lies on).
OBJECTS = ((Class(10, 'speckle on stripes', 'speckle', None), 1),
           (Class(13, 'speckle on dots', 'speckle', None), 3))
CLASSES = (BACKGROUND,) + REGIONS + tuple(c for c, _ in OBJECTS)
VOID = datasets.IGNORE_LABEL
VOID_WIDTH = 2                        # VOC's void band around objects, in pixels

MAX_REGIONS = 3
REGION_SIZE = (0.22, 0.42)            # half-extent, times the shorter image side
HOST_SIZE = (0.34, 0.42)              # of the region a rare object lies on
OBJECT_PRESENCE = 0.4                 # chance that an image holds a given rare object
OBJECT_SIZE = (0.10, 0.16)            # semi-major axis, times the shorter side
HUE_JITTER = 15                       # OpenCV hue units (2 degrees each)


def _colour(rng, low=0, high=256):
    return rng.integers(low, high, 3).astype(np.float32)


def _shades(rng, hue):
    """A light and a dark BGR colour of one hue (jittered), or two random
    colours when `hue` is None."""
    if hue is None:
        return _colour(rng), _colour(rng)
    h = (hue + rng.integers(-HUE_JITTER, HUE_JITTER + 1)) % 180
    hsv = np.array([[[h, rng.integers(130, 256), rng.integers(170, 256)],
                     [h, rng.integers(130, 256), rng.integers(40, 110)]]], np.uint8)
    light, dark = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0].astype(np.float32)
    return (light, dark) if rng.random() < 0.5 else (dark, light)


def _texture(rng, h, w, kind, hue=None):
    """h x w x 3 float image of one two-colour texture: two shades of `hue`,
    or random colours."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(4, 9)
    if kind == 'stripes':              # at a random angle
        angle = rng.uniform(0, math.pi)
        mask = np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period) > 0
    elif kind == 'checks':
        mask = ((x // period).astype(int) + (y // period).astype(int)) % 2 == 0
    elif kind == 'dots':
        mask = ((x % period - period / 2) ** 2 + (y % period - period / 2) ** 2) < (period / 3) ** 2
    elif kind == 'speckle':            # random 2x2 cells, no period
        cells = rng.random(((h + 1) // 2, (w + 1) // 2)) < 0.5
        mask = np.repeat(np.repeat(cells, 2, axis=0), 2, axis=1)[:h, :w]
    else:
        raise ValueError('unknown texture %r' % kind)
    a, b = _shades(rng, hue)
    return np.where(mask[..., None], a, b)


def _background_texture(rng, h, w):
    """Low-frequency texture: smooth blobs of noise over a colour gradient."""
    small = rng.uniform(0, 1, (max(2, h // 16), max(2, w // 16), 1)).astype(np.float32)
    blobs = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    a, b, c = _colour(rng), _colour(rng), _colour(rng)
    img = a * (1 - ramp) + b * ramp
    return img * 0.6 + c * blobs * 0.4


def _region_mask(rng, h, w, size_range=REGION_SIZE):
    """A large disc, square, triangle or cross at a random place, size and rotation."""
    mask = np.zeros((h, w), np.uint8)
    size = rng.uniform(*size_range) * min(h, w)
    cy, cx = rng.uniform(size * 0.6, h - size * 0.6), rng.uniform(size * 0.6, w - size * 0.6)
    angle = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def polygon(*points):
        pts = (np.asarray(points, np.float64) * size) @ rot.T + (cx, cy)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)

    shape = int(rng.integers(4))
    if shape == 0:
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(size)), 1, -1)
    elif shape == 1:
        polygon((-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8))
    elif shape == 2:
        polygon(*[(math.cos(t), math.sin(t)) for t in (0, 2 * math.pi / 3, 4 * math.pi / 3)])
    else:
        polygon((-1, -0.35), (1, -0.35), (1, 0.35), (-1, 0.35))
        polygon((-0.35, -1), (0.35, -1), (0.35, 1), (-0.35, 1))
    return mask.astype(bool)


def _place_object(rng, label, host, h, w):
    """Mask of a small ellipse lying wholly on the visible part of region
    class `host`, with a margin of region around it (shrunk to fit, down to
    the smallest size); None if even that does not fit."""
    low, high = (f * min(h, w) for f in OBJECT_SIZE)
    margin = VOID_WIDTH + 2
    inside = np.pad(label == host, 1).astype(np.uint8)   # the image's edge is not room
    room = cv2.distanceTransform(inside, cv2.DIST_L2, 5)[1:-1, 1:-1] - margin
    a = min(rng.uniform(low, high), float(room.max()))
    if a < low:
        return None
    ys, xs = np.nonzero(room >= a)
    k = int(rng.integers(len(ys)))
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (int(xs[k]), int(ys[k])), (int(a), int(a * rng.uniform(0.6, 1.0))),
                float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask.astype(bool)


def sample(rng, h, w):
    """One (BGR uint8 image, uint8 label) pair."""
    img = _background_texture(rng, h, w)
    label = np.zeros((h, w), np.uint8)
    regions = [(REGIONS[int(rng.integers(len(REGIONS)))], REGION_SIZE)
               for _ in range(int(rng.integers(1, MAX_REGIONS + 1)))]
    wanted = [(cls, host) for cls, host in OBJECTS if rng.random() < OBJECT_PRESENCE]
    # A rare object lies on a large region of its host class, drawn last
    # (later regions occlude earlier ones) so that the object fits.
    regions += [(next(r for r in REGIONS if r.id == host), HOST_SIZE) for _, host in wanted]
    for cls, size_range in regions:
        mask = _region_mask(rng, h, w, size_range)
        img[mask] = _texture(rng, h, w, cls.texture, cls.hue)[mask]
        label[mask] = cls.id
    for cls, host in wanted:
        mask = _place_object(rng, label, host, h, w)
        if mask is not None:
            img[mask] = _texture(rng, h, w, cls.texture)[mask]
            label[mask] = cls.id
    noise = rng.normal(0, 6, img.shape).astype(np.float32)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
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
