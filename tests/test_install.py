"""The package installed outside the checkout (`pip install .`, not editable,
into a fresh venv of Debian's Python with its site packages) finds the layer
library and Caffe from its installed configuration (fcrn.paths): it
generates a net, loads the layers and runs a forward pass, from a folder
that is not the checkout and with no FCRN_* variable set."""
import json
import os
import subprocess
import textwrap

from conftest import ROOT
from fcrn import paths

FORWARD = """
    import sys
    import numpy as np
    import fcrn
    from fcrn import caffeio
    from fcrn.net import netgen
    proto = netgen.net(netgen.Variant(depth=50, kernel=3, dilation=2), 'deploy')
    generated_alone = 'caffe' not in sys.modules
    proto.layer[0].input_param.shape[0].dim[2:] = [33, 33]
    net = caffeio.net_from_param(proto)
    net.blobs['data'].data[...] = np.random.RandomState(0).randn(1, 3, 33, 33)
    prob = net.forward()['prob']
    print(json.dumps(dict(
        package=fcrn.__file__, generated_alone=generated_alone, shape=prob.shape,
        sums=np.round(prob.sum(axis=1), 4).ravel().tolist(),
        layers='libfcrn_layers' in open('/proc/self/maps').read(),
        lean='LeanBatchNorm' in [l.type for l in net.layers])))
"""


def test_installed_package_runs_a_net_outside_the_checkout(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index",
                              "--no-build-isolation", "-q", ROOT],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FCRN_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["GLOG_minloglevel"] = "2"
    run = subprocess.run([python, "-c", "import json\n" + textwrap.dedent(FORWARD)],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["package"].startswith(str(venv))
    assert result["generated_alone"] and result["layers"] and result["lean"]
    assert result["shape"] == [1, 21, 4, 4]
    assert result["sums"] == [1.0] * 16          # a softmax per score cell
    # What docs/usage.md tells code that makes its own caffe.Net to do.
    own = subprocess.run([python, "-c", "import importlib.util, fcrn; fcrn.load_layers(); "
                          "import caffe; assert importlib.util.find_spec('fcrn_data'); "
                          "print(caffe.Net.__name__)"],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert (own.returncode, own.stdout.strip()) == (0, "Net"), own.stderr[-3000:]


def test_a_variable_wins_over_the_configuration_and_the_checkout(tmp_path, monkeypatch):
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "caffe-prefix").write_text("/opt/caffe\n")
    environ = {"FCRN_LAYERS_LIB": "/elsewhere/libfcrn_layers.so"}
    found = paths.configuration(str(tmp_path), environ)
    assert found == {"layers_library": "/elsewhere/libfcrn_layers.so",
                     "caffe_prefix": "/opt/caffe"}
    monkeypatch.setenv("FCRN_CAFFE_PREFIX", "/from/variable")
    assert paths.pycaffe() == "/from/variable/lib/python3/dist-packages"
