"""The paper's Table 4 in miniature (scripts/bench_bootstrap.py, `make
bench-bootstrap`): online bootstrapping of the K hardest pixels against plain
softmax, over several seeds, on the demo's synthetic data and recipe.

Losses: plain softmax; bootstrapping with the paper's K = 256, 512 and 1024
scaled to the crop (`scaled_k`), t = 0 (only the K hardest, the setting of
Table 4); and the middle K with t = THRESHOLD. Each is trained once per seed
(the seed sets Caffe's fillers and the data layer's order and augmentation;
the dataset is the same for all), so two losses trained with the same seed
differ in nothing else: the comparison is paired.

Everything happens in one run folder (an fcrn.experiment.Experiment on the
demo's data: one dataset, prepared once, then per training its net, `caffe
train`, inference and scores, each a step that a rerun skips when it
finished with the same inputs). An interrupted benchmark rerun reuses finished trainings, resumes a
half-finished one from its last snapshot (or restarts it if its settings
changed), and the report reads exactly one score file per (loss, seed): no
run counts twice.
"""
import collections
import dataclasses
import json
import logging
import os
import platform
import time

import numpy as np

from fcrn import demo, evaluate, experiment, fileio, lists
from fcrn.demo import summary, synthetic
from fcrn.net import netgen

log = logging.getLogger(__name__)

PAPER_K = (256, 512, 1024)
# The crop the paper's K were chosen for: the project's VOC crop (VOC images
# are at most 500 px; the paper's networks "are trained with similar sizes
# of image crops").
PAPER_CROP = 500
THRESHOLD = 0.7             # the demo's t (and HRNet's OhemCrossEntropy default)
THRESHOLD_K = PAPER_K[1]    # the paper's best K, with t > 0
# A class with less than this share of the training pixels is rare.
RARE_SHARE = 0.05
METRICS = ('pixel_acc', 'mean_acc', 'mean_iou', 'frequent_iou', 'rare_iou')
METRIC_NAMES = dict(pixel_acc='Pixel acc.', mean_acc='Mean acc.', mean_iou='Mean IoU',
                    frequent_iou='IoU frequent', rare_iou='IoU rare')

# Two iterations on 48 px crops (K 2, 5, 9): the plumbing, not a result.
QUICK = dict(demo.QUICK, train_images=6, val_images=2, crop=48, max_iter=2, snapshot=1)
QUICK_SEEDS = 2
TITLE = '# Online bootstrapping against plain softmax: a miniature Table 4'


def labels_per_side(crop, stride):
    """Labels the loss sees along one side of a crop: one per score pixel
    (netgen samples them at SCORE_ORIGIN + stride * i)."""
    return len(range(netgen.SCORE_ORIGIN, crop, stride))


def scaled_k(k, crop, stride):
    """The paper's K for a PAPER_CROP crop, scaled to `crop`: the same share
    of a crop's labels (256, 512, 1024 of the 63 x 63 of a 500 x 500 crop at
    1/8 are 6.4%, 12.9%, 25.8% of them)."""
    ratio = (labels_per_side(crop, stride) / labels_per_side(PAPER_CROP, stride)) ** 2
    return max(1, int(round(k * ratio)))


@dataclasses.dataclass(frozen=True)
class Loss:
    name: str
    bootstrap: int = None
    threshold: float = 0.0
    paper_k: int = None


def losses(config):
    """The compared losses, plain softmax first."""
    stride = netgen.parse_resolution(config.resolution)
    out = [Loss('softmax')]
    for paper_k in PAPER_K:
        k = scaled_k(paper_k, config.crop, stride)
        out.append(Loss('k%d' % k, k, 0.0, paper_k))
    k = scaled_k(THRESHOLD_K, config.crop, stride)
    out.append(Loss('k%d_t%g' % (k, THRESHOLD), k, THRESHOLD, THRESHOLD_K))
    return out


def run_name(loss, seed):
    return '%s_seed%d' % (loss.name, seed)


def plan(config, seeds):
    """{run name: fcrn.experiment.Training}, seed by seed (so that an interrupted
    benchmark has whole seeds done)."""
    return collections.OrderedDict(
        (run_name(loss, seed), experiment.Training(loss.bootstrap, loss.threshold, seed))
        for seed in seeds for loss in losses(config))


def _class_table(run):
    """[{name, id, voc, train/val pixel and image shares, rare}] of the
    synthetic classes, counted on the prepared labels."""
    names = evaluate.class_names('voc')
    splits = {}
    for split in ('train', 'val'):
        labels = [lbl for _, lbl in lists.read_pairs(run.path('data', split + '.txt'))]
        pixels, images = evaluate.label_counts(labels, len(names))
        splits[split] = (pixels / max(1, pixels.sum()), images / max(1, len(labels)))
    table = []
    for cls in synthetic.CLASSES:
        row = dict(id=cls.id, name=cls.name, voc=names[cls.id])
        for split, (pixels, images) in splits.items():
            row[split + '_pixels'] = float(pixels[cls.id])
            row[split + '_images'] = float(images[cls.id])
        row['rare'] = row['train_pixels'] < RARE_SHARE
        table.append(row)
    return table


def _scores(run, name, classes):
    """The scores of one training: the evaluation's, plus the mean IoU of
    the frequent and of the rare classes, and its time and load."""
    with open(run.path('eval', name + '.json')) as f:
        ev = json.load(f)
    ious = {c['name']: ev['class_iou'][c['voc']] for c in classes}

    def group_mean(rare):   # over the group's classes scored (see fcrn.evaluate)
        return _mean_sd([ious[c['name']] for c in classes if c['rare'] == rare])[0]
    steps = run.steps
    return dict(pixel_acc=ev['pixel_acc'], mean_acc=ev['mean_acc'], mean_iou=ev['mean_iou'],
                frequent_iou=group_mean(False), rare_iou=group_mean(True), class_iou=ious,
                train_seconds=steps.seconds('train_' + name),
                seconds=sum(steps.seconds(step + name) or 0
                            for step in ('net_', 'train_', 'infer_', 'eval_')),
                load=steps.load('train_' + name))


def _mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def summarise(run, config, seeds):
    """The benchmark's result (a JSON-able dict) from the run folder's files."""
    classes = _class_table(run)
    with open(run.path('eval', 'majority.json')) as f:
        majority = json.load(f)
    rows = []
    for loss in losses(config):
        per_seed = {seed: _scores(run, run_name(loss, seed), classes) for seed in seeds}
        row = dict(dataclasses.asdict(loss), describe=run.trainings[
            run_name(loss, seeds[0])].describe(), runs=per_seed, mean={}, sd={})
        for metric in METRICS:
            row['mean'][metric], row['sd'][metric] = _mean_sd(
                [r[metric] for r in per_seed.values()])
        for c in classes:
            row['mean'][c['name']], row['sd'][c['name']] = _mean_sd(
                [r['class_iou'][c['name']] for r in per_seed.values()])
        rows.append(row)
    softmax = rows[0]
    for row in rows[1:]:
        row['vs_softmax'] = {m: _paired(row, softmax, m, seeds) for m in METRICS}
    stride = netgen.parse_resolution(config.resolution)
    return dict(
        recipe=dataclasses.asdict(config), seeds=list(seeds),
        k_scaling=dict(paper_crop=PAPER_CROP, crop=config.crop,
                       labels_per_crop=labels_per_side(config.crop, stride) ** 2,
                       paper_labels_per_crop=labels_per_side(PAPER_CROP, stride) ** 2),
        rare_share=RARE_SHARE, classes=classes,
        majority=dict((m, majority[m]) for m in ('pixel_acc', 'mean_acc', 'mean_iou')),
        majority_class=majority['majority_class'], losses=rows,
        time=_timing(run, rows, config.max_iter),
        machine=dict(cpus=os.cpu_count(), processor=summary.machine(),
                     system=platform.platform()))


def _timing(run, rows, iterations):
    """Wall times of the steps as they last ran and the load averages when
    the trainings ended."""
    runs = [r for row in rows for r in row['runs'].values() if r['train_seconds']]
    if not runs:
        return dict(steps_seconds=run.steps.total_seconds())
    fastest = min(runs, key=lambda r: r['train_seconds'])
    loads = [r['load'][1] for r in runs if r['load']]
    return dict(
        steps_seconds=run.steps.total_seconds(),
        train_seconds_mean=float(np.mean([r['train_seconds'] for r in runs])),
        train_seconds_fastest=fastest['train_seconds'], fastest_load=fastest['load'],
        seconds_per_iteration_fastest=fastest['train_seconds'] / iterations,
        load5_at_end_of_trainings=dict(min=min(loads), max=max(loads),
                                       mean=float(np.mean(loads))) if loads else None)


def _paired(row, softmax, metric, seeds):
    """Same-seed differences row - softmax of one metric, and whether their
    mean is larger than the seed-to-seed spread (the larger standard
    deviation over seeds of the two losses)."""
    diffs = [row['runs'][s][metric] - softmax['runs'][s][metric] for s in seeds
             if row['runs'][s][metric] is not None and softmax['runs'][s][metric] is not None]
    mean, sd = _mean_sd(diffs)
    spreads = [x for x in (row['sd'][metric], softmax['sd'][metric]) if x is not None]
    spread = max(spreads) if spreads else None
    return dict(per_seed=diffs, mean=mean, sd=sd, spread=spread,
                higher=sum(d > 0 for d in diffs), lower=sum(d < 0 for d in diffs),
                larger_than_spread=None if mean is None or spread is None
                else abs(mean) > spread)


# --------------------------------------------------------------------- report

def _pct(x, sd=None, sign=False):
    if x is None:
        return 'n/a'
    text = ('%+.1f' if sign else '%.1f') % (100 * x)
    return text + (' ± %.1f' % (100 * sd) if sd is not None else '')


def markdown(result):
    r = result
    c = r['recipe']
    n = len(r['seeds'])
    ks = r['k_scaling']
    rows = r['losses']
    lines = [
        TITLE,
        '',
        'Written by `scripts/bench_bootstrap.py` (`make bench-bootstrap`). FCRN-%d at %s, '
        'kernel %d, dilation %d, trained from random weights as `make demo` does (batch '
        'statistics, %s, base_lr %g, %s policy, %d iterations of %d crops of %d px, resize '
        '%g-%g) on the same synthetic dataset (%d training, %d held-out images of %d-%d px, '
        'data seed %d), once per loss and seed (seeds %s: Caffe\'s fillers and the data '
        'layer\'s order and augmentation). Scores are on the held-out images, as '
        '`scripts/evaluate.py` computes them, mean ± standard deviation over the %d seeds.'
        % (c['depth'], c['resolution'], c['kernel'], c['dilation'], c['solver_type'],
           c['base_lr'], c['lr_policy'], c['max_iter'], c['batch_size'], c['crop'],
           c['scale'][0], c['scale'][1], c['train_images'], c['val_images'],
           c['image_size'][0], c['image_size'][1], c['data_seed'],
           ', '.join(map(str, r['seeds'])), n),
        '',
        'K is the paper\'s (256, 512, 1024 for its crops, taken as %d px, the project\'s VOC '
        'crop) scaled to the same share of a crop\'s labels: the loss sees %d labels of a '
        '%d px crop at 1/8 against %d of a %d px one, so K = %s. t = 0 keeps exactly the K '
        'hardest pixels of each crop (Table 4\'s setting); t = %g also keeps every pixel '
        'whose true-class probability is below t.'
        % (ks['paper_crop'], ks['labels_per_crop'], ks['crop'], ks['paper_labels_per_crop'],
           ks['paper_crop'], ', '.join('%d (paper %d)' % (x['bootstrap'], x['paper_k'])
                                       for x in rows if x['bootstrap'] and not x['threshold']),
           THRESHOLD),
        '',
        '## Classes (rare: under %g%% of the training pixels)' % (100 * r['rare_share']),
        '',
        '| Class | stored as (VOC id) | train pixels % | train images % | val pixels % '
        '| val images % | group |',
        '|---|---|---:|---:|---:|---:|---|',
    ]
    for cls in r['classes']:
        lines.append('| %s | %s (%d) | %.2f | %.1f | %.2f | %.1f | %s |' % (
            cls['name'], cls['voc'], cls['id'], 100 * cls['train_pixels'],
            100 * cls['train_images'], 100 * cls['val_pixels'], 100 * cls['val_images'],
            'rare' if cls['rare'] else 'frequent'))
    lines += ['', '## Held-out scores, %%, mean ± sd over %d seeds' % n, '',
              '| Loss | ' + ' | '.join(METRIC_NAMES[m] for m in METRICS) + ' |',
              '|---|' + '---:|' * len(METRICS),
              '| majority class (%s) everywhere | %s | %s | %s | | |' % (
                  r['majority_class'], _pct(r['majority']['pixel_acc']),
                  _pct(r['majority']['mean_acc']), _pct(r['majority']['mean_iou']))]
    for row in rows:
        lines.append('| %s | ' % row['describe'] + ' | '.join(
            _pct(row['mean'][m], row['sd'][m]) for m in METRICS) + ' |')
    names = [cls['name'] for cls in r['classes']]
    header = ['%s%s' % (cls['name'], ' (rare)' if cls['rare'] else '') for cls in r['classes']]
    lines += ['', '## Per-class IoU %, mean ± sd', '',
              '| Loss | ' + ' | '.join(header) + ' |',
              '|---|' + '---:|' * len(names)]
    for row in rows:
        lines.append('| %s | ' % row['describe'] + ' | '.join(
            _pct(row['mean'][nm], row['sd'][nm]) for nm in names) + ' |')
    lines += ['', '## Against plain softmax, seed by seed', '',
              'Each cell: mean ± sd over the seeds of (loss − softmax, same seed), in points; '
              'then how many seeds went up / down, and whether the mean difference is larger '
              'than the seed-to-seed spread (the larger standard deviation over seeds of the '
              'two losses\' own scores).', '',
              '| Loss | ' + ' | '.join(METRIC_NAMES[m] for m in METRICS) + ' |',
              '|---|' + '---|' * len(METRICS)]
    for row in rows[1:]:
        cells = []
        for m in METRICS:
            p = row['vs_softmax'][m]
            cells.append('%s (%d up, %d down; %s)' % (
                _pct(p['mean'], p['sd'], sign=True), p['higher'], p['lower'],
                _verdict(p)))
        lines.append('| %s | ' % row['describe'] + ' | '.join(cells) + ' |')
    lines += ['', '## Findings', ''] + findings(result)
    t = r['time']
    lines += ['', '## Runs', '',
              '| Run | Loss | Seed | Mean IoU % | IoU rare % | train s '
              '| load (1/5/15 min) at its end |',
              '|---|---|---:|---:|---:|---:|---|']
    for row in rows:
        for seed, run in row['runs'].items():
            lines.append('| %s | %s | %s | %s | %s | %s | %s |' % (
                run_name(Loss(row['name']), int(seed)), row['describe'], seed,
                _pct(run['mean_iou']), _pct(run['rare_iou']),
                '%.0f' % run['train_seconds'] if run['train_seconds'] else '',
                '/'.join('%.2f' % x for x in run['load']) if run['load'] else ''))
    m = r['machine']
    lines += ['', '## Time', '',
              'Every step, as it last ran: %.0f s (%.2f h) on %s, %s.' % (
                  t['steps_seconds'], t['steps_seconds'] / 3600, m['processor'], m['system'])]
    if t.get('train_seconds_mean'):
        ld = t['load5_at_end_of_trainings']
        lines[-1] += (' A training took %.0f s on average, the fastest %.0f s (%.2f s an '
                      'iteration, network set-up and the final test pass included; load '
                      'averages %s when it ended).' % (
                          t['train_seconds_mean'], t['train_seconds_fastest'],
                          t['seconds_per_iteration_fastest'],
                          '/'.join('%.2f' % x for x in t['fastest_load'] or [])))
        if ld:
            lines.append('The 5-minute load average when the trainings ended ranged %.2f-%.2f '
                         '(mean %.2f) on %d cores; a load above %d means that other work shared '
                         'the cores and the times are longer than on an idle machine.'
                         % (ld['min'], ld['max'], ld['mean'], m['cpus'], m['cpus']))
    return '\n'.join(lines) + '\n'


def _verdict(p):
    if p['larger_than_spread'] is None:
        return 'spread unknown'
    return 'larger than the spread %.1f' % (100 * p['spread']) if p['larger_than_spread'] \
        else 'within the spread %.1f' % (100 * p['spread'])


def findings(result):
    """Plain sentences: each loss against softmax on mean IoU and on the rare classes."""
    out = []
    for row in result['losses'][1:]:
        parts = []
        for metric, what in (('mean_iou', 'mean IoU'), ('rare_iou', 'the rare classes\' IoU'),
                             ('frequent_iou', 'the frequent classes\' IoU')):
            p = row['vs_softmax'][metric]
            if p['mean'] is None:
                continue
            parts.append('%s %s (%d of %d seeds higher, %d lower), %s' % (
                what, '%.1f points %s' % (abs(100 * p['mean']), 'higher' if p['mean'] > 0
                                          else 'lower') if p['mean'] else 'the same',
                p['higher'], len(p['per_seed']), p['lower'],
                'larger than the seed-to-seed spread' if p['larger_than_spread']
                else 'not larger than the seed-to-seed spread'))
        out.append('- %s against plain softmax: %s.' % (row['describe'], '; '.join(parts)))
    return out


# --------------------------------------------------------------------- running

def run(work, config, seeds, out, force=False):
    """Train (or reuse) every (loss, seed) in the run folder `work`, then
    write the report to `out`.md and `out`.json; an existing report other
    than this benchmark's is kept unless `force`. Returns the result dict."""
    out_md, out_json = fileio.report_targets(out + '.md', TITLE, force)
    os.makedirs(work, exist_ok=True)
    r = experiment.Experiment(os.path.abspath(work), config, demo.source(config),
                              plan(config, seeds))
    r.data()
    names = list(r.trainings)
    start = time.time()
    for i, name in enumerate(names, 1):
        log.info('run %d of %d: %s (%s)', i, len(names), name, r.trainings[name].describe())
        r.training(name)
    log.info('trainings done in %.0f s (this invocation)', time.time() - start)
    result = summarise(r, config, list(seeds))
    fileio.atomic_write(out_json, json.dumps(result, indent=1, sort_keys=True) + '\n')
    fileio.atomic_write(out_md, markdown(result))
    return result
