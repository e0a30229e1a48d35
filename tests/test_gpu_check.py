"""scripts/gpu_check.sh in its dry mode (no GPU): the whole pipeline at toy sizes, so the device check
cannot rot while no GPU is around. Also its time budget and the wheel folder's dependency check."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
# What the device hands back from $OUT: at most 8 plain files, no sub-folders needed.
EXPECTED_FILES = {"gpu_check.log", "summary.json", "summary.md", "setup.log", "kernel_tests.log",
                  "benchmarks.log", "train.log"}


def _load_wheels_module():
    spec = importlib.util.spec_from_file_location("gpu_check_wheels", REPO / "scripts" / "gpu_check" / "wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args):
    env = {**os.environ, "PYTHON": sys.executable}  # the interpreter running the tests (the project venv)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    proc = _run("--dry", "--out", str(tmp / "out"), "--work", str(tmp / "work"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    return proc, tmp, summary


def test_dry_run_says_no_cuda_and_hands_back_flat_files(dry_run):
    proc, tmp, summary = dry_run
    assert "no CUDA device used: dry run finished OK" in proc.stdout
    assert summary["mode"] == "dry"
    assert {p.name for p in (tmp / "out").iterdir()} == EXPECTED_FILES
    assert all(p.is_file() and p.stat().st_size > 0 for p in (tmp / "out").iterdir())
    assert {name: s["status"] for name, s in summary["stages"].items()} == {
        "setup": "passed", "kernel_tests": "passed", "benchmarks": "passed", "train": "passed"}


def test_dry_run_installs_every_wheel_offline_into_its_venv(dry_run):
    _, tmp, summary = dry_run
    manifest = json.loads((REPO / ".gpu_wheels" / "manifest.json").read_text())
    install, probe = summary["install"], summary["probe"]
    assert install["installed"] == sorted(manifest["pins"])  # the dry mode installs all, present or not
    assert install["versions"] == manifest["pins"]
    venv = tmp / "work" / "venv"
    for dist in ("webdataset", "deepspeed", "liger-kernel", "soundfile"):
        assert Path(probe["versions"][dist]["location"]).is_relative_to(venv), dist  # the wheel, not the base
    assert not Path(probe["versions"]["torch"]["location"]).is_relative_to(venv)  # the base interpreter's torch
    assert all(r["ok"] for r in probe["imports"].values()), probe["imports"]


def test_dry_run_stages_report_their_results(dry_run):
    _, tmp, summary = dry_run
    stages = summary["stages"]
    assert stages["kernel_tests"]["passed"] > 0 and stages["kernel_tests"]["failed"] == 0
    tables = stages["benchmarks"]["tables"]
    assert {"kernel_text_head_ce_cpu", "kernel_audio_head_ce_cpu", "kernel_routed_ffn_cpu"} <= set(tables)
    assert all(t["rows"]["ours"]["seconds"] > 0 for t in tables.values())
    runs = stages["train"]["runs"]
    assert set(runs) == {"torch", "triton"}
    for r in runs.values():
        assert r["tokens_per_s"] > 0 and r["losses_finite"] and r["model"]["active_params_per_token"] > 0
    # Same weights, data and fp32 steps: the interpreted Triton kernels train like the torch reference.
    for a, b in zip(runs["torch"]["losses"], runs["triton"]["losses"], strict=True):
        assert math.isclose(a, b, rel_tol=1e-4), (runs["torch"]["losses"], runs["triton"]["losses"])
    report = (tmp / "out" / "summary.md").read_text()
    assert "| triton | torch |" in report and "### Text head + CE" in report and "Kernel tests: " in report


def test_stages_that_do_not_fit_the_budget_are_skipped(tmp_path):
    proc = _run("--dry", "--budget", "12", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {s["status"] for s in summary["stages"].values()} == {"skipped"}
    assert "SKIPPED setup: needs about" in proc.stdout and "SKIPPED train: needs about" in proc.stdout


def test_closure_check_names_a_dependency_neither_carried_nor_in_the_image(tmp_path):
    wheels = _load_wheels_module()
    wheel = tmp_path / "demo_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo_pkg-1.0.dist-info/METADATA", "Name: demo-pkg\nVersion: 1.0\nRequires-Dist: torch\n"
                    "Requires-Dist: not-in-image>=1\nRequires-Dist: win-only; sys_platform == 'win32'\n"
                    "Requires-Dist: docs-only; extra == 'docs'\n")
    assert wheels.check_closure([wheel], wheels.read_image_packages()) == [f"{wheel.name} needs not-in-image"]
    assert wheels.targets_device(wheel)
    assert not wheels.targets_device(tmp_path / "cffi-2.1.1-cp311-cp311-manylinux_2_17_x86_64.whl")
