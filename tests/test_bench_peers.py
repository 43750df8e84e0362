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
                 '--repeats', '2', '--variants', 'caffe', 'caffe-unshared', 'caffe-im2col',
                 '--out', str(out),
                 # a machine's pin, which the workers must not inherit
                 env=dict(os.environ, OPENBLAS_CORETYPE='Prescott'))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / 'peers.json').read_text())
    assert [(e['mode'], e['group']) for e in record['records']] == [
        ('forward', 0), ('forward', 1), ('backward', 0), ('backward', 1)]
    for entry in record['records']:
        # each repeat with fresh workers, the second in the reverse order
        positions = {name: [repeat['position'] for repeat in r['repeats']]
                     for name, r in entry['results'].items()}
        assert positions == ({'caffe': [0, 1], 'caffe-unshared': [1, 0]} if entry['group'] == 0
                             else {'caffe': [0, 1], 'caffe-im2col': [1, 0]}), positions
        for r in entry['results'].values():
            assert [len(repeat['seconds']) for repeat in r['repeats']] == [2, 2]
            assert sorted(r['seconds']) == sorted(s for repeat in r['repeats']
                                                  for s in repeat['seconds'])
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
    assert '0 warm-up passes, then the median of 2;' in text
    assert 'Targets' in text
    assert "Where Caffe's time goes" in text
    # --report writes the same report from the JSON alone
    out.unlink()
    result = run('--report', str(tmp_path / 'peers.json'))
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_text() == text


def test_profile_accounts_for_every_layer(tmp_path):
    result = run('--cases', '0', '--size', '97', '--runs', '3', '--warmup', '1', '--no-gemm',
                 '--repeats', '1', '--variants', 'caffe', 'caffe-unshared', 'caffe-im2col',
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
    assert '1 warm-up pass, then the median of 3.' in (tmp_path / 'peers.md').read_text()


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


def test_input_scale_makes_homogeneous_scores_spread_as_asked():
    """A net whose scores are a large homogeneous function of its input (as
    the benchmark's, whose softmax saturates at any fixed input scale): the
    scale found gives scores of the spread asked for, computed here from the
    scores themselves."""
    import numpy as np
    from tools.bench.peer_worker import SCORE_SPREAD, input_scale
    scores = np.random.RandomState(1).randn(1, 21, 5, 6) * 1e5

    def probabilities(alpha):
        z = alpha * scores
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    assert probabilities(1.0).min() == 0  # saturated as it stands
    scaled = input_scale(probabilities) * scores
    spread = scaled.std(axis=1).mean()
    assert abs(spread - SCORE_SPREAD) < 1e-4 * SCORE_SPREAD, spread


def test_caffe_worker_backward_carries_gradients_of_what_pytorch_computes():
    """The Caffe side's forward + backward: an unsaturated softmax, a non-zero
    gradient of the input, and none computed for the frozen normalisation
    (force_backward computed them, where PyTorch computes none)."""
    import argparse
    import numpy as np
    from tools.bench.peer_worker import CaffePeer
    peer = CaffePeer(argparse.Namespace(depth=50, kernel=3, dilation=12, size=65,
                                        mode='backward', no_share_memory=False))
    peer.run()
    net = peer.net
    assert np.median(net.blobs['prob'].data.max(axis=1)) < 0.99
    assert np.abs(peer.input(net)).std() > 0
    assert np.abs(net.params[peer.input_layer][0].diff).max() > 0
    convs = [name for name in net.params if net.layer_dict[name].type == 'Convolution']
    assert all(np.abs(net.params[name][0].diff).max() > 0 for name in convs)
    norms = [name for name in net.params if net.layer_dict[name].type == 'LeanBatchNorm']
    assert len(norms) == 53
    assert all(not np.any(p.diff) for name in norms for p in net.params[name])


def test_memory_is_held_to_pytorchs_leanest_and_time_to_its_fastest():
    from tools.bench import peers

    def result(framework, median, peak, baseline):
        return dict(variant=framework, framework=framework.split('-')[0], median=median,
                    peak_rss=peak, baseline_rss=baseline)
    record = dict(records=[dict(name='R', mode='forward', group=0, results={
        'caffe': result('caffe', 1.0, 0.5e9, 0.2e9),
        'torch': result('torch', 2.0, 0.9e9, 0.7e9),          # slower, leaner
        'torch-cl': result('torch-cl', 1.25, 1.25e9, 0.75e9)})])
    lines = peers.targets(record, peers.REFERENCE)
    # time 1.0/1.25; peak 0.5/0.9 (not 0.5/1.25); net 0.3/0.2
    assert lines[-4] == '| R | forward | caffe | 0.80x met | 0.56x NOT met | 1.50x |', lines[-4]
    assert lines[-2] == 'Met: 1 of 2 targets.', lines[-2]


def test_schedule_changes_each_variants_predecessor_and_first_place():
    """Workers run round-robin, so a variant's predecessor is the one before
    it in the order, cyclically: over repeats each has more than one, and
    more than one variant runs first."""
    from tools.bench import peers
    group = ['a', 'b', 'c', 'd']
    orders = [peers.schedule(group, repeat) for repeat in range(4)]
    assert orders[0] == group and all(sorted(order) == group for order in orders)
    for name in group:
        before = {order[order.index(name) - 1] for order in orders}
        assert len(before) == 2, (name, orders)
    assert len({order[0] for order in orders}) == 4, orders


def test_targets_are_judged_repeat_by_repeat_against_pytorch_in_the_same_repeat():
    """Three repeats: Caffe's time against PyTorch's fastest of the same
    repeat holds in two (1.0/1.1, 1.1/1.2) and not in the third (0.9/0.85),
    although the medians over the repeats (1.0 against 1.1) would say met;
    the peak holds in every repeat."""
    from tools.bench import peers

    def result(framework, medians, peaks, baseline=0.1e9):
        repeats = [dict(median=m, peak_rss=p, baseline_rss=baseline)
                   for m, p in zip(medians, peaks)]
        return dict(variant=framework, framework=framework.split('-')[0], repeats=repeats,
                    median=sorted(medians)[1], peak_rss=max(peaks), baseline_rss=baseline)
    record = dict(repeats=3, records=[dict(name='R', mode='backward', group=0, results={
        'caffe': result('caffe', [1.0, 1.1, 0.9], [0.5e9, 0.6e9, 0.7e9]),
        'torch': result('torch', [1.1, 1.3, 0.85], [1.0e9, 1.0e9, 1.0e9]),
        'torch-cl': result('torch-cl', [1.2, 1.2, 0.95], [2.0e9, 2.0e9, 2.0e9])})])
    lines = peers.targets(record, peers.REFERENCE)
    # time: 1.0/1.1, 1.1/1.2, 0.9/0.85; peak 0.5, 0.6, 0.7 of 1.0; net 0.4 to 0.6 of 0.9
    assert lines[-4] == ('| R | backward | caffe | 0.92x (0.91-1.06) met in 2 of 3 '
                         '| 0.60x (0.50-0.70) met | 0.56x (0.44-0.67) |'), lines[-4]
    assert lines[-2] == 'Met in every repeat: 1 of 2 targets.', lines[-2]


def test_peak_rss_is_the_process_own_not_its_parents():
    """A child's ru_maxrss starts at its parent's peak (fork, then exec);
    bench.peak_rss reads the child's own VmHWM."""
    import resource
    ballast = bytearray(400 * 2 ** 20)  # noqa: F841  (resident: bytearray writes zeros)
    ballast[::4096] = b'\1' * len(ballast[::4096])
    child = subprocess.run([sys.executable, '-c', 'import resource, sys; sys.path.insert(0, %r); '
                            'from tools import bench; print(bench.peak_rss(), resource.getrusage('
                            'resource.RUSAGE_SELF).ru_maxrss * 1024)' % ROOT],
                           capture_output=True, text=True, check=True)
    own, inherited = map(int, child.stdout.split())
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert inherited >= 400 * 2 ** 20 and own < 200 * 2 ** 20, (own, inherited, parent)
