"""LoRA through peft on the DualFFN model, in the real 2-rank DeepSpeed loop (CPU ranks, tiny model).

A saved base checkpoint is fine-tuned with adapters on every linear group and a fully trained audio
head, under ZeRO-3; that run's checkpoints answer what trained, exact resume and both exports. A
ZeRO-2 run (attention only, audio embeddings in full) shows the other stage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import HiggsAudioV2ForConditionalGeneration

from higgs_ds import ops
from higgs_ds.audio_spec import write_spec
from higgs_ds.data.shards import load_spec
from higgs_ds.export import export
from higgs_ds.models import get_family
from higgs_ds.models.higgs_v2.checkpoint import save_checkpoint
from higgs_ds.models.higgs_v2.config import tiny_config, token_ids_from_tokenizer
from higgs_ds.models.higgs_v2.model import HiggsAudioModel
from higgs_ds.models.pretrained import from_pretrained
from higgs_ds.ops import reference
from higgs_ds.run_dir import find_run_checkpoint
from higgs_ds.train.build import load_tokenizer
from higgs_ds.train.config import load_config
from higgs_ds.train.lora import ADAPTER_CONFIG_NAME, LoraConfig, adapted_model, apply_lora, is_adapter_param
from tests.harness import losses, run_training

# Adapter dropout on: exact resume must hold with random masks too (the RNG state travels with checkpoints).
LORA = ("lora.enabled=true", "lora.rank=4", "lora.alpha=8", "lora.dropout=0.1",
        "lora.targets=[attention,text_mlp,audio_mlp]", "lora.train_audio_head=true")
STEPS = ("steps=4", "log_every=1", "save_every=2", "eval_every=0", "predict_every=0", "optim.warmup_steps=1")


# ---- units -------------------------------------------------------------------------------------
def test_config_names_an_unknown_group_and_refuses_freeze_or_no_base(tmp_path):
    init = f"model.init={tmp_path}"
    with pytest.raises(ValueError, match="'mlp_text'"):
        load_config(None, ["lora.enabled=true", init, "lora.targets=[attention,mlp_text]"])
    with pytest.raises(ValueError, match="freeze=none"):
        load_config(None, ["lora.enabled=true", init, "freeze=audio_only"])
    with pytest.raises(ValueError, match="lora.enabled without model.init"):  # adapters on a frozen random model
        load_config(None, ["lora.enabled=true"])
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoraConfig(rank=0)
    cfg = load_config(None, ["lora.enabled=true", init, "lora.targets=[audio_mlp]",
                             "lora.train_audio_embeddings=true"])
    assert cfg.lora.targets == ["audio_mlp"] and cfg.lora.fully_trained_modules(get_family(cfg.model.arch)) == [
        "audio_codebook_embeddings"]
    assert LoraConfig.from_run_config(cfg.to_dict()) == cfg.lora
    assert LoraConfig.from_run_config(load_config(None, []).to_dict()) is None


def test_routed_ffn_calls_adapted_mlps_instead_of_reading_their_weights(monkeypatch):
    """The Triton routed FFN reads raw MLP weights; with adapters on the MLPs it must call the modules."""
    torch.manual_seed(0)
    model = HiggsAudioModel(tiny_config())
    apply_lora(model, LoraConfig(enabled=True, rank=4, targets=["text_mlp", "audio_mlp"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_()  # B starts at zero: make the adapters change the output
    layer = model.layers[0]
    hidden, mask = torch.randn(1, 6, 64), torch.tensor([[False, True, True, False, True, False]])
    args = (hidden, mask, layer.post_attention_layernorm, layer.mlp, layer.audio_post_attention_layernorm,
            layer.audio_mlp)
    from higgs_ds.kernels import routed_ffn as kernel

    monkeypatch.setattr(kernel, "routed_swiglu_ffn", lambda *a: pytest.fail("the kernel bypassed the adapters"))
    previous = ops.get_backend()
    ops.set_backend("triton")
    try:
        with torch.no_grad():
            out = ops.routed_ffn(*args)
    finally:
        ops.set_backend(previous)
    with torch.no_grad():
        torch.testing.assert_close(out, reference.routed_ffn(*args), atol=0, rtol=0)
        base = reference.routed_ffn(hidden, mask, layer.post_attention_layernorm, _unadapted(layer.mlp),
                                    layer.audio_post_attention_layernorm, _unadapted(layer.audio_mlp))
    assert not torch.allclose(out, base)


def _unadapted(mlp):
    """The MLP's forward with each adapted linear replaced by its base layer."""
    return lambda x: mlp.down_proj.base_layer(mlp.act_fn(mlp.gate_proj.base_layer(x)) * mlp.up_proj.base_layer(x))


# ---- the real loop ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory, random_data) -> Path:
    """The "pretrained" checkpoint to fine-tune: a fresh tiny model in Boson layout, with the data's spec."""
    tok = load_tokenizer(str(random_data["tokenizer"]), get_family("higgs_v2_dualffn"))
    torch.manual_seed(7)
    config = tiny_config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, head_dim=16,
                         **token_ids_from_tokenizer(tok))
    out = save_checkpoint(HiggsAudioModel(config).state_dict(), config, tmp_path_factory.mktemp("lora") / "base")
    write_spec(out, load_spec(random_data["train"]))
    return out


@pytest.fixture(scope="module")
def straight(tmp_path_factory, random_data, base) -> Path:
    run = tmp_path_factory.mktemp("lora") / "straight"
    run_training(run, random_data, *STEPS, *LORA, f"model.init={base}")
    return run


def _run_state(run_dir: Path, tag: str | None = None):
    ckpt = find_run_checkpoint(run_dir, tag)
    return ckpt, ckpt.state_dict()


@pytest.mark.integration
def test_zero3_trains_only_the_adapters_and_the_audio_head(straight, base):
    ckpt, trained = _run_state(straight)
    assert ckpt.meta["train"]["lora"]["enabled"]  # export knows from the checkpoint's config
    initial = from_pretrained(base).state_dict()
    adapters = sorted(n for n in trained if is_adapter_param(n))
    assert len(adapters) == 2 * 2 * (4 + 3 + 3)  # layers x (A, B) x (attention + text MLP + audio MLP)
    assert all(trained[n].abs().sum() > 0 for n in adapters if ".lora_B." in n)  # B starts at zero
    head = "audio_decoder_proj.audio_lm_head.weight"
    assert not torch.equal(trained[head], initial[head])
    frozen = {n: t for n, t in trained.items() if not is_adapter_param(n) and n != head}
    assert {n.replace(".base_layer.", ".") for n in frozen} == set(initial) - {head}
    for name, value in frozen.items():
        assert torch.equal(value, initial[name.replace(".base_layer.", ".")]), f"{name} is frozen but changed"
    # every adapter kept training between the two checkpoints
    _, half = _run_state(straight, "step000002")
    assert all(not torch.equal(half[n], trained[n]) for n in adapters)


@pytest.mark.integration
def test_zero3_partitions_the_adapters_created_after_zero_init(straight):
    """The adapters are created after `zero.Init`; `deepspeed.initialize` makes them ZeRO-3 parameters:
    the checkpoint lists exactly them (and the audio head) as trained, and each rank holds about half of
    their fp32 master weights."""
    tag = straight / "checkpoints" / "step000004"
    model_states = torch.load(tag / "zero_pp_rank_0_mp_rank_00_model_states.pt", weights_only=False)
    trained = {name: shape for group in model_states["param_shapes"] for name, shape in group.items()}
    assert all(is_adapter_param(n) for n in trained if n != "audio_decoder_proj.audio_lm_head.weight")
    assert len(trained) == 2 * 2 * (4 + 3 + 3) + 1
    total = sum(math.prod(shape) for shape in trained.values())
    held = [sum(t.numel() for t in torch.load(tag / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt",
                                              weights_only=False)["optimizer_state_dict"]["fp32_flat_groups"])
            for r in (0, 1)]
    assert sum(held) >= total and max(held) < 0.6 * total, (held, total)


@pytest.mark.integration
def test_zero3_lora_resume_is_exact(tmp_path, random_data, base, straight):
    """Stopped after 2 steps and resumed: the same per-step losses, bit for bit."""
    split = tmp_path / "split"
    run_training(split, random_data, *STEPS, *LORA, f"model.init={base}", "stop_at=2")
    assert (split / "checkpoints" / "latest").read_text() == "step000002"
    run_training(split, random_data, *STEPS, *LORA, f"model.init={base}", "resume=auto")
    assert losses(split) == losses(straight)


def _logits(model, config):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 500, (1, 24), generator=g)
    ids[0, 6:20] = config.audio_out_token_idx
    codes = torch.randint(0, 1026, (14, 8), generator=g)
    with torch.no_grad():
        out = model(ids, codes)
        return model.text_logits(out.hidden_states), model.audio_logits(out.hidden_states[out.audio_out_mask])


@pytest.mark.integration
def test_merged_exports_match_the_adapted_model(tmp_path, straight):
    ckpt, state = _run_state(straight)
    config, lora = ckpt.model_config, LoraConfig.from_run_config(ckpt.meta["train"])
    adapted = _logits(adapted_model(state, config, lora), config)
    merged = from_pretrained(export(straight / "checkpoints", tmp_path / "boson", layout="boson")).eval()
    assert not any("lora" in n or "base_layer" in n for n in merged.state_dict())
    for ours, theirs in zip(_logits(merged, config), adapted, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)

    hf = export(straight / "checkpoints", tmp_path / "hf", layout="hf")
    port, info = HiggsAudioV2ForConditionalGeneration.from_pretrained(hf, use_text_head=True,
                                                                      output_loading_info=True)
    assert not any(info.values()), info


@pytest.mark.integration
def test_adapter_only_export_loads_with_peft(tmp_path, straight, base):
    ckpt, state = _run_state(straight)
    config, lora = ckpt.model_config, LoraConfig.from_run_config(ckpt.meta["train"])
    out = export(straight / "checkpoints", tmp_path / "adapter", layout="hf", adapter_only=True)
    assert not (out / "model.safetensors").exists() and (out / "adapter_model.safetensors").is_file()
    groups = json.loads((out / ADAPTER_CONFIG_NAME).read_text())
    assert groups["targets"] == ["attention", "text_mlp", "audio_mlp"] and groups["train_audio_head"]
    assert groups["base_model"] == str(base)
    peft_model = PeftModel.from_pretrained(from_pretrained(base), out).eval()
    for ours, theirs in zip(_logits(peft_model.get_base_model(), config),
                            _logits(adapted_model(state, config, lora), config), strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.integration
def test_the_playground_serves_a_lora_run_with_its_adapters_merged_as_export_merges_them(straight, tmp_path):
    from higgs_ds.playground import Playground, PlaygroundConfig

    served = Playground(PlaygroundConfig(straight, save_dir=tmp_path / "saved")).load().model.state_dict()
    merged = from_pretrained(export(straight / "checkpoints", tmp_path / "merged")).state_dict()
    assert served.keys() == merged.keys() and not any(is_adapter_param(n) for n in served)
    for name, value in served.items():
        assert torch.equal(value, merged[name]), name


@pytest.mark.integration
def test_zero2_lora_with_fully_trained_audio_embeddings(tmp_path, random_data, base):
    run = tmp_path / "zero2"
    proc = run_training(run, random_data, "steps=2", "save_every=2", "eval_every=0", "predict_every=0",
                        "lora.enabled=true", "lora.targets=[attention]", "lora.train_audio_embeddings=true",
                        f"model.init={base}", ds_config="ds_configs/zero2.json")
    assert "ZeRO stage 2" in proc.stdout + proc.stderr
    trained = torch.load(run / "checkpoints" / "step000002" / "mp_rank_00_model_states.pt",
                         weights_only=False)["module"]  # ZeRO-2 keeps whole fp32 weights here
    initial = from_pretrained(base).state_dict()
    adapters = [n for n in trained if is_adapter_param(n)]
    assert len(adapters) == 2 * 2 * 4 and all("self_attn" in n for n in adapters)
    assert all(trained[n].abs().sum() > 0 for n in adapters if ".lora_B." in n)
    assert not torch.equal(trained["audio_codebook_embeddings.weight"], initial["audio_codebook_embeddings.weight"])
    for name, value in trained.items():
        if not is_adapter_param(name) and name != "audio_codebook_embeddings.weight":
            assert torch.equal(value, initial[name.replace(".base_layer.", ".")]), f"{name} is frozen but changed"
