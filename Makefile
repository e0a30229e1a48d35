# Two commands matter: `make demo` (the main job) and `make test` (the test suite).
# Both set up everything they need first (apt packages, .venv, pinned Python stack).
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DATA ?= data/demo
NPROC ?= 2
export PYTHONUNBUFFERED=1
export WANDB_MODE ?= offline

.PHONY: setup demo data test lint bench clean

setup:
	@bash scripts/setup_env.sh

data: setup
	$(PY) launch/prepare_data.py demo --out $(DEMO_DATA)

demo: data
	$(VENV)/bin/deepspeed --num_gpus $(NPROC) launch/train.py --deepspeed ds_configs/zero3.json \
		--config recipes/demo.yaml $(ARGS)

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m pytest --benchmark tests/benchmarks -q -s

clean:
	rm -rf runs .pytest_cache
