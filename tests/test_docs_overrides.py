"""The docs cannot drift from the code: every training command and `key=value` override shown in README.md
and docs/*.md goes through the real config loader and must set the field it names to the value shown;
every `launch/*.py` command shown goes through that command's own argument parser; every `make` target
shown exists; every recipe loads."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import io
import re
import shlex
from pathlib import Path
from unittest import mock

import pytest
import yaml

from higgs_ds.train.config import TrainConfig, load_config

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOP_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}
_OVERRIDE = re.compile(r"^([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*)=(\S*)$")
_FENCE = re.compile(r"^[ \t]*```([\w-]*)\n(.*?)^[ \t]*```", flags=re.S | re.M)
_LAUNCH = re.compile(r"(?:^|/)launch/(\w+)\.py$")
_SLURM = re.compile(r"(?:^|/)launch/slurm/(submit\.sh|train\.sbatch)$")
_ELLIPSIS = ("...", "…")
DEMO_RECIPE = "recipes/demo.yaml"  # what `make demo` trains (Makefile)
# train.sbatch's recipe when CONFIG is not set, read from the script itself
SBATCH_RECIPE = re.search(r"CONFIG=\$\{CONFIG:-(\S+?)\}", (REPO / "launch/slurm/train.sbatch").read_text()).group(1)
MAKE_TARGETS = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M))


@dataclasses.dataclass(frozen=True)
class Command:
    """One command line shown in the docs, split as the shell would split it."""

    where: str  # file:line
    tokens: tuple[str, ...]
    complete: bool  # a whole command from a code block, not a fragment or one with `...` in it

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.tokens)}"[:150]


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # not shell (a heredoc body, an output line): nothing to check
        return []


def _unbracket(tokens: list[str]) -> list[str]:
    """`[--flag value]` (an optional part of a command) -> `--flag value`; `key=[a,b]` stays as it is."""
    out = []
    for token in tokens:
        token = token.removeprefix("[")
        if token.endswith("]") and token.count("]") > token.count("["):
            token = token[:-1]
        if token:
            out.append(token)
    return out


def _logical_lines(block: str) -> list[tuple[int, str]]:
    """(offset of the first physical line, the line) with backslash continuations joined."""
    out, pending, start = [], "", 0
    for offset, physical in enumerate(block.split("\n")):
        start = start if pending else offset
        if physical.endswith("\\"):
            pending += physical[:-1] + " "
            continue
        out.append((start, pending + physical))
        pending = ""
    return out


def doc_commands() -> list[Command]:
    """Shell commands of bash/sh code blocks (continuation lines joined), plus inline code spans of the
    prose that run a launch/ script, make, or hold key=value overrides."""
    found = []
    for doc in DOCS:
        text, name = doc.read_text(encoding="utf-8"), doc.relative_to(REPO).as_posix()
        for fence in _FENCE.finditer(text):
            if fence.group(1) not in ("bash", "sh", "shell", "console"):
                continue
            first = text.count("\n", 0, fence.start(2)) + 1
            for offset, line in _logical_lines(fence.group(2)):
                tokens = _unbracket(_split(line))
                if tokens:
                    complete = not any(t in _ELLIPSIS for t in tokens)
                    found.append(Command(f"{name}:{first + offset}", tuple(tokens), complete))
        prose = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for span in re.finditer(r"`([^`]+)`", prose):
            tokens = _unbracket(_split(span.group(1).replace("\n", " ")))
            if tokens:
                found.append(Command(f"{name}:{prose.count(chr(10), 0, span.start()) + 1}", tuple(tokens), False))
    return found


class _Built(BaseException):  # not an Exception: a CLI's own `except Exception` must not swallow it
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


@functools.cache
def cli_parser(name: str) -> argparse.ArgumentParser:
    """The argparse parser that `launch/<name>.py` builds, taken when its main() parses."""
    module = importlib.import_module(f"launch.{name}")

    def built(parser, *args, **kwargs):
        raise _Built(parser)

    with mock.patch.object(argparse.ArgumentParser, "parse_known_args", built):
        try:
            module.main([])
        except _Built as got:
            return got.parser
    raise AssertionError(f"launch/{name}.py: main() parsed no arguments")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def _overrides(tokens) -> list[str]:
    return [t for t in tokens if (m := _OVERRIDE.match(t)) and m.group(1).split(".")[0] in TOP_KEYS
            and t not in _ELLIPSIS and "<" not in t]


def training_runs() -> list[tuple[str, str | None, tuple[str, ...]]]:
    """(where, recipe, overrides) of every training command in the docs, plus the overrides of the prose
    (checked on the defaults, without a recipe)."""
    runs = []
    for cmd in doc_commands():
        tokens, recipe, args = cmd.tokens, None, None
        for i, token in enumerate(tokens):
            if _LAUNCH.search(token) and _LAUNCH.search(token).group(1) == "train":
                parsed = cli_parser("train").parse_known_args(list(tokens[i + 1:]))[0]
                recipe, args = parsed.config, parsed.overrides
                break
            if _SLURM.search(token):
                env = dict(t.split("=", 1) for t in tokens[:i] if re.match(r"^[A-Z_]+=", t))
                recipe, args = env.get("CONFIG", SBATCH_RECIPE), list(tokens[i + 1:])
                break
            if token == "make" and tokens[i + 1:i + 2] == ("demo",):
                make_args = [t.removeprefix("ARGS=") for t in tokens[i + 2:] if t.startswith("ARGS=")]
                recipe, args = DEMO_RECIPE, [o for a in make_args for o in shlex.split(a)]
                break
        if args is not None and (recipe or _overrides(args)):  # not a bare `launch/train.py` in the prose
            runs.append((cmd.where, recipe, tuple(_overrides(args))))
        else:
            loose = _overrides(tokens)
            if loose:
                runs.append((cmd.where, None, tuple(loose)))
    return runs


def _field(cfg, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _as_shown(actual, raw: str):
    """The value `raw` as the loader must have stored it in a field now holding `actual`."""
    shown = yaml.safe_load(raw)
    if isinstance(actual, float) and isinstance(shown, str | int):
        return float(shown)  # YAML reads 1e-3 as a string; the loader makes it a float
    if isinstance(actual, str) and not isinstance(shown, str):
        return raw  # run_dir=2024: a string field keeps the text
    if isinstance(actual, tuple):
        return tuple(shown)
    return shown


def _stand_in(recipe: Path | None, overrides: tuple[str, ...], root: Path) -> list[str]:
    """Checkpoint folders are the user's local copies: make empty stand-ins under `root`, the cwd."""
    init = recipe and (yaml.safe_load(recipe.read_text()) or {}).get("model", {}).get("init")
    if init:
        (root / init).mkdir(parents=True, exist_ok=True)
    out = []
    for override in overrides:
        key, value = override.split("=", 1)
        if key == "model.init":
            value = str(root / "stand_in" / value.strip("/"))
            Path(value).mkdir(parents=True, exist_ok=True)
        out.append(f"{key}={value}")
    return out


def test_the_docs_show_training_commands_and_overrides_to_check():
    runs = training_runs()
    keys = {o.split("=")[0] for _, _, overrides in runs for o in overrides}
    assert {"steps", "model.init", "data.shards", "data.stream.max_tokens", "resume", "lora.targets"} <= keys
    recipes = {recipe for _, recipe, _ in runs}
    assert {"recipes/demo.yaml", "recipes/higgs_v2_3b_arabic.yaml"} <= recipes
    assert len(runs) >= 20, runs


@pytest.mark.parametrize(("where", "recipe", "overrides"), training_runs(), ids=lambda v: str(v)[:60])
def test_documented_training_command_loads_and_sets_what_it_shows(where, recipe, overrides, tmp_path, monkeypatch):
    recipe_path = REPO / recipe if recipe else None
    assert recipe_path is None or recipe_path.is_file(), f"{where}: recipe {recipe} does not exist"
    monkeypatch.chdir(tmp_path)
    given = _stand_in(recipe_path, overrides, tmp_path)
    cfg = load_config(str(recipe_path) if recipe_path else None, given)
    for override in given:
        key, raw = override.split("=", 1)
        actual = _field(cfg, key)
        assert actual == _as_shown(actual, raw), f"{where}: {override} left {key}={actual!r}"


def test_an_override_that_the_loader_ignored_would_fail_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(REPO / DEMO_RECIPE), ["optim.lr=1e-3"])
    assert _field(cfg, "optim.lr") == _as_shown(cfg.optim.lr, "1e-3") == 1e-3
    assert _field(cfg, "steps") != _as_shown(cfg.steps, "50")  # the demo recipe's 400 steps, not 50


def launch_commands() -> list[tuple[Command, str, tuple[str, ...]]]:
    out = []
    for cmd in doc_commands():
        for i, token in enumerate(cmd.tokens):
            if match := _LAUNCH.search(token):
                args = cmd.tokens[i + 1:]
                args = args[:args.index("&&")] if "&&" in args else args
                if args:  # a bare script name in the prose shows nothing to check
                    out.append((cmd, match.group(1), args))
                break
    return out


def test_the_docs_show_each_launch_command():
    shown = {name for _, name, _ in launch_commands()}
    assert shown == {p.stem for p in (REPO / "launch").glob("*.py") if p.stem != "__init__"}


@pytest.mark.parametrize(("cmd", "name", "args"), launch_commands(), ids=lambda v: str(v)[:60])
def test_documented_launch_command_parses(cmd, name, args):
    parser = cli_parser(name)
    subcommands = _subcommands(parser)
    if subcommands:
        positional = next((a for a in args if not a.startswith("-")), None)
        assert positional in subcommands, f"{cmd}: {positional!r} is not a subcommand ({sorted(subcommands)})"
        parser = subcommands[positional]
    flags = {option for action in parser._actions for option in action.option_strings}
    shown = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    assert shown <= flags, f"{cmd}: launch/{name}.py has no {sorted(shown - flags)}"
    if cmd.complete:  # a whole command line: the real parser takes it as it stands
        err = io.StringIO()
        try:  # on the machine the docs describe: `--device cuda` names a GPU that exists there
            with contextlib.redirect_stderr(err), mock.patch("torch.cuda.is_available", return_value=True), \
                    mock.patch("torch.cuda.device_count", return_value=8):
                cli_parser(name).parse_args(list(args))
        except (SystemExit, ValueError) as exc:  # argparse exits; a parser that reports user errors raises
            pytest.fail(f"{cmd}: launch/{name}.py refuses it: {err.getvalue().strip() or exc}")


def test_the_parser_check_catches_a_flag_that_does_not_exist():
    build = _subcommands(cli_parser("prepare_data"))["build"]
    assert "--codec-path" in {o for a in build._actions for o in a.option_strings}
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises((SystemExit, ValueError), match="nope|2"):
        cli_parser("export").parse_args(["runs/x/checkpoints", "--out", "x", "--nope"])


def make_targets_shown() -> list[tuple[str, str]]:
    return sorted({(cmd.where, cmd.tokens[i + 1]) for cmd in doc_commands()
                   for i, token in enumerate(cmd.tokens[:-1]) if token == "make"})


@pytest.mark.parametrize(("where", "target"), make_targets_shown())
def test_documented_make_target_exists(where, target):
    assert target in MAKE_TARGETS, f"{where}: the Makefile has no target {target!r}"


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "recipes").glob("*.yaml")))
def test_recipe_loads(recipe, tmp_path, monkeypatch):
    tree = yaml.safe_load((REPO / "recipes" / recipe).read_text())
    monkeypatch.chdir(tmp_path)
    _stand_in(REPO / "recipes" / recipe, (), tmp_path)
    cfg = load_config(str(REPO / "recipes" / recipe))
    assert (cfg.steps, cfg.run_dir, cfg.data.shards) == (tree["steps"], tree["run_dir"], tree["data"]["shards"])


def test_unknown_keys_are_rejected_naming_them_and_renamed_keys_still_work(caplog, tmp_path):
    with pytest.raises(ValueError, match=re.escape("data.micro_batch_size")):
        load_config(None, ["data.micro_batch_size=4"])  # a key the docs once showed: never existed
    old = load_config(None, ["data.train.shards=data/x", "data.train.stream.max_tokens=9000"])
    assert (old.data.shards, old.data.stream.max_tokens) == ("data/x", 9000)
    assert "data.train.shards is deprecated: use data.shards" in caplog.text
    recipe = tmp_path / "old.yaml"  # a recipe in the old nesting: moved up, the new spelling wins where both are given
    recipe.write_text(yaml.safe_dump({"data": {"train": {"num_workers": 3, "stream": {"max_seq_len": 512}},
                                               "stream": {"max_tokens": 900}}}))
    cfg = load_config(str(recipe))
    assert (cfg.data.num_workers, cfg.data.stream.max_seq_len, cfg.data.stream.max_tokens) == (3, 512, 900)
