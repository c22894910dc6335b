# The two entry points of the README; each sets up the machine first (idempotent).
PYTHON ?= python3
export PYTHON

.PHONY: setup demo test lint gpu-wheels gpu-check

setup:
	bash tools/setup_env.sh

# Each demo trains in a work dir of its own: train.py never overwrites an earlier run's checkpoints.
demo: setup
	$(PYTHON) tools/dataset_converters/make_toy_data.py coco data/toy_coco
	$(PYTHON) tools/train.py configs/toy/retinanet_pvt_t_fpn_toy_coco.py --work-dir work_dirs/demo/$$(date +%Y%m%d_%H%M%S)

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

test: setup lint
	$(PYTHON) -m pytest tests

# Borrowed CUDA machine without network (tools/analysis/gpu_check.py, issue 18). Here, with PyPI: the
# wheels and mmcv's sdist into gpu_wheels/. There: make gpu-check STEP=setup, then parity, train, bench
# (each one command of at most 10 minutes; STEP=all runs the four). ARGS=--dry-run prints the steps.
STEP ?= all
gpu-wheels:
	$(PYTHON) tools/analysis/gpu_check.py wheels

gpu-check:
	$(PYTHON) tools/analysis/gpu_check.py $(STEP) $(ARGS)
