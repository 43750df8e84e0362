"""Every command block marked `<!-- tested -->` in the README and the other
documents (DOCUMENTS) runs as written.

The blocks run with bash -e in a scratch directory that mirrors the
repository's top level by symbolic links, so that what they write stays out
of the checkout. Blocks marked `<!-- tested: NAME -->` are one walkthrough:
they run in order in one scratch directory, each on what the previous ones
wrote. Blocks that need the real datasets, ImageNet weights or a GPU are not
marked."""
import collections
import glob
import os
import re
import subprocess

import pytest

from conftest import ROOT

DOCUMENTS = sorted([os.path.join(ROOT, name) for name in ("README.md", "CHANGELOG.md")] +
                   glob.glob(os.path.join(ROOT, "docs", "*.md")) +
                   [os.path.join(ROOT, "benchmarks", "README.md")])
BLOCK = re.compile(r"<!-- tested(?:: ([^>]*?))? -->\n```sh\n(.*?)```", re.S)


def readme_groups():
    """[(document, [block, ...])]: a lone block, or a walkthrough's blocks in
    order (a walkthrough lies in one document)."""
    groups = collections.OrderedDict()
    for path in DOCUMENTS:
        with open(path) as f:
            found = BLOCK.findall(f.read())
        name = os.path.relpath(path, ROOT)
        for n, (walk, block) in enumerate(found):
            groups.setdefault((name, walk.strip() or n), []).append(block)
    return [(name, blocks) for (name, _), blocks in groups.items()]


def test_documents_have_tested_blocks():
    groups = readme_groups()
    assert {"README.md", "docs/usage.md"} <= {name for name, _ in groups}
    assert len(groups) >= 3
    assert max(len(blocks) for _, blocks in groups) >= 3   # the own-dataset walkthrough


@pytest.mark.parametrize("name,blocks", readme_groups(),
                         ids=lambda g: g if isinstance(g, str) else g[0].splitlines()[0][:40])
def test_readme_block_runs(tmp_path, name, blocks):
    for name in os.listdir(ROOT):
        if name not in (".git", "work"):
            os.symlink(os.path.join(ROOT, name), tmp_path / name)
    for block in blocks:
        result = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, capture_output=True,
                                text=True, timeout=600,
                                env=dict(os.environ, GLOG_minloglevel="1"))
        assert result.returncode == 0, (block, result.stdout[-2000:], result.stderr[-2000:])
