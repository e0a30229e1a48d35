"""higgs-ds: a DeepSpeed ZeRO-3 training stack for Higgs Audio v2 DualFFN audio-text models."""

__version__ = "0.1.0"
