"""The FCRN generator (fcrn/net), scripts/make_net.py and the committed prototxt/."""
import json
import os
import shlex
import tempfile

import pytest
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2
from fcrn import caffeio
from conftest import ROOT
from fcrn.net import netgen, options, resnet, zoo


@pytest.fixture
def make_net(script):
    return script('make_net')


def layers(proto):
    return {layer.name: layer for layer in proto.layer}


def read_net(path):
    proto = caffe_pb2.NetParameter()
    with open(path) as f:
        text_format.Merge(f.read(), proto)
    return proto


# --- field of view and the paper's tables -----------------------------------

def test_every_table_row_reproduces_the_papers_fov(tmp_path, capsys, make_net):
    checked = 0
    for i, entry in enumerate(zoo.entries()):
        if entry.paper_fov is None:
            continue
        assert make_net.main(entry.argv + ['--out', str(tmp_path / str(i))]) == 0
        printed = [line for line in capsys.readouterr().out.splitlines()
                   if line.startswith('FoV: ')]
        assert printed == ['FoV: %d' % entry.paper_fov], entry.argv
        checked += 1
    assert checked == 21 + 23 + 11  # Table 1, Table 2, Table 4 rows sharing no folder


def test_zoo_covers_every_row_of_tables_1_to_4():
    cited = {}
    for entry in zoo.entries():
        for table in entry.tables.split(', '):
            cited[table] = cited.get(table, 0) + 1
    # Table 3: 1/16 tested at 1/16, 1/8, 1/4 and 1/8 tested at 1/8, 1/4.
    # Table 4: VOC 2 x 5 rows, Cityscapes 4 rows.
    assert cited == {'Table 1': 21, 'Table 2': 23, 'Table 3': 5, 'Table 4': 14, 'Sec. 3.2': 1}


def test_the_papers_scores_stand_beside_every_row_and_agree_across_tables():
    """Every row of the paper's Tables 1-4 gives its scores to exactly one
    folder; a folder that several tables cite (Table 1's 101/1/8/5/12 is
    Table 3's 1/8-1/8 and Table 4's F/F) gets the same scores from each,
    which checks the transcription against itself."""
    looked_up = 0
    for entry in zoo.entries():
        scores = zoo.paper_scores(entry)
        assert bool(scores) == (entry.tables != 'Sec. 3.2'), entry.tables
        assert len(set(scores.values())) <= 1, (entry.argv, scores)
        looked_up += len(scores)
    assert looked_up == sum(len(zoo.paper_table(t)) for t in zoo._PAPER) == 21 + 23 + 5 + 14
    assert zoo.paper_table('Table 4')[('voc', '152', '512', 'T')] == (94.46, 85.13, 75.90)


def test_finer_test_resolution_keeps_the_weights_and_the_fov_in_pixels():
    trained = netgen.Variant(depth=101, resolution=16, kernel=5, dilation=6)
    tested = netgen.Variant(depth=101, resolution=16, kernel=5, dilation=6, test_resolution=4)
    coarse, fine = layers(netgen.net(trained, 'deploy')), layers(netgen.net(tested, 'deploy'))
    assert set(coarse) == set(fine)
    conv = lambda net, name: net[name].convolution_param  # noqa: E731
    # the classifier's taps keep their distance in input pixels: stride x dilation
    assert 4 * conv(fine, 'score').dilation[0] == 16 * conv(coarse, 'score').dilation[0]
    assert conv(fine, 'score').pad[0] == conv(fine, 'score').dilation[0] * 2
    # res3 and res4 lose their stride; 3x3 dilations double per removed stride
    for name, stride, dilation in [('res3a_branch2a', 1, None), ('res4a_branch1', 1, None),
                                   ('res3b1_branch2b', None, 2), ('res4b5_branch2b', None, 4),
                                   ('res5c_branch2b', None, 8)]:
        if stride is not None:
            assert conv(fine, name).stride == [] or conv(fine, name).stride[0] == stride
            assert conv(coarse, name).stride[0] == 2
        if dilation is not None:
            assert conv(fine, name).dilation[0] == dilation
            assert conv(fine, name).pad[0] == dilation


# --- the ResNet backbone as released ------------------------------------------

@pytest.mark.parametrize('depth', sorted(resnet.BLOCKS))
def test_imagenet_resnet_has_the_released_depth_and_names(depth):
    net = layers(resnet.imagenet_resnet(depth))
    convs = [name for name, layer in net.items() if layer.type == 'Convolution']
    shortcuts = [name for name in convs if name.endswith('_branch1')]
    # depth counts conv1, three convs per block and fc1000; projections are extra
    assert len(convs) - len(shortcuts) + 1 == depth
    assert shortcuts == ['res2a_branch1', 'res3a_branch1', 'res4a_branch1', 'res5a_branch1']
    for name in convs:
        suffix = '_conv1' if name == 'conv1' else name[3:]
        assert net['bn' + suffix].type == 'BatchNorm'
        assert net['scale' + suffix].type == 'Scale'
    # last blocks of res3 and res4 in the released files, and the next names
    last, beyond = {50: (['res3d', 'res4f_branch2c'], ['res3e', 'res4g']),
                    101: (['res3b3', 'res4b22_branch2c'], ['res3b4', 'res4b23']),
                    152: (['res3b7_branch2a', 'res4b35'], ['res3b8', 'res4b36'])}[depth]
    assert all(name in net for name in last + ['res2c', 'res5c'])
    assert not any(name in net for name in beyond + ['res2d', 'res5d'])
    assert net['conv1'].convolution_param.bias_term == (depth == 50)
    assert [net[n].convolution_param.stride[0] for n in ('res3a_branch1', 'res3a_branch2a')] \
        == [2, 2]
    assert list(net['res3a_branch2b'].convolution_param.stride) == []


def test_imagenet_resnet50_parameter_shapes_are_the_released_ones():
    with tempfile.NamedTemporaryFile('w', suffix='.prototxt') as f:
        f.write(text_format.MessageToString(resnet.imagenet_resnet(50)))
        f.flush()
        net = caffe.Net(f.name, caffe.TEST)
    shapes = {name: [b.data.shape for b in blobs] for name, blobs in net.params.items()}
    assert shapes['conv1'] == [(64, 3, 7, 7), (64,)]
    assert shapes['res2a_branch1'] == [(256, 64, 1, 1)]
    assert shapes['res3a_branch2a'] == [(128, 256, 1, 1)]
    assert shapes['res4c_branch2b'] == [(256, 256, 3, 3)]
    assert shapes['res5c_branch2c'] == [(2048, 512, 1, 1)]
    assert shapes['bn5c_branch2c'] == [(2048,), (2048,), (1,)]
    assert shapes['scale5c_branch2c'] == [(2048,), (2048,)]
    assert shapes['fc1000'] == [(1000, 2048), (1000,)]
    assert net.blobs['prob'].data.shape == (1, 1000)


@pytest.mark.parametrize('batch_norm', resnet.BATCH_NORMS)
def test_fcrn_backbone_is_the_imagenet_net_minus_its_head(batch_norm):
    imagenet = layers(resnet.imagenet_resnet(101, batch_norm=batch_norm))
    fcrn_net = layers(netgen.net(netgen.Variant(depth=101, batch_norm=batch_norm), 'train'))
    head = {'data', 'pool5', 'fc1000', 'prob'}
    added = {'data', 'score', 'label_sample', 'loss'}
    assert set(imagenet) - head == set(fcrn_net) - added
    for name in set(imagenet) - head:
        mine, released = fcrn_net[name], imagenet[name]
        assert mine.type == released.type
        if mine.type == 'Convolution':  # same parameter shapes: channels and kernel
            for field in ('num_output', 'kernel_size', 'bias_term'):
                assert getattr(mine.convolution_param, field) == \
                    getattr(released.convolution_param, field), name


# --- variants ----------------------------------------------------------------

def test_bootstrap_dropout_and_simulation_appear_in_the_nets_and_solver():
    v = netgen.Variant(depth=50, bootstrap=256, threshold=0.7, dropout=True, simulate=4)
    train, test, deploy = (layers(netgen.net(v, phase)) for phase in netgen.PHASES)
    loss = train['loss']
    assert loss.type == 'BootstrappedSoftmaxWithLoss'
    assert (loss.bootstrap_param.min_kept, round(loss.bootstrap_param.threshold, 6)) == (256, 0.7)
    assert loss.loss_param.ignore_label == 255
    assert 'accuracy' in test and 'accuracy' not in train
    assert [n for n in train if n.endswith('_drop')] == ['res5a_drop', 'res5b_drop', 'res5c_drop']
    assert not [n for n in deploy if n.endswith('_drop')]
    # the shift sits before res3 (the last stride-2 stage of a 1/8 net) and
    # feeds both of res3a's branches; the pass index comes from the data layer
    assert list(train['res3_shift'].bottom) == ['res2c', 'pass']
    assert train['res3a_branch1'].bottom == train['res3a_branch2a'].bottom == ['res3_shift']
    assert list(train['data'].top) == ['data', 'label', 'pass']
    assert deploy['pass'].type == 'Input'
    sample = train['label_sample']
    assert list(sample.bottom) == ['label', 'score', 'pass']
    assert '"phase_step": 4' in sample.python_param.param_str
    solver = netgen.solver(v, netgen.SolverSettings(iter_size=3), 'nets')
    assert solver.iter_size == 12  # 3 images x 4 passes per update
    assert solver.test_iter == [4 * 1449]
    assert solver.train_net == 'nets/train.prototxt'
    # --test-iter counts images too: every pass of each, a test starting at pass 0
    assert netgen.solver(v, netgen.SolverSettings(test_iter=5), 'nets').test_iter == [20]


def test_plain_variant_uses_softmax_and_two_data_tops():
    train = layers(netgen.net(netgen.Variant(dataset='cityscapes'), 'train'))
    assert train['loss'].type == 'SoftmaxWithLoss'
    assert list(train['data'].top) == ['data', 'label']
    assert train['score'].convolution_param.num_output == 19
    assert not [n for n in train if 'shift' in n or n.endswith('_drop')]


def test_caffe_batch_norm_emits_batchnorm_and_scale_with_the_released_names():
    train = layers(netgen.net(netgen.Variant(batch_norm='caffe'), 'train'))
    assert train['bn2a_branch1'].type == 'BatchNorm'
    assert train['scale2a_branch1'].type == 'Scale'
    lean = layers(netgen.net(netgen.Variant(), 'train'))
    assert lean['bn2a_branch1'].type == 'LeanBatchNorm'
    assert not [n for n in lean if n.startswith('scale')]


# --- command line: bad input -------------------------------------------------

@pytest.mark.parametrize('options, message', [
    (['--depth', '34'], "invalid choice: 34 (choose from 50, 101, 152)"),
    (['--resolution', '1/3'], 'resolution must be one of 1/16, 1/8, 1/4'),
    (['--resolution', 'eighth'], 'resolution must be one of 1/16, 1/8, 1/4'),
    (['--kernel', '0'], 'argument --kernel: must be >= 1, not 0'),
    (['--kernel', '4'], 'kernel must be a positive odd integer'),
    (['--dilation', '0'], 'argument --dilation: must be >= 1, not 0'),
    (['--dilation', '-2'], 'argument --dilation: must be >= 1, not -2'),
    (['--crop', '100000000'], 'argument --crop: must be in [1, 2048], not 100000000'),
    (['--crop', '2'], "crop must be at least 3 (the first score cell's label is input pixel 2)"),
    (['--simulate-resolution', '1/4', '--crop', '6'],
     "crop must be at least 7 (the first score cell's label is input pixel 6)"),
    (['--momentum', '1'], 'argument --momentum: must be in [0, 1), not 1'),
    (['--base-lr', 'nan'], 'argument --base-lr: must be > 0, not nan'),
    (['--seed', '-1'], 'argument --seed: must be >= 0, not -1'),
    (['--resolution', '1/16', '--simulate-resolution', '1/4'],
     'with resolution 1/16 it can only be 1/8, not 1/4'),
    (['--resolution', '1/4', '--simulate-resolution', '1/2'],
     'resolution must be one of 1/16, 1/8, 1/4'),
    (['--resolution', '1/8', '--test-resolution', '1/16'], 'no coarser than the training 1/8'),
    (['--threshold', '0.5'], 'threshold needs bootstrapping'),
    (['--dropout-ratio', '0.5'], 'dropout blocks and ratio need dropout'),
    (['--dropout-blocks', '2'], 'dropout blocks and ratio need dropout'),
    (['--dropout', '--dropout-ratio', '1.5'],
     'argument --dropout-ratio: must be in (0, 1), not 1.5'),
    (['--batch-norm', 'sync'], "invalid choice: 'sync' (choose from 'lean', 'caffe')"),
    (['--train-scale', '2', '1'], 'scale must be (min, max) with 0 < min <= max, not (2.0, 1.0)'),
    (['--train-scale', 'big', '1'], "argument --train-scale: 'big' is not a number"),
    (['--train-scale', '0', '1'], 'argument --train-scale: must be > 0, not 0'),
    (['--scale', 'big'], "'big' is not MIN,MAX"),
])
def test_bad_options_are_argparse_errors_naming_the_allowed_values(options, message, tmp_path,
                                                                    capsys, make_net):
    with pytest.raises(SystemExit) as exit_info:
        make_net.main(options + ['--out', str(tmp_path / 'net')])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'net').exists()


def test_fov_larger_than_the_crop_warns_naming_both(tmp_path, caplog, make_net):
    make_net.main(['--kernel', '7', '--dilation', '12', '--crop', '321',
                   '--out', str(tmp_path / 'net')])
    assert 'FoV 584 is larger than the crop 321' in caplog.text


def test_existing_folder_is_kept_without_force(tmp_path, caplog, make_net):
    out = tmp_path / 'net'
    assert make_net.main(['--depth', '50', '--out', str(out)]) == 0
    before = (out / 'train.prototxt').read_text()
    assert make_net.main(['--depth', '101', '--out', str(out)]) == 2
    assert 'use --force' in caplog.text
    assert (out / 'train.prototxt').read_text() == before
    make_net.main(['--depth', '101', '--out', str(out), '--force'])
    assert (out / 'train.prototxt').read_text() != before
    assert sorted(os.listdir(out)) == ['deploy.prototxt', 'solver.prototxt', 'test.prototxt',
                                       'train.prototxt']


def test_to_argv_round_trips_through_the_parser():
    v = netgen.Variant(dataset='cityscapes', depth=152, resolution=16, kernel=3, dilation=6,
                       bootstrap=512, dropout=True, test_resolution=8, batch_norm='caffe',
                       scale=(0.75, 1.25))
    s = netgen.SolverSettings(base_lr=1e-3, iter_size=2, solver_mode='CPU', solver_type='Adam')
    _, v2, s2 = options.parse(options.to_argv(v, s) + ['--out', 'x'])
    assert (v2, s2) == (v, s)
    mine = netgen.Variant(dataset='generic', num_classes=3, train_source='t.txt',
                          val_source='v.txt')
    s = netgen.SolverSettings(test_iter=7, solver_mode='GPU')
    argv = options.to_argv(mine, s)
    assert argv[:4] == ['--dataset', 'generic', '--num-classes', '3']
    _, v2, s2 = options.parse(argv + ['--out', 'x'])
    assert (v2, s2) == (mine, s)


def test_the_earlier_scale_option_still_reads():
    assert options.parse(['--scale', '0.75,1.25', '--out', 'x'])[1].scale == (0.75, 1.25)
    assert options.parse(['--train-scale', '0.75', '1.25', '--out', 'x'])[1].scale == (0.75, 1.25)


def test_solver_type_reaches_caffe(tmp_path):
    """Adam is written as Caffe's solver type and Caffe builds an Adam
    solver from it; SGD, Caffe's default, names no type (the committed
    solvers stay as they are)."""
    v = netgen.Variant(depth=50, crop=65, bn_stats='batch', train_source='t.txt',
                       val_source='v.txt')
    assert not netgen.solver(v, netgen.SolverSettings(), 'n').HasField('type')
    adam = netgen.solver(v, netgen.SolverSettings(solver_type='Adam', momentum=0.8), 'n')
    assert (adam.type, round(adam.momentum, 6), round(adam.momentum2, 6)) == ('Adam', 0.8, 0.999)
    # A solver around a one-layer net: the type alone decides the class.
    (tmp_path / 'net.prototxt').write_text(
        'layer { name: "x" type: "DummyData" top: "x" dummy_data_param { shape { dim: 1 } } }')
    adam.ClearField('test_net')
    adam.ClearField('test_iter')
    adam.ClearField('train_net')
    adam.net = str(tmp_path / 'net.prototxt')
    adam.snapshot_prefix = str(tmp_path / 'snap')
    path = tmp_path / 'solver.prototxt'
    path.write_text(str(adam))
    assert type(caffeio.caffe().get_solver(str(path))).__name__ == 'AdamSolver'


def test_scale_range_reaches_the_train_data_layer_only():
    def data_params(variant, phase):
        layer = netgen.net(variant, phase).layer[0]
        return json.loads(layer.python_param.param_str)
    v = netgen.Variant(depth=50, scale=(0.75, 1.25))
    assert data_params(v, 'train')['scale'] == [0.75, 1.25]
    assert 'scale' not in data_params(v, 'test')
    # Left unset, the data layer's own default applies (and committed files stay as they are).
    assert 'scale' not in data_params(netgen.Variant(depth=50), 'train')


# --- the committed prototxt/ ---------------------------------------------------

def tree(root):
    files = {}
    for folder, _, names in os.walk(os.path.join(root, 'prototxt')):
        for name in names:
            path = os.path.join(folder, name)
            with open(path) as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def test_regeneration_reproduces_the_committed_prototxt(tmp_path):
    zoo.regenerate(str(tmp_path))
    generated, committed = tree(str(tmp_path)), tree(ROOT)
    assert sorted(generated) == sorted(committed)
    differing = [path for path in generated if generated[path] != committed[path]]
    assert differing == [], 'run scripts/regen_prototxt.py'


def test_each_files_header_names_the_command_that_made_it(tmp_path, monkeypatch, make_net):
    """The header of every committed file parses to its own row of the zoo
    (the file contents are compared once, by the regeneration test above);
    one header is also run through make_net.py, which must reproduce its files."""
    committed = tree(ROOT)
    prefix = '# Generated by: scripts/make_net.py '
    headers = {}
    for entry in zoo.entries():
        folder = zoo.folder(entry)
        for name in ('train', 'test', 'deploy', 'solver'):
            header = committed[os.path.join(folder, name + '.prototxt')].splitlines()[1]
            assert header.startswith(prefix)
            headers.setdefault(folder, set()).add(header)
        assert len(headers[folder]) == 1, folder
        argv = shlex.split(headers[folder].pop()[len(prefix):])
        args, variant, settings = options.parse(argv)
        assert (args.out, variant, settings) == (folder, zoo.variant(entry),
                                                 zoo.SETTINGS), folder
    assert len(headers) == len(zoo.entries()) == 60
    monkeypatch.chdir(tmp_path)
    folder = zoo.folder(zoo.entries()[-1])
    header = committed[os.path.join(folder, 'train.prototxt')].splitlines()[1]
    assert make_net.main(shlex.split(header[len(prefix):])) == 0
    for name in ('train', 'test', 'deploy', 'solver'):
        path = os.path.join(folder, name + '.prototxt')
        with open(path) as f:
            assert f.read() == committed[path], path


def with_inputs(proto, size):
    """The net with its Python data layer replaced by Input layers of one
    size-by-size image (the data layer has its own tests) and deploy inputs resized."""
    if proto.layer[0].type == 'Python':
        return netgen.with_input_layers(proto, size)
    proto.layer[0].input_param.shape[0].dim[2:] = [size, size]
    return proto


def score_size(size, stride):
    """Caffe's output-size arithmetic: conv1 (7, 2, pad 3), pool1 (3, 2, rounding
    up), then one 1x1 stride-2 conv per stage kept at stride 8, 16."""
    h = (size + 2 * 3 - 7) // 2 + 1
    h = -(-(h - 3) // 2) + 1
    for _ in range({4: 0, 8: 1, 16: 2}[stride]):
        h = (h - 1) // 2 + 1
    return h


def test_every_committed_net_loads_in_pycaffe_with_its_output_stride():
    size = 97  # odd and no multiple of any stride
    loaded = 0
    for entry in zoo.entries():
        variant = zoo.variant(entry)
        for phase in netgen.PHASES:
            path = os.path.join(ROOT, zoo.folder(entry), phase + '.prototxt')
            proto = with_inputs(read_net(path), size)
            proto.state.phase = caffe.TRAIN if phase == 'train' else caffe.TEST
            with tempfile.NamedTemporaryFile('w', suffix='.prototxt') as f:
                f.write(text_format.MessageToString(proto))
                f.flush()
                net = caffe.Net(f.name, caffe.TRAIN if phase == 'train' else caffe.TEST)
            stride = variant.deploy_resolution if phase == 'deploy' else variant.resolution
            if variant.simulate:  # one pass of the simulated net has the coarse stride
                stride = variant.resolution
            side = score_size(size, stride)
            assert tuple(net.blobs['score'].shape) == (1, variant.classes, side, side), path
            if phase == 'deploy':
                assert net.outputs == ['prob']
            else:
                assert tuple(net.blobs['label_sample'].shape) == (1, 1, side, side)
                assert 'loss' in net.outputs
            loaded += 1
            del net
    assert loaded == 3 * len(zoo.entries())


@pytest.mark.parametrize('bootstrap', [None, 64])
def test_simulated_train_net_learns_from_all_four_passes(bootstrap, randomise):
    """A generated train net (data layer replaced by Inputs) runs forward and
    backward on every pass, with labels sampled on the pass's phase."""
    import numpy as np
    variant = netgen.Variant(depth=50, resolution=8, simulate=4, bootstrap=bootstrap,
                             dataset='cityscapes', kernel=3, dilation=2)
    proto = with_inputs(netgen.net(variant, 'train'), 65)
    with tempfile.NamedTemporaryFile('w', suffix='.prototxt') as f:
        f.write(text_format.MessageToString(proto))
        f.flush()
        net = caffe.Net(f.name, caffe.TRAIN)
    randomise(net, seed=5)
    rng = np.random.RandomState(6)
    net.blobs['data'].data[...] = rng.randn(1, 3, 65, 65) * 50
    label = rng.randint(0, variant.classes, (1, 1, 65, 65))
    net.blobs['label'].data[...] = label
    gradients = []
    for index in range(4):
        net.blobs['pass'].data[...] = index
        net.forward()
        dy, dx = divmod(index, 2)
        # score pixel (i, j) of pass (dy, dx) sees input 2 + 4 (dy, dx) + 8 (i, j)
        sampled = net.blobs['label_sample'].data[0, 0]
        np.testing.assert_array_equal(sampled, label[0, 0, 2 + 4 * dy::8, 2 + 4 * dx::8][
            :sampled.shape[0], :sampled.shape[1]])
        assert np.isfinite(net.blobs['loss'].data).all() and net.blobs['loss'].data > 0
        net.backward()
        gradients.append(net.params['res2a_branch2a'][0].diff.copy())
    assert all(np.abs(g).max() > 0 for g in gradients)
    assert not np.allclose(gradients[0], gradients[3])  # each pass sees another phase
