"""Benchmarks of the C++ layers against the stock Caffe layers they replace
(scripts/bench_layers.py): BootstrappedSoftmaxWithLoss against
SoftmaxWithLoss (time), LeanBatchNorm against BatchNorm + Scale (the memory
each allocates beyond its input, in a fresh process each, and time). `run`
writes the report."""
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np

from fcrn import caffeio, fileio
from tools import bench

caffe = caffeio.caffe()  # pycaffe with the project's layers
from caffe import layers as L  # noqa: E402

log = logging.getLogger("bench_layers")
TITLE = "# Layer benchmarks"

LOSS_SHAPES = [("VOC-like", (n, 21, 65, 65)) for n in (1, 2, 5, 10)] + \
              [("Cityscapes-like", (1, 19, 128, 256))]
BN_SHAPE = (1, 256, 161, 161)
# frozen: statistics, gamma and beta fixed (the paper's); affine: statistics
# fixed, gamma and beta learnt; batch: batch statistics, gamma and beta learnt.
BN_VARIANTS = ["none", "lean-frozen", "stock-frozen", "lean-affine", "stock-affine",
               "lean-batch", "stock-batch"]
BN_MODES = {"frozen": "frozen, gamma and beta fixed (the paper's)",
            "affine": "frozen, gamma and beta learnt", "batch": "batch"}


def build_net(netspec):
    """TRAIN net of a NetSpec, with gradients for its inputs."""
    proto = netspec.to_proto()
    proto.force_backward = True
    return caffeio.net_from_param(proto, "train")


def time_forward_backward(nets, repeats):
    """Fastest seconds of one forward + backward of each net, after a warm-up.

    The nets take turns, and the minimum is kept, so that load from other
    processes on the machine affects both sides of a comparison alike."""
    best = [float("inf")] * len(nets)
    for repeat in range(repeats + 1):
        for i, net in enumerate(nets):
            start = time.perf_counter()
            net.forward()
            net.backward()
            if repeat:
                best[i] = min(best[i], time.perf_counter() - start)
    return best


def loss_net(kind, shape):
    n = caffe.NetSpec()
    n.score, n.label = L.Input(shape=[dict(dim=list(shape)),
                                      dict(dim=[shape[0], 1] + list(shape[2:]))], ntop=2)
    if kind == "bootstrapped":
        n.loss = L.BootstrappedSoftmaxWithLoss(
            n.score, n.label, loss_param=dict(ignore_label=255),
            bootstrap_param=dict(min_kept=512, threshold=0.0))
    else:
        n.loss = L.SoftmaxWithLoss(n.score, n.label, loss_param=dict(ignore_label=255))
    net = build_net(n)
    rng = np.random.RandomState(0)
    net.blobs["score"].data[...] = rng.randn(*shape)
    labels = rng.randint(0, shape[1], net.blobs["label"].data.shape)
    labels[rng.rand(*labels.shape) < 0.1] = 255
    net.blobs["label"].data[...] = labels
    return net


def bench_loss(repeats):
    rows = []
    for name, shape in LOSS_SHAPES:
        stock, boot = time_forward_backward(
            [loss_net("softmax", shape), loss_net("bootstrapped", shape)], repeats)
        rows.append(dict(input=name, shape="x".join(map(str, shape)),
                         softmax_ms=stock * 1e3, bootstrapped_ms=boot * 1e3,
                         ratio=boot / stock))
        log.info("%s %s: SoftmaxWithLoss %.2f ms, Bootstrapped %.2f ms (%.2fx)",
                 name, shape, stock * 1e3, boot * 1e3, boot / stock)
    return rows


def bn_net(variant):
    """The layer in place on a learnt blob (a Parameter layer), so that
    backward reaches it without force_backward, which would also compute
    the gradients of fixed gamma and beta."""
    n = caffe.NetSpec()
    n.x = L.Parameter(parameter_param=dict(shape=dict(dim=list(BN_SHAPE))))
    kind, _, mode = variant.partition("-")
    bn_param = dict(use_global_stats=(mode != "batch"))
    # lr_mult of gamma and beta
    affine = [dict(lr_mult=0)] * 2 if mode == "frozen" else [dict(lr_mult=1)] * 2
    if kind == "lean":
        n.y = L.LeanBatchNorm(n.x, batch_norm_param=bn_param, in_place=True,
                              param=[dict(lr_mult=0)] * 3 + affine)
    elif kind == "stock":
        n.bn = L.BatchNorm(n.x, batch_norm_param=bn_param, in_place=True)
        n.y = L.Scale(n.bn, scale_param=dict(bias_term=True), in_place=True, param=affine)
    n.loss = L.Reduction(n.x, loss_weight=1)  # sets every output gradient to 1
    net = caffeio.net_from_param(n.to_proto(), "train")
    # Channel by channel: an input-sized temporary would raise the peak RSS
    # that the memory figures are read from.
    rng = np.random.RandomState(0)
    for c in range(BN_SHAPE[1]):
        net.params["x"][0].data[:, c] = rng.randn(BN_SHAPE[0], *BN_SHAPE[2:])
    for name in net.params:  # frozen statistics: factor 1, variance 1
        if name == "x":
            continue
        net.params[name][0].data[...] = 0
        if len(net.params[name]) >= 3:
            net.params[name][1].data[...] = 1
            net.params[name][2].data[...] = 1
    return net


def bn_child(variant, repeats):
    """Runs in a fresh process: peak RSS after one iteration, then timing."""
    net = bn_net(variant)
    net.forward()
    net.backward()
    peak_kb = bench.peak_rss() / 1024
    seconds = time_forward_backward([net], repeats)[0] if variant != "none" else 0.0
    print(json.dumps(dict(variant=variant, peak_mb=peak_kb / 1024.0, ms=seconds * 1e3)))


def bench_bn(repeats):
    results = {}
    for variant in BN_VARIANTS:
        out = subprocess.run([sys.executable, "-m", __name__, variant, str(repeats)],
                             check=True, capture_output=True, text=True,
                             env=dict(os.environ, GLOG_minloglevel="2")).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
        log.info("%s: %s", variant, results[variant])
    base = results.pop("none")["peak_mb"]
    return [dict(variant=v, extra_mb=r["peak_mb"] - base, ms=r["ms"])
            for v, r in results.items()]


def machine():
    return "%s, Caffe CPU build (OpenBLAS)" % bench.machine()


def write_report(path, loss_rows, bn_rows, repeats):
    input_mb = np.prod(BN_SHAPE) * 4 / 2.0 ** 20
    lines = [
        TITLE, "",
        "Machine: %s, code at %s. Produced by `scripts/bench_layers.py`; times are the "
        "fastest of %d forward + backward passes." % (machine(), bench.commit(), repeats), "",
        "## BootstrappedSoftmaxWithLoss vs SoftmaxWithLoss (CPU)", "",
        "min_kept 512, threshold 0, 10% of labels ignored. Target: at most 1.2x.", "",
        "| input | shape | SoftmaxWithLoss ms | Bootstrapped ms | ratio | target met |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in loss_rows:
        lines.append("| %s | %s | %.2f | %.2f | %.2fx | %s |" % (
            r["input"], r["shape"], r["softmax_ms"], r["bootstrapped_ms"], r["ratio"],
            "yes" if r["ratio"] <= 1.2 else "**no**"))
    lines += [
        "", "## LeanBatchNorm vs BatchNorm + Scale, in place (CPU)", "",
        "Blob %s (%.1f MiB of data), learnt (a Parameter layer: backward reaches "
        "the layer without force_backward, which would compute fixed gamma's and "
        "beta's gradients too). Extra memory: peak resident set of a fresh "
        "process after one forward + backward, minus that of the same net "
        "without the layer. Target: frozen LeanBatchNorm as the paper trains "
        "(statistics, gamma and beta fixed) allocates no input-sized buffer and "
        "is no slower." % ("x".join(map(str, BN_SHAPE)), input_mb), "",
        "| layer | statistics | extra MiB | input-sized buffers | forward+backward ms |",
        "|---|---|---:|---:|---:|",
    ]
    for r in bn_rows:
        kind, _, mode = r["variant"].partition("-")
        lines.append("| %s | %s | %.1f | %.1f | %.1f |" % (
            "LeanBatchNorm" if kind == "lean" else "BatchNorm + Scale",
            BN_MODES[mode], r["extra_mb"],
            round(r["extra_mb"] / input_mb, 1) or 0.0, r["ms"]))  # no "-0.0"
    fileio.atomic_write(path, "\n".join(lines) + "\n")


def run(out, repeats=20, force=False):
    """Both benchmarks, each pass timed `repeats` times; the report goes to `out`."""
    fileio.report_targets(out, TITLE, force, extra=())
    caffe.set_mode_cpu()
    loss_rows = bench_loss(repeats)
    bn_rows = bench_bn(repeats)
    write_report(out, loss_rows, bn_rows, repeats)
    log.info("wrote %s", out)


if __name__ == "__main__":  # bench_bn's child: VARIANT REPEATS
    caffe.set_mode_cpu()
    bn_child(sys.argv[1], int(sys.argv[2]))
