#!/usr/bin/env bash
# The runs of docs/semi-supervised-mnist.md: M2 (configs/m2-mnist.toml) and M1+M2 (M1 from
# configs/m1-mnist.toml, then configs/m1m2-mnist.toml on its codes) with 100 labels (three
# label draws: --label_seed 0, 1, 2), 600 and 1000 (draw 0), each run on THREADS threads.
# Rerun to continue: a finished run is skipped, an unfinished one resumes (bit-exact).
# Usage, from the repository root after scripts/setup.sh: docs/scripts/ssl-mnist.sh [OUT] [THREADS]
set -euo pipefail
out=${1:-runs/ssl-mnist}
threads=${2:-1}
A="$(pwd)/.venv/bin/aevb"
mkdir -p "$out"
run() {  # run NAME CONFIG [options...]: train (or resume) and evaluate unless done
    local name=$1; shift
    [ -f "$out/$name/evaluation.json" ] && return
    if [ -f "$out/$name/checkpoints/last.safetensors" ]; then
        "$A" train --out "$out/$name" --resume --threads "$threads" --quiet
    else
        "$A" train "$@" --threads "$threads" --quiet --out "$out/$name"
    fi
}
run m1 configs/m1-mnist.toml
m1="$(cd "$out/m1" && pwd)"
for n in 100 600 1000; do
    draws="0"; [ "$n" = 100 ] && draws="0 1 2"
    for s in $draws; do
        run "m2-$n-draw$s" configs/m2-mnist.toml --labelled "$n" --label_seed "$s"
        run "m1m2-$n-draw$s" configs/m1m2-mnist.toml --labelled "$n" --label_seed "$s" \
            --features "$m1"
    done
done
# The table: test error of q(y|x) (mean ± s.d. over draws) and each run's seconds of training
python3 - "$out" <<'PY'
import csv, json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
for model in ("m2", "m1m2"):
    for n in (100, 600, 1000):
        runs = sorted(out.glob(f"{model}-{n}-draw*"))
        errors = [100 * json.loads((r / "evaluation.json").read_text())["classification_error"]
                  for r in runs if (r / "evaluation.json").exists()]
        seconds = [float(list(csv.DictReader(open(r / "metrics.csv")))[-1]["seconds"])
                   for r in runs if (r / "evaluation.json").exists()]
        if not errors:
            continue
        spread = f" ± {statistics.stdev(errors):.2f}" if len(errors) > 1 else ""
        print(f"{model:5} {n:5} labels: test error {statistics.mean(errors):.2f} %{spread}"
              f" over {len(errors)} draw(s) ({', '.join(f'{e:.2f}' for e in errors)});"
              f" training {', '.join(f'{s / 60:.0f}' for s in seconds)} min")
PY
