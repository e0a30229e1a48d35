"""The GPU check's dry mode (`scripts/gpu_check.sh --dry`) for the tests: its command line, and the one
rehearsal per session that tests/test_gpu_check.py reads. That rehearsal is a single process for about
two minutes (one core), so tests/conftest.py starts it in the background as soon as the session knows a
selected test needs it; the tests that run meanwhile use the other core."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
TIMEOUT_S = 900


def script_command(*args: str) -> list[str]:
    return ["bash", str(SCRIPT), *args]


def script_env() -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable}  # the interpreter running the tests


def small_demo(root: Path) -> Path:
    """A few shards of random codes that the shipped demo codec decodes, and a demo tokenizer: what
    `make gpu-wheels` carries (the real demo takes minutes to build)."""
    from higgs_ds.codec import CodecConfig, load_codec
    from higgs_ds.data.demo import demo_sentences, shipped_demo_codec
    from higgs_ds.data.demo_tokenizer import train_demo_tokenizer
    from tests.data.synthetic import write_synthetic_split

    spec = load_codec(CodecConfig(path=str(shipped_demo_codec()), kind="dac", device="cpu")).spec
    for split, shards in (("train", 2), ("eval", 1)):
        write_synthetic_split(root / split, num_shards=shards, per_shard=8, seed=shards)
        index_path = root / split / "shards.json"
        index = json.loads(index_path.read_text())
        index["audio_spec"] = spec.to_dict()
        index_path.write_text(json.dumps(index))
    train_demo_tokenizer(demo_sentences(), root / "tokenizer", vocab_size=800)
    return root


class DryRun:
    """`gpu_check.sh --dry` on a small demo in a folder of its own, running in the background."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="higgs-gpu-check-dry-"))
        data = small_demo(self.root / "demo")
        self.logs = self.root / "stdout.txt", self.root / "stderr.txt"
        with self.logs[0].open("w") as stdout, self.logs[1].open("w") as stderr:  # the child keeps its copies
            self.proc = subprocess.Popen(
                script_command("--dry", "--out", str(self.root / "out"), "--work", str(self.root / "work"),
                               "--data", str(data)),
                cwd=REPO, env=script_env(), stdout=stdout, stderr=stderr, start_new_session=True)

    def result(self) -> tuple[subprocess.CompletedProcess, Path, dict]:
        """Wait for the rehearsal; (its process, its folder, its summary.json). It must have passed."""
        try:
            self.proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        proc = subprocess.CompletedProcess(self.proc.args, self.proc.returncode,
                                           *(log.read_text(errors="replace") for log in self.logs))
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
        return proc, self.root, json.loads((self.root / "out" / "summary.json").read_text())

    def stop(self) -> None:
        """End the rehearsal (its whole process group) if it still runs, and remove its folder."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
