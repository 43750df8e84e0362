"""Images and label maps: one decoder for training, inference and evaluation.

Images decode to H x W x 3 uint8 BGR (the order of Caffe's ImageNet models)
whatever the file: grey is expanded, alpha dropped (it is not part of the
scene), 16-bit scaled to 8 bits (float and signed pixels are refused), and
an EXIF orientation applied where OpenCV applies it by default (JPEG, PNG
and TIFF in OpenCV 4.10; not WebP), so that the pixels match what viewers
show, in training and at inference alike (`exif_turn` tells).

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
    return _decode(buf, what, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)


def _decode(buf, what, flags):
    import cv2
    if not len(buf):
        raise InputError("%s: not a readable image (empty file)" % what)
    try:
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), flags)
    except cv2.error as e:
        raise InputError("%s: not a readable image (%s)" % (what, str(e).strip().splitlines()[-1]))
    if img is None:
        raise InputError("%s: not a readable image" % what)
    if not _jpeg_complete(buf):  # libjpeg decodes the part it has and only warns
        raise InputError("%s: not a readable image (truncated JPEG)" % what)
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:  # float (TIFF, EXR, HDR) or signed: no one scale is right
        raise InputError("%s: %s pixels; give 8- or 16-bit unsigned images" % (what, img.dtype))
    return np.ascontiguousarray(img)


def exif_turn(buf, img, what):
    """The EXIF orientation (2-8) by which decoding turned `img`, the image
    `decode_image` made of `buf`, or None. Which formats OpenCV turns
    depends on its version (4.10: JPEG, PNG and TIFF, not WebP): the image
    is decoded once more as stored when it has an orientation, and
    compared."""
    import cv2
    from PIL import Image
    try:
        with Image.open(io.BytesIO(buf)) as im:
            value = im.getexif().get(0x0112)
    except Exception:  # unreadable EXIF: decoding decides whether the file is good
        return None
    if value not in range(2, 9):
        return None
    stored = _decode(buf, what, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH |
                     cv2.IMREAD_IGNORE_ORIENTATION)
    return None if np.array_equal(stored, img) else value


def is_image_name(name):
    """Whether a file name has one of IMAGE_EXTENSIONS (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


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


def decode_label(buf, what):
    """Label map (H x W class indices) of encoded bytes."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(buf)) as im:
            if im.mode not in LABEL_MODES:
                raise InputError("%s: a %s image is not a label map (expected a palette or "
                                 "single-channel PNG)" % (what, im.mode))
            label = np.array(im)
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError) as e:  # PIL's ways of saying "not an image"
        raise InputError("%s: not a readable label image (%s)" % (what, e))
    if label.dtype == bool:
        label = label.astype(np.uint8)
    if label.ndim != 2:
        raise InputError("%s: label map has shape %s, not H x W" % (what, label.shape))
    return label


def read_label(path):
    return decode_label(read_bytes(path), path)


def image_size(path):
    """(height, width) from the file's header, without decoding the pixels."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except FileNotFoundError:
        raise InputError("%s: no such file" % path)
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError("%s: not a readable image (%s)" % (path, e))


def encode_label_png(label, palette=None):
    """PNG bytes of a label map: with a palette (RGB rows) a palette PNG whose
    indices are the labels (colours for viewing), else a grey PNG. PIL,
    because cv2 cannot write palette PNGs."""
    from PIL import Image
    label = np.asarray(label)
    if label.dtype != np.uint8:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise ValueError("label values must lie in 0..255 for an 8-bit PNG")
        label = label.astype(np.uint8)
    im = Image.fromarray(np.ascontiguousarray(label), mode="L")
    if palette is not None:
        im = im.convert("P")
        im.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_label_png(path, label, palette=None):
    atomic_write(path, encode_label_png(label, palette))


def encode_image(image, ext, quality=None):
    import cv2
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if quality and ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise ValueError("cannot encode an image as %s" % ext)
    return buf.tobytes()


def write_image(path, image, quality=None):
    """BGR image to a file whose extension names the format (default PNG)."""
    ext = os.path.splitext(path)[1].lower() or ".png"
    atomic_write(path, encode_image(image, ext, quality))
