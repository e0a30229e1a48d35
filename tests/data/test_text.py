from higgs_ds.data.text import ArabicTextConfig, normalize_arabic


def test_keeps_diacritics_by_default_and_can_strip_them():
    text = "وَمِنْ ثُمَّ قَالُوا"
    assert normalize_arabic(text) == text
    assert normalize_arabic(text, ArabicTextConfig(keep_diacritics=False)) == "ومن ثم قالوا"


def test_strips_tatweel_controls_and_unifies_whitespace_and_punctuation():
    raw = "\u200fجميـــل  جدا ,\tأليس كذلك ?\u200b\n"
    assert normalize_arabic(raw) == "جميل جدا، أليس كذلك؟"
    assert normalize_arabic(raw, ArabicTextConfig(unify_punctuation=False)) == "جميل جدا , أليس كذلك ?"


def test_logical_order_and_nfc():
    # Decomposed alef + hamza above becomes the precomposed letter; order is never reversed.
    assert normalize_arabic("\u0627\u0654") == "\u0623"
    assert normalize_arabic("مرحبا abc") == "مرحبا abc"
