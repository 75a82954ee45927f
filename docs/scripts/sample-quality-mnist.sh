#!/usr/bin/env bash
# docs/vae-family-mnist.md, sample quality. Run from the repository root after
# docs/scripts/vae-family-mnist.sh (it reuses its vae, conv-vae and cvae runs); about 15 minutes.
set -euo pipefail
A="$(pwd)/.venv/bin/aevb"
cd runs/vae-family
common=(--dataset mnist --epochs 10 --precision float32 --quiet --no-eval --latent_dim 20)
$A train "${common[@]}" --model wae-mmd --kernel imq --out wae-imq
$A train "${common[@]}" --model wae-mmd --kernel rbf --out wae-rbf
$A train "${common[@]}" --model swae --out swae
for m in vae conv-vae cvae wae-imq wae-rbf swae; do
  $A evaluate $m --sample-quality --quality-samples 10000 --k 10 --max-points 1000 --json \
    --quiet > $m.quality.json
done
