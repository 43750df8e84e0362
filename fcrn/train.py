"""Training with Caffe's own `caffe train`, plus what a long run needs.

- Resuming: Caffe snapshots to `<prefix>_iter_<N>.caffemodel` and
  `.solverstate`; `caffe train -snapshot <prefix>_iter_<N>.solverstate`
  continues at iteration N with the weights, momentum and iteration count of
  the snapshot. `train()` resumes from the last complete snapshot of the
  solver's prefix, so an interrupted run loses only the iterations since it.
  Both files are read first (`check_snapshot`): a damaged one (cut short by a
  kill or a full disk) is named and the snapshot before it is used.
- One training per snapshot prefix: `<prefix>.lock`, held while Caffe runs
  (an flock: a killed run leaves no stale lock), refuses a second one; and
  `<prefix>.training.json` records which training its snapshots are
  (`training_identity`) and which of them it wrote (from Caffe's log as it
  runs): another solver that names the same prefix (two generated nets that
  differ only in their crop, say) is refused rather than resumed from, or
  deemed finished by, the other's snapshots, and a training restarted there
  resumes only from its own.
- A progress bar over iterations, read from the log as Caffe writes it.
- A non-finite loss stops training (the project's Caffe patch 0004): the
  error names the iteration; other failures quote Caffe's fatal line, read
  from this run's part of the log only.
- The log (Caffe's INFO lines, appended across resumes) is parsed into CSV and
  JSON and plotted (loss and learning rate, matplotlib).

Paths in the solver (net, snapshot_prefix, data lists) are relative to the
working directory Caffe runs in (`cwd`), as with the caffe tool itself.

The log lines read, as this Caffe (BVLC master, 2018) prints them:

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
import csv
import dataclasses
import glob
import hashlib
import io
import json
import logging
import os
import re
import signal
import subprocess
from typing import Dict, List, Optional, Tuple

from . import caffeio, fileio, paths
from .data.prefetch import RESUME as DATA_RESUME
from .errors import LAYER_ERROR, InputError

log = logging.getLogger(__name__)


class TrainingError(InputError):
    """`caffe train` stopped before max_iter; the message says why and names the log."""


# --------------------------------------------------------------------- the log

_NUMBER = r'([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf|-nan|-inf))'
_TRAIN = re.compile(r'\] Iteration (\d+)(?: \([^)]*\))?, loss = ' + _NUMBER)
_LR = re.compile(r'\] Iteration (\d+), lr = ' + _NUMBER)
_TESTING = re.compile(r'\] Iteration (\d+), Testing net \(#(\d+)\)')
_TEST_OUTPUT = re.compile(r'\]\s+Test net output #\d+: (\S+) = ' + _NUMBER)
_RESUME = re.compile(r'\] (?:Resuming from|Restoring previous solver status from) (\S+)')
_DONE = re.compile(r'\] Optimization Done')
_NON_FINITE = re.compile(r'Iteration (\d+): the loss is (\S+); stopping before the update')
_FATAL = re.compile(r'^F(?:\d{4}|\d{8}) [\d:.]+\s+\d+ \S+\] (.*)$')
_PROGRESS = re.compile(r'\] Iteration (\d+)')
_ITER = re.compile(r'_iter_(\d+)\.solverstate$')
_SNAPSHOTTING = re.compile(r'Snapshotting solver state to binary proto file .*_iter_(\d+)'
                           r'\.solverstate\s*$')


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


def parse_log(lines):
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


def parse_log_file(path):
    with open(path, errors='replace') as f:
        return parse_log(f)


def log_csv(training_log):
    """CSV text: iteration, train loss, learning rate, then each test output."""
    tests = sorted(training_log.test)
    rows = {}
    for column, points in [('loss', training_log.train_loss), ('lr', training_log.lr)] + \
            [('test_' + t, training_log.test[t]) for t in tests]:
        for it, value in points:
            rows.setdefault(it, {})[column] = value
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    columns = ['loss', 'lr'] + ['test_' + t for t in tests]
    writer.writerow(['iteration'] + columns)
    for it in sorted(rows):
        writer.writerow([it] + [repr(rows[it][c]) if c in rows[it] else '' for c in columns])
    return out.getvalue()


def log_json(training_log):
    return json.dumps(dataclasses.asdict(training_log), indent=1) + '\n'


def plot(logs, path, size=(9, 6.4)):
    """PNG of the train (and test) loss above the learning rate of every run
    in `logs` ({name: TrainingLog}), written atomically to `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, lr_ax = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(height_ratios=[3, 2]))
    for name, run in sorted(logs.items()):
        label = '%s ' % name if len(logs) > 1 else ''
        if run.train_loss:
            line, = loss_ax.plot(*zip(*run.train_loss), label=label + 'train')
            if run.test.get('loss'):
                loss_ax.plot(*zip(*run.test['loss']), 'o--', color=line.get_color(),
                             label=label + 'test')
        if run.lr:
            lr_ax.plot(*zip(*run.lr), label=name)
    loss_ax.set_ylabel('loss')
    loss_ax.grid(alpha=0.3)
    if loss_ax.lines:
        loss_ax.legend()
    lr_ax.set_ylabel('learning rate')
    lr_ax.set_xlabel('iteration')
    lr_ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    fileio.atomic_write(path, buf.getvalue())


# --------------------------------------------------------------------- running

def caffe_env(env=None):
    """Environment in which caffe logs every INFO line (iterations, losses,
    learning rates) to stderr only, as the log parser needs."""
    env = dict(os.environ if env is None else env)
    env.update(GLOG_minloglevel='0', GLOG_logtostderr='1')
    return env


def snapshot_prefix(solver, cwd=None):
    """(snapshot prefix, max_iter) of a solver file, the prefix completed as
    Caffe completes it (the solver's own name when none is given, appended
    to a folder)."""
    where = cwd or '.'
    param = caffeio.read_solver(os.path.join(where, solver))
    stem = os.path.splitext(solver)[0]
    prefix = param.snapshot_prefix
    if not param.HasField('snapshot_prefix'):
        prefix = stem
    elif os.path.isdir(os.path.join(where, prefix)):
        prefix = os.path.join(prefix, os.path.basename(stem))
    return prefix, param.max_iter


def snapshots(prefix):
    """[(iteration, solverstate path)] of `prefix`, oldest first. A state
    whose weights file is missing (a snapshot cut short) is left out."""
    found = []
    for state in glob.glob(glob.escape(prefix) + '_iter_*.solverstate'):
        m = _ITER.search(state)
        if m and os.path.exists(state[:-len('.solverstate')] + '.caffemodel'):
            found.append((int(m.group(1)), state))
    return sorted(found)


def latest_snapshot(prefix):
    found = snapshots(prefix)
    return found[-1] if found else (0, None)


# Solvers that keep two history blobs per learnable blob (Caffe's AdaDelta
# and Adam PreSolve), by SolverParameter.type and the legacy solver_type.
_TWO_HISTORIES = ('adadelta', 'adam')


def _solver_type(solver_param):
    """The solver's type, lower case: `type`, or the legacy `solver_type`
    enum that Caffe upgrades to it (NESTEROV for Nesterov)."""
    if solver_param.HasField('solver_type'):
        return solver_param.SolverType.Name(solver_param.solver_type).lower()
    return solver_param.type.lower()


def train_net_param(solver_param, where='.'):
    """The NetParameter of the net a solver trains: given inline, or read
    from its file (relative to `where`, where Caffe runs)."""
    if solver_param.HasField('train_net_param') or solver_param.HasField('net_param'):
        return solver_param.train_net_param if solver_param.HasField('train_net_param') \
            else solver_param.net_param
    return caffeio.read_net_param(os.path.join(where, solver_param.train_net or solver_param.net))


def training_identity(solver_param, net):
    """What makes the snapshots of one solver resumable by another: the net
    it trains (`net`, as parsed: comments and layout do not count; data
    lists, crops, dropout and classes do) and the solver type. Learning
    rates, max_iter, snapshot and display settings may change between runs."""
    return {'net': hashlib.sha256(net.SerializeToString(deterministic=True)).hexdigest(),
            'type': _solver_type(solver_param)}


def check_same_training(record, identity, prefix):
    """The iterations of the snapshots of `prefix` that the record `record`
    (`<prefix>.training.json`) lists as its training's, None where it lists
    none (no record: snapshots of caffe alone, taken as they are);
    InputError when it is of a training other than `identity`."""
    try:
        with open(record) as f:
            theirs = json.load(f)
        if not isinstance(theirs, dict):
            raise ValueError('not a JSON object')
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:
        raise InputError('%s: unreadable (%s); delete it to resume from the snapshots of %s'
                         % (record, e, prefix))
    differs = [k for k in ('net', 'type') if theirs.get(k) != identity[k]]
    if differs:
        what = 'another net' if 'net' in differs else 'solver type %s' % theirs.get('type')
        raise InputError('%s: its snapshots are of another training (%s, by %s); give this '
                         'solver a snapshot_prefix of its own (make_net.py --snapshot-prefix), '
                         'or --restart to train afresh over them (delete %s to resume from '
                         'them all the same)' % (prefix, what, theirs.get('solver', '?'),
                                                  record))
    ours = theirs.get('snapshots')
    return [int(i) for i in ours] if isinstance(ours, list) else None


def check_snapshot(state, solver_param):
    """None when the snapshot `state` (a .solverstate path) can be resumed
    from, else (the damaged file, why): a file that does not parse, or a
    history that does not fit the weights (Caffe would abort on either)."""
    model_path = state[:-len('.solverstate')] + '.caffemodel'
    try:
        model = caffeio.read_caffemodel(model_path)
    except InputError as e:
        return model_path, str(e).replace(model_path + ': ', '', 1)
    try:
        saved = caffeio.read_solverstate(state)
    except InputError as e:
        return state, str(e).replace(state + ': ', '', 1)
    learnable = caffeio.learnable_blobs(model)
    need = learnable * (2 if _solver_type(solver_param) in _TWO_HISTORIES else 1)
    if len(saved.history) != need:
        return state, ("%d history blob(s); the model's %d learnable blob(s) need %d"
                       % (len(saved.history), learnable, need))
    return None


def resume_point(prefix, solver_param, ours=None):
    """(iteration, solverstate path) of the newest snapshot of `prefix` (of
    those at the iterations `ours`, if given) that `check_snapshot` passes,
    (0, None) when there is none; a damaged one is named (warning) and the
    one before it used. InputError when snapshots exist but none is
    complete."""
    damaged = []
    for iteration, state in reversed(snapshots(prefix)):
        if ours is not None and iteration not in ours:
            continue
        problem = check_snapshot(state, solver_param)
        if problem is None:
            if damaged:
                log.warning('%s: damaged snapshot (%s); resuming from %s instead',
                            damaged[0][0], damaged[0][1], state)
            return iteration, state
        damaged.append(problem)
    if damaged:
        raise InputError('%s: damaged snapshot (%s); no complete snapshot to resume from; '
                         '--restart starts afresh' % damaged[0])
    return 0, None


@dataclasses.dataclass
class Result:
    log: TrainingLog
    weights: str          # the final caffemodel
    files: Dict[str, str]  # 'log', 'csv', 'json', 'plot' -> path
    iteration: int = 0    # the iteration reached: max_iter, whose snapshot is `weights`


def _why(log_path, returncode, start=0):
    """The reason caffe stopped, from its log after byte `start` (this
    run's part: the log is appended across runs): the non-finite loss, else
    a Python layer's error (which glog does not see), else glog's first
    fatal line."""
    fatal = layer_error = None
    with _tail(log_path, start) as f:
        for line in f:
            m = _NON_FINITE.search(line)
            if m:
                return ('iteration %s: the loss is %s; training stopped before the update. '
                        'Lower base_lr or check the data and labels, then run again to resume '
                        'from the last snapshot' % m.groups())
            if line.startswith(LAYER_ERROR) and layer_error is None:
                layer_error = line[len(LAYER_ERROR):].rstrip('\n')
            m = _FATAL.match(line)
            if m and fatal is None:
                fatal = m.group(1)
    why = layer_error or fatal
    return 'caffe train failed (exit %d)%s' % (returncode, ': ' + why if why else '')


def _tail(path, start):
    """The text file `path` from byte `start` on."""
    raw = open(path, 'rb')
    raw.seek(start)
    return io.TextIOWrapper(raw, errors='replace')


def check_device(solver, gpu=None, cwd=None):
    """UsageError, before Caffe starts, when the device training would use
    cannot run here: `gpu`, or (without it) a solver that says solver_mode:
    GPU, on a CPU-only build. The caffe tool trains on the CPU when the
    solver gives no mode, and `-gpu` overrides the solver's mode."""
    if gpu is not None:
        caffeio.require_gpu('--gpu %d' % gpu, device=gpu)
        return
    param = caffeio.read_solver(os.path.join(cwd or '.', solver))
    if param.HasField('solver_mode') and param.solver_mode == param.GPU:
        caffeio.require_gpu('%s says solver_mode: GPU' % solver,
                            'change it to CPU, or regenerate the net with make_net.py '
                            '--solver-mode CPU; a GPU needs make CUDA=1',
                            device=param.device_id)


def train(solver, weights=None, gpu=None, log_prefix=None, cwd=None, progress=False,
          resume=True):
    """`caffe train -solver solver`, resumed from the last snapshot of the
    solver's prefix if there is one (else started from `weights`, if given),
    on GPU `gpu` if given; not run again when that snapshot is max_iter's.
    `cwd`: the folder the solver's paths are relative to (default: the
    current one).

    Writes, beside `log_prefix` (default: the snapshot prefix): `.log`
    (Caffe's output, appended), `.csv` and `.json` (the parsed log), `.png`
    (loss and learning rate), also when training fails. Returns a Result;
    raises TrainingError saying why training stopped before max_iter.
    """
    where = cwd or '.'
    prefix, max_iter = snapshot_prefix(solver, cwd)
    log_prefix = log_prefix or prefix
    files = {k: os.path.join(where, log_prefix + ext)
             for k, ext in (('log', '.log'), ('csv', '.csv'), ('json', '.json'),
                            ('plot', '.png'))}
    if weights and not os.path.isfile(os.path.join(where, weights)):
        raise InputError('%s: %s (initial weights)' % (weights, 'a folder, not a caffemodel'
                         if os.path.isdir(os.path.join(where, weights)) else 'no such file'))
    check_device(solver, gpu, cwd)
    param = caffeio.read_solver(os.path.join(where, solver))
    net = train_net_param(param, where)  # read before the prefix is made
    identity = training_identity(param, net)
    full = os.path.join(where, prefix)
    if weights and not (resume and snapshots(full)):  # a resumed run ignores them
        check_initial_weights(os.path.join(where, weights), weights, net)
    with fileio.exclusive(full + '.lock', '%s: another training with this snapshot prefix'
                          % full) as lock:
        return _train(solver, param, identity, weights, gpu, cwd, resume, progress, full,
                      max_iter, files, lock)


def check_initial_weights(path, given, net):
    """InputError when `path` (--weights, spelt `given`) is no caffemodel
    (caffe would take a text file for an empty net) or shares no layer with
    weights with the train net `net` (caffe copies by name and would
    silently start from the fillers). Caffe reads a name ending in .h5 as
    HDF5 weights (Net.save_hdf5): their layers are the groups under data/
    that hold blobs."""
    if path.endswith('.h5'):
        import h5py
        try:
            with h5py.File(path, 'r') as f:
                stored = [name for name, group in f['data'].items() if len(group)] \
                    if 'data' in f else []
        except OSError as e:
            raise InputError('%s: not HDF5 weights (%s)' % (given, e))
    else:
        stored = caffeio.stored_blobs(caffeio.read_caffemodel(path))
    names = {l.name for l in list(net.layer) + list(net.layers)}
    if not names & set(stored):
        raise InputError('%s: none of its %d layer(s) with weights is in the net (%s); '
                         'weights of another net? (convert_weights.py maps an ImageNet '
                         'ResNet onto a generated net)'
                         % (given, len(stored), ', '.join(sorted(stored)[:5])))


def _die_with_parent():
    """In the caffe child: SIGTERM when the process that started it dies, so
    that killing train.py stops the training it started."""
    import ctypes
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _train(solver, param, identity, weights, gpu, cwd, resume, progress, prefix, max_iter,
           files, lock):
    """train() once its prefix is locked (`param`: the solver's parameters,
    `identity`: its training_identity; `prefix`: joined to cwd; `lock`: the
    lock's descriptor, which caffe inherits: the prefix stays locked while
    it runs, even past this process)."""
    where = cwd or '.'
    record = dict(identity, solver=solver, snapshots=[])
    record_path = prefix + '.training.json'
    ours = None
    existing = [i for i, _ in snapshots(prefix)] if resume else []
    if existing:
        ours = check_same_training(record_path, record, os.path.relpath(prefix, where))
        record['snapshots'] = ours if ours is not None else existing
    start, state = resume_point(prefix, param, ours) if resume else (0, None)

    def save_record():
        fileio.atomic_write(record_path, json.dumps(record, indent=1) + '\n')
    save_record()
    final = '%s_iter_%d.caffemodel' % (prefix, max_iter)
    if state and start > max_iter:
        raise InputError('%s: snapshots go to iteration %d, past max_iter %d of %s; raise '
                         'max_iter, or --restart to train afresh'
                         % (os.path.relpath(state, where), start, max_iter, solver))
    if state and start == max_iter:
        # Caffe would run one more forward and log its loss as the last
        # iteration's, over the training's own.
        log.info('already trained to iteration %d (%s); nothing to run', max_iter,
                 os.path.relpath(final, where))
        parsed = parse_log_file(files['log']) if os.path.isfile(files['log']) else parse_log('')
        return Result(parsed, final, files, max_iter)
    command = [paths.caffe_tool(), 'train', '-solver', solver]
    if state:
        command += ['-snapshot', os.path.relpath(state, where)]
        log.info('resuming from %s (iteration %d)%s', os.path.relpath(state, where), start,
                 '; -weights ignored' if weights else '')
    elif weights:
        command += ['-weights', weights]
    if gpu is not None:
        command += ['-gpu', str(gpu)]
    log.info('%s', ' '.join(command))
    fileio.ensure_dir(os.path.dirname(os.path.abspath(files['log'])))
    # Where this run's part of the appended log begins: its errors are read there.
    log_start = os.path.getsize(files['log']) if os.path.isfile(files['log']) else 0
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=max_iter, initial=start, unit='it', desc='train')
    done = start
    try:
        with open(files['log'], 'a') as out:
            # The data layer continues its stream where the snapshot's run left it.
            env = caffe_env()
            env[DATA_RESUME] = str(start * max(param.iter_size, 1))
            proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors='replace',
                                    pass_fds=(lock,), preexec_fn=_die_with_parent)
            try:
                for line in proc.stdout:
                    out.write(line)
                    out.flush()   # so that `tail -f` and a killed run see every line
                    m = _SNAPSHOTTING.search(line)
                    if m and int(m.group(1)) not in record['snapshots']:
                        record['snapshots'].append(int(m.group(1)))
                        save_record()
                    m = _PROGRESS.search(line)
                    if m and int(m.group(1)) > done:
                        if bar is not None:
                            bar.update(int(m.group(1)) - done)
                        done = int(m.group(1))
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
    finally:
        if bar is not None:
            bar.close()
        parsed = write_reports(files)
    if proc.returncode != 0:
        raise TrainingError('%s%s; see %s' % (
            _why(files['log'], proc.returncode, log_start),
            ' (resumed from %s)' % state if state else '', files['log']))
    with _tail(files['log'], log_start) as f:
        finished = parse_log(f).finished
    if not finished or not os.path.exists(final):
        raise TrainingError('caffe train stopped before iteration %d; see %s'
                            % (max_iter, files['log']))
    return Result(parsed, final, files, max_iter)


def write_reports(files):
    """Parse the log at files['log'] and write its CSV, JSON and plot."""
    parsed = parse_log_file(files['log'])
    fileio.atomic_write(files['csv'], log_csv(parsed))
    fileio.atomic_write(files['json'], log_json(parsed))
    plot({'': parsed}, files['plot'])
    return parsed
