"""higgs-ds: a DeepSpeed ZeRO-3 training stack for Higgs audio-text models (Higgs Audio v2 DualFFN, Higgs TTS 3,
or a model family of your own: `higgs_ds.models`)."""

__version__ = "0.1.0"
