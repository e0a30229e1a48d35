"""A local web playground for one model of any family: type a sentence, pick a voice and a checkpoint,
listen, compare two checkpoints, and find every generation again on disk (`launch/playground.py`).

- `session`: `Playground`, the logic (checkpoints, voices, generation with a time and a frame limit, scores,
  saving), usable and tested without a browser;
- `inputs`: the checks of what a page sends (text gate and normalisation, uploads, sampling settings);
- `store`: the saved generations (settings JSON beside each wav, the newest 200 kept);
- `ui`: the gradio page, thin, imported only when the page is served (gradio is the `playground` extra).
"""

from higgs_ds.playground.inputs import Sampling
from higgs_ds.playground.session import SPEAKER, UPLOAD, ZERO_SHOT, Generation, Playground, PlaygroundConfig, Request

__all__ = ["SPEAKER", "UPLOAD", "ZERO_SHOT", "Generation", "Playground", "PlaygroundConfig", "Request", "Sampling"]
