#!/usr/bin/env python3
"""Segment images with a deploy net: one label PNG of exactly the input size each.

  # VOC: whole images, unresized (the paper's test), palette PNGs + overlays
  python scripts/infer.py --net deploy.prototxt --weights fcrn.caffemodel \\
      --list val_images.txt --out out/val --overlay out/val_overlay

  # Cityscapes: 1024x2048 in overlapping 512x1024 tiles, flip averaging,
  # trainId palette PNGs plus labelId PNGs for the official server
  python scripts/infer.py --net deploy.prototxt --weights fcrn.caffemodel \\
      --dataset cityscapes --tile 512 1024 --flip leftImg8bit/val --out out/cs_val \\
      --labelids out/cs_val_labelIds

Inputs: image files, folders (recursive; output names keep the sub-folders) and
--list files. A net with a `pass` input runs the four-pass shifted test
(--passes 1 for pass 0 only). Unreadable images are named, skipped and counted;
the exit status is then 1, and every output already written stays (each file is
written to a temporary name and renamed).
"""
import argparse
import collections
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("infer")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="*", help="image files or folders")
    p.add_argument("--list", help="file with one image path per line")
    p.add_argument("--net", required=True, help="deploy prototxt")
    p.add_argument("--weights", required=True, help="caffemodel")
    p.add_argument("--out", required=True, help="folder for the label PNGs")
    p.add_argument("--dataset", choices=["voc", "cityscapes"], default="voc",
                   help="colours of the palette PNGs and overlays")
    p.add_argument("--overlay", help="also write colour overlays (JPEG) here")
    p.add_argument("--labelids", help="cityscapes: also write labelId PNGs here")
    p.add_argument("--tile", type=int, nargs=2, metavar=("H", "W"),
                   help="sliding window of this size (default: whole image)")
    p.add_argument("--overlap", type=float, default=1.0 / 3, help="tile overlap fraction")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0],
                   help="test scales, probabilities averaged (e.g. 0.75 1 1.25)")
    p.add_argument("--flip", action="store_true", help="also average the mirrored image")
    p.add_argument("--passes", type=int, choices=[1, 4],
                   help="shifted test passes (default: 4 when the net has a 'pass' input)")
    p.add_argument("--batch", type=int, default=1, help="net inputs per forward")
    p.add_argument("--gpu", type=int, metavar="N", help="run on GPU N (CUDA build)")
    p.add_argument("--mean", type=float, nargs=3, default=None, metavar=("B", "G", "R"),
                   help="BGR mean subtracted (default: ImageNet ResNet means)")
    p.add_argument("--output-blob", help="score blob (default: score, else prob)")
    p.add_argument("--stride", type=int, help="override the traced output stride")
    p.add_argument("--offset", type=float, help="override the traced grid offset")
    p.add_argument("--jobs", type=int, default=2, help="threads reading and writing files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import fcrn  # noqa: F401  (registers the project's layers)
    import caffe
    from fcrn import evaluate, fold, infer

    items = infer.list_inputs(args.inputs, args.list)
    if not items:
        log.error("no input images")
        return 2
    if args.labelids and args.dataset != "cityscapes":
        log.error("--labelids needs --dataset cityscapes")
        return 2
    if args.gpu is not None:
        if not infer.gpu_build():
            log.error("--gpu %d: this Caffe is a CPU-only build", args.gpu)
            return 2
        caffe.set_mode_gpu()
        caffe.set_device(args.gpu)
    else:
        caffe.set_mode_cpu()
    try:
        net = fold.load_net(args.net, args.weights)
        seg = infer.Segmenter(
            net, fold.read_net_param(args.net), output=args.output_blob,
            mean=args.mean or infer.IMAGENET_MEAN, batch_size=args.batch,
            scales=args.scales, flip=args.flip, tile=args.tile, overlap=args.overlap,
            passes=args.passes, stride=args.stride, offset=args.offset)
    except (fold.FoldError, ValueError) as e:
        log.error("%s", e)
        return 2
    log.info("output %r: stride %d, offset %g, %d pass(es), %d view(s), %s",
             seg.output, seg.stride, seg.offset, seg.passes, len(seg.views),
             "tiles %dx%d" % seg.tile if seg.tile else "whole images")

    palette = infer.PALETTES[args.dataset]()
    to_label_id = evaluate.cityscapes_train_to_label_lut()
    failed = []

    def load(item):
        try:
            return item, infer.read_image(item[0]), None
        except OSError as e:
            return item, None, str(e)

    def save(name, image, label):
        infer.write_label_png(os.path.join(args.out, name + ".png"), label, palette)
        if args.overlay:
            infer.write_image(os.path.join(args.overlay, name + ".jpg"),
                              infer.overlay(image, label, palette))
        if args.labelids:
            infer.write_label_png(os.path.join(args.labelids, name + ".png"),
                                  to_label_id[label])

    pool = ThreadPoolExecutor(max(1, args.jobs))
    pending_reads = collections.deque()
    pending_writes = []
    queue = iter(items)
    lookahead = 2 * args.batch + args.jobs

    def refill():
        for item in queue:
            pending_reads.append(pool.submit(load, item))
            if len(pending_reads) >= lookahead:
                break

    bar = None
    if not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=len(items), unit="img", desc="infer")
    start, done = time.time(), 0
    refill()
    while pending_reads:
        batch = []
        while pending_reads and len(batch) < args.batch:
            (path, name), image, err = pending_reads.popleft().result()
            if err:
                log.error("skipped: %s", err)
                failed.append(path)
                if bar:
                    bar.update(1)
            else:
                batch.append((name, image))
            refill()
        if not batch:
            continue
        labels = seg.predict([im for _, im in batch])
        for (name, image), label in zip(batch, labels):
            pending_writes.append((name, pool.submit(save, name, image, label)))
        done += len(batch)
        if bar:
            bar.update(len(batch))
        # Collect finished writes so their errors surface and memory is freed.
        still = []
        for name, fut in pending_writes:
            if fut.done():
                if fut.exception():
                    log.error("cannot write %s: %s", name, fut.exception())
                    failed.append(name)
            else:
                still.append((name, fut))
        pending_writes = still
    for name, fut in pending_writes:
        if fut.exception():
            log.error("cannot write %s: %s", name, fut.exception())
            failed.append(name)
    pool.shutdown()
    if bar:
        bar.close()
    elapsed = time.time() - start
    log.info("%d image(s) in %.1f s: %.2f images/s, %d forward(s)", done, elapsed,
             done / max(elapsed, 1e-9), seg.forwards)
    if failed:
        log.error("%d of %d input(s) failed: %s", len(failed), len(items),
                  ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else ""))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
