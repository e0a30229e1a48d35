"""Kernel tests run the Triton code on CPU tensors through the interpreter when there is no GPU
(TRITON_INTERPRET is set by tests/conftest.py, before anything imports triton)."""

import pytest

from higgs_ds import ops


@pytest.fixture
def triton_backend():
    """Force the Triton path (interpreted on CPU) for the duration of a test."""
    previous = ops.get_backend()
    ops.set_backend("triton")
    yield
    ops.set_backend(previous)
