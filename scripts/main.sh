#!/usr/bin/env bash
# The main job: set up, fetch MNIST, then scripts/main.py: pre-train a VAE, train it on as a plain VAE and, from
# the same start, with gradmala (speed-measure-tuned MALA); print both test log-likelihoods (same images, same
# estimator) and write runs/main/{results.md,results.json,comparison.png}. About 5 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
mcmcvae data fetch mnist
rm -rf runs/main
python scripts/main.py --out runs/main "$@"
