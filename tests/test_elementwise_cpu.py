"""The element-wise layers as cpp/patches/0014-* runs them on the CPU: ReLU,
Eltwise (sum), Split's backward and max pooling on OpenMP's threads, and
LeanBatchNorm's loops likewise. Outputs and gradients are checked against
numpy, with the loops on all threads and on one (FCRN_SERIAL_ELEMENTWISE,
which a process reads once: each setting runs in its own process). The blobs
are large enough (over 16384 values) for the parallel loops to run.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from fcrn import caffeio
caffe = caffeio.caffe()
from caffe import layers as L, params as P

SHAPE = (2, 8, 41, 40)  # 26240 values

CHILD = r"""
import sys
import numpy as np
from fcrn import caffeio
caffe = caffeio.caffe()
caffe.set_mode_cpu()
net = caffe.Net(sys.argv[1], caffe.TRAIN)
rng = np.random.RandomState(0)
net.blobs['x'].data[...] = rng.randn(*net.blobs['x'].data.shape)
net.blobs['y'].data[...] = rng.randn(*net.blobs['y'].data.shape)
for name, value in zip(('mean', 'variance', 'factor', 'gamma', 'beta'),
                       net.params['bn']):
    value.data[...] = rng.rand(*value.data.shape) + 0.5
net.forward()
diffs = {name: rng.randn(*net.blobs[name].data.shape).astype(np.float32)
         for name in ('sum', 'pool')}
net.backward(**diffs)
np.savez(sys.argv[2], x=net.blobs['x'].data, y=net.blobs['y'].data,
         **{'bn%d' % i: p.data for i, p in enumerate(net.params['bn'])},
         relu=net.blobs['relu'].data, sum=net.blobs['sum'].data,
         pool=net.blobs['pool'].data, dx=net.blobs['x'].diff, dy=net.blobs['y'].diff,
         sum_diff=diffs['sum'], pool_diff=diffs['pool'])
"""


def elementwise_net(path):
    """x -> frozen LeanBatchNorm -> leaky ReLU, split into a weighted sum with
    y and a 3x3 max pooling: every patched loop, forward and backward."""
    n = caffe.NetSpec()
    n.x, n.y = L.Input(shape=[dict(dim=list(SHAPE)), dict(dim=list(SHAPE))], ntop=2)
    n.bn = L.LeanBatchNorm(n.x, batch_norm_param=dict(use_global_stats=True))
    n.relu = L.ReLU(n.bn, negative_slope=0.1)
    n.sum = L.Eltwise(n.relu, n.y, operation=P.Eltwise.SUM, coeff=[2, -0.5])
    n.pool = L.Pooling(n.relu, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    proto = n.to_proto()
    proto.force_backward = True
    path.write_text(str(proto))


def numpy_expected(r):
    """Forward and backward of the net in float64, from the child's inputs."""
    mean, variance, factor, gamma, beta = (r['bn%d' % i].astype(np.float64) for i in range(5))
    c = (None, slice(None), None, None)
    std = np.sqrt(variance / factor + 1e-5)
    bn = (r['x'] - (mean / factor)[c]) / std[c] * gamma[c] + beta[c]
    relu = np.where(bn > 0, bn, 0.1 * bn)
    total = 2 * relu - 0.5 * r['y']
    n, ch, h, w = relu.shape
    ph, pw = (h - 3 + 1) // 2 + 1, (w - 3 + 1) // 2 + 1  # Caffe rounds up
    pool = np.full((n, ch, ph, pw), -np.inf)
    relu_diff = 2 * r['sum_diff'].astype(np.float64)
    for i in range(ph):
        for j in range(pw):
            window = relu[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
            flat = window.reshape(n, ch, -1)
            pool[:, :, i, j] = flat.max(axis=2)
            arg = flat.argmax(axis=2)
            rows, cols = 2 * i + arg // window.shape[3], 2 * j + arg % window.shape[3]
            for a in range(n):
                for b in range(ch):
                    relu_diff[a, b, rows[a, b], cols[a, b]] += r['pool_diff'][a, b, i, j]
    bn_diff = relu_diff * np.where(bn > 0, 1, 0.1)
    return dict(relu=relu, sum=total, pool=pool, dx=bn_diff * (gamma / std)[c],
                dy=-0.5 * r['sum_diff'])


@pytest.mark.parametrize('serial', [False, True])
def test_elementwise_layers_match_numpy(tmp_path, serial):
    elementwise_net(tmp_path / 'net.prototxt')
    env = dict(os.environ, GLOG_minloglevel='2')
    env.pop('FCRN_SERIAL_ELEMENTWISE', None)
    if serial:
        env['FCRN_SERIAL_ELEMENTWISE'] = '1'
    out = subprocess.run([sys.executable, '-c', CHILD, str(tmp_path / 'net.prototxt'),
                          str(tmp_path / 'r.npz')], env=env, capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    r = np.load(str(tmp_path / 'r.npz'))
    for name, want in numpy_expected(r).items():
        got = r[name]
        assert got.shape == want.shape, name
        error = np.abs(got - want).max() / np.abs(want).max()
        assert error < 1e-5, '%s: relative error %.2g' % (name, error)
