#!/usr/bin/env bash
# One-time, idempotent set-up of a development checkout on a fresh machine:
# ffmpeg and espeak-ng from apt, a virtual environment in .venv, the CPU build of torch, then llamavid with its dev extra.
# Users with a GPU: install your CUDA build of torch into .venv first; this script keeps an existing torch.
set -euo pipefail
cd "$(dirname "$0")/.."

# ffmpeg (test media, a fallback decoder) and espeak-ng (speech for the speech-recognition tests), from apt
# when missing.
APT_PACKAGES=()
if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then APT_PACKAGES+=(ffmpeg); fi
if ! command -v espeak-ng >/dev/null 2>&1; then APT_PACKAGES+=(espeak-ng); fi
if [ "${#APT_PACKAGES[@]}" -gt 0 ]; then
    echo "setup: installing ${APT_PACKAGES[*]} with apt" >&2
    SUDO=""
    if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${APT_PACKAGES[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" >/dev/null 2>&1; then
    # The pinned CPU build: an unpinned torch may pull a multi-GB CUDA build.
    echo "setup: installing torch==2.13.0 (CPU)" >&2
    python -m pip install -q "torch==2.13.0"
fi
echo "setup: installing llamavid[dev]" >&2
python -m pip install -q -e ".[dev]"
echo "setup: done; activate with: . .venv/bin/activate" >&2
