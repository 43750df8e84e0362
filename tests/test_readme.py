"""Every README command block marked `<!-- tested -->` runs as written.

The blocks run with bash -e in a scratch directory that mirrors the
repository's top level by symbolic links, so that what they write stays out
of the checkout. Blocks marked `<!-- tested: NAME -->` are one walkthrough:
they run in order in one scratch directory, each on what the previous ones
wrote. Blocks that need the real datasets, ImageNet weights or a GPU are not
marked."""
import collections
import os
import re
import subprocess

import pytest

from conftest import ROOT

README = os.path.join(ROOT, "README.md")
BLOCK = re.compile(r"<!-- tested(?:: ([^>]*?))? -->\n```sh\n(.*?)```", re.S)


def readme_groups():
    """[[block, ...]]: a lone block, or a walkthrough's blocks in order."""
    with open(README) as f:
        found = BLOCK.findall(f.read())
    groups = collections.OrderedDict()
    for n, (name, block) in enumerate(found):
        groups.setdefault(name.strip() or n, []).append(block)
    return list(groups.values())


def test_readme_has_tested_blocks():
    assert len(readme_groups()) >= 2
    assert max(len(g) for g in readme_groups()) >= 3   # the own-dataset walkthrough


@pytest.mark.parametrize("blocks", readme_groups(), ids=lambda g: g[0].splitlines()[0][:40])
def test_readme_block_runs(tmp_path, blocks):
    for name in os.listdir(ROOT):
        if name not in (".git", "work"):
            os.symlink(os.path.join(ROOT, name), tmp_path / name)
    for block in blocks:
        result = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, capture_output=True,
                                text=True, timeout=600,
                                env=dict(os.environ, GLOG_minloglevel="1"))
        assert result.returncode == 0, (block, result.stdout[-2000:], result.stderr[-2000:])
