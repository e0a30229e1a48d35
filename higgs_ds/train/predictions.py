"""Prediction logging with the next-token shift: what the model predicts next to its targets.

For the first valid positions of one micro-batch: detokenized text predictions vs targets,
masked vs unmasked counts, codebook-0 audio predictions vs targets with mismatches marked, and
per-codebook accuracy. Every rank runs the head forwards (ZeRO-3 needs the same module calls);
rank 0 writes the report.
"""

from __future__ import annotations

import torch

from higgs_ds.constants import IGNORE_INDEX
from higgs_ds.models.loss import shifted_targets


@torch.no_grad()
def prediction_report(model, out, batch, tokenizer, n_text: int = 10, n_audio: int = 16) -> dict:
    text_t, audio_t = shifted_targets(batch["labels"], batch["audio_labels"], out.audio_out_mask)
    rows = text_t != IGNORE_INDEX
    h = out.hidden_states
    text_pred = model.text_logits(h[rows][:n_text]).argmax(-1).tolist()
    text_tgt = text_t[rows][:n_text].tolist()

    audio_logits = model.audio_logits(h[out.audio_out_mask])
    audio_pred = audio_logits.argmax(-1)
    valid = audio_t != IGNORE_INDEX
    per_cb = ((audio_pred == audio_t) & valid).sum(0).float() / valid.sum(0).clamp(min=1)
    cb0 = valid[:, 0]
    cb0_pred, cb0_tgt = audio_pred[cb0, 0][:n_audio].tolist(), audio_t[cb0, 0][:n_audio].tolist()

    def detok(ids):
        return tokenizer.decode(ids, skip_special_tokens=False)

    first = batch["attention_mask"][0].bool() & ~out.audio_mask[0]
    return {
        "prompt": tokenizer.decode(batch["input_ids"][0][first].tolist(), skip_special_tokens=True),
        "text_pred": detok(text_pred),
        "text_target": detok(text_tgt),
        "text_tokens": [[detok([p]), detok([t])] for p, t in zip(text_pred, text_tgt, strict=True)],
        "text_masked": int((~rows & batch["attention_mask"].bool()).sum()),
        "text_unmasked": int(rows.sum()),
        "audio_cb0_pred": cb0_pred,
        "audio_cb0_target": cb0_tgt,
        "audio_cb0_diff": ["." if p == t else "x" for p, t in zip(cb0_pred, cb0_tgt, strict=True)],
        "audio_acc_per_codebook": [round(x, 4) for x in per_cb.tolist()],
        "audio_masked": int((~valid).sum()),
        "audio_unmasked": int(valid.sum()),
    }


def format_report(step: int, r: dict) -> str:
    pairs = " | ".join(f"{p!r}->{t!r}" if p != t else f"{p!r}" for p, t in r["text_tokens"])
    return "\n".join([
        f"── predictions @ step {step} (position t predicts t+1) ──",
        f"  sample text    : {' '.join(r['prompt'].split())}",
        f"  text  predicted: {r['text_pred']}",
        f"  text  target   : {r['text_target']}",
        f"  text  tokens   : {pairs}",
        f"  text  labels   : {r['text_unmasked']} trained, {r['text_masked']} masked (-100)",
        f"  audio cb0 pred : {r['audio_cb0_pred']}",
        f"  audio cb0 tgt  : {r['audio_cb0_target']}",
        f"  audio cb0 diff : {''.join(r['audio_cb0_diff'])}   (x = mismatch)",
        f"  audio labels   : {r['audio_unmasked']} trained, {r['audio_masked']} masked",
        f"  audio acc/cb   : {r['audio_acc_per_codebook']}",
    ])
