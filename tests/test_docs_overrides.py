"""Every `key=value` training override the README shows, and every recipe, goes through the real config
loader, so the docs cannot drift from the config again."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from higgs_ds.train.config import TrainConfig, load_config

REPO = Path(__file__).resolve().parents[1]
TOP_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}
_OVERRIDE = re.compile(r"^([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*)=(\S*)$")
_TRAIN_COMMAND = re.compile(r"launch/train\.py|launch/slurm/submit\.sh|make demo")


def _overrides_in(text: str) -> list[str]:
    out = []
    for token in text.split():
        token = token.removeprefix('ARGS="').strip("\"'`")
        match = _OVERRIDE.match(token)
        if match and match.group(1).split(".")[0] in TOP_KEYS:
            out.append(token)
    return out


def readme_overrides() -> list[tuple[str | None, str]]:
    """(recipe, override) pairs: from training commands in code blocks (with their --config) and from
    inline code spans in the prose."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", readme, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if _TRAIN_COMMAND.search(command):
                recipe = re.search(r"--config (\S+)", command)
                found += [(recipe and recipe.group(1), o) for o in _overrides_in(command)]
    prose = re.sub(r"```.*?```", "", readme, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        found += [(None, o) for o in _overrides_in(span)]
    return sorted(set(found), key=str)


def test_the_readme_shows_overrides_to_check():
    keys = {o.split("=")[0] for _, o in readme_overrides()}
    assert {"steps", "model.init", "data.shards", "data.stream.max_tokens", "resume"} <= keys


@pytest.mark.parametrize(("recipe", "override"), readme_overrides(), ids=str)
def test_readme_override_is_accepted(recipe, override, tmp_path, monkeypatch):
    key, value = override.split("=", 1)
    if key in ("model.init", "data.tokenizer"):
        override = f"{key}={tmp_path}"  # a local folder that exists here stands in for the user's copy
    monkeypatch.chdir(REPO)
    cfg = load_config(recipe, [override])
    assert isinstance(cfg, TrainConfig)


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "recipes").glob("*.yaml")))
def test_recipe_loads(recipe, tmp_path, monkeypatch):
    tree = yaml.safe_load((REPO / "recipes" / recipe).read_text())
    init = tree.get("model", {}).get("init")
    if init:  # the recipe names the user's local checkpoint folder: an empty stand-in is enough here
        (tmp_path / init).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(REPO / "recipes" / recipe))
    assert cfg.to_dict()["steps"] == tree["steps"]


def test_unknown_keys_are_rejected_naming_them_and_renamed_keys_still_work(caplog):
    with pytest.raises(ValueError, match=re.escape("data.micro_batch_size")):
        load_config(None, ["data.micro_batch_size=4"])  # a key the README once showed: never existed
    old = load_config(None, ["data.train.shards=data/x", "data.train.stream.max_tokens=9000"])
    assert (old.data.shards, old.data.stream.max_tokens) == ("data/x", 9000)
    assert "data.train.shards is deprecated: use data.shards" in caplog.text
    nested = {"data": {"train": {"num_workers": 3, "stream": {"max_seq_len": 512}}, "stream": {"max_tokens": 900}}}
    from higgs_ds.train.config import _build, _migrate

    _migrate(nested)  # a recipe in the old nesting: moved up, the new spelling wins where both are given
    cfg = _build(TrainConfig, nested, "")
    assert (cfg.data.num_workers, cfg.data.stream.max_seq_len, cfg.data.stream.max_tokens) == (3, 512, 900)
