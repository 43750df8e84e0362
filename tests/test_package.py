"""What importing the package costs, and that whatever builds a net brings
the project's layers along (each case in a fresh process: the test process
itself has them loaded, see conftest.py)."""
import os
import subprocess
import sys
import textwrap

from conftest import ROOT

LEAN_NET = """
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }
layer { name: "bn" type: "LeanBatchNorm" bottom: "x" top: "x" }
"""


def fresh(code, **env):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, env=dict(os.environ, GLOG_minloglevel="2", **env),
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


def test_import_loads_neither_pycaffe_nor_the_layer_library():
    assert fresh("""
        import sys
        import fcrn, fcrn.evaluate, fcrn.infer, fcrn.fold, fcrn.train, fcrn.cli
        import fcrn.data.voc, fcrn.data.cityscapes, fcrn.net.convert
        maps = open('/proc/self/maps').read()
        print('caffe' in sys.modules, 'libfcrn_layers' in maps)
        """) == ["False", "False"]


def test_generating_a_net_needs_no_pycaffe():
    """netgen builds on Caffe's protobuf module alone (fcrn.net.spec)."""
    assert fresh("""
        import sys
        from fcrn.net import netgen
        proto = netgen.net(netgen.Variant(depth=50, kernel=3, dilation=2), 'deploy')
        print(len(proto.layer) > 100, proto.layer[-1].name, 'caffe' in sys.modules)
        """) == ["True", "prob", "False"]


def test_building_a_net_loads_the_layer_library(tmp_path):
    (tmp_path / "lean.prototxt").write_text(LEAN_NET)
    assert fresh("""
        from fcrn import caffeio
        net = caffeio.load_net(%r)
        print(net.layers[1].type, 'libfcrn_layers' in open('/proc/self/maps').read())
        """ % str(tmp_path / "lean.prototxt")) == ["LeanBatchNorm", "True"]


def test_a_missing_library_is_named_when_a_net_needs_it(tmp_path):
    (tmp_path / "lean.prototxt").write_text(LEAN_NET)
    assert fresh("""
        import warnings
        from fcrn import caffeio
        from fcrn.errors import InputError
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter('always')
            try:
                caffeio.load_net(%r)
            except InputError as e:
                print('refused:', 'LeanBatchNorm' in str(e), 'run make' in str(e))
        print('warned:', any('FCRN_LAYERS_LIB' in str(w.message) for w in seen))
        """ % str(tmp_path / "lean.prototxt"), FCRN_LAYERS_LIB=str(tmp_path / "none.so")) == \
        ["refused:", "True", "True", "warned:", "True"]


def test_caffe_processes_of_the_tests_write_no_log_files(tmp_path):
    """glog gives every Caffe process a file per level in $TMPDIR (else /tmp)
    unless it logs to stderr only: the suite starts many of them, and
    conftest.py sets GLOG_logtostderr so that none is left behind."""
    missing = tmp_path / "missing_solver.prototxt"
    # glog's folder: GOOGLE_LOG_DIR, else TEST_TMPDIR, else TMPDIR.
    env = {k: v for k, v in os.environ.items() if k not in ("GOOGLE_LOG_DIR", "TEST_TMPDIR")}
    caffe = os.path.join(ROOT, "build", "bin", "caffe")
    result = subprocess.run([caffe, "train", "-solver", str(missing)], capture_output=True,
                            text=True, env=dict(env, TMPDIR=str(tmp_path)), timeout=120)
    assert result.returncode != 0
    assert "missing_solver.prototxt" in result.stderr  # the message still reaches stderr
    assert os.listdir(tmp_path) == []


def test_pycaffe_loads_the_image_libraries_only_to_resize(tmp_path):
    """caffe.io imports skimage and scipy (and through them matplotlib and
    PIL: 77 MB resident) when it loads or resizes an image, not with
    pycaffe (Caffe patch 0021): every process that runs a net pays less."""
    (tmp_path / "lean.prototxt").write_text(LEAN_NET)
    assert fresh("""
        import sys
        import numpy as np
        from fcrn import caffeio
        net = caffeio.load_net(%r)
        net.forward()
        print([m for m in ('skimage', 'scipy', 'matplotlib', 'PIL') if m in sys.modules])
        resize = caffeio.caffe().io.resize_image
        ramp = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
        # the same size is the identity on both paths: skimage's (1 or 3
        # channels) and scipy's (any other number)
        print(np.allclose(resize(ramp[..., :3], (2, 3)), ramp[..., :3], atol=1e-5),
              np.allclose(resize(ramp, (2, 3)), ramp, atol=1e-5),
              resize(ramp, (4, 6)).shape == (4, 6, 4))
        """ % str(tmp_path / "lean.prototxt")) == ["[]", "True", "True", "True"]


def test_pycaffe_loads_an_image_in_colour_and_in_grey(tmp_path):
    """caffe.io.load_image with Debian's scikit-image (Caffe patch 0022):
    floats in [0, 1], three channels or one."""
    assert fresh("""
        import numpy as np
        from PIL import Image
        from fcrn import caffeio
        rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 15
        grey = np.repeat(rgb[..., :1], 3, axis=2)  # equal channels: any weighting keeps them
        Image.fromarray(rgb).save(%(dir)r + '/rgb.png')
        Image.fromarray(grey).save(%(dir)r + '/grey.png')
        load = caffeio.caffe().io.load_image
        colour, mono = load(%(dir)r + '/rgb.png'), load(%(dir)r + '/grey.png', color=False)
        print(colour.dtype, colour.shape, np.allclose(colour, rgb / 255.0, atol=1e-6),
              mono.shape, np.allclose(mono[..., 0], grey[..., 0] / 255.0, atol=1e-6))
        """ % {'dir': str(tmp_path)}) == ["float32", "(2,", "3,", "3)", "True",
                                          "(2,", "3,", "1)", "True"]
