"""Command line of scripts/make_net.py: options <-> (Variant, SolverSettings).

Kept in the library so that the paper zoo (zoo.py) is written as the very
command lines a user would type, parsed by the same parser.
"""
import argparse
import dataclasses
import shlex

from . import netgen, resnet
from .. import cli, datasets
from ..errors import InputError, UsageError

MAX_CROP = netgen.MAX_CROP


def _resolution(text):
    try:
        return netgen.parse_resolution(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error))


def _scale_range(text):
    try:
        low, high = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not MIN,MAX (e.g. 0.5,2)' % text)
    return low, high


# option -> (Variant or SolverSettings field, argparse keywords). The defaults
# come from the dataclasses, so that to_argv() can leave them out.
VARIANT_OPTIONS = [
    ('--dataset', 'dataset', dict(choices=datasets.choices(),
                                  help='voc: 21 classes; cityscapes: 19; generic: one\'s own '
                                       '(--classes or --num-classes; the default when either '
                                       'is given, else voc)')),
    ('--num-classes', 'num_classes', dict(type=cli.ranged(int, 2, 255), metavar='N',
                                          help='generic dataset: N classes, labels 0..N-1 '
                                               '(255: ignored)')),
    ('--depth', 'depth', dict(type=int, choices=sorted(resnet.BLOCKS), help='ResNet depth')),
    ('--resolution', 'resolution', dict(type=_resolution, metavar='1/S',
                                        help='output stride: 1/16, 1/8 or 1/4')),
    ('--kernel', 'kernel', dict(type=cli.positive_int, help='classifier kernel size (odd)')),
    ('--dilation', 'dilation', dict(type=cli.positive_int, help='classifier dilation')),
    ('--bootstrap', 'bootstrap', dict(type=cli.positive_int, metavar='K',
                                      help='BootstrappedSoftmaxWithLoss keeping at least the K '
                                           'hardest pixels per image (default: SoftmaxWithLoss)')),
    ('--threshold', 'threshold', dict(type=cli.ranged(float, 0, 1), metavar='T',
                                      help='with --bootstrap, also keep every pixel whose '
                                           'true-class probability is below T')),
    ('--dropout', 'dropout', dict(action='store_true',
                                  help='dropout on the outputs of the top-most blocks')),
    ('--dropout-blocks', 'dropout_blocks', dict(type=cli.positive_int, metavar='N',
                                                help='how many top-most blocks get dropout')),
    ('--dropout-ratio', 'dropout_ratio', dict(type=cli.ranged(float, 0, 1, True, True))),
    ('--simulate-resolution', 'simulate', dict(type=_resolution, metavar='1/S',
                                               help='train and test in four shifted passes '
                                                    'that compute the 1/S output (S = half '
                                                    'the resolution\'s)')),
    ('--test-resolution', 'test_resolution', dict(type=_resolution, metavar='1/S',
                                                  help='deploy at a finer resolution: same '
                                                       'weights, dilations doubled')),
    ('--crop', 'crop', dict(type=cli.ranged(int, 1, MAX_CROP),
                            help='training crop (default: per dataset)')),
    ('--train-scale', 'scale', dict(type=cli.positive_float, nargs=2, metavar=('MIN', 'MAX'),
                                    help='random resize range of training images (default: '
                                         'the data layer\'s 0.5 2)')),
    ('--batch-size', 'batch_size', dict(type=cli.positive_int)),
    ('--batch-norm', 'batch_norm', dict(choices=resnet.BATCH_NORMS,
                                        help='lean: LeanBatchNorm; caffe: BatchNorm + Scale')),
    ('--bn-stats', 'bn_stats', dict(choices=resnet.BN_STATS,
                                    help='frozen: global statistics and frozen gamma/beta, '
                                         'to fine-tune ImageNet weights (the paper); batch: '
                                         'batch statistics in the train net, learnt '
                                         'gamma/beta, MSRA-initialised convolutions, to '
                                         'train from random weights')),
    ('--bn-fraction', 'bn_fraction', dict(type=cli.ranged(float, 0, 1, True, True), metavar='F',
                                          help='with --bn-stats batch: moving_average_'
                                               'fraction of the statistics the test/deploy '
                                               'nets use (default: Caffe\'s 0.999)')),
    ('--train-source', 'train_source', dict(help='list or LMDB of the data layer (default: '
                                                 'data/voc_aug/train_aug.txt, '
                                                 'data/cityscapes_fcrn/train.txt)')),
    ('--val-source', 'val_source', dict(help='default: data/voc_aug/val.txt, '
                                             'data/cityscapes_fcrn/val.txt')),
    ('--no-share-memory', 'share_memory',
     dict(action='store_false',
          help='write share_memory: false into the nets: every blob keeps its own memory, '
               'so that pycaffe can read intermediate blobs after a pass, at the cost of '
               'the memory the default saves')),
    ('--seed', 'seed', dict(type=cli.nonnegative_int,
                            help='seed of the data layer\'s augmentation and order (Caffe\'s '
                                 'own seed, of fillers and dropout: --random-seed)')),
]
SOLVER_OPTIONS = [
    ('--solver-type', 'solver_type', dict(choices=netgen.SOLVER_TYPES,
                                          help='Caffe\'s solver type; Adam takes --momentum '
                                               'as beta1')),
    ('--iter-size', 'iter_size', dict(type=cli.positive_int,
                                      help='images per update; times 4 with '
                                           '--simulate-resolution')),
    ('--base-lr', 'base_lr', dict(type=cli.positive_float)),
    ('--lr-policy', 'lr_policy', dict(choices=netgen.LR_POLICIES)),
    ('--power', 'power', dict(type=cli.positive_float)),
    ('--gamma', 'gamma', dict(type=cli.ranged(float, 0, 1, low_open=True))),
    ('--stepsize', 'stepsize', dict(type=cli.positive_int)),
    ('--momentum', 'momentum', dict(type=cli.unit_fraction)),
    ('--weight-decay', 'weight_decay', dict(type=cli.ranged(float, 0))),
    ('--max-iter', 'max_iter', dict(type=cli.positive_int)),
    ('--display', 'display', dict(type=cli.positive_int)),
    ('--snapshot', 'snapshot', dict(type=cli.positive_int)),
    ('--snapshot-prefix', 'snapshot_prefix', dict(help='default: snapshots/DATASET_VARIANT')),
    ('--test-interval', 'test_interval', dict(type=cli.positive_int)),
    ('--test-iter', 'test_iter', dict(type=cli.positive_int,
                                      help='validation images per test (default: all); '
                                           'times 4 forwards with --simulate-resolution')),
    ('--solver-mode', 'solver_mode', dict(choices=('GPU', 'CPU'), type=str.upper,
                                          help='default: GPU with a CUDA build of Caffe '
                                               'on a machine with a GPU, else CPU')),
    ('--random-seed', 'random_seed', dict(type=cli.nonnegative_int,
                                          help='Caffe\'s random_seed (fillers, '
                                               'dropout): reproducible training')),
]


def build_parser(prog=None, description='Write train/test/deploy/solver.prototxt of one FCRN '
                 'variant (Wu, Shen, van den Hengel 2016) and print its field of view.'):
    parser = cli.parser(description, prog=prog)
    parser.add_argument('--out', required=True, help='output folder')
    cli.add_force(parser, 'a non-empty --out (then only its four files are replaced)')
    parser.add_argument('--classes', metavar='FILE',
                        help='generic dataset: its classes file (one class per line; what '
                             'scripts/prepare_folder.py writes); sets --num-classes')
    for title, options, cls in (('network', VARIANT_OPTIONS, netgen.Variant),
                                ('solver', SOLVER_OPTIONS, netgen.SolverSettings)):
        group = parser.add_argument_group(title)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for option, field, kwargs in options:
            # --dataset's default depends on --classes/--num-classes (parse)
            kwargs = dict(kwargs, dest=field,
                          default=None if field == 'dataset' else defaults[field])
            if 'help' in kwargs and 'action' not in kwargs \
                    and defaults[field] is not None:
                kwargs['help'] += ' (default: %s)' % (
                    '1/%(default)s' if kwargs.get('type') is _resolution else '%(default)s')
            group.add_argument(option, **kwargs)
    # Earlier name and form of --train-scale.
    parser.add_argument('--scale', dest='scale', type=_scale_range, help=argparse.SUPPRESS)
    return parser


def parse(argv, parser=None):
    """(args, Variant, SolverSettings); bad combinations are argparse errors."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    try:
        data = datasets.resolve(args.dataset, args.num_classes, args.classes)
    except UsageError as error:
        parser.error(str(error))
    except InputError as error:
        parser.exit(1, '%s: error: %s\n' % (parser.prog, error))
    args.dataset = data.name
    args.num_classes = data.num_classes if data.name == datasets.GENERIC else None
    args.scale = args.scale and tuple(args.scale)
    variant = netgen.Variant(**{f: getattr(args, f) for _, f, _ in VARIANT_OPTIONS})
    settings = netgen.SolverSettings(**{f: getattr(args, f) for _, f, _ in SOLVER_OPTIONS})
    # Resolved now, so that the command in the files' headers reproduces them.
    settings.solver_mode = settings.solver_mode or netgen.build_solver_mode()
    try:
        variant.validate()
        netgen.solver(variant, settings, '.')
    except ValueError as error:
        parser.error(str(error))
    return args, variant, settings


# Options that name a table row: always written, defaults or not.
IDENTITY = ('dataset', 'depth', 'resolution', 'kernel', 'dilation')


def to_argv(variant, settings=None):
    """The options that reproduce `variant` (and `settings`): the row's
    identity, then whatever differs from the defaults."""
    argv = []
    pairs = [(VARIANT_OPTIONS, variant, netgen.Variant())]
    if settings is not None:
        pairs.append((SOLVER_OPTIONS, settings, netgen.SolverSettings()))
    for options, value, default in pairs:
        for option, field, kwargs in options:
            mine = getattr(value, field)
            if mine == getattr(default, field) and field not in IDENTITY:
                continue
            if 'action' in kwargs:   # a flag: set only when it differs from the default
                argv.append(option)
            elif kwargs.get('type') is _resolution:
                argv += [option, '1/%d' % mine]
            elif kwargs.get('nargs') == 2:
                argv += [option] + ['%g' % v for v in mine]
            else:
                argv += [option, str(mine)]
    return argv


def command(argv, out):
    return ' '.join(['scripts/make_net.py'] + [shlex.quote(a) for a in argv]
                    + ['--out', shlex.quote(out)])
