"""Ahead-of-time compilation of every Triton kernel for real GPUs, on a machine without one.

`python -m scripts.kernels_aot` (or `make kernels-aot`) captures every launch the dispatcher can make
on a GPU (`launches`), compiles each distinct specialisation for sm_80 / sm_90 / sm_100 with the
triton wheel's own ptxas (`cubin`), and checks registers, spills, shared memory and stack against the
targets' limits (`report`). Nothing here imports triton at package import time.
"""
