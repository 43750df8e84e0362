"""Training as users run it (fcrn.train, scripts/train.py): `caffe train
-solver`, killed, resumed from the last snapshot; initial weights, the NaN
stop, the reports.

A tiny deterministic net is trained uninterrupted, then again but killed once
a snapshot exists and resumed: the resumed run must continue at the
snapshot's iteration and end with exactly the weights of the uninterrupted
run.
"""
import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from fcrn import paths, train as training

import fake_datasets

MAX_ITER = 300
SNAPSHOT = 100

# Two images served as one fixed batch (no shuffle, scale or mirror, crop =
# image size): every iteration sees the same data whatever the RNG, so a
# resumed run must retrace the uninterrupted one exactly. (A random data
# source would not: Caffe re-seeds its RNG on resume rather than saving it.)
NET = """
name: "tiny"
layer { name: "data" type: "Python" top: "data" top: "label"
  python_param { module: "fcrn_data" layer: "SegDataLayer" param_str: '%s' } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "bn" type: "LeanBatchNorm" bottom: "conv" top: "conv"
  param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 1 } param { lr_mult: 1 }
  batch_norm_param { use_global_stats: false } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "score" type: "Convolution" bottom: "conv" top: "score"
  convolution_param { num_output: 5 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "BootstrappedSoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  bootstrap_param { min_kept: 256 } }
"""

SOLVER = """
net: "net.prototxt"
base_lr: 0.01 lr_policy: "poly" power: 0.9 momentum: 0.9 weight_decay: 0.0005
max_iter: %d snapshot: %d snapshot_prefix: "snap/tiny" display: 1 average_loss: 1
solver_mode: CPU random_seed: 7
""" % (MAX_ITER, SNAPSHOT)


def _setup(folder):
    list_path, _ = fake_datasets.write_coded_list(os.path.join(folder, 'images'), 2,
                                                  size=(48, 48), num_classes=5)
    params = dict(source=list_path, batch_size=2, crop_size=48, scale=1, mirror=False,
                  shuffle=False, workers=0, seed=0, num_classes=5)
    os.makedirs(os.path.join(folder, 'snap'))
    with open(os.path.join(folder, 'net.prototxt'), 'w') as f:
        f.write(NET % json.dumps(params))
    with open(os.path.join(folder, 'solver.prototxt'), 'w') as f:
        f.write(SOLVER)
    return folder


def _weights(path):
    """{layer: [blobs]} of a caffemodel, read with protobuf only."""
    from caffe.proto import caffe_pb2
    model = caffe_pb2.NetParameter()
    with open(path, 'rb') as f:
        model.ParseFromString(f.read())
    return {layer.name: [np.array(b.data) for b in layer.blobs]
            for layer in model.layer if layer.blobs}


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    folder = _setup(str(tmp_path_factory.mktemp('whole')))
    result = training.train('solver.prototxt', log_prefix='caffe', cwd=folder)
    return result.log, result.weights


def test_uninterrupted_run_learns(uninterrupted):
    parsed, final = uninterrupted
    assert parsed.finished and parsed.resumed_from == []
    assert [i for i, _ in parsed.train_loss][:3] == [0, 1, 2]
    assert parsed.lr[0] == (0, 0.01)
    assert parsed.train_loss[-1][1] < parsed.train_loss[0][1]
    assert os.path.exists(final)


def _train_script(script, folder, argv):
    """scripts/train.py's exit status for `argv`, run in `folder`."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        return script('train').main(argv)
    finally:
        os.chdir(cwd)


def _run_until_snapshot(folder, log_path, min_iteration):
    """Start caffe train and SIGKILL it once snapshot `min_iteration` is on
    disk and it has gone on training past it."""
    command = [paths.caffe_tool(), 'train', '-solver', 'solver.prototxt']
    with open(log_path, 'a') as log:
        proc = subprocess.Popen(command, cwd=folder, env=training.caffe_env(),
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        prefix = os.path.join(folder, 'snap', 'tiny')
        try:
            while time.time() < deadline and proc.poll() is None:
                done = training.latest_snapshot(prefix)[0]
                last = training.parse_log_file(log_path).last_iteration or 0
                if done >= min_iteration and last > done:
                    break
                time.sleep(0.005)
            assert proc.poll() is None, 'caffe finished before it could be killed'
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()


def test_killed_run_resumes_from_last_snapshot(tmp_path, uninterrupted):
    folder = _setup(str(tmp_path))
    log_path = os.path.join(folder, 'caffe.log')
    _run_until_snapshot(folder, log_path, 2 * SNAPSHOT)
    killed = training.parse_log_file(log_path)
    assert not killed.finished
    snapshot_iter, state = training.latest_snapshot(os.path.join(folder, 'snap', 'tiny'))
    assert snapshot_iter >= 2 * SNAPSHOT and killed.last_iteration > snapshot_iter
    assert not os.path.exists(os.path.join(folder, 'snap', 'tiny_iter_%d.caffemodel' % MAX_ITER))

    result = training.train('solver.prototxt', log_prefix='caffe', cwd=folder)
    parsed, final = result.log, result.weights
    assert parsed.finished
    assert parsed.resumed_from == ['snap/tiny_iter_%d.solverstate' % snapshot_iter]
    # The resumed run's first logged iteration is the snapshot's.
    with open(log_path) as f:
        resumed_part = f.read().split('Resuming from')[1]
    first = training.parse_log(resumed_part).train_loss[0][0]
    assert first == snapshot_iter
    # The learning-rate schedule continues and the weights end where the
    # uninterrupted run's did.
    expected = dict(uninterrupted[0].lr)
    assert all(expected[i] == pytest.approx(v) for i, v in parsed.lr)
    got, want = _weights(final), _weights(uninterrupted[1])
    for name in want:
        for a, b in zip(got[name], want[name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)


def test_snapshot_prefix_is_completed_as_caffe_completes_it(tmp_path):
    (tmp_path / 'snaps').mkdir()
    for prefix, expected in (('', 'solver'), ('snapshot_prefix: "snaps"', 'snaps/solver'),
                             ('snapshot_prefix: "snaps/x"', 'snaps/x')):
        (tmp_path / 'solver.prototxt').write_text('net: "n" max_iter: 7 ' + prefix)
        assert training.snapshot_prefix('solver.prototxt', str(tmp_path)) == (expected, 7)


def test_script_starts_from_weights_and_writes_its_reports(tmp_path, uninterrupted, script):
    """scripts/train.py -weights: with a zero learning rate the final weights
    are the initial ones (the batch-norm statistics, blobs 0-2, keep being
    averaged); log, CSV, JSON and plot land beside the snapshots."""
    folder = _setup(str(tmp_path))
    with open(os.path.join(folder, 'solver.prototxt')) as f:
        solver = f.read().replace('base_lr: 0.01', 'base_lr: 0').replace(
            'max_iter: %d' % MAX_ITER, 'max_iter: 3').replace(
            'snapshot: %d' % SNAPSHOT, 'snapshot: 3')
    with open(os.path.join(folder, 'solver.prototxt'), 'w') as f:
        f.write(solver)
    assert _train_script(script, folder, ['-solver', 'solver.prototxt', '-weights',
                                          uninterrupted[1], '-q']) == 0
    got, want = _weights(os.path.join(folder, 'snap', 'tiny_iter_3.caffemodel')), \
        _weights(uninterrupted[1])
    learnt = {'conv': want['conv'], 'score': want['score'], 'bn': want['bn'][3:]}
    for name, blobs in learnt.items():
        for a, b in zip(got[name][-len(blobs):], blobs):
            np.testing.assert_array_equal(a, b, err_msg=name)
    for ext in ('log', 'csv', 'json', 'png'):
        assert os.path.getsize(os.path.join(folder, 'snap', 'tiny.' + ext)) > 0, ext
    rows = open(os.path.join(folder, 'snap', 'tiny.csv')).read().splitlines()
    assert rows[0] == 'iteration,loss,lr' and [r.split(',')[0] for r in rows[1:]] == \
        ['0', '1', '2', '3']


NAN_NET = """
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } shape { dim: 1 dim: 1 dim: 4 dim: 4 }
    data_filler { type: "gaussian" } data_filler { type: "constant" value: 0 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "bad" type: "Power" bottom: "conv" top: "bad" power_param { power: 0.5 shift: -1e6 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "bad" bottom: "label" top: "loss" }
"""


def test_non_finite_loss_stops_with_the_iteration_named(tmp_path, caplog, script):
    (tmp_path / 'net.prototxt').write_text(NAN_NET)
    (tmp_path / 'solver.prototxt').write_text(
        'net: "%s" base_lr: 0.1 lr_policy: "fixed" max_iter: 5 display: 1 '
        'snapshot_prefix: "%s" solver_mode: CPU'
        % (tmp_path / 'net.prototxt', tmp_path / 'nan'))
    with pytest.raises(training.TrainingError,
                       match=r'iteration 0: the loss is -?nan; training stopped before the '
                             r'update\. Lower base_lr'):
        training.train(str(tmp_path / 'solver.prototxt'))
    assert script('train').main(['--solver', str(tmp_path / 'solver.prototxt'), '-q']) == 1
    assert 'the loss is' in caplog.text and 'nan.log' in caplog.text
    assert os.path.getsize(str(tmp_path / 'nan.csv')) > 0


@pytest.mark.parametrize('argv, solver_mode, message', [
    (['--gpu', '0'], 'CPU', '--gpu 0: this Caffe is a CPU-only build (make CUDA=1)'),
    ([], 'GPU', 'solver.prototxt says solver_mode: GPU: this Caffe is a CPU-only build '
                '(change it to CPU, or regenerate the net with make_net.py --solver-mode CPU'),
])
def test_a_gpu_on_a_cpu_build_is_refused_before_caffe_starts(tmp_path, caplog, script, argv,
                                                             solver_mode, message):
    from fcrn import caffeio
    if caffeio.gpu_build():
        pytest.skip('a CUDA build can use a GPU')
    folder = _setup(str(tmp_path))
    solver = os.path.join(folder, 'solver.prototxt')
    with open(solver) as f:
        text = f.read().replace('solver_mode: CPU', 'solver_mode: ' + solver_mode)
    with open(solver, 'w') as f:
        f.write(text)
    assert _train_script(script, folder, ['--solver', 'solver.prototxt', '-q'] + argv) == 2
    assert message in caplog.text
    assert not os.path.exists(os.path.join(folder, 'snap', 'tiny.log'))  # caffe never ran


def _short_solver(folder, max_iter):
    """The solver of `folder` for `max_iter` iterations, a snapshot every 3."""
    with open(os.path.join(folder, 'solver.prototxt'), 'w') as f:
        f.write(SOLVER.replace('max_iter: %d' % MAX_ITER, 'max_iter: %d' % max_iter)
                .replace('snapshot: %d' % SNAPSHOT, 'snapshot: 3'))


def test_a_finished_run_is_not_run_again(tmp_path):
    """Caffe, resumed at max_iter, would run one more forward and log its
    loss as the last iteration's, over the training's own."""
    folder = _setup(str(tmp_path))
    _short_solver(folder, 3)
    first = training.train('solver.prototxt', cwd=folder)
    reports = {}
    for kind in ('log', 'csv', 'json'):
        with open(first.files[kind], 'rb') as f:
            reports[kind] = f.read()
    again = training.train('solver.prototxt', cwd=folder)
    assert (again.weights, again.iteration) == (first.weights, 3)
    assert again.log.train_loss == first.log.train_loss
    for kind, data in reports.items():
        with open(first.files[kind], 'rb') as f:
            assert f.read() == data, kind


def test_snapshots_past_max_iter_are_refused_and_nothing_runs(tmp_path):
    folder = _setup(str(tmp_path))
    _short_solver(folder, 6)
    first = training.train('solver.prototxt', cwd=folder)
    with open(first.files['log'], 'rb') as f:
        log = f.read()
    for lower in (5, 3):  # between snapshots, and at one
        _short_solver(folder, lower)
        with pytest.raises(training.InputError, match='snapshots go to iteration 6, past '
                           'max_iter %d of solver.prototxt; raise max_iter, or --restart'
                           % lower):
            training.train('solver.prototxt', cwd=folder)
        with open(first.files['log'], 'rb') as f:
            assert f.read() == log


def test_another_nets_snapshots_under_the_same_prefix_are_refused(tmp_path, caplog, script):
    """Two generated nets differing only in what their tag leaves out (a
    crop, a dropout ratio, a dataset of as many classes) get one default
    snapshot prefix: the second was deemed trained, or resumed from the
    first one's weights."""
    folder = _setup(str(tmp_path))
    _short_solver(folder, 3)
    training.train('solver.prototxt', cwd=folder)
    with open(os.path.join(folder, 'net.prototxt')) as f:
        net = f.read()
    with open(os.path.join(folder, 'other.prototxt'), 'w') as f:
        f.write(net.replace('"crop_size": 48', '"crop_size": 40'))
    with open(os.path.join(folder, 'solver.prototxt')) as f:
        solver = f.read()
    for max_iter in (3, 6):  # "already trained", and resumed
        with open(os.path.join(folder, 'other_solver.prototxt'), 'w') as f:
            f.write(solver.replace('net.prototxt', 'other.prototxt')
                    .replace('max_iter: 3', 'max_iter: %d' % max_iter))
        with pytest.raises(training.InputError, match=r'snap/tiny: its snapshots are of another '
                           r'training \(another net, by solver.prototxt\); give this solver a '
                           r'snapshot_prefix of its own'):
            training.train('other_solver.prototxt', cwd=folder)
    # comments and layout are not the net
    with open(os.path.join(folder, 'net.prototxt'), 'w') as f:
        f.write('# the same net\n' + net.replace('\n', '\n\n'))
    _short_solver(folder, 6)
    assert training.train('solver.prototxt', cwd=folder).iteration == 6
    # --restart trains the other net afresh there; it resumes from its own
    # snapshots only, not from the first net's later ones
    first_six = _weights(os.path.join(folder, 'snap', 'tiny_iter_6.caffemodel'))
    for max_iter, argv in ((3, ['--restart']), (6, [])):
        with open(os.path.join(folder, 'other_solver.prototxt'), 'w') as f:
            f.write(solver.replace('net.prototxt', 'other.prototxt')
                    .replace('max_iter: 3', 'max_iter: %d' % max_iter))
        log = os.path.join(folder, 'snap', 'tiny.log')
        start = os.path.getsize(log)
        assert _train_script(script, folder, ['--solver', 'other_solver.prototxt', '-q']
                             + argv) == 0
        with open(log) as f:
            f.seek(start)
            resumed = re.findall(r'Resuming from (\S+)', f.read())
        assert resumed == ([] if argv else ['snap/tiny_iter_3.solverstate'])
        with open(os.path.join(folder, 'snap', 'tiny.training.json')) as f:
            record = json.load(f)
        assert (record['solver'], record['snapshots']) == ('other_solver.prototxt',
                                                           [3, 6][:max_iter // 3])
    second_six = _weights(os.path.join(folder, 'snap', 'tiny_iter_6.caffemodel'))
    assert not np.array_equal(first_six['score'][0], second_six['score'][0])


def test_a_resumed_run_continues_the_data_stream(tmp_path):
    """Shuffled, scaled and mirrored crops through a prefetching worker,
    two forwards per update: the data layer restarted its stream at a
    resume, so the resumed run trained again on the first batches."""
    def setup(folder, max_iter):
        if not os.path.isdir(folder):
            os.makedirs(os.path.join(folder, 'snap'))
            list_path, _ = fake_datasets.write_coded_list(os.path.join(folder, 'images'), 5,
                                                          size=(48, 48), num_classes=5)
            params = dict(source=list_path, batch_size=2, crop_size=40, scale=[1, 2],
                          mirror=True, shuffle=True, workers=1, seed=3, num_classes=5)
            with open(os.path.join(folder, 'net.prototxt'), 'w') as f:
                f.write(NET % json.dumps(params))
        with open(os.path.join(folder, 'solver.prototxt'), 'w') as f:
            # a fixed rate: poly's depends on max_iter, which the halves raise
            f.write(SOLVER.replace('max_iter: %d' % MAX_ITER, 'max_iter: %d iter_size: 2'
                                   % max_iter).replace('snapshot: %d' % SNAPSHOT, 'snapshot: 3')
                    .replace('lr_policy: "poly" power: 0.9', 'lr_policy: "fixed"'))
        return folder
    whole = training.train('solver.prototxt', cwd=setup(str(tmp_path / 'whole'), 6))
    halves = str(tmp_path / 'halves')
    training.train('solver.prototxt', cwd=setup(halves, 3))
    resumed = training.train('solver.prototxt', cwd=setup(halves, 6))
    assert resumed.log.train_loss == whole.log.train_loss
    ours, theirs = _weights(resumed.weights), _weights(whole.weights)
    for layer in theirs:
        for a, b in zip(ours[layer], theirs[layer]):
            np.testing.assert_array_equal(a, b)
