# The two entry points of the README; each sets up the machine first (idempotent).
PYTHON ?= python3
export PYTHON

.PHONY: setup demo check test test-slow lint gpu-wheels gpu-check

setup:
	bash tools/setup_env.sh

# Each demo trains in a work dir of its own: train.py never overwrites an earlier run's checkpoints.
demo: setup
	$(PYTHON) tools/dataset_converters/make_toy_data.py coco data/toy_coco
	$(PYTHON) tools/train.py configs/toy/retinanet_pvt_t_fpn_toy_coco.py --work-dir work_dirs/demo/$$(date +%Y%m%d_%H%M%S)

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

# check (the README's and CI's command) is lint, the fast tests, then the slow ones. Each test has a time
# limit (pytest-timeout), so a hung process fails its test instead of the run: the slowest fast test takes
# about 45 s on a loaded 2-core machine, a slow one (end-to-end training, distributed runs) minutes.
FAST_TIMEOUT ?= 180
SLOW_TIMEOUT ?= 1800

check: setup lint
	$(PYTHON) -m pytest tests -m "not slow" --timeout=$(FAST_TIMEOUT)
	$(PYTHON) -m pytest tests -m slow --timeout=$(SLOW_TIMEOUT)

# The quick loop: the tests not marked slow.
test: setup
	$(PYTHON) -m pytest tests -m "not slow" --timeout=$(FAST_TIMEOUT)

test-slow: setup
	$(PYTHON) -m pytest tests -m slow --timeout=$(SLOW_TIMEOUT)

# Borrowed CUDA machine without network (tools/analysis/gpu_check.py). Here, with PyPI: the
# wheels and mmcv's sdist into gpu_wheels/. There: make gpu-check, one command within 9 minutes (the
# report goes to $$GPU_CHECK_OUT, else $$OUT, else work_dirs/gpu_check/report); STEP=stage[,stage] runs part
# of the plan (a second lease: STEP=build); ARGS=--dry-run prints the plan with its estimates.
STEP ?=
gpu-wheels:
	$(PYTHON) tools/analysis/gpu_check.py wheels

gpu-check:
	$(PYTHON) tools/analysis/gpu_check.py run $(if $(STEP),--only $(STEP)) $(ARGS)
