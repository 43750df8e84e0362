"""The original ResNet of He et al. (2016) as NetSpec builders (fcrn.net.spec).

Layer names and parameter shapes follow the released ImageNet models
(ResNet-50/101/152-deploy.prototxt), so that their weights transfer by name:
`res4b22_branch2b` is followed in place by `bn4b22_branch2b` and
`scale4b22_branch2b`, and so on. The same backbone serves the ImageNet
classifier (used to test weight conversion) and every FCRN variant, whose
output stride is lowered by removing the stride of late stages and dilating
their 3x3 convolutions instead (a trous), as in DeepLab.
"""
from .spec import NetSpec, layers as L, params as P

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STAGES = (2, 3, 4, 5)
# Output stride of each stage of the ImageNet network (conv1 + pool1 give 4).
STAGE_STRIDE = {2: 4, 3: 8, 4: 16, 5: 32}
BATCH_NORMS = ('lean', 'caffe')
# Where normalisation statistics come from. 'frozen': the paper's setting
# (global statistics, frozen gamma/beta, weights from an ImageNet model).
# 'batch': training from random weights; the train net normalises with batch
# statistics (which keeps a 50-layer net trainable without pretrained
# weights), learns gamma/beta and accumulates the moving averages that the
# test and deploy nets then use as global statistics.
BN_STATS = ('frozen', 'batch')

# With 'frozen' statistics, statistics and affine parameters of every
# normalisation layer stay frozen: the paper fixes means and variances
# (Sec. 3.2), and with one image per mini-batch there is nothing to learn
# them from.
FROZEN = dict(lr_mult=0, decay_mult=0)
WEIGHT = dict(lr_mult=1, decay_mult=1)
BIAS = dict(lr_mult=2, decay_mult=0)
# Learnt gamma/beta of batch-statistics normalisation: no weight decay, as is
# usual for normalisation parameters.
AFFINE = dict(lr_mult=1, decay_mult=0)
# He et al.'s initialisation, for convolutions followed by ReLUs, when there
# are no pretrained weights to load.
MSRA = dict(type='msra')


def block_suffixes(depth, stage):
    """Suffixes of the blocks of one stage as the released models name them.

    ResNet-50 uses letters everywhere (res4a..res4f); ResNet-101/152 use
    `a, b1, b2, ...` in stages 3 and 4 (res4b22, res3b7) and letters elsewhere.
    """
    count = BLOCKS[depth][STAGES.index(stage)]
    if depth > 50 and stage in (3, 4):
        return ['a'] + ['b%d' % i for i in range(1, count)]
    return [chr(ord('a') + i) for i in range(count)]


def block_names(depth):
    """Every residual block name, bottom to top: res2a, res2b, ..., res5c."""
    return ['res%d%s' % (stage, suffix)
            for stage in STAGES for suffix in block_suffixes(depth, stage)]


def stage_geometry(stride):
    """(stride, dilation) of each stage's first block for a given output stride.

    A stage keeps its downsampling while its ImageNet stride does not exceed
    the target; after that its 3x3 convolutions are dilated by how much finer
    the map is than in the ImageNet net, which leaves the weights' meaning
    unchanged.
    """
    geometry = {}
    for stage in STAGES:
        imagenet = STAGE_STRIDE[stage]
        geometry[stage] = (2 if stage > 2 and imagenet <= stride else 1,
                           imagenet // min(imagenet, stride))
    return geometry


def normalise(n, top, suffix, batch_norm, bn_stats='frozen', train=False,
              bn_fraction=None, gamma=1):
    """In-place normalisation named after its conv: bn{suffix} (+ scale{suffix}).

    'lean' is the project's one-layer LeanBatchNorm, carrying BatchNorm's
    blobs 0-2 and Scale's blobs 0-1 under the BatchNorm name; 'caffe' is the
    released BatchNorm + Scale pair. With bn_stats 'batch', the train net
    (`train`) normalises with batch statistics, gamma/beta learn (from `gamma`
    and 0) in every net, and `bn_fraction` is Caffe's moving_average_fraction
    (None: Caffe's default, 0.999).
    """
    if bn_stats not in BN_STATS:
        raise ValueError('bn_stats must be one of %s, not %r' % (BN_STATS, bn_stats))
    if batch_norm not in BATCH_NORMS:
        raise ValueError('batch_norm must be one of %s, not %r' % (BATCH_NORMS, batch_norm))
    batch = bn_stats == 'batch'
    bn_param = dict(use_global_stats=not (batch and train))
    if batch and bn_fraction is not None:
        bn_param['moving_average_fraction'] = bn_fraction
    affine = [AFFINE if batch else FROZEN] * 2
    # Explicit fillers only where they matter (learning from scratch), so
    # that the frozen nets' files stay as they were.
    scale = dict(filler=dict(type='constant', value=gamma),
                 bias_filler=dict(type='constant', value=0)) if batch else {}
    if batch_norm == 'lean':
        kwargs = dict(scale_param=scale) if scale else {}
        n['bn' + suffix] = L.LeanBatchNorm(
            top, in_place=True, batch_norm_param=bn_param, param=[FROZEN] * 3 + affine,
            **kwargs)
    else:
        n['bn' + suffix] = L.BatchNorm(
            top, in_place=True, batch_norm_param=bn_param, param=[FROZEN] * 3)
        n['scale' + suffix] = L.Scale(top, in_place=True, bias_term=True, param=affine,
                                      **scale)
    return top


def conv_bn(n, bottom, name, suffix, nout, ks, stride=1, dilation=1, relu=True,
            bias=False, batch_norm='lean', norm=None, gamma=1):
    """Convolution `name`, its normalisation, and optionally `{name}_relu`.

    `norm`: keyword arguments of normalise() beyond batch_norm (bn_stats,
    train, bn_fraction). With frozen statistics, backbone convolutions carry
    no filler: their weights come from a pretrained model, and a constant
    (zero) fill keeps building big nets cheap. Trained from scratch (batch
    statistics) they are MSRA-initialised and their normalisation's gamma
    starts at `gamma`.
    """
    norm = norm or {}
    kwargs = dict(num_output=nout, kernel_size=ks, bias_term=bias)
    if norm.get('bn_stats', 'frozen') == 'batch':
        kwargs['weight_filler'] = MSRA
    # Only what differs from Caffe's defaults, to keep 152-layer files short.
    for key, value, default in (('stride', stride, 1), ('dilation', dilation, 1),
                                ('pad', dilation * (ks - 1) // 2, 0)):
        if value != default:
            kwargs[key] = value
    if bias:
        kwargs['param'] = [WEIGHT, BIAS]
    n[name] = top = L.Convolution(bottom, **kwargs)
    normalise(n, top, suffix, batch_norm, gamma=gamma, **norm)
    if relu:
        n[name + '_relu'] = L.ReLU(top, in_place=True)
    return top


def bottleneck(n, bottom, block, nout, stride, dilation, first, batch_norm, norm=None):
    """One bottleneck block `res{block}`: 1x1 -> 3x3 -> 1x1 (x4) plus shortcut.

    As in the original ResNet, the stride sits on the 1x1 convolutions.
    Trained from scratch, the residual branch's last gamma starts at 0
    (Goyal et al. 2017): every block starts as the identity, instead of
    adding one more unit-variance branch to the sum (16 in ResNet-50).
    Measured on the demo: with gamma 1 the bootstrapped loss climbed from 4
    to 9 in 30 iterations; with 0 it falls from the start.
    """
    if first:
        shortcut = conv_bn(n, bottom, 'res%s_branch1' % block, '%s_branch1' % block,
                           4 * nout, 1, stride, relu=False, batch_norm=batch_norm, norm=norm)
    else:
        shortcut = bottom
    top = conv_bn(n, bottom, 'res%s_branch2a' % block, '%s_branch2a' % block,
                  nout, 1, stride, batch_norm=batch_norm, norm=norm)
    top = conv_bn(n, top, 'res%s_branch2b' % block, '%s_branch2b' % block,
                  nout, 3, 1, dilation, batch_norm=batch_norm, norm=norm)
    top = conv_bn(n, top, 'res%s_branch2c' % block, '%s_branch2c' % block,
                  4 * nout, 1, relu=False, batch_norm=batch_norm, norm=norm, gamma=0)
    n['res' + block] = top = L.Eltwise(shortcut, top)
    n['res%s_relu' % block] = L.ReLU(top, in_place=True)
    return top


def backbone(n, data, depth, stride=32, batch_norm='lean', before_stage=None,
             after_block=None, norm=None):
    """conv1 .. res5 of ResNet-`depth` with output stride `stride`; returns res5's top.

    Hooks, when given, may replace a top: `before_stage(stage, top)` the one
    entering a stage (the multi-pass shift), `after_block(block, top)` a
    block's output (dropout). `norm`: see conv_bn().
    """
    if depth not in BLOCKS:
        raise ValueError('depth must be one of %s, not %r' % (sorted(BLOCKS), depth))
    top = conv_bn(n, data, 'conv1', '_conv1', 64, 7, 2, bias=depth == 50,
                  batch_norm=batch_norm, norm=norm)
    n.pool1 = top = L.Pooling(top, kernel_size=3, stride=2, pool=P.Pooling.MAX)
    for stage, (first_stride, dilation) in sorted(stage_geometry(stride).items()):
        if before_stage is not None:
            top = before_stage(stage, top)
        width = 64 * 2 ** (stage - 2)
        for i, suffix in enumerate(block_suffixes(depth, stage)):
            top = bottleneck(n, top, '%d%s' % (stage, suffix), width,
                             first_stride if i == 0 else 1, dilation, i == 0, batch_norm,
                             norm)
            if after_block is not None:
                top = after_block('res%d%s' % (stage, suffix), top)
    return top


def imagenet_resnet(depth, batch_norm='caffe', size=224):
    """The ImageNet classifier as released (deploy form): data -> ... -> prob."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, size, size]))
    top = backbone(n, n.data, depth, 32, batch_norm)
    n.pool5 = L.Pooling(top, kernel_size=7, stride=1, pool=P.Pooling.AVE)
    n.fc1000 = L.InnerProduct(n.pool5, num_output=1000)
    n.prob = L.Softmax(n.fc1000)
    return n.to_proto()
