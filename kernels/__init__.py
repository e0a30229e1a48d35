"""Triton kernels for higgs-ds, shipped as `higgs_ds.kernels`.

Callers go through `higgs_ds.ops`, which picks these kernels on CUDA (or when forced) and the
PyTorch references otherwise. Modules here import triton at import time, so import them lazily.
"""
