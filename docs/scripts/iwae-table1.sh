#!/usr/bin/env bash
# docs/iwae-table1.md: Burda et al. (2016) table 1 at a scaled budget. Every row trains
# PASSES passes over MNIST (default 13: the first three stages of the paper's 3280-pass
# schedule, i.e. their run stopped early), in float32, and is scored with K = 5000 on the first
# POINTS test images (default 2000). Run from the repository root after scripts/setup.sh;
# about an hour on 2 CPU cores with the defaults. The table: docs/scripts/iwae-table1-table.py.
set -euo pipefail
A="$(pwd)/.venv/bin/aevb"
configs="$(pwd)/configs/iwae-table1"
passes="${PASSES:-13}"
points="${POINTS:-2000}"
mkdir -p runs/iwae-table1 && cd runs/iwae-table1
common=(--precision float32 --quiet --max_points "$points")
run() {  # run NAME CONFIG [overrides...]: train unless done, then score with K = 5000
  local name=$1 config=$2; shift 2
  [ -f "$name/evaluation.json" ] && return
  rm -rf "$name"
  $A train "$configs/$config.toml" "${common[@]}" "$@" --out "$name"
}
for config in vae-1layer vae-2layer iwae-k5-1layer iwae-k5-2layer; do
  run "$config-p$passes" "$config" --epochs "$passes"
done
run vae-2layer-topdown-p"$passes" vae-2layer --inference top-down --epochs "$passes"
for p in 1 4; do  # test NLL at the ends of the schedule's first stages
  run "vae-1layer-p$p" vae-1layer --epochs "$p"
  run "vae-2layer-p$p" vae-2layer --epochs "$p"
done
for config in iwae-k50-1layer iwae-k50-2layer; do
  run "$config-p$passes" "$config" --epochs "$passes"
done
