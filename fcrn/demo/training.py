"""Run `caffe train` as a user would, resuming from the last snapshot.

Caffe snapshots to `<prefix>_iter_<N>.caffemodel` and `.solverstate`;
`caffe train -solver S -snapshot <prefix>_iter_<N>.solverstate` continues at
iteration N with the weights, momentum and iteration count of the snapshot,
so an interrupted run loses only the iterations since its last snapshot.
"""
import glob
import logging
import os
import re
import shutil
import subprocess

from . import traininglog

log = logging.getLogger(__name__)

_ITER = re.compile(r'_iter_(\d+)\.solverstate$')
_PROGRESS = re.compile(r'\] Iteration (\d+)')


def caffe_tool():
    """The project's `caffe` (the wrapper that preloads the custom layers)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    built = os.path.join(here, 'build', 'bin', 'caffe')
    return built if os.access(built, os.X_OK) else shutil.which('caffe') or 'caffe'


def caffe_env(env=None):
    """Environment in which caffe logs every INFO line (iterations, losses,
    learning rates) to stderr only, as the log parser needs."""
    env = dict(os.environ if env is None else env)
    env.update(GLOG_minloglevel='0', GLOG_logtostderr='1')
    return env


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


def train(solver, log_path, prefix, max_iter, cwd=None, weights=None, progress=None):
    """`caffe train -solver solver` (cwd: the folder the solver's paths are
    relative to), resumed with -snapshot from the last snapshot of `prefix`
    (relative to cwd) if there is one. The log is appended to `log_path`.

    `progress(total, initial)` returns an object with update(n) and close()
    (e.g. a tqdm). Returns (the parsed log of the whole training, the final
    weights path). Raises RuntimeError naming the log when caffe fails.
    """
    where = cwd or '.'
    start, state = latest_snapshot(os.path.join(where, prefix))
    command = [caffe_tool(), 'train', '-solver', solver]
    if state:
        command += ['-snapshot', os.path.relpath(state, where)]
        log.info('resuming from %s (iteration %d)', os.path.relpath(state, where), start)
    elif weights:
        command += ['-weights', weights]
    log.info('%s', ' '.join(command))
    bar = progress(max_iter, start) if progress else None
    done = start
    with open(log_path, 'a') as out:
        proc = subprocess.Popen(command, cwd=cwd, env=caffe_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors='replace')
        try:
            for line in proc.stdout:
                out.write(line)
                out.flush()   # so that `tail -f` and a killed run see every line
                m = _PROGRESS.search(line)
                if m and bar is not None and int(m.group(1)) > done:
                    bar.update(int(m.group(1)) - done)
                    done = int(m.group(1))
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if bar is not None:
                bar.close()
    if proc.returncode != 0:
        raise RuntimeError('caffe train failed (exit %d); see %s' % (proc.returncode, log_path))
    parsed = traininglog.parse_file(log_path)
    final = os.path.join(where, '%s_iter_%d.caffemodel' % (prefix, max_iter))
    if not parsed.finished or not os.path.exists(final):
        raise RuntimeError('caffe train stopped before iteration %d; see %s'
                           % (max_iter, log_path))
    return parsed, final
