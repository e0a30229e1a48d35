"""Bad input to each command line (train, prepare_data, export, generate, evaluate, report) ends in exit
status 2 and exactly one `error:` line naming the file, key or sample, with no traceback, and leaves the
existing run, shards and data exactly as they were (every file hashed before and after). An `--out` over a
command's input or over another command's output is bad input too (the output guard's section).

Most cases call the command line's `main` in this process through the same `run_cli` wrapper its
`__main__` uses; the `integration` ones run `launch/train.py` on 2 ranks (rank 1 must stay silent) or
need a finished run (the session's reference run, left unchanged)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

import launch.evaluate as evaluate_cli
import launch.export as export_cli
import launch.generate as generate_cli
import launch.prepare_data as prepare_cli
import launch.report as report_cli
import launch.train as train_cli
from higgs_ds.audio_spec import write_spec
from higgs_ds.data.demo import demo_sentences, shipped_demo_codec
from higgs_ds.data.demo_tokenizer import train_demo_tokenizer
from higgs_ds.errors import run_cli
from higgs_ds.output_guard import MARKER, made_by
from higgs_ds.train.checkpointing import choose_resume_tag
from tests.data.synthetic import SPEC, K, write_synthetic_split
from tests.harness import Launcher, env, output, ranks_cmd

TATWEEL, ZERO_WIDTH = "\u0640\u0640\u0640", "\u200b\u200c\u200d"
DIACRITICS, EMOJI, PUNCTUATION = "\u064e\u064f\u0650\u0651", "\U0001f600\U0001f389", "؟!... «»"
ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)) + "steps: [*g]\n"


# ---- fixtures: built once per module ------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Random-code train/eval splits, a tokenizer, a manifest of precomputed codes and the shard set
    prepare_data built from it."""
    root = tmp_path_factory.mktemp("data")
    write_synthetic_split(root / "train", num_shards=2, per_shard=8, seed=0)
    write_synthetic_split(root / "eval", num_shards=1, per_shard=4, seed=1)
    train_demo_tokenizer(demo_sentences(), root / "tokenizer", vocab_size=800)
    codes = root / "codes"
    codes.mkdir()
    rows = []
    for i in range(3):
        np.save(codes / f"u{i}.npy", np.random.default_rng(i).integers(0, 1024, (K, 20)))
        rows.append({"id": f"u{i}", "text": "مرحبا بكم", "codes": f"codes/u{i}.npy"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_spec(root, SPEC)
    assert prepare_cli.main(["build", "--manifest", str(root / "manifest.jsonl"), "--out", str(root / "built"),
                             "--audio-spec", str(root / "audio_spec.json")]) == 0
    sound = root / "sound"
    sound.mkdir()
    soundfile.write(sound / "ref.wav", np.zeros(1600, dtype=np.float32), 16000)
    (root / "eval.jsonl").write_text(json.dumps({"id": "e0", "text": "مرحبا", "audio": "sound/ref.wav"}) + "\n")
    return {"root": root, "train": root / "train", "eval": root / "eval", "tokenizer": root / "tokenizer",
            "manifest": root / "manifest.jsonl", "spec": root / "audio_spec.json", "built": root / "built",
            "eval_manifest": root / "eval.jsonl", "sound": sound}


@pytest.fixture(scope="module")
def run(reference_run) -> Path:
    """The session's finished 2-rank run (tests/conftest.py), read only: two complete tags."""
    assert sorted(p.name for p in (reference_run / "checkpoints").glob("step*")) == ["step000008", "step000010"]
    return reference_run


def tree_hash(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture
def unchanged(data):
    """The module's data (manifest, shards, tokenizer) hashes the same after the case as before it."""
    before = tree_hash(data["root"])
    yield
    assert tree_hash(data["root"]) == before, "a bad input changed or added files in the existing data"


@pytest.fixture
def run_unchanged(run, unchanged):
    before = tree_hash(run)
    yield run
    assert tree_hash(run) == before, "a bad input changed the run"


ERROR_LINE = re.compile(r"^(rank \d+: )?error:")


def one_error(code: int, err: str, *named: str) -> str:
    """Exit 2, exactly one error line (`rank N: error:` lines count too) naming every string of `named`, of a
    readable length (values are quoted by a short prefix), no traceback."""
    lines = [line for line in err.splitlines() if ERROR_LINE.match(line)]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err[-3000:])
    assert all(n in lines[0] for n in named) and len(lines[0]) <= 2100, (named, lines[0][:3000])
    return lines[0]


def call(main, argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = run_cli(main, [str(a) for a in argv])
    return code, capsys.readouterr().err


# ---- train: refused before any rendezvous ------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    started = []
    monkeypatch.setattr(train_cli, "run_training", lambda cfg, ds: started.append(cfg))
    yield started
    assert not started, "training started despite the bad input"


def _train_args(data: dict, run_dir: Path, *extra: str, ds: str = "ds_configs/zero3.json",
                recipe: str = "recipes/demo.yaml") -> list[str]:
    return ["--deepspeed", ds, "--config", recipe, f"run_dir={run_dir}", f"data.shards={data['train']}",
            f"data.eval_shards={data['eval']}", f"data.tokenizer={data['tokenizer']}", "wandb_project=null", *extra]


def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


TRAIN_CASES = {
    # id: (how to make the arguments from (data, tmp), strings the error line must name)
    "recipe_missing": (lambda d, t: dict(recipe=str(t / "nope.yaml")), ["nope.yaml"]),
    "recipe_not_yaml": (lambda d, t: dict(recipe=str(_write(t / "r.yaml", "steps: [1, 2\nlr: {"))), ["not YAML"]),
    "recipe_not_a_mapping": (lambda d, t: dict(recipe=str(_write(t / "r.yaml", "just a sentence"))),
                             ["r.yaml", "not a mapping"]),
    "recipe_binary": (lambda d, t: dict(recipe=str(_write(t / "r.yaml", b"\xff\xfe\x00garbage"))), ["r.yaml"]),
    "recipe_is_a_folder": (lambda d, t: dict(recipe=str(t)), ["recipe"]),
    "deepspeed_missing": (lambda d, t: dict(ds=str(t / "ds.json")), ["--deepspeed", "ds.json"]),
    "deepspeed_not_json": (lambda d, t: dict(ds=str(_write(t / "ds.json", "{zero: 3"))), ["ds.json", "not JSON"]),
    "deepspeed_not_an_object": (lambda d, t: dict(ds=str(_write(t / "ds.json", "[3]"))), ["ds.json"]),
    "deepspeed_conflict": (lambda d, t: dict(ds=str(_write(t / "ds.json", '{"gradient_accumulation_steps": 7}'))),
                           ["gradient_accumulation_steps"]),
    "tokenizer_missing": (lambda d, t: dict(extra=[f"data.tokenizer={t / 'tok'}"]), ["data.tokenizer"]),
    "tokenizer_empty_folder": (lambda d, t: dict(extra=[f"data.tokenizer={t}"]), ["data.tokenizer", "tokenizer"]),
    "shards_without_index": (lambda d, t: dict(extra=[f"data.shards={t}"]), ["data.shards", "shards.json"]),
    "eval_shards_missing": (lambda d, t: dict(extra=[f"data.eval_shards={t / 'eval'}"]), ["data.eval_shards"]),
    "run_dir_under_a_file": (lambda d, t: dict(extra=[f"run_dir={_write(t / 'f', 'x')}/run"]), ["run_dir"]),
    "ops_backend_unknown": (lambda d, t: dict(extra=["ops_backend=cuda-magic"]), ["ops_backend"]),
    "precision_unknown": (lambda d, t: dict(extra=["precision=fp16"]), ["precision"]),
    "codebook_weights_wrong_length": (lambda d, t: dict(extra=["loss.codebook_weights=[1.0, 2.0]"]),
                                      ["codebook_weights"]),
    "override_without_value": (lambda d, t: dict(extra=["steps"]), ["steps"]),
    # H17: YAML would keep the second value without a word
    "recipe_key_twice": (lambda d, t: dict(recipe=str(_write(t / "r.yaml", "steps: 3\nsteps: 5\n"))),
                         ["r.yaml", "'steps' is given twice (lines 1 and 2)"]),
    # 322 bytes of nested aliases that stand for 9^7 (4.8 million) values: refused before anything expands them
    "recipe_alias_bomb": (lambda d, t: dict(recipe=str(_write(t / "r.yaml", ALIAS_BOMB))),
                          ["r.yaml", "anchors and aliases", "100,000"]),
    "override_huge_value": (lambda d, t: dict(extra=["precision=" + "x" * 100_000]), ["precision='xxx"]),
    "lora_without_init": (lambda d, t: dict(extra=["lora.enabled=true"]), ["lora.enabled without model.init"]),  # H18
}


def _train_case(case: str, data: dict, tmp: Path) -> tuple[list[str], list[str]]:
    make, named = TRAIN_CASES[case]
    spec = make(data, tmp)
    return _train_args(data, tmp / "new_run", *spec.get("extra", ()), ds=spec.get("ds", "ds_configs/zero3.json"),
                       recipe=spec.get("recipe", "recipes/demo.yaml")), named


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_refuses_bad_input(case, data, tmp_path, capsys, no_training, unchanged):
    argv, named = _train_case(case, data, tmp_path)
    one_error(*call(train_cli.main, argv, capsys), *named)
    assert not (tmp_path / "new_run").exists()


RUN_CASES = {
    "resume_unknown_tag": (["resume=step999999"], ["no such tag", "step999999", "step000008, step000010"]),
    "fresh_run_over_checkpoints": ([], ["already holds checkpoints", "resume=auto"]),
    "resume_with_another_world_size": (["resume=auto"], ["written by 2 ranks", "this run has 1"]),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_train_refuses_bad_resume(case, data, run_unchanged, capsys, no_training):
    extra, named = RUN_CASES[case]
    one_error(*call(train_cli.main, _train_args(data, run_unchanged, *extra), capsys), *named)


def _launch(args: list[str], launcher: Launcher = "ranks"):
    import subprocess

    return subprocess.run(ranks_cmd("launch/train.py", args, ranks=2, launcher=launcher),
                          cwd=Path(__file__).parents[2], env=env(), capture_output=True, text=True, timeout=600)


@pytest.mark.integration
@pytest.mark.parametrize("case, launcher", [("deepspeed_missing", "deepspeed"), ("tokenizer_missing", "ranks"),
                                            ("recipe_not_a_mapping", "ranks")])
def test_train_through_the_launcher_says_it_once(case, launcher, data, tmp_path, unchanged):
    """2 ranks (one case under `deepspeed` itself): rank 0 prints the line, rank 1 nothing, no rendezvous."""
    argv, named = _train_case(case, data, tmp_path)
    proc = _launch(argv, launcher=launcher)
    text = proc.stdout + proc.stderr
    one_error(proc.returncode, text, *named)
    assert "Connection closed" not in text and "another rank exited" not in text, output(proc)
    assert not (tmp_path / "new_run").exists()


@pytest.mark.integration
def test_train_through_the_launcher_unknown_tag_lists_the_tags(data, run_unchanged):
    proc = _launch(_train_args(data, run_unchanged, "resume=step999999"))
    one_error(proc.returncode, proc.stdout + proc.stderr, "no such tag", "step000010")


# ---- prepare_data ------------------------------------------------------------------------------


def _manifest(folder: Path, rows: list[dict]) -> Path:
    return _write(folder / "manifest.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _long_wav(folder: Path, seconds: int = 120) -> str:
    soundfile.write(folder / "long.wav", np.zeros(seconds * 1000, dtype=np.int16), 1000)
    return str(folder / "long.wav")


PREPARE_CASES = {
    "manifest_is_a_folder": (lambda d, t: ["--manifest", t], ["is a directory", "--manifest"]),
    "manifest_missing": (lambda d, t: ["--manifest", t / "m.jsonl"], ["m.jsonl", "not found"]),
    "workers_zero": (lambda d, t: ["--workers", "0"], ["--workers"]),
    "shard_size_negative": (lambda d, t: ["--shard-size-mb", "-1"], ["--shard-size-mb"]),
    "max_seconds_zero": (lambda d, t: ["--max-seconds", "0"], ["--max-seconds"]),
    "max_seconds_not_a_number": (lambda d, t: ["--max-seconds", "x"], ["--max-seconds"]),
    "no_codec_no_spec": (lambda d, t: ["--no-spec"], ["--audio-spec"]),
    "spec_missing": (lambda d, t: ["--audio-spec", t / "spec.json"], ["--audio-spec", "spec.json"]),
    "spec_not_json": (lambda d, t: ["--audio-spec", _write(t / "spec.json", "{")], ["--audio-spec"]),
    "line_not_json": (lambda d, t: ["--manifest", _write(t / "manifest.jsonl", "{nope\n")],
                      ["manifest.jsonl:1", "--skip-bad"]),
    "tatweel_only_text": (lambda d, t: ["--manifest", _manifest(t, [{"id": "x", "text": TATWEEL,
                                                                        "codes": str(d["root"] / "codes/u0.npy")}])],
                          ["sample 'x'", "empty 'text'"]),
    "audio_over_max_seconds": (lambda d, t: ["--manifest", _manifest(t, [{"id": "long", "text": "نص",
                                                                             "audio": _long_wav(t)}])],
                               ["sample 'long'", "--max-seconds", "segment"]),
    "out_is_a_file": (lambda d, t: ["--out", _write(t / "out", "x")], ["--out"]),
    "out_holds_other_shards": (lambda d, t: ["--out", d["built"], "--manifest",
                                             _manifest(t, [{"id": "y", "text": "نص",
                                                            "codes": str(d["root"] / "codes/u1.npy")}])],
                               ["different manifest", "--out"]),
    "codec_path_missing": (lambda d, t: ["--no-spec", "--codec-path", t / "codec.pth"], ["codec.pth"]),
    "codec_batch_size_zero": (lambda d, t: ["--no-spec", "--codec-path", _write(t / "codec.pth", "x"),
                                            "--codec-batch-size", "0"], ["--codec-batch-size", "out of range"]),
    # a device the machine lacks is named as such, before the weights are read
    "codec_device_missing": (lambda d, t: ["--no-spec", "--codec-path", _write(t / "codec.pth", "x"),
                                           "--codec-device", "cuda:99"], ["--codec-device", "cuda:99"]),
    "codec_device_banana": (lambda d, t: ["--no-spec", "--codec-path", _write(t / "codec.pth", "x"),
                                          "--codec-device", "banana"], ["--codec-device", "not a device name"]),
    # H10, H11: the text gate of the importer, applied by build too
    "diacritics_only_text": (lambda d, t: ["--manifest", _manifest(t, [_codes_row(d, DIACRITICS)])],
                             ["sample 'x'", "no letter or digit"]),
    "emoji_only_text": (lambda d, t: ["--manifest", _manifest(t, [_codes_row(d, EMOJI)])],
                        ["sample 'x'", "no letter or digit"]),
    "manifest_empty": (lambda d, t: ["--manifest", _write(t / "manifest.jsonl", "")],
                       ["gives no sample", "holds no row", "--allow-empty"]),
    "every_row_rejected": (lambda d, t: ["--skip-bad", "--manifest", _manifest(t, [_codes_row(d, PUNCTUATION)])],
                           ["gives no sample", "every row was rejected (no_words: 1)", "--allow-empty"]),
}


def _codes_row(data: dict, text: str) -> dict:
    return {"id": "x", "text": text, "codes": str(data["root"] / "codes/u0.npy")}


@pytest.mark.parametrize("case", sorted(PREPARE_CASES))
def test_prepare_data_refuses_bad_input(case, data, tmp_path, capsys, unchanged):
    make, named = PREPARE_CASES[case]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    extra = [str(a) for a in make(data, scratch)]
    argv = {"--manifest": str(data["manifest"]), "--out": str(tmp_path / "shards"), "--audio-spec": str(data["spec"])}
    if "--no-spec" in extra:
        extra.remove("--no-spec")
        del argv["--audio-spec"]
    for flag in [f for f in extra if f in argv]:
        i = extra.index(flag)
        argv[flag] = extra.pop(i + 1)
        extra.pop(i)
    args = ["build", *[x for kv in argv.items() for x in kv], *extra]
    one_error(*call(prepare_cli.main, args, capsys), *named)
    assert not (tmp_path / "shards").exists()


def test_prepare_demo_refuses_zero_workers_before_synthesising(tmp_path, capsys):
    one_error(*call(prepare_cli.main, ["demo", "--out", tmp_path / "demo", "--workers", "0"], capsys), "--workers")
    assert not (tmp_path / "demo").exists()


def test_prepare_filter_reports_an_unreadable_recording_in_one_line(tmp_path, capsys):
    """Every subcommand goes through the same error mapping, the quality filter's included."""
    _write(tmp_path / "broken.wav", "not audio")
    manifest = _manifest(tmp_path, [{"id": "b", "text": "نص", "audio": "broken.wav"}])
    args = ["filter", "--manifest", manifest, "--out", tmp_path / "out", "--no-dnsmos"]
    one_error(*call(prepare_cli.main, args, capsys), "broken.wav")


def test_build_of_an_empty_manifest_with_allow_empty_writes_an_empty_set(tmp_path, capsys):
    manifest = _write(tmp_path / "manifest.jsonl", "")
    spec = write_spec(tmp_path, SPEC)
    code, err = call(prepare_cli.main, ["build", "--manifest", manifest, "--out", tmp_path / "shards",
                                        "--audio-spec", spec, "--allow-empty"], capsys)
    assert code == 0 and "error" not in err
    assert json.loads((tmp_path / "shards" / "shards.json").read_text())["num_samples"] == 0


# H16 and the other flags of segment and filter: refused as they are read, before any audio or model loads
PREP_FLAG_CASES = {
    "segment_vad_threshold_5": (["segment", "--vad-threshold", "5"], ["--vad-threshold", "out of range"]),
    "segment_pad_negative": (["segment", "--pad", "-0.1"], ["--pad", "out of range"]),
    "segment_merge_gap_nan": (["segment", "--merge-gap", "nan"], ["--merge-gap", "not a finite number"]),
    "segment_merge_gap_negative": (["segment", "--merge-gap", "-1"], ["--merge-gap", "out of range"]),
    "segment_device_banana": (["segment", "--device", "banana"], ["--device", "not a device name"]),
    "filter_clipping_over_one": (["filter", "--max-clipping", "2"], ["--max-clipping", "out of range"]),
    "filter_min_lufs_inf": (["filter", "--min-lufs=-inf"], ["--min-lufs", "not a finite number"]),
    "filter_device_missing": (["filter", "--device", "cuda:99"], ["--device", "cuda:99"]),
}


@pytest.mark.parametrize("case", sorted(PREP_FLAG_CASES))
def test_segment_and_filter_refuse_bad_flags(case, data, tmp_path, capsys, unchanged):
    (command, *flags), named = PREP_FLAG_CASES[case]
    inputs = ["--input", str(data["sound"])] if command == "segment" else ["--manifest", str(data["eval_manifest"])]
    one_error(*call(prepare_cli.main, [command, *inputs, "--out", tmp_path / "out", *flags], capsys), *named)
    assert not (tmp_path / "out").exists()


def _broken_gzip(src: Path) -> None:
    _write(src / "corpus_cuts_train.jsonl.gz", "not gzip at all")


def _broken_json(src: Path) -> None:
    import gzip

    _write(src / "corpus_cuts_train.jsonl.gz", gzip.compress(b'{"id": "c1", "start": \n'))


def _broken_parquet(src: Path) -> None:
    _write(src / "train.parquet", "not parquet")


# library errors (gzip, JSON, parquet) that name no file: one line naming it
IMPORT_CASES = {
    "lhotse_not_gzip": ("lhotse", _broken_gzip, ["corpus_cuts_train.jsonl.gz", "BadGzipFile", "--src"]),
    "lhotse_bad_json": ("lhotse", _broken_json, ["corpus_cuts_train.jsonl.gz", "JSONDecodeError"]),
    "hf_not_parquet": ("hf", _broken_parquet, ["train.parquet", "Parquet magic bytes"]),
}


@pytest.mark.parametrize("case", sorted(IMPORT_CASES))
def test_import_names_the_file_a_library_could_not_read(case, tmp_path, capsys):
    fmt, make, named = IMPORT_CASES[case]
    src = tmp_path / "corpus"
    src.mkdir()
    make(src)
    before = tree_hash(src)
    one_error(*call(prepare_cli.main, ["import", "--from", fmt, "--src", src, "--out", tmp_path / "out"], capsys),
              *named)
    assert tree_hash(src) == before


def test_normalize_text_leaves_an_expression_it_cannot_read_as_written(monkeypatch, capsys):
    """H15: `10^30` was read as "ten^thirty"; now the whole expression is kept and counted."""
    monkeypatch.setattr("sys.stdin", io.StringIO("قيمة 10^30 و 3×10 في 2024\n"))
    assert prepare_cli.main(["normalize-text"]) == 0
    out, err = capsys.readouterr()
    assert out == "قيمة 10^30 و 3×10 في ألفان وأربعة وعشرون\n"
    assert json.loads(err)["left"] == {"expression": 2}


# ---- generate ----------------------------------------------------------------------------------


GENERATE_CASES = {
    "tatweel_only_text": (["--text", TATWEEL], ["--text", "empty once normalised"]),
    "zero_width_only_text": (["--text", ZERO_WIDTH], ["--text", "empty once normalised"]),
    "no_text": ([], ["--text"]),
    "max_new_frames_zero": (["--text", "مرحبا", "--max-new-frames", "0"], ["--max-new-frames"]),
    "top_p_out_of_range": (["--text", "مرحبا", "--top-p", "2"], ["--top-p"]),
    "ref_audio_without_text": (["--text", "مرحبا", "--ref-audio", "{sound}/ref.wav"], ["--ref-text"]),
    "ref_audio_not_audio": (["--text", "مرحبا", "--ref-text", "نص", "--ref-audio", "{data}/manifest.jsonl"],
                            ["--ref-audio", "manifest.jsonl"]),
    "ref_codes_not_npy": (["--text", "مرحبا", "--ref-text", "نص", "--ref-codes", "{data}/manifest.jsonl"],
                          ["--ref-codes"]),
    "text_file_missing": (["--text-file", "{tmp}/texts.txt"], ["--text-file", "texts.txt"]),
    "tokenizer_missing": (["--text", "مرحبا", "--tokenizer", "{tmp}/tok"], ["--tokenizer"]),
    "checkpoint_missing": (["--text", "مرحبا", "CKPT={tmp}/nothing"], ["nothing", "not a folder"]),
    "out_is_a_folder": (["--text", "مرحبا", "--out", "{tmp}"], ["--out"]),
    # H12-H14: the text gate
    "punctuation_only_text": (["--text", PUNCTUATION], ["--text", "no letter or digit"]),
    "emoji_only_text": (["--text", EMOJI], ["--text", "no letter or digit"]),
    "diacritics_only_text": (["--text", DIACRITICS], ["--text", "no letter or digit"]),
    "ref_text_punctuation_only": (["--text", "مرحبا", "--ref-text", PUNCTUATION, "--ref-codes", "{tmp}/ref.npy"],
                                  ["--ref-text", "no letter or digit"]),
    # flags checked as they are read
    "temperature_nan": (["--text", "مرحبا", "--temperature", "nan"], ["--temperature", "not a finite number"]),
    "top_k_negative": (["--text", "مرحبا", "--top-k", "-1"], ["--top-k", "out of range"]),
    "ras_window_not_a_number": (["--text", "مرحبا", "--ras-window", "many"], ["--ras-window", "not an integer"]),
    "device_banana": (["--text", "مرحبا", "--device", "banana"], ["--device", "not a device name"]),
    "device_missing": (["--text", "مرحبا", "--device", "cuda:99"], ["--device", "cuda:99"]),
    "score_device_banana": (["--text", "مرحبا", "--score-device", "banana"], ["--score-device"]),
    # against the checkpoint's audio spec (the data folder's audio_spec.json: 8 codebooks of 1024)
    "ref_codes_out_of_range": (["--text", "مرحبا", "--ref-text", "نص", "--ref-codes", "{tmp}/big.npy"],
                               ["--ref-codes", "outside [0, 1023]", "max 5000"]),
    "ref_codes_wrong_codebooks": (["--text", "مرحبا", "--ref-text", "نص", "--ref-codes", "{tmp}/k3.npy"],
                                  ["--ref-codes", "3 codebooks, expected 8"]),
    "tag_on_an_export": (["--text", "مرحبا", "--tag", "step000002"], ["--tag", "not a training run"]),  # H19
    # the output guard: never over an input, the model's files or a file of another kind
    "out_is_the_reference": (["--text", "مرحبا", "--ref-text", "نص", "--ref-audio", "{sound}/ref.wav", "--out",
                              "{sound}/ref.wav"], ["--out", "is the input"]),
    "out_inside_the_model": (["--text", "مرحبا", "--out", "{data}/speech.wav"], ["--out", "lies inside the input"]),
    "out_over_another_file": (["--text", "مرحبا", "--out", "{tmp}/notes.txt"],
                              ["--out", "notes.txt exists and was not written by generate"]),
}


def _ref_codes_files(tmp: Path) -> None:
    np.save(tmp / "ref.npy", np.zeros((K, 5), np.int64))
    np.save(tmp / "big.npy", np.full((K, 5), 5000, np.int64))
    np.save(tmp / "k3.npy", np.zeros((3, 5), np.int64))
    (tmp / "notes.txt").write_text("a user's file\n", encoding="utf-8")


def _fill(args: list[str], data: dict, tmp: Path) -> list[str]:
    return [a.format(sound=data["sound"], data=data["root"], tmp=tmp) for a in args]


@pytest.mark.parametrize("case", sorted(GENERATE_CASES))
def test_generate_refuses_bad_input(case, data, tmp_path, capsys, unchanged):
    """Every one of these is refused before any checkpoint is read (the checkpoint here is the data folder)."""
    args, named = GENERATE_CASES[case]
    _ref_codes_files(tmp_path)
    args = _fill(args, data, tmp_path)
    ckpt = next((a[5:] for a in args if a.startswith("CKPT=")), str(data["root"]))
    args = [a for a in args if not a.startswith("CKPT=")]
    out = ["--out", str(tmp_path / "speech.wav")] if "--out" not in args else []
    one_error(*call(generate_cli.main, [ckpt, *args, *out], capsys), *named)
    assert not (tmp_path / "speech.wav").exists()


@pytest.mark.integration
def test_generate_unknown_tag_lists_the_tags(run_unchanged, tmp_path, capsys):
    one_error(*call(generate_cli.main, [run_unchanged, "--text", "مرحبا", "--tag", "step999999", "--out",
                                        tmp_path / "x.wav"], capsys), "no such tag 'step999999'", "step000010")


@pytest.mark.integration
def test_generate_with_a_binary_latest_file_asks_for_a_tag(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run / "checkpoints", copy / "checkpoints")
    (copy / "checkpoints" / "latest").write_bytes(b"\x00\xff\xfe\x9c binary")
    before = tree_hash(copy)
    one_error(*call(generate_cli.main, [copy, "--text", "مرحبا", "--out", tmp_path / "x.wav"], capsys),
              "latest", "--tag", "step000010")
    assert tree_hash(copy) == before


# ---- export ------------------------------------------------------------------------------------


EXPORT_CASES = {
    "out_is_a_checkpoint_tag": (lambda r, t: [r / "checkpoints", "--out", r / "checkpoints/step000010"],
                                ["--out", "checkpoints"]),
    "out_inside_a_tag": (lambda r, t: [r / "checkpoints", "--out", r / "checkpoints/step000008/export"],
                         ["--out", "checkpoints"]),
    "out_inside_checkpoints": (lambda r, t: [r / "checkpoints", "--out", r / "checkpoints/exported"],
                               ["--out", "checkpoints"]),
    "out_is_the_run_itself": (lambda r, t: [r / "checkpoints", "--out", r, "--overwrite"],  # H1: deleted the run
                              ["--out", "contains the input", "checkpoints"]),
    "out_not_empty": (lambda r, t: [r / "checkpoints", "--out", _write(t / "out.txt", "x").parent],
                      ["--out", "not empty", "not written by export"]),
    "out_is_a_file": (lambda r, t: [r / "checkpoints", "--out", _write(t / "out.txt", "x")], ["--out", "a file"]),
    "unknown_tag": (lambda r, t: [r / "checkpoints", "--out", t / "e", "--tag", "step999999"],
                    ["no such tag", "step000008, step000010"]),
    "checkpoints_missing": (lambda r, t: [t / "nothing", "--out", t / "e"], ["nothing"]),
    "not_a_run": (lambda r, t: [_folder(t / "plain"), "--out", t / "e"], ["no training checkpoint"]),
    "adapter_only_of_a_full_run": (lambda r, t: [r / "checkpoints", "--out", t / "e", "--adapter-only"],
                                   ["--adapter-only", "not a LoRA run"]),
    "layout_unknown": (lambda r, t: [r / "checkpoints", "--out", t / "e", "--layout", "onnx"], ["--layout"]),
}


@pytest.mark.parametrize("flags, named", [
    (["--max-shard-size", "lots"], ["--max-shard-size", "not a size"]),
    (["--max-shard-size", "0GB"], ["--max-shard-size", "not a size"]),
])
def test_export_refuses_bad_flags_before_reading_the_run(flags, named, tmp_path, capsys):
    one_error(*call(export_cli.main, [tmp_path / "no_run", "--out", tmp_path / "e", *flags], capsys), *named)
    assert not (tmp_path / "e").exists()


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_export_refuses_bad_input(case, run_unchanged, tmp_path, capsys):
    make, named = EXPORT_CASES[case]
    one_error(*call(export_cli.main, make(run_unchanged, tmp_path), capsys), *named)
    assert not (tmp_path / "e").exists() and not list(tmp_path.glob(".*partial*"))


@pytest.mark.integration
def test_export_overwrite_replaces_only_an_export_and_atomically(run_unchanged, tmp_path, capsys, monkeypatch):
    """--overwrite replaces an earlier export whole, by a sibling folder renamed into place: a failed one
    leaves the old export as it was, a finished one leaves nothing of it (and no temporary folder)."""
    out, ckpts = tmp_path / "e", str(run_unchanged / "checkpoints")
    assert run_cli(export_cli.main, [ckpts, "--out", str(out), "--tag", "step000008"]) == 0
    assert made_by(out) == "export"
    (out / "stale.txt").write_text("from an older export")
    before = tree_hash(out)
    one_error(*call(export_cli.main, [ckpts, "--out", out], capsys), "not empty", "--overwrite")

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("higgs_ds.export.write_run_extras", disk_full)
        with pytest.raises(OSError):
            export_cli.main([ckpts, "--out", str(out), "--overwrite"])
    assert tree_hash(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["e"]
    assert run_cli(export_cli.main, [ckpts, "--out", str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / "config.json").is_file() and (out / "audio_spec.json").is_file()
    assert made_by(out) == "export" and sorted(p.name for p in tmp_path.iterdir()) == ["e"]


# ---- evaluate ----------------------------------------------------------------------------------


EVALUATE_CASES = {
    "generated_missing": (lambda d, t: [t / "nothing", "--manifest", d["eval_manifest"]], ["nothing"]),
    "manifest_is_a_folder": (lambda d, t: [t, "--manifest", t], ["--manifest", "a directory"]),
    "manifest_line_not_json": (lambda d, t: [t, "--manifest", _write(t / "m.jsonl", "{x\n")], ["m.jsonl:1"]),
    "manifest_row_without_audio": (lambda d, t: [t, "--manifest", _write(t / "m.jsonl", '{"id": "a", "text": "b"}')],
                                   ["m.jsonl:1", "audio"]),
    "reference_missing": (lambda d, t: [t, "--manifest", _write(t / "m.jsonl", '{"id": "a", "text": "b", '
                                                                               '"audio": "gone.wav"}')],
                          ["m.jsonl:1", "gone.wav"]),
    "row_with_codes_only": (lambda d, t: [_write(t / "c.npy", b"").parent, "--manifest",
                                          _write(t / "m.jsonl", '{"id": "a", "text": "b", "codes": "c.npy"}')],
                            ["m.jsonl:1", "reference recording"]),
    "whisper_not_a_model": (lambda d, t: [t, "--manifest", d["eval_manifest"], "--whisper", t], ["--whisper"]),
    "out_is_a_folder": (lambda d, t: [t, "--manifest", d["eval_manifest"], "--out", t], ["--out"]),
    "nothing_generated": (lambda d, t: [t, "--manifest", d["eval_manifest"], "--no-dnsmos", "--no-resemblyzer",
                                        "--no-mcd"], ["none of the 1 manifest ids"]),
}


@pytest.mark.parametrize("case", sorted(EVALUATE_CASES))
def test_evaluate_refuses_bad_input(case, data, tmp_path, capsys, unchanged):
    make, named = EVALUATE_CASES[case]
    one_error(*call(evaluate_cli.main, make(data, tmp_path), capsys), *named)
    assert not (tmp_path / "scores.json").exists()


# ---- the output guard: no --out over an input or over another command's output -----------------


@pytest.fixture(scope="module")
def made(data, tmp_path_factory) -> dict[str, Path]:
    """What other commands leave: an import of a one-row LJSpeech corpus, two parts of a split build, a run
    with a checkpoint tag (the files the guard looks at; it refuses before any is read), and recordings
    holding a segment output written before outputs had markers."""
    root = tmp_path_factory.mktemp("made")
    corpus = root / "corpus"
    (corpus / "wavs").mkdir(parents=True)
    soundfile.write(corpus / "wavs" / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    _write(corpus / "metadata.csv", "a|مرحبا بكم\n")
    assert prepare_cli.main(["import", "--from", "ljspeech", "--src", str(corpus), "--out", str(root / "import")]) == 0
    for i in range(2):
        assert prepare_cli.main(["build", "--manifest", str(data["manifest"]), "--out", str(root / "parts" / str(i)),
                                 "--audio-spec", str(data["spec"]), "--part", f"{i}/2"]) == 0
    tag = root / "run" / "checkpoints" / "step000002"
    tag.mkdir(parents=True)
    _write(tag / "complete.json", '{"files": {}}')
    _write(tag.parent / "latest", "step000002")
    _write(root / "run" / "config.json", "{}")
    recordings = root / "recordings"
    (recordings / "seg" / "wavs" / "talk").mkdir(parents=True)
    soundfile.write(recordings / "talk.wav", np.zeros(16000, dtype=np.float32), 16000)
    soundfile.write(recordings / "seg" / "wavs" / "talk" / "talk_0000.wav", np.zeros(8000, dtype=np.float32), 16000)
    _write(recordings / "seg" / "segments.jsonl", "")
    return {"root": root, "corpus": corpus, "import": root / "import", "parts": root / "parts",
            "run": root / "run", "recordings": recordings}


GUARD_CASES = {
    # id: (command line, its arguments from (data, made, tmp), strings the error line must name); the first
    # five lost data before the guard existed
    "export_over_the_run_it_reads": (export_cli.main, lambda d, m, t: [  # deleted the whole run
        m["run"] / "checkpoints", "--out", m["run"], "--overwrite"], ["--out", "contains the input"]),
    "merge_onto_a_build": (prepare_cli.main, lambda d, m, t: [  # replaced the build's shards.json
        "merge", "--out", d["built"], m["parts"] / "0", m["parts"] / "1"], ["written by prepare_data build"]),
    "build_into_the_import_it_reads": (prepare_cli.main, lambda d, m, t: [  # overwrote the import's rejects.jsonl
        "build", "--manifest", m["import"] / "train.jsonl", "--out", m["import"], "--codec-path",
        shipped_demo_codec()], ["--out", "contains the input"]),
    "filter_into_its_manifests_folder": (prepare_cli.main, lambda d, m, t: [  # overwrote its input manifest
        "filter", "--manifest", d["eval_manifest"], "--out", d["root"], "--no-dnsmos"], ["contains the input"]),
    "segment_into_its_input": (prepare_cli.main, lambda d, m, t: [  # segmented its own cut wavs again
        "segment", "--input", m["recordings"], "--out", m["recordings"] / "seg"], ["--out", "lies inside the input"]),
    "export_overwrite_of_a_build": (export_cli.main, lambda d, m, t: [
        m["run"], "--out", d["built"], "--overwrite"], ["--out", "written by prepare_data build, not export"]),
    "export_overwrite_of_other_files": (export_cli.main, lambda d, m, t: [
        m["run"], "--out", d["sound"], "--overwrite"], ["--out", "not written by export"]),
    "merge_around_its_parts": (prepare_cli.main, lambda d, m, t: [
        "merge", "--out", m["parts"], m["parts"] / "0", m["parts"] / "1"], ["--out", "contains the input"]),
    "build_into_another_commands_folder": (prepare_cli.main, lambda d, m, t: [
        "build", "--manifest", d["manifest"], "--out", m["import"], "--audio-spec", d["spec"]],
        ["written by prepare_data import, not prepare_data build"]),
    "import_into_its_corpus": (prepare_cli.main, lambda d, m, t: [
        "import", "--from", "ljspeech", "--src", m["corpus"], "--out", m["corpus"] / "manifests"], ["lies inside"]),
    "demo_over_an_import": (prepare_cli.main, lambda d, m, t: [
        "demo", "--out", m["import"]], ["written by prepare_data import"]),
    "evaluate_out_is_the_manifest": (evaluate_cli.main, lambda d, m, t: [
        t, "--manifest", d["eval_manifest"], "--out", d["eval_manifest"]], ["--out", "is the input"]),
    "evaluate_out_over_a_wav_it_scores": (evaluate_cli.main, lambda d, m, t: [
        d["sound"], "--manifest", d["eval_manifest"], "--out", d["sound"] / "ref.wav"], ["--out", "lies inside"]),
    "evaluate_out_over_another_file": (evaluate_cli.main, lambda d, m, t: [
        t, "--manifest", d["eval_manifest"], "--out", m["import"] / "train.jsonl"], ["not written by evaluate"]),
}


@pytest.mark.parametrize("case", sorted(GUARD_CASES))
def test_output_guard_refuses(case, data, made, tmp_path, capsys, unchanged):
    main, make, named = GUARD_CASES[case]
    before = tree_hash(made["root"])
    one_error(*call(main, make(data, made, tmp_path), capsys), *named)
    assert tree_hash(made["root"]) == before, "a refused --out changed another command's output"
    assert not list(tmp_path.iterdir()) and not list(made["root"].glob(".*partial*"))


def test_build_rerun_into_its_own_output_resumes(data, tmp_path, capsys):
    """A build re-run into its folder carries on (here: nothing left to do), also in a folder from before
    markers, which it recognises by its .build/ and then marks."""
    out = tmp_path / "built"
    shutil.copytree(data["built"], out)
    (out / MARKER).unlink()
    before = tree_hash(out)
    args = ["build", "--manifest", data["manifest"], "--out", out, "--audio-spec", data["spec"]]
    assert call(prepare_cli.main, args, capsys)[0] == 0
    assert made_by(out) == "prepare_data build"
    assert {k: v for k, v in tree_hash(out).items() if MARKER not in k} == before


def test_report_adds_report_html_to_its_run_and_nothing_else(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    _write(run / "config.json", json.dumps({"steps": 4}))
    _write(run / "metrics.jsonl", json.dumps({"kind": "train", "step": 1, "loss": 2.5}) + "\n")
    before = tree_hash(run)
    for _ in range(2):  # and again: report.html is its own file
        assert call(report_cli.main, [run], capsys)[0] == 0
        assert {k: v for k, v in tree_hash(run).items() if not k.endswith("report.html")} == before
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "metrics.jsonl", "report.html"]


# ---- the real processes: the __main__ wiring of each command line ------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("script, args", [
    ("launch/prepare_data.py", ["build", "--manifest", "/nonexistent/m.jsonl", "--out", "/tmp/never"]),
    ("launch/generate.py", ["/nonexistent", "--text", TATWEEL]),
    ("launch/export.py", ["/nonexistent", "--out", "/tmp/never-export"]),
    ("launch/evaluate.py", ["/nonexistent", "--manifest", "/nonexistent/m.jsonl"]),
    ("launch/train.py", ["--config", "/nonexistent/recipe.yaml"]),
])
def test_each_command_line_process_exits_2_with_one_line(script, args):
    from tests.harness import python

    proc = python(script, *args)
    one_error(proc.returncode, proc.stderr, "nonexistent" if "generate" not in script else "--text")
    assert not Path("/tmp/never").exists() and not Path("/tmp/never-export").exists()


# ---- damaged checkpoints: resume falls back, never suggests weights_only=False -----------------


@pytest.mark.integration
@pytest.mark.parametrize("name", ["higgs_rank0.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"])
def test_resume_auto_skips_a_tag_with_a_damaged_file(name, run, tmp_path, caplog, capsys, no_training):
    ckpts = tmp_path / "run" / "checkpoints"
    shutil.copytree(run / "checkpoints", ckpts)
    damaged = ckpts / "step000010" / name
    damaged.write_bytes(np.random.default_rng(0).bytes(damaged.stat().st_size))  # same size: still "complete"
    with caplog.at_level(logging.WARNING, logger="higgs_ds"):
        assert choose_resume_tag(ckpts, "auto") == "step000008"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"step000010/{name}" in warnings[0] and "weights_only" not in warnings[0]

    (ckpts / "latest").write_bytes(b"\xff\xfe\x00\x9c")  # unreadable as text: as if missing
    assert choose_resume_tag(ckpts, "auto", warn=False) == "step000008"

    before = tree_hash(ckpts)
    argv = _train_args(_data_of(run), tmp_path / "run", "resume=step000010", "data.eval_shards=null")
    line = one_error(*call(train_cli.main, argv, capsys), name, "resume=step000010", "resume=auto")
    assert "weights_only" not in line and tree_hash(ckpts) == before


def _data_of(run: Path) -> dict:
    """The data paths the run was trained on, from its config."""
    cfg = json.loads((run / "config.json").read_text())["data"]
    return {"train": cfg["shards"], "eval": cfg["eval_shards"], "tokenizer": cfg["tokenizer"]}
