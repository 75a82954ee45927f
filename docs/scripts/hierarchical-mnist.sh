#!/bin/bash
# The runs of docs/hierarchical-mnist.md: dynamically binarized MNIST, 10 epochs, batch 100,
# Adam 1e-3, nets (200,200) / (100,100), log p(x) with K = 1000 on the first 1000 test points.
# Usage: docs/scripts/hierarchical-mnist.sh OUT [ACTIVATION]   (tanh as the table's first
# rows, or gelu; each run one thread)
set -euo pipefail
out=${1:-runs/hierarchical-mnist}
act=${2:-tanh}
common=(configs/mnist.toml --epochs 10 --threads 1 --precision float32 --is_samples 1000
        --max_points 1000 --quiet --net.activation "$act")
hvae=(--model hvae --latent_dims 100,50 --hidden 200,200 --layer_hidden 100,100)
aevb=.venv/bin/aevb
$aevb train "${common[@]}" --latent_dim 50 --hidden 200,200 --out "$out/vae-50"
$aevb train "${common[@]}" "${hvae[@]}" --out "$out/bottom-up-2"
$aevb train "${common[@]}" "${hvae[@]}" --inference top-down --posterior ladder --out "$out/ladder-2"
# tanh nets need free bits to leave the mean-image plateau (docs/hierarchical-mnist.md)
controls=(); [ "$act" = tanh ] && controls=(--free_bits 0.05)
$aevb train "${common[@]}" "${hvae[@]}" --inference top-down "${controls[@]}" --out "$out/residual-2"
$aevb train "${common[@]}" "${hvae[@]}" --inference top-down "${controls[@]}" \
    --latent_dims 32,32,32,32,32 --out "$out/residual-5"
