"""Peak resident memory and time of one FCRN training iteration on the CPU
(scripts/bench_memory.py), each case (CASES; see the script's help) in a
process of its own, and of the training step as a user runs it (`caffe
train` on the generated solver, STEP_CASES, with and without memory
sharing). `run` prints the report and writes it."""
import json
import logging
import os
import subprocess
import sys
import tempfile
import time

from tools import bench

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
    """(the train net with Input layers for data/label/pass, its variant)."""
    from fcrn.net import netgen
    # A deploy net tested at 1/4 is the true 1/4 net; give it the training head
    # by generating a train net at that stride with the classifier's dilation.
    if variant.test_resolution:
        scale = variant.resolution // variant.test_resolution
        variant = netgen.Variant(**dict(vars(variant), resolution=variant.test_resolution,
                                        dilation=variant.dilation * scale,
                                        test_resolution=None))
    proto = netgen.with_input_layers(netgen.net(variant, 'train'), size)
    return proto, variant


def child(case, depth, size, iterations):
    import numpy as np
    from fcrn import caffeio
    caffe = caffeio.caffe()
    caffe.set_mode_cpu()
    baseline = bench.peak_rss()
    proto, variant = training_net(variant_for(case, depth), size)
    if case == 'upstream':  # upstream Caffe gives every blob its own memory
        proto.share_memory = False
    net = caffeio.net_from_param(proto, 'train')
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
    peak = bench.peak_rss()
    return dict(case=case, depth=depth, size=size, peak_rss=peak, baseline_rss=baseline,
                seconds=min(seconds), score=list(net.blobs['score'].data.shape),
                loss=float(net.blobs['loss'].data))


def measure(case, depth, size, iterations):
    command = [sys.executable, '-m', __name__, case, str(depth), str(size), str(iterations)]
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


# The training step as a user runs it: the generated train net, its data layer
# (SegDataLayer) included, and the solver's TEST net, through `caffe train`.
STEP_CASES = ('lean', 'sim4')


def write_images(folder, size, count=2, seed=0):
    """`count` synthetic images with labels, `size` + 16 pixels a side (so
    that crops of `size` move), and their list; returns the list's path."""
    import numpy as np
    from fcrn import datasets, imageio, lists
    from fcrn.demo import synthetic
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(count):
        image, label = synthetic.sample(rng, size + 16, size + 16)
        pair = [os.path.join(folder, '%02d%s' % (i, ext)) for ext in ('.jpg', '.png')]
        imageio.write_image(pair[0], image, quality=95)
        imageio.write_label_png(pair[1], label, datasets.get('voc').palette())
        pairs.append(pair)
    source = os.path.join(folder, 'list.txt')
    lists.write_pairs(source, pairs, folder)
    return source


def peak_rss(proc, interval=0.05):
    """Peak resident set (bytes) of the running `proc`, waited for: its
    VmHWM (bench.peak_rss), read until it exits."""
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, bench.peak_rss(proc.pid))
        except (OSError, StopIteration):  # exited between poll and read
            pass
        time.sleep(interval)
    return peak


def training_step(case, depth, size, share_memory, iterations=1):
    """Peak resident set (bytes) and wall seconds of `caffe train` running
    `iterations` updates of the generated solver (one image each, all passes
    of it) on `size` crops: net set-up, the data layer and the TEST net
    included, as a user's training runs."""
    from fcrn import paths, train
    from fcrn.net import netgen
    with tempfile.TemporaryDirectory(prefix='fcrn-step.') as folder:
        source = write_images(folder, size)
        variant = netgen.Variant(**dict(vars(variant_for(case, depth)), crop=size,
                                        train_source=source, val_source=source,
                                        share_memory=share_memory))
        settings = netgen.SolverSettings(iter_size=1, max_iter=iterations, display=1,
                                         snapshot=0, snapshot_prefix='snapshots/step',
                                         test_interval=10 ** 6, test_iter=1,
                                         solver_mode='CPU', random_seed=0)
        netgen.write(os.path.join(folder, 'net'), variant, settings, net_dir='net')
        os.makedirs(os.path.join(folder, 'snapshots'))  # the final snapshot's
        with open(os.path.join(folder, 'caffe.log'), 'w') as out:
            started = time.time()
            proc = subprocess.Popen([paths.caffe_tool(), 'train', '-solver',
                                     'net/solver.prototxt'], cwd=folder,
                                    env=train.caffe_env(), stdout=out, stderr=subprocess.STDOUT)
            peak = peak_rss(proc)
            seconds = time.time() - started
        if proc.returncode != 0:
            with open(os.path.join(folder, 'caffe.log')) as f:
                raise RuntimeError('caffe train (%s, share_memory %s) failed:\n%s'
                                   % (case, share_memory, f.read()[-3000:]))
    return dict(case=case, depth=depth, size=size, share_memory=share_memory,
                peak_rss=peak, seconds=seconds, iterations=iterations)


def step_report(steps):
    """Markdown lines: the training steps, shared against unshared."""
    if not steps:
        return []
    names = dict(lean='1/8, LeanBatchNorm', sim4='1/4 simulated: 4 shifted passes of 1/8')
    first = steps[0]
    lines = ['## The training step as a user runs it', '',
             '`caffe train` on the generated solver (ResNet-%d, 5x5 classifier, dilation 12, '
             '%dx%d crops from the data layer, one image per update, %d update(s), the TEST '
             'net built beside it): peak resident set of the caffe process, wall time of the '
             'whole run (set-up included).' % (first['depth'], first['size'], first['size'],
                                                first['iterations']), '',
             '| Case | share_memory | Peak RSS (GB) | Run (s) |', '|---|---|---:|---:|']
    for r in steps:
        lines.append('| %s | %s | %.2f | %.1f |' % (names[r['case']], str(r['share_memory']).lower(),
                                                   r['peak_rss'] / 1e9, r['seconds']))
    by = {(r['case'], r['share_memory']): r['peak_rss'] for r in steps}
    lines.append('')
    for case in STEP_CASES:
        if (case, True) in by and (case, False) in by:
            lines.append('- %s: shared / unshared peak memory %.2f'
                         % (case, by[case, True] / by[case, False]))
    return lines + ['']


def report(results, depth, size, iterations):
    gb = lambda b: b / 1e9  # noqa: E731
    by_case = {r['case']: r for r in results}
    lines = [TITLE, '',
             'Machine: %s (load average %.1f at the end), code at %s.'
             % (bench.machine(), os.getloadavg()[0], bench.commit()),
             '',
             'ResNet-%d FCRN (5x5 classifier, dilation 12), one %dx%d crop, CPU, '
             'measured by `scripts/bench_memory.py` (peak resident set of the whole '
             'process, pycaffe included; time: the fastest of %d iterations). The nets '
             'as generated, sharing blob memory (share_memory: true), but the upstream '
             'case, which shares none as upstream Caffe.'
             % (depth, size, size, iterations), '',
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


def run(out=None, depth=101, size=321, cases=CASES, iterations=1, force=False,
        step_cases=STEP_CASES, step_size=505):
    """Measure `cases` of a ResNet-`depth` FCRN on one `size` crop (the fastest
    of `iterations`), and the training steps of `step_cases` on `step_size`
    crops with and without sharing; prints the report and, with `out`,
    writes it there and its JSON beside it."""
    from fcrn import fileio
    if out:
        md, js = fileio.report_targets(out, TITLE, force)
    results = [measure(case, depth, size, iterations) for case in cases]
    steps = []
    for case in step_cases:
        for share in (True, False):
            logging.info('training step: %s, share_memory %s', case, share)
            steps.append(training_step(case, depth, step_size, share))
    text = report(results, depth, size, iterations) + '\n'.join([''] + step_report(steps))
    print(text)
    if out:
        fileio.atomic_write(md, text)
        fileio.atomic_write(js, json.dumps(dict(machine=bench.machine(), commit=bench.commit(),
                                                iterations=results, training_steps=steps),
                                           indent=1))


if __name__ == '__main__':  # measure's child: CASE DEPTH SIZE ITERATIONS
    case, depth, size, iterations = sys.argv[1], *map(int, sys.argv[2:5])
    print(json.dumps(child(case, depth, size, iterations)))
