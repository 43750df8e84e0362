"""The project's tools, outside the installed library `fcrn`: the benchmarks
(`tools.bench`), the bootstrapping benchmark (`tools.bench.bootstrap`) and
the GPU kit's builder (`tools.gpukit`). They run from a checkout, through
scripts/ (the venv of `make` puts the checkout on the path)."""
import os

# The checkout these tools live in (they are never installed).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
