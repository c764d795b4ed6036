#!/usr/bin/env bash
# Ablations of the Legato recipe (docs/evaluation.md): every variant trains the same model on
# the same data with the same step budget, and is evaluated by the same harness on the same
# held-out episodes.
# Usage: ROUND=1|2 scripts/ablations.sh   (environment overrides below; PHASES="train eval")
#   Round 1: the legato.md recipe's knobs, with the direct velocity head (docs/evaluation.md).
#   Round 2: the factored head and the prefix augmentation that the committed recipe uses.
#   On 2 CPU cores, JOBS=2 THREADS=1 trains two variants at a time.
#   On a GPU machine: DEVICE=cuda JOBS=8 trains all variants at once (batches are built on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
LEGATO=${LEGATO:-.venv/bin/legato}
STEPS=${STEPS:-6000}
EPISODES=${EPISODES:-200}
DELAYS=${DELAYS:-0,1,2,3,4}
DATA=${DATA:-data/demos.npz}
THREADS=${THREADS:-1}
DEVICE=${DEVICE:-cpu}
JOBS=${JOBS:-1}
EVAL_WORKERS=${EVAL_WORKERS:-2}
OUT=${OUT:-reports/ablations}
RUNS=${RUNS:-runs}
ROUND=${ROUND:-1}
OFF=(--velocity-form direct --p-no-prefix 0 --prefix-noise 0)  # the recipe before round 2

train() {  # name, extra train flags...
  local name=$1; shift
  if [ -f "$RUNS/abl-$name/trainer.json" ] && grep -q "\"step\": $STEPS" "$RUNS/abl-$name/trainer.json"; then
    return
  fi
  $LEGATO train --data "$DATA" --method legato --steps "$STEPS" --threads "$THREADS" --device "$DEVICE" \
    --out "$RUNS/abl-$name" --force "$@" > "$RUNS/abl-$name.log" 2>&1
}
evaluate() {  # name, checkpoint, extra eval flags...
  local name=$1 ck=$2; shift 2
  $LEGATO eval --checkpoints "$ck" --methods legato --delays "$DELAYS" --horizons 8 \
    --episodes "$EPISODES" --workers "$EVAL_WORKERS" --threads 1 --seed 1000 --out "$OUT/$name" --force "$@" > /dev/null
}
throttle() {  # keep at most JOBS background jobs
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
}

# Trained variants ("name train-flags..."), and inference-only variants of an existing run
# ("name run eval-flags..."). Every trained variant is also evaluated as it is.
if [ "$ROUND" = 1 ]; then
  variants=(
    "base ${OFF[*]}"
    "loss-mean ${OFF[*]} --loss-weighting mean"
    "t-continuous ${OFF[*]} --t-sampling continuous"
    "r-max-2 ${OFF[*]} --r-max 2"
    "d-max-8 ${OFF[*]} --d-max 8"
    "no-prefix-20 --velocity-form direct --p-no-prefix 0.2 --prefix-noise 0"
    "prefix-noise-3 --velocity-form direct --p-no-prefix 0.2 --prefix-noise 0.03"
    "prefix-noise-6 --velocity-form direct --p-no-prefix 0.2 --prefix-noise 0.06"
  )
  inference_variants=(
    "no-final-blend base --no-final-blend"
    "ramp-0 base --ramp 0"
    "ramp-2 base --ramp 2"
  )
else
  variants=(
    "factored --p-no-prefix 0 --prefix-noise 0"
    "factored-noise-6 --p-no-prefix 0.2 --prefix-noise 0.06"
    "factored-noise-10 --p-no-prefix 0.2 --prefix-noise 0.1"
    "factored-noise-6-r-max-4 --p-no-prefix 0.2 --prefix-noise 0.06 --r-max 4"
    "direct-noise-10 --velocity-form direct --p-no-prefix 0.2 --prefix-noise 0.1"
  )
  inference_variants=()
fi

mkdir -p "$RUNS" "$OUT"
for phase in ${PHASES:-train eval}; do
  if [ "$phase" = train ]; then
    for v in "${variants[@]}"; do
      throttle
      # shellcheck disable=SC2086
      train $v &
    done
    wait
  else
    for v in "${variants[@]}"; do
      throttle
      evaluate "${v%% *}" "$RUNS/abl-${v%% *}" &
    done
    for v in "${inference_variants[@]}"; do
      read -r name run flags <<< "$v"
      throttle
      # shellcheck disable=SC2086
      evaluate "$name" "$RUNS/abl-$run" $flags &
    done
    wait
    python3 scripts/collect_ablations.py "$OUT" > "$OUT/table.md"
    cat "$OUT/table.md"
  fi
done
