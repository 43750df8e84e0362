"""The bootstrapping benchmark (scripts/bench_bootstrap.py): K scaled to the
crop, the paired statistics, and `--quick` end to end, rerun after
interruptions: finished trainings reused, a half-finished one resumed from
its snapshot or restarted, none counted twice."""
import json
import os
import subprocess
import sys

import pytest

from fcrn import caffeio, train
from conftest import ROOT
from fcrn import demo
from tools.bench import bootstrap as bench
from fcrn.net import netgen


def test_labels_per_side_is_the_loss_label_map_of_caffe():
    """The count behind the K scaling is the size of the label map the loss
    sees, as Caffe computes it for the generated train net."""
    caffe = caffeio.caffe()
    for crop in (96, 48):
        v = netgen.Variant(depth=50, kernel=3, dilation=4, crop=crop, bn_stats='batch')
        proto = netgen.with_input_layers(netgen.net(v, 'train'), crop)
        path = os.path.join(os.environ.get('TMPDIR', '/tmp'), 'bench_k_%d.prototxt' % os.getpid())
        with open(path, 'w') as f:
            f.write(netgen.net_text(proto))
        try:
            net = caffe.Net(path, caffe.TRAIN)
        finally:
            os.remove(path)
        assert net.blobs['label_sample'].data.shape[2:] == (bench.labels_per_side(crop, 8),) * 2
    assert bench.labels_per_side(500, 8) == 63


def test_k_is_the_papers_share_of_the_crops_labels():
    # 96 px at 1/8: 12 x 12 = 144 labels; 500 px: 63 x 63 = 3969.
    assert [bench.scaled_k(k, 96, 8) for k in (256, 512, 1024)] == [
        round(k * 144 / 3969) for k in (256, 512, 1024)] == [9, 19, 37]
    assert bench.scaled_k(512, 500, 8) == 512
    names = [loss.name for loss in bench.losses(demo.Config(crop=96))]
    assert names == ['softmax', 'k9', 'k19', 'k37', 'k19_t0.7']


def _row(values, metric='mean_iou'):
    runs = {seed: {metric: v} for seed, v in values.items()}
    mean, sd = bench._mean_sd(list(values.values()))
    return dict(runs=runs, mean={metric: mean}, sd={metric: sd})


def test_paired_differences_against_the_spread():
    softmax = _row({1: 0.50, 2: 0.60, 3: 0.70})          # sd 0.1
    better = _row({1: 0.56, 2: 0.66, 3: 0.75})           # +0.06, +0.06, +0.05
    p = bench._paired(better, softmax, 'mean_iou', [1, 2, 3])
    assert p['per_seed'] == pytest.approx([0.06, 0.06, 0.05])
    assert p['mean'] == pytest.approx(0.17 / 3)
    assert p['spread'] == pytest.approx(max(better['sd']['mean_iou'], 0.1))
    assert (p['higher'], p['lower'], p['larger_than_spread']) == (3, 0, False)
    much = _row({1: 0.80, 2: 0.85, 3: 0.95})
    assert bench._paired(much, softmax, 'mean_iou', [1, 2, 3])['larger_than_spread']


def _run_quick(work, out):
    command = [sys.executable, os.path.join(ROOT, 'scripts', 'bench_bootstrap.py'), '--quick',
               '--work', work, '--out', out]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out + '.json') as f:
        return json.load(f), done.stderr


def _trained(log):
    """Names of the trainings that a benchmark's log says ran."""
    return sorted(line.split('[train_')[1].split(']')[0] for line in log.splitlines()
                  if '[train_' in line and '] running' in line)


def test_quick_benchmark_reruns_without_counting_twice(tmp_path):
    work, out = str(tmp_path / 'work'), str(tmp_path / 'report')
    result, _ = _run_quick(work, out)
    seeds = list(range(1, bench.QUICK_SEEDS + 1))
    assert result['seeds'] == seeds
    assert [row['name'] for row in result['losses']] == ['softmax', 'k2', 'k5', 'k9', 'k5_t0.7']
    for row in result['losses']:
        assert sorted(row['runs']) == [str(s) for s in seeds]
        for seed, scores in row['runs'].items():
            with open(os.path.join(work, 'eval', '%s_seed%s.json' % (row['name'], seed))) as f:
                assert scores['mean_iou'] == json.load(f)['mean_iou']
        assert row['mean']['mean_iou'] == pytest.approx(
            sum(r['mean_iou'] for r in row['runs'].values()) / len(seeds))
    rare = [c['name'] for c in result['classes'] if c['rare']]
    assert rare == ['speckle on stripes', 'speckle on dots']
    text = open(out + '.md').read()
    assert '## Against plain softmax, seed by seed' in text and 'K = 2 (paper 256)' in text

    # Rerun: every training reused.
    again, log = _run_quick(work, out)
    assert _trained(log) == []
    assert again['losses'] == result['losses']

    # Step records gone, the final snapshots left. Same settings: the
    # training is finished and runs nothing; other settings: restarted from
    # scratch.
    kept, restarted = 'k2_seed2', 'k9_seed1'
    for name in (kept, restarted):
        os.remove(os.path.join(work, '.steps', 'train_%s.json' % name))
    with open(os.path.join(work, 'train', restarted, 'settings.json'), 'w') as f:
        f.write('{"other": 1}')
    log_path = {name: os.path.join(work, 'train', name, 'training.log')
                for name in (kept, restarted)}
    with open(log_path[kept]) as f:
        kept_log = f.read()
    third, log = _run_quick(work, out)
    assert _trained(log) == sorted([kept, restarted])
    with open(log_path[kept]) as f:
        assert f.read() == kept_log
    restarted_log = train.parse_log_file(log_path[restarted])
    assert restarted_log.finished and not restarted_log.resumed_from
    for row in third['losses']:
        assert sorted(row['runs']) == [str(s) for s in seeds]
