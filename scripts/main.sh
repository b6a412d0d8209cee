#!/usr/bin/env bash
# The main job: set up, fetch MNIST, train a small VAE, evaluate its test log-likelihood, write a sample grid.
# About 5 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
mcmcvae data fetch mnist
out=runs/main
rm -rf "$out"
mcmcvae train --dataset mnist --method vae --epochs 10 --latent-dim 10 --out "$out/vae" --seed 0
mcmcvae evaluate "$out/vae" --num-samples 1000 --num-images 2000
