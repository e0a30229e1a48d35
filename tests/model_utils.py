"""Random batches that follow the model's batch contract, for model-level tests."""

import torch

from higgs_ds.models.higgs_v2.config import HiggsAudioConfig


def random_batch(cfg: HiggsAudioConfig, segments, seq_len: int, seed: int = 0, pad: dict | None = None):
    """segments: per row, a list of (start, length, kind) with kind "in" or "out".
    pad: {row: n} right-pads the last n positions of a row."""
    g = torch.Generator().manual_seed(seed)
    b = len(segments)
    k = cfg.audio_num_codebooks
    input_ids = torch.randint(0, cfg.audio_in_token_idx, (b, seq_len), generator=g)
    attention_mask = torch.ones(b, seq_len, dtype=torch.long)
    for row, n in (pad or {}).items():
        input_ids[row, seq_len - n:] = cfg.pad_token_id
        attention_mask[row, seq_len - n:] = 0
    for row, segs in enumerate(segments):
        for start, length, kind in segs:
            tok = cfg.audio_out_token_idx if kind == "out" else cfg.audio_in_token_idx
            input_ids[row, start:start + length] = tok
    is_audio = (input_ids == cfg.audio_in_token_idx) | (input_ids == cfg.audio_out_token_idx)
    n_out = int((input_ids == cfg.audio_out_token_idx).sum())
    audio_ids = torch.randint(0, cfg.codebook_rows, (int(is_audio.sum()), k), generator=g)
    labels = input_ids.masked_fill(is_audio | (attention_mask == 0), -100)
    audio_labels = torch.randint(0, cfg.audio_codebook_size, (n_out, k), generator=g)
    return dict(input_ids=input_ids, attention_mask=attention_mask, audio_ids=audio_ids,
                labels=labels, audio_labels=audio_labels)


def loss_sums(model, out, labels, audio_labels):
    """The model's fused head losses for an output computed without labels."""
    from higgs_ds.models.loss import head_losses

    heads = model.audio_decoder_proj
    return head_losses(out.hidden_states, out.audio_out_mask, labels, audio_labels, heads.text_lm_head,
                       heads.audio_lm_head)


def mean_tail_audio_loss(model, step_parts, steps=120, seed=0, tail=20):
    """AdamW on `step_parts(model, generator)` (a step's combined loss parts) for `steps` steps; the mean
    audio loss of the last `tail` steps. The label-leak guard's training loop, for every architecture."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        parts = step_parts(model, g)
        opt.zero_grad()
        parts.loss.backward()
        opt.step()
        if step >= steps - tail:
            losses.append(parts.audio.item())
    return sum(losses) / len(losses)
