#!/usr/bin/env python3
"""Inference benchmarks: whole pipeline against the bare forward, folded against
unfolded BN, pycaffe against OpenCV DNN and onnxruntime, FLOPs and achieved GFLOP/s.

  python scripts/bench_infer.py --net prototxt/voc/r50_s8_k5_d12/deploy.prototxt \\
      --size 321 321 --images 8 --out benchmarks/infer.md

Without --weights the net gets random He-initialised weights and random BN
statistics (speed does not depend on the values; folding is checked on them).
The forward times of pycaffe (unfolded and folded), OpenCV DNN (the folded
Caffe net) and onnxruntime (the ONNX model that scripts/export_onnx.py writes,
CPU provider, one intra-op thread per CPU this process may use, as OpenBLAS
uses) are each the best of --repeat forwards of the same input after a warm-up.
The machine's peak is measured, not estimated: SGEMM on 2048x2048 matrices
through the BLAS library Caffe loaded, with the same threads and OpenBLAS's
own kernel choice (the convolutions run in oneDNN, whatever kernels the
environment pins OpenBLAS to).
"""
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

from fcrn import cli, fileio

log = logging.getLogger("bench_infer")
TITLE = "# Inference benchmarks"


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--net", required=True, help="deploy prototxt")
    p.add_argument("--weights", help="caffemodel (default: random weights)")
    p.add_argument("--size", type=cli.positive_int, nargs=2, default=[321, 321],
                   metavar=("H", "W"))
    p.add_argument("--images", type=cli.positive_int, default=8, help="images per measurement")
    p.add_argument("--repeat", type=cli.positive_int, default=2, help="best of this many runs")
    p.add_argument("--gpu", type=cli.nonnegative_int, help="GPU id (CUDA build)")
    p.add_argument("--out", default="benchmarks/infer.md", help="Markdown report (+ .json)")
    p.add_argument("--note", help="a line about the conditions, added to the report")
    cli.add_force(p, "a report")
    return p.parse_args(argv)


def randomise(net, rng):
    for name, params in net.params.items():
        if len(params) in (3, 5) and params[0].data.ndim == 1:  # BatchNorm / LeanBatchNorm
            c = params[0].data.size
            params[0].data[...] = rng.randn(c) * 0.1
            params[1].data[...] = rng.rand(c) + 0.5
            params[2].data[...] = 1
            if len(params) == 5:
                params[3].data[...] = rng.rand(c) + 0.5
                params[4].data[...] = rng.randn(c) * 0.1
        else:
            for p in params:
                fan_in = max(1, int(np.prod(p.data.shape[1:])))
                p.data[...] = rng.randn(*p.data.shape) * np.sqrt(2.0 / fan_in) \
                    if p.data.ndim > 1 else rng.randn(*p.data.shape) * 0.01


def conv_flops(net, net_param):
    """Multiply-adds x 2 of every Convolution for the net's current input shape."""
    total = 0
    for layer in net_param.layer:
        if layer.type == "Convolution":
            w = net.params[layer.name][0].data.shape  # (out, in/group, kh, kw)
            out = net.blobs[layer.top[0]].data.shape
            total += 2 * int(np.prod(out)) * int(np.prod(w[1:]))
    return total


def peak_gflops():
    """(GFLOP/s, note): the CPU's FP32 peak as a large SGEMM reaches it through
    the BLAS library this process loaded for Caffe, with the same threads and
    without the environment's OpenBLAS kernel pin."""
    import ctypes
    import subprocess
    from tools.bench import peer_worker, peers
    try:
        for path in peer_worker.loaded_blas():
            if hasattr(ctypes.CDLL(path), "cblas_sgemm"):
                shape = peers.GEMM_SHAPES[0]
                rate = peers.sgemm_rates(path, [shape], env=peers.unpinned(os.environ))[0]
                return rate, "SGEMM %s with %s, its own kernels, measured" % (
                    "x".join(map(str, shape)), os.path.join(*path.split(os.sep)[-2:]))
    except (OSError, AttributeError, subprocess.CalledProcessError) as e:
        log.warning("peak not measured: %s", e)
    return None, "unknown"


def timed(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(args, work):
    """(Markdown report, results) of every measurement; files go to `work`."""
    import cv2
    from fcrn import caffeio, fold, infer, onnx_export

    caffe = caffeio.caffe()
    caffeio.set_mode(args.gpu)
    h, w = args.size
    weights = args.weights
    if not weights:
        net = caffeio.load_net(args.net)
        randomise(net, np.random.RandomState(0))
        weights = os.path.join(work, "random.caffemodel")
        net.save(weights)
        del net
    seg = infer.load_segmenter(args.net, weights, gpu=args.gpu)
    net, net_param = seg.net, caffeio.read_net_param(args.net)
    rng = np.random.RandomState(1)
    img_dir = os.path.join(work, "images")
    os.makedirs(img_dir)
    images = []
    for i in range(args.images):
        img = (rng.rand(h, w, 3) * 255).astype(np.uint8)
        img = cv2.GaussianBlur(img, (0, 0), 3)  # compresses like a photo, not like noise
        cv2.imwrite(os.path.join(img_dir, "%03d.jpg" % i), img)
        images.append(img)
    results = {"net": args.net, "input": [h, w], "images": args.images,
               "mode": "GPU %d" % args.gpu if args.gpu is not None else "CPU"}

    # bare forward: same padded inputs the pipeline gives the net
    inputs = [seg.prepare(im, seg.views[0])[0] for im in images]

    def bare():
        for x in inputs:
            for p in range(seg.passes):
                caffeio.forward(net, dict({"data": x[None]}, **(
                    {"pass": np.full((1,), p, np.float32)} if seg.has_pass else {})))
    bare()  # warm-up: allocations, BLAS threads
    t_bare = timed(bare, args.repeat)

    # The pipeline times itself from its first read to its last write, after
    # loading the net.
    t_pipe = min(infer.run(args.net, weights, [img_dir], os.path.join(work, "out%d" % r),
                           gpu=args.gpu).seconds for r in range(args.repeat))
    results.update(bare_s_per_image=t_bare / args.images,
                   pipeline_s_per_image=t_pipe / args.images,
                   pipeline_overhead_pct=100 * (t_pipe / t_bare - 1))

    # folded vs unfolded, pycaffe vs OpenCV DNN (single-pass nets only: OpenCV has
    # no Python layers)
    fp, fw = os.path.join(work, "folded.prototxt"), os.path.join(work, "folded.caffemodel")
    shape = (1, 3, h, w)
    _, err = fold.export(args.net, weights, fp, fw, verify_shape=shape)
    results["fold_relative_error"] = err
    folded = caffe.Net(fp, caffe.TEST, weights=fw)
    feeds = caffeio.random_inputs(net, shape)
    caffeio.forward(folded, feeds)
    t_unf = timed(lambda: caffeio.forward(net, feeds), args.repeat)
    t_fold = timed(lambda: caffeio.forward(folded, feeds), args.repeat)
    results.update(forward_unfolded_s=t_unf, forward_folded_s=t_fold)
    if not seg.has_pass:
        cvnet = cv2.dnn.readNetFromCaffe(fp, fw)
        cvnet.setInput(feeds["data"])
        out_name = seg.output
        cv_out = cvnet.forward(out_name)
        results["opencv_relative_error"] = caffeio.relative_error(
            caffeio.forward(folded, feeds)[out_name] if out_name in folded.outputs
            else folded.blobs[out_name].data, cv_out)

        def cv_fwd():
            cvnet.setInput(feeds["data"])
            cvnet.forward(out_name)
        results["forward_opencv_folded_s"] = timed(cv_fwd, args.repeat)
        # The ONNX export is checked against the unfolded pycaffe net at this size.
        model = os.path.join(work, "fcrn.onnx")
        exported = onnx_export.export(args.net, weights, model, outputs=[out_name],
                                      verify_size=(h, w))
        results["onnxruntime_relative_error"] = exported.relative_error
        results["forward_onnxruntime_s"] = onnx_export.time_onnxruntime(
            model, [feeds["data"]], repeat=args.repeat)
    flops = conv_flops(net, net_param)
    peak, peak_note = peak_gflops() if args.gpu is None else (None, "n/a")
    results.update(gflop_per_forward=flops / 1e9,
                   gflops_achieved_folded=flops / 1e9 / t_fold,
                   peak_gflops=peak, peak_note=peak_note)

    md = [TITLE, "",
          "`%s`, input %dx%d, %s, %d image(s), best of %d." % (
              args.net, h, w, results["mode"], args.images, args.repeat), "",
          "| Measure | Value |", "|---|---:|",
          "| bare forward (s/image) | %.3f |" % results["bare_s_per_image"],
          "| whole pipeline: read, pre-process, forward, upsample, write (s/image) | %.3f |"
          % results["pipeline_s_per_image"],
          "| pipeline overhead (target < 10%%) | %.1f%% |" % results["pipeline_overhead_pct"],
          "| forward, BN unfolded, pycaffe (s) | %.3f |" % t_unf,
          "| forward, BN folded, pycaffe (s) | %.3f |" % t_fold,
          "| folded / unfolded max relative difference | %.1e |" % err]
    if "forward_opencv_folded_s" in results:
        md += ["| forward, BN folded, OpenCV DNN (s) | %.3f |" % results["forward_opencv_folded_s"],
               "| OpenCV / pycaffe max relative difference | %.1e |"
               % results["opencv_relative_error"],
               "| forward, ONNX export (BN folded), onnxruntime CPU (s) | %.3f |"
               % results["forward_onnxruntime_s"],
               "| onnxruntime / pycaffe (unfolded) max relative difference | %.1e |"
               % results["onnxruntime_relative_error"]]
    md += ["| convolution FLOPs per forward | %.1f G |" % results["gflop_per_forward"],
           "| achieved, folded pycaffe | %.1f GFLOP/s |" % results["gflops_achieved_folded"]]
    if peak:
        md.append("| peak (%s) | %.0f GFLOP/s (%.0f%% reached) |" % (
            peak_note, peak, 100 * results["gflops_achieved_folded"] / peak))
    if args.note:
        md += ["", args.note]
    return "\n".join(md) + "\n", results


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")

    def job():
        if args.out:
            md, js = fileio.report_targets(args.out, TITLE, args.force)
        with tempfile.TemporaryDirectory(prefix="bench_infer.") as work:
            text, results = measure(args, work)
        sys.stdout.write(text)
        if args.out:
            fileio.atomic_write(md, text)
            fileio.atomic_write(js, json.dumps(results, indent=1) + "\n")
    return cli.run(job, log.name)


if __name__ == "__main__":
    sys.exit(main())
