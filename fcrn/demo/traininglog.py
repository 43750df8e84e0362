"""Parse the log that `caffe train` writes through glog (GLOG_minloglevel=0).

The lines read, as this Caffe (BVLC master, 2018) prints them:

    solver.cpp:...] Iteration 20 (1.01 iter/s, 9.8s/10 iters), loss = 3.58
    sgd_solver.cpp:...] Iteration 20, lr = 0.0077
    solver.cpp:...] Iteration 150, Testing net (#0)
    solver.cpp:...]     Test net output #0: accuracy = 0.66
    solver.cpp:...]     Test net output #1: loss = 2.67 (* 1 = 2.67 loss)
    solver.cpp:...] Iteration 150, loss = 1.55          (the last one)
    caffe.cpp:...] Resuming from snapshot/x_iter_100.solverstate

The train loss is Caffe's `average_loss` smoothing of the last `display`
iterations, as printed. Several runs appended to one log (a run resumed with
-snapshot) give one series: a later point for an iteration replaces an
earlier one.
"""
import dataclasses
import re
from typing import Dict, List, Optional, Tuple

_NUMBER = r'([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf|-nan|-inf))'
_TRAIN = re.compile(r'\] Iteration (\d+)(?: \([^)]*\))?, loss = ' + _NUMBER)
_LR = re.compile(r'\] Iteration (\d+), lr = ' + _NUMBER)
_TESTING = re.compile(r'\] Iteration (\d+), Testing net \(#(\d+)\)')
_TEST_OUTPUT = re.compile(r'\]\s+Test net output #\d+: (\S+) = ' + _NUMBER)
_RESUME = re.compile(r'\] (?:Resuming from|Restoring previous solver status from) (\S+)')
_DONE = re.compile(r'\] Optimization Done')


@dataclasses.dataclass
class TrainingLog:
    train_loss: List[Tuple[int, float]]
    lr: List[Tuple[int, float]]
    test: Dict[str, List[Tuple[int, float]]]   # output name -> (iteration, value)
    resumed_from: List[str]
    finished: bool

    @property
    def last_iteration(self) -> Optional[int]:
        its = [i for i, _ in self.train_loss] + [i for i, _ in self.lr]
        return max(its) if its else None


def _series(points):
    """Sort by iteration, keeping the last value logged for each."""
    return sorted(dict(points).items())


def _float(text):
    return float(text.replace('-nan', 'nan'))


def parse(lines):
    """TrainingLog of an iterable of log lines (or one string)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    train, lr, test, resumed = [], [], {}, []
    finished = False
    testing = None        # iteration of the test pass being read
    for line in lines:
        m = _TESTING.search(line)
        if m:
            testing = int(m.group(1))
            continue
        m = _TEST_OUTPUT.search(line)
        if m and testing is not None:
            test.setdefault(m.group(1), []).append((testing, _float(m.group(2))))
            continue
        m = _LR.search(line)
        if m:
            lr.append((int(m.group(1)), _float(m.group(2))))
            continue
        m = _TRAIN.search(line)
        if m:
            train.append((int(m.group(1)), _float(m.group(2))))
            continue
        m = _RESUME.search(line)
        if m:
            resumed.append(m.group(1))
            finished = False
            continue
        if _DONE.search(line):
            finished = True
    return TrainingLog(_series(train), _series(lr),
                       {k: _series(v) for k, v in test.items()}, resumed, finished)


def parse_file(path):
    with open(path, errors='replace') as f:
        return parse(f)
