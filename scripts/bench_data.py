#!/usr/bin/env python3
"""Benchmark SegDataLayer: crops per second, and its share of an FCRN-50
training iteration (same net fed by an Input layer instead).

    python scripts/bench_data.py --out benchmarks/data.md

Synthetic data in a temporary directory: VOC-sized JPEGs (500x375, 321x321
crops) and Cityscapes-sized PNGs (2048x1024, 713x713 crops), written to LMDB
as for training. Images are smooth noise, so JPEG/PNG sizes and decode times
are near the real ones.
"""
import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("GLOG_minloglevel", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "layers")]

import cv2  # noqa: E402
import numpy as np  # noqa: E402

log = logging.getLogger("bench_data")


def synth(root, n, h, w, ext, num_classes, seed=0):
    """n image/label pairs and a list file; returns the list path."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    os.makedirs(os.path.join(root, "lbl"), exist_ok=True)
    lines = []
    for k in range(n):
        small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        img = cv2.add(img, rng.integers(0, 24, (h, w, 3), dtype=np.uint8))
        lbl = cv2.resize(rng.integers(0, num_classes, (h // 32 + 1, w // 32 + 1), dtype=np.uint8),
                         (w, h), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(os.path.join(root, "img", "%04d%s" % (k, ext)), img,
                    [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == ".jpg" else [])
        cv2.imwrite(os.path.join(root, "lbl", "%04d.png" % k), lbl)
        lines.append("img/%04d%s lbl/%04d.png\n" % (k, ext, k))
    path = os.path.join(root, "list.txt")
    with open(path, "w") as f:
        f.writelines(lines)
    return path


def data_net(path, params, tops=("data", "label")):
    import caffe
    with open(path, "w") as f:
        f.write('layer { name: "data" type: "Python" %s python_param { module: "fcrn_data" '
                'layer: "SegDataLayer" param_str: %s } }\n'
                % (" ".join('top: "%s"' % t for t in tops), json.dumps(json.dumps(params))))
    return caffe.Net(path, caffe.TRAIN)


def crops_per_second(tmp, source, crop, workers, batches, warmup=3):
    net = data_net(os.path.join(tmp, "d%d_%d.prototxt" % (crop, workers)),
                   dict(source=source, crop_size=crop, batch_size=1, workers=workers,
                        prefetch=max(4, 2 * workers), seed=0, num_classes=21))
    for _ in range(warmup):
        net.forward()
    t = time.perf_counter()
    for _ in range(batches):
        net.forward()
    return batches / (time.perf_counter() - t)


def fcrn50_step(tmp, source, crop, iters, use_data_layer):
    """Seconds per forward+backward of FCRN-50 (1/8, k3 d6) on one crop."""
    import caffe
    import fcrn  # noqa: F401  (loads the C++ layers the net uses)
    from google.protobuf import text_format
    from fcrn.net import netgen
    proto = netgen.net(netgen.Variant(dataset="voc", depth=50, resolution=8, kernel=3,
                                      dilation=6, crop=crop), "train")
    layer = next(l for l in proto.layer if l.type == "Python"
                 and l.python_param.layer == "SegDataLayer")
    if use_data_layer:
        layer.python_param.param_str = json.dumps(dict(
            source=source, crop_size=crop, batch_size=1, seed=0, num_classes=21))
    else:
        layer.type = "Input"
        layer.ClearField("python_param")
        for dims in ([1, 3, crop, crop], [1, 1, crop, crop]):
            layer.input_param.shape.add().dim.extend(dims)
    path = os.path.join(tmp, "fcrn50_%d.prototxt" % use_data_layer)
    with open(path, "w") as f:
        f.write(text_format.MessageToString(proto))
    net = caffe.Net(path, caffe.TRAIN)
    times = []
    for i in range(iters + 1):
        t = time.perf_counter()
        net.forward()
        net.backward()
        if i:  # the first iteration allocates
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="write the results table here (markdown)")
    ap.add_argument("--batches", type=int, default=60, help="timed batches per crops/s figure")
    ap.add_argument("--iters", type=int, default=3, help="timed FCRN-50 iterations (0: skip)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    import caffe
    caffe.set_mode_cpu()
    from fcrn.data.sources import write_lmdb

    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        sets = {}
        for name, n, (h, w), ext, crop in (("VOC-sized JPEG 500x375", 100, (375, 500), ".jpg", 321),
                                           ("Cityscapes-sized PNG 2048x1024", 12, (1024, 2048), ".png", 713)):
            d = os.path.join(tmp, ext[1:])
            log.info("synthesising %d %s", n, name)
            lst = synth(d, n, h, w, ext, 19)
            db = os.path.join(tmp, ext[1:] + ".lmdb")
            write_lmdb(lst, db, num_classes=19)
            sets[name] = (db, crop)
            for workers in args.workers:
                cps = crops_per_second(tmp, db, crop, workers, args.batches)
                log.info("%s, crop %d, workers %d: %.1f crops/s", name, crop, workers, cps)
                rows.append((name, crop, workers, cps))
        step = None
        if args.iters:
            db, crop = sets["VOC-sized JPEG 500x375"]
            t_input = fcrn50_step(tmp, db, crop, args.iters, False)
            t_data = fcrn50_step(tmp, db, crop, args.iters, True)
            step = (crop, t_input, t_data)
            log.info("FCRN-50 step: Input %.3f s, SegDataLayer %.3f s (%+.2f%%)",
                     t_input, t_data, 100 * (t_data / t_input - 1))

    text = ["# SegDataLayer benchmark", "",
            "`python scripts/bench_data.py` on %s, %d CPU cores (shared), Caffe CPU build, %s."
            % (platform.processor() or platform.machine(), os.cpu_count(),
               time.strftime("%Y-%m-%d")), "",
            "Crops per second delivered to the net (batch 1, TRAIN: random scale "
            "[0.5, 2], crop, mirror, from LMDB). workers = 0 loads in the trainer "
            "(the cost per crop a training step would pay without prefetching); "
            "workers = 2 is the default prefetching.", "",
            "| data | crop | workers | crops/s | ms/crop |", "|---|---|---|---|---|"]
    text += ["| %s | %d | %d | %.1f | %.1f |" % (n, c, w, cps, 1000 / cps) for n, c, w, cps in rows]
    if step:
        crop, t_input, t_data = step
        text += ["", "FCRN-50 (1/8, kernel 3, dilation 6) forward+backward on one %dx%d crop, "
                 "median of %d iterations:" % (crop, crop, args.iters), "",
                 "| fed by | s/iteration |", "|---|---|",
                 "| Input layer | %.3f |" % t_input, "| SegDataLayer (workers 2) | %.3f |" % t_data,
                 "", "Overhead: %+.2f%% (target < 3%%)." % (100 * (t_data / t_input - 1))]
    text += notes
    text = "\n".join(text) + "\n"
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
