"""Raw recordings to manifests: segmentation with transcription (`segment`) and quality filters
(`filter`). Above `data/` (it writes the manifests `data/` reads) and beside `inference/` (it uses the
same local ASR and quality models as the scorer); never imports training code."""
