#!/usr/bin/env bash
# Create .venv with aevb and its test tools. Idempotent: a second run only checks.
# Where there is no NVIDIA GPU, PyTorch's CPU build is installed first, so that nothing
# pulls in the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${pip[@]}" install -q "torch==2.13.0"
  else
    # A local CPU wheel where one is on disk; otherwise PyTorch's CPU index.
    "${pip[@]}" install -q "torch==2.13.0+cpu" 2>/dev/null ||
      "${pip[@]}" install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
"${pip[@]}" install -q -e ".[dev]"
.venv/bin/python -c "import aevb, torch; print('aevb ready: torch', torch.__version__)"
