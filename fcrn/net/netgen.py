"""FCRN variants (Wu, Shen, van den Hengel 2016, Sec. 3) as Caffe prototxt.

One `Variant` describes a row of the paper's tables; `net(variant, phase)`
builds its train, test or deploy net from the same function, `solver()` its
solver, and `write()` puts all four files in a folder. The layout follows
FCN's net.py: small builder functions over a NetSpec (fcrn.net.spec, Caffe's
on its protobuf module alone: generation needs no pycaffe), names built
programmatically, variants as parameters rather than copied files.

The FCRN is the original ResNet without pool5/fc1000/prob, with a classifier
convolution of kernel k and dilation d on res5. Output stride s is 16, 8 or 4:
late stages lose their stride and dilate instead (resnet.stage_geometry).
Field of view: FoV = s*(k-1)*d + s.

Multi-pass shifted resolution (Sec. 3.2): with `simulate`, the net has stride
s but a `res{p}_shift` layer crops one row/column of the map entering the last
stride-2 stage on passes 1-3, so that four passes compute the four phases of
the stride-s/2 output (layers/fcrn_shift.py). Labels are sampled at the
position each score pixel sees, on the matching phase, so the loss compares
like with like; the solver's iter_size accumulates the four passes.
"""
import dataclasses
import json
import logging
import os
from typing import Optional


from google.protobuf import text_format

from . import resnet
from .spec import NetSpec, layers as L
from .. import caffeio, datasets, fileio, lists
from ..data import sources as data_sources
from ..errors import InputError

log = logging.getLogger(__name__)

# Per dataset, the registry (fcrn/datasets) gives the classes, the validation
# images (one test iteration each), the default training crop (VOC images are
# at most 500 px; Cityscapes' 584 px FoV needs a crop at least that large) and
# the lists that scripts/prepare_voc.py and prepare_cityscapes.py write (run
# with --out data/voc_aug, data/cityscapes_fcrn).
RESOLUTIONS = (16, 8, 4)
PHASES = ('train', 'test', 'deploy')
# The largest training crop: Cityscapes' full width. Beyond it the widest
# blobs of a 1/4-resolution net approach Caffe's limit of 2^31 elements.
MAX_CROP = 2048
# Caffe counts a blob's elements in an int.
MAX_BLOB = 2 ** 31 - 1
# The input pixel that score pixel (0, 0) is centred on: conv1 (7x7, stride 2,
# pad 3) centres output i on input 2i, pool1 (3x3, stride 2, no pad) output j
# on conv1 2j+1, hence input 4j+2; later 1x1 stride-2 convs keep the origin.
SCORE_ORIGIN = 2
# Dropout (Sec. 4.5) on the outputs of the top-most residual blocks. The paper
# gives neither the blocks nor the ratio; these are the project's choice: the
# three res5 blocks, ratio 0.3.
DROPOUT_BLOCKS = 3
DROPOUT_RATIO = 0.3


def parse_resolution(text):
    """'1/8' -> 8. Raises ValueError naming the allowed values."""
    allowed = ', '.join('1/%d' % s for s in RESOLUTIONS)
    num, sep, den = str(text).partition('/')
    if sep != '/' or num.strip() != '1' or not den.strip().isdigit() \
            or int(den) not in RESOLUTIONS:
        raise ValueError('resolution must be one of %s, not %r' % (allowed, text))
    return int(den)


def field_of_view(stride, kernel, dilation):
    """FoV = s*(k-1)*d + s, the paper's FoV column (Tables 1 and 2)."""
    return stride * (kernel - 1) * dilation + stride


@dataclasses.dataclass
class Variant:
    """One FCRN configuration. Strides are denominators: resolution 8 is 1/8."""
    dataset: str = 'voc'               # a registry dataset, or 'generic' (one's own)
    num_classes: Optional[int] = None  # generic: the number of classes
    depth: int = 101
    resolution: int = 8
    kernel: int = 5
    dilation: int = 12
    bootstrap: Optional[int] = None     # min_kept of BootstrappedSoftmaxWithLoss
    threshold: float = 0.0
    dropout: bool = False
    dropout_blocks: int = DROPOUT_BLOCKS
    dropout_ratio: float = DROPOUT_RATIO
    simulate: Optional[int] = None      # resolution simulated by four shifted passes
    test_resolution: Optional[int] = None
    crop: Optional[int] = None          # None: the dataset's default
    scale: Optional[tuple] = None       # (min, max) random resize; None: the data layer's
    batch_size: int = 1
    batch_norm: str = 'lean'
    bn_stats: str = 'frozen'            # resnet.BN_STATS; 'batch' to train from scratch
    bn_fraction: Optional[float] = None  # moving_average_fraction with 'batch'
    train_source: Optional[str] = None  # None: the registry's list (generic: required)
    val_source: Optional[str] = None    # None: the registry's list (generic: required)
    seed: int = 0
    share_memory: bool = True           # NetParameter.share_memory (Caffe patch 0010)

    @property
    def data(self):
        """The dataset's registry entry (generic: `num_classes` unnamed classes)."""
        if self.dataset == datasets.GENERIC:
            return datasets.generic(self.num_classes)
        return datasets.get(self.dataset)

    @property
    def classes(self):
        return self.data.num_classes

    @property
    def train_crop(self):
        return self.crop or self.data.crop

    @property
    def passes(self):
        return 4 if self.simulate else 1

    @property
    def fov(self):
        return field_of_view(self.resolution, self.kernel, self.dilation)

    @property
    def deploy_resolution(self):
        return self.simulate or self.test_resolution or self.resolution

    @property
    def tag(self):
        """Folder-style name: r101_s8_k5_d12[_bs512][_do][_sim4][_test4][_bnbatch]."""
        parts = ['r%d' % self.depth, 's%d' % self.resolution,
                 'k%d' % self.kernel, 'd%d' % self.dilation]
        if self.bootstrap:
            parts.append('bs%d' % self.bootstrap)
            if self.threshold:
                parts.append('t%g' % self.threshold)
        if self.dropout:
            parts.append('do')
        if self.simulate:
            parts.append('sim%d' % self.simulate)
        if self.test_resolution and self.test_resolution != self.resolution:
            parts.append('test%d' % self.test_resolution)
        if self.bn_stats != 'frozen':
            parts.append('bn' + self.bn_stats)
        return '_'.join(parts)

    def validate(self):
        """Raise ValueError on a variant the paper's scheme cannot express;
        return a list of warnings for legal but doubtful ones."""
        def check(ok, message):
            if not ok:
                raise ValueError(message)
        check(self.dataset in datasets.choices(), 'dataset must be one of %s, not %r'
              % (', '.join(datasets.choices()), self.dataset))
        if self.dataset == datasets.GENERIC:
            check(self.num_classes is not None and 2 <= self.num_classes <= 255,
                  'dataset generic needs num-classes in 2..255 (or --classes FILE), not %r'
                  % self.num_classes)
            check(self.train_source and self.val_source,
                  'dataset generic needs train-source and val-source (the lists '
                  'scripts/prepare_folder.py writes)')
        else:
            check(self.num_classes in (None, self.classes),
                  '%s has %d classes; num-classes is for dataset generic'
                  % (self.dataset, self.classes))
        check(self.depth in resnet.BLOCKS, 'depth must be one of %s, not %r'
              % (', '.join(map(str, sorted(resnet.BLOCKS))), self.depth))
        check(self.resolution in RESOLUTIONS, 'resolution must be one of %s, not 1/%s'
              % (', '.join('1/%d' % s for s in RESOLUTIONS), self.resolution))
        check(self.kernel > 0 and self.kernel % 2 == 1,
              'kernel must be a positive odd integer (the classifier is centred), not %r'
              % self.kernel)
        check(self.dilation > 0, 'dilation must be a positive integer, not %r' % self.dilation)
        # A classifier that reaches further than the largest crop sees only
        # padding there, and its weights or padded input outgrow Caffe's blobs.
        reach = self.dilation * (self.kernel - 1) // 2 * self.resolution
        check(reach <= MAX_CROP, 'the classifier reaches %d input pixels from its centre '
              '(dilation x (kernel - 1) / 2 x the stride %d); at most %d'
              % (reach, self.resolution, MAX_CROP))
        check(self.scale is None or (len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1]),
              'scale must be (min, max) with 0 < min <= max, not %r' % (self.scale,))
        check(self.bootstrap is None or self.bootstrap > 0,
              'bootstrap (min_kept) must be a positive integer, not %r' % self.bootstrap)
        check(0.0 <= self.threshold <= 1.0, 'threshold must lie in [0, 1], not %r'
              % self.threshold)
        check(self.bootstrap or not self.threshold,
              'threshold needs bootstrapping: give bootstrap (min_kept) too')
        blocks = len(resnet.block_names(self.depth))
        check(0 < self.dropout_blocks <= blocks,
              'dropout blocks must lie in 1..%d for ResNet-%d, not %r'
              % (blocks, self.depth, self.dropout_blocks))
        check(0.0 < self.dropout_ratio < 1.0, 'dropout ratio must lie in (0, 1), not %r'
              % self.dropout_ratio)
        check(self.dropout or (self.dropout_blocks, self.dropout_ratio)
              == (DROPOUT_BLOCKS, DROPOUT_RATIO),
              'dropout blocks and ratio need dropout: give dropout too')
        if self.simulate is not None:
            check(self.simulate * 2 == self.resolution,
                  'simulate-resolution must be twice as fine as resolution (four passes '
                  'halve the stride once): with resolution 1/%d it can only be 1/%d, not 1/%d'
                  % (self.resolution, self.resolution // 2, self.simulate))
            check(self.test_resolution in (None, self.simulate),
                  'simulate-resolution already tests at 1/%d; drop test-resolution'
                  % self.simulate)
        if self.test_resolution is not None:
            check(self.test_resolution in RESOLUTIONS and self.test_resolution <= self.resolution,
                  'test-resolution must be one of %s, no coarser than the training 1/%d, not 1/%s'
                  % (', '.join('1/%d' % s for s in RESOLUTIONS), self.resolution,
                     self.test_resolution))
        check(self.batch_size > 0, 'batch size must be positive, not %r' % self.batch_size)
        # The widest blob: conv1's and res2's (16 x crop^2 elements an image),
        # or res5's 2048 channels at the output stride.
        widest = self.batch_size * max(16, 2048 // self.resolution ** 2) * self.train_crop ** 2
        check(widest <= MAX_BLOB, 'batch size %d of %d px crops makes blobs of %d elements '
              'at 1/%d; Caffe holds at most %d' % (self.batch_size, self.train_crop, widest,
                                                   self.resolution, MAX_BLOB))
        # A crop must hold the label pixel of the first score cell (of the
        # last shifted pass, when simulating): otherwise every label is ignored.
        first_label = SCORE_ORIGIN + (self.resolution // 2 if self.simulate else 0)
        check(self.train_crop > first_label,
              "crop must be at least %d (the first score cell's label is input pixel %d), "
              "not %r" % (first_label + 1, first_label, self.train_crop))
        check(self.batch_norm in resnet.BATCH_NORMS, 'batch-norm must be one of %s, not %r'
              % (', '.join(resnet.BATCH_NORMS), self.batch_norm))
        check(self.bn_stats in resnet.BN_STATS, 'bn-stats must be one of %s, not %r'
              % (', '.join(resnet.BN_STATS), self.bn_stats))
        check(self.bn_fraction is None or (self.bn_stats == 'batch' and 0 < self.bn_fraction < 1),
              'bn-fraction (moving-average fraction) needs bn-stats batch and must lie in '
              '(0, 1), not %r' % self.bn_fraction)
        warnings = []
        if self.fov > self.train_crop:
            warnings.append('FoV %d is larger than the crop %d: part of the classifier '
                            'would only ever see padding' % (self.fov, self.train_crop))
        return warnings

    def source(self, phase):
        split = 'train' if phase == 'train' else 'val'
        return getattr(self, split + '_source') or self.data.default_list(split)


def _data_layer(n, variant, phase):
    """The project's Python data layer (layers/fcrn_data.py, SegDataLayer);
    augmentation follows the phase (random in TRAIN, none in TEST).

    With several passes it serves each batch `passes` times and adds a `pass`
    top holding the pass index, which drives the shift and label sampling.
    """
    params = dict(source=variant.source(phase), crop_size=variant.train_crop,
                  batch_size=variant.batch_size if phase == 'train' else 1,
                  passes=variant.passes, mean=list(datasets.MEAN_BGR),
                  ignore_label=datasets.IGNORE_LABEL,
                  num_classes=variant.classes, seed=variant.seed)
    if variant.scale is not None and phase == 'train':
        params['scale'] = list(variant.scale)
    ntop = 3 if variant.passes > 1 else 2
    tops = L.Python(module='fcrn_data', layer='SegDataLayer', ntop=ntop,
                    param_str=json.dumps(params, sort_keys=True))
    n.data, n.label = tops[:2]
    if ntop == 3:
        n['pass'] = tops[2]


def _shift_hook(n, stage_to_shift):
    """Hook for resnet.backbone: crop the map entering `stage_to_shift` by the pass's phase."""
    def before_stage(stage, top):
        if stage != stage_to_shift:
            return top
        name = 'res%d_shift' % stage
        n[name] = L.Python(top, n['pass'], module='fcrn_shift', layer='ShiftLayer')
        return n[name]
    return before_stage


def _dropout_hook(n, variant):
    chosen = set(resnet.block_names(variant.depth)[-variant.dropout_blocks:])

    def after_block(block, top):
        if block in chosen:
            n[block + '_drop'] = L.Dropout(top, in_place=True,
                                           dropout_ratio=variant.dropout_ratio)
        return top
    return after_block


def net(variant, phase):
    """NetParameter of `variant`'s train, test (validation) or deploy net.

    train/test: data layer -> FCRN -> score -> labels sampled at the score
    pixels' centres -> (bootstrapped) softmax loss; test adds accuracy.
    deploy: Input `data` (and `pass` when simulating) -> score -> prob. A
    deploy net tested at a finer resolution than trained removes more strides
    and doubles dilations, the classifier's included: same weights, same FoV.
    """
    if phase not in PHASES:
        raise ValueError('phase must be one of %s, not %r' % (PHASES, phase))
    n = NetSpec()
    if phase == 'deploy':
        crop = variant.train_crop
        n.data = L.Input(shape=dict(dim=[1, 3, crop, crop]))
        if variant.simulate:
            n['pass'] = L.Input(shape=dict(dim=[1]))
        stride = variant.resolution if variant.simulate else variant.deploy_resolution
    else:
        _data_layer(n, variant, phase)
        stride = variant.resolution
    hooks = {}
    if variant.simulate:
        shifted = next(s for s in resnet.STAGES if resnet.STAGE_STRIDE[s] == stride)
        hooks['before_stage'] = _shift_hook(n, shifted)
    if variant.dropout and phase != 'deploy':
        hooks['after_block'] = _dropout_hook(n, variant)
    norm = dict(bn_stats=variant.bn_stats, train=phase == 'train',
                bn_fraction=variant.bn_fraction)
    top = resnet.backbone(n, n.data, variant.depth, stride, variant.batch_norm, norm=norm,
                          **hooks)

    dilation = variant.dilation * variant.resolution // stride
    conv = dict(num_output=variant.classes, kernel_size=variant.kernel,
                pad=dilation * (variant.kernel - 1) // 2,
                weight_filler=dict(type='gaussian', std=0.01),
                bias_filler=dict(type='constant', value=0),
                param=[resnet.WEIGHT, resnet.BIAS])
    if dilation > 1:
        conv['dilation'] = dilation
    n.score = L.Convolution(top, **conv)
    if phase == 'deploy':
        n.prob = L.Softmax(n.score)
    else:
        _loss(n, variant, stride, phase)
    proto = n.to_proto()
    proto.name = 'FCRN-%d %s %s (%s)' % (variant.depth, variant.dataset, variant.tag, phase)
    proto.share_memory = variant.share_memory
    return proto


def _loss(n, variant, stride, phase):
    sample = dict(stride=stride, origin=SCORE_ORIGIN)
    bottoms = [n.label, n.score]
    if variant.simulate:
        # The shifted stage's input has stride s/2: one row there is s/2 pixels.
        sample['phase_step'] = stride // 2
        bottoms.append(n['pass'])
    # The score bottom only gives the shape: no gradient flows through here.
    n.label_sample = L.Python(*bottoms, module='fcrn_shift', layer='LabelSampleLayer',
                              param_str=json.dumps(sample, sort_keys=True),
                              propagate_down=[False] * len(bottoms))
    # The sampled label descends from the score (for its shape), so Caffe would
    # ask the loss for a label gradient unless told otherwise.
    loss = dict(loss_param=dict(ignore_label=datasets.IGNORE_LABEL),
                propagate_down=[True, False])
    if variant.bootstrap:
        n.loss = L.BootstrappedSoftmaxWithLoss(
            n.score, n.label_sample,
            bootstrap_param=dict(min_kept=variant.bootstrap, threshold=variant.threshold),
            **loss)
    else:
        n.loss = L.SoftmaxWithLoss(n.score, n.label_sample, **loss)
    if phase == 'test':
        n.accuracy = L.Accuracy(n.score, n.label_sample,
                                accuracy_param=dict(ignore_label=datasets.IGNORE_LABEL))


@dataclasses.dataclass
class SolverSettings:
    """Solver settings. The paper tunes SGD on the validation sets without
    reporting its settings; defaults follow DeepLab's ResNet-101 (SGD, poly,
    2.5e-4). `solver_type` is Caffe's solver `type`; with Adam, `momentum` is
    beta1 and Caffe's defaults give beta2 (0.999) and epsilon (1e-8)."""
    solver_type: str = 'SGD'
    base_lr: float = 2.5e-4
    lr_policy: str = 'poly'
    power: float = 0.9
    gamma: float = 0.1
    stepsize: int = 10000
    momentum: float = 0.9
    weight_decay: float = 5e-4
    iter_size: int = 10          # images per update (times the passes per image)
    max_iter: int = 20000
    display: int = 20
    snapshot: int = 2000
    snapshot_prefix: Optional[str] = None
    test_interval: int = 2000
    test_iter: Optional[int] = None   # validation images (None: all), each every pass
    solver_mode: Optional[str] = None  # 'CPU' or 'GPU'; None: the loaded Caffe's build
    random_seed: Optional[int] = None  # Caffe's seed of fillers, dropout, DummyData


LR_POLICIES = ('poly', 'step', 'fixed')
SOLVER_TYPES = ('SGD', 'Nesterov', 'Adam', 'RMSProp', 'AdaGrad', 'AdaDelta')


def _val_images(variant):
    """Images of the validation set: the registry's count, or (generic) the
    lines of the validation list or the records of its LMDB, read relative
    to the working directory as Caffe will read it."""
    data = variant.data
    if data.split_size(data.eval_split):
        return data.split_size(data.eval_split)
    try:
        if data_sources.is_lmdb(variant.val_source):
            return data_sources.read_lmdb_meta(variant.val_source)["count"]
        return len(lists.read_pairs(variant.val_source, need_label=False))
    except InputError as e:
        raise ValueError('test-iter (one per validation image) is counted from the '
                         'validation list, which cannot be read (%s); give test-iter' % e)


def build_solver_mode():
    """The solver mode the loaded Caffe can run here: GPU on a CUDA build on a
    machine with a usable GPU, else CPU."""
    return 'GPU' if caffeio.gpu_count() > 0 else 'CPU'


def solver(variant, settings, net_dir):
    """SolverParameter reading train/test.prototxt from `net_dir` (as Caffe
    resolves it: relative to the working directory)."""
    if settings.lr_policy not in LR_POLICIES:
        raise ValueError('lr-policy must be one of %s, not %r'
                         % (', '.join(LR_POLICIES), settings.lr_policy))
    if settings.solver_type not in SOLVER_TYPES:
        raise ValueError('solver-type must be one of %s, not %r'
                         % (', '.join(SOLVER_TYPES), settings.solver_type))
    if settings.iter_size <= 0 or settings.max_iter <= 0:
        raise ValueError('iter-size and max-iter must be positive')
    s = caffeio.caffe_pb2().SolverParameter()
    if settings.solver_type != 'SGD':   # Caffe's default; SGD solvers name no type
        s.type = settings.solver_type
    s.train_net = os.path.join(net_dir, 'train.prototxt')
    s.test_net.append(os.path.join(net_dir, 'test.prototxt'))
    s.test_iter.append((settings.test_iter or _val_images(variant)) * variant.passes)
    s.test_interval = settings.test_interval
    s.test_initialization = False
    s.base_lr = settings.base_lr
    s.lr_policy = settings.lr_policy
    if settings.lr_policy == 'poly':
        s.power = settings.power
    elif settings.lr_policy == 'step':
        s.gamma, s.stepsize = settings.gamma, settings.stepsize
    s.momentum = settings.momentum
    s.weight_decay = settings.weight_decay
    # Every pass of every image is one forward-backward; one update per image set.
    s.iter_size = settings.iter_size * variant.passes
    s.max_iter = settings.max_iter
    s.display = settings.display
    s.average_loss = settings.display
    s.snapshot = settings.snapshot
    s.snapshot_prefix = settings.snapshot_prefix or os.path.join(
        'snapshots', '%s_%s' % (variant.dataset, variant.tag))
    s.solver_mode = getattr(caffeio.caffe_pb2().SolverParameter,
                            (settings.solver_mode or build_solver_mode()).upper())
    if settings.random_seed is not None:
        s.random_seed = settings.random_seed
    return s


def with_input_layers(proto, size):
    """The train or test net `proto` with its Python data layer replaced by
    Input layers for one size-by-size image (for tests and benchmarks that
    feed the net themselves). Changes and returns `proto`."""
    data = proto.layer[0]
    if data.type != 'Python':
        raise ValueError('the first layer of %s is %s, not the data layer'
                         % (proto.name, data.type))
    shapes = {'data': [1, 3, size, size], 'label': [1, 1, size, size], 'pass': [1]}
    inputs = []
    for top in data.top:
        layer = caffeio.caffe_pb2().LayerParameter(name=top, type='Input', top=[top])
        layer.input_param.shape.add().dim.extend(shapes[top])
        inputs.append(layer)
    rest = list(proto.layer[1:])
    del proto.layer[:]
    proto.layer.extend(inputs + rest)
    return proto


def net_text(proto):
    """Prototxt with one layer per line, as the released ResNet files are
    written: a 152-layer net stays readable (and a third of the size)."""
    head = caffeio.caffe_pb2().NetParameter()
    head.CopyFrom(proto)
    del head.layer[:]
    lines = text_format.MessageToString(head, as_utf8=True).splitlines()
    for layer in proto.layer:
        lines.append('layer { %s }' % text_format.MessageToString(layer, as_one_line=True))
    return '\n'.join(lines) + '\n'


def render(variant, settings, net_dir, command=None):
    """{file name: text} of the four files of a variant."""
    header = '# FCRN-%d, %s, %s: FoV %d (resolution 1/%d, kernel %d, dilation %d)\n' % (
        variant.depth, variant.dataset, variant.tag, variant.fov, variant.resolution,
        variant.kernel, variant.dilation)
    if command:
        header += '# Generated by: %s\n' % command
    files = {'%s.prototxt' % phase: header + net_text(net(variant, phase))
             for phase in PHASES}
    files['solver.prototxt'] = header + text_format.MessageToString(
        solver(variant, settings, net_dir))
    return files


def _listed(sources):
    """One file of each folder that the list files among `sources` name an
    image or label in: what `fileio.check_holds` needs to refuse an --out
    holding any of them, at one path resolution per folder, not per file."""
    first = {}
    for source in sources:
        if source and os.path.isfile(source):  # an LMDB folder holds its own images
            for pair in lists.read_pairs(source, need_label=False):
                for path in pair:
                    if path is not None:
                        first.setdefault(os.path.dirname(path), os.path.basename(path))
    # resolved here so that a refusal names the file without the lists' "../"
    return [os.path.join(os.path.realpath(folder), name) for folder, name in first.items()]


def write(out, variant, settings, force=False, net_dir=None, command=None, inputs=(),
          root=None):
    """Write train/test/deploy/solver.prototxt into the folder `out`.

    A new (or empty) folder appears complete or not at all; a folder that is
    not empty is refused unless `force`, and then only the four files are
    replaced, each atomically (other files in it stay); one that holds an
    input (`inputs`, e.g. the classes file, the variant's lists, the images
    and labels they name) never.
    `net_dir` is how the solver names the folder (default: `out` as given),
    `root` the folder caffe train will run in, which the data lists are
    relative to (default: the current one). Returns the warnings, logged
    too (a data list given that is not there).
    """
    warnings = variant.validate()
    sources = [os.path.join(root or '.', s) if s else None
               for s in (variant.train_source, variant.val_source)]
    # Caffe reads the lists only when training starts: say now that one is missing.
    warnings += ['%s: %s source not found (caffe train reads it relative to the folder it '
                 'runs in)' % (given, split)
                 for split, given, path in zip(('train', 'val'), (variant.train_source,
                                                                  variant.val_source), sources)
                 if path and not os.path.exists(path)]
    for warning in warnings:
        log.warning(warning)
    files = render(variant, settings, out if net_dir is None else net_dir, command)
    fileio.check_holds({'--out': out}, list(inputs) + sources + _listed(sources))
    fileio.check_free([out], force)
    if os.path.isdir(out) and os.listdir(out):
        # one net: the four files are renamed into place only once all are written
        fileio.atomic_save_all([(os.path.join(out, name), fileio.writes(text))
                                for name, text in sorted(files.items())])
        return warnings
    with fileio.output_dir(out, force=True) as tmp:
        for name, text in sorted(files.items()):
            fileio.atomic_write(os.path.join(tmp, name), text)
    return warnings
