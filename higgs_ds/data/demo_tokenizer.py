"""A small byte-level BPE tokenizer for the demo, trained with HF ``tokenizers`` on the demo corpus.

It carries the special tokens of the default model family (the demo recipe's), so the whole pipeline runs without
a downloaded checkpoint. Real runs pass their checkpoint's tokenizer instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from higgs_ds.data.schema import DEFAULT_SYSTEM_PROMPT
from higgs_ds.models import DEFAULT_FAMILY, get_family

# Prompt-template text, so headers and the system prompt get compact tokens too.
_TEMPLATE_TEXT = [DEFAULT_SYSTEM_PROMPT, "system", "user", "assistant", "\n\n",
                  "Audio is recorded from a quiet room.", "SPEAKER0: "]


def train_demo_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 3000) -> PreTrainedTokenizerFast:
    """Train, save to ``out_dir`` (loadable with ``AutoTokenizer.from_pretrained``) and return it.
    Idempotent: an existing ``tokenizer.json`` in ``out_dir`` is loaded instead."""
    out_dir = Path(out_dir)
    if (out_dir / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(out_dir))
    tok = Tokenizer(models.BPE())
    # Byte-level: any UTF-8 text (Arabic with tashkeel, Latin, digits) encodes without <unk>.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=list(get_family(DEFAULT_FAMILY).special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts) + _TEMPLATE_TEXT * 8, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                   eos_token="<|end_of_text|>", pad_token="<|end_of_text|>")
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast
