#!/bin/bash
# The convolutional hierarchy of docs/hierarchical-mnist.md, trained in stages (each stage a
# bit-exact --resume of the one run) with the test log p(x) of its last checkpoint after each:
# K = 100 on the first 1000 test points, the seconds of training from metrics.csv.
# Usage: docs/scripts/hierarchical-conv-curve.sh OUT [THREADS]   (rerun to continue)
set -euo pipefail
out=${1:-runs/hierarchical-conv}
threads=${2:-2}
run=$out/conv-32-64-z4x4
aevb=.venv/bin/aevb
mkdir -p "$out"
for epochs in 1 2 4 8 16 32 64 128 200; do
    done_epochs=$(tail -n +2 "$run/metrics.csv" 2>/dev/null | wc -l || true)
    if [ "$done_epochs" -ge "$epochs" ] && [ -f "$out/curve-e$epochs.json" ]; then continue; fi
    if [ -f "$run/checkpoints/last.safetensors" ]; then
        $aevb train --out "$run" --resume --epochs "$epochs" --threads "$threads" --no-eval --quiet
    else
        $aevb train configs/mnist.toml --model hvae --inference top-down --net conv \
            --net.channels 32,64 --net.activation gelu --latent_dims 4,4,4,4 \
            --epochs "$epochs" --threads "$threads" --precision float32 --no-eval --quiet \
            --out "$run"
    fi
    $aevb evaluate "$run" --checkpoint last --k 100 --max-points 1000 --threads "$threads" \
        --json --quiet > "$out/curve-e$epochs.json"
    python3 - "$run" "$out/curve-e$epochs.json" "$epochs" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(f"{sys.argv[1]}/metrics.csv")))
result = json.load(open(sys.argv[2]))
print(f"epoch {sys.argv[3]}: {float(rows[-1]['seconds']):.0f} s of training, test log p(x)"
      f" {result['log_px_nats']:.2f} ± {result['log_px_se']:.2f} (K=100, 1000 points)")
PY
done
