"""The demo's pieces (synthetic dataset, resumable steps), the training-log
reports it shares with scripts/train.py (fcrn.train), and `scripts/demo.py
--quick` end to end."""
import dataclasses
import errno
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from fcrn import lists, train
from conftest import ROOT
from fcrn.demo import synthetic
from fcrn.experiment import steps

FAKE_LOG = """\
I1125 14:10:47.431783 32254 caffe.cpp:239] Starting Optimization
I1125 14:10:48.801697 32254 solver.cpp:244] Iteration 0 (5.9e-32 iter/s, 1.369s/5 iters), loss = 6.27618
I1125 14:10:48.801795 32254 solver.cpp:263]     Train net output #0: loss = 6.27618 (* 1 = 6.27618 loss)
I1125 14:10:48.801815 32254 sgd_solver.cpp:112] Iteration 0, lr = 0.01
I1125 14:10:55.514369 32254 solver.cpp:244] Iteration 5 (0.74 iter/s, 6.712s/5 iters), loss = 3.5
I1125 14:10:55.514627 32254 sgd_solver.cpp:112] Iteration 5, lr = 0.0077189
I1125 14:11:00.482752 32254 solver.cpp:469] Snapshotting to binary proto file snap/r50_iter_10.caffemodel
I1125 14:11:02.046226 32254 solver.cpp:244] Iteration 10 (0.76 iter/s, 6.531s/5 iters), loss = 2.9
I1125 14:11:02.046346 32254 sgd_solver.cpp:112] Iteration 10, lr = 0.00535887
I1125 14:12:00.000000 40000 caffe.cpp:245] Resuming from snap/r50_iter_10.solverstate
I1125 14:12:01.046226 40000 solver.cpp:244] Iteration 10 (0.76 iter/s, 6.531s/5 iters), loss = 2.8
I1125 14:12:01.046346 40000 sgd_solver.cpp:112] Iteration 10, lr = 0.00535887
I1125 14:12:08.917749 40000 solver.cpp:244] Iteration 15 (0.72 iter/s, 6.871s/5 iters), loss = nan
I1125 14:12:08.917941 40000 sgd_solver.cpp:112] Iteration 15, lr = 0.00287175
I1125 14:12:16.729821 40000 solver.cpp:332] Iteration 20, loss = 1.5
I1125 14:12:16.729926 40000 solver.cpp:352] Iteration 20, Testing net (#0)
I1125 14:12:17.357173 40000 solver.cpp:419]     Test net output #0: accuracy = 0.75
I1125 14:12:17.357266 40000 solver.cpp:419]     Test net output #1: loss = 0.9 (* 1 = 0.9 loss)
I1125 14:12:17.357271 40000 solver.cpp:337] Optimization Done.
"""


def test_synthetic_voc_tree_passes_prepare_voc(tmp_path):
    splits = synthetic.write_voc(str(tmp_path / 'src'), train=6, val=3, size=(64, 80))
    voc = tmp_path / 'src' / 'VOCdevkit' / 'VOC2012'
    assert (voc / 'ImageSets' / 'Segmentation' / 'val.txt').read_text().split() == splits['val']
    values = set()
    for image_id in splits['train'] + splits['val']:
        with Image.open(voc / 'SegmentationClass' / (image_id + '.png')) as im:
            assert im.mode == 'P'
            label = np.asarray(im)
        image = cv2.imread(str(voc / 'JPEGImages' / (image_id + '.jpg')))
        assert image.shape[:2] == label.shape and 64 <= min(label.shape) <= max(label.shape) <= 80
        values |= set(np.unique(label).tolist())
    assert values <= {c.id for c in synthetic.CLASSES} | {255} and 0 in values and 255 in values
    assert len(values - {0, 255}) >= 2
    rc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'prepare_voc.py'),
                         '--voc', str(tmp_path / 'src'), '--out', str(tmp_path / 'data')],
                        capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    assert 'train=6 val=3' in rc.stdout
    assert len((tmp_path / 'data' / 'val.txt').read_text().splitlines()) == 3


def test_synthetic_is_reproducible_and_varies_with_the_seed():
    a = synthetic.sample(np.random.default_rng(5), 50, 60)
    b = synthetic.sample(np.random.default_rng(5), 50, 60)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = synthetic.sample(np.random.default_rng(6), 50, 60)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])
    # an image is a scene, not a constant: several labels, textured pixels
    assert len(np.unique(a[1])) >= 3 and a[0].std() > 10


def test_rare_objects_are_small_rare_and_lie_on_their_region():
    """The two rare classes (same look) each lie wholly on their own region
    class, with some of it around them; they hold under 5% of the pixels and
    appear in a minority of images, each region class in over 5%."""
    rng = np.random.default_rng(1)
    pixels, images, count = {}, {}, 300
    ring = np.ones((2 * synthetic.VOID_WIDTH + 3,) * 2, np.uint8)
    for _ in range(count):
        image, label = synthetic.sample(rng, 120, 120)
        for cls in synthetic.CLASSES:
            n = int((label == cls.id).sum())
            pixels[cls.id] = pixels.get(cls.id, 0) + n
            images[cls.id] = images.get(cls.id, 0) + (n > 0)
        for cls, host in synthetic.OBJECTS:
            mask = (label == cls.id).astype(np.uint8)
            if mask.any():
                around = label[(cv2.dilate(mask, ring) > 0) & (mask == 0)]
                assert set(np.unique(around).tolist()) - {synthetic.VOID} == {host}
    total = 120 * 120 * count
    for cls, _ in synthetic.OBJECTS:
        assert 0.005 < pixels[cls.id] / total < 0.05 and 0.2 < images[cls.id] / count < 0.5
    for cls in synthetic.REGIONS:
        assert pixels[cls.id] / total > 0.05
    assert {c.texture for c, _ in synthetic.OBJECTS} == {'speckle'}


def test_parse_log_with_resume_test_and_nan():
    log = train.parse_log(FAKE_LOG)
    assert [i for i, _ in log.train_loss] == [0, 5, 10, 15, 20]
    assert dict(log.train_loss)[10] == 2.8          # the resumed run's value wins
    assert np.isnan(dict(log.train_loss)[15])
    assert log.lr[0] == (0, 0.01) and log.lr[-1] == (15, 0.00287175)
    assert log.test == {'accuracy': [(20, 0.75)], 'loss': [(20, 0.9)]}
    assert log.resumed_from == ['snap/r50_iter_10.solverstate']
    assert log.finished and log.last_iteration == 20
    assert not train.parse_log(FAKE_LOG.split('Resuming')[0]).finished


def test_reports_of_fabricated_log(tmp_path):
    """CSV and JSON hold what the log says; the plot is a PNG with something drawn."""
    log_path = tmp_path / 'run.log'
    log_path.write_text(FAKE_LOG)
    files = {k: str(tmp_path / ('run.' + ext)) for k, ext in
             (('log', 'log'), ('csv', 'csv'), ('json', 'json'), ('plot', 'png'))}
    parsed = train.write_reports(files)
    rows = open(files['csv']).read().splitlines()
    assert rows[0] == 'iteration,loss,lr,test_accuracy,test_loss'
    assert rows[1] == '0,6.27618,0.01,,' and rows[-1] == '20,1.5,,0.75,0.9'
    assert len(rows) == 1 + 5 and 'nan' in rows[4]
    data = json.load(open(files['json']))
    assert data['train_loss'][2] == [10, 2.8] and data['finished'] is True
    assert data == json.loads(json.dumps(dataclasses.asdict(parsed)))
    img = cv2.imread(files['plot'])
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 400
    assert (img != 255).any(axis=2).mean() > 0.01   # something was drawn


def test_steps_skip_complete_and_redo_interrupted(tmp_path):
    root = str(tmp_path)
    calls = []

    def write(text):
        def action():
            calls.append(text)
            os.makedirs(os.path.join(root, 'out'), exist_ok=True)
            with open(os.path.join(root, 'out', 'f.txt'), 'w') as f:
                f.write(text)
        return action

    s = steps.Steps(root)
    assert s.run('a', ['out'], {'n': 1}, write('one'))
    assert not steps.Steps(root).run('a', ['out'], {'n': 1}, write('two'))
    assert calls == ['one']
    stamp = s.stamp('a')['a']
    # A different key: redone, and the stamp that later steps key on changes.
    assert steps.Steps(root).run('a', ['out'], {'n': 2}, write('three'))
    assert s.stamp('a')['a'] != stamp

    def interrupted():
        os.makedirs(os.path.join(root, 'partial'))
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        s.run('b', ['partial'], {}, interrupted)
    assert not s.done('b', {})
    # The rerun removes the leftover before running again.
    assert s.run('b', ['partial'], {}, lambda: os.makedirs(os.path.join(root, 'partial')))
    with pytest.raises(RuntimeError, match='without writing'):
        s.run('c', ['never'], {}, lambda: None)
    assert not s.done('c', {})


def test_full_disk_leaves_no_step_taken_for_finished(tmp_path, monkeypatch):
    """The disk fills while a step writes, or while its record is written:
    either way the step is not done, and the rerun starts it afresh."""
    root = str(tmp_path)
    full = OSError(errno.ENOSPC, 'No space left on device')

    def fills_up():
        os.makedirs(os.path.join(root, 'out'))
        with open(os.path.join(root, 'out', 'half.bin'), 'wb') as f:
            f.write(b'x' * 10)
        raise full
    s = steps.Steps(root)
    with pytest.raises(OSError, match='No space'):
        s.run('a', ['out'], {}, fills_up)
    assert not s.done('a', {})

    def record_fails(path, text):
        raise full
    monkeypatch.setattr(steps, 'atomic_write', record_fails)
    with pytest.raises(OSError, match='No space'):
        s.run('a', ['out'], {}, lambda: os.makedirs(os.path.join(root, 'out'), exist_ok=True))
    assert not s.done('a', {}) and os.listdir(os.path.join(root, '.steps')) == []
    monkeypatch.undo()

    # The rerun deletes the half-written output before the step runs again.
    seen = []
    assert s.run('a', ['out'], {}, lambda: seen.append(os.path.exists(os.path.join(root, 'out')))
                 or os.makedirs(os.path.join(root, 'out')))
    assert seen == [False] and s.done('a', {})


def test_quick_demo_end_to_end_and_rerun(tmp_path):
    out = str(tmp_path / 'demo')
    command = [sys.executable, os.path.join(ROOT, 'scripts', 'demo.py'), '--out', out, '--quick']
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    for path in ('summary.md', 'report/training.png', 'report/examples.jpg',
                 'eval/bootstrap.json', 'eval/bootstrap.md', 'eval/majority.json',
                 'train/bootstrap/training.log', 'train/bootstrap/training.csv',
                 'train/bootstrap/training.png', 'train/bootstrap/snapshot_iter_6.caffemodel',
                 'train/bootstrap/snapshot_iter_6.solverstate',
                 'nets/bootstrap/solver.prototxt', 'data/val.txt',
                 'synthetic/VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt'):
        assert os.path.exists(os.path.join(out, path)), path
    # Intermediate snapshots go once training is complete.
    assert not os.path.exists(os.path.join(out, 'train/bootstrap/snapshot_iter_3.caffemodel'))
    ids = [os.path.basename(img)[:-4]
           for img, _ in lists.read_pairs(os.path.join(out, 'data', 'val.txt'))]
    assert len(ids) == 4
    for image_id in ids:
        assert os.path.exists(os.path.join(out, 'infer', 'bootstrap', 'labels', image_id + '.png'))
        assert os.listdir(os.path.join(out, 'infer', 'bootstrap', 'overlay'))
    scores = json.load(open(os.path.join(out, 'eval', 'bootstrap.json')))
    majority = json.load(open(os.path.join(out, 'eval', 'majority.json')))
    summary = open(os.path.join(out, 'summary.md')).read()
    assert '| %.1f |' % (100 * scores['mean_iou']) in summary
    assert '%.1f' % (100 * majority['mean_iou']) in summary
    assert 'report/training.png' in summary and 'report/examples.jpg' in summary
    records = [json.load(open(os.path.join(out, '.steps', f)))
               for f in os.listdir(os.path.join(out, '.steps'))]
    assert len(records) == 7
    assert 'Every step, as it last ran: %.0f s in all, on %d CPU cores' % (
        sum(r['seconds'] for r in records), os.cpu_count()) in summary

    # Rerun: everything reused. After a lost step record (as if interrupted
    # during inference), inference and what follows it run again, nothing before.
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and '(0 steps run, 7 reused)' in second.stderr
    os.remove(os.path.join(out, '.steps', 'infer_bootstrap.json'))
    third = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and '(2 steps run, 5 reused)' in third.stderr
    assert '[train_bootstrap] already complete' in third.stderr
