"""An exported model that decodes: the overfit tiny model of tests/generate (two demo sentences it
reproduces code for code) in an export folder whose audio spec is the shipped demo DAC's."""

from __future__ import annotations

import pytest

from higgs_ds.codec import CodecConfig, load_codec
from higgs_ds.data.demo import shipped_demo_codec
from higgs_ds.data.schema import PromptConfig
from higgs_ds.models.higgs_v2.checkpoint import save_checkpoint
from higgs_ds.run_dir import write_run_extras
from tests.generate.conftest import overfit  # noqa: F401 (the session's overfit model)


@pytest.fixture(scope="session")
def demo_codec():
    return load_codec(CodecConfig(path=str(shipped_demo_codec()), kind="dac", device="cpu"))


@pytest.fixture(scope="module")
def export_dir(overfit, demo_codec, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("pg") / "exported"
    save_checkpoint(overfit.model.state_dict(), overfit.model.config, out, layout="boson")
    overfit.tokenizer.save_pretrained(str(out))
    write_run_extras(out, demo_codec.spec, PromptConfig())  # as launch/export.py does
    return out
