#!/usr/bin/env bash
# docs/iwae-table1.md: Burda et al. (2016) table 1 at a scaled budget. Every row trains
# PASSES passes over MNIST (default 40: the first four stages of the paper's 3280-pass
# schedule, i.e. their run stopped early), in float32, and is scored with K = 5000 on the first
# POINTS test images (default 2000). Run from the repository root after scripts/setup.sh.
#
# The learning-rate schedule is a function of the pass, so a run of P passes is the run of any
# smaller budget M continued: where RUN-pM exists (M < P, the largest such), it is copied and
# resumed to P passes (checkpoints hold every RNG state, so this is the same run as a fresh one
# of P passes on the same number of threads), and only P - M passes are trained.
#
# The runs go in two queues side by side, one thread each (SLOTS=1 runs them one after the
# other on THREADS threads). With the defaults, after the 13-pass runs: about 50 minutes on
# 2 CPU cores. The table: docs/scripts/iwae-table1-table.py.
set -euo pipefail
A="$(pwd)/.venv/bin/aevb"
configs="$(pwd)/configs/iwae-table1"
passes="${PASSES:-40}"
points="${POINTS:-2000}"
slots="${SLOTS:-2}"
mkdir -p runs/iwae-table1 && cd runs/iwae-table1

run() {  # run NAME-pPASSES CONFIG [overrides...]: train unless done (K = 5000 at the end)
  local name=$1 config=$2; shift 2
  local stem=${name%-p*} budget=${name##*-p}
  [ -f "$name/evaluation.json" ] && return
  rm -rf "$name"
  local from="" m
  # the largest smaller budget already trained (not with warm-up: a fraction of the run)
  [[ " $* " == *" --kl_warmup "* ]] || for dir in "$stem"-p*; do
    m=${dir##*-p}
    [[ -d $dir/checkpoints && $m =~ ^[0-9]+$ && $m -lt $budget ]] || continue
    [[ -z $from || $m -gt ${from##*-p} ]] && from=$dir
  done
  if [ -n "$from" ]; then
    cp -r "$from" "$name" && rm -f "$name"/evaluation*.json
    $A train --out "$name" --resume --epochs "$budget" --quiet
  else
    $A train "$configs/$config.toml" --precision float32 --quiet --max_points "$points" \
      "$@" --epochs "$budget" --out "$name"
  fi
}

queue() {  # queue NAME CONFIG [overrides...] ; NAME CONFIG ... : one after the other
  local args=()
  for word in "$@" ";"; do
    if [ "$word" = ";" ]; then run "${args[@]}"; args=(); else args+=("$word"); fi
  done
}

export OMP_NUM_THREADS=$([ "$slots" = 1 ] && echo "${THREADS:-2}" || echo 1)
# the paper's schedule stopped after 1, 4 and 13 passes, for the curve of NLL against passes
for p in 1 4 13; do
  run "vae-1layer-p$p" vae-1layer
  run "vae-2layer-p$p" vae-2layer
done
if [ -n "${VAE_ONLY:-}" ]; then  # VAE_ONLY=1 PASSES=121: the two VAE rows alone, side by side
  run "vae-1layer-p$passes" vae-1layer & run "vae-2layer-p$passes" vae-2layer & wait
  exit
fi
only="${QUEUES:-1 2}"  # QUEUES=1 or QUEUES=2 runs one of the two queues alone
[[ " $only " == *" 1 "* ]] && queue vae-1layer-p"$passes" vae-1layer ";" iwae-k5-1layer-p"$passes" iwae-k5-1layer ";" \
  iwae-k50-1layer-p"$passes" iwae-k50-1layer ";" \
  vae-2layer-topdown-p"$passes" vae-2layer --inference top-down ";" \
  vae-2layer-top-down-warmup-p"$passes" vae-2layer --inference top-down --kl_warmup 0.25 &
[ "$slots" = 1 ] && wait
[[ " $only " == *" 2 "* ]] && queue vae-2layer-p"$passes" vae-2layer ";" iwae-k5-2layer-p"$passes" iwae-k5-2layer ";" \
  iwae-k50-2layer-p"$passes" iwae-k50-2layer ";" \
  vae-2layer-bottom-up-warmup-p"$passes" vae-2layer --inference bottom-up --kl_warmup 0.25 &
wait
