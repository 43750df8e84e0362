"""scripts/bench_peers.py's plumbing on its Caffe side (PyTorch needs a few GB
from PyPI, so its side runs only in `make bench-peers`)."""
import json
import os
import subprocess
import sys

from conftest import ROOT
from fcrn import blas

SCRIPT = os.path.join(ROOT, 'scripts', 'bench_peers.py')


def run(*args, env=None):
    return subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env=env)


def test_caffe_variants_alternate_and_the_generated_net_shares_memory(tmp_path):
    out = tmp_path / 'peers.md'
    result = run('--cases', '2', '--size', '97', '--runs', '2', '--warmup', '0', '--no-gemm',
                 '--variants', 'caffe', 'caffe-unshared', 'caffe-im2col',
                 '--out', str(out),
                 # a machine's pin, which the workers must not inherit
                 env=dict(os.environ, OPENBLAS_CORETYPE='Prescott'))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / 'peers.json').read_text())
    assert [(e['mode'], e['group']) for e in record['records']] == [
        ('forward', 0), ('forward', 1), ('backward', 0), ('backward', 1)]
    for entry in record['records']:
        for r in entry['results'].values():
            assert len(r['seconds']) == 2
            assert r['output_shape'] == [1, 21, 12, 12]  # 97 -> 49 -> 24 (pool) -> 12
            # the kernels `import fcrn` names in the worker (fcrn/blas.py)
            assert blas.kernels_for(r['settings']['openblas_kernels'], blas.cpu_flags()) is None
    first = {e['mode']: e['results'] for e in record['records'] if e['group'] == 0}
    for mode in ('forward', 'backward'):
        plain, shared = first[mode]['caffe-unshared'], first[mode]['caffe']
        assert shared['peak_rss'] - shared['baseline_rss'] < \
            plain['peak_rss'] - plain['baseline_rss'], mode
    text = out.read_text()
    assert '| R101 1/8 (k5 d12), 97x97 | 2 | caffe-im2col |' in text
    assert 'Targets' in text
    assert "Where Caffe's time goes" in text


def test_profile_accounts_for_every_layer(tmp_path):
    result = run('--cases', '0', '--size', '97', '--runs', '3', '--warmup', '1', '--no-gemm',
                 '--variants', 'caffe', 'caffe-unshared', 'caffe-im2col',
                 '--out', str(tmp_path / 'peers.md'))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / 'peers.json').read_text())
    assert [e['group'] for e in record['records']] == [0, 1, 0, 1]
    for entry in record['records']:
        results = entry['results']
        if entry['group'] == 1:
            assert results['caffe']['profile'] is None  # the levers' group: not profiled
            continue
        assert results['caffe-unshared']['profile'] is None  # only the reference is profiled
        profile = results['caffe']['profile']
        # R50: a 7x7 stem, 1x1 and 3x3 convolutions, a 3x3 classifier, the rest.
        assert sorted(profile) == sorted(['stem', '1x1 convolutions', '3x3 convolutions',
                                          'classifier', 'element-wise', 'other'])
        assert all(seconds > 0 for seconds in profile.values()), profile
        # Every layer counted, in its kind: ResNet-50's 16 bottleneck blocks
        # have two 1x1 and one 3x3 convolution each, the first block of each
        # of the 4 stages a 1x1 projection; each convolution but the
        # classifier is normalised (53), ReLUs follow the stem, 2a, 2b and
        # every sum (1 + 3 x 16), 16 sums, 1 max-pool, and Caffe splits each
        # block's input in two (16). The rest: the input and the softmax.
        assert results['caffe']['profile_layers'] == {
            'stem': 1, '1x1 convolutions': 2 * 16 + 4, '3x3 convolutions': 16, 'classifier': 1,
            'element-wise': 53 + (1 + 3 * 16) + 16 + 1 + 16, 'other': 2}


def test_unknown_variant_is_a_usage_error():
    result = run('--variants', 'caffe', 'cafe')
    assert result.returncode == 2
    assert "--variants: unknown cafe" in result.stderr and "Traceback" not in result.stderr


def test_a_group_left_with_only_what_an_earlier_one_runs_is_dropped():
    from tools.bench import peers
    groups = peers.variant_groups()
    chosen = peers.select_groups(groups, ['caffe', 'caffe-unshared', 'torch'])
    assert [[v.name for v in g] for g in chosen] == [['caffe', 'caffe-unshared', 'torch']]
    chosen = peers.select_groups(groups, ['caffe', 'caffe-im2col'])
    assert [[v.name for v in g] for g in chosen] == [['caffe'], ['caffe', 'caffe-im2col']]
    assert [len(g) for g in peers.select_groups(groups)] == [len(g) for g in groups]
