"""Memory sharing between blobs (NetParameter.share_memory, cpp/patches/0010-*).

A net with share_memory gives blobs whose lifetimes in one pass do not
overlap one memory: their data in the TEST phase, their diffs otherwise. The
outputs and gradients must equal, bit for bit, those of the same net without
it; the memory layout is checked against lifetimes computed here from the
net's own layer order; nets it would get wrong are refused, naming the layer.
"""
import copy
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fcrn import caffeio
caffe = caffeio.caffe()  # with the project's layers
from caffe import layers as L, params as P
from fcrn.net import netgen
from conftest import ROOT

SIZE = 49


def fcrn_net(phase, share, size=SIZE):
    """A small FCRN-50 deploy net (dilated 1/8, 3x3 classifier)."""
    proto = netgen.net(netgen.Variant(depth=50, kernel=3, dilation=2), 'deploy')
    proto.layer[0].input_param.shape[0].dim[2:] = [size, size]
    proto.force_backward = phase == caffe.TRAIN
    proto.share_memory = share
    return proto


def loss_net(share):
    """Branches, in-place layers, a dilated convolution, a label input, and
    consumers that send no gradient back (a pooling with propagate_down
    false, an Accuracy): Split reads their diffs, which must stay zero."""
    n = caffe.NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[2, 3, 11, 13]), dict(dim=[2, 1, 11, 13])],
                              ntop=2)
    n.conv1 = L.Convolution(n.data, num_output=8, kernel_size=3, pad=1,
                            weight_filler=dict(type='gaussian', std=0.3))
    n.bn1 = L.LeanBatchNorm(n.conv1, batch_norm_param=dict(use_global_stats=True),
                            in_place=True)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.side = L.Pooling(n.conv1, pool=P.Pooling.AVE, kernel_size=3, stride=1, pad=1,
                       propagate_down=[False])
    n.branch_a = L.Convolution(n.conv1, num_output=8, kernel_size=3, pad=2, dilation=2,
                               weight_filler=dict(type='gaussian', std=0.3))
    n.branch_b = L.Convolution(n.conv1, num_output=8, kernel_size=1,
                               weight_filler=dict(type='gaussian', std=0.3))
    n.sum = L.Eltwise(n.branch_a, n.branch_b, n.side, operation=P.Eltwise.SUM)
    n.relu2 = L.ReLU(n.sum, in_place=True)
    n.pool = L.Pooling(n.sum, pool=P.Pooling.MAX, kernel_size=3, stride=1, pad=1)
    n.score = L.Convolution(n.pool, num_output=4, kernel_size=3, pad=1,
                            weight_filler=dict(type='gaussian', std=0.3))
    n.loss = L.SoftmaxWithLoss(n.score, n.label, propagate_down=[True, False])
    n.hard = L.BootstrappedSoftmaxWithLoss(n.score, n.label, propagate_down=[True, False],
                                           bootstrap_param=dict(min_kept=20), loss_weight=0.5)
    n.accuracy = L.Accuracy(n.score, n.label)
    proto = n.to_proto()
    proto.share_memory = share
    return proto


def load(tmp_path, proto, phase, name):
    path = tmp_path / name
    path.write_text(str(proto))
    return caffe.Net(str(path), phase)


def randomise(net, rng):
    for params in net.params.values():
        for p in params:
            p.data[...] = rng.rand(*p.data.shape) + 0.5 if p.data.ndim == 1 else \
                rng.randn(*p.data.shape) / np.sqrt(p.data[0].size)


def copy_params(source, target):
    for name, params in source.params.items():
        for i, p in enumerate(params):
            target.params[name][i].data[...] = p.data


def lifetimes(net):
    """{blob: (first, last) layer index} and {blob: alias root}: Split tops
    are their bottom's data; everything else must not overlap."""
    span, alias = {}, {}
    for i, layer in enumerate(net.layers):
        for blob in net.bottom_names[net._layer_names[i]] + net.top_names[net._layer_names[i]]:
            first, last = span.get(blob, (i, i))
            span[blob] = (min(first, i), max(last, i))
        if layer.type == 'Split':
            bottom = net.bottom_names[net._layer_names[i]][0]
            for top in net.top_names[net._layer_names[i]]:
                alias[top] = alias.get(bottom, bottom)
    return span, alias


def memory_layout(net, field):
    """{blob: (address, bytes)} of each blob's data or diff (of the blob
    behind a SharedBlob, which refuses to give them)."""
    layout = {}
    for name, blob in net.blobs.items():
        array = getattr(getattr(blob, '_blob', blob), field)
        layout[name] = (array.ctypes.data, array.nbytes)
    return layout


def check_layout(net, field, alias_splits):
    """No two blobs alive at once overlap in memory; some memory is shared.
    Returns the number of distinct memories."""
    span, alias = lifetimes(net)
    if not alias_splits:
        alias = {}
    layout = memory_layout(net, field)
    names = [name for name in net.blobs if layout[name][1]]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if alias.get(a, a) == alias.get(b, b):
                continue
            overlap_in_time = span[a][0] <= span[b][1] and span[b][0] <= span[a][1]
            (pa, na), (pb, nb) = layout[a], layout[b]
            overlap_in_memory = pa < pb + nb and pb < pa + na
            assert not (overlap_in_time and overlap_in_memory), \
                '%s %s and %s share memory while both alive (%s, %s)' % (
                    field, a, b, span[a], span[b])
    return len({layout[name][0] for name in names})


def phase_test_nets(tmp_path, seed):
    """The TEST net without and with memory sharing, with the same random
    weights, and the random state that drew them."""
    plain = load(tmp_path, fcrn_net(caffe.TEST, False), caffe.TEST, 'plain.prototxt')
    shared = load(tmp_path, fcrn_net(caffe.TEST, True), caffe.TEST, 'shared.prototxt')
    rng = np.random.RandomState(seed)
    randomise(plain, rng)
    copy_params(plain, shared)
    return plain, shared, rng


def test_test_phase_shares_data_and_gives_identical_outputs(tmp_path):
    plain, shared, rng = phase_test_nets(tmp_path, 0)
    image = rng.randn(1, 3, SIZE, SIZE) * 50
    for net in (plain, shared):
        net.blobs['data'].data[...] = image
        net.forward()
    assert np.array_equal(plain.blobs['prob'].data, shared.blobs['prob'].data)
    memories = check_layout(shared, 'data', alias_splits=True)
    distinct_plain = check_layout(plain, 'data', alias_splits=True)
    assert memories < distinct_plain / 5, (memories, distinct_plain)


def test_test_phase_follows_a_new_input_size(tmp_path):
    """pycaffe may reshape an input and run forward without net.reshape()."""
    plain, shared, rng = phase_test_nets(tmp_path, 1)
    for size in (SIZE + 16, SIZE - 8):
        image = rng.randn(1, 3, size, size) * 50
        for net in (plain, shared):
            net.blobs['data'].reshape(*image.shape)
            net.blobs['data'].data[...] = image
            net.forward()
        assert np.array_equal(plain.blobs['prob'].data, shared.blobs['prob'].data)
        check_layout(shared, 'data', alias_splits=True)


@pytest.mark.parametrize('make', ['fcrn', 'loss'])
def test_train_phase_shares_diffs_and_gives_identical_gradients(tmp_path, make):
    if make == 'fcrn':
        protos = [fcrn_net(caffe.TRAIN, share) for share in (False, True)]
    else:
        protos = [loss_net(share) for share in (False, True)]
    plain, shared = [load(tmp_path, proto, caffe.TRAIN, '%d.prototxt' % i)
                     for i, proto in enumerate(protos)]
    rng = np.random.RandomState(2)
    randomise(plain, rng)
    copy_params(plain, shared)
    inputs = {'data': rng.randn(*plain.blobs['data'].data.shape) * 50}
    if make == 'loss':
        inputs['label'] = rng.randint(0, 4, plain.blobs['label'].data.shape)
    top_diff = rng.randn(*plain.blobs['prob'].data.shape) if make == 'fcrn' else None
    for net in (plain, shared):
        for _ in range(2):  # the second pass starts from the first one's memory
            for name, value in inputs.items():
                net.blobs[name].data[...] = value
            net.clear_param_diffs()
            outputs = net.forward()
            net.backward(**({'prob': top_diff} if make == 'fcrn' else {}))
    for name in outputs:
        assert np.array_equal(plain.blobs[name].data, shared.blobs[name].data), name
    for name, params in plain.params.items():
        for i, p in enumerate(params):
            assert np.array_equal(p.diff, shared.params[name][i].diff), (name, i)
    if make == 'fcrn':
        assert np.array_equal(plain.blobs['data'].diff, shared.blobs['data'].diff)
    # Data stay apart (Backward reads them); diffs are shared.
    assert check_layout(shared, 'data', alias_splits=True) == \
        check_layout(plain, 'data', alias_splits=True)
    assert check_layout(shared, 'diff', alias_splits=False) < \
        check_layout(plain, 'diff', alias_splits=False)


def run_python(code):
    """Runs `code` in a fresh interpreter: Caffe aborts the process on a refusal."""
    env = dict(os.environ, GLOG_minloglevel='2')
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)


UNDECLARED = """
import caffe


class Double(caffe.Layer):
    \"\"\"A Python layer that says nothing of how it uses its blobs.\"\"\"

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff
"""


def undeclared_net(tmp_path, share):
    """A deploy net with an undeclared Python layer in its middle; `share`:
    None leaves share_memory unset."""
    (tmp_path / 'undeclared_layer.py').write_text(UNDECLARED)
    proto = fcrn_net(caffe.TEST, False)
    proto.ClearField('share_memory')
    if share is not None:
        proto.share_memory = share
    double = proto.layer.add(name='double', type='Python', bottom=['res2a'], top=['res2a'])
    double.python_param.module, double.python_param.layer = 'undeclared_layer', 'Double'
    # Right after res2a's Eltwise: the layers that follow read what it wrote.
    after = next(i for i, l in enumerate(proto.layer) if l.name == 'res2a') + 1
    layers = list(proto.layer)
    layers.insert(after, layers.pop())
    del proto.layer[:]
    proto.layer.extend(layers)
    path = tmp_path / 'undeclared.prototxt'
    path.write_text(str(proto))
    return path


def test_an_undeclared_python_layer_is_refused_when_sharing_is_asked_for(tmp_path):
    path = undeclared_net(tmp_path, True)
    result = run_python('''
        import sys
        sys.path.insert(0, %r)
        from fcrn import caffeio
        caffe = caffeio.caffe()
        caffe.Net(%r, caffe.TEST)
        print('created')
        ''' % (str(tmp_path), str(path)))
    assert result.returncode != 0 and 'created' not in result.stdout
    fatal = [l for l in result.stderr.splitlines() if 'share_memory' in l]
    assert len(fatal) == 1 and "layer 'double' (type Python, undeclared_layer.Double) " \
        "does not declare how it uses its blobs' memory (class attribute blob_use); " \
        "declare it, or set share_memory: false." in fatal[0], result.stderr[-2000:]
    # The project's loader says it before Caffe starts, in one line.
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(caffeio.InputError, match="layer 'double' .*blob_use.*"
                           "--no-share-memory"):
            caffeio.load_net(str(path))
        net = caffeio.load_net(str(path), share_memory=False)
    finally:
        sys.path.remove(str(tmp_path))
    assert not net._shared_blob_field


def test_the_loader_checks_only_the_layers_of_the_phase_it_builds(tmp_path):
    path = undeclared_net(tmp_path, True)
    proto = caffeio.read_net_param(str(path))
    next(l for l in proto.layer if l.name == 'double').include.add(phase=caffe.TRAIN)
    path.write_text(str(proto))
    sys.path.insert(0, str(tmp_path))
    try:
        net = caffeio.load_net(str(path))  # TEST: no Python layer, shared
        with pytest.raises(caffeio.InputError, match="layer 'double' .*blob_use"):
            caffeio.load_net(str(path), phase='train')
    finally:
        sys.path.remove(str(tmp_path))
    assert net._shared_blob_field == 'data' and 'double' not in net._layer_names


def test_the_loader_refuses_a_layer_with_include_and_exclude_rules(tmp_path):
    """Caffe aborts the process on it."""
    proto = fcrn_net(caffe.TEST, True)
    proto.layer[1].include.add(phase=caffe.TEST)
    proto.layer[1].exclude.add(stage='x')
    path = tmp_path / 'both.prototxt'
    path.write_text(str(proto))
    with pytest.raises(caffeio.InputError, match="layer '%s' has both include and exclude "
                       "rules" % proto.layer[1].name):
        caffeio.load_net(str(path))


def test_an_unset_field_shares_when_every_layer_vouches_and_else_runs_unshared(tmp_path):
    sys.path.insert(0, str(tmp_path))
    try:
        undeclared = caffe.Net(str(undeclared_net(tmp_path, None)), caffe.TEST)
    finally:
        sys.path.remove(str(tmp_path))
    proto = fcrn_net(caffe.TEST, False)
    proto.ClearField('share_memory')
    vouched = load(tmp_path, proto, caffe.TEST, 'unset.prototxt')
    plain = load(tmp_path, fcrn_net(caffe.TEST, False), caffe.TEST, 'plain.prototxt')
    assert vouched._shared_blob_field == 'data' and undeclared._shared_blob_field == ''
    for net in (vouched, undeclared, plain):
        net.forward()
    distinct = check_layout(plain, 'data', alias_splits=True)
    assert check_layout(vouched, 'data', alias_splits=True) < distinct / 5
    assert check_layout(undeclared, 'data', alias_splits=True) == distinct


def assert_same_gradients(tmp_path, protos, feeds, rng):
    """Builds each TRAIN net of `protos` ({name: NetParameter}) with the first
    one's random weights, runs forward and backward on `feeds` ({blob:
    array}) and asserts every parameter gradient equal across them. Returns
    the nets."""
    nets, grads = [], []
    for name, proto in protos.items():
        net = load(tmp_path, proto, caffe.TRAIN, name + '.prototxt')
        if nets:
            copy_params(nets[0], net)
        else:
            randomise(net, rng)
        for blob, value in feeds.items():
            net.blobs[blob].data[...] = value
        net.forward()
        net.clear_param_diffs()
        net.backward()
        nets.append(net)
        grads.append({k: [p.diff.copy() for p in v] for k, v in net.params.items()})
    for other in grads[1:]:
        for name in grads[0]:
            for a, b in zip(grads[0][name], other[name]):
                assert np.array_equal(a, b), name
    return nets


def forced_backward(n, share):
    """NetSpec `n`'s NetParameter under force_backward, with `share_memory`
    set to `share` (None: unset)."""
    proto = n.to_proto()
    proto.force_backward = True
    if share is not None:
        proto.share_memory = share
    return proto


def hinge_net(share):
    """HingeLoss keeps its margins in its bottom's diff from Forward to
    Backward; the branch beside it writes diffs in between."""
    n = caffe.NetSpec()
    n.x, n.label, n.target = L.Input(shape=[dict(dim=[4, 6]), dict(dim=[4]),
                                            dict(dim=[4, 5])], ntop=3)
    n.ip1 = L.InnerProduct(n.x, num_output=5)
    n.hinge = L.HingeLoss(n.ip1, n.label)
    n.ip2 = L.InnerProduct(n.x, num_output=5)
    n.ip3 = L.InnerProduct(n.ip2, num_output=5)
    n.l2 = L.EuclideanLoss(n.ip3, n.target)
    return forced_backward(n, share)


def test_a_layer_that_keeps_values_in_a_diff_between_passes_does_not_share(tmp_path):
    """An unset field runs HingeLoss's net unshared, with the gradients of
    share_memory false (they differed when Caffe vouched for HingeLoss)."""
    rng = np.random.RandomState(5)
    feeds = dict(x=rng.randn(4, 6), label=[0, 1, 2, 3], target=rng.randn(4, 5) * 100)
    nets = assert_same_gradients(tmp_path, dict(plain=hinge_net(False), unset=hinge_net(None)),
                                 feeds, rng)
    assert not any(net._shared_blob_field for net in nets)
    path = tmp_path / 'shared.prototxt'
    path.write_text(str(hinge_net(True)))
    result = run_python('''
        from fcrn import caffeio
        caffe = caffeio.caffe()
        caffe.Net(%r, caffe.TRAIN)
        print('created')
        ''' % str(path))
    assert result.returncode != 0 and 'created' not in result.stdout
    assert "layer 'hinge' (type HingeLoss) is not known to use its blobs' memory only " \
        "while it runs; declare it, or set share_memory: false." in result.stderr, \
        result.stderr[-2000:]


def fcn_skip_net(share, h5):
    """An FCN-8s skip (a Crop of a finer score to the upsampled one) and an
    HDF5Output beside the loss, under force_backward: Crop's Backward leaves
    its reference's diff (bottom 1) unwritten, HDF5Output's leaves both."""
    n = caffe.NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[1, 3, 8, 8]), dict(dim=[1, 1, 8, 8])], ntop=2)
    n.pool4 = L.Convolution(n.data, num_output=4, kernel_size=3, pad=1)
    n.score_fr = L.Convolution(n.pool4, num_output=3, kernel_size=2, stride=2)
    n.upscore2 = L.Deconvolution(n.score_fr, convolution_param=dict(
        num_output=3, kernel_size=4, stride=2, pad=1, bias_term=False))
    n.score_pool4 = L.Convolution(n.pool4, num_output=3, kernel_size=1)
    n.score_pool4c = L.Crop(n.score_pool4, n.upscore2, axis=2, offset=0)
    n.fuse = L.Eltwise(n.upscore2, n.score_pool4c)
    n.score = L.Crop(n.fuse, n.data, axis=2, offset=0)
    n.loss = L.SoftmaxWithLoss(n.score, n.label, propagate_down=[True, False])
    n.dumped = L.HDF5Output(n.pool4, n.score_fr, hdf5_output_param=dict(file_name=h5),
                            ntop=0)
    return forced_backward(n, share)


def test_a_bottom_diff_its_layer_leaves_unwritten_stays_out_of_sharing(tmp_path):
    """Shared, the diffs that Crop (its reference) and HDF5Output leave
    unwritten held another blob's values, which the Split before them added
    into the gradient (pool4's and score_fr's twice their value)."""
    rng = np.random.RandomState(2)
    feeds = dict(data=rng.randn(1, 3, 8, 8), label=rng.randint(0, 3, (1, 1, 8, 8)))
    protos = {name: fcn_skip_net(share, str(tmp_path / (name + '.h5')))
              for name, share in (('plain', False), ('shared', True))}
    plain, shared = assert_same_gradients(tmp_path, protos, feeds, rng)
    assert shared._shared_blob_field  # the shared net does share


def test_fcrn_output_reads_a_middle_blob_from_an_unshared_net(tmp_path):
    """fcrn_output -blob NAME saved another blob's numbers for a middle blob
    of a net that shares data (its memory reused later in the pass)."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, 5, 5]))
    top = n.data
    for i, outputs in enumerate((3, 3, 3, 2, 3, 2)):
        top = L.Convolution(top, num_output=outputs, kernel_size=1)
        setattr(n, 'c%d' % (i + 1), top)
    saved = []
    for share in (False, True):
        proto = n.to_proto()
        proto.share_memory = share
        path, out = tmp_path / ('%s.prototxt' % share), tmp_path / ('%s.f32' % share)
        path.write_text(str(proto))
        result = subprocess.run([os.path.join(ROOT, 'build', 'fcrn_output'), '-model', str(path),
                                 '-blob', 'c2', '-save', str(out)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        saved.append(np.fromfile(str(out), np.float32))
    assert saved[0].size == 3 * 5 * 5 and saved[0].any()
    assert np.array_equal(saved[0], saved[1])


def test_pycaffe_refuses_to_read_shared_memory_and_reads_the_rest(tmp_path):
    plain, shared, rng = phase_test_nets(tmp_path, 3)
    image = rng.randn(1, 3, SIZE, SIZE) * 50
    for net in (plain, shared):
        net.blobs['data'].data[...] = image
        net.forward()
    assert isinstance(shared.blobs['res3a'], caffe.pycaffe.SharedBlob)
    with pytest.raises(RuntimeError, match="blob 'res3a': its data is memory that other "
                       "blobs of the net reuse within a pass \\(share_memory\\); build "
                       "the net with share_memory: false to read it"):
        shared.blobs['res3a'].data
    with pytest.raises(RuntimeError, match='share_memory'):
        shared.forward(blobs=['res3a'])
    # Its shape, and the inputs and outputs, are there to read.
    assert tuple(shared.blobs['res3a'].shape) == tuple(plain.blobs['res3a'].shape)
    assert np.array_equal(shared.blobs['data'].data, image.astype(np.float32))
    assert np.array_equal(shared.blobs['prob'].data, plain.blobs['prob'].data)
    assert not any(isinstance(b, caffe.pycaffe.SharedBlob) for b in plain.blobs.values())
    # TRAIN: the data stay, the diffs are shared.
    train = load(tmp_path, fcrn_net(caffe.TRAIN, True), caffe.TRAIN, 'train.prototxt')
    train.forward()
    train.backward()
    assert train.blobs['res3a'].data.shape == plain.blobs['res3a'].data.shape
    with pytest.raises(RuntimeError, match="blob 'res3a': its diff is memory"):
        train.blobs['res3a'].diff


@pytest.mark.parametrize('phase, call, message, before', [
    (caffe.TEST, lambda net: net.forward(start='res3a_branch1'),
     "so forward starts at the first layer; set share_memory: false to start at layer "
     "'res3a_branch1'", True),
    (caffe.TEST, lambda net: net.forward(end='res3a'),
     "blob 'res3a': its data is memory that other blobs", True),
    (caffe.TEST, lambda net: (net.forward(), net.backward()),
     "shares the memory of its data (share_memory in the TEST phase), so backward", False),
    (caffe.TRAIN, lambda net: (net.forward(), net.backward(start='res3a')),
     "so backward starts at the last layer; set share_memory: false to start at layer "
     "'res3a'", False),
])
def test_pycaffe_raises_for_a_pass_over_shared_memory_and_the_net_stays_usable(
        tmp_path, phase, call, message, before):
    """Caffe itself aborts the process there (cpp/test/test_share_memory_net.cpp)."""
    # force_backward (a TRAIN net's) also for the TEST net's backward.
    net = load(tmp_path, fcrn_net(caffe.TRAIN, True), phase, 'net.prototxt')
    plain = load(tmp_path, fcrn_net(caffe.TRAIN, False), phase, 'plain.prototxt')
    copy_params(plain, net)
    image = np.random.RandomState(5).randn(*net.blobs['data'].shape) * 50
    net.blobs['prob'].data[...] = -1
    for n in (net, plain):
        n.blobs['data'].data[...] = image
    with pytest.raises(RuntimeError, match=re.escape(message)):
        call(net)
    assert (net.blobs['prob'].data == -1).all() == before  # refused before the pass
    for n in (net, plain):
        n.forward()
    assert np.array_equal(net.blobs['prob'].data, plain.blobs['prob'].data)


def test_net_blobs_follow_the_sharing_planned_at_each_reshape(tmp_path):
    """An empty blob shares nothing: a net built for batch 0 shares once it
    is reshaped to images, and pycaffe's wrappers must say so."""
    proto = fcrn_net(caffe.TEST, True)
    proto.layer[0].input_param.shape[0].dim[0] = 0
    net = load(tmp_path, proto, caffe.TEST, 'empty.prototxt')
    assert not isinstance(net.blobs['res3a'], caffe.pycaffe.SharedBlob)
    net.blobs['data'].reshape(1, 3, SIZE, SIZE)
    net.reshape()
    assert isinstance(net.blobs['res3a'], caffe.pycaffe.SharedBlob)
    copy.copy(net.blobs['res3a'])  # its own attributes are not the blob's


def test_a_shared_blob_refuses_assignment_of_its_shared_field(tmp_path):
    net = load(tmp_path, fcrn_net(caffe.TEST, True), caffe.TEST, 'net.prototxt')
    blob = net.blobs['res3a']
    with pytest.raises(RuntimeError, match="blob 'res3a': its data is memory"):
        blob.data = np.zeros(blob.shape, np.float32)
    with pytest.raises(RuntimeError, match="blob 'res3a': its data is memory"):
        blob.data
    with pytest.raises(AttributeError):  # as on a plain Blob
        blob.diff = np.zeros(blob.shape, np.float32)


def train_nets(folder, share, list_path):
    """A generated FCRN-50 1/8 net trained as the paper's 1/4 simulation: the
    Python data layer serving each crop for four passes, the shift and
    label-sampling layers, iter_size accumulating the passes; bootstrapped
    loss. Returns the solver file."""
    variant = netgen.Variant(depth=50, kernel=3, dilation=2, simulate=4, crop=41,
                             bootstrap=30, dataset='generic', num_classes=5,
                             train_source=list_path, val_source=list_path,
                             share_memory=share)
    settings = netgen.SolverSettings(base_lr=0.01, iter_size=1, max_iter=3, display=1,
                                     test_iter=4, test_interval=100, solver_mode='CPU',
                                     random_seed=5, snapshot=100,
                                     snapshot_prefix=os.path.join(folder, 'snap'))
    netgen.write(folder, variant, settings)
    for phase in ('train', 'test'):   # batches made in the trainer, as seeded
        path = os.path.join(folder, phase + '.prototxt')
        text = open(path).read().replace('\\"seed\\": 0', '\\"seed\\": 0, \\"workers\\": 0')
        open(path, 'w').write(text)
    return os.path.join(folder, 'solver.prototxt')


def test_training_with_the_python_layers_is_the_same_with_and_without_sharing(tmp_path):
    """Losses of every iteration, the weights after three updates and the TEST
    net's outputs, bit for bit."""
    import fake_datasets
    list_path, _ = fake_datasets.write_coded_list(str(tmp_path / 'data'), 3, size=(45, 45))
    runs = {}
    for share in (False, True):
        solver = caffe.get_solver(train_nets(str(tmp_path / str(share)), share, list_path))
        assert solver.net._shared_blob_field == ('diff' if share else '')
        assert solver.test_nets[0]._shared_blob_field == ('data' if share else '')
        initial = solver.net.params['score'][0].data.copy()
        losses = []
        for _ in range(3):
            solver.step(1)
            losses.append(solver.net.blobs['loss'].data.copy())
        tests = [{k: v.copy() for k, v in solver.test_nets[0].forward().items()}
                 for _ in range(4)]
        weights = {name: [p.data.copy() for p in params]
                   for name, params in solver.net.params.items()}
        runs[share] = losses, tests, weights
    (plain_losses, plain_tests, plain_weights), (losses, tests, weights) = runs[False], runs[True]
    assert all(np.array_equal(a, b) for a, b in zip(plain_losses, losses))
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(plain_tests, tests) for k in a)
    for name, params in plain_weights.items():
        for i, p in enumerate(params):
            assert np.array_equal(p, weights[name][i]), (name, i)
    # The weights moved: the comparison is not between two untrained nets.
    assert not np.array_equal(initial, weights['score'][0])
