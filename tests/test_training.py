"""Training as users run it: `caffe train -solver`, killed, resumed with -snapshot.

A tiny deterministic net is trained
uninterrupted, then again but killed once a snapshot exists and resumed with
`-snapshot`: the resumed run must continue at the snapshot's iteration and
end with exactly the weights of the uninterrupted run.
"""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from fcrn.demo import training, traininglog

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
    parsed, final = training.train('solver.prototxt', os.path.join(folder, 'caffe.log'),
                                   'snap/tiny', MAX_ITER, cwd=folder)
    return parsed, final


def test_uninterrupted_run_learns(uninterrupted):
    parsed, final = uninterrupted
    assert parsed.finished and parsed.resumed_from == []
    assert [i for i, _ in parsed.train_loss][:3] == [0, 1, 2]
    assert parsed.lr[0] == (0, 0.01)
    assert parsed.train_loss[-1][1] < parsed.train_loss[0][1]
    assert os.path.exists(final)


def _run_until_snapshot(folder, log_path, min_iteration):
    """Start caffe train and SIGKILL it once snapshot `min_iteration` is on
    disk and it has gone on training past it."""
    command = [training.caffe_tool(), 'train', '-solver', 'solver.prototxt']
    with open(log_path, 'a') as log:
        proc = subprocess.Popen(command, cwd=folder, env=training.caffe_env(),
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        prefix = os.path.join(folder, 'snap', 'tiny')
        try:
            while time.time() < deadline and proc.poll() is None:
                done = training.latest_snapshot(prefix)[0]
                last = traininglog.parse_file(log_path).last_iteration or 0
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
    killed = traininglog.parse_file(log_path)
    assert not killed.finished
    snapshot_iter, state = training.latest_snapshot(os.path.join(folder, 'snap', 'tiny'))
    assert snapshot_iter >= 2 * SNAPSHOT and killed.last_iteration > snapshot_iter
    assert not os.path.exists(os.path.join(folder, 'snap', 'tiny_iter_%d.caffemodel' % MAX_ITER))

    parsed, final = training.train('solver.prototxt', log_path, 'snap/tiny', MAX_ITER,
                                   cwd=folder)
    assert parsed.finished
    assert parsed.resumed_from == ['snap/tiny_iter_%d.solverstate' % snapshot_iter]
    # The resumed run's first logged iteration is the snapshot's.
    with open(log_path) as f:
        resumed_part = f.read().split('Resuming from')[1]
    first = traininglog.parse(resumed_part).train_loss[0][0]
    assert first == snapshot_iter
    # The learning-rate schedule continues and the weights end where the
    # uninterrupted run's did.
    expected = dict(uninterrupted[0].lr)
    assert all(expected[i] == pytest.approx(v) for i, v in parsed.lr)
    got, want = _weights(final), _weights(uninterrupted[1])
    for name in want:
        for a, b in zip(got[name], want[name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
