"""The GPU paths of the project's layers never ask for a host copy of a blob.

No GPU is needed: the C++ sources are read. Starting from a layer's
Forward_gpu and Backward_gpu, every function of the layer's sources that a
reached body names is reached too (names, not just calls: an
over-approximation, so a host access cannot hide behind a helper), and no
reached body may use a Blob accessor that returns host memory, copy device
memory by hand (caffe_gpu_memcpy, cudaMemcpy*) or call a BLAS reduction that
returns its result to the host (caffe_gpu_dot, _asum, _nrm2). For
BootstrappedSoftmaxWithLoss this is the issue's "no host copy per
iteration": selection, loss and normalizer stay on the device (its one host
read is a record in host-mapped memory that the device writes only for a
bad pixel). Where a GPU exists, the C++ suites LeanBatchNormLayerGPUTest
(SyncedMemory heads) and BootstrappedSoftmaxWithLossGPUTest (the same pixels
as the CPU layer) check the GPU paths at run time.
"""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {name: ["cpp/include/fcrn/%s_layer.hpp" % stem, "cpp/src/%s_layer.cpp" % stem,
                 "cpp/src/%s_layer.cu" % stem]
          for name, stem in (("LeanBatchNorm", "lean_batch_norm"),
                             ("BootstrappedSoftmaxWithLoss", "bootstrapped_softmax_loss"))}
GPU_ENTRIES = ("Forward_gpu", "Backward_gpu")
# Blob accessors that sync to, or return, host memory, raw copies, and
# reductions with a host result.
HOST_ACCESS = re.compile(r"\b((?:mutable_|set_)?cpu_(?:data|diff)|data_at|diff_at"
                         r"|caffe_gpu_memcpy|cudaMemcpy\w*|caffe_gpu_(?:dot|asum|nrm2))\s*\(")
KEYWORDS = {"if", "for", "while", "switch", "return", "sizeof", "catch"}
DEFINITION = re.compile(r"\b(\w+)\s*\(([^;{}]*)\)\s*(?:const\s*)?\{")


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def function_bodies(text):
    """{name: [body, ...]} for every function definition in C++ `text`."""
    bodies = {}
    for match in DEFINITION.finditer(text):
        name = match.group(1)
        if name in KEYWORDS or name.isupper():  # statements and macros
            continue
        depth, start = 0, match.end() - 1
        for end in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
        bodies.setdefault(name, []).append(text[start:end + 1])
    return bodies


def host_accesses(bodies, entries):
    """(function, accessor) for each host access reachable from `entries`."""
    found, seen, todo = [], set(), list(entries)
    while todo:
        name = todo.pop()
        if name in seen or name not in bodies:
            continue
        seen.add(name)
        for body in bodies[name]:
            found += [(name, m.group(1)) for m in HOST_ACCESS.finditer(body)]
            todo += [n for n in re.findall(r"\b\w+\b", body) if n in bodies]
    return sorted(set(found))


def layer_bodies(layer):
    text = ""
    for path in LAYERS[layer]:
        with open(os.path.join(ROOT, path)) as f:
            text += strip_comments(f.read()) + "\n"
    return function_bodies(text)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_gpu_path_has_no_host_access(layer):
    bodies = layer_bodies(layer)
    for entry in GPU_ENTRIES:
        assert entry in bodies, "%s not found in %s" % (entry, LAYERS[layer])
    assert host_accesses(bodies, GPU_ENTRIES) == []


@pytest.mark.parametrize("layer, entry", [("LeanBatchNorm", "Forward_cpu"),
                                          ("LeanBatchNorm", "Backward_cpu"),
                                          ("BootstrappedSoftmaxWithLoss", "Forward_cpu")])
def test_checker_finds_host_access_of_cpu_path(layer, entry):
    # The same walk over the CPU path must find its host accesses, through
    # its helpers as well as directly.
    found = host_accesses(layer_bodies(layer), [entry])
    assert (entry, "cpu_diff" if entry == "Backward_cpu" else "cpu_data") in found
    assert any(name != entry for name, _ in found)


def test_checker_follows_helpers():
    text = strip_comments("""
        template <typename Dtype>
        void Layer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom) {
          if (ok) { Helper(); }  // cpu_data() in a comment does not count
        }
        void Helper() { x = blob.mutable_cpu_diff(); Flag(); }
        void Flag() { caffe_gpu_memcpy(sizeof(float), flag.gpu_data(), &f); }
        void Unreached() { blob.cpu_data(); }
        """)
    assert host_accesses(function_bodies(text), ["Forward_gpu"]) == [
        ("Flag", "caffe_gpu_memcpy"), ("Helper", "mutable_cpu_diff")]
