"""Sequence log-probabilities of audio samples, over the decoder's free cells only.

A sample's log-probability is the sum of the log-softmax at the chosen code over its free cells: the
(target row, codebook) pairs the decoder sampled. Cells the delay pattern or the family's stopping rule
forces (BOC in the first rows, what follows the stop) carry no choice and are left out; which cells those
are comes from the family's decoding state (`ModelFamily.decoding_state`, its `free_cells`), never from a
family's name. The batch is an ordinary training batch whose audio labels are -100 on forced cells, and the
targets go through the loss's own next-token shift (`higgs_ds.models.loss.shifted_targets`): position t
predicts the row at t+1, so the label-leak guard of the cross-entropy covers these objectives too.

- `restrict_to_free`: a rendered training batch (a stored sample, e.g. DPO's chosen / rejected) -> the same
  batch with forced cells unlabelled, by replaying its rows through the decoding state;
- `scoring_batch`: generation prompts + generated segments (GRPO) -> a batch, labelled on the cells the
  decoder recorded as sampled;
- `cell_logprobs`: one forward -> per-cell log-probabilities and mask, and per-sample sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from higgs_ds.constants import IGNORE_INDEX
from higgs_ds.models import ModelFamily
from higgs_ds.models import loss as loss_mod


@dataclass
class CellLogprobs:
    """Per audio-head row of a batch (row-major: sample, then position)."""

    logp: torch.Tensor  # [N, K] log pi(code) at free cells, 0 elsewhere (differentiable)
    mask: torch.Tensor  # [N, K] bool: the free cells of the targets
    sample: torch.Tensor  # [N] the batch row each head row belongs to
    batch_size: int

    def per_sample(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """[B] sums over each sample's free cells of `values` [N, K] (default: the log-probs)."""
        values = self.logp if values is None else values * self.mask
        return values.new_zeros(self.batch_size).index_add(0, self.sample, values.sum(-1))

    def counts(self) -> torch.Tensor:
        """[B] free cells per sample."""
        return self.per_sample(self.mask.float())


def head_rows(input_ids: torch.Tensor, model_cfg) -> torch.Tensor:
    """[B, S] bool: the positions the audio head reads (the config's `audio_head_token_ids`)."""
    return torch.isin(input_ids, torch.as_tensor(model_cfg.audio_head_token_ids, device=input_ids.device))


def cell_logprobs(model, batch: dict, temperature: float = 1.0) -> CellLogprobs:
    """One forward of `model` (a module or a DeepSpeed engine's module) on `batch` (the collator's contract);
    log-softmax of the audio logits / temperature at the shifted targets. Labelled cells are the scored ones."""
    out = model(batch["input_ids"], batch["audio_ids"], batch["attention_mask"])
    _, targets = loss_mod.shifted_targets(batch["labels"], batch["audio_labels"], out.audio_out_mask)
    logits = model.audio_logits(out.hidden_states[out.audio_out_mask]).float()
    if temperature != 1.0:
        logits = logits / temperature
    mask = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    sample = out.audio_out_mask.nonzero()[:, 0]
    return CellLogprobs(logp * mask, mask, sample, batch["input_ids"].shape[0])


def _replay(family: ModelFamily, model_cfg, rows: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per sample, label rows [R, K] (row 0: the position that predicts the first row) through the family's
    decoding state, as if sampled: bool [R, K], the cells the decoder would have sampled."""
    k = model_cfg.audio_num_codebooks
    longest = max(r.shape[0] for r in rows)
    padded = torch.full((len(rows), longest, k), IGNORE_INDEX, dtype=torch.long)
    for i, r in enumerate(rows):
        padded[i, : r.shape[0]] = r
    state = family.decoding_state(len(rows), k, model_cfg.audio_stream_bos_id, model_cfg.audio_stream_eos_id, "cpu")
    for j in range(1, longest):
        state.append(padded[:, j])
    free = torch.stack(state.free, dim=1)  # [B, longest, K]
    return [free[i, : r.shape[0]] for i, r in enumerate(rows)]


def restrict_to_free(batch: dict, family: ModelFamily, model_cfg) -> dict:
    """A collated batch whose samples each end with one target segment -> the same batch with its audio
    labels kept on free cells only. Labels of a stored sample already skip most forced cells; the decoding
    state is the authority, so what it forces is unlabelled here whatever the renderer wrote."""
    per_sample = head_rows(batch["input_ids"], model_cfg).sum(1).tolist()
    labels = batch["audio_labels"].cpu()
    rows = list(labels.split(per_sample))
    free = torch.cat(_replay(family, model_cfg, rows)) if rows else torch.zeros_like(labels, dtype=torch.bool)
    kept = torch.where(free, labels, torch.full_like(labels, IGNORE_INDEX))
    return {**batch, "audio_labels": kept.to(batch["audio_labels"].device)}


def scoring_batch(prompt_ids: list[list[int]], prompt_audio: list[torch.Tensor], segments: list[torch.Tensor],
                  free: list[torch.Tensor], model_cfg, pad_id: int) -> dict:
    """Generation prompts (ids ending with the position that predicts the first row; their audio rows) and
    generated segments [K, L] with their free cells [K, L] (column 0: the prompt's) -> a right-padded batch
    that feeds columns 1..L-1 as audio-out rows, labelled where the decoder sampled."""
    k = model_cfg.audio_num_codebooks
    width = max(len(p) + s.shape[1] - 1 for p, s in zip(prompt_ids, segments, strict=True))
    b = len(prompt_ids)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((b, width), dtype=torch.long)
    audio_ids, audio_labels = [torch.empty((0, k), dtype=torch.long)], [torch.empty((0, k), dtype=torch.long)]
    heads = set(model_cfg.audio_head_token_ids)
    for i, (ids, audio, seg, cells) in enumerate(zip(prompt_ids, prompt_audio, segments, free, strict=True)):
        cols = seg[:, 1:].T.long().cpu()
        row = list(ids) + [model_cfg.audio_out_token_idx] * cols.shape[0]
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        audio_ids += [audio.long().cpu(), cols]
        prompt_heads = sum(t in heads for t in ids)
        audio_labels += [torch.full((prompt_heads, k), IGNORE_INDEX, dtype=torch.long),
                         torch.where(cells[:, 1:].T.cpu(), cols, torch.full_like(cols, IGNORE_INDEX))]
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": torch.full_like(input_ids, IGNORE_INDEX), "audio_ids": torch.cat(audio_ids),
            "audio_labels": torch.cat(audio_labels)}
