"""Arabic text normalisation.

Text is kept in logical order (the order it is typed and stored in UTF-8); right-to-left display is
the terminal's job, so logs print the normalised string as is and never reverse it.
"""

from __future__ import annotations

import functools
import importlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal, get_args

NumberReading = Literal["keep", "words"]

# Harakat (fathatan..sukun), superscript alef and the Quranic annotation marks.
_TASHKEEL = re.compile("[\u064b-\u065f\u0670\u06d6-\u06ed]")
_TATWEEL = "\u0640"
# Arabic/Latin punctuation that should read the same whatever keyboard typed it.
_PUNCTUATION = str.maketrans({"\u060c": "،", ",": "،", "\u061f": "؟", "?": "؟", "\u061b": "؛", ";": "؛",
                              "\u201c": '"', "\u201d": '"', "\u00ab": '"', "\u00bb": '"'})
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([،؟؛.!:])")


@dataclass(frozen=True)
class ArabicTextConfig:
    """How transcripts are normalised before tokenisation."""

    keep_diacritics: bool = True  # tashkeel carries pronunciation; drop it only for undiacritised models
    unify_punctuation: bool = True  # Latin ',' '?' ';' become their Arabic forms, quotes become '"'
    # "words": numbers, times, percentages and units read out (`data/numbers.py`); a TTS model cannot
    # learn to read digits it never hears spelled out
    numbers: NumberReading = "keep"
    # "package.module:function" taking and returning a string: a local diacritiser (e.g. mishkal's),
    # applied after the numbers are read out. Off by default: see docs/data.md for the trade-off.
    diacritizer: str | None = None

    def __post_init__(self) -> None:
        if self.numbers not in get_args(NumberReading):
            raise ValueError(f"prompt.text.numbers: {self.numbers!r} is not one of {get_args(NumberReading)}")
        if self.diacritizer is not None:
            load_diacritizer(self.diacritizer)


@functools.lru_cache(maxsize=4)
def load_diacritizer(spec: str):
    module_name, _, function = spec.partition(":")
    try:
        hook = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"prompt.text.diacritizer: cannot load {spec!r} ({exc}); give 'package.module:function' "
                         "of an installed package") from None
    if not callable(hook):
        raise ValueError(f"prompt.text.diacritizer: {spec!r} is not callable")
    return hook


def _is_control(char: str) -> bool:
    # Cc = C0/C1 controls, Cf = format chars (bidi marks, ZWJ/ZWNJ, BOM) that only affect display.
    return unicodedata.category(char) in ("Cc", "Cf")


def normalize_arabic(text: str, cfg: ArabicTextConfig = ArabicTextConfig()) -> str:
    """NFC, drop tatweel and control/format characters, optionally drop tashkeel, unify punctuation
    and collapse whitespace. The result is logical-order UTF-8."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if ch in "\t\n\r\v\f" else ch for ch in text)  # line breaks are whitespace
    text = "".join(ch for ch in text if ch != _TATWEEL and not _is_control(ch))
    if not cfg.keep_diacritics:
        text = _TASHKEEL.sub("", text)
    if cfg.numbers == "words":
        from higgs_ds.data.numbers import spell_numbers  # num2words is only needed when asked for

        text = spell_numbers(text)
    if cfg.diacritizer:
        text = load_diacritizer(cfg.diacritizer)(text)
    if cfg.unify_punctuation:
        text = text.translate(_PUNCTUATION)
    text = " ".join(text.split())
    if cfg.unify_punctuation:
        text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return text


# ---- the text gate: what every entry point (import, build, generate, ...) accepts as something to say -----

EMPTY = "is empty once normalised"
NO_WORDS = "has no letter or digit once normalised"  # diacritics, punctuation or emoji alone: nothing to speak


def unspeakable(text: str | None) -> str | None:
    """Why `text` is nothing to say (`EMPTY` or `NO_WORDS`), or None when it passes the gate: at least one
    letter or digit after the data path's normalisation (the default `ArabicTextConfig`), before numbers are
    read out. Tatweel and zero-width characters alone normalise to nothing; diacritics, punctuation or
    emoji alone have no letter to read."""
    normalised = normalize_arabic(text or "")
    if not normalised:
        return EMPTY
    return None if any(unicodedata.category(ch)[0] in "LN" for ch in normalised) else NO_WORDS


# Evaluation spelling: the forms ASR systems and human transcribers use interchangeably are merged
# before CER/WER, as published Arabic TTS evaluations do.
_ALEF_FORMS = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ة": "ه", "ى": "ي"})
_EASTERN_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")
_NOT_WORD = re.compile(r"[^\w\s]|_", flags=re.UNICODE)


def normalize_for_eval(text: str) -> str:
    """Diacritics and punctuation stripped, alef/hamza forms unified, ta marbuta -> ha, alef maqsura
    -> ya, Eastern digits -> Western: the text CER/WER compare."""
    text = normalize_arabic(text, ArabicTextConfig(keep_diacritics=False, unify_punctuation=False))
    text = text.translate(_ALEF_FORMS).translate(_EASTERN_DIGITS)
    return " ".join(_NOT_WORD.sub(" ", text).split())
