"""The nets, data and plan of the GPU kit (`make gpu-kit`, scripts/gpu_check.sh).

A GPU machine has none of pycaffe's dependencies, so everything the kit runs
is stock Caffe plus the project's C++ layers: the generated nets with Input
layers (benchmarks) or an HDF5Data layer (training) in place of the Python
data layer, and labels sampled at the score pixels beforehand instead of by
the Python LabelSampleLayer. `write(kit)` writes them into the kit
folder, with `plan.json` (what gpu_check runs), the training run's losses
on this machine's CPU, which the GPU run must reproduce, and the CPU's
output of FCRN-101 for seeded weights and input (the whole-net check;
cpp/tools/fcrn_output.cpp draws the same weights on every device).
"""
import json
import os
import subprocess

import numpy as np

from fcrn import caffeio, datasets, train
from fcrn.fileio import atomic_write
from fcrn.net import netgen

# The benchmark net of the GPU issue: FCRN-101 at 1/8, k 5, d 12 (Table 1).
BENCH_VARIANT = dict(dataset='voc', depth=101, resolution=8, kernel=5, dilation=12)
GPU_SIZES = (505, 713)
# Shapes of benchmarks/layers.md (N, C, H, W).
LOSS_SHAPES = ((1, 21, 65, 65), (2, 21, 65, 65), (5, 21, 65, 65), (10, 21, 65, 65),
               (1, 19, 128, 256))
LOSS_MIN_KEPT = 512

# The training run: FCRN-50 from random weights with batch statistics and
# bootstrapping (the demo's recipe) on pre-cut synthetic crops. At base_lr
# 0.01 the loss climbed to 17 in 20 iterations here; at 0.001 the mean of each
# ten fell from 2.6 to 0.4 over the 100.
TRAIN_VARIANT = dict(dataset='voc', depth=50, resolution=8, kernel=3, dilation=4,
                     bootstrap=64, threshold=0.7, crop=97, batch_size=2, bn_stats='batch')
TRAIN_CROPS = 32
TRAIN_ITERATIONS = 100
TRAIN_SOLVER = dict(base_lr=0.001, lr_policy='fixed', iter_size=1, display=1,
                    snapshot=0, solver_mode='CPU', random_seed=1)
# How far the GPU run (exact FP32) may stray from the CPU's: the first
# forward pass differs only in summation order; later iterations compound it.
FIRST_LOSS_TOLERANCE = 1e-4
EARLY_LOSS_TOLERANCE = 1e-2
EARLY_ITERATIONS = 10
# ... and the mean loss of its last tenth must be below this part of its first's.
FALL_RATIO = 0.5

# The whole-net check: FCRN-101 (the benchmark variant) for weights and input
# drawn from this seed, its classifier's scores compared with the CPU's. The
# bounds on ||GPU - CPU|| / ||CPU||: exact FP32 differs in summation order
# (and cuDNN's Winograd and FFT algorithms) over ~100 layers; TF32 rounds
# every product's operands to 10 bits of mantissa.
WHOLE_NET_SEED = 1
WHOLE_NET_BLOB = 'score'
WHOLE_NET_BOUNDS = {'fp32': 1e-3, 'tf32': 1e-2}

def _input_layer(name, shape):
    layer = caffeio.caffe_pb2().LayerParameter(name=name, type='Input', top=[name])
    layer.input_param.shape.add().dim.extend(shape)
    return layer


def _replace_layers(proto, replaced, new_first):
    """Drops the layers named in `replaced` and puts `new_first` in front."""
    rest = [layer for layer in proto.layer if layer.name not in replaced]
    del proto.layer[:]
    proto.layer.extend(list(new_first) + rest)
    return proto


def _python_layers(proto):
    return [layer.name for layer in proto.layer if layer.type == 'Python']


def score_shape(variant, size):
    """(height, width) of the score map of `variant` for a size x size input,
    as Caffe computes it."""
    net = caffeio.net_from_param(deploy_net(variant, size))
    return tuple(net.blobs['score'].shape)[2:]  # not an output: its data is shared


def bench_net(variant, size):
    """The train net of `variant` fed by Input layers: an image, and labels
    already sampled at the score pixels (`label_sample`)."""
    proto = netgen.net(variant, 'train')
    height, width = score_shape(variant, size)
    proto = _replace_layers(proto, set(_python_layers(proto)), [
        _input_layer('data', [1, 3, size, size]),
        _input_layer('label_sample', [1, 1, height, width])])
    return proto


def deploy_net(variant, size):
    proto = netgen.net(variant, 'deploy')
    proto.layer[0].input_param.shape[0].dim[2:] = [size, size]
    return proto


def loss_net(layer_type, shape):
    """Input scores and labels into one loss layer, as benchmarks/layers.md."""
    proto = caffeio.caffe_pb2().NetParameter(name='%s %s' % (layer_type, 'x'.join(map(str, shape))))
    proto.layer.extend([_input_layer('score', list(shape)),
                        _input_layer('label', [shape[0], 1] + list(shape[2:]))])
    loss = proto.layer.add(name='loss', type=layer_type, bottom=['score', 'label'],
                           top=['loss'])
    loss.loss_param.ignore_label = datasets.IGNORE_LABEL
    loss.propagate_down.extend([True, False])
    if layer_type == 'BootstrappedSoftmaxWithLoss':
        loss.bootstrap_param.min_kept = LOSS_MIN_KEPT
    return proto


def benchmarks(sizes, full=True):
    """[(name, net builder, fcrn_time options)]: what gpu_check times. Each
    builder returns a NetParameter. Without `full` (the CPU's plumbing run),
    one run of each kind."""
    bench = netgen.Variant(**BENCH_VARIANT)
    caffe_bn = netgen.Variant(**dict(BENCH_VARIANT, batch_norm='caffe'))
    quarter = netgen.Variant(**dict(BENCH_VARIANT, resolution=4))
    settings = [('CUDNN', True), ('CUDNN', False), ('CAFFE', True), ('CAFFE', False)]
    runs = []
    for size in sizes:
        for engine, tf32 in settings if full else settings[:1]:
            runs.append(('r101_s8_lean_%d_fb_%s_%s' % (size, engine.lower(),
                                                      'tf32' if tf32 else 'fp32'),
                         lambda size=size: bench_net(bench, size),
                         dict(engine=engine, tf32=tf32)))
        # The memory-sharing patch (0010) on the best setting, for the
        # comparison with PyTorch.
        runs.append(('r101_s8_lean_%d_fb_cudnn_tf32_shared' % size,
                     lambda size=size: bench_net(bench, size),
                     dict(engine='CUDNN', tf32=True, share_memory=True)))
        runs.append(('r101_s8_lean_%d_fwd_cudnn_tf32_shared' % size,
                     lambda size=size: deploy_net(bench, size),
                     dict(engine='CUDNN', tf32=True, forward_only=True, phase='TEST',
                          share_memory=True)))
        for name, variant in (('lean', bench), ('bnscale', caffe_bn)):
            runs.append(('r101_s8_%s_%d_fwd_cudnn_tf32' % (name, size),
                         lambda size=size, v=variant: deploy_net(v, size),
                         dict(engine='CUDNN', tf32=True, forward_only=True, phase='TEST')))
        runs.append(('r101_s8_bnscale_%d_fb_cudnn_tf32' % size,
                     lambda size=size: bench_net(caffe_bn, size),
                     dict(engine='CUDNN', tf32=True)))
    runs.append(('r101_s4_lean_%d_fb_cudnn_tf32' % sizes[0],
                 lambda: bench_net(quarter, sizes[0]), dict(engine='CUDNN', tf32=True)))
    for shape in LOSS_SHAPES if full else LOSS_SHAPES[:1]:
        for layer_type in ('SoftmaxWithLoss', 'BootstrappedSoftmaxWithLoss'):
            runs.append(('loss_%s_%s' % (layer_type, 'x'.join(map(str, shape))),
                         lambda t=layer_type, shape=shape: loss_net(t, shape),
                         dict(iterations=50)))
    return runs


def train_crops(count, crop, variant, seed=0):
    """`count` synthetic crops (mean-subtracted BGR, N x 3 x crop x crop) and
    their labels sampled at the score pixels' centres (N x 1 x h x w)."""
    from fcrn.demo import synthetic
    rng = np.random.default_rng(seed)
    positions = np.arange(netgen.SCORE_ORIGIN, crop, variant.resolution)
    images, labels = [], []
    for _ in range(count):
        image, label = synthetic.sample(rng, crop, crop)
        images.append((image.astype(np.float32) - np.float32(datasets.MEAN_BGR)).transpose(2, 0, 1))
        labels.append(label[np.ix_(positions, positions)][None].astype(np.float32))
    return np.stack(images), np.stack(labels)


def training_run(kit):
    """train/: the net (HDF5Data in place of the Python layers), its solver and crops."""
    import h5py
    variant = netgen.Variant(**TRAIN_VARIANT)
    folder = os.path.join(kit, 'train')
    os.makedirs(folder, exist_ok=True)
    height, width = score_shape(variant, variant.crop)
    images, labels = train_crops(TRAIN_CROPS, variant.crop, variant)
    if labels.shape[2:] != (height, width):
        raise RuntimeError('sampled labels %s do not match the score map %s'
                           % (labels.shape[2:], (height, width)))
    with h5py.File(os.path.join(folder, 'crops.h5'), 'w') as f:
        f['data'] = images
        f['label_sample'] = labels
    atomic_write(os.path.join(folder, 'crops.txt'), 'train/crops.h5\n')
    data = caffeio.caffe_pb2().LayerParameter(name='data', type='HDF5Data', top=['data', 'label_sample'])
    data.hdf5_data_param.source = 'train/crops.txt'
    data.hdf5_data_param.batch_size = variant.batch_size
    proto = netgen.net(variant, 'train')
    proto = _replace_layers(proto, set(_python_layers(proto)), [data])
    atomic_write(os.path.join(folder, 'train.prototxt'), netgen.net_text(proto))
    settings = netgen.SolverSettings(max_iter=TRAIN_ITERATIONS, **TRAIN_SOLVER)
    solver = netgen.solver(variant, settings, 'train')
    del solver.test_net[:]
    del solver.test_iter[:]
    solver.ClearField('test_interval')
    solver.snapshot_after_train = False
    solver.snapshot_prefix = 'train/snapshot'
    from google.protobuf import text_format
    atomic_write(os.path.join(folder, 'solver.prototxt'), text_format.MessageToString(solver))


def kit_environment(kit):
    """Environment in which the kit's binaries find its libraries and layers."""
    lib = os.path.join(os.path.abspath(kit), 'lib')
    return dict(os.environ, LD_LIBRARY_PATH=lib,
                LD_PRELOAD=os.path.join(lib, 'libfcrn_layers.so'),
                GLOG_minloglevel='0')  # the losses are INFO lines


def record_cpu_losses(kit):
    """Runs the kit's training on this machine's CPU with the kit's own caffe
    and writes reference/cpu_losses.json."""
    result = subprocess.run([os.path.join('bin', 'caffe'), 'train',
                             '-solver', 'train/solver.prototxt'],
                            cwd=kit, env=kit_environment(kit), capture_output=True, text=True)
    found = dict(train.parse_log(result.stderr).train_loss)  # and the forward after the last
    if result.returncode != 0 or any(i not in found for i in range(TRAIN_ITERATIONS)):
        raise RuntimeError('the CPU training run failed (exit %d, %d losses):\n%s'
                           % (result.returncode, len(found), result.stderr[-3000:]))
    os.makedirs(os.path.join(kit, 'reference'), exist_ok=True)
    atomic_write(os.path.join(kit, 'reference', 'cpu_losses.json'), json.dumps({
        'losses': [found[i] for i in range(TRAIN_ITERATIONS)],
        'first_tolerance': FIRST_LOSS_TOLERANCE, 'early_tolerance': EARLY_LOSS_TOLERANCE,
        'early_iterations': EARLY_ITERATIONS, 'fall_ratio': FALL_RATIO}, indent=1) + '\n')


def record_cpu_output(kit, check):
    """Runs the kit's fcrn_output on this machine's CPU for the whole-net
    check `check` (a plan entry) and saves its output as the reference."""
    os.makedirs(os.path.join(kit, 'reference'), exist_ok=True)
    result = subprocess.run([os.path.join('bin', 'fcrn_output'), '-model', check['model'],
                             '-blob', check['blob'], '-seed', str(check['seed']),
                             '-save', check['reference']],
                            cwd=kit, env=kit_environment(kit), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError('the CPU output of %s failed (exit %d):\n%s'
                           % (check['model'], result.returncode, result.stderr[-3000:]))


def write(kit, sizes=GPU_SIZES, cpu_sizes=(97,)):
    """Writes nets/, train/, reference/ and plan.json into the kit folder."""
    os.makedirs(os.path.join(kit, 'nets'), exist_ok=True)
    plan = {'sizes': {'gpu': list(sizes), 'cpu': list(cpu_sizes)}, 'gpu': [], 'cpu': [],
            'whole_net': {}}
    bench = netgen.Variant(**BENCH_VARIANT)
    for mode, mode_sizes in (('gpu', sizes), ('cpu', cpu_sizes)):
        for name, build, options in benchmarks(mode_sizes, full=mode == 'gpu'):
            path = os.path.join('nets', name + '.prototxt')
            if not os.path.exists(os.path.join(kit, path)):
                atomic_write(os.path.join(kit, path), netgen.net_text(build()))
            plan[mode].append(dict(name=name, model=path, **options))
        # The whole-net check at the first size (the CPU's own output in
        # the CPU's plumbing run).
        size = mode_sizes[0]
        check = dict(size=size, model=os.path.join('nets', 'check_r101_s8_%d.prototxt' % size),
                     reference=os.path.join('reference', 'r101_s8_%d_cpu.f32' % size),
                     blob=WHOLE_NET_BLOB, seed=WHOLE_NET_SEED,
                     precisions=['fp32', 'tf32'] if mode == 'gpu' else ['fp32'],
                     bounds=WHOLE_NET_BOUNDS)
        atomic_write(os.path.join(kit, check['model']),
                     netgen.net_text(deploy_net(bench, size)))
        plan['whole_net'][mode] = check
    training_run(kit)
    atomic_write(os.path.join(kit, 'plan.json'), json.dumps(plan, indent=1) + '\n')
    record_cpu_losses(kit)
    for check in plan['whole_net'].values():
        record_cpu_output(kit, check)
