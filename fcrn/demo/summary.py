"""The demo's one-page Markdown summary and its example mosaic.

Numbers come from the files the tools wrote (eval/*.json, the training
logs, the step records), never from the demo's own bookkeeping, so the page
shows what a user would find by reading those files.
"""
import json
import os

import cv2
import numpy as np

from fcrn import datasets, fileio, imageio
from fcrn.demo.synthetic import CLASSES, OBJECTS

SUMMARY = 'summary.md'


def _load(out, *parts):
    with open(os.path.join(out, *parts)) as f:
        return json.load(f)


def _pct(x):
    return 'n/a' if x is None else '%.1f' % (100 * x)


def examples(run, count=4):
    """The first `count` val images of an Experiment, those showing a rare
    object first."""
    rare = [cls.id for cls, _ in OBJECTS]
    gt = run.path('data', 'SegmentationClassAug')
    ids = run.val_set()[0]
    shown = [i for i in ids if np.isin(imageio.read_label(
        os.path.join(gt, i + '.png')), rare).any()][:count]
    return shown + [i for i in ids if i not in shown][:count - len(shown)]


def mosaic(out, ids, variants, path, height=120):
    """Rows of (image | ground truth | prediction of each variant), as JPEG."""
    palette = datasets.get('voc').palette()[:, ::-1]   # RGB -> BGR for OpenCV
    rows = []
    for image_id in ids:
        image = imageio.read_image(os.path.join(out, 'synthetic', 'VOCdevkit', 'VOC2012',
                                                'JPEGImages', image_id + '.jpg'))
        cells = [image]
        labels = [os.path.join(out, 'data', 'SegmentationClassAug', image_id + '.png')]
        labels += [os.path.join(out, 'infer', v, 'labels', image_id + '.png') for v in variants]
        for label in labels:
            cells.append(palette[imageio.read_label(label)])
        scale = height / image.shape[0]
        cells = [cv2.resize(c, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
                 for c in cells]
        gap = np.full((height, 4, 3), 255, np.uint8)
        rows.append(np.hstack([x for c in cells for x in (c, gap)][:-1]))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255)
            for r in rows]
    imageio.write_image(path, np.vstack(rows), quality=90)


def machine():
    """'N CPU cores (model)', from /proc/cpuinfo where there is one."""
    model = None
    try:
        with open('/proc/cpuinfo') as f:
            model = next((line.split(':', 1)[1].strip() for line in f
                          if line.startswith('model name')), None)
    except OSError:
        pass
    cores = '%d CPU cores' % (os.cpu_count() or 1)
    return '%s (%s)' % (cores, model) if model else cores


def write(out, config, trainings, logs, steps, recipe, benchmark=None):
    """Write out/summary.md; returns its text. `trainings`: {name:
    fcrn.experiment.Training}; `recipe`: the config's fields that the
    bootstrapping benchmark's result (`benchmark`, its .json) must share for
    its comparison to apply to this run."""
    majority = _load(out, 'eval', 'majority.json')
    scores = {v: _load(out, 'eval', '%s.json' % v) for v in trainings}
    c = config
    lines = [
        '# FCRN demo: FCRN-%d trained from scratch on synthetic scenes' % c.depth,
        '',
        'A synthetic PASCAL VOC 2012 tree (`synthetic/VOCdevkit`: %d train and %d val '
        'images, %d-%d px: textured regions of three frequent classes on a smooth '
        'background, and two rare classes, small speckled objects told apart only by the '
        'region they lie on) was prepared into `data/` as `scripts/prepare_voc.py` does; '
        'the nets in `nets/` were generated as `scripts/make_net.py` does (resolution %s, '
        'kernel %d, dilation %d, crop %d, resize %g-%g, batch %d, batch-statistics '
        'normalisation from random weights, residual branches starting at zero, solver %s, '
        'base_lr %g, %s policy; each file names its command); `caffe train -solver` '
        'trained them for %d iterations as `scripts/train.py` does (snapshots, log, CSV and '
        'plot in `train/*/`); the val images were segmented as `scripts/infer.py` does '
        '(`infer/*/labels`, overlays in `infer/*/overlay`) and scored as '
        '`scripts/evaluate.py` does (`eval/`).'
        % (c.train_images, c.val_images, c.image_size[0], c.image_size[1], c.resolution,
           c.kernel, c.dilation, c.crop, c.scale[0], c.scale[1], c.batch_size, c.solver_type,
           c.base_lr, c.lr_policy, c.max_iter),
        '',
        '## Held-out (val) scores',
        '',
        '| Method | Pixel acc. % | Mean acc. % | Mean IoU % | training s |',
        '|---|---:|---:|---:|---:|',
        '| majority class (%s) everywhere | %s | %s | %s | |' % (
            majority['majority_class'], _pct(majority['pixel_acc']),
            _pct(majority['mean_acc']), _pct(majority['mean_iou'])),
    ]
    for v, training in trainings.items():
        s = scores[v]
        seconds = steps.seconds('train_' + v)
        lines.append('| FCRN-%d %s | %s | %s | %s | %s |' % (
            c.depth, training.describe(), _pct(s['pixel_acc']), _pct(s['mean_acc']),
            _pct(s['mean_iou']), '%.0f' % seconds if seconds is not None else ''))
    lines += ['', 'Every step, as it last ran: %.0f s in all, on %s.' % (
        steps.total_seconds(), machine())]
    loads = ['%s %s' % (v, '/'.join('%.2f' % x for x in steps.load('train_' + v)))
             for v in trainings if steps.load('train_' + v)]
    if loads:
        lines[-1] += (' Load averages (1, 5, 15 min) when training ended: %s (a load above '
                      'the %d cores means that other work shared them, and the times are '
                      'longer than on an idle machine).' % ('; '.join(loads), os.cpu_count() or 1))
    names = datasets.get('voc').classes
    present = [cls for cls in CLASSES if majority['class_iou'].get(names[cls.id]) is not None
               or any(s['class_iou'].get(names[cls.id]) is not None for s in scores.values())]
    header = [cls.name if cls.name == names[cls.id] else '%s (%s)' % (cls.name, names[cls.id])
              for cls in present]
    lines += ['', 'Per-class IoU %:', '', '| Method | ' + ' | '.join(header) + ' |',
              '|---|' + '---:|' * len(present)]
    for name, s in [('majority class', majority)] + [(v, scores[v]) for v in trainings]:
        cells = [_pct(s['class_iou'].get(names[cls.id])) for cls in present]
        lines.append('| %s | %s |' % (name, ' | '.join(cells)))
    lines += ['', '(Each class is stored under a VOC id, in brackets; only the id matters.)',
              '']
    lines += comparison(trainings, recipe, benchmark)
    lines += ['', '## Training', '', '![loss and learning rate](report/training.png)', '']
    for v in trainings:
        log = logs[v]
        first = log.train_loss[0][1] if log.train_loss else float('nan')
        last = log.train_loss[-1][1] if log.train_loss else float('nan')
        lines.append('- %s: train loss %.3g at iteration 0, %.3g at %d (`train/%s/training.log`)%s'
                     % (v, first, last, log.last_iteration or 0, v,
                        '; resumed from %s' % ', '.join(log.resumed_from)
                        if log.resumed_from else ''))
    lines += ['', '## Examples (image, ground truth, %s)' % ', '.join(trainings), '',
              '![examples](report/examples.jpg)', '']
    text = '\n'.join(lines)
    fileio.atomic_write(os.path.join(out, SUMMARY), text)
    return text


def comparison(trainings, recipe, path=None):
    """Lines comparing each training's loss with plain softmax over the
    seeds of the bootstrapping benchmark (its result file `path`, .json), if
    it was made with the same recipe."""
    lines = ['## Against plain softmax, over the benchmark\'s seeds', '']
    shown = os.path.relpath(path) if path else None   # as `make demo` names it
    bench = None
    if path:
        try:
            with open(path) as f:
                bench = json.load(f)
        except (OSError, ValueError):
            pass
    if bench is None:
        return lines + ['No benchmark result%s: `make bench-bootstrap` trains this recipe '
                        'with and without bootstrapping over several seeds.'
                        % (' at %s' % shown if shown else '')]
    differing = sorted(k for k in recipe
                       if json.loads(json.dumps(recipe[k])) != bench['recipe'].get(k))
    if differing:
        return lines + ['%s was made with another recipe (%s differ): rerun `make '
                        'bench-bootstrap` for a comparison that applies here.'
                        % (shown, ', '.join(differing))]
    rows = {(r['bootstrap'], r['threshold']): r for r in bench['losses']}
    softmax = rows[(None, 0.0)]
    n = len(bench['seeds'])
    lines += ['`%s` (%d seeds, same data and recipe), held-out mean IoU %%, mean ± sd:' %
              (shown, n), '',
              '| Loss | Mean IoU | IoU frequent | IoU rare |', '|---|---:|---:|---:|']
    shown = [softmax] + [rows[(t.bootstrap, t.threshold)] for t in trainings.values()
                         if t.bootstrap and (t.bootstrap, t.threshold) in rows]
    for r in shown:
        lines.append('| %s | ' % r['describe'] + ' | '.join(
            '%s ± %s' % (_pct(r['mean'][m]), _pct(r['sd'][m]))
            for m in ('mean_iou', 'frequent_iou', 'rare_iou')) + ' |')
    for r in shown[1:]:
        p = r['vs_softmax']['mean_iou']
        lines += ['', 'Same seed, %s minus plain softmax: %+.1f ± %.1f points of mean IoU '
                  '(%d of %d seeds higher), %s the seed-to-seed spread (%.1f).'
                  % (r['describe'], 100 * p['mean'], 100 * (p['sd'] or 0), p['higher'], n,
                     'larger than' if p['larger_than_spread'] else 'not larger than',
                     100 * (p['spread'] or 0))]
    return lines
