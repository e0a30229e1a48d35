"""What the check's venv ends up with: versions (and where each package loads from), the device, and
whether each higgs_ds module the check relies on imports with this torch/triton/transformers.

Writes one JSON object to the path given as its argument (stdout carries library noise). Run it with
the venv's python.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import sys
import time
from pathlib import Path

DISTRIBUTIONS = ("torch", "triton", "transformers", "deepspeed", "liger-kernel", "webdataset", "soundfile",
                 "pydantic", "numpy", "pytest", "pytest-benchmark", "pytest-xdist", "descript-audio-codec",
                 "speechmos", "onnxruntime", "higgs-ds")
MODULES = ("higgs_ds.ops", "higgs_ds.kernels.routed_ffn", "higgs_ds.kernels.fused_head_ce",
           "higgs_ds.kernels.codebook_ce", "higgs_ds.models.pretrained", "higgs_ds.inference.generate",
           "higgs_ds.train.build", "higgs_ds.train.loop", "liger_kernel.transformers.functional",
           "dac", "speechmos.dnsmos", "higgs_ds.quality.models")  # the demo codec and the scorer (end-to-end stage)


def _version(dist: str) -> dict:
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        return {"version": None}
    return {"version": d.version, "location": str(d.locate_file(""))}


def _import(module: str) -> dict:
    t0 = time.perf_counter()
    try:
        importlib.import_module(module)
    except BaseException as e:  # noqa: BLE001 - a module that fails to import is what we report
        return {"ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
    return {"ok": True, "seconds": round(time.perf_counter() - t0, 2)}


def _device() -> dict:
    import torch

    info = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if info["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count)
    return info


def main() -> None:
    out = Path(sys.argv[1])
    report = {"python": sys.version.split()[0], "executable": sys.executable,
              "versions": {d: _version(d) for d in DISTRIBUTIONS}, "device": _device(),
              "imports": {m: _import(m) for m in MODULES}}
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
