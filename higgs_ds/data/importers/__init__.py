"""Corpus importers: Hugging Face datasets, LJSpeech, Common Voice, Kaldi folders and lhotse manifests -> our
JSONL manifest.

    summary = import_corpus(ImportConfig(fmt="ljspeech", src="corpora/arabic-lj", out="data/manifests",
                                         eval_fraction=0.05, ref_pairing="same-speaker"))

Writes ``train.jsonl``, ``eval.jsonl``, ``rejects.jsonl`` and ``import_summary.json`` under ``out``: a new
folder or an earlier import's, outside the corpus (``higgs_ds.output_guard``).
Each format is one reader (``read_<fmt>(cfg)`` yields a row or a rejected row per input row); the checks,
split, reference pairing and output are shared (:mod:`higgs_ds.data.importers.common`).
"""

from __future__ import annotations

from pathlib import Path

from higgs_ds.data.importers.common import FORMAT_OPTIONS, IMPORT_OUTPUT, ImportConfig, check_rows, write_outputs
from higgs_ds.data.importers.commonvoice import read_commonvoice
from higgs_ds.data.importers.hf import read_hf
from higgs_ds.data.importers.kaldi import read_kaldi
from higgs_ds.data.importers.lhotse_manifests import read_lhotse
from higgs_ds.data.importers.ljspeech import read_ljspeech

READERS = {"hf": read_hf, "ljspeech": read_ljspeech, "commonvoice": read_commonvoice, "kaldi": read_kaldi,
           "lhotse": read_lhotse}
assert set(READERS) == set(FORMAT_OPTIONS)

__all__ = ["FORMAT_OPTIONS", "ImportConfig", "READERS", "import_corpus"]


def import_corpus(cfg: ImportConfig) -> dict:
    """Import one corpus; returns the printed summary (rows read, written per split, rejected by kind)."""
    IMPORT_OUTPUT.check(cfg.out, inputs=(cfg.src,))  # before the reader opens anything
    result = check_rows(READERS[cfg.fmt](cfg), Path(cfg.out), cfg.progress)
    return write_outputs(result, cfg)
