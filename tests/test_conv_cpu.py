"""Caffe's CPU convolution as the project patches it (cpp/patches/0011-*,
0012-*, 0013-*): oneDNN's kernels (the default), and with FCRN_NO_DNNL
im2col/col2im copying whole in-bounds runs and kn2row for convolutions with
few outputs (FCRN's classifier). Output and gradients of each path are
checked against a direct numpy convolution, and im2col/col2im against a
numpy gather and upstream's loops.
"""
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
    (64, 64, 3, 1, 1, 1, 20, 21),   # im2col: a ResNet 3x3 in miniature
    (64, 16, 3, 1, 2, 2, 20, 21),   # kn2row: more channels
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


# The environment that sends a convolution down each path.
PATHS = {'onednn': {}, 'kn2row': {'FCRN_NO_DNNL': '1'},
         'im2col': {'FCRN_NO_DNNL': '1', 'FCRN_NO_KN2ROW': '1'}}


@pytest.mark.parametrize('path', sorted(PATHS))
@pytest.mark.parametrize('config', CONFIGS)
def test_convolution_matches_direct_numpy(tmp_path, monkeypatch, config, path):
    channels, outputs, kernel, stride, pad, dilation, height, width = config
    for name, value in PATHS[path].items():
        monkeypatch.setenv(name, value)
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


def im2col_net(tmp_path, channels, kernel, stride, pad, dilation, height, width):
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=[2, channels, height, width]))
    n.col = L.Im2col(n.x, convolution_param=dict(kernel_size=kernel, stride=stride, pad=pad,
                                                 dilation=dilation))
    proto = n.to_proto()
    proto.force_backward = True
    path = tmp_path / 'im2col.prototxt'
    path.write_text(str(proto))
    return caffe.Net(str(path), caffe.TRAIN)


@pytest.mark.parametrize('config', CONFIGS)
def test_im2col_copies_exactly_and_col2im_adds_as_upstream(tmp_path, monkeypatch, config):
    """im2col copies: equal to a numpy gather bit for bit. col2im adds in
    upstream's order: the bits of upstream's loops (FCRN_UPSTREAM_IM2COL)."""
    channels, _, kernel, stride, pad, dilation, height, width = config
    net = im2col_net(tmp_path, channels, kernel, stride, pad, dilation, height, width)
    rng = np.random.RandomState(sum(config))
    x = rng.randn(*net.blobs['x'].data.shape).astype(np.float32)
    col_diff = rng.randn(*net.blobs['col'].data.shape).astype(np.float32)
    results = {}
    for upstream in (False, True):
        if upstream:
            monkeypatch.setenv('FCRN_UPSTREAM_IM2COL', '1')
        net.blobs['x'].data[...] = x
        net.forward()
        net.backward(col=col_diff)
        results[upstream] = net.blobs['col'].data.copy(), net.blobs['x'].diff.copy()
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out_h, out_w = net.blobs['col'].data.shape[2:]
    expected = np.stack([xp[:, :, i * dilation:i * dilation + stride * (out_h - 1) + 1:stride,
                            j * dilation:j * dilation + stride * (out_w - 1) + 1:stride]
                         for i in range(kernel) for j in range(kernel)], axis=2)
    expected = expected.reshape(net.blobs['col'].data.shape)
    for upstream in (False, True):
        assert np.array_equal(results[upstream][0], expected), upstream
    assert results[False][1].tobytes() == results[True][1].tobytes()
