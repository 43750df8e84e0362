"""Failure paths of the set-up scripts: each says what went wrong and leaves
nothing that a later run could take for a finished build."""
import glob
import os
import shutil
import subprocess

import pytest

import fcrn

SCRIPTS = os.path.join(fcrn.ROOT, "scripts")


def fake_commands(tmp_path, **scripts):
    """A directory of stand-in commands, to put first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(0o755)
    return dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]))


def copy_project(tmp_path, extra_patch=None):
    root = tmp_path / "project"
    shutil.copytree(os.path.join(fcrn.ROOT, "scripts"), root / "scripts")
    shutil.copytree(os.path.join(fcrn.ROOT, "cpp", "patches"), root / "cpp" / "patches")
    if extra_patch:
        (root / "cpp" / "patches" / "9999-broken.patch").write_text(extra_patch)
    return root


def test_install_deps_without_root_says_what_to_run(tmp_path):
    env = fake_commands(tmp_path, id="echo 1000", sudo="exit 1",
                        **{"dpkg-query": "exit 1"})
    result = subprocess.run(["bash", os.path.join(SCRIPTS, "install_deps.sh")],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "not root and no password-less sudo; run as root:" in result.stderr
    assert "apt-get install -y --no-install-recommends build-essential" in result.stderr


def test_build_caffe_without_network_says_so(tmp_path):
    env = fake_commands(tmp_path, **{"apt-get": "echo 'no network' >&2; exit 100"})
    env["FCRN_CACHE_DIR"] = str(tmp_path / "cache")
    project = copy_project(tmp_path)
    result = subprocess.run(["bash", str(project / "scripts" / "build_caffe.sh")],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "could not download the source package from deb.debian.org" in result.stderr
    assert not glob.glob(str(tmp_path / "cache" / "caffe-*"))
    assert not glob.glob(str(tmp_path / "cache" / "debian-src" / "*"))


def test_failed_build_leaves_no_prefix(tmp_path):
    """A patch that does not apply stops the build before anything is installed."""
    real_cache = os.path.dirname(subprocess.run(
        ["bash", os.path.join(SCRIPTS, "build_caffe.sh"), "--print-prefix"],
        capture_output=True, text=True, check=True).stdout.strip())
    sources = glob.glob(os.path.join(real_cache, "debian-src", "caffe_*"))
    if not sources:
        pytest.skip("no cached Debian source package to build from")
    cache = tmp_path / "cache"
    (cache / "debian-src").mkdir(parents=True)
    for path in sources:
        shutil.copy(path, cache / "debian-src")
    project = copy_project(tmp_path, extra_patch=(
        "--- a/CMakeLists.txt\n+++ b/CMakeLists.txt\n@@ -1,1 +1,1 @@\n"
        "-this line is not in the file\n+neither is this one\n"))
    env = dict(os.environ, FCRN_CACHE_DIR=str(cache))
    result = subprocess.run(["bash", str(project / "scripts" / "build_caffe.sh")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "applying 9999-broken.patch" in result.stderr
    assert "failed; nothing was installed" in result.stderr
    assert not glob.glob(str(cache / "caffe-*"))
    assert not glob.glob(str(cache / "stage-*"))
