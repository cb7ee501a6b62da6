#!/usr/bin/env bash
# Create .venv in the checkout and install kohyagen with the training and dev extras.
# CPU torch is installed first so that the [train] extra does not pull a multi-GB CUDA
# build; on a GPU machine install the torch build for your CUDA first, then run this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet "torch==${KOHYAGEN_TORCH_VERSION:-2.13.0}"
fi
.venv/bin/python -m pip install --quiet -e ".[train,dev]"
echo "kohyagen is installed in .venv: .venv/bin/kohyagen --help"
