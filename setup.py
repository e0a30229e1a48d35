from setuptools import find_packages, setup

setup(
    name="higgs-ds",
    version="0.1.0",
    description="DeepSpeed ZeRO-3 training stack for Higgs audio-text models (Higgs Audio v2, Higgs TTS 3)",
    python_requires=">=3.10",
    # kernels/ ships as higgs_ds.kernels: a top-level `kernels` module would shadow HF's `kernels`.
    packages=find_packages(include=["higgs_ds", "higgs_ds.*"]) + ["higgs_ds.kernels"],
    package_dir={"higgs_ds": "higgs_ds", "higgs_ds.kernels": "kernels"},
    package_data={"higgs_ds.data": ["demo/*.txt", "demo/codec/*"]},
    install_requires=[
        "torch>=2.4", "transformers>=5.0", "deepspeed>=0.16", "safetensors", "tokenizers",
        "webdataset>=1.0", "pyyaml", "rich", "tqdm", "numpy", "soundfile", "peft",
        "num2words",
    ],
    extras_require={
        "audio": ["torchaudio", "descript-audio-codec"],
        "lhotse": ["lhotse"],  # prepare_data import --from lhotse
        # prepare_data segment --diarizer pyannote:FOLDER (not installed by make setup)
        "pyannote": ["pyannote.audio==4.0.7"],
        "prep": ["silero-vad", "torchaudio", "pyloudnorm", "speechmos", "onnxruntime"],
        "playground": ["gradio>=6.31,<7", "matplotlib"],  # launch/playground.py
        "dev": ["pytest", "pytest-benchmark", "ruff", "liger-kernel", "matplotlib", "wandb", "selenium"],
    },
)
