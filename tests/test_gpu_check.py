"""scripts/gpu_check.sh: its dry mode (no GPU) runs the same stages as the device call at toy sizes, so
the first GPU call is not the first time the sequence runs. Also the resume rule, the budget, the refusal
to run without CUDA, and the carried folder's dependency and size checks."""

import importlib.util
import json
import math
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from tests.gpu_check_dry import script_command, script_env

REPO = Path(__file__).resolve().parents[1]
STAGES = ["setup", "end_to_end", "kernel_tests", "benchmarks", "memory_probe"]
# What the device hands back from $OUT: 8 plain files, no sub-folders.
EXPECTED_FILES = {"gpu_check.log", "summary.json", "summary.md"} | {f"{s}.log" for s in STAGES}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_check_{name}", REPO / "scripts" / "gpu_check" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(*args):
    return subprocess.run(script_command(*args), cwd=REPO, env=script_env(), capture_output=True, text=True,
                          timeout=900)


@pytest.mark.integration
def test_dry_run_passes_every_stage_and_summary_lists_them(gpu_check_dry_run):
    proc, tmp, summary = gpu_check_dry_run
    assert "no CUDA device used: dry run finished OK" in proc.stdout
    assert summary["mode"] == "dry"
    assert list(summary["stages"]) == STAGES
    assert {n: s["status"] for n, s in summary["stages"].items()} == dict.fromkeys(STAGES, "passed")
    assert {p.name for p in (tmp / "out").iterdir()} == EXPECTED_FILES
    assert all(p.is_file() and p.stat().st_size > 0 for p in (tmp / "out").iterdir())
    rows = re.findall(r"^\| (\w+) \| (\w+) \| \d+ \| \d+ \|", (tmp / "out" / "summary.md").read_text(), re.M)
    assert rows == [(name, "passed") for name in STAGES]


@pytest.mark.integration
def test_dry_run_trains_saves_resumes_exports_and_generates(gpu_check_dry_run):
    from higgs_ds.models.pretrained import from_pretrained
    from higgs_ds.train.metrics import read_metrics

    _, tmp, summary = gpu_check_dry_run
    e2e, work = summary["stages"]["end_to_end"], tmp / "work" / "end_to_end"
    assert e2e["device"] == "cpu"
    run_dir = work / "run"
    tags = sorted(p.name for p in (run_dir / "checkpoints").glob("step*"))
    assert tags == ["step000003", "step000006", "step000008"]  # every 3 steps, the stop at 6, the end at 8
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 9))  # the resumed job logged 7 and 8, nothing twice
    losses = [r["loss"] for r in rows]
    cont = e2e["parts"]["continuity"]
    assert cont["before"] == pytest.approx((losses[4] + losses[5]) / 2)
    assert cont["after"] == pytest.approx((losses[6] + losses[7]) / 2)
    assert cont["start"] > cont["before"] and cont["jump"] <= 0.25

    hf, boson = (from_pretrained(work / f"export_{layout}").state_dict() for layout in ("hf", "boson"))
    assert (work / "export_hf" / "tokenizer.json").is_file() and (work / "export_boson" / "config.json").is_file()
    assert hf.keys() == boson.keys() and all(torch.equal(hf[k], boson[k]) for k in hf)

    gen = e2e["parts"]["generate"]
    wav, sample_rate = soundfile.read(gen["wav"])
    codes = np.load(Path(gen["wav"]).with_suffix(".npy"))
    assert sample_rate == 16000 and codes.shape[0] == 8 and 1 <= codes.shape[1] <= 8
    assert len(wav) == codes.shape[1] * 640  # the demo codec's hop: 16 kHz / 25 frames/s
    scores = json.loads(Path(gen["wav"]).with_suffix(".scores.json").read_text())["summary"]
    assert scores and all(math.isfinite(v["mean"]) for v in scores.values())


@pytest.mark.integration
def test_dry_run_installs_wheels_offline_and_runs_the_other_stages(gpu_check_dry_run):
    _, tmp, summary = gpu_check_dry_run
    manifest = json.loads((REPO / ".gpu_wheels" / "manifest.json").read_text())
    install, probe = summary["install"], summary["probe"]
    assert install["installed"] == sorted(manifest["pins"])  # the dry mode installs all, present or not
    assert install["versions"] == manifest["pins"]
    venv = tmp / "work" / "venv"
    for dist in ("webdataset", "deepspeed", "liger-kernel", "descript-audio-codec"):
        assert Path(probe["versions"][dist]["location"]).is_relative_to(venv), dist  # the wheel, not the base
    assert not Path(probe["versions"]["torch"]["location"]).is_relative_to(venv)  # the base interpreter's torch
    assert all(r["ok"] for r in probe["imports"].values()), probe["imports"]
    stages = summary["stages"]
    assert stages["kernel_tests"]["passed"] > 0 and stages["kernel_tests"]["failed"] == 0
    tables = stages["benchmarks"]["tables"]
    assert {"kernel_text_head_ce_cpu", "kernel_audio_head_ce_cpu", "kernel_routed_ffn_cpu"} <= set(tables)
    memory = stages["memory_probe"]
    assert [r["layers"] for r in memory["runs"]] == [1, 2] and not memory["compared"]
    assert all(r["states_bytes"] > 0 and len(r["peak_bytes"]) == 2 for r in memory["runs"])


def test_resume_rule_passes_a_continuing_loss_and_fails_a_restart():
    rule = _load("end_to_end").loss_continuity
    falling = {s: 6.0 - 0.05 * s for s in range(1, 81)}  # 5.95 -> 2.0
    assert rule(falling, stop=60, window=5)["ok"]
    restarted = {**falling, **{s: falling[s - 60] for s in range(61, 81)}}  # fresh weights after the resume
    result = rule(restarted, stop=60, window=5)
    assert not result["ok"] and result["jump"] == pytest.approx(1.0) and "jumped back" in result["reason"]
    flat = dict.fromkeys(range(1, 81), 3.0)
    assert "did not fall" in rule(flat, stop=60, window=5)["reason"]
    assert "no logged loss for steps [61" in rule({s: v for s, v in falling.items() if s != 61}, 60, 5)["reason"]


@pytest.mark.integration
def test_real_mode_without_cuda_stops_with_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the real mode would run")
    proc = _run("--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"))
    assert proc.returncode == 2
    assert "no CUDA device visible to" in proc.stdout and "`--dry` rehearses" in proc.stdout
    assert "**Not run:** no CUDA device" in (tmp_path / "out" / "summary.md").read_text()
    assert not (tmp_path / "work" / "venv").exists()


@pytest.mark.integration
def test_stages_that_do_not_fit_the_budget_are_skipped_and_counted(tmp_path):
    """A skipped stage proved nothing: the run is never reported OK, and exits 3."""
    proc = _run("--dry", "--budget", "20", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {s["status"] for s in summary["stages"].values()} == {"skipped"} and summary["skipped"] == 5
    assert "SKIPPED setup: needs about" in proc.stdout and "SKIPPED memory_probe: needs about" in proc.stdout
    assert "INCOMPLETE: 5 of 5 stages skipped" in proc.stdout and "finished OK" not in proc.stdout
    assert "**Incomplete:** 5 of 5 stages skipped" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize("budget", ["-5", "0", "nan", "inf", "soon"])
def test_the_budget_must_be_a_positive_number_of_seconds(budget, capsys):
    with pytest.raises(SystemExit) as exit_:
        _load("run").parse_args(["--dry", "--budget", budget])
    assert exit_.value.code == 2 and "not a positive number of seconds" in capsys.readouterr().err


def test_closure_check_names_a_dependency_neither_carried_nor_in_the_image(tmp_path):
    wheels = _load("wheels")
    wheel = tmp_path / "demo_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo_pkg-1.0.dist-info/METADATA", "Name: demo-pkg\nVersion: 1.0\nRequires-Dist: torch\n"
                    "Requires-Dist: not-in-image>=1\nRequires-Dist: win-only; sys_platform == 'win32'\n"
                    "Requires-Dist: docs-only; extra == 'docs'\n")
    assert wheels.check_closure([wheel], wheels.read_image_packages()) == [f"{wheel.name} needs not-in-image"]
    assert wheels.targets_device(wheel)
    assert not wheels.targets_device(tmp_path / "cffi-2.1.1-cp311-cp311-manylinux_2_17_x86_64.whl")


def test_carried_folder_over_the_device_limit_is_refused(tmp_path):
    wheels = _load("wheels")
    folder = tmp_path / "carry"
    folder.mkdir()
    with (folder / "big.whl").open("wb") as f:  # sparse: its size, not its blocks, is what counts
        f.truncate(wheels.CARRY_LIMIT_BYTES)
    with pytest.raises(SystemExit, match="over the 64 MiB limit"):
        wheels.check_carry_size(folder)
    (folder / "big.whl").unlink()
    (folder / "small.whl").write_bytes(b"x" * 1000)
    sizes = wheels.check_carry_size(folder)
    assert sizes["folder_bytes"] == 1000 and 0 < sizes["tree_bytes"] < wheels.CARRY_LIMIT_BYTES
