"""Preference optimisation after supervised training (docs/preference.md): `objective=dpo` on pair shards,
`objective=grpo` online with rewards. Log-probabilities over the decoder's free cells (`logprobs`), the
reference policy (`reference`), the DPO loss (`dpo`) and the GRPO step (`grpo`)."""
