#!/usr/bin/env bash
# The test suite: set up, fetch the datasets the tests read, run pytest (arguments are passed on, e.g. -k kernels).
# pytest runs tests/ and every >>> example in lib/mcmcvae's docstrings (--doctest-modules, see pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# torch is not a dependency; where a CPU build can be installed, the test comparing our Inception-V3 port with
# torch's own forward pass runs too (it is skipped, with its reason printed, when torch is absent).
python -m pip install -q "torch==2.13.0" 2>/dev/null || echo "torch 2.13.0 not installable here: the Inception-vs-torch comparison will be skipped"
mcmcvae data fetch mnist fashion_mnist
# pytest-xdist runs the tests in one process per core (most of a test's time is single-threaded XLA compilation);
# MCMCVAE_TEST_WORKERS=0 runs them in this process (e.g. for pdb).
python -m pytest -n "${MCMCVAE_TEST_WORKERS:-auto}" "$@"
