# Two commands matter: `make demo` (the main job) and `make test` (the test suite).
# Both set up everything they need first (apt packages, .venv, pinned Python stack).
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DATA ?= data/demo
NPROC ?= 2
export PYTHONUNBUFFERED=1
export WANDB_MODE ?= offline

.PHONY: setup demo demo-rl data test test-fast lint bench soak gpu-wheels gpu-check kernels-aot clean demo-codec \
	playground-screenshot playground-check

setup:
	@bash scripts/setup_env.sh

data: setup
	$(PY) launch/prepare_data.py demo --out $(DEMO_DATA)

# The run's report (report.html) is written at the end of training; printed last so it is easy to find.
DEMO_RUN = $(or $(patsubst run_dir=%,%,$(filter run_dir=%,$(ARGS))),runs/demo)
demo: data
	$(VENV)/bin/deepspeed --num_gpus $(NPROC) launch/train.py --deepspeed ds_configs/zero3.json \
		--config recipes/demo.yaml $(ARGS)
	@$(PY) launch/report.py $(DEMO_RUN)

# GRPO on top of the demo run (docs/preference.md): held-out rewards before -> after, against more SFT for the
# same wall time. Runs `make demo` first when there is no demo checkpoint; not part of `make test`.
demo-rl: setup
	@test -f $(DEMO_RUN)/checkpoints/latest || $(MAKE) demo
	$(PY) scripts/demo_rl.py --run $(DEMO_RUN) $(RL_ARGS)

# Retrain the shipped demo codec (higgs_ds/data/demo/codec/): ~1.5 h on one busy CPU thread; not run by demo/test.
demo-codec: setup
	$(PY) scripts/train_demo_codec.py $(ARGS)

# Everything (integration runs, the Slurm cluster, GPU tests where there is CUDA), slowest 25 listed; the
# in-process tier runs at the same time, in a second pytest (scripts/run_tests.sh).
test: setup
	@PY=$(PY) bash scripts/run_tests.sh

# The in-process tier for the edit-test loop: no multi-process runs, no Slurm, no GPU, no benchmarks.
test-fast: setup
	$(PY) -m pytest -q -m "not integration and not cluster and not gpu and not benchmark"

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m pytest --benchmark tests/benchmarks -q -s

# not CI: a 2,000-step run of the demo model on $(NPROC) CPU ranks, watched for memory/step-time/fd growth
soak: data
	$(PY) scripts/soak.py --ranks $(NPROC) $(ARGS)

# The device check (docs/gpu.md): gpu-wheels fills .gpu_wheels/ here (needs PyPI): the wheels the GPU image
# lacks and the demo's shards + tokenizer. gpu-check runs scripts/gpu_check.sh on a CUDA machine
# (ARGS=--dry: the same stages on the CPU). No setup dependency: the GPU machine has no project venv and no network.
gpu-wheels: data
	$(PY) scripts/gpu_check/wheels.py prepare --demo $(DEMO_DATA)

gpu-check:
	bash scripts/gpu_check.sh $(ARGS)

# Every kernel variant the dispatcher can launch, compiled for sm_80/sm_90/sm_100 with the triton wheel's
# ptxas (no GPU needed); fails on compile errors, shared memory over the limit, unjustified spills.
kernels-aot: setup
	$(PY) -m scripts.kernels_aot --out runs/kernels_aot $(ARGS)

# The screenshot in docs/playground.md: the demo run (make demo first, or RUN=...) in the playground, in headless
# chromium. Not run by the tests (they never change the tree).
playground-screenshot: setup
	$(PY) scripts/playground_screenshot.py $(or $(RUN),runs/demo) --out docs/img/playground.png

# The playground's Done-when check (docs/playground.md): the demo run served through the playground's logic (no
# browser), every training sentence generated greedily in its demo voice (mean frame accuracy >= 0.99 against
# its training codes), then a new sentence. Trains the demo first when runs/demo has no checkpoint.
playground-check: setup
	@test -e runs/demo/checkpoints/latest || $(MAKE) demo
	$(PY) scripts/playground_demo_check.py runs/demo $(ARGS)

clean:
	rm -rf runs .pytest_cache
