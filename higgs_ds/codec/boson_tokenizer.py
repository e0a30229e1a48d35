"""Boson AI's original Higgs Audio v2 tokenizer folder <-> transformers' ``HiggsAudioV2TokenizerModel``.

Boson's folder is ``config.json`` (the keyword arguments of its ``HiggsAudioTokenizer``) and ``model.pth`` (a
plain state dict). Its DAC convolutions carry weight norm as ``weight_g``/``weight_v``; transformers' DAC
modules hold plain weights, so the pair is folded on load (and split again on save). Names differ by module
layout (``encoder.block.N`` vs ``acoustic_encoder.block.M.res_unitK``); :data:`NAME_MAP` is the one table of
both, read left to right on load and right to left on save.

The HuBERT semantic model is stored in ``model.pth`` as ``semantic_model.*``. Boson's code builds it from
``bosonai/hubert_base`` (HuBERT base) before loading ``model.pth``; a ``hubert_base/`` subfolder (or
``semantic_model_path``), a transformers HuBERT folder, supplies its config, and its weights when
``model.pth`` has none. Without a config, HuBERT base (transformers' ``HubertConfig`` defaults) is assumed.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import torch

from higgs_ds.codec.base import CodecLoadError, load_weights

HUBERT_SUBFOLDER = "hubert_base"
SEMANTIC_PREFIX = "semantic_model."

# Boson's ``HiggsAudioTokenizer.__init__`` keywords and defaults: its config.json may leave any of them out.
BOSON_CONFIG_DEFAULTS = {
    "n_filters": 32, "D": 128, "target_bandwidths": [1, 1.5, 2, 4, 6], "ratios": [8, 5, 4, 2],
    "sample_rate": 16000, "bins": 1024, "n_q": 8, "codebook_dim": None, "normalize": False, "causal": False,
    "semantic_techer": "hubert_base_general", "last_layer_semantic": True, "merge_mode": "concat",
    "downsample_mode": "step_down", "semantic_mode": "classic", "vq_scale": 1, "semantic_sample_rate": None,
}
HUBERT_TEACHERS = ("hubert_base", "hubert_base_general")
BOSON_SEMANTIC_RATE = 16000  # HuBERT's rate in Boson's code unless config.json sets semantic_sample_rate

# (Boson module path, transformers module path). {x} is a decimal index, {x+k} the index plus k, {n} the number
# of DAC strides, {rest} any tail. Each row reads both ways; the first row that matches wins.
NAME_MAP = (
    ("encoder.block.0", "acoustic_encoder.conv1"),
    ("encoder.block.{b+1}.block.{u}.block.0", "acoustic_encoder.block.{b}.res_unit{u+1}.snake1"),
    ("encoder.block.{b+1}.block.{u}.block.1", "acoustic_encoder.block.{b}.res_unit{u+1}.conv1"),
    ("encoder.block.{b+1}.block.{u}.block.2", "acoustic_encoder.block.{b}.res_unit{u+1}.snake2"),
    ("encoder.block.{b+1}.block.{u}.block.3", "acoustic_encoder.block.{b}.res_unit{u+1}.conv2"),
    ("encoder.block.{b+1}.block.3", "acoustic_encoder.block.{b}.snake1"),
    ("encoder.block.{b+1}.block.4", "acoustic_encoder.block.{b}.conv1"),
    ("encoder.block.{n+1}", "acoustic_encoder.snake1"),
    ("encoder.block.{n+2}", "acoustic_encoder.conv2"),
    ("decoder_2.model.0", "acoustic_decoder.conv1"),
    ("decoder_2.model.{b+1}.block.0", "acoustic_decoder.block.{b}.snake1"),
    ("decoder_2.model.{b+1}.block.1", "acoustic_decoder.block.{b}.conv_t1"),
    ("decoder_2.model.{b+1}.block.{u+2}.block.0", "acoustic_decoder.block.{b}.res_unit{u+1}.snake1"),
    ("decoder_2.model.{b+1}.block.{u+2}.block.1", "acoustic_decoder.block.{b}.res_unit{u+1}.conv1"),
    ("decoder_2.model.{b+1}.block.{u+2}.block.2", "acoustic_decoder.block.{b}.res_unit{u+1}.snake2"),
    ("decoder_2.model.{b+1}.block.{u+2}.block.3", "acoustic_decoder.block.{b}.res_unit{u+1}.conv2"),
    ("decoder_2.model.{n+1}", "acoustic_decoder.snake1"),
    ("decoder_2.model.{n+2}", "acoustic_decoder.conv2"),
    # Boson wraps most semantic convolutions in a module whose nn.Conv1d is `.conv`.
    ("encoder_semantic.conv.conv", "encoder_semantic.conv"),
    ("encoder_semantic.conv_blocks.{i}.res_units.{j}.conv1.conv",
     "encoder_semantic.conv_blocks.{i}.res_units.{j}.conv1"),
    ("encoder_semantic.conv_blocks.{i}.res_units.{j}.conv2", "encoder_semantic.conv_blocks.{i}.res_units.{j}.conv2"),
    ("encoder_semantic.conv_blocks.{i}.conv.conv", "encoder_semantic.conv_blocks.{i}.conv"),
    ("decoder_semantic.conv1.conv", "decoder_semantic.conv1"),
    ("decoder_semantic.conv_blocks.{i}.conv.conv", "decoder_semantic.conv_blocks.{i}.conv"),
    ("decoder_semantic.conv_blocks.{i}.res_units.{j}.conv1.conv",
     "decoder_semantic.conv_blocks.{i}.res_units.{j}.conv1"),
    ("decoder_semantic.conv_blocks.{i}.res_units.{j}.conv2", "decoder_semantic.conv_blocks.{i}.res_units.{j}.conv2"),
    ("decoder_semantic.conv2.conv", "decoder_semantic.conv2"),
    ("fc_prior", "fc"),
    ("fc_post1", "fc1"),
    ("fc_post2", "fc2"),
    ("quantizer.vq.layers.{q}._codebook", "quantizer.quantizers.{q}.codebook"),
    ("quantizer.vq.layers.{q}.project_in", "quantizer.quantizers.{q}.project_in"),
    ("quantizer.vq.layers.{q}.project_out", "quantizer.quantizers.{q}.project_out"),
    ("semantic_model.{rest}", "semantic_model.{rest}"),
)
WEIGHT_NORMED = ("encoder.", "decoder_2.")  # Boson's DAC: every convolution is weight-normed (dim 0)
# Training-only HuBERT parameter (the mask embedding), present in HuBERT checkpoints but unused by the tokenizer.
UNUSED_KEYS = ("semantic_model.masked_spec_embed",)

_PLACEHOLDER = re.compile(r"\{(\w+)([+-]\d+)?\}")


@cache
def _compile(template: str) -> tuple[re.Pattern, list[tuple[str, int]]]:
    pattern, fields, end = "", [], 0
    for m in _PLACEHOLDER.finditer(template):
        pattern += re.escape(template[end:m.start()]) + ("(.+)" if m[1] == "rest" else r"(\d+)")
        fields.append((m[1], int(m[2] or 0)))
        end = m.end()
    return re.compile(pattern + re.escape(template[end:])), fields


def _translate(path: str, source: str, target: str, known: dict[str, int]) -> str | None:
    """`path` written with template `source` rewritten with `target`, or None when `source` does not match."""
    pattern, fields = _compile(source)
    match = pattern.fullmatch(path)
    if match is None:
        return None
    values: dict[str, int | str] = dict(known)
    for (name, offset), text in zip(fields, match.groups(), strict=True):
        value = text if name == "rest" else int(text) - offset
        if (name != "rest" and value < 0) or values.get(name, value) != value:
            return None
        values[name] = value
    return _PLACEHOLDER.sub(lambda p: str(values[p[1]] if p[1] == "rest" else values[p[1]] + int(p[2] or 0)),
                            target)


def rename_key(key: str, num_strides: int, to_boson: bool = False) -> str | None:
    """A state-dict key in the other layout (None when no row of NAME_MAP covers it)."""
    module, _, leaf = key.rpartition(".")
    for boson, hf in NAME_MAP:
        source, target = (hf, boson) if to_boson else (boson, hf)
        renamed = _translate(module, source, target, {"n": num_strides})
        if renamed is not None:
            return f"{renamed}.{leaf}"
    return None


def is_boson_tokenizer_dir(path: str | Path) -> bool:
    path = Path(path)
    return ((path / "config.json").is_file() and (path / "model.pth").is_file()
            and not (path / "model.safetensors").exists())


def _read_boson_config(path: Path) -> dict:
    given = json.loads((path / "config.json").read_text())
    unknown = sorted(set(given) - set(BOSON_CONFIG_DEFAULTS))
    if unknown:
        raise CodecLoadError(f"{path}/config.json: keys {unknown} are not Boson HiggsAudioTokenizer arguments "
                             f"(known: {sorted(BOSON_CONFIG_DEFAULTS)})")
    cfg = {**BOSON_CONFIG_DEFAULTS, **given}
    # What transformers' port can express; each of these changes the network in Boson's code.
    unsupported = {
        "bins": (isinstance(cfg["bins"], int), "an int (residual VQ; a list means FSQ)"),
        "vq_scale": (cfg["vq_scale"] == 1, "1"),
        "merge_mode": (cfg["merge_mode"] == "concat", "'concat'"),
        "downsample_mode": (cfg["downsample_mode"] == "step_down", "'step_down'"),
        "semantic_techer": (cfg["semantic_techer"] in HUBERT_TEACHERS, f"one of {HUBERT_TEACHERS}"),
        "codebook_dim": (cfg["codebook_dim"] is not None, "set (no codebook projection otherwise)"),
    }
    bad = [f"{k}={cfg[k]!r} (must be {want})" for k, (ok, want) in unsupported.items() if not ok]
    if bad:
        raise CodecLoadError(f"{path}/config.json: unsupported settings: {'; '.join(bad)}")
    return cfg


def _hubert_folder(path: Path, semantic_model_path: str | Path | None) -> Path | None:
    if semantic_model_path is not None:
        folder = Path(semantic_model_path)
        if not (folder / "config.json").is_file():
            raise CodecLoadError(f"semantic_model_path {folder} is not a transformers HuBERT folder (no config.json)")
        return folder
    return path / HUBERT_SUBFOLDER if (path / HUBERT_SUBFOLDER / "config.json").is_file() else None


def _hubert_weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        return load_weights(folder / "pytorch_model.bin")
    raise CodecLoadError(f"{folder}: HuBERT folder has no weights (model.safetensors or pytorch_model.bin)")


def _transformers_config(cfg: dict, encoder_width: int, decoder_width: int, hubert: dict):
    from transformers import HiggsAudioV2TokenizerConfig

    acoustic = {"encoder_hidden_size": encoder_width, "downsampling_ratios": list(cfg["ratios"]),
                "decoder_hidden_size": decoder_width, "upsampling_ratios": list(cfg["ratios"]),
                "hidden_size": cfg["D"], "sampling_rate": cfg["sample_rate"]}
    # Masking is a training-time augmentation; without it HuBERT has no mask embedding to load.
    hubert = {**hubert, "mask_time_prob": 0.0, "mask_feature_prob": 0.0}
    return HiggsAudioV2TokenizerConfig(
        sample_rate=cfg["sample_rate"], target_bandwidths=list(cfg["target_bandwidths"]), codebook_size=cfg["bins"],
        codebook_dim=cfg["codebook_dim"], acoustic_model_config=acoustic, semantic_model_config=hubert,
        semantic_sample_rate=cfg["semantic_sample_rate"] or BOSON_SEMANTIC_RATE)


def _norm_except_dim0(v: torch.Tensor) -> torch.Tensor:
    """torch weight norm's |v| (dim 0): saving g = |w| and v = w folds back to w bit for bit (g / |v| == 1)."""
    return torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)


def _fold_weight_norm(where: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DAC convs: (g, v) -> g * v / |v| (what Boson's weight-normed modules compute); HuBERT's positional conv
    keeps its weight norm, as a transformers parametrization."""
    out = {}
    for key, value in state.items():
        base, _, leaf = key.rpartition(".")
        if leaf not in ("weight_g", "weight_v"):
            out[key] = value
        elif key.startswith(SEMANTIC_PREFIX):
            out[f"{base}.parametrizations.weight.original{0 if leaf == 'weight_g' else 1}"] = value
        elif leaf == "weight_g":
            if f"{base}.weight_v" not in state:
                raise CodecLoadError(f"{where}: {base}.weight_g has no {base}.weight_v")
            v = state[f"{base}.weight_v"]
            out[f"{base}.weight"] = v * (value / _norm_except_dim0(v))
        elif f"{base}.weight_g" not in state:
            raise CodecLoadError(f"{where}: {base}.weight_v has no {base}.weight_g")
    return out


def boson_name(key: str, num_strides: int) -> str:
    """How Boson's model.pth names a transformers key (for messages: the file the user has is Boson's)."""
    name = rename_key(key, num_strides, to_boson=True) or key
    return name + "_g/_v" if name.startswith(WEIGHT_NORMED) and name.endswith(".weight") else name


def _check_fits(where: str, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], num_strides: int):
    missing = [boson_name(k, num_strides) for k in sorted(set(expected) - set(state))]
    unexpected = [boson_name(k, num_strides) for k in sorted(set(state) - set(expected))]
    wrong = [f"{boson_name(k, num_strides)} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
             for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    problems = [f"{label}: {keys}" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    if problems:
        raise CodecLoadError(f"{where} does not fit the tokenizer its config.json describes; "
                             + "; ".join(problems))


def load_boson_tokenizer(path: str | Path, semantic_model_path: str | Path | None = None):
    """Boson's folder as a transformers ``HiggsAudioV2TokenizerModel`` (eval mode, on the CPU), loaded strictly."""
    from transformers import HiggsAudioV2TokenizerModel, HubertConfig

    path = Path(path)
    cfg = _read_boson_config(path)
    raw = load_weights(path / "model.pth")
    raw = {k: v for k, v in raw.items() if k not in UNUSED_KEYS}
    folder = _hubert_folder(path, semantic_model_path)
    if not any(k.startswith(SEMANTIC_PREFIX) for k in raw):
        if folder is None:
            raise CodecLoadError(
                f"{path}/model.pth has no HuBERT weights ({SEMANTIC_PREFIX}*) and there is no {path}/"
                f"{HUBERT_SUBFOLDER}/ folder: pass semantic_model_path=<a local transformers HuBERT folder, the copy "
                f"of bosonai/hubert_base that Boson's code downloads>, or put that folder at {path}/{HUBERT_SUBFOLDER}")
        hubert = _hubert_weights(folder)
        raw.update({SEMANTIC_PREFIX + k: v for k, v in hubert.items() if SEMANTIC_PREFIX + k not in UNUSED_KEYS})
    hubert_config = (HubertConfig.from_pretrained(str(folder)) if folder else HubertConfig()).to_dict()
    state = _fold_weight_norm(f"{path}/model.pth", raw)

    num_strides = len(cfg["ratios"])
    renamed, unmapped = {}, []
    for key, value in state.items():
        new_key = rename_key(key, num_strides)
        if new_key is None:
            unmapped.append(key)
        renamed[new_key or key] = value
    if unmapped:
        raise CodecLoadError(f"{path}/model.pth: keys with no transformers name: {sorted(unmapped)}")
    # Boson's code hard-codes the DAC widths (64 and 1024); read them from the weights.
    for key in ("acoustic_encoder.conv1.weight", "acoustic_decoder.conv1.weight"):
        if key not in renamed:
            raise CodecLoadError(f"{path}/model.pth: missing {boson_name(key, num_strides)}")
    config = _transformers_config(cfg, renamed["acoustic_encoder.conv1.weight"].shape[0],
                                  renamed["acoustic_decoder.conv1.weight"].shape[0], hubert_config)
    if config.num_quantizers != cfg["n_q"]:
        raise CodecLoadError(f"{path}/config.json: n_q={cfg['n_q']} but target_bandwidths "
                             f"{cfg['target_bandwidths']} give {config.num_quantizers} quantizers")

    with torch.device("meta"):
        model = HiggsAudioV2TokenizerModel(config)
    _check_fits(f"{path}/model.pth", renamed, model.state_dict(), num_strides)
    model.load_state_dict(renamed, strict=True, assign=True)
    left_on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:
        raise CodecLoadError(f"{path}: no weights for {left_on_meta}")
    return model.eval()


def _boson_config(config) -> dict:
    acoustic = config.acoustic_model_config
    fixed = {"kernel_size": 3, "channel_ratios": [1, 1], "strides": [1, 1], "block_dilations": [1, 1],
             "unit_kernel_size": 3, "downsample_factor": 320}
    as_plain = lambda value: list(value) if isinstance(value, (list, tuple)) else value
    differ = [k for k, v in fixed.items() if as_plain(getattr(config, k)) != v]
    if differ or list(acoustic.downsampling_ratios) != list(acoustic.upsampling_ratios):
        raise ValueError(f"Boson's layout cannot express this tokenizer: {differ or 'decoder ratios'} differ from "
                         "Boson's fixed values")
    return {"D": acoustic.hidden_size, "target_bandwidths": list(config.target_bandwidths),
            "ratios": list(acoustic.downsampling_ratios), "sample_rate": config.sample_rate,
            "bins": config.codebook_size, "n_q": config.num_quantizers, "codebook_dim": config.codebook_dim,
            "semantic_techer": "hubert_base_general", "semantic_sample_rate": config.semantic_sample_rate,
            "merge_mode": "concat", "downsample_mode": "step_down", "vq_scale": 1}


def save_boson_tokenizer(model, path: str | Path, hubert_in_checkpoint: bool = True) -> Path:
    """Write `model` as Boson's folder: config.json, model.pth, and hubert_base/ (a transformers HuBERT folder:
    its config always, its weights too when they are not in model.pth)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    num_strides = len(model.config.acoustic_model_config.downsampling_ratios)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith(SEMANTIC_PREFIX) and not hubert_in_checkpoint:
            continue
        boson_key = rename_key(key, num_strides, to_boson=True)
        if boson_key is None:
            raise ValueError(f"{key}: no Boson name in NAME_MAP")
        base, _, leaf = boson_key.rpartition(".")
        value = value.detach().cpu().clone()
        if base.startswith(WEIGHT_NORMED) and leaf == "weight":
            state[f"{base}.weight_g"] = _norm_except_dim0(value)
            state[f"{base}.weight_v"] = value
        else:
            state[boson_key] = value
    (path / "config.json").write_text(json.dumps(_boson_config(model.config), indent=2) + "\n")
    torch.save(state, path / "model.pth")
    hubert_dir = path / HUBERT_SUBFOLDER
    if hubert_in_checkpoint:
        model.semantic_model.config.save_pretrained(hubert_dir)
    else:
        model.semantic_model.save_pretrained(hubert_dir)
    return path
