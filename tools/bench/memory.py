#!/usr/bin/env python3
"""Peak resident memory and time of one FCRN training iteration (CPU).

Cases, each measured in its own process (ResNet-`depth`, one SIZE x SIZE crop):
  upstream  1/8 net, stock BatchNorm + Scale, convolutions through upstream
            Caffe's per-layer im2col buffers (FCRN_NO_DNNL and
            FCRN_PRIVATE_IM2COL, see cpp/patches/0003-* and 0013-*)
  caffe  1/8 net, stock BatchNorm + Scale
  lean   1/8 net, LeanBatchNorm
  true4  1/4 net (res3 stride removed, dilations doubled), LeanBatchNorm
  sim4   the 1/4 net simulated by four shifted passes of the 1/8 net, LeanBatchNorm
One iteration is one forward-backward, or the four of one image for sim4.
Weights are random (memory and time do not depend on them).

  scripts/bench_memory.py --out benchmarks/memory.md
"""
import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time

TITLE = '# Memory and time of one training iteration'


CASES = ('upstream', 'caffe', 'lean', 'sim4', 'true4')


def variant_for(case, depth):
    from fcrn.net import netgen
    common = dict(depth=depth, kernel=5, dilation=12, dataset='voc')
    if case in ('upstream', 'caffe'):
        return netgen.Variant(resolution=8, batch_norm='caffe', **common)
    if case == 'lean':
        return netgen.Variant(resolution=8, **common)
    if case == 'sim4':
        return netgen.Variant(resolution=8, simulate=4, **common)
    # same weights and FoV as the 1/8 net: the classifier's dilation doubles too
    return netgen.Variant(resolution=8, test_resolution=4, **common)


def training_net(variant, size):
    """The train net with Input layers for data/label/pass, as prototxt text."""
    from fcrn.net import netgen
    # A deploy net tested at 1/4 is the true 1/4 net; give it the training head
    # by generating a train net at that stride with the classifier's dilation.
    if variant.test_resolution:
        scale = variant.resolution // variant.test_resolution
        variant = netgen.Variant(**dict(vars(variant), resolution=variant.test_resolution,
                                        dilation=variant.dilation * scale,
                                        test_resolution=None))
    proto = netgen.with_input_layers(netgen.net(variant, 'train'), size)
    return netgen.net_text(proto), variant


def child(case, depth, size, iterations):
    import numpy as np
    from fcrn import caffeio
    caffe = caffeio.caffe()
    caffe.set_mode_cpu()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    text, variant = training_net(variant_for(case, depth), size)
    with tempfile.NamedTemporaryFile('w', suffix='.prototxt', delete=False) as f:
        f.write(text)
    try:
        net = caffe.Net(f.name, caffe.TRAIN)
    finally:
        os.unlink(f.name)
    rng = np.random.RandomState(0)
    for layer in net.layers:
        if layer.type in ('BatchNorm', 'LeanBatchNorm'):
            layer.blobs[1].data[...] = 1
            layer.blobs[2].data[...] = 1
            for blob in layer.blobs[3:]:
                blob.data[...] = 1
        elif layer.type == 'Convolution':
            w = layer.blobs[0].data
            w[...] = rng.randn(*w.shape).astype(np.float32) / np.sqrt(w[0].size)
    net.blobs['data'].data[...] = rng.randn(*net.blobs['data'].data.shape) * 50
    net.blobs['label'].data[...] = rng.randint(0, variant.classes, net.blobs['label'].data.shape)
    passes = 4 if variant.simulate else 1
    seconds = []
    for _ in range(iterations):
        start = time.time()
        for index in range(passes):
            if passes > 1:
                net.blobs['pass'].data[...] = index
            net.forward()
            net.backward()
        seconds.append(time.time() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(case=case, depth=depth, size=size, peak_rss=peak, baseline_rss=baseline,
                seconds=min(seconds), score=list(net.blobs['score'].data.shape),
                loss=float(net.blobs['loss'].data))


def measure(case, args):
    command = [sys.executable, os.path.abspath(__file__), '--child', case, '--depth',
               str(args.depth), '--size', str(args.size), '--iterations', str(args.iterations)]
    logging.info('running %s', case)
    env = dict(os.environ, GLOG_minloglevel='2')
    for name in ('FCRN_PRIVATE_IM2COL', 'FCRN_NO_DNNL'):
        env.pop(name, None)
        if case == 'upstream':
            env[name] = '1'
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError('%s failed:\n%s' % (case, result.stderr[-3000:]))
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(results, args):
    gb = lambda b: b / 1e9  # noqa: E731
    by_case = {r['case']: r for r in results}
    lines = [TITLE, '',
             'ResNet-%d FCRN (5x5 classifier, dilation 12), one %dx%d crop, CPU, '
             'measured by `scripts/bench_memory.py` (peak resident set of the whole '
             'process, pycaffe included; time: the fastest of %d iterations).'
             % (args.depth, args.size, args.size, args.iterations), '',
             '| Case | Score map | Peak RSS (GB) | Forward-backward (s) |', '|---|---|---|---|']
    names = dict(upstream='1/8, BatchNorm + Scale, upstream im2col buffers',
                 caffe='1/8, BatchNorm + Scale', lean='1/8, LeanBatchNorm',
                 sim4='1/4 simulated: 4 shifted passes of 1/8 (lean)',
                 true4='1/4 true network (lean)')
    for r in results:
        lines.append('| %s | %s | %.2f | %.1f |' % (names[r['case']], 'x'.join(
            map(str, r['score'][2:])), gb(r['peak_rss']), r['seconds']))
    lines.append('')
    # The reference is the stock net as upstream Caffe runs it;
    # lean / caffe shows what the lean layer alone gains on the patched Caffe.
    for mine, other, target in (('lean', 'upstream', 0.60), ('lean', 'caffe', None),
                                ('sim4', 'true4', 0.5)):
        if mine in by_case and other in by_case:
            ratio = by_case[mine]['peak_rss'] / by_case[other]['peak_rss']
            verdict = '' if target is None else ' (target at most %.2f: %s)' % (
                target, 'met' if ratio <= target else 'NOT met')
            lines.append('- %s / %s peak memory: %.2f%s' % (mine, other, ratio, verdict))
    lines.append('- Python + pycaffe alone: %.2f GB' % gb(results[0]['baseline_rss']))
    return '\n'.join(lines) + '\n'


def main(argv=None):
    from fcrn import cli, fileio
    parser = cli.parser(__doc__)
    parser.add_argument('--depth', type=int, default=101, choices=(50, 101, 152))
    parser.add_argument('--size', type=cli.positive_int, default=321)
    parser.add_argument('--cases', nargs='+', default=list(CASES), choices=CASES)
    parser.add_argument('--iterations', type=cli.positive_int, default=1)
    parser.add_argument('--out', help='Markdown report (and .json beside it)')
    cli.add_force(parser, 'a report')
    parser.add_argument('--child', choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.depth, args.size, args.iterations)))
        return 0

    def job():
        if args.out:
            md, js = fileio.report_targets(args.out, TITLE, args.force)
        results = [measure(case, args) for case in args.cases]
        text = report(results, args)
        print(text)
        if args.out:
            fileio.atomic_write(md, text)
            fileio.atomic_write(js, json.dumps(results, indent=1))
    return cli.run(job, 'bench_memory')


if __name__ == '__main__':
    sys.exit(main())
