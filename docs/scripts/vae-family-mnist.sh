#!/usr/bin/env bash
# docs/vae-family-mnist.md: dynamically binarized MNIST, 10 epochs, float32, K = 1000.
# Run from the repository root after scripts/setup.sh; about 25 minutes on 2 CPU cores.
set -euo pipefail
A="$(pwd)/.venv/bin/aevb"
python="$(pwd)/.venv/bin/python"
classify="$(pwd)/docs/scripts/classify-cvae-samples.py"
mkdir -p runs/vae-family && cd runs/vae-family
common=(--dataset mnist --epochs 10 --precision float32 --quiet --no-eval)
$A train "${common[@]}" --model vae --out vae
$A train "${common[@]}" --model conv-vae --out conv-vae
$A train "${common[@]}" --model cvae --prior learned --out cvae
$A train "${common[@]}" --model cvae --prior learned --net conv --out conv-cvae
$A train "${common[@]}" --model cvae --prior standard --out cvae-standard
for m in vae conv-vae cvae conv-cvae cvae-standard; do
  $A evaluate $m --k 1000 --max-points 1000 --json --quiet > $m.eval1000.json
done
for m in vae cvae; do
  $A evaluate $m --k 1000 --json --quiet > $m.eval-all.json
done
$A sweep --beta 0.1,0.3,1,3,10 --dataset mnist --binarize none --likelihood gaussian-fixed \
  --sigma 0.1 --epochs 10 --precision float32 --quiet --out rd
"$python" "$classify"
