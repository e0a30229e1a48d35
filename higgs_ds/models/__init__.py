"""Model families behind one contract (`ModelFamily`), and what they share.

    higgs_ds/models/
      family.py          the contract: one ModelFamily object per family
      registry.py        name / config / checkpoint folder -> family (the only dispatch)
      pretrained.py      load any family's checkpoint folder
      loss.py            next-token-shifted text and per-codebook audio losses (sums + counts)
      base_model.py      the forward contract, the output type, initialisation, the causal mask
      heads.py           heads with a fused loss
      delay_decoding.py  the delay-pattern state of generation (a family's stopping rule overrides it)
      higgs_v2/          Higgs Audio v2: DualFFN on Llama, separate text and audio heads
      higgs_tts3/        Higgs TTS 3: Qwen3 with one tied audio table, no text loss

Adding a family: a folder with a `FAMILY = ModelFamily(...)` (see `family.py`), registered with
`register_family(FAMILY)` or named by its import path in `model.arch` (`package.module:FAMILY`).
"""

from higgs_ds.models.family import AudioModelConfig, FreshModelShape, ModelFamily
from higgs_ds.models.registry import (
    DEFAULT_FAMILY,
    FAMILY_KEY,
    family_for_config,
    family_of,
    family_of_config_dict,
    get_family,
    register_family,
    registered_families,
)

__all__ = ["DEFAULT_FAMILY", "FAMILY_KEY", "AudioModelConfig", "FreshModelShape", "ModelFamily", "family_for_config",
           "family_of", "family_of_config_dict", "get_family", "register_family", "registered_families"]
