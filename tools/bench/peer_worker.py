"""One framework's side of scripts/bench_peers.py, run as a child process.

    python peer_worker.py caffe|torch --depth 101 --kernel 5 --dilation 12
        --size 505 --mode forward|backward [--no-share-memory] [--channels-last]

Run by path with that framework's interpreter (the PyTorch one cannot import
pycaffe, so this file imports nothing of the project at module level but
`tools.bench`, which is plain Python). It builds the FCRN deploy net with
random weights and prints one JSON line when ready; then each line `run` on
stdin runs one pass (forward, or forward and backward) and answers its
seconds; `profile` (Caffe only) answers the seconds per layer kind;
`finish` answers the peak resident set and the output shape, and the worker
exits. The parent alternates the workers run by run, so that a change of
load on the machine hits every framework alike.

Both sides compute the same: random weights of one kind (He-normal
convolutions, Caffe's over their fan-in, torchvision's over their fan-out;
zero biases; normalisation that starts as the identity), the input scaled
so that the scores spread SCORE_SPREAD (`input_scale`, which evens out the
weights' scales), and in forward + backward the gradients of the input and
of every parameter but the frozen normalisation's.
"""
import argparse
import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tools.bench import peak_rss  # noqa: E402  (after the checkout is on the path)

CLASSES = 21
# Layers that touch every activation once or twice and do no matrix work.
ELEMENTWISE = ('LeanBatchNorm', 'BatchNorm', 'Scale', 'ReLU', 'Eltwise', 'Pooling', 'Split')
# Passes of `profile`, whose median per layer it reports.
PROFILE_PASSES = 3
# Spread of the scores (their standard deviation over the classes, averaged
# over the pixels) that the input is scaled to: the softmax neither uniform
# nor saturated, so that the backward pass carries gradients, not zeros.
SCORE_SPREAD = 2.0


def input_scale(probabilities):
    """The factor for a unit-normal input that makes the scores spread
    SCORE_SPREAD. `probabilities(alpha)` is the net's softmax output (numpy,
    N x C x H x W) for the input times alpha. With these weights the scores
    are positively homogeneous in the input (no biases, linear normalisation,
    ReLU, max pooling) and grow about twofold per residual unit, so a fixed
    scale saturates the softmax; log p is alpha times the scores less a
    constant per pixel, so one unsaturated pass gives the scale."""
    import numpy as np
    alpha = 1.0
    while True:
        p = probabilities(alpha).astype(np.float64)
        if p.min() > 1e-20:  # no probability flushed towards 0: log p is exact
            break
        if alpha < 1e-30:
            raise RuntimeError('the softmax stays saturated at input scale %g' % alpha)
        alpha *= 1e-3
    logp = np.log(p)
    spread = (logp - logp.mean(axis=1, keepdims=True)).std(axis=1).mean()
    return alpha * SCORE_SPREAD / spread


def loaded_blas():
    """Paths of the BLAS libraries mapped into this process."""
    names = ('openblas', 'blis', 'mkl', 'libblas')
    with open('/proc/self/maps') as maps:
        paths = {line.split()[-1] for line in maps if '/' in line}
    return sorted(p for p in paths if any(n in os.path.basename(p) for n in names))


def blas_settings():
    """The BLAS this process runs on: libraries, thread and kernel settings
    from the environment, and OpenBLAS's own kernel and thread choice."""
    import ctypes
    from fcrn import blas
    keys = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'OPENBLAS_CORETYPE')
    found = dict(blas=loaded_blas(), **{k.lower(): os.environ.get(k) for k in keys})
    for path in found['blas']:
        if 'libopenblas' in os.path.basename(path):  # the copy already loaded
            found['openblas_kernels'] = blas.openblas_core(path)
            found['openblas_threads'] = ctypes.CDLL(path).openblas_get_num_threads()
    return found


class CaffePeer:
    """The project's generated deploy net (fcrn.net.netgen) in pycaffe."""

    def __init__(self, args):
        from fcrn import caffeio  # first: it names OpenBLAS's kernels before numpy loads it
        import numpy as np
        caffe = caffeio.caffe()  # with the project's layers (LeanBatchNorm)
        from fcrn.net import netgen
        self.baseline = peak_rss()
        caffe.set_mode_cpu()
        variant = netgen.Variant(depth=args.depth, kernel=args.kernel, dilation=args.dilation)
        proto = netgen.net(variant, 'deploy')
        data = proto.layer[0]
        data.input_param.shape[0].dim[2:] = [args.size, args.size]
        self.backward = args.mode == 'backward'
        if self.backward:
            # Backward without force_backward, which would also compute the
            # gradients of the frozen normalisation's parameters (lr_mult 0),
            # as PyTorch does not: the output weighs in a loss (Caffe's
            # backward starts from what weighs; net.backward sets its diff) and
            # the input is learnt (a Parameter layer), as PyTorch's needs grad.
            assert proto.layer[-1].top == ['prob']
            proto.layer[-1].loss_weight.append(1)
            data.type = 'Parameter'
            data.parameter_param.shape.CopyFrom(data.input_param.shape[0])
            data.ClearField('input_param')
        self.input_layer = data.name
        if args.no_share_memory:  # the generated net shares (share_memory: true)
            proto.share_memory = False
        # TRAIN keeps every blob's data for Backward (and shares diffs);
        # TEST runs Forward only (and shares data).
        self.proto, self.phase = proto, 'train' if self.backward else 'test'
        self.net = caffeio.net_from_param(proto, self.phase)
        # As torchvision initialises (He-normal convolutions, here over their
        # fan-in), zero biases, and normalisation that starts as the identity
        # (mean 0, variance 1, Caffe's moving-average factor 1, gamma 1, beta 0).
        rng = np.random.RandomState(0)
        for name, params in self.net.params.items():
            kind = self.net.layer_dict[name].type
            if kind == 'LeanBatchNorm':
                for p, value in zip(params, (0, 1, 1, 1, 0)):
                    p.data[...] = value
            elif kind != 'Parameter':
                for p in params:
                    fan_in = int(np.prod(p.data.shape[1:]))
                    p.data[...] = rng.randn(*p.data.shape) * np.sqrt(2.0 / fan_in) \
                        if p.data.ndim > 1 else 0
        unit = rng.randn(1, 3, args.size, args.size)

        def probabilities(alpha):
            self.input(self.net)[...] = unit * alpha
            return self.net.forward()['prob'].copy()
        self.input(self.net)[...] = unit * input_scale(probabilities)
        self.top_diff = rng.randn(*self.net.blobs['prob'].data.shape).astype(np.float32)

    def input(self, net):
        """The input's array of `net` (this net, or a copy sharing its weights)."""
        return net.params[self.input_layer][0].data if self.backward \
            else net.blobs[self.input_layer].data

    def run(self):
        self.net.forward()
        if self.backward:
            self.net.clear_param_diffs()
            self.net.backward(prob=self.top_diff)

    def output_shape(self):
        return list(self.net.blobs['prob'].data.shape)

    def layer_kinds(self):
        """Each layer's kind: its convolution's kernel (the first is the stem,
        the last the classifier), element-wise, or other."""
        layers = self.net.layers
        convs = [i for i, layer in enumerate(layers) if layer.type == 'Convolution']
        kinds = []
        for i, layer in enumerate(layers):
            if layer.type == 'Convolution':
                k = layer.blobs[0].data.shape[-1]
                kinds.append('stem' if i == convs[0] else 'classifier' if i == convs[-1]
                             else '%dx%d convolutions' % (k, k))
            else:
                kinds.append('element-wise' if layer.type in ELEMENTWISE else 'other')
        return kinds

    def profile(self, passes=PROFILE_PASSES):
        """{layer kind: seconds} of one pass, each layer timed alone (pycaffe's
        _forward(i, i) and _backward(i, i), in the net's order), the median
        of `passes` per layer; and {layer kind: how many layers}."""
        import copy
        import statistics
        from fcrn import caffeio
        kinds = self.layer_kinds()
        count = len(kinds)
        samples = [[] for _ in range(count)]
        # A sharing net refuses a pass from a middle layer: time an unshared
        # copy, its weights the timed net's.
        net = self.net
        if self.proto.share_memory:
            proto = copy.deepcopy(self.proto)
            proto.share_memory = False
            net = caffeio.net_from_param(proto, self.phase)
            net.share_with(self.net)  # the learnt input of a backward net too
            if not self.backward:
                self.input(net)[...] = self.input(self.net)

        def timed(step, i):
            start = time.perf_counter()
            step(i, i)
            return time.perf_counter() - start

        for _ in range(passes):
            seconds = [timed(net._forward, i) for i in range(count)]
            if self.backward:
                net.clear_param_diffs()
                net.blobs['prob'].diff[...] = self.top_diff
                for i in reversed(range(count)):
                    seconds[i] += timed(net._backward, i)
            for i, value in enumerate(seconds):
                samples[i].append(value)
        totals = {}
        for kind, values in zip(kinds, samples):
            totals[kind] = totals.get(kind, 0.0) + statistics.median(values)
        return totals, dict(collections.Counter(kinds))

    def settings(self):
        return blas_settings()


class TorchPeer:
    """The same architecture from torchvision: original ResNet (stride on the
    first 1x1 convolution of a block, every 3x3 of a dilated stage dilated,
    max-pool in Caffe's ceil mode), frozen BN, the dilated classifier."""

    def __init__(self, args):
        import torch
        import torchvision
        self.torch = torch
        self.baseline = peak_rss()
        torch.manual_seed(0)
        make = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}[args.depth]
        net = make(weights=None, replace_stride_with_dilation=[False, True, True])
        net.maxpool = torch.nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
        for stage, dilation in ((net.layer2, 1), (net.layer3, 2), (net.layer4, 4)):
            for index, block in enumerate(stage):
                block.conv2.dilation = (dilation, dilation)
                block.conv2.padding = (dilation, dilation)
                if stage is net.layer2 and index == 0:
                    block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
        pad = args.dilation * (args.kernel - 1) // 2
        classifier = torch.nn.Conv2d(2048, CLASSES, args.kernel, padding=pad,
                                     dilation=args.dilation)
        torch.nn.init.zeros_(classifier.bias)  # as Caffe's: the scores stay homogeneous
        self.net = torch.nn.Sequential(
            net.conv1, net.bn1, net.relu, net.maxpool,
            net.layer1, net.layer2, net.layer3, net.layer4, classifier,
            torch.nn.Softmax(dim=1)).eval()  # eval: frozen BN statistics
        self.backward = args.mode == 'backward'
        self.memory_format = torch.channels_last if args.channels_last \
            else torch.contiguous_format
        self.net = self.net.to(memory_format=self.memory_format)
        unit = torch.randn(1, 3, args.size, args.size).to(memory_format=self.memory_format)

        def probabilities(alpha):
            with torch.inference_mode():
                return self.net(unit * alpha).numpy()
        self.input = unit * input_scale(probabilities)
        # The input's gradient, as Caffe's learnt input; its frozen nets learn
        # no normalisation parameters (lr_mult 0), so neither does this.
        self.input.requires_grad_(self.backward)
        for module in self.net.modules():
            for p in module.parameters(recurse=False):
                p.requires_grad_(self.backward and
                                 not isinstance(module, torch.nn.BatchNorm2d))
        self.output = None
        self.top_diff = None

    def run(self):
        if self.backward:
            for p in self.net.parameters():
                p.grad = None
            self.input.grad = None
            self.output = self.net(self.input)
            if self.top_diff is None:
                self.top_diff = self.torch.randn_like(self.output)
            self.output.backward(self.top_diff)
        else:
            with self.torch.inference_mode():
                self.output = self.net(self.input)

    def output_shape(self):
        return list(self.output.shape)

    def settings(self):
        torch = self.torch
        return dict(version=torch.__version__, threads=torch.get_num_threads(),
                    mkldnn=torch.backends.mkldnn.is_available(),
                    memory_format='channels_last' if self.memory_format ==
                    torch.channels_last else 'contiguous')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('framework', choices=('caffe', 'torch'))
    parser.add_argument('--depth', type=int, choices=(50, 101), required=True)
    parser.add_argument('--kernel', type=int, required=True)
    parser.add_argument('--dilation', type=int, required=True)
    parser.add_argument('--size', type=int, required=True)
    parser.add_argument('--mode', choices=('forward', 'backward'), required=True)
    parser.add_argument('--no-share-memory', action='store_true')
    parser.add_argument('--channels-last', action='store_true')
    args = parser.parse_args(argv)
    peer = (CaffePeer if args.framework == 'caffe' else TorchPeer)(args)

    def answer(**fields):
        sys.stdout.write(json.dumps(fields) + '\n')
        sys.stdout.flush()

    answer(ready=True, baseline_rss=peer.baseline, settings=peer.settings())
    peak = None  # the timed passes' peak, before a profile adds its net
    for line in sys.stdin:
        if line.strip() == 'run':
            start = time.perf_counter()
            peer.run()
            answer(seconds=time.perf_counter() - start)
        elif line.strip() == 'profile':
            peak = peak_rss()
            seconds, layers = peer.profile()
            answer(profile=seconds, profile_layers=layers)
        elif line.strip() == 'finish':
            answer(peak_rss=peak or peak_rss(), output_shape=peer.output_shape())
            return 0
    return 1


if __name__ == '__main__':
    sys.exit(main())
