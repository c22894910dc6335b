# The two entry points of the README; each sets up the machine first (idempotent).
PYTHON ?= python3
export PYTHON

.PHONY: setup demo test lint

setup:
	bash tools/setup_env.sh

demo: setup
	$(PYTHON) tools/smoke.py

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

test: setup lint
	$(PYTHON) -m pytest tests
