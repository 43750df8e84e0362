"""The command-line convention of scripts/ (docs/usage.md, "Command-line
convention") checked over every script: --help shows the whole docstring,
examples included; every tool that writes files has --force; one name per
meaning; outputs get the umask's permissions. Exit statuses and messages of
bad input are the table of tests/test_bad_inputs.py."""
import errno
import glob
import os
import stat
import subprocess
import sys

import pytest

import fake_datasets as fake
from fcrn import fileio
from conftest import ROOT

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "scripts", "*.py")))
# Scripts that write files without --force, and why.
WITHOUT_FORCE = {
    "train.py": "resumes from its own snapshots; --restart starts afresh",
    "demo.py": "its --out is its own run folder, resumed step by step",
    "regen_prototxt.py": "rewrites the repository's own prototxt/",
    "gpu_check.py": "runs on the GPU machines without the project's Python",
}


def help_text(path):
    result = subprocess.run([sys.executable, path, "--help"], capture_output=True, text=True,
                            timeout=120)
    if result.returncode and "No module named 'torch'" in result.stderr:
        pytest.skip("PyTorch is not installed here (the GPU machines have it)")
    assert result.returncode == 0, result.stderr
    return result.stdout


def docstring(path):
    import ast
    with open(path) as f:
        return ast.get_docstring(ast.parse(f.read()), clean=False)


@pytest.mark.parametrize("path", SCRIPTS, ids=os.path.basename)
def test_help_shows_the_whole_docstring_and_writers_have_force(path):
    text = help_text(path)
    doc = docstring(path)
    assert doc, "%s has no docstring" % path
    # argparse prints the description verbatim (RawDescriptionHelpFormatter)
    assert doc.strip() in text
    name = os.path.basename(path)
    writes = any(o in text for o in ("--out", "--out-", "output"))
    if writes and name not in WITHOUT_FORCE:
        assert "--force" in text, "%s writes files but has no --force" % name


def test_one_name_per_meaning():
    """Options that earlier versions named differently: the new name in every
    script that has the meaning, the old one still accepted."""
    texts = {os.path.basename(p): help_text(p) for p in SCRIPTS
             if os.path.basename(p) in ("infer.py", "evaluate.py", "prepare_voc.py",
                                        "prepare_cityscapes.py", "prepare_folder.py",
                                        "make_lmdb.py", "make_net.py")}
    for name in ("infer.py", "evaluate.py", "prepare_voc.py", "prepare_cityscapes.py",
                 "prepare_folder.py", "make_lmdb.py"):
        assert "--jobs N, --workers N" in texts[name], name   # file threads
    assert "--batch-size N, --batch N" in texts["infer.py"]
    assert "--batch-size BATCH_SIZE" in texts["make_net.py"]
    assert "--cityscapes CITYSCAPES, --root CITYSCAPES" in texts["prepare_cityscapes.py"]
    assert "--train-scale MIN MAX" in texts["make_net.py"]
    for name in ("infer.py", "evaluate.py", "make_net.py"):
        assert "--classes FILE" in texts[name], name


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def modes(root):
    return {os.path.relpath(os.path.join(d, n), root):
            stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode)
            for d, dirs, files in os.walk(root) for n in dirs + files}


def test_outputs_get_the_umask_permissions(tmp_path, umask_027, script):
    """Files 0666 and folders 0777 less the umask, as `open` and `mkdir`
    give them, whether written in place, renamed into place or swapped in."""
    fileio.atomic_write(str(tmp_path / "one.txt"), "x")
    with fileio.output_dir(str(tmp_path / "folder")) as tmp:
        fileio.atomic_write(os.path.join(tmp, "a.txt"), "a")
    fake.make_folder(str(tmp_path / "mine"), ["a", "b", "c"])
    images = str(tmp_path / "mine" / "images")
    assert script("prepare_folder").main(["--images", images, "--labels", images,
                                          "--label-suffix", "_mask.png", "--num-classes", "3",
                                          "--out", str(tmp_path / "prep")]) == 0
    assert script("make_net").main(["--depth", "50", "--out", str(tmp_path / "net")]) == 0
    got = {p: m for p, m in modes(str(tmp_path)).items() if not p.startswith("mine")}
    assert got and set(got.values()) <= {0o640, 0o750}, got
    assert got["folder"] == got["prep"] == got["net"] == 0o750
    assert got["one.txt"] == got["prep/train.txt"] == got["net/solver.prototxt"] == 0o640


def test_an_output_folder_given_as_a_link_is_replaced_where_the_link_points(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "old.txt").write_text("old")
    os.symlink("real", str(tmp_path / "link"))
    with fileio.output_dir(str(tmp_path / "link"), force=True) as tmp:
        fileio.atomic_write(os.path.join(tmp, "new.txt"), "new")
    assert os.path.islink(str(tmp_path / "link"))
    assert sorted(os.listdir(str(tmp_path / "real"))) == ["new.txt"]
    assert sorted(os.listdir(str(tmp_path))) == ["link", "real"]


def test_outputs_of_one_run_are_written_together_or_not_at_all(tmp_path):
    """fold_bn's weights were left beside an old prototxt, evaluate's
    Markdown without its JSON, when the second write failed."""
    first, second = str(tmp_path / "a.caffemodel"), str(tmp_path / "b.prototxt")

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device", tmp)
    with pytest.raises(OSError) as caught:
        fileio.atomic_save_all([(first, fileio.writes("weights")), (second, full)])
    assert str(caught.value) == "[Errno 28] No space left on device: %r" % second  # not the temp
    assert os.listdir(str(tmp_path)) == []
    fileio.atomic_save_all([(first, fileio.writes("weights")), (second, fileio.writes("net"))])
    assert sorted(os.listdir(str(tmp_path))) == ["a.caffemodel", "b.prototxt"]


def test_a_target_where_nothing_can_be_written_is_named_before_the_work():
    # /proc takes no new file, even from root (for whom permissions are no bar)
    with pytest.raises(OSError) as caught:
        fileio.check_targets(["/proc/fcrn-out/r.json"])
    assert caught.value.filename == "/proc/fcrn-out/r.json"
    assert caught.value.strerror.startswith("cannot write there (")
