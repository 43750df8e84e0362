"""Failure paths of the set-up scripts: each says what went wrong and leaves
nothing that a later run could take for a finished build."""
import glob
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

SCRIPTS = os.path.join(ROOT, "scripts")


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
    shutil.copytree(os.path.join(ROOT, "scripts"), root / "scripts")
    shutil.copytree(os.path.join(ROOT, "cpp", "patches"), root / "cpp" / "patches")
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
    assert "could not download the source package from" in result.stderr
    assert "set FCRN_DEBIAN_MIRROR to a mirror" in result.stderr
    assert not glob.glob(str(tmp_path / "cache" / "caffe-*"))
    assert not glob.glob(str(tmp_path / "cache" / "debian-src" / "*"))


def apt_sources_used(tmp_path, **env_vars):
    """The private sources.list build_caffe.sh hands apt-get (which fails)."""
    env = fake_commands(tmp_path, **{"apt-get": (
        'for a in "$@"; do case "$a" in Dir::Etc::SourceList=*) '
        'cat "${a#Dir::Etc::SourceList=}" >&2;; esac; done; exit 100')})
    env.update(FCRN_CACHE_DIR=str(tmp_path / "cache"), **env_vars)
    project = copy_project(tmp_path)
    result = subprocess.run(["bash", str(project / "scripts" / "build_caffe.sh")],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 1
    return [line for line in result.stderr.splitlines() if line.startswith("deb-src")]


def test_build_caffe_takes_the_mirror_from_apt(tmp_path):
    """No host is written in the project: the mirror is the machine's own."""
    lines = apt_sources_used(tmp_path)
    assert len(lines) == 1
    uri = lines[0].split("]")[1].split()[0]
    configured = subprocess.run("cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null",
                                shell=True, capture_output=True, text=True).stdout
    assert uri in configured
    assert lines[0].endswith(" bullseye main")


def test_build_caffe_mirror_can_be_overridden(tmp_path):
    lines = apt_sources_used(tmp_path, FCRN_DEBIAN_MIRROR="http://mirror.invalid/debian")
    assert lines and "http://mirror.invalid/debian bullseye main" in lines[0]


def cuda_preflight(tmp_path, **env_vars):
    """build_caffe.sh --cuda, stopped by what it lacks before building."""
    env = dict(os.environ, FCRN_CACHE_DIR=str(tmp_path / "cache"), **env_vars)
    result = subprocess.run(["bash", os.path.join(SCRIPTS, "build_caffe.sh"), "--cuda"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert not (tmp_path / "cache").exists() or not glob.glob(str(tmp_path / "cache" / "*"))
    return result.stderr


def test_cuda_build_without_nvcc_says_which_flag(tmp_path):
    err = cuda_preflight(tmp_path, PATH="/usr/bin:/bin", CUDA_HOME=str(tmp_path / "nocuda"))
    assert "CUDA build asked for, but no nvcc" in err and "CUDA=0" in err


def fake_cuda(tmp_path):
    cuda = tmp_path / "cuda"
    (cuda / "bin").mkdir(parents=True)
    (cuda / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (cuda / "bin" / "nvcc").chmod(0o755)
    return cuda


def test_cuda_build_with_old_cudnn_says_which_flag(tmp_path):
    cudnn = tmp_path / "cudnn"
    (cudnn / "include").mkdir(parents=True)
    (cudnn / "include" / "cudnn_version.h").write_text("#define CUDNN_MAJOR 7\n")
    err = cuda_preflight(tmp_path, CUDA_HOME=str(fake_cuda(tmp_path)), CUDNN_ROOT=str(cudnn))
    assert "cuDNN 7 found; cuDNN 8 or later is needed" in err and "--no-cudnn (make CUDNN=0)" in err


def test_cuda_build_without_cudnn_says_which_flag(tmp_path):
    err = cuda_preflight(tmp_path, CUDA_HOME=str(fake_cuda(tmp_path)),
                         CUDNN_ROOT=str(tmp_path / "nothing"))
    assert "cuDNN not found" in err and "--no-cudnn (make CUDNN=0)" in err


def test_cuda_build_without_nccl_says_which_flag(tmp_path):
    cudnn = tmp_path / "cudnn"
    (cudnn / "include").mkdir(parents=True)
    (cudnn / "include" / "cudnn_version.h").write_text("#define CUDNN_MAJOR 9\n")
    err = cuda_preflight(tmp_path, CUDA_HOME=str(fake_cuda(tmp_path)), CUDNN_ROOT=str(cudnn),
                         NCCL_DIR=str(tmp_path / "nothing"))
    assert "NCCL not found" in err and "--no-nccl (make NCCL=0)" in err


def test_install_deps_refuses_another_system(tmp_path):
    release = tmp_path / "os-release"
    release.write_text('ID=ubuntu\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04 LTS"\n')
    result = subprocess.run(["bash", os.path.join(SCRIPTS, "install_deps.sh")],
                            env=dict(os.environ, FCRN_OS_RELEASE=str(release)),
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "builds on Debian 12 (bookworm); this machine is ubuntu 24.04" in result.stderr
    assert "FCRN_SKIP_OS_CHECK=1" in result.stderr


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


def test_make_test_without_nvcc_skips_the_gpu_kit_with_one_line():
    """`make test`'s kit step on a machine without the CUDA toolkit (nvcc
    hidden as CI hides it): one line, why and how, and success; with nvcc
    the same step builds the kit (dry run). `-o all`: nothing else is made."""
    make = ["make", "-s", "--no-print-directory", "-C", ROOT, "test-gpu-kit", "-o", "all"]
    hidden = subprocess.run([os.path.join(ROOT, ".ci", "without-cuda")] + make,
                            capture_output=True, text=True, timeout=120)
    assert hidden.returncode == 0, hidden.stderr
    line, = hidden.stdout.splitlines()
    assert "GPU kit skipped: no nvcc" in line and "make gpu-kit" in line
    # With nvcc where make looks (under .ci/without-cuda this run has none).
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    if shutil.which("nvcc") or os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        dry = subprocess.run(make + ["-n"], capture_output=True, text=True, timeout=120)
        assert "scripts/build_gpu_kit.sh" in dry.stdout, dry.stdout
