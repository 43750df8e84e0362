"""`make demo` (scripts/demo.py): an FCRN-50 trained end to end on a synthetic
VOC-layout dataset (synthetic), an `fcrn.experiment.Experiment` configured by
`Config`, and its one-page summary (summary)."""
import dataclasses
from typing import Optional

from fcrn import experiment, train
from fcrn.demo import summary, synthetic


@dataclasses.dataclass
class Config(experiment.Recipe):
    """The demo: its data, its loss and seed, and the experiment's recipe."""
    # dataset (synthetic.py: frequent large regions, rare small objects)
    train_images: int = 1000
    val_images: int = 100
    image_size: tuple = (96, 144)     # sides drawn uniformly from this range
    data_seed: int = 0
    # loss: the paper's best K (512) scaled to the crop
    # (tools.bench.bootstrap.scaled_k: 19 of the 12 x 12 labels of a 96 px
    # crop). Also keeping every pixel whose true-class probability is below t
    # trains on all pixels while the net knows little, then narrows to the
    # hard ones.
    bootstrap: Optional[int] = 19
    threshold: float = 0.7
    # training: Caffe's random_seed (fillers) and the data layer's (order,
    # augmentation)
    seed: int = 0

    def key(self, *fields):
        return {f: getattr(self, f) for f in fields}


QUICK = dict(train_images=12, val_images=4, batch_size=2, max_iter=6, snapshot=3,
             display=1)
DATA_FIELDS = ('train_images', 'val_images', 'image_size', 'data_seed')
# What a benchmark's recipe must share with a demo run for its comparison to apply.
RECIPE_FIELDS = DATA_FIELDS + experiment.RECIPE_FIELDS


def source(config):
    """The synthetic dataset of `config`, in the run folder's `synthetic/`."""
    c = config

    def make(folder):
        synthetic.write_voc(folder, c.train_images, c.val_images, c.image_size, c.data_seed,
                            progress=_progress('images'))
    return experiment.Source('synthetic', make, c.key(*DATA_FIELDS))


def run(out, config, benchmark=None):
    """The demo in the run folder `out`: one training, 'bootstrap' (the
    config's loss and seed), then its report (`report`). Returns the
    Experiment."""
    trainings = {'bootstrap': experiment.Training(
        config.bootstrap, config.threshold if config.bootstrap else 0.0, config.seed)}
    run = experiment.Experiment(out, config, source(config), trainings)
    run.all()
    report(run, config, benchmark)
    return run


def report(run, config, benchmark=None):
    """report/training.png (loss and learning rate), report/examples.jpg and
    summary.md, which quotes the bootstrapping benchmark's result file
    `benchmark` (.json) when it was made with the same recipe."""
    logs = run.logs()
    train.plot(logs, run.path('report', 'training.png'))
    summary.mosaic(run.out, summary.examples(run), list(run.trainings),
                   run.path('report', 'examples.jpg'))
    summary.write(run.out, config, run.trainings, logs, run.steps,
                  config.key(*RECIPE_FIELDS), benchmark)


def _progress(desc):
    from tqdm import tqdm

    def wrap(items):
        return tqdm(items, desc=desc, unit='img')
    return wrap
