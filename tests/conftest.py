import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")


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
