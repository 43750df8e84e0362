"""The data layer's benchmark (scripts/bench_data.py): crops per second of
SegDataLayer from LMDBs of synthetic VOC- and Cityscapes-sized images, and
its share of an FCRN-50 training step (the same net fed by an Input layer).
`measure` prints the report and writes it."""
import json
import logging
import os
import platform
import tempfile
import time

import cv2
import numpy as np

from fcrn import caffeio, fileio

log = logging.getLogger("bench_data")
TITLE = "# SegDataLayer benchmark"


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


def data_net(params, tops=("data", "label")):
    """A TRAIN net of SegDataLayer alone, with `params` as its param_str."""
    proto = caffeio.caffe_pb2().NetParameter()
    layer = proto.layer.add(name="data", type="Python", top=list(tops))
    layer.python_param.module = "fcrn_data"
    layer.python_param.layer = "SegDataLayer"
    layer.python_param.param_str = json.dumps(params)
    return caffeio.net_from_param(proto, "train")


def crops_per_second(source, crop, workers, batches, warmup=3):
    net = data_net(dict(source=source, crop_size=crop, batch_size=1, workers=workers,
                        prefetch=max(4, 2 * workers), seed=0, num_classes=21))
    for _ in range(warmup):
        net.forward()
    t = time.perf_counter()
    for _ in range(batches):
        net.forward()
    return batches / (time.perf_counter() - t)


def fcrn50_net(source, crop, use_data_layer):
    """FCRN-50 (1/8, k3 d6) train net from the project's generator, fed by
    SegDataLayer or by an Input layer of the same shapes."""
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
    return caffeio.net_from_param(proto, "train")


def fcrn50_steps(source, crop, iters):
    """Median seconds per forward+backward with an Input layer and with
    SegDataLayer, iterations alternating between the two nets so that load
    from other processes hits both alike; plus the median time spent in the
    data layer's own forward (what it adds to a step)."""
    nets = [fcrn50_net(source, crop, False), fcrn50_net(source, crop, True)]
    nets[1]._forward(0, 0)  # let the workers fill the queue before timing
    last = len(nets[1].layers) - 1
    times, in_layer = ([], []), []
    for i in range(iters + 1):
        for k in ((0, 1) if i % 2 else (1, 0)):  # ABBA order: drifts in load cancel
            net = nets[k]
            t = time.perf_counter()
            if k:
                net._forward(0, 0)
                if i:
                    in_layer.append(time.perf_counter() - t)
                net._forward(1, last)
            else:
                net.forward()
            net.backward()
            if i:  # the first iteration allocates
                times[k].append(time.perf_counter() - t)
    return float(np.median(times[0])), float(np.median(times[1])), float(np.median(in_layer))


def measure(out=None, batches=60, iters=3, workers=(0, 2), force=False):
    """Crops per second over `batches` batches with each number of prefetching
    `workers`, and `iters` FCRN-50 steps (0: none); prints the report and
    writes it to `out`."""
    if out:
        fileio.report_targets(out, TITLE, force, extra=())
    caffeio.set_mode(None)
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
            for count in workers:
                cps = crops_per_second(db, crop, count, batches)
                log.info("%s, crop %d, workers %d: %.1f crops/s", name, crop, count, cps)
                rows.append((name, crop, count, cps))
        step = None
        if iters:
            db, crop = sets["VOC-sized JPEG 500x375"]
            t_input, t_data, t_layer = fcrn50_steps(db, crop, iters)
            step = (crop, t_input, t_data, t_layer)
            log.info("FCRN-50 step: Input %.3f s, SegDataLayer %.3f s (%+.2f%%), "
                     "in the data layer %.4f s (%.2f%%)", t_input, t_data,
                     100 * (t_data / t_input - 1), t_layer, 100 * t_layer / t_input)

    text = [TITLE, "",
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
        crop, t_input, t_data, t_layer = step
        text += ["", "FCRN-50 (1/8, kernel 3, dilation 6, from fcrn.net.netgen) forward+backward "
                 "on one %dx%d crop, median of %d iterations alternating (ABBA) between "
                 "the two nets:" % (crop, crop, iters), "",
                 "| fed by | s/iteration |", "|---|---|",
                 "| Input layer | %.3f |" % t_input, "| SegDataLayer (workers 2) | %.3f |" % t_data,
                 "", "End-to-end difference: %+.2f%%. Time inside the data layer's forward "
                 "(copying a prefetched batch): %.2f ms = %.2f%% of the Input-fed step "
                 "(target < 3%%)." % (100 * (t_data / t_input - 1), 1000 * t_layer,
                                      100 * t_layer / t_input),
                 "", "On this CPU-only machine the two worker processes share the 2 cores "
                 "with Caffe's BLAS threads, so the end-to-end difference also contains "
                 "CPU contention that a GPU trainer does not have."]
    text += notes
    text = "\n".join(text) + "\n"
    print(text)
    if out:
        fileio.atomic_write(out, text)

