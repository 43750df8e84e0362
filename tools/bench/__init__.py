"""The benchmarks behind benchmarks/*.md, one module each, run by
scripts/bench_*.py: layers, memory, infer, data, peers (with peer_worker,
the per-framework child), bootstrap (the miniature Table 4), build (Caffe's
build times), and torch_gpu (the GPU check's PyTorch side)."""
