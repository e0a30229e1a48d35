"""What the run report reads from a run directory, and nothing else (no training code, no torch):

    <run_dir>/config.json                   the TrainConfig of the run
    <run_dir>/metrics.jsonl                 one record per line: {"step", "kind": train|eval|audio_eval, ...}
    <run_dir>/predictions.jsonl             the shifted prediction report, one per `predict_every` steps
    <run_dir>/audio_eval[/train]/           held-out [training] listening prompts:
        prompts.json                        id -> {"text", "speaker", "ref_text"}
        stepNNNNNN/<id>.wav .png .npy       the generation at that step: audio, spectrogram, codes [K, T]
        reference/<id>.wav .png .npy        the target, decoded once
    <run_dir>/grpo_samples/                 objective=grpo: the first sample of the step of each log line
        stepNNNNNN.json                     {"text", "frames", "reward", "scores": {reward: value or null}}
        stepNNNNNN.wav                      its audio, when a reward decoded it (the newest few steps are kept)

A run still in progress may have a half-written last line in a JSONL file (skipped) and eval folders
whose files are not all there yet (shown as missing).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from higgs_ds.errors import CheckpointError

# (label, metric key, format) of the listening table: first vs last eval
LISTENING_ROWS = (("length ratio", "gen/length_ratio", "{:.2f}"), ("stop rate", "gen/stop_rate", "{:.2f}"),
                  ("frame accuracy", "gen/frame_acc", "{:.3f}"), ("speaker sim, own voice", "score/sim", "{:.3f}"),
                  ("speaker sim, other voices", "score/sim_other_voices", "{:.3f}"),
                  ("DNSMOS overall", "score/dnsmos_ovrl", "{:.2f}"), ("MCD (dB)", "score/mcd", "{:.2f}"),
                  ("MCD x length ratio", "score/mcd_sl", "{:.2f}"), ("CER", "score/cer", "{:.3f}"))

# (folder under audio_eval/, metric-key prefix, heading)
EVAL_SETS = (("", "", "held-out prompts"), ("train", "train/", "training prompts (memorised)"))

_STEP_DIR = re.compile(r"^step(\d+)$")
GRPO_SAMPLES = "grpo_samples"
REWARD_PREFIX = "reward/"  # metrics.jsonl: "reward/<name>" is the step's mean, with "_std" and "_left_out" beside
_STEP_FILE = re.compile(r"^step(\d+)\.json$")


def read_jsonl(path: Path, needs: tuple[str, ...] = ()) -> list[dict]:
    """Every record of a JSONL file, each a JSON object holding the keys `needs`; a half-written last line (a
    run writing it now) is skipped, a bad line elsewhere is an error naming the file and line."""
    if not path.is_file():
        return []
    lines = path.read_bytes().splitlines()
    records = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if number == len(lines):
                break
            why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"not a JSON record ({exc.msg})"
            raise CheckpointError(why, where=f"{path}:{number}", fix="remove or repair that line") from None
        missing = [key for key in needs if key not in record] if isinstance(record, dict) else None
        if missing is None or missing:
            what = f"a JSON {type(record).__name__}, not a record" if missing is None else f"a record without {missing}"
            raise CheckpointError(what, where=f"{path}:{number}", fix="remove or repair that line")
        records.append(record)
    return records


def read_json_object(path: Path) -> dict:
    """A JSON object file (config.json), or {} when there is none; anything else is an error naming it."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"not a JSON file ({type(exc).__name__})", where=str(path),
                              fix="repair it, or remove it (the report then shows no config)") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"a JSON {type(value).__name__}, not an object", where=str(path),
                              fix="repair it, or remove it (the report then shows no config)")
    return value


def compare_codes(generated: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Generated codes [K, T_g] against reference codes [K, T_r], frame by frame (as the listening eval)."""
    t_ref, t_gen = reference.shape[1], generated.shape[1]
    n = min(t_ref, t_gen)
    same = generated[:, :n] == reference[:, :n]
    return {"frame_acc": float(same.all(axis=0).sum()) / max(t_ref, 1),
            "cb0_acc": float(same[0].sum()) / max(t_ref, 1), "length_ratio": t_gen / max(t_ref, 1)}


@dataclass
class Prompt:
    id: str
    text: str = ""
    speaker: str | None = None


@dataclass
class EvalSet:
    """One listening-prompt set: its folder, eval steps (ascending) and prompts."""

    root: Path
    prefix: str
    heading: str
    steps: list[int]
    prompts: list[Prompt]

    def step_dir(self, step: int) -> Path:
        return self.root / f"step{step:06d}"

    def generated(self, step: int, prompt_id: str, suffix: str) -> Path:
        return self.step_dir(step) / f"{prompt_id}{suffix}"

    def reference(self, prompt_id: str, suffix: str) -> Path:
        return self.root / "reference" / f"{prompt_id}{suffix}"

    def prompt_metrics(self, step: int, prompt_id: str) -> dict[str, float]:
        """Frame / codebook-0 accuracy and length ratio of one prompt at one step, from the saved codes
        ({} when the codes are not both there)."""
        generated, reference = self.generated(step, prompt_id, ".npy"), self.reference(prompt_id, ".npy")
        try:
            return compare_codes(np.load(generated), np.load(reference))
        except (OSError, ValueError, IndexError):  # missing or half-written by a running eval
            return {}


@dataclass
class GrpoSample:
    step: int
    wav: Path  # may not exist: audio is decoded only when a reward needs it
    text: str = ""
    frames: int | None = None
    reward: float | None = None
    scores: dict[str, float | None] = field(default_factory=dict)  # reward -> value; None: left out


def _number(value) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_grpo_samples(run_dir: Path) -> list[GrpoSample]:
    """The GRPO samples a run kept, by step; a description being written now (not JSON yet) is skipped."""
    root = run_dir / GRPO_SAMPLES
    samples = []
    for path in sorted(root.glob("step*.json")) if root.is_dir() else []:
        if not (match := _STEP_FILE.match(path.name)):
            continue
        try:
            described = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(described, dict):
            scores = described.get("scores") if isinstance(described.get("scores"), dict) else {}
            samples.append(GrpoSample(int(match.group(1)), path.with_suffix(".wav"), str(described.get("text", "")),
                                      _number(described.get("frames")), _number(described.get("reward")),
                                      {str(k): _number(v) for k, v in scores.items()}))
    return sorted(samples, key=lambda s: s.step)


def reward_keys(records: list[dict]) -> list[str]:
    """The reward means a GRPO run logged ("reward/total" first), in the order of their first appearance."""
    keys = dict.fromkeys(k for r in records for k in r if k.startswith(REWARD_PREFIX)
                         and not k.endswith(("_std", "_left_out")))
    return sorted(keys, key=lambda k: k != REWARD_PREFIX + "total")


@dataclass
class RunFiles:
    run_dir: Path
    config: dict = field(default_factory=dict)
    train: list[dict] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)
    audio_eval: dict[int, dict] = field(default_factory=dict)  # step -> the records of that step, merged
    eval_sets: list[EvalSet] = field(default_factory=list)
    prediction: dict | None = None  # the latest prediction report
    grpo_samples: list[GrpoSample] = field(default_factory=list)

    @property
    def last_step(self) -> int:
        return max((r["step"] for r in self.train), default=0)


def _read_prompts(root: Path, ids: set[str]) -> list[Prompt]:
    described = {}
    if (root / "prompts.json").is_file():
        try:
            described = json.loads((root / "prompts.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            described = {}  # being written: the ids still come from the wav names
    prompts = [Prompt(pid, entry.get("text", ""), entry.get("speaker")) for pid, entry in described.items()]
    return prompts + [Prompt(pid) for pid in sorted(ids - set(described))]


def read_eval_sets(run_dir: Path) -> list[EvalSet]:
    sets = []
    for folder, prefix, heading in EVAL_SETS:
        root = run_dir / "audio_eval" / folder if folder else run_dir / "audio_eval"
        if not root.is_dir():
            continue
        steps = sorted(int(step.group(1)) for p in root.iterdir() if p.is_dir() and (step := _STEP_DIR.match(p.name)))
        ids = {p.stem for d in [root / "reference", *(root / f"step{s:06d}" for s in steps)] for p in d.glob("*.wav")}
        if steps or ids:
            sets.append(EvalSet(root, prefix, heading, steps, _read_prompts(root, ids)))
    return sets


def read_run(run_dir: str | Path) -> RunFiles:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError("no such run directory", where=str(run_dir), fix="pass runs/<run>")
    config = read_json_object(run_dir / "config.json")
    metrics = read_jsonl(run_dir / "metrics.jsonl", needs=("step",))
    audio_eval: dict[int, dict] = {}
    for record in (r for r in metrics if r.get("kind") == "audio_eval"):  # one record per prompt set and step
        audio_eval.setdefault(record["step"], {}).update(record)
    predictions = read_jsonl(run_dir / "predictions.jsonl")
    return RunFiles(run_dir, config, [r for r in metrics if r.get("kind") == "train"],
                    [r for r in metrics if r.get("kind") == "eval"], dict(sorted(audio_eval.items())),
                    read_eval_sets(run_dir), predictions[-1] if predictions else None, read_grpo_samples(run_dir))
