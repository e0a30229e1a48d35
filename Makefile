# Two commands matter: `make demo` (the main job) and `make test` (the test suite).
# Both set up everything they need first (apt packages, .venv, pinned Python stack).
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DATA ?= data/demo
NPROC ?= 2
export PYTHONUNBUFFERED=1
export WANDB_MODE ?= offline

.PHONY: setup demo data test lint bench soak gpu-wheels gpu-check clean demo-codec

setup:
	@bash scripts/setup_env.sh

data: setup
	$(PY) launch/prepare_data.py demo --out $(DEMO_DATA)

demo: data
	$(VENV)/bin/deepspeed --num_gpus $(NPROC) launch/train.py --deepspeed ds_configs/zero3.json \
		--config recipes/demo.yaml $(ARGS)

# Retrain the shipped demo codec (higgs_ds/data/demo/codec/): ~1.5 h on one busy CPU thread; not run by demo/test.
demo-codec: setup
	$(PY) scripts/train_demo_codec.py $(ARGS)

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m pytest --benchmark tests/benchmarks -q -s

# not CI: a 2,000-step run of the demo model on $(NPROC) CPU ranks, watched for memory/step-time/fd growth
soak: data
	$(PY) scripts/soak.py --ranks $(NPROC) $(ARGS)

# The device check (README "Checking on a GPU"): gpu-wheels fills .gpu_wheels/ here (needs PyPI); gpu-check
# runs scripts/gpu_check.sh (on a CUDA machine for real, elsewhere its dry mode). No setup dependency:
# the GPU machine has no project venv and no network.
gpu-wheels: setup
	$(PY) scripts/gpu_check/wheels.py prepare

gpu-check:
	bash scripts/gpu_check.sh $(ARGS)

clean:
	rm -rf runs .pytest_cache
