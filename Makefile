# The two entry points of the README; each sets up the machine first (idempotent).
PYTHON ?= python3
export PYTHON

.PHONY: setup demo test lint

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
