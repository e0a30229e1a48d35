import os

import torch

# Triton kernels run through the interpreter on CPU tensors when there is no GPU. The variable must
# be set before anything imports triton (deepspeed and transformers do), so it is set here, first.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--benchmark", action="store_true", default=False,
                     help="run the benchmarks under tests/benchmarks (skipped otherwise)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--benchmark"):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `pytest --benchmark`")
    for item in items:
        if "tests/benchmarks/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _remove_shm_left_by_killed_ranks():
    """A rank killed before the end of its process-group setup leaves DeepSpeed's CPU allreduce
    segment (~70 MB of RAM) in /dev/shm; remove the ones a test's runs left, so that a long suite
    of fault tests cannot fill the machine's memory. (Runs that get through setup remove their own:
    tests/faults/test_shared_memory.py checks that.)"""
    from higgs_ds.train.distributed import SHM_DIR

    before = set(SHM_DIR.glob("deepspeed_allreduce_buffer_*"))
    yield
    for segment in set(SHM_DIR.glob("deepspeed_allreduce_buffer_*")) - before:
        segment.unlink(missing_ok=True)
