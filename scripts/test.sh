#!/usr/bin/env bash
# The test suite: set up, fetch the datasets the tests read, run pytest (arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
mcmcvae data fetch mnist fashion_mnist
python -m pytest "$@"
