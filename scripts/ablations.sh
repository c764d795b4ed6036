#!/usr/bin/env bash
# Ablations of the Legato recipe (docs/evaluation.md): every variant trains the same model on
# the same data with the same step budget, and is evaluated by the same harness on the same
# held-out episodes. Usage: scripts/ablations.sh  (STEPS, EPISODES, DATA override the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
LEGATO=${LEGATO:-.venv/bin/legato}
STEPS=${STEPS:-3000}
EPISODES=${EPISODES:-100}
DATA=${DATA:-data/demos.npz}
THREADS=${THREADS:-1}
OUT=${OUT:-reports/ablations}

train() {  # name, extra train flags...
  local name=$1; shift
  if [ ! -f "runs/abl-$name/trainer.json" ] || ! grep -q "\"step\": $STEPS" "runs/abl-$name/trainer.json"; then
    $LEGATO train --data "$DATA" --method legato --steps "$STEPS" --threads "$THREADS" --out "runs/abl-$name" "$@"
  fi
}
evaluate() {  # name, checkpoint, extra eval flags...
  local name=$1 ck=$2; shift 2
  $LEGATO eval --checkpoints "$ck" --methods legato --delays 0,1,2,3,4 --horizons 8 \
    --episodes "$EPISODES" --workers 2 --out "$OUT/$name" "$@" > /dev/null
}

for phase in ${PHASES:-train eval}; do
  if [ "$phase" = train ]; then
    train base
    train loss-mean --loss-weighting mean
    train t-continuous --t-sampling continuous
    train r-max-2 --r-max 2
    train d-max-8 --d-max 8
  else
    evaluate base runs/abl-base
    evaluate no-final-blend runs/abl-base --no-final-blend
    evaluate ramp-0 runs/abl-base --ramp 0
    evaluate ramp-2 runs/abl-base --ramp 2
    evaluate loss-mean runs/abl-loss-mean
    evaluate t-continuous runs/abl-t-continuous
    evaluate r-max-2 runs/abl-r-max-2
    evaluate d-max-8 runs/abl-d-max-8
    .venv/bin/python scripts/collect_ablations.py "$OUT" > "$OUT/table.md"
    cat "$OUT/table.md"
  fi
done
