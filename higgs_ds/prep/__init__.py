"""Raw recordings to manifests: segmentation with transcription (`segment`) and quality filters
(`filter`). Above `data/` (it writes the manifests `data/` reads) and `quality/` (its local ASR and
quality models, the scorer's); never imports training code."""
