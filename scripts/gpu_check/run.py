"""The device check, stage by stage, each in its own time slot (see scripts/gpu_check.sh for usage).

The stages are data (`STAGES`: name, what it does, its slot on a GPU and in the dry mode, the commands it
runs and how its result is read), run in the order that finds the most bugs per second: setup, the
product end to end, kernel tests, benchmarks, the memory probe. A stage that would not fit in what is
left of the budget (positive seconds) is skipped, and the summary counts it: a run with a skipped stage is
never reported as passed (exit 3). `--dry` runs the same stages at toy sizes on the
CPU (gloo, the Triton interpreter); without `--dry` and without a CUDA device it stops with a clear error.
Everything lands in --out: one log per stage, gpu_check.log, summary.md and summary.json (8 files, flat:
what the device hands back).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESERVE_S = 15  # kept back for the summary
EXIT_SKIPPED = 3  # nothing failed, but a stage did not run (it did not fit the budget, or setup did not run)


@dataclass(frozen=True)
class Plan:
    """The sizes of one mode. One source of truth for what each stage is given."""

    kernel_tests: list[str]
    bench_files: list[str]
    bench_shapes: str
    end_to_end: list[str]
    memory_probe: list[str]
    env: dict[str, str] = field(default_factory=dict)


BENCH = [f"tests/benchmarks/test_kernel_{n}.py" for n in ("loss", "routed_ffn", "decoder_layer")]
GPU_PLAN = Plan(
    kernel_tests=["tests/kernels", "tests/test_routed_ffn.py", "tests/test_loss.py"],
    bench_files=BENCH, bench_shapes="full",
    # the demo recipe's model, bf16, 60 steps saved every 20, then 20 resumed steps
    end_to_end=["--device", "cuda", "--precision", "bf16", "--steps", "60", "--more", "20", "--save-every", "20",
                "--window", "5", "--frames", "100"],
    memory_probe=["--layers", "2,4", "--tokens", "4096,8192", "--precision", "bf16"],  # the released width
    # One GPU, one node, no network: NCCL bootstraps over loopback and reports errors instead of hanging.
    env={"DS_ACCELERATOR": "cuda", "NCCL_SOCKET_IFNAME": "lo", "NCCL_IB_DISABLE": "1", "NCCL_DEBUG": "WARN",
         "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "MASTER_ADDR": "127.0.0.1"},
)
DRY_PLAN = Plan(
    kernel_tests=["tests/kernels/test_ops_dispatch.py"],
    bench_files=BENCH[:2], bench_shapes="tiny",
    end_to_end=["--device", "cpu", "--precision", "fp32", "--steps", "6", "--more", "2", "--save-every", "3",
                "--window", "2", "--frames", "8", "--overrides", "model.hidden_size=64", "model.intermediate_size=128",
                "data.stream.max_tokens=1024"],
    memory_probe=["--layers", "1,2", "--tokens", "64,128", "--hidden", "64", "--intermediate", "128", "--heads", "4",
                  "--kv-heads", "2", "--vocab", "512", "--precision", "fp32"],
    env={"DS_ACCELERATOR": "cpu", "TRITON_INTERPRET": "1", "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"},
)


@dataclass(frozen=True)
class Stage:
    name: str
    what: str
    slot_s: float  # the most it may take on a GPU
    dry_slot_s: float  # the same in the dry mode
    need_s: float  # the least worth starting it with
    commands: Callable[[Check], list[list[str]]]
    collect: Callable[[Check, int | None], dict]  # (check, exit code or None when killed) -> result
    env: Callable[[Check], dict[str, str]] = lambda check: check.env()  # the venv's, with the plan's settings


class Check:
    def __init__(self, args):
        self.args, self.t0 = args, time.monotonic()
        self.out, self.work = args.out, args.work
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = (self.out / "gpu_check.log").open("w")
        self.summary = {"out": str(self.out), "work": str(self.work), "stages": {}}
        self.venv_python = self.work / "venv" / "bin" / "python"
        self.dry = args.dry
        self.plan = DRY_PLAN if self.dry else GPU_PLAN
        self.budget = args.budget or sum(s.dry_slot_s if self.dry else s.slot_s for s in STAGES) + RESERVE_S
        self.summary.update(mode="dry" if self.dry else "gpu", budget_s=self.budget, base_python=sys.executable)

    # ---- plumbing -----------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        line = f"[gpu-check {time.monotonic() - self.t0:5.0f}s] {msg}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0) - RESERVE_S

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the device runs real kernels
        env.update(PYTHONUNBUFFERED="1", WANDB_MODE="offline", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   VIRTUAL_ENV=str(self.venv_python.parents[1]),
                   PATH=f"{self.venv_python.parent}:{env.get('PATH', '')}", **self.plan.env)
        if self.dry:  # DeepSpeed's CPU allreduce op compiles against the venv's paths: its own cache, so that
            # the project venv's compiled copy (shared cache, other paths) is not rebuilt after the rehearsal
            env["TORCH_EXTENSIONS_DIR"] = str(self.work / "torch_extensions")
        return env

    def run(self, cmd: list[str], log_name: str, timeout: float, env: dict, append=False) -> int | None:
        """Run `cmd`, teeing its output to stdout and out/<log_name>; kill its process group at `timeout`.
        Returns the exit code, or None when killed."""
        t0 = time.monotonic()
        with (self.out / log_name).open("a" if append else "w") as log:
            log.write(f"$ {' '.join(cmd)}\n")
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)

            def pump():
                for line in proc.stdout:
                    sys.stdout.write(line)
                    log.write(line)

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            try:
                rc = proc.wait(timeout=max(timeout, 1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                rc = None
            reader.join(timeout=5)
            log.write(f"[exit {rc} after {time.monotonic() - t0:.0f} s]\n")
        return rc

    def stage(self, stage: Stage) -> None:
        slot, left = stage.dry_slot_s if self.dry else stage.slot_s, self.left()
        reason = None
        if left < stage.need_s:
            reason = f"needs about {stage.need_s:.0f} s, {max(left, 0):.0f} s of the budget left"
        elif stage.name != "setup" and not self.venv_python.exists():
            reason = "no venv: setup did not run"
        if reason:
            self.summary["stages"][stage.name] = {"status": "skipped", "reason": reason, "slot_s": slot}
            self.say(f"SKIPPED {stage.name}: {reason}")
            return
        deadline = time.monotonic() + min(slot, left)
        self.say(f"stage {stage.name}: {stage.what} (slot {min(slot, left):.0f} s)")
        t0, rc = time.monotonic(), 0
        try:
            for i, cmd in enumerate(stage.commands(self)):
                rc = self.run(cmd, f"{stage.name}.log", deadline - time.monotonic(), env=stage.env(self), append=i > 0)
                if rc != 0:
                    break
            result = stage.collect(self, rc)
        except Exception as e:  # noqa: BLE001 - one broken stage must not lose the others' results
            result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
        if rc is None and result["status"] != "passed":
            result.update(status="timeout", reason=f"killed at the end of its {min(slot, left):.0f} s slot; "
                                                   f"{result.get('reason') or ''}".rstrip("; "))
        result.update(seconds=round(time.monotonic() - t0, 1), slot_s=slot)
        self.summary["stages"][stage.name] = result
        self.say(f"{stage.name}: {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""))

    def has(self, dist: str) -> bool:
        return bool(self.summary.get("probe", {}).get("versions", {}).get(dist, {}).get("version"))

    # ---- summary ------------------------------------------------------------------------------
    def finish(self) -> int:
        stages = self.summary["stages"]
        failed = [n for n, s in stages.items() if s["status"] in ("failed", "timeout")]
        skipped = [n for n, s in stages.items() if s["status"] == "skipped"]
        self.summary.update(elapsed_s=round(time.monotonic() - self.t0, 1), failed=len(failed), skipped=len(skipped))
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")
        (self.out / "summary.md").write_text(render_markdown(self.summary))
        for name, s in stages.items():
            self.say(f"{name:13s} {s['status']:8s} {s.get('seconds', 0):6.0f} s  {s.get('reason') or ''}")
        self.say(f"summary: {self.out / 'summary.md'} and summary.json ({self.summary['elapsed_s']:.0f} s of "
                 f"{self.budget:.0f} s)")
        if skipped:  # a stage that did not run proved nothing: never reported as a pass
            self.say(f"INCOMPLETE: {len(skipped)} of {len(stages)} stages skipped ({', '.join(skipped)})")
        if self.dry:
            self.say("no CUDA device used: dry run finished " + (
                "with failures" if failed else "without running every stage" if skipped else
                "OK (the stages ran end to end at toy sizes; nothing here was measured on a GPU)"))
        return 1 if failed else EXIT_SKIPPED if skipped else 0


# ---- the stages: commands and results ------------------------------------------------------------
def setup_commands(check: Check) -> list[list[str]]:
    wheels, cmds = check.args.wheels, []
    if not (wheels / "manifest.json").exists():
        if check.dry:
            check.say(f"{wheels} has no manifest: preparing it (needs PyPI)")
            cmds.append([sys.executable, str(HERE / "wheels.py"), "prepare", "--wheels", str(wheels)])
        else:
            check.say(f"WARNING: {wheels} is empty: nothing missing from the image can be installed, and there is "
                      "no demo data (run `make gpu-wheels` where PyPI is reachable and carry the folder)")
    cmds.append([sys.executable, str(HERE / "wheels.py"), "install", "--wheels", str(wheels), "--venv",
                 str(check.venv_python.parents[1]), "--report", str(check.work / "setup.json")]
                + (["--all"] if check.dry else []))
    cmds.append([str(check.venv_python), str(HERE / "probe.py"), str(check.work / "probe.json")])
    return cmds


def setup_collect(check: Check, rc: int | None) -> dict:
    if rc != 0:
        return {"status": "failed", "reason": f"exit {rc} (see setup.log)"}
    install, probe = (json.loads((check.work / f).read_text()) for f in ("setup.json", "probe.json"))
    check.summary.update(install=install, probe=probe)
    versions = {k: v["version"] for k, v in probe["versions"].items()}
    check.say("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; device {probe['device']}")
    broken = [m for m, r in probe["imports"].items() if not r["ok"]]
    for m in broken:
        check.say(f"import {m} FAILED: {probe['imports'][m]['error']}")
    return {"status": "failed" if broken else "passed", "installed": install["installed"],
            "reason": f"imports failing: {broken}" if broken else None}


def end_to_end_commands(check: Check) -> list[list[str]]:
    work = check.work / "end_to_end"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return [[str(check.venv_python), str(HERE / "end_to_end.py"), "--data", str(check.args.data), "--work", str(work),
             "--json", str(check.work / "end_to_end.json"), *check.plan.end_to_end]]


def json_collect(name: str) -> Callable[[Check, int | None], dict]:
    """A stage whose script writes <work>/<name>.json with its own status and reason."""
    def collect(check: Check, rc: int | None) -> dict:
        path = check.work / f"{name}.json"
        if not path.exists():
            return {"status": "failed", "reason": f"exit {rc}, no {path.name} written (see {name}.log)"}
        return json.loads(path.read_text())

    return collect


def kernel_tests_commands(check: Check) -> list[list[str]]:
    xml = check.work / "kernel_tests.xml"
    xml.unlink(missing_ok=True)
    workers = ["-n", "4"] if not check.dry and check.has("pytest-xdist") else []
    return [[str(check.venv_python), "-m", "pytest", "-v", "-rfE", "-p", "no:cacheprovider", *workers,
             f"--junitxml={xml}", *check.plan.kernel_tests]]


def kernel_tests_collect(check: Check, rc: int | None) -> dict:
    xml = check.work / "kernel_tests.xml"
    counts = junit_counts(xml) if xml.exists() else log_counts((check.out / "kernel_tests.log").read_text())
    return {"status": "passed" if rc == 0 else "failed", **counts,
            "reason": None if rc == 0 else f"pytest exit {rc}; {counts['failed']} failed, {counts['errors']} errors"}


def benchmarks_commands(check: Check) -> list[list[str]]:
    bench_dir = check.work / "bench"
    shutil.rmtree(bench_dir, ignore_errors=True)
    return [[str(check.venv_python), "-m", "pytest", "--benchmark", "-q", "-s", "-rs", "-p", "no:cacheprovider",
             *check.plan.bench_files]]


def benchmarks_collect(check: Check, rc: int | None) -> dict:
    bench_dir = check.work / "bench"
    tables = {p.stem: json.loads(p.read_text()) for p in sorted(bench_dir.glob("*.json"))}
    rendered = [p.read_text() for p in sorted(bench_dir.glob("*.md"))]  # as the benchmarks print them
    ok = rc == 0 and tables
    return {"status": "passed" if ok else "failed", "tables": tables, "rendered": rendered,
            "reason": None if ok else f"pytest exit {rc}, {len(tables)} tables written"}


def memory_probe_commands(check: Check) -> list[list[str]]:
    return [[str(check.venv_python), str(HERE / "memory_probe.py"), "--json", str(check.work / "memory_probe.json"),
             *check.plan.memory_probe]]


STAGES = (
    Stage("setup", "venv on the machine's torch, missing wheels installed offline, versions, imports",
          slot_s=40, dry_slot_s=300, need_s=15, commands=setup_commands, collect=setup_collect,
          env=lambda check: {**os.environ, "PYTHONUNBUFFERED": "1"}),  # the base interpreter makes the venv
    Stage("end_to_end", "train (DeepSpeed launcher, ZeRO-3, 1 device), save, resume, export both layouts, "
          "generate a wav, score it", slot_s=180, dry_slot_s=300, need_s=60, commands=end_to_end_commands,
          collect=json_collect("end_to_end")),
    Stage("kernel_tests", "kernel tests against the PyTorch references, interpreter off on a GPU",
          slot_s=110, dry_slot_s=120, need_s=30, commands=kernel_tests_commands, collect=kernel_tests_collect),
    Stage("benchmarks", "pytest --benchmark ratio tables at the released shapes, Liger included on a GPU",
          slot_s=90, dry_slot_s=120, need_s=30, commands=benchmarks_commands, collect=benchmarks_collect,
          env=lambda check: {**check.env(), "HIGGS_BENCH_SHAPES": check.plan.bench_shapes,
                             "HIGGS_BENCH_DIR": str(check.work / "bench")}),
    Stage("memory_probe", "ZeRO-3 + activation checkpointing at H=3072: memory per layer and per token vs the "
          "sizing estimate", slot_s=90, dry_slot_s=180, need_s=40, commands=memory_probe_commands,
          collect=json_collect("memory_probe")),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def junit_counts(path: Path) -> dict:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total = lambda key: sum(int(s.get(key, 0)) for s in suites)  # noqa: E731
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in root.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    n_fail, n_err, n_skip = total("failures"), total("errors"), total("skipped")
    return {"passed": total("tests") - n_fail - n_err - n_skip, "failed": n_fail, "errors": n_err,
            "skipped": n_skip, "failures": failed[:30]}


def log_counts(text: str) -> dict:
    """Outcomes from pytest -v lines, for a run killed before it wrote its JUnit file."""
    text = text.split("short test summary info")[0]
    outcomes = re.findall(r"\b(PASSED|FAILED|ERROR|SKIPPED)\b", text)
    failures = re.findall(r"(\S+::\S+) (?:FAILED|ERROR)|(?:FAILED|ERROR) (\S+::\S+)", text)
    return {"passed": outcomes.count("PASSED"), "failed": outcomes.count("FAILED"), "errors": outcomes.count("ERROR"),
            "skipped": outcomes.count("SKIPPED"), "failures": [a or b for a, b in failures][:30], "incomplete": True}


# ---- summary.md ----------------------------------------------------------------------------------
def _mib(x) -> str:
    return "n/a" if x is None else f"{x / 2**20:,.2f}"


def render_markdown(summary: dict) -> str:
    mode, elapsed, budget = summary.get("mode", "?"), summary["elapsed_s"], summary["budget_s"]
    stages = summary["stages"]
    lines = [f"# GPU check: {mode} mode, {elapsed:.0f} s of {budget:.0f} s", ""]
    if mode == "dry":
        lines += ["Dry mode: the same stages at toy sizes on the CPU (gloo, Triton through its interpreter). It "
                  "proves the sequence runs; none of its numbers is a GPU measurement.", ""]
    if summary.get("error"):
        lines += [f"**Not run:** {summary['error']}", ""]
    if summary.get("skipped"):
        lines += [f"**Incomplete:** {summary['skipped']} of {len(stages)} stages skipped (they proved nothing).", ""]
    probe = summary.get("probe")
    if probe:
        versions = ", ".join(f"{k} {v['version']}" for k, v in probe["versions"].items() if v["version"])
        d = probe["device"]
        device = (f"{d['name']} (compute capability {d['capability']}, {d['memory_gib']} GiB, "
                  f"{d['multiprocessors']} SMs), CUDA {d['torch_cuda']}" if d["cuda_available"] else "no CUDA device")
        lines += [f"Device: {device}", "", f"Versions: {versions}", "",
                  f"Installed from wheels: {', '.join(summary['install']['installed']) or 'nothing'}", ""]
    lines += ["| stage | status | seconds | slot (s) | reason |", "|---|---|---|---|---|"]
    for name in STAGE_NAMES:
        s = stages.get(name)
        if s:
            lines.append(f"| {name} | {s['status']} | {s.get('seconds', 0):.0f} | {s.get('slot_s', 0):.0f} | "
                         f"{s.get('reason') or ''} |")
    lines += _end_to_end_lines(stages.get("end_to_end", {}))
    kt = stages.get("kernel_tests", {})
    if "passed" in kt:
        lines += ["", "## Kernel tests", "", f"{kt['passed']} passed, {kt['failed']} failed, {kt['errors']} errors, "
                  f"{kt['skipped']} skipped"] + [f"- FAILED {f}" for f in kt["failures"]]
    rendered = stages.get("benchmarks", {}).get("rendered", [])
    if rendered:
        lines += ["", "## Benchmarks"] + [line for table in rendered for line in ("", table.rstrip())]
    lines += _memory_lines(stages.get("memory_probe", {}))
    return "\n".join(lines) + "\n"


def _end_to_end_lines(e2e: dict) -> list[str]:
    parts = e2e.get("parts")
    if not parts:
        return []
    lines = ["", "## End to end", "", "| part | seconds | result |", "|---|---|---|"]
    cont, gen, exp = parts.get("continuity", {}), parts.get("generate", {}), parts.get("export", {})
    results = {
        "train": f"stopped at step {e2e['steps']} ({e2e['precision']} on {e2e['device']})",
        "checkpoints": ", ".join(parts.get("checkpoints", {}).get("tags", [])),
        "resume": f"{e2e['more']} more steps with resume=auto",
        "continuity": (f"loss {cont['start']:.3f} at the start, {cont['before']:.3f} before the resume, "
                       f"{cont['after']:.3f} after (jump {cont['jump']:.0%} of what was learned, limit "
                       f"{cont['max_jump']:.0%})" if "jump" in cont else ""),
        "export": "; ".join(f"{k}: {v['tensors']} tensors read back equal" for k, v in exp.items()
                            if isinstance(v, dict)),
        "generate": (f"{gen['frames']} frames, {gen['audio_s']:.2f} s at {gen['sample_rate']} Hz; scores "
                     + ", ".join(f"{k} {v:.2f}" for k, v in gen["scores"].items()) if "frames" in gen else ""),
    }
    for name, part in parts.items():
        seconds = part.get("seconds")
        lines.append(f"| {name} | {'-' if seconds is None else f'{seconds:.0f}'} | "
                     f"{results.get(name, '') if seconds is not None else 'FAILED here'} |")
    return lines


def _memory_lines(probe: dict) -> list[str]:
    if "states_per_layer_bytes" not in probe:
        return []
    m = probe["model"]
    lines = ["", f"## Memory probe (H={m['hidden']}, I={m['intermediate']}, V={m['vocab']}, {m['precision']}, "
                 f"ZeRO-3 on one device, activation checkpointing)", "",
             "| figure | measured (MiB) | estimate (MiB) |", "|---|---|---|",
             f"| model states per layer | {_mib(probe['states_per_layer_bytes'])} | "
             f"{_mib(probe['states_per_layer_estimate_bytes'])} |",
             f"| activations per token per layer | {_mib(probe['act_per_token_per_layer_bytes'])} | "
             f"{_mib(probe['act_per_token_per_layer_estimate_bytes'])} |",
             f"| activations per token, 28 layers (extrapolated) | {_mib(probe['act_per_token_released_bytes'])} | "
             f"{_mib(probe['act_per_token_released_estimate_bytes'])} |"]
    for r in probe["runs"]:
        peaks = ", ".join(f"{t} tokens {_mib(v)}" for t, v in r["peak_bytes"].items())
        lines.append(f"\n{r['layers']}-layer run on {r['device_name']}: states {_mib(r['states_bytes'])} MiB; "
                     f"step peak {peaks} MiB")
    if not probe.get("compared"):
        lines.append("\nCPU figures are the process's peak resident set: not comparable with the GPU estimate.")
    return lines


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse converts a string default with it too)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a positive number of seconds")
    return value


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description="GPU check (see scripts/gpu_check.sh)")
    p.add_argument("--dry", action="store_true", help="the same stages at toy sizes on the CPU, even on a GPU")
    p.add_argument("--budget", type=_seconds, default=os.environ.get("GPU_CHECK_BUDGET") or None,
                   help="seconds for everything (default: the sum of the slots); stages that do not fit are skipped")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "runs" / "gpu_check"))
    p.add_argument("--work", type=Path, default=Path(os.environ.get("GPU_CHECK_WORK", "/tmp/higgs_gpu_check")),
                   help="venv, runs and intermediate files (not handed back)")
    p.add_argument("--wheels", type=Path, default=REPO / ".gpu_wheels")
    p.add_argument("--data", type=Path, help="demo data: train/, eval/, tokenizer/ (default <wheels>/demo)")
    p.add_argument("--stages", default=",".join(STAGE_NAMES), help=f"comma-separated subset of {STAGE_NAMES}")
    args = p.parse_args(argv)
    args.stages = [s for s in args.stages.split(",") if s]
    unknown = set(args.stages) - set(STAGE_NAMES)
    if unknown:
        p.error(f"unknown stages {sorted(unknown)}; choose from {STAGE_NAMES}")
    if "setup" not in args.stages:
        args.stages.insert(0, "setup")  # every other stage runs in the venv that setup makes
    args.out, args.work, args.wheels = args.out.resolve(), args.work.resolve(), args.wheels.resolve()
    args.data = (args.data or args.wheels / "demo").resolve()
    return args


def cuda_error() -> str | None:
    """Why this machine cannot run the real check, or None when torch sees a CUDA device."""
    code = "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    fields = proc.stdout.split()
    if proc.returncode == 0 and fields[-1:] == ["True"]:
        return None
    seen = f"torch {fields[0]}, CUDA {fields[1]}" if len(fields) == 3 else f"torch did not import: {proc.stderr[-300:]}"
    return (f"no CUDA device visible to {sys.executable} ({seen}, CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}). The GPU check needs one; `--dry` rehearses the same "
            f"stages on the CPU.")


def main() -> int:
    check = Check(parse_args())
    if not check.dry:
        error = cuda_error()
        if error:
            check.say(f"ERROR: {error}")
            check.summary["error"] = error
            check.finish()
            return 2
    check.say(f"{check.summary['mode']} mode, budget {check.budget:.0f} s, out {check.out}, work {check.work}, "
              f"data {check.args.data}")
    for stage in STAGES:
        if stage.name in check.args.stages:
            check.stage(stage)
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
