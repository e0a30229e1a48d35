"""The device check, stage by stage, inside one time budget (see scripts/gpu_check.sh for usage).

Stages: setup (venv + missing wheels + versions + imports), kernel_tests (Triton on the device, interpreter
off), benchmarks (`pytest --benchmark` ratio tables), train (a few steps per ops backend). A stage that
would not fit in what is left of the budget is skipped, and the summary says so. Without CUDA the same
stages run in a dry mode at toy sizes, to prove the plumbing. Everything lands in --out: one log per stage,
gpu_check.log, summary.md and summary.json (at most 8 files, flat: what the device hands back).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STAGES = ("setup", "kernel_tests", "benchmarks", "train")
BACKENDS = ("torch", "triton")
RESERVE_S = 10  # kept back for the summary


@dataclass
class Plan:
    """What each stage runs in one mode, and its time model: `need` = the least time worth starting
    it with, `cap` = the most it may take (train: per backend)."""

    kernel_tests: list[str]
    bench_files: list[str]
    bench_shapes: str
    train_args: list[str]
    need: dict[str, float]
    cap: dict[str, float]
    env: dict[str, str] = field(default_factory=dict)


BENCH = [f"tests/benchmarks/test_kernel_{n}.py" for n in ("loss", "routed_ffn", "decoder_layer")]
GPU_PLAN = Plan(
    kernel_tests=["tests/kernels", "tests/test_routed_ffn.py", "tests/test_loss.py"],
    bench_files=BENCH, bench_shapes="full",
    train_args=["--engine", "auto", "--precision", "bf16"],  # 8 layers, H=2048, 4 x 2048 tokens (defaults)
    need={"setup": 20, "kernel_tests": 60, "benchmarks": 60, "train": 45},
    cap={"setup": 120, "kernel_tests": 180, "benchmarks": 150, "train": 120},
    env={"DS_ACCELERATOR": "cuda"},
)
DRY_PLAN = Plan(
    kernel_tests=["tests/kernels/test_ops_dispatch.py"],
    bench_files=BENCH[:2], bench_shapes="tiny",
    # DeepSpeed on CPU JIT-builds a shared-memory op (minutes); the dry mode trains with plain PyTorch.
    train_args=["--engine", "torch", "--precision", "fp32", "--layers", "2", "--hidden", "64", "--intermediate",
                "128", "--heads", "4", "--kv-heads", "2", "--vocab", "512", "--batch", "2", "--seq", "32",
                "--warmup", "1", "--steps", "1"],
    need={"setup": 20, "kernel_tests": 10, "benchmarks": 10, "train": 10},
    cap={"setup": 300, "kernel_tests": 120, "benchmarks": 120, "train": 120},
    env={"TRITON_INTERPRET": "1"},
)


class Check:
    def __init__(self, args):
        self.args, self.t0 = args, time.monotonic()
        self.out, self.work = args.out, args.work
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = (self.out / "gpu_check.log").open("w")
        self.summary = {"budget_s": args.budget, "out": str(self.out), "work": str(self.work), "stages": {}}
        self.venv_python = self.work / "venv" / "bin" / "python"

    # ---- plumbing -----------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        line = f"[gpu-check {time.monotonic() - self.t0:5.0f}s] {msg}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.t0) - RESERVE_S

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the device runs real kernels
        env.update(PYTHONUNBUFFERED="1", WANDB_MODE="offline", HF_HUB_OFFLINE="1",
                   VIRTUAL_ENV=str(self.venv_python.parents[1]),
                   PATH=f"{self.venv_python.parent}:{env.get('PATH', '')}", **self.plan.env)
        return env

    def run(self, cmd: list[str], log_name: str, timeout: float, env=None, append=False) -> tuple[int | None, float]:
        """Run `cmd`, teeing its output to stdout and out/<log_name>; kill its process group at `timeout`.
        Returns (exit code, or None when killed; seconds)."""
        t0 = time.monotonic()
        with (self.out / log_name).open("a" if append else "w") as log:
            log.write(f"$ {' '.join(cmd)}\n")
            proc = subprocess.Popen(cmd, cwd=REPO, env=env or self.env(), stdout=subprocess.PIPE,
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
        return rc, time.monotonic() - t0

    def stage(self, name: str, fn) -> None:
        if name not in self.args.stages:
            return
        need, left = self.plan.need[name], self.left()  # train: for its first backend
        reason = None
        if left < need:
            reason = f"needs about {need:.0f} s, {max(left, 0):.0f} s of the budget left"
        elif name != "setup" and not self.venv_python.exists():
            reason = "no venv: setup did not run"
        if reason:
            self.summary["stages"][name] = {"status": "skipped", "reason": reason}
            self.say(f"SKIPPED {name}: {reason}")
            return
        self.say(f"stage {name} (up to {min(left, self.plan.cap[name]):.0f} s)")
        t0 = time.monotonic()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - one broken stage must not lose the others' results
            result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
        result["seconds"] = round(time.monotonic() - t0, 1)
        self.summary["stages"][name] = result
        self.say(f"{name}: {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""))

    def timeout(self, name: str) -> float:
        return min(self.left(), self.plan.cap[name])

    # ---- stages -------------------------------------------------------------------------------
    def detect(self) -> None:
        cuda = False
        if not self.args.dry:
            code = "import torch; print(torch.cuda.is_available())"
            cuda = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "True"
        self.dry = not cuda
        self.plan = DRY_PLAN if self.dry else GPU_PLAN
        self.summary.update(mode="dry" if self.dry else "gpu", base_python=sys.executable)
        self.say(("dry mode (--dry)" if self.args.dry else "no CUDA device: dry mode") +
                 ": toy sizes on the CPU, checking the script's own plumbing" if self.dry else "CUDA device found")

    def setup(self) -> dict:
        wheels = self.args.wheels
        if not (wheels / "manifest.json").exists():
            if self.dry:
                self.say(f"{wheels} has no manifest: preparing it (needs PyPI)")
                rc, _ = self.run([sys.executable, str(HERE / "wheels.py"), "prepare", "--wheels", str(wheels)],
                                 "setup.log", self.timeout("setup"))
                if rc != 0:
                    return {"status": "failed", "reason": f"wheel preparation exited {rc}"}
            else:
                self.say(f"WARNING: {wheels} is empty: nothing missing from the image can be installed "
                         "(run `make gpu-wheels` where PyPI is reachable and carry the folder)")
        report = self.work / "setup.json"
        cmd = [sys.executable, str(HERE / "wheels.py"), "install", "--wheels", str(wheels), "--venv",
               str(self.venv_python.parents[1]), "--report", str(report)] + (["--all"] if self.dry else [])
        rc, _ = self.run(cmd, "setup.log", self.timeout("setup"), env={**os.environ, "PYTHONUNBUFFERED": "1"},
                         append=True)
        if rc != 0:
            return {"status": "failed", "reason": f"venv install exited {rc}"}
        probe_json = self.work / "probe.json"
        rc, _ = self.run([str(self.venv_python), str(HERE / "probe.py"), str(probe_json)], "setup.log",
                         self.timeout("setup"), append=True)
        if rc != 0:
            return {"status": "failed", "reason": f"probe exited {rc}"}
        install, probe = json.loads(report.read_text()), json.loads(probe_json.read_text())
        self.summary.update(install=install, probe=probe)
        versions = {k: v["version"] for k, v in probe["versions"].items()}
        self.say("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; device {probe['device']}")
        broken = [m for m, r in probe["imports"].items() if not r["ok"]]
        for m in broken:
            self.say(f"import {m} FAILED: {probe['imports'][m]['error']}")
        return {"status": "failed" if broken else "passed", "installed": install["installed"],
                "reason": f"imports failing: {broken}" if broken else None}

    def kernel_tests(self) -> dict:
        xml = self.work / "kernel_tests.xml"
        xml.unlink(missing_ok=True)
        workers = ["-n", "4"] if not self.dry and self._has("pytest-xdist") else []
        cmd = [str(self.venv_python), "-m", "pytest", "-v", "-rfE", *workers, f"--junitxml={xml}",
               *self.plan.kernel_tests]
        rc, _ = self.run(cmd, "kernel_tests.log", self.timeout("kernel_tests"))
        counts = junit_counts(xml) if xml.exists() else log_counts((self.out / "kernel_tests.log").read_text())
        status = "timeout" if rc is None else "passed" if rc == 0 else "failed"
        return {"status": status, **counts, "reason": None if rc == 0 else f"pytest exit {rc}; {counts['failed']} "
                f"failed, {counts['errors']} errors"}

    def benchmarks(self) -> dict:
        bench_dir = self.work / "bench"
        for old in bench_dir.glob("*"):
            old.unlink()
        env = {**self.env(), "HIGGS_BENCH_SHAPES": self.plan.bench_shapes, "HIGGS_BENCH_DIR": str(bench_dir)}
        cmd = [str(self.venv_python), "-m", "pytest", "--benchmark", "-q", "-s", "-rs", *self.plan.bench_files]
        rc, _ = self.run(cmd, "benchmarks.log", self.timeout("benchmarks"), env=env)
        tables = {p.stem: json.loads(p.read_text()) for p in sorted(bench_dir.glob("*.json"))}
        rendered = [p.read_text() for p in sorted(bench_dir.glob("*.md"))]  # as the benchmarks print them
        status = "timeout" if rc is None else "passed" if rc == 0 and tables else "failed"
        return {"status": status, "tables": tables, "rendered": rendered,
                "reason": None if status == "passed" else f"pytest exit {rc}, {len(tables)} tables written"}

    def train(self) -> dict:
        # One process per backend on the device (clean peak memory, one DeepSpeed init each); the dry mode
        # runs both in one process to save an interpreter start.
        groups = [list(BACKENDS)] if self.dry else [[b] for b in BACKENDS]
        runs, problems = {}, []
        for i, group in enumerate(groups):
            left = self.left()
            if left < self.plan.need["train"]:
                problems.append(f"{','.join(group)} skipped ({left:.0f} s left)")
                self.say(f"SKIPPED train/{','.join(group)}: {left:.0f} s left")
                continue
            # Share what is left between the runs still to come, so the last one gets its turn.
            got = self._train(group, self.plan.train_args, min(self.plan.cap["train"], left / (len(groups) - i)))
            retry = not self.dry and "auto" in self.plan.train_args and self.left() > self.plan.need["train"]
            if not got and retry:
                self.say(f"train/{','.join(group)} failed with DeepSpeed: again with plain PyTorch")
                args = ["torch" if a == "auto" else a for a in self.plan.train_args]
                got = self._train(group, args, min(self.plan.cap["train"], self.left()))
            runs.update(got)
            problems += [f"{b} failed (see train.log)" for b in group if b not in got]
        ok = len(runs) == len(BACKENDS) and all(r["losses_finite"] for r in runs.values())
        return {"status": "passed" if ok else "partial" if runs else "failed", "runs": runs,
                "reason": "; ".join(problems) or (None if ok else "non-finite loss")}

    def _train(self, backends: list[str], args: list[str], timeout: float) -> dict:
        for b in backends:
            (self.work / f"train_{b}.json").unlink(missing_ok=True)
        env = {**self.env(), "MASTER_PORT": str(29500 + os.getpid() % 1000 + len(backends[0]))}
        cmd = [str(self.venv_python), str(HERE / "train_steps.py"), "--backend", ",".join(backends), *args,
               "--max-seconds", str(max(timeout - 15, 5)), "--json-dir", str(self.work)]
        self.run(cmd, "train.log", timeout, env=env, append=True)
        done = {b: self.work / f"train_{b}.json" for b in backends}
        return {b: json.loads(path.read_text()) for b, path in done.items() if path.exists()}

    def _has(self, dist: str) -> bool:
        return bool(self.summary.get("probe", {}).get("versions", {}).get(dist, {}).get("version"))

    # ---- summary ------------------------------------------------------------------------------
    def finish(self) -> int:
        self.summary["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")
        (self.out / "summary.md").write_text(render_markdown(self.summary))
        failed = [n for n, s in self.summary["stages"].items() if s["status"] in ("failed", "timeout")]
        for name in STAGES:
            s = self.summary["stages"].get(name)
            if s is not None:
                self.say(f"{name:13s} {s['status']:8s} {s.get('seconds', 0):6.0f} s  {s.get('reason') or ''}")
        self.say(f"summary: {self.out / 'summary.md'} and summary.json ({self.summary['elapsed_s']:.0f} s of "
                 f"{self.args.budget} s)")
        if self.dry:
            self.say("no CUDA device used: dry run finished " + ("with failures" if failed else "OK (plumbing "
                     "checked; nothing here was measured on a GPU)"))
        return 1 if failed else 0


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
    count = lambda o: outcomes.count(o)  # noqa: E731
    failures = re.findall(r"(\S+::\S+) (?:FAILED|ERROR)|(?:FAILED|ERROR) (\S+::\S+)", text)
    return {"passed": count("PASSED"), "failed": count("FAILED"), "errors": count("ERROR"),
            "skipped": count("SKIPPED"), "failures": [a or b for a, b in failures][:30], "incomplete": True}


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render_markdown(summary: dict) -> str:
    mode, elapsed, budget = summary.get("mode", "?"), summary["elapsed_s"], summary["budget_s"]
    lines = [f"# GPU check: {mode} mode, {elapsed:.0f} s of {budget:.0f} s", ""]
    if mode == "dry":
        lines += ["Dry mode: toy sizes on the CPU (Triton through its interpreter). It proves the plumbing; "
                  "none of its numbers is a measurement.", ""]
    probe = summary.get("probe")
    if probe:
        versions = ", ".join(f"{k} {v['version']}" for k, v in probe["versions"].items() if v["version"])
        d = probe["device"]
        device = (f"{d['name']} (compute capability {d['capability']}, {d['memory_gib']} GiB, "
                  f"{d['multiprocessors']} SMs), CUDA {d['torch_cuda']}" if d["cuda_available"] else "no CUDA device")
        lines += [f"Device: {device}", "", f"Versions: {versions}", "",
                  f"Installed from wheels: {', '.join(summary['install']['installed']) or 'nothing'}", ""]
    lines += ["| stage | status | seconds | note |", "|---|---|---|---|"]
    for name in STAGES:
        s = summary["stages"].get(name)
        if s:
            lines.append(f"| {name} | {s['status']} | {s.get('seconds', 0):.0f} | {s.get('reason') or ''} |")
    kt = summary["stages"].get("kernel_tests", {})
    if "passed" in kt:
        lines += ["", f"Kernel tests: {kt['passed']} passed, {kt['failed']} failed, {kt['errors']} errors, "
                      f"{kt['skipped']} skipped"] + [f"- FAILED {f}" for f in kt["failures"]]
    for table in summary["stages"].get("benchmarks", {}).get("rendered", []):
        lines += ["", table.rstrip()]
    runs = summary["stages"].get("train", {}).get("runs", {})
    if runs:
        lines += ["", "### Training steps (same model, data and engine; ops backend differs)", "",
                  "| backend | engine | tokens/s | step (s) | MFU | MFU vs measured GEMM | peak mem (GiB) "
                  "| loss first -> last |",
                  "|---|---|---|---|---|---|---|---|"]
        for backend, r in runs.items():
            lines.append(f"| {backend} | {r['engine']} | {r['tokens_per_s']:.0f} | {r['step_s']:.3f} | "
                         f"{_fmt(r['mfu'], '.1%')} | {_fmt(r['mfu_vs_matmul'], '.1%')} | {r['peak_mem_gib']:.1f} | "
                         f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f} |")
        first = next(iter(runs.values()))
        m = first["model"]
        lines += ["", f"Model: {m['layers']} layers, H={m['hidden']}, I={m['intermediate']}, V={m['vocab']}, "
                      f"{m['params'] / 1e6:.0f}M parameters, {_fmt(m['active_params_per_token'], ',')} active "
                      f"per token; {first['tokens_per_step']} tokens per step at {first['audio_fraction']:.0%} audio; "
                      f"{first['precision']} on {first['device_name']}; peak {_fmt(first['peak_tflops'], '.0f')} "
                      f"TFLOP/s (datasheet), GEMM measured {_fmt(first['matmul_tflops'], '.0f')} TFLOP/s."]
        if "torch" in runs and "triton" in runs:
            t, k = runs["torch"], runs["triton"]
            lines += ["", f"Triton vs torch: {k['tokens_per_s'] / t['tokens_per_s']:.2f}x tokens/s, "
                          f"{k['peak_mem_gib'] / max(t['peak_mem_gib'], 1e-9):.2f}x peak memory."]
    return "\n".join(lines) + "\n"


def parse_args():
    p = argparse.ArgumentParser(description="GPU check (see scripts/gpu_check.sh)")
    p.add_argument("--dry", action="store_true", help="toy sizes, even on a GPU")
    p.add_argument("--budget", type=float, default=float(os.environ.get("GPU_CHECK_BUDGET", 480)),
                   help="seconds for everything; stages that would not fit are skipped")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "runs" / "gpu_check"))
    p.add_argument("--work", type=Path, default=Path(os.environ.get("GPU_CHECK_WORK", "/tmp/higgs_gpu_check")),
                   help="venv, JUnit and benchmark files (not handed back)")
    p.add_argument("--wheels", type=Path, default=REPO / ".gpu_wheels")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    args = p.parse_args()
    args.stages = [s for s in args.stages.split(",") if s]
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        p.error(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
    if "setup" not in args.stages:
        args.stages.insert(0, "setup")  # every other stage runs in the venv that setup makes
    args.out, args.work, args.wheels = args.out.resolve(), args.work.resolve(), args.wheels.resolve()
    return args


def main() -> int:
    check = Check(parse_args())
    check.detect()
    check.say(f"{check.summary['mode']} mode, budget {check.args.budget:.0f} s, out {check.out}, work {check.work}")
    for name in STAGES:
        check.stage(name, getattr(check, name))
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
