"""The benchmarks behind benchmarks/*.md, one module each, run by
scripts/bench_*.py: layers, memory, infer, data, peers (with peer_worker,
the per-framework child), bootstrap (the miniature Table 4), build (Caffe's
build times, and a fresh clone to green), and torch_gpu (the GPU check's
PyTorch side); `cpu` and `machine` name the machine in the reports of
layers, memory, peers and build; `peak_rss` is every benchmark's memory
figure and `commit` names the code a report measured."""
import os
import platform
import re
import subprocess

from tools import ROOT


def cpu():
    """The CPU as the reports name it: its model, family and model numbers
    and widest vector instructions ('AMD EPYC (family 23, model 1; AVX2)'),
    since one model name covers CPUs generations apart."""
    try:
        with open('/proc/cpuinfo') as f:
            info = f.read().split('\n\n')[0]
    except OSError:
        return platform.processor() or platform.machine() or 'unknown CPU'

    def field(name):
        match = re.search(r'^%s\s*:\s*(.*)$' % name, info, re.M)
        return match.group(1).strip() if match else '?'
    flags = field('flags').split()
    vector = next((name for flag, name in (('avx512f', 'AVX-512'), ('avx2', 'AVX2'),
                                           ('avx', 'AVX')) if flag in flags), 'no AVX')
    return '%s (family %s, model %s; %s)' % (field('model name'), field('cpu family'),
                                             field('model'), vector)


def machine():
    """'CPU, N cores' for a report's machine line."""
    return '%s, %d cores' % (cpu(), os.cpu_count())


def peak_rss(pid='self'):
    """Peak resident set (bytes) of a process image: its VmHWM. Not
    getrusage's ru_maxrss, which a child started by fork (or vfork) and exec
    inherits from its parent: a child of a large parent reports the parent's
    peak."""
    with open('/proc/%s/status' % pid) as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmHWM:'))


def commit(repo=ROOT, changes=True):
    """`repo`'s commit ('9c9710a'; with `changes`, '9c9710a+changes' where
    tracked files other than results under benchmarks/ differ from it), or
    None outside a git checkout."""
    def git(*args):
        return subprocess.run(['git', '-C', repo] + list(args), capture_output=True, text=True)
    head = git('rev-parse', '--short', 'HEAD')
    if head.returncode != 0:
        return None
    dirty = changes and git('diff', '--quiet', 'HEAD', '--', '.',
                            ':(exclude)benchmarks').returncode != 0
    return head.stdout.strip() + ('+changes' if dirty else '')
