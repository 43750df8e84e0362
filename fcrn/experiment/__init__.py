"""A resumable experiment: data -> net -> training -> inference -> scores.

An `Experiment` composes the library calls behind the scripts in one run
folder: its `Source` writes a PASCAL VOC-layout tree -> `fcrn.data.voc.
prepare_voc` (scripts/prepare_voc.py) -> per training, `fcrn.net.netgen.write`
(scripts/make_net.py) -> `fcrn.train.train` (scripts/train.py: `caffe train
-solver`, resumed from the last snapshot) -> `fcrn.infer.run`
(scripts/infer.py) on the held-out images -> `fcrn.evaluate.run`
(scripts/evaluate.py), with the majority-class baseline from
`fcrn.evaluate.majority_baseline`. Caffe runs in the run folder, so the
solvers' paths are relative to it and the folder can be moved. Every step is
resumable (see steps.py): a rerun skips what finished with the same inputs.

The trainings share a `Recipe` (net and solver) and differ in their loss and
seed (`Training`). They start from random weights: the nets use `--bn-stats
batch` (batch statistics in the train net, learnt gamma/beta,
MSRA-initialised convolutions, each residual branch's last gamma starting at
0); the test and deploy nets use the moving averages, with a short averaging
window (`bn_fraction`) because the weights move fast in a short run.
`make demo` (fcrn.demo) and the bootstrapping benchmark (tools/bench) are
experiments.
"""
import collections
import dataclasses
import json
import logging
import os
import shutil
from typing import Callable, Optional

from fcrn import evaluate, fileio, infer, lists, train
from fcrn.data import voc
from fcrn.errors import UsageError
from fcrn.experiment.steps import RECORDS, Steps
from fcrn.net import netgen, options

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Recipe:
    """The net and solver of every training of an experiment (make_net.py's
    options of the same names). The defaults are a small FCRN trained from
    random weights on the CPU in minutes, as `make demo` does; the figures
    below were measured on its synthetic data."""
    # Table 1's FCRN-50 at 1/8 with a 3x3 classifier, dilation shrunk so that
    # the FoV (72) fits the small crop
    depth: int = 50
    resolution: str = '1/8'
    kernel: int = 3
    dilation: int = 4
    crop: int = 96
    # Resizing by 0.5-2 (the data layer's default) scored lower on the
    # demo's earlier four-shape dataset: halved, the finest textures alias
    # (28.0% against 34.0% mean IoU after 400 iterations).
    scale: tuple = (0.75, 1.33)
    batch_size: int = 4
    bn_fraction: float = 0.95
    # Adam at 0.001, poly. Measured (60 val images, K 19, t 0.7), after 150 /
    # 300 / 450 iterations of a 600-iteration schedule: 60.6 / 79.1 / 84.6%
    # mean IoU; Adam at 0.003: 58.1 / 77.5 / 82.2%; SGD at 0.01 sent the loss
    # from 3.4 to 13 within 50 iterations (Caffe has no warm-up). 500
    # iterations fit the demo's 10 minutes.
    solver_type: str = 'Adam'
    lr_policy: str = 'poly'
    base_lr: float = 0.001
    max_iter: int = 500
    snapshot: int = 250
    display: int = 10


RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))


@dataclasses.dataclass(frozen=True)
class Training:
    """What differs between the trainings of one experiment: the loss
    (bootstrap K, None for plain softmax, and threshold t) and the seed
    (Caffe's fillers, the data layer's order and augmentation)."""
    bootstrap: Optional[int]
    threshold: float
    seed: int

    def describe(self):
        if not self.bootstrap:
            return 'plain softmax loss'
        return 'bootstrapping K %d%s' % (
            self.bootstrap, ', t %g' % self.threshold if self.threshold else '')


@dataclasses.dataclass
class Source:
    """Where an experiment's data come from: `make(folder)` writes
    folder/VOCdevkit (VOC 2012's layout, its train and val splits); `key`
    (JSON-able) describes them, so that other data are made afresh."""
    folder: str
    make: Callable[[str], object]
    key: dict


class Experiment:
    """A run folder: one dataset, made and prepared once, and the trainings
    {name: Training} made on it, each generated, trained, applied to the
    held-out images and scored."""

    def __init__(self, out, recipe, source, trainings):
        # A step removes its outputs (data/, synthetic/, nets/, train/...) before it
        # runs: never in a folder that is not a run folder already (an empty
        # one, or a link to one, is free).
        taken = bool(os.listdir(out)) if os.path.isdir(out) else os.path.lexists(out)
        if taken and not os.path.isdir(os.path.join(out, RECORDS)):
            raise UsageError('%s: exists and is not a run folder (no %s/); give a new or '
                             'empty folder' % (out, RECORDS))
        os.makedirs(os.path.join(out, RECORDS), exist_ok=True)
        self.out = out
        self.recipe = recipe
        self.source = source
        self.steps = Steps(out)
        self.trainings = collections.OrderedDict(trainings)

    def path(self, *parts):
        return os.path.join(self.out, *parts)

    # ---------------------------------------------------------------- data
    def prepare(self):
        voc.prepare_voc(self.path(self.source.folder, 'VOCdevkit'), None, self.path('data'))

    def val_set(self):
        """(ids, image paths) of the held-out images, from the prepared list."""
        images = [img for img, _ in lists.read_pairs(self.path('data', 'val.txt'))]
        return [os.path.splitext(os.path.basename(p))[0] for p in images], images

    def baseline(self):
        """Scores of predicting the training set's majority class everywhere."""
        train_labels = [lbl for _, lbl in lists.read_pairs(self.path('data', 'train.txt'))]
        gt = self.path('data', 'SegmentationClassAug')
        pairs = [(i, os.path.join(gt, i + '.png')) for i in self.val_set()[0]]
        names = evaluate.class_names('voc')
        cm, majority = evaluate.majority_baseline(train_labels, pairs, len(names))
        fileio.atomic_write(self.path('eval', 'majority.json'), evaluate.json_report(
            cm, cm.scores(), names, {'majority_class': names[majority]}))

    # ---------------------------------------------------------------- nets
    def variant(self, name):
        r, t = self.recipe, self.trainings[name]
        return netgen.Variant(
            dataset='voc', depth=r.depth, resolution=netgen.parse_resolution(r.resolution),
            kernel=r.kernel, dilation=r.dilation, crop=r.crop, scale=tuple(r.scale),
            batch_size=r.batch_size, bn_stats='batch', bn_fraction=r.bn_fraction,
            train_source='data/train.txt', val_source='data/val.txt', seed=t.seed,
            bootstrap=t.bootstrap, threshold=t.threshold)

    def settings(self, name):
        r, t = self.recipe, self.trainings[name]
        return netgen.SolverSettings(
            iter_size=1, random_seed=t.seed, solver_type=r.solver_type, lr_policy=r.lr_policy,
            base_lr=r.base_lr, max_iter=r.max_iter, snapshot=r.snapshot, display=r.display,
            test_interval=r.max_iter, test_iter=len(self.val_set()[0]), solver_mode='CPU',
            snapshot_prefix=self.prefix(name))

    def make_net(self, name):
        variant, settings = self.variant(name), self.settings(name)
        folder = 'nets/' + name
        netgen.write(self.path(folder), variant, settings, net_dir=folder,
                     command=options.command(options.to_argv(variant, settings), folder),
                     root=self.path())

    @staticmethod
    def prefix(name):
        return 'train/%s/snapshot' % name

    def train(self, name, key):
        """Snapshots left by an interrupted training are resumed only if they
        were made with the same settings (recorded when training started)."""
        folder = self.path('train', name)
        record = os.path.join(folder, 'settings.json')
        try:
            with open(record) as f:
                same = json.load(f) == json.loads(json.dumps(key))
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
            fileio.atomic_write(record, json.dumps(key, sort_keys=True))
        train.train('nets/%s/solver.prototxt' % name, log_prefix=self.log_prefix(name),
                    cwd=self.out, progress=True)
        # Intermediate snapshots (about 100 MB each for FCRN-50) only serve
        # resuming; the finished run keeps its last one.
        for iteration, state in train.snapshots(self.path(self.prefix(name))):
            if iteration != self.recipe.max_iter:
                os.remove(state)
                os.remove(state[:-len('.solverstate')] + '.caffemodel')

    @staticmethod
    def log_prefix(name):
        return 'train/%s/training' % name

    def weights(self, name):
        return self.path('%s_iter_%d.caffemodel' % (self.prefix(name), self.recipe.max_iter))

    def logs(self):
        """{name: fcrn.train.TrainingLog} of the trainings."""
        return {name: train.parse_log_file(self.path(self.log_prefix(name) + '.log'))
                for name in self.trainings}

    # ---------------------------------------------------------------- test
    def infer(self, name):
        infer.run(net=self.path('nets', name, 'deploy.prototxt'), weights=self.weights(name),
                  sources=self.val_set()[1], out=self.path('infer', name, 'labels'),
                  overlay_dir=self.path('infer', name, 'overlay'), progress=True)

    def evaluate(self, name):
        evaluate.run(self.path('data', 'SegmentationClassAug'),
                     self.path('infer', name, 'labels'), 'voc', ids=self.val_set()[0],
                     name='FCRN-%d %s' % (self.recipe.depth, self.trainings[name].describe()),
                     out_md=self.path('eval', name + '.md'),
                     out_json=self.path('eval', name + '.json'))

    # ---------------------------------------------------------------- all
    def data(self):
        """The dataset, prepared, and the majority-class baseline."""
        s, source = self.steps, self.source
        s.run('dataset', [source.folder], source.key,
              lambda: source.make(self.path(source.folder)))
        s.run('prepare', ['data'], s.stamp('dataset'), self.prepare)
        s.run('baseline', ['eval/majority.json'], s.stamp('prepare'), self.baseline)

    def training(self, name):
        """Generate, train, apply and score training `name`; each step is
        skipped when it finished with the same inputs."""
        s = self.steps
        recipe = {f: getattr(self.recipe, f) for f in RECIPE_FIELDS}
        s.run('net_' + name, ['nets/' + name],
              dict(recipe, val_images=len(self.val_set()[0]),
                   **dataclasses.asdict(self.trainings[name])),
              lambda: self.make_net(name))
        key = s.stamp('net_' + name, 'prepare')
        # Training keeps its snapshots when interrupted: the rerun resumes.
        s.run('train_' + name, ['train/' + name], key,
              lambda: self.train(name, key), keep_partial=True)
        s.run('infer_' + name, ['infer/' + name], s.stamp('train_' + name, 'prepare'),
              lambda: self.infer(name))
        s.run('eval_' + name, ['eval/%s.json' % name, 'eval/%s.md' % name],
              s.stamp('infer_' + name), lambda: self.evaluate(name))

    def all(self):
        self.data()
        for name in self.trainings:
            self.training(name)
