"""Images and label maps: one decoder for training, inference and evaluation.

Images decode to H x W x 3 uint8 BGR (the order of Caffe's ImageNet models)
whatever the file: grey is expanded, alpha dropped (it is not part of the
scene), 16-bit scaled to 8 bits, and a JPEG's EXIF orientation applied, as
cv2.imread does by default (so the pixels match what viewers show, in
training and at inference alike).

Label maps decode to H x W integer arrays of class indices: palette PNGs
give their indices (not their colours), grey PNGs their values, 16-bit PNGs
their 16-bit values. A colour image is refused: mapping colours back to
classes is a data-preparation step.

Every failure is an InputError naming the file.
"""
import io
import os

import numpy as np

from .errors import InputError
from .fileio import atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm",
                    ".webp")
LABEL_MODES = ("P", "L", "1", "I", "I;16", "I;16B", "I;16L")


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError("%s: no such file" % path)
    except IsADirectoryError:
        raise InputError("%s: is a folder, not a file" % path)
    except OSError as e:
        raise InputError("%s: cannot read (%s)" % (path, e.strerror or e))


def decode_image(buf, what):
    """BGR uint8 image of encoded bytes; `what` names them in errors."""
    import cv2
    if not len(buf):
        raise InputError("%s: not a readable image (empty file)" % what)
    try:
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error as e:
        raise InputError("%s: not a readable image (%s)" % (what, str(e).strip().splitlines()[-1]))
    if img is None:
        raise InputError("%s: not a readable image" % what)
    if not _jpeg_complete(buf):  # libjpeg decodes the part it has and only warns
        raise InputError("%s: not a readable image (truncated JPEG)" % what)
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def read_image(path):
    return decode_image(read_bytes(path), path)


def _jpeg_complete(buf):
    """False for a JPEG whose main image has no end marker after its first
    scan. Segments before the scan (EXIF with its thumbnail and end marker
    among them) are skipped by their lengths; inside scan data 0xFFD9 can only
    be the end marker. Not a JPEG: True."""
    data = buf if isinstance(buf, bytes) else bytes(buf)
    if not data.startswith(b"\xff\xd8"):
        return True
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return True  # not a layout this check knows: leave it to the decoder
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", pos) >= 0
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 1 if marker == 0xFF else 2
            continue
        pos += 2 + (data[pos + 2] << 8 | data[pos + 3])
    return False
