"""Inference benchmarks (scripts/bench_infer.py): the whole pipeline against
the bare forward, folded against unfolded BN, pycaffe against OpenCV DNN and
onnxruntime, convolution FLOPs and the GFLOP/s reached against the measured
peak of the BLAS library Caffe loaded. `run` writes the report."""
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

from fcrn import fileio
from tools import bench

log = logging.getLogger("bench_infer")
TITLE = "# Inference benchmarks"


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
            out = net.blobs[layer.top[0]].shape  # a shared blob's data is not readable
            total += 2 * int(np.prod(out)) * int(np.prod(w[1:]))
    return total


def peak_gflops():
    """(GFLOP/s, note): the CPU's FP32 peak as a large SGEMM reaches it through
    the BLAS library this process loaded for Caffe (not a copy bundled in a
    wheel, as OpenCV's), with the same threads: the faster of OpenBLAS's own
    kernels and those the environment names (fcrn.blas names them where
    OpenBLAS does not know the CPU)."""
    import ctypes
    import subprocess
    from tools.bench import peer_worker, peers
    try:
        for path in peer_worker.loaded_blas():
            if "site-packages" not in path and hasattr(ctypes.CDLL(path), "cblas_sgemm"):
                shape = peers.GEMM_SHAPES[0]
                rate = max(peers.sgemm_rates(path, [shape], env=env)[0]
                           for env in (peers.unpinned(os.environ), os.environ))
                return rate, "SGEMM %s with %s, measured" % (
                    "x".join(map(str, shape)), os.path.join(*path.split(os.sep)[-2:]))
    except (OSError, AttributeError, subprocess.CalledProcessError) as e:
        log.warning("peak not measured: %s", e)
    return None, "unknown"


def run_forward(net, feeds):
    """One forward of `net` on `feeds` ({input: array}) as inference runs it:
    no copy of any blob (caffeio.forward copies the outputs and, for checks,
    the Softmax inputs, which a net that shares blob memory does not keep)."""
    if any(net.blobs[name].data.shape != value.shape for name, value in feeds.items()):
        for name, value in feeds.items():
            net.blobs[name].reshape(*value.shape)
        net.reshape()
    for name, value in feeds.items():
        net.blobs[name].data[...] = value
    net.forward()


def timed(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(work, prototxt, weights=None, size=(321, 321), images=8, repeat=2, gpu=None,
            note=None):
    """(Markdown report, results) of every measurement of the deploy net
    `prototxt` on `images` random images of `size` (h, w), times the best of
    `repeat`; without `weights`, random ones. Files go to `work`."""
    import cv2
    from fcrn import caffeio, fold, infer, onnx_export

    caffeio.set_mode(gpu)
    h, w = size
    if not weights:
        net = caffeio.load_net(prototxt)
        randomise(net, np.random.RandomState(0))
        weights = os.path.join(work, "random.caffemodel")
        net.save(weights)
        del net
    seg = infer.load_segmenter(prototxt, weights, gpu=gpu)
    net, net_param = seg.net, caffeio.read_net_param(prototxt)
    rng = np.random.RandomState(1)
    img_dir = os.path.join(work, "images")
    os.makedirs(img_dir)
    samples = []
    for i in range(images):
        img = (rng.rand(h, w, 3) * 255).astype(np.uint8)
        img = cv2.GaussianBlur(img, (0, 0), 3)  # compresses like a photo, not like noise
        cv2.imwrite(os.path.join(img_dir, "%03d.jpg" % i), img)
        samples.append(img)
    results = {"net": prototxt, "input": [h, w], "images": images,
               "mode": "GPU %d" % gpu if gpu is not None else "CPU"}

    # bare forward: same padded inputs the pipeline gives the net
    inputs = [seg.prepare(im, seg.views[0])[0] for im in samples]

    def bare():
        for x in inputs:
            for p in range(seg.passes):
                run_forward(net, dict({"data": x[None]}, **(
                    {"pass": np.full((1,), p, np.float32)} if seg.has_pass else {})))
    bare()  # warm-up: allocations, BLAS threads
    t_bare = timed(bare, repeat)

    # The pipeline times itself from its first read to its last write, after
    # loading the net.
    t_pipe = min(infer.run(net=prototxt, weights=weights, sources=[img_dir],
                           out=os.path.join(work, "out%d" % r), gpu=gpu).seconds
                 for r in range(repeat))
    results.update(bare_s_per_image=t_bare / images,
                   pipeline_s_per_image=t_pipe / images,
                   pipeline_overhead_pct=100 * (t_pipe / t_bare - 1))

    # folded vs unfolded, pycaffe vs OpenCV DNN (single-pass nets only: OpenCV has
    # no Python layers)
    fp, fw = os.path.join(work, "folded.prototxt"), os.path.join(work, "folded.caffemodel")
    shape = (1, 3, h, w)
    _, err = fold.export(prototxt, weights, fp, fw, verify_shape=shape)
    results["fold_relative_error"] = err
    folded = caffeio.load_net(fp, fw)  # as generated: blob memory shared, as `net`'s
    feeds = caffeio.random_inputs(net, shape)
    run_forward(folded, feeds)
    t_unf = timed(lambda: run_forward(net, feeds), repeat)
    t_fold = timed(lambda: run_forward(folded, feeds), repeat)
    results.update(forward_unfolded_s=t_unf, forward_folded_s=t_fold)
    if not seg.has_pass:
        cvnet = cv2.dnn.readNetFromCaffe(fp, fw)
        cvnet.setInput(feeds["data"])
        out_name = seg.output
        cv_out = cvnet.forward(out_name)
        # against the folded net unshared, whose every blob keeps its values
        reference = caffeio.forward(caffeio.load_net(fp, fw, share_memory=False), feeds)
        results["opencv_relative_error"] = caffeio.relative_error(reference[out_name], cv_out)

        def cv_fwd():
            cvnet.setInput(feeds["data"])
            cvnet.forward(out_name)
        results["forward_opencv_folded_s"] = timed(cv_fwd, repeat)
        # The ONNX export is checked against the unfolded pycaffe net at this size.
        model = os.path.join(work, "fcrn.onnx")
        exported = onnx_export.export(prototxt, weights, model, outputs=[out_name],
                                      verify_size=(h, w))
        results["onnxruntime_relative_error"] = exported.relative_error
        results["forward_onnxruntime_s"] = onnx_export.time_onnxruntime(
            model, [feeds["data"]], repeat=repeat)
    flops = conv_flops(net, net_param)
    peak, peak_note = peak_gflops() if gpu is None else (None, "n/a")
    results.update(gflop_per_forward=flops / 1e9,
                   gflops_achieved_folded=flops / 1e9 / t_fold,
                   peak_gflops=peak, peak_note=peak_note)

    results.update(machine=bench.machine(), commit=bench.commit())
    md = [TITLE, "",
          "Machine: %s, code at %s." % (results["machine"], results["commit"]), "",
          "`%s`, input %dx%d, %s, %d image(s), best of %d." % (
              prototxt, h, w, results["mode"], images, repeat), "",
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
    if note:
        md += ["", note]
    return "\n".join(md) + "\n", results


def run(out=None, force=False, **options):
    """`measure` (with `options`) in a scratch folder; prints the report and,
    with `out`, writes it there and its JSON beside it. Returns the results."""
    if out:
        md, js = fileio.report_targets(out, TITLE, force)
    with tempfile.TemporaryDirectory(prefix="bench_infer.") as work:
        text, results = measure(work, **options)
    sys.stdout.write(text)
    if out:
        fileio.atomic_write(md, text)
        fileio.atomic_write(js, json.dumps(results, indent=1) + "\n")
    return results
