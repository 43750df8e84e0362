# FCRN on Caffe. `make` builds everything, `make test` builds and tests,
# `make demo` trains and evaluates a small FCRN on synthetic data.
# CUDA=1 builds Caffe and the layers with CUDA, cuDNN and NCCL for sm_90
# (CUDA_ARCH="80 90" for more GPUs; CUDNN=0 or NCCL=0 leaves one out).

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
JOBS ?= $(shell nproc)
# The one Python of the project: pycaffe is built for it (build_caffe.sh reads
# FCRN_PYTHON), the venv is made from it, the caffe wrapper uses the venv.
PYTHON_SYSTEM ?= /usr/bin/python3
export FCRN_PYTHON := $(PYTHON_SYSTEM)
CUDA ?= 0
CUDNN ?= 1
NCCL ?= 1
ifeq ($(CUDA),1)
CUDA_ARCH ?= 90
CAFFE_FLAGS := --cuda --cuda-arch "$(CUDA_ARCH)" $(if $(filter 0,$(CUDNN)),--no-cudnn) \
  $(if $(filter 0,$(NCCL)),--no-nccl)
else
# The CPU build compile-checks the CUDA sources for these.
CUDA_ARCH ?= 75 80 86 90
CAFFE_FLAGS :=
endif
# Recursive (=): only the recipes that use it run the script.
CAFFE_PREFIX = $(shell scripts/build_caffe.sh --print-prefix $(CAFFE_FLAGS))
# nvcc compile-checks the .cu files even for the CPU build, and builds the GPU
# kit; found on PATH or in the toolkit ($(CUDA_HOME)). Without it (Debian 12
# without the CUDA toolkit) both are left out, and `make test` says so.
CUDA_HOME ?= /usr/local/cuda
NVCC ?= $(firstword $(shell command -v nvcc) $(wildcard $(CUDA_HOME)/bin/nvcc))
BUILD := build
VENV := .venv
PYTHON := $(VENV)/bin/python
VENV_SITE = $(shell $(PYTHON_SYSTEM) -c 'import sysconfig; \
  print(sysconfig.get_path("purelib", "venv", vars={"base": "$(CURDIR)/$(VENV)"}))')
ENV := source scripts/env.sh &&

.PHONY: all deps caffe layers venv prototxt demo test test-cpp test-python gpu-kit \
  test-gpu-kit bench bench-peers bench-bootstrap clean

all: layers venv

deps:
	@scripts/install_deps.sh

# Reuses the cached prefix when it is complete; rebuilds only when its inputs change.
caffe: deps
	@scripts/build_caffe.sh $(CAFFE_FLAGS) -j $(JOBS) >/dev/null

# A build tree belongs to one Caffe prefix: switching between the CPU and the
# CUDA build starts it afresh.
layers: caffe
	@prefix=$(CAFFE_PREFIX); \
	if [ "$$(cat $(BUILD)/caffe-prefix 2>/dev/null)" != "$$prefix" ]; then rm -rf $(BUILD); fi; \
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DCaffe_DIR=$$prefix/share/Caffe \
	  -DFCRN_CUDA_ARCH="$(CUDA_ARCH)" -DFCRN_VENV_SITE=$(VENV_SITE) \
	  $(if $(NVCC),-DCMAKE_CUDA_COMPILER=$(NVCC) -DFCRN_CUDA_CHECK=ON,-DFCRN_CUDA_CHECK=OFF) \
	  -Wno-dev >/dev/null; \
	echo "$$prefix" > $(BUILD)/caffe-prefix
	@cmake --build $(BUILD) -j $(JOBS)

venv: $(VENV)/.complete

# The .pth makes pycaffe of the cached prefix, the Python layers (layers/) and
# the checkout's tools (tools/, for scripts/) importable; rewritten on every
# run so that it follows the prefix when Caffe's inputs change.
$(VENV)/.complete: requirements.txt requirements-nodeps.txt constraints.txt setup.py FORCE | caffe
	@[ -x $(PYTHON) ] || $(PYTHON_SYSTEM) -m venv --system-site-packages $(VENV)
	@printf '%s\n' "$(CAFFE_PREFIX)/lib/python3/dist-packages" "$(CURDIR)/layers" "$(CURDIR)" > \
	  $(VENV_SITE)/caffe.pth
	@if [ ! -f $@ ] || [ -n "$$(find requirements*.txt constraints.txt setup.py -newer $@)" ]; then \
	  $(PYTHON) -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt && \
	  $(PYTHON) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt && \
	  $(PYTHON) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . && \
	  touch $@; fi

FORCE:

test: all test-gpu-kit test-cpp test-python

test-cpp: layers
	@cd $(BUILD) && ctest --output-on-failure

# TESTS: what pytest runs (default: every test).
TESTS ?= tests
test-python: all
	@$(ENV) python -m pytest -q $(TESTS)

# The kit needs nvcc; without it, one line says so and how to build it.
test-gpu-kit: $(if $(NVCC),gpu-kit)
ifeq ($(NVCC),)
	@echo "make test: GPU kit skipped: no nvcc (CUDA toolkit) on PATH or in $(CUDA_HOME)/bin;" \
	  "install CUDA 13 and run 'make gpu-kit' (docs/cuda.md)"
endif

# What a GPU machine runs: scripts/gpu_check.sh OUTDIR (docs/cuda.md, "GPU check").
gpu-kit: all
	@scripts/build_gpu_kit.sh -j $(JOBS)

# Trains, evaluates and runs a small FCRN end to end on a synthetic dataset.
demo: all
	@$(ENV) python scripts/demo.py --out work/demo

# Regenerates the committed network definitions (a test checks they match).
prototxt: all
	@$(ENV) python scripts/regen_prototxt.py

# Rewrites the result files under benchmarks/ that benchmarks/README.md quotes. The
# memory benchmark needs about 10 GB of RAM and a few minutes.
bench: all
	@$(ENV) python scripts/bench_layers.py --out benchmarks/layers.md
	@$(ENV) python scripts/bench_memory.py --out benchmarks/memory.md
	@$(ENV) python scripts/bench_infer.py --net prototxt/voc/r50_s8_k3_d12/deploy.prototxt \
	  --size 321 321 --out benchmarks/infer.md
	@$(ENV) python scripts/bench_data.py --out benchmarks/data.md

# Caffe against PyTorch on the CPU (benchmarks/peers.md); not part of CI. The
# first run makes a PyTorch environment from PyPI (a few GB, see
# requirements-peers.txt); the runs, the whole of them three times over, take
# about one to three hours on 2 cores, by CPU (benchmarks/README.md).
bench-peers: all
	@$(ENV) python scripts/bench_peers.py --out benchmarks/peers.md

# The miniature Table 4 (benchmarks/bootstrap.md): 15 trainings, about 95 min
# on 2 idle cores; rerun after an interruption, it reuses finished trainings.
bench-bootstrap: all
	@$(ENV) python scripts/bench_bootstrap.py --work work/bench_bootstrap --out benchmarks/bootstrap

clean:
	rm -rf $(BUILD) build-kit $(VENV)
