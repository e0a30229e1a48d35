"""Arabic numbers, times, percentages and symbols read out as words, for speech.

A TTS model reads what the transcript says: "في 2024 ارتفع 5%" must reach it as words, or it learns
to mumble digits. Cardinals come from `num2words` (its `ar` language); its known mistakes are fixed
here, and each one is pinned by a test (tests/data/test_numbers.py):

- a round dual alone comes out in construct form ("مئتا" for 200, "ألفا" for 2000, "مليونا");
- a thousands/millions count of 11-99 keeps the genitive noun ("خمسة عشر ألف", not "ألفًا");
- the conjunction is written apart ("واحد و عشرون");
- a lone feminine one or eight is its construct form ("إحدى", "ثمان").

Forms are nominative (no case inflection from context). Gender follows the counted noun when the
word after the number is a feminine singular (ending in ة) or a common feminine plural; otherwise
numbers are masculine. Anything the rules do not cover (dates, digits glued to Latin letters, numbers
in an expression they do not read, such as `10^30`, `3×10` or `1/2`, numbers of more than 15 digits) is
left exactly as written and counted, never half-read.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from num2words.lang_AR import Num2Word_AR

# Eastern Arabic and Persian digits, Arabic decimal and thousands separators -> ASCII.
_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹٫٬", "01234567890123456789.,")
_MAX_DIGITS = 15
_CONSTRUCT_DUALS = {"مئتا": "مئتان", "ألفا": "ألفان", "مليونا": "مليونان", "مليارا": "ملياران"}
# (singular, dual, plural, accusative singular) for each scale; num2words gets each 0-999 group.
_SCALES = [
    (10**12, ("تريليون", "تريليونان", "تريليونات", "تريليونًا")),
    (10**9, ("مليار", "ملياران", "مليارات", "مليارًا")),
    (10**6, ("مليون", "مليونان", "ملايين", "مليونًا")),
    (10**3, ("ألف", "ألفان", "آلاف", "ألفًا")),
]
_LONE_FEMININE = {"إحدى": "واحدة", "ثمان": "ثماني"}
FEMININE_PLURALS = frozenset(["ساعات", "دقائق", "ثوان", "سنوات", "مرات", "سيارات", "كلمات", "صفحات",
                              "طالبات", "درجات", "نقاط", "دول", "مدن", "لغات"])


@dataclass(frozen=True)
class CountedNoun:
    """A unit read after a number: singular, dual, plural (3-10) and accusative singular (11-99)."""

    singular: str
    dual: str
    plural: str
    accusative: str
    feminine: bool = False
    one: str = "واحد"


_PERCENT = "بالمئة"
_UNITS = {
    "$": CountedNoun("دولار", "دولاران", "دولارات", "دولارًا"),
    "€": CountedNoun("يورو", "يورو", "يورو", "يورو"),
    "£": CountedNoun("جنيه", "جنيهان", "جنيهات", "جنيهًا"),
    "°C": CountedNoun("درجة مئوية", "درجتان مئويتان", "درجات مئوية", "درجة مئوية", feminine=True, one="واحدة"),
    "°": CountedNoun("درجة", "درجتان", "درجات", "درجة", feminine=True, one="واحدة"),
}
_MINUTE = CountedNoun("دقيقة", "دقيقتان", "دقائق", "دقيقة", feminine=True, one="واحدة")
# Hours read as the feminine ordinal of الساعة ("الساعة العاشرة"), on a 12-hour dial.
_HOURS = ["الثانية عشرة", "الواحدة", "الثانية", "الثالثة", "الرابعة", "الخامسة", "السادسة", "السابعة",
          "الثامنة", "التاسعة", "العاشرة", "الحادية عشرة"]

_LATIN = re.compile(r"[A-Za-z]+")
_UNIT_PATTERN = r"°C|°|%|٪|\$|€|£"
# Numbers joined by an operator the rules do not read (a power, product, quotient, comparison; a "+" with
# spaces around it is read as "زائد", a glued one is not): the whole expression is left alone.
_OPERAND = r"[-−+]?\d+(?:[.,]\d+)*"
_OPERATOR = r"(?:\s*[\^×*/÷=<>≤≥±]\s*|\+)"
_TOKEN = re.compile(
    r"(?P<date>(?<!\d)\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}(?!\d))"
    r"|(?P<glued>[A-Za-z]+[-_]?\d+[A-Za-z\d]*|\d+[A-Za-z][A-Za-z\d]*)"
    r"|(?P<expression>(?<![\d.,])" + _OPERAND + "(?:" + _OPERATOR + _OPERAND + r")+)"
    r"|(?P<time>(?<![\d:])(?P<hour>[01]?\d|2[0-3]):(?P<minute>[0-5]\d)(?![\d:]))"
    r"|(?P<range>(?<![\d.,])(?P<low>\d+)\s?[-–]\s?(?P<high>\d+)(?![\d.,]))"
    r"|(?P<number>(?P<definite>(?<![\u0621-\u064a])و?(?:الـ\s?|ال(?=\d)))?(?:(?P<pre>[$€£%٪])\s?)?"
    r"(?P<sign>(?<![\w\d])[-−+])?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
    r"(?:\s?(?P<post>" + _UNIT_PATTERN + r"))?(?P<era>\s?(?:م|هـ)(?!\w))?)"
    r"|(?P<plus>(?<=\s)\+(?=\s))"
)


@dataclass
class NumberStats:
    """What the normaliser read, and what it left alone and why (kept for the data report)."""

    read: Counter = field(default_factory=Counter)  # kind -> count (number, time, percent, unit, ...)
    left: Counter = field(default_factory=Counter)  # reason -> count (date, glued, expression, too_long)
    latin_tokens: int = 0

    def as_dict(self) -> dict:
        return {"read": dict(self.read), "left": dict(self.left), "latin_tokens": self.latin_tokens}


_converter = Num2Word_AR()


def _under_thousand(n: int, feminine: bool) -> str:
    if feminine:
        _converter.to_cardinal(0)  # resets the converter's unit state
        _converter.isCurrencyNameFeminine = True
        words = _converter.convert(value=n).strip()
    else:
        words = _converter.to_cardinal(n)
    words = " ".join(_CONSTRUCT_DUALS.get(w, w) for w in words.split())
    return words


def _scaled(count: int, forms: tuple[str, str, str, str]) -> str:
    singular, dual, plural, accusative = forms
    if count == 1:
        return singular
    if count == 2:
        return dual
    tail = count % 100
    noun = plural if 3 <= tail <= 10 else accusative if tail >= 11 else singular
    return f"{cardinal(count)} {noun}"


def _join(parts: list[str]) -> str:
    return " و".join(parts)


def cardinal(n: int, feminine: bool = False) -> str:
    """`n` in words, nominative; `feminine` for a feminine counted noun."""
    if n < 0:
        return "سالب " + cardinal(-n, feminine)
    if n == 0:
        return "صفر"
    parts = []
    for scale, forms in _SCALES:
        if n >= scale:
            parts.append(_scaled(n // scale, forms))
            n %= scale
    if n:
        parts.append(_under_thousand(n, feminine))
    words = _join([" و".join(p.split(" و ")) for p in parts])
    return _LONE_FEMININE.get(words, words)


def _definite(words: str) -> str:
    return " ".join(w if w.startswith(("ال", "وال")) else ("وال" + w[1:] if w.startswith("و") else "ال" + w)
                    for w in words.split())


def _counted(n: int, noun: CountedNoun) -> str:
    if n == 1:
        return f"{noun.singular} {noun.one}"
    if n == 2:
        return noun.dual
    tail = n % 100
    form = noun.plural if 3 <= tail <= 10 else noun.accusative if tail >= 11 else noun.singular
    return f"{cardinal(n, noun.feminine)} {form}"


def _digits_one_by_one(digits: str) -> str:
    return " ".join(cardinal(int(d)) for d in digits)


def _fraction(frac: str) -> str:
    return _digits_one_by_one(frac) if frac.startswith("0") or len(frac) > 3 else cardinal(int(frac))


def _next_word(text: str, end: int) -> str:
    match = re.match(r"\s*([\u0621-\u064a]+)", text[end:])
    return match.group(1) if match else ""


def _is_feminine_noun(word: str) -> bool:
    return word.endswith("ة") or word in FEMININE_PLURALS


def _read_number(match: re.Match, text: str, stats: NumberStats) -> str:
    int_part = match["int"].replace(",", "")
    unit_symbol = match["post"] or match["pre"]
    sign = {"-": "سالب ", "−": "سالب ", "+": "زائد "}.get(match["sign"] or "", "")
    value = int(int_part)
    if len(int_part) > 1 and int_part.startswith("0") and not match["frac"]:
        stats.read["digit_string"] += 1  # phone numbers, codes: read digit by digit
        return sign + _digits_one_by_one(int_part)
    feminine = not unit_symbol and not match["era"] and _is_feminine_noun(_next_word(text, match.end()))
    if match["frac"]:
        words = f"{cardinal(value)} فاصل {_fraction(match['frac'])}"
    elif unit_symbol in _UNITS:
        words = None
    else:
        words = cardinal(value, feminine)
    if match["definite"]:
        words = ("و" if match["definite"].startswith("و") else "") + _definite(words or cardinal(value))
        stats.read["definite"] += 1
    if unit_symbol in ("%", "٪"):
        stats.read["percent"] += 1
        words = f"{words} {_PERCENT}"
    elif unit_symbol in _UNITS:
        stats.read["unit"] += 1
        noun = _UNITS[unit_symbol]
        words = f"{words} {noun.singular}" if words else _counted(value, noun)
    elif match["era"]:
        stats.read["year"] += 1
        words += " ميلادي" if "م" in match["era"] else " هجري"
    else:
        stats.read["number"] += 1
    return sign + words


def _read_time(match: re.Match, text: str, stats: NumberStats) -> str:
    stats.read["time"] += 1
    hour, minute = int(match["hour"]), int(match["minute"])
    already_said = text[:match.start()].rstrip().endswith("الساعة")
    said = _HOURS[hour % 12] if already_said else f"الساعة {_HOURS[hour % 12]}"
    if minute == 0:
        return said
    if minute == 15:
        return said + " والربع"
    if minute == 30:
        return said + " والنصف"
    return f"{said} و{_counted(minute, _MINUTE)}"


def _left_alone(match: re.Match) -> str | None:
    """Why the rules do not read `match` (the count's key), or None when they do."""
    for reason, group in (("date", "date"), ("glued_to_latin", "glued"), ("expression", "expression")):
        if match[group]:
            return reason
    return "too_long" if match["int"] and len(match["int"].replace(",", "")) > _MAX_DIGITS else None


def spell_numbers(text: str, stats: NumberStats | None = None) -> str:
    """Numbers, times, percentages, currency and temperatures in `text` read out as Arabic words."""
    stats = stats if stats is not None else NumberStats()
    written, text = text, text.translate(_DIGITS)  # one character for one: spans match in both

    def replace(match: re.Match) -> str:
        left = _left_alone(match)
        if left:
            stats.left[left] += 1
            return written[match.start():match.end()]  # as written, Eastern digits included
        if match["time"]:
            return _read_time(match, text, stats)
        if match["range"]:
            stats.read["range"] += 1
            return f"{cardinal(int(match['low']))} إلى {cardinal(int(match['high']))}"
        if match["plus"]:
            stats.read["symbol"] += 1
            return "زائد"
        return _read_number(match, text, stats)

    spoken = _TOKEN.sub(replace, text)
    stats.latin_tokens += len(_LATIN.findall(spoken))
    return " ".join(spoken.split())
