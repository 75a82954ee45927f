#!/usr/bin/env bash
# Semi-supervised MNIST (Kingma et al. 2014): M2 and M1+M2 with 100, 600 and 1000 labels at one
# budget of EPOCHS epochs each (default 15; the paper trains to convergence), float32, seed 0.
# Run from the repository root after scripts/setup.sh; about 40 minutes on 2 CPU cores.
set -euo pipefail
A="$(pwd)/.venv/bin/aevb"
epochs="${EPOCHS:-15}"
mkdir -p runs/ssl-mnist && cd runs/ssl-mnist
common=(--dataset mnist --precision float32 --quiet --is_samples 100)
run() {  # run NAME [train options...]: train and evaluate unless done
  local name=$1; shift
  [ -f "$name/evaluation.json" ] && return
  rm -rf "$name"
  $A train "${common[@]}" "$@" --out "$name"
}
# M1: a vae whose posterior means are M2's data in M1+M2
run m1 --model vae --latent_dim 50 --epochs "$epochs"
for n in 100 600 1000; do
  run "m2-$n" --model m2 --labelled "$n" --latent_dim 50 --epochs "$epochs"
  run "m1m2-$n" --model m2 --labelled "$n" --features "$(pwd)/m1" --likelihood gaussian-learned \
    --latent_dim 50 --epochs "$epochs"
done
