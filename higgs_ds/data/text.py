"""Arabic text normalisation.

Text is kept in logical order (the order it is typed and stored in UTF-8); right-to-left display is
the terminal's job, so logs print the normalised string as is and never reverse it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

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
    if cfg.unify_punctuation:
        text = text.translate(_PUNCTUATION)
    text = " ".join(text.split())
    if cfg.unify_punctuation:
        text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return text
