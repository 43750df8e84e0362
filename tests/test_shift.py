"""Multi-pass shifted resolution (layers/fcrn_shift.py), through real caffe.Nets."""
import numpy as np
import pytest

from fcrn.infer.geometry import interleave
from fcrn.net import netgen


SHIFT_NET = """
force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 6 } } }
layer { name: "pass" type: "Input" top: "pass" input_param { shape { dim: 1 } } }
layer { name: "shift" type: "Python" bottom: "x" bottom: "pass" top: "y"
        python_param { module: "fcrn_shift" layer: "ShiftLayer" %s } }
"""


@pytest.mark.parametrize('index', range(4))
def test_shift_crops_the_phase_and_routes_gradient_back(index, text_net):
    net = text_net(SHIFT_NET % '')
    x = np.random.RandomState(index).randn(2, 3, 5, 6).astype(np.float32)
    net.blobs['x'].data[...] = x
    net.blobs['pass'].data[...] = index
    net.forward()
    dy, dx = divmod(index, 2)
    y = net.blobs['y'].data
    assert y.shape == (2, 3, 5 - dy, 6 - dx)
    np.testing.assert_array_equal(y, x[:, :, dy:, dx:])
    # A stride-2 sampling of the shifted map is the (dy, dx) phase of the original.
    np.testing.assert_array_equal(y[:, :, ::2, ::2], x[:, :, dy::2, dx::2])

    net.blobs['y'].diff[...] = 1 + np.arange(y.size).reshape(y.shape)
    net.blobs['pass'].diff[...] = 7  # as another blob leaves a shared diff
    net.backward()
    assert not net.blobs['pass'].diff.any()  # asked for (force_backward): no gradient
    grad = net.blobs['x'].diff
    np.testing.assert_array_equal(grad[:, :, dy:, dx:], net.blobs['y'].diff)
    assert not grad[:, :, :dy].any() and not grad[:, :, :, :dx].any()


@pytest.mark.parametrize('value', [4, -1, 1.5])
def test_shift_rejects_a_bad_pass_index(value, text_net):
    net = text_net(SHIFT_NET % '')
    net.blobs['pass'].data[...] = value
    with pytest.raises(Exception, match='pass must be 0, 1, 2 or 3'):
        net.forward()


def test_shift_rejects_unknown_param_keys(text_net):
    with pytest.raises(Exception, match=r'ShiftLayer: unknown param_str key\(s\) \[.phase.\]'):
        text_net(SHIFT_NET % 'param_str: "{\\"phase\\": 1}"')


LABEL_NET = """
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 dim: 1 dim: 21 dim: 19 } } }
layer { name: "score" type: "Input" top: "score" input_param { shape { dim: 2 dim: 4 dim: %d dim: %d } } }
layer { name: "pass" type: "Input" top: "pass" input_param { shape { dim: 1 } } }
layer { name: "sample" type: "Python" bottom: "label" bottom: "score" bottom: "pass" top: "sampled"
        python_param { module: "fcrn_shift" layer: "LabelSampleLayer" param_str: '%s' } }
"""


@pytest.mark.parametrize('index', range(4))
def test_label_sample_reads_the_centre_of_each_score_pixel_on_the_pass_phase(index, text_net):
    # stride 4, origin 2, phase step 2: score (i, j) of pass (dy, dx) sits on
    # label (2 + 2 dy + 4 i, 2 + 2 dx + 4 j); 6 x 5 scores overrun a 21 x 19 label.
    net = text_net(LABEL_NET % (6, 5, '{"stride": 4, "origin": 2, "phase_step": 2}'))
    height, width = 21, 19
    rows, cols = np.mgrid[:height, :width]
    net.blobs['label'].data[...] = rows * 100 + cols   # each value names its position
    net.blobs['pass'].data[...] = index
    net.forward()
    dy, dx = divmod(index, 2)
    out = net.blobs['sampled'].data
    assert out.shape == (2, 1, 6, 5)
    for i in range(6):
        for j in range(5):
            y, x = 2 + 2 * dy + 4 * i, 2 + 2 * dx + 4 * j
            expected = y * 100 + x if y < height and x < width else 255
            assert out[1, 0, i, j] == expected, (i, j)


def test_label_sample_needs_a_stride(text_net):
    with pytest.raises(Exception, match=r'LabelSampleLayer: param_str lacks \[.stride.\]'):
        text_net(LABEL_NET % (6, 5, '{"origin": 2}'))


def test_interleave_places_each_pass_on_its_phase():
    """The interleave inference uses (fcrn.infer.segmenter.Segmenter.predict)."""
    full = np.arange(2 * 7 * 6).reshape(2, 7, 6)
    phases = [full[:, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]
    np.testing.assert_array_equal(interleave(phases), full)
    with pytest.raises(ValueError, match='pass 3 has shape'):
        interleave(phases[:3] + [phases[0]])


def deploy_net(text_net, variant):
    return text_net(netgen.net_text(netgen.net(variant, 'deploy')))


@pytest.mark.parametrize('batch_norm', ['lean', 'caffe'])
@pytest.mark.parametrize('size', [(64, 64), (67, 59)], ids=['even', 'odd'])
def test_four_shifted_passes_of_the_eighth_net_equal_the_quarter_net(size, batch_norm, text_net,
                                                                      randomise):
    """Sec. 3.2: identical weights; the interleaved 4-pass 1/8 output is the
    true 1/4 output (res3 stride removed, later dilations doubled) everywhere."""
    # Unshared: score and res2c are read, and are no outputs.
    common = dict(depth=50, kernel=3, dilation=2, batch_norm=batch_norm, dataset='cityscapes',
                  share_memory=False)
    simulated = deploy_net(text_net, netgen.Variant(resolution=8, simulate=4, **common))
    quarter = deploy_net(text_net, netgen.Variant(resolution=8, test_resolution=4, **common))
    randomise(quarter, seed=1)
    for name, blobs in quarter.params.items():
        for source, target in zip(blobs, simulated.params[name]):
            target.data[...] = source.data
    image = np.random.RandomState(2).randn(1, 3, *size).astype(np.float32) * 50

    quarter.blobs['data'].reshape(*image.shape)
    quarter.blobs['data'].data[...] = image
    quarter.forward()
    expected = quarter.blobs['score'].data[0].copy()
    # The 1/4 score map has the size of res2's output (stride 4).
    assert expected.shape[1:] == quarter.blobs['res2c'].data.shape[2:]

    simulated.blobs['data'].reshape(*image.shape)
    simulated.blobs['data'].data[...] = image
    passes = []
    for index in range(4):
        simulated.blobs['pass'].data[...] = index
        simulated.forward()
        passes.append(simulated.blobs['score'].data[0].copy())
    got = interleave(passes)

    assert got.shape == expected.shape
    score_range = expected.max() - expected.min()
    assert score_range > 1  # the random net computes something non-trivial
    assert np.abs(got - expected).max() < 1e-4 * score_range
