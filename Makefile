# Two commands do all the set-up on a fresh machine (README):
#   make run    create .venv if missing, install, run the default (smoke) suite
#   make test   same set-up, then the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.diffbench-installed
ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist workers: one per core of the 2-core reference machine (674 s on one process, 498 s on two)
TEST_WORKERS ?= 2

# Every pretrained weight comes from the project itself (bench/weights/files), the installed
# packages, or the package registry; `python -m bench.weights` lists them (README, "Weights").
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test install clean-venv gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[text,diffusers,launchers,test]'
	# reference code for the feature-space agreement tests (issue 27): facebookresearch's DINOv2 and a
	# port of google-research's CMMD; without deps, as their metadata pins torch==2.0.0 / xformers,
	# and the modules the tests use need only torch
	$(PY) -m pip install -q --no-deps dinov2==0.0.1.dev2 clip-mmd==0.0.2
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m bench $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)

# The prepared GPU check (issue 19): `make gpu-check GPU_WEIGHTS=DIR` on a CUDA machine, DIR made
# beforehand by `python -m bench.tools.gpu_check --prepare DIR` (float16 Inception, 43.7 MB);
# `make gpu-check DRY=1`: tiny sizes on the CPU, the same code path.
GPU_WEIGHTS ?= gpu_weights
GPU_CHECK_OUT ?= outputs/gpu_check.json
gpu-check: $(STAMP)
	$(PY) -m bench.tools.gpu_check $(if $(DRY),--dry-run,--weights $(GPU_WEIGHTS)) --out $(GPU_CHECK_OUT)
