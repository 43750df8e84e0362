"""Line plots drawn with OpenCV (the project does not depend on matplotlib).

`training_curves(log, path)` draws the train loss (and any test loss) over
iterations above the learning rate, one panel each, and writes a PNG.
"""
import math
import os

import cv2
import numpy as np

WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (210, 210, 210)
# BGR colours of the series, in order.
COLOURS = [(180, 90, 20), (30, 120, 230), (40, 160, 40), (40, 40, 200)]
FONT = cv2.FONT_HERSHEY_SIMPLEX


def nice_ticks(lo, hi, count=5):
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError('tick range must be finite, not [%r, %r]' % (lo, hi))
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def _label(value):
    return ('%.3g' % value) if value else '0'


def draw_panel(img, box, series, title, xlim):
    """Draw `series` [(name, [(x, y)], colour)] into `box` (x0, y0, x1, y1) of img."""
    x0, y0, x1, y1 = box
    left, bottom, top = x0 + 70, y1 - 35, y0 + 30
    right = x1 - 15
    finite = [y for _, pts, _ in series for _, y in pts if math.isfinite(y)]
    yticks = nice_ticks(min(finite), max(finite)) if finite else [0.0, 1.0]
    xticks = nice_ticks(*xlim)
    ylo, yhi = yticks[0], yticks[-1]
    xlo, xhi = xticks[0], xticks[-1]

    def to_px(x, y):
        return (int(round(left + (x - xlo) / (xhi - xlo) * (right - left))),
                int(round(bottom - (y - ylo) / (yhi - ylo) * (bottom - top))))

    for t in yticks:
        _, py = to_px(xlo, t)
        cv2.line(img, (left, py), (right, py), GREY, 1)
        cv2.putText(img, _label(t), (x0 + 5, py + 4), FONT, 0.4, BLACK, 1, cv2.LINE_AA)
    for t in xticks:
        px, _ = to_px(t, ylo)
        cv2.line(img, (px, bottom), (px, bottom + 4), BLACK, 1)
        cv2.putText(img, '%d' % t, (px - 12, bottom + 18), FONT, 0.4, BLACK, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (right, bottom), BLACK, 1)
    cv2.putText(img, title, (left, top - 10), FONT, 0.5, BLACK, 1, cv2.LINE_AA)
    cv2.putText(img, 'iteration', ((left + right) // 2 - 30, y1 - 3), FONT, 0.4, BLACK, 1,
                cv2.LINE_AA)
    legend_y = top + 15
    for name, pts, colour in series:
        pixels = [to_px(x, y) for x, y in pts if math.isfinite(y)]
        if len(pixels) > 1:
            cv2.polylines(img, [np.array(pixels, np.int32)], False, colour, 2, cv2.LINE_AA)
        for p in pixels if len(pixels) < 30 else []:
            cv2.circle(img, p, 3, colour, -1, cv2.LINE_AA)
        cv2.line(img, (right - 150, legend_y - 4), (right - 125, legend_y - 4), colour, 2)
        cv2.putText(img, name, (right - 120, legend_y), FONT, 0.4, BLACK, 1, cv2.LINE_AA)
        legend_y += 16


def training_curves(logs, path, size=(900, 640)):
    """Write a PNG of loss (top) and learning rate (bottom).

    `logs` is {run name: TrainingLog}; each run adds its train loss, its test
    loss if it was tested, and its learning rate. Returns the image.
    """
    width, height = size
    img = np.full((height, width, 3), WHITE, np.uint8)
    loss, lr = [], []
    for k, (name, log) in enumerate(sorted(logs.items())):
        colour = COLOURS[(2 * k) % len(COLOURS)]
        loss.append(('%s train' % name, log.train_loss, colour))
        if log.test.get('loss'):
            loss.append(('%s test' % name, log.test['loss'], COLOURS[(2 * k + 1) % len(COLOURS)]))
        lr.append((name, log.lr, colour))
    xs = [x for _, pts, _ in loss + lr for x, _ in pts] or [0, 1]
    xlim = (min(xs), max(xs))
    split = int(height * 0.62)
    draw_panel(img, (0, 0, width, split), loss, 'loss', xlim)
    draw_panel(img, (0, split, width, height), lr, 'learning rate', xlim)
    ok, buf = cv2.imencode('.png', img)
    if not ok:
        raise OSError('cannot encode the plot')
    from fcrn.net.fileio import atomic_write_bytes
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    atomic_write_bytes(path, buf.tobytes())
    return img
