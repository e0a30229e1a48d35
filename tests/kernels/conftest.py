"""Kernel tests run the Triton code on CPU tensors through the interpreter when there is no GPU.

TRITON_INTERPRET must be set before triton is first imported, hence at conftest import time.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from higgs_ds import ops  # noqa: E402


@pytest.fixture
def triton_backend():
    """Force the Triton path (interpreted on CPU) for the duration of a test."""
    previous = ops.get_backend()
    ops.set_backend("triton")
    yield
    ops.set_backend(previous)
