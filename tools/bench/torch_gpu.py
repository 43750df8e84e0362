"""The GPU kit's FCRN-101 in PyTorch, on the same GPU (run by scripts/gpu_check.py).

torchvision's ResNet-101 with res4 and res5 dilated instead of strided (output
stride 8, as the project's 1/8 nets), max-pool rounding up as Caffe's, and a
5x5 classifier of dilation 12 over 21 classes; batch norm frozen (eval mode)
as the project's nets keep it. For each input size, FP32 and TF32, with
cudnn.benchmark on: median time of forward (no_grad) and of forward +
cross-entropy + backward, and peak memory: the caching allocator's peak
reserved bytes (what the process took from the device, comparable to Caffe's
device memory above its context) and peak allocated bytes. Prints one JSON
object. Needs torch and torchvision only.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision


def fcrn101(classes=21):
    resnet = torchvision.models.resnet101(weights=None,
                                          replace_stride_with_dilation=[False, True, True])
    resnet.maxpool.ceil_mode = True
    body = torch.nn.Sequential(*list(resnet.children())[:-2])  # no avgpool, fc
    return torch.nn.Sequential(body, torch.nn.Conv2d(2048, classes, 5, padding=24, dilation=12))


def measure(model, size, backward, iterations, warmup):
    x = torch.randn(1, 3, size, size, device='cuda')
    with torch.no_grad():
        shape = model(x).shape
    label = torch.zeros(shape[0], shape[2], shape[3], dtype=torch.long, device='cuda')
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + iterations):
        start = time.perf_counter()
        if backward:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), label).backward()
        else:
            with torch.no_grad():
                model(x)
        torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return dict(median_ms=statistics.median(times), ms=times,
                peak_bytes=torch.cuda.max_memory_reserved(),
                peak_allocated=torch.cuda.max_memory_allocated(), output=list(shape))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[505, 713])
    parser.add_argument('--iterations', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    model = fcrn101().cuda().eval()
    runs = {}
    for size in args.sizes:
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            for backward in (False, True):
                runs['%d_%s_%s' % (size, 'fb' if backward else 'fwd', 'tf32' if tf32 else 'fp32')] = \
                    measure(model, size, backward, args.iterations, args.warmup)
    print(json.dumps(dict(torch=torch.__version__, torchvision=torchvision.__version__,
                          cudnn=torch.backends.cudnn.version(),
                          gpu=torch.cuda.get_device_name(0), runs=runs)))


if __name__ == '__main__':
    main()
