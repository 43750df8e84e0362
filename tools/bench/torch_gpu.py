"""The GPU kit's FCRN-101 in PyTorch, on the same GPU (run by scripts/gpu_check.py).

torchvision's ResNet-101 with res4 and res5 dilated instead of strided (output
stride 8, as the project's 1/8 nets), max-pool rounding up as Caffe's, and a
5x5 classifier of dilation 12 over 21 classes; batch norm frozen (eval mode)
as the project's nets keep it. For each case (input size and precision, FP32
or TF32), with cudnn.benchmark on: median time of forward (no_grad) and of
forward + cross-entropy + backward, and memory measured as fcrn_time measures
Caffe's: device memory in use (cudaMemGetInfo: total - free) after the timed
iterations, less the same reading once the CUDA context was made, before the
model was; the cache the warm-up left (cudnn.benchmark's trial workspaces) is
emptied before the timed iterations, and what they reserve stays reserved, so
the reading is their peak. The caching allocator's own peaks over the timed
iterations (reserved, allocated) are reported beside it. Prints one JSON
line of the versions, then one per run as it ends (a case that fails, out of
memory say, prints its error and the others go on), flushed: a kill keeps
what was measured. Needs torch and torchvision only.
"""
import argparse
import json
import statistics
import time
import traceback

import torch
import torch.nn.functional as F
import torchvision


def fcrn101(classes=21):
    resnet = torchvision.models.resnet101(weights=None,
                                          replace_stride_with_dilation=[False, True, True])
    resnet.maxpool.ceil_mode = True
    body = torch.nn.Sequential(*list(resnet.children())[:-2])  # no avgpool, fc
    return torch.nn.Sequential(body, torch.nn.Conv2d(2048, classes, 5, padding=24, dilation=12))


def device_used():
    free, total = torch.cuda.mem_get_info()
    return total - free


def measure(model, size, backward, iterations, warmup, baseline):
    x = torch.randn(1, 3, size, size, device='cuda')
    with torch.no_grad():
        shape = model(x).shape
    label = torch.zeros(shape[0], shape[2], shape[3], dtype=torch.long, device='cuda')

    def step():
        if backward:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), label).backward()
        else:
            with torch.no_grad():
                model(x)
        torch.cuda.synchronize()

    model.zero_grad(set_to_none=True)  # nothing of the previous case
    torch.cuda.empty_cache()
    for _ in range(warmup):
        step()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    return dict(median_ms=statistics.median(times), ms=times,
                peak_bytes=device_used() - baseline,
                peak_reserved=torch.cuda.max_memory_reserved(),
                peak_allocated=torch.cuda.max_memory_allocated(), output=list(shape))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cases', nargs='+', default=['505_tf32', '505_fp32', '713_tf32', '713_fp32'],
                        help='SIZE_PRECISION, precision fp32 or tf32')
    parser.add_argument('--iterations', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    args = parser.parse_args()
    cases = []
    for case in args.cases:
        size, _, precision = case.partition('_')
        if not size.isdigit() or precision not in ('fp32', 'tf32'):
            parser.error("a case is SIZE_PRECISION such as 505_tf32, not '%s'" % case)
        cases.append((int(size), precision))
    torch.backends.cudnn.benchmark = True
    baseline = device_used()  # the CUDA context alone
    print(json.dumps(dict(torch=torch.__version__, torchvision=torchvision.__version__,
                          cudnn=torch.backends.cudnn.version(),
                          gpu=torch.cuda.get_device_name(0),
                          memory='device memory in use after the timed iterations, above '
                                 'the CUDA context (cudaMemGetInfo)')), flush=True)
    model = fcrn101().cuda().eval()
    for size, precision in cases:
        torch.backends.cuda.matmul.allow_tf32 = precision == 'tf32'
        torch.backends.cudnn.allow_tf32 = precision == 'tf32'
        for backward in (False, True):
            run = '%d_%s_%s' % (size, 'fb' if backward else 'fwd', precision)
            try:
                result = measure(model, size, backward, args.iterations, args.warmup, baseline)
            except Exception as e:  # noqa: BLE001 -- out of memory, say: the next case runs
                traceback.print_exc()
                result = dict(case=run, error='%s: %s' % (type(e).__name__, e))
                torch.cuda.empty_cache()
            else:
                result['run'] = run
            print(json.dumps(result), flush=True)


if __name__ == '__main__':
    main()
