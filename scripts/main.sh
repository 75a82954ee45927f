#!/usr/bin/env bash
# The main job: set up (if needed), fetch MNIST, train a 2-D-latent VAE (for the manifold
# picture) and a 20-D one, evaluate both on the test set and write their reports.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=${1:-runs/main-$(date +%Y%m%d-%H%M%S)}
.venv/bin/aevb train configs/mnist-2d.toml --out "$out/mnist-2d"
.venv/bin/aevb train configs/mnist.toml --out "$out/mnist-20d"
echo "reports: $out/mnist-2d/report.md $out/mnist-20d/report.md"
