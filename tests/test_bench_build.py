"""scripts/bench_clone.py's runner: a fresh clone of a repository taken
through phases, each timed, on fake phases in a small repository."""
import json
import os
import subprocess
import tempfile

import pytest

from fcrn.errors import InputError
from tools import bench
from tools.bench import build


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / 'repo'
    path.mkdir()
    (path / 'marker').write_text('committed\n')
    (path / 'untracked').write_text('not committed\n')
    git = ['git', '-C', str(path), '-c', 'user.name=t', '-c', 'user.email=t@t']
    subprocess.run(git[:3] + ['init', '-q'], check=True)
    subprocess.run(git[:3] + ['add', 'marker'], check=True)
    subprocess.run(git + ['commit', '-q', '-m', 'one'], check=True)
    return path


def test_each_phase_runs_in_the_clone_with_an_empty_cache_and_is_timed(repo, tmp_path):
    out = tmp_path / 'build.md'
    phases = (('reads the clone', ['sh', '-c', 'cat marker; test ! -e untracked']),
              ('sees the cache', ['sh', '-c', 'test ! -e "$FCRN_CACHE_DIR" && sleep 1']),
              ('tests', ['sh', '-c', 'echo "== 3 passed, 1 skipped in 0.1s =="']))
    results = build.measure_clone(str(out), phases=phases, repo=str(repo),
                                  keep=str(tmp_path / 'scratch'))
    assert [r['phase'] for r in results] == [p[0] for p in phases]
    assert results[1]['seconds'] >= 1
    assert results[0]['summaries'] == [] and results[1]['summaries'] == ['printed nothing']
    assert results[2]['summaries'] == ['3 passed, 1 skipped in 0.1s']
    report = out.read_text().splitlines()
    assert report[0] == build.CLONE_TITLE
    total = sum(r['seconds'] for r in results) / 60
    assert report[-1] == '| **total** | **%.1f** | | | |' % total
    assert '| tests | 0.0 |' in report[-2] and report[-2].endswith('| 3 passed, 1 skipped in 0.1s |')
    assert json.loads((tmp_path / 'build.json').read_text())['results'] == results


def test_a_failed_phase_names_its_log_and_writes_no_report(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))  # the kept scratch folder
    out = tmp_path / 'build.md'
    phases = (('fine', ['true']), ('breaks', ['sh', '-c', 'echo boom; exit 3']),
              ('never', ['true']))
    with pytest.raises(InputError, match=r"`sh -c echo boom; exit 3` failed \(exit 3\)") as e:
        build.measure_clone(str(out), phases=phases, repo=str(repo))
    log_path = str(e.value).rsplit(': ', 1)[1]
    assert open(log_path).read() == 'boom\n'
    assert not out.exists() and not (tmp_path / 'build.json').exists()


def test_the_environment_leaves_out_the_checkout_build(tmp_path, monkeypatch):
    monkeypatch.setenv('FCRN_LAYERS_LIB', '/somewhere/libfcrn_layers.so')
    env = build.clone_env(str(tmp_path / 'cache'), build.ROOT)
    assert env['FCRN_CACHE_DIR'] == str(tmp_path / 'cache') and 'FCRN_LAYERS_LIB' not in env
    assert 'VIRTUAL_ENV' not in env
    assert not any(d.startswith(build.ROOT + os.sep) for d in env['PATH'].split(os.pathsep))


def test_the_cpu_is_named_by_model_family_and_vector_instructions():
    with open('/proc/cpuinfo') as f:
        first = f.read().split('\n\n')[0]
    fields = dict(line.split(':', 1) for line in first.splitlines() if ':' in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = fields['flags'].split()
    vector = 'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else None
    name = bench.cpu()
    assert name.startswith(fields['model name'] + ' (family %s, model %s' % (
        fields['cpu family'], fields['model']))
    if vector:
        assert name.endswith('; %s)' % vector)
