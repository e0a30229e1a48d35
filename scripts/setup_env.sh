#!/usr/bin/env bash
# One setup path for a fresh machine: system packages, a virtualenv, and the pinned Python stack.
# Idempotent: re-running it only installs what is missing. Used by `make demo` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

need_apt=()
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
command -v sox >/dev/null || need_apt+=(sox)
command -v ninja >/dev/null || need_apt+=(ninja-build)   # DeepSpeed JIT-compiles its CPU shm op
# the playground's browser test drives Debian's chromium through its own chromedriver (never a download)
command -v chromium >/dev/null || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "[setup] apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp="$VENV/.higgs_ds_setup_$(cat requirements.txt scripts/setup_env.sh setup.py | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install() {  # the machine's pip config lists local indexes that may not exist: hide that noise
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
}
PIP=pip_install
echo "[setup] installing the Python stack into $VENV (first time: ~3-5 min)"
$PIP -U pip wheel setuptools
$PIP -r requirements.txt
# descript-audiotools pins protobuf<3.20, which breaks wandb; install both Descript packages without
# their declared deps (their real runtime imports are in requirements.txt). `pip check` then reports
# exactly one stale pin: "descript-audiotools 0.7.2 has requirement protobuf<3.20,>=3.9.2".
$PIP --no-deps descript-audiotools==0.7.2 descript-audio-codec==1.0.0
# resemblyzer declares `webrtcvad`, which imports pkg_resources and fails on Python 3.11 with current
# setuptools; `webrtcvad-wheels` (requirements.txt) provides the same module, so resemblyzer goes in without deps.
$PIP --no-deps resemblyzer==0.1.4
$PIP --no-deps -e .
# Without a GPU, DeepSpeed's ranks allreduce through a C++ op it compiles on first use (~30 s): compile it
# now, with the venv's tools first on PATH as the tests and Slurm jobs have them, so no run waits for it.
PATH="$(cd "$VENV" && pwd)/bin:$PATH" "$VENV/bin/python" -c "
import torch
if not torch.cuda.is_available():
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder
    ShareMemCommBuilder().load(verbose=False)" >/dev/null 2>&1 || echo "[setup] note: DeepSpeed's CPU op did not compile now; the first CPU run compiles it"
# librosa's numba functions (the MCD, DNSMOS and speaker-similarity metrics use its mel spectrogram) compile
# on first use, ~20 s, into the venv's cache: compile them now rather than in the first listening eval.
"$VENV/bin/python" -c "
import numpy as np, librosa
wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
librosa.power_to_db(librosa.feature.melspectrogram(y=librosa.effects.trim(wav, top_db=40)[0], sr=16000))" \
  >/dev/null 2>&1 || echo "[setup] note: librosa's functions did not compile now; the first listening eval compiles them"
touch "$stamp"
echo "[setup] done"
