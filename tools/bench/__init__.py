"""The benchmarks behind benchmarks/*.md, one module each, run by
scripts/bench_*.py: layers, memory, infer, data, peers (with peer_worker,
the per-framework child), bootstrap (the miniature Table 4), build (Caffe's
build times, and a fresh clone to green), and torch_gpu (the GPU check's
PyTorch side); `cpu` and `machine` name the machine in the reports of
layers, memory, peers and build."""
import os
import platform
import re


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
