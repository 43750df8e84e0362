"""Every README command block marked `<!-- tested -->` runs as written.

The blocks run with bash -e in a scratch directory that mirrors the
repository's top level by symbolic links, so that what they write stays out
of the checkout. Blocks that need the real datasets or ImageNet weights are
not marked."""
import os
import re
import subprocess

import pytest

import fcrn

README = os.path.join(fcrn.ROOT, "README.md")
BLOCK = re.compile(r"<!-- tested -->\n```sh\n(.*?)```", re.S)


def readme_blocks():
    with open(README) as f:
        return BLOCK.findall(f.read())


def test_readme_has_tested_blocks():
    assert len(readme_blocks()) >= 2


@pytest.mark.parametrize("block", readme_blocks(), ids=lambda b: b.splitlines()[0][:40])
def test_readme_block_runs(tmp_path, block):
    for name in os.listdir(fcrn.ROOT):
        if name not in (".git", "work"):
            os.symlink(os.path.join(fcrn.ROOT, name), tmp_path / name)
    result = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600,
                            env=dict(os.environ, GLOG_minloglevel="1"))
    assert result.returncode == 0, (block, result.stdout[-2000:], result.stderr[-2000:])
