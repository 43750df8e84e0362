"""Caffe's CPU convolution as the project patches it (cpp/patches/0011-*, 0012-*):
im2col/col2im over channels in parallel, and kn2row for convolutions with few
outputs (FCRN's classifier). Output and gradients are checked against a
direct numpy convolution, with kn2row on and off (FCRN_NO_KN2ROW).
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fcrn  # noqa: F401
import caffe
from caffe import layers as L

# (channels, outputs, kernel, stride, pad, dilation, height, width)
CONFIGS = [
    (6, 2, 3, 1, 2, 2, 9, 11),      # kn2row: dilated, padded
    (6, 3, 5, 1, 4, 2, 12, 10),     # kn2row: FCRN's classifier in miniature
    (6, 2, 3, 1, 0, 1, 7, 8),       # kn2row: no padding, output smaller
    (8, 2, 3, 1, 5, 1, 4, 5),       # kn2row: padding larger than the kernel reach
    (3, 5, 3, 2, 1, 1, 9, 10),      # im2col: strided
    (4, 4, 3, 1, 3, 3, 8, 9),       # im2col: dilated, more outputs than kn2row takes
    (64, 64, 3, 1, 1, 1, 20, 21),   # im2col large enough to run in parallel
    (64, 16, 3, 1, 2, 2, 20, 21),   # kn2row large enough to run in parallel
    (5, 4, 3, 2, 2, 2, 11, 9),      # im2col: strided and dilated
]


def reference(x, w, b, top_diff, stride, pad, dilation):
    """Direct convolution and its gradients, in float64."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out_h = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    out_w = (wd + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    y = np.zeros((n, o, out_h, out_w)) + b[None, :, None, None]
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(k):
        for j in range(k):
            rows = slice(i * dilation, i * dilation + stride * (out_h - 1) + 1, stride)
            cols = slice(j * dilation, j * dilation + stride * (out_w - 1) + 1, stride)
            patch = xp[:, :, rows, cols]                      # n, c, out_h, out_w
            y += np.einsum('oc,nchw->nohw', w[:, :, i, j], patch)
            dw[:, :, i, j] += np.einsum('nohw,nchw->oc', top_diff, patch)
            dxp[:, :, rows, cols] += np.einsum('oc,nohw->nchw', w[:, :, i, j], top_diff)
    dx = dxp[:, :, pad:pad + h, pad:pad + wd]
    return y, dx, dw, top_diff.sum(axis=(0, 2, 3))


def conv_net(tmp_path, channels, outputs, kernel, stride, pad, dilation, height, width):
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=[2, channels, height, width]))
    n.y = L.Convolution(n.x, num_output=outputs, kernel_size=kernel, stride=stride, pad=pad,
                        dilation=dilation)
    proto = n.to_proto()
    proto.force_backward = True
    path = tmp_path / 'conv.prototxt'
    path.write_text(str(proto))
    return path


@pytest.mark.parametrize('kn2row', [True, False])
@pytest.mark.parametrize('config', CONFIGS)
def test_convolution_matches_direct_numpy(tmp_path, monkeypatch, config, kn2row):
    channels, outputs, kernel, stride, pad, dilation, height, width = config
    if not kn2row:
        monkeypatch.setenv('FCRN_NO_KN2ROW', '1')
    net = caffe.Net(str(conv_net(tmp_path, *config)), caffe.TRAIN)
    rng = np.random.RandomState(sum(config))
    x = rng.randn(*net.blobs['x'].data.shape)
    w = rng.randn(*net.params['y'][0].data.shape)
    b = rng.randn(outputs)
    net.blobs['x'].data[...] = x
    net.params['y'][0].data[...] = w
    net.params['y'][1].data[...] = b
    net.forward()
    top_diff = rng.randn(*net.blobs['y'].data.shape)
    net.clear_param_diffs()
    net.backward(y=top_diff.astype(np.float32))
    expected = reference(x, w, b, top_diff, stride, pad, dilation)
    got = (net.blobs['y'].data, net.blobs['x'].diff, net.params['y'][0].diff,
           net.params['y'][1].diff)
    for name, value, want in zip(('output', 'input gradient', 'weight gradient',
                                  'bias gradient'), got, expected):
        assert value.shape == want.shape, name
        error = np.abs(value - want).max() / np.abs(want).max()
        assert error < 1e-5, '%s: relative error %.2g' % (name, error)


def test_parallel_im2col_gives_the_bits_of_one_thread(tmp_path):
    """im2col/col2im split channels between threads; every element is still
    computed alone and in the same order, so one thread gives the same bits."""
    path = conv_net(tmp_path, 64, 64, 3, 2, 2, 2, 33, 30)
    child = textwrap.dedent('''
        import sys
        import numpy as np
        import fcrn, caffe
        net = caffe.Net(sys.argv[1], caffe.TRAIN)
        rng = np.random.RandomState(0)
        for blob in [net.blobs['x']] + list(net.params['y']):
            blob.data[...] = rng.randn(*blob.data.shape)
        net.forward()
        net.backward(y=rng.randn(*net.blobs['y'].data.shape).astype(np.float32))
        np.savez(sys.argv[2], y=net.blobs['y'].data, dx=net.blobs['x'].diff,
                 dw=net.params['y'][0].diff)
        ''')
    results = []
    for threads in ('1', '2'):
        out = str(tmp_path / ('threads%s.npz' % threads))
        # OpenBLAS would follow OMP_NUM_THREADS too: keep its threads fixed.
        env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS='2',
                   GLOG_minloglevel='2')
        subprocess.run([sys.executable, '-c', child, str(path), out], check=True, env=env,
                       cwd=fcrn.ROOT, timeout=300)
        results.append(np.load(out))
    for name in ('y', 'dx', 'dw'):
        assert results[0][name].tobytes() == results[1][name].tobytes(), name
