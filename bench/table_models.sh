#!/usr/bin/env bash
# Train (or take from the cache) the models of the AutoAttack table in docs/evaluation.md, one after
# the other, one thread each. Cheaper recipes than docs/defenses.md's (train subsets, fewer PGD steps
# and epochs) so that they fit a shared 2-core CPU; each recipe is stated in docs/evaluation.md.
# Usage: bench/table_models.sh [DATA_DIR]   (checkpoints land in the advlab cache and bench/checkpoints/)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${ADVLAB_DATA:-../shared/data}}
PY=${PY:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p bench/checkpoints
train() {  # NAME ARGS...
  local name=$1; shift
  if [ -f "bench/checkpoints/$name.safetensors" ]; then echo "$name: bench/checkpoints/$name.safetensors exists"; return; fi
  echo "== $name: advlab defend $* ($(date -u +%H:%M:%S))"
  $PY -m advlab defend "$@" --data-dir "$DATA" --no-progress --out "${RUNS:-runs/table}/$name" --overwrite \
      --checkpoint "bench/checkpoints/$name.safetensors"
}

train noise_mnist --method noise --sigma 0.3 --dataset mnist --train-subset 20000
train distill_mnist --method distill --temperature 100 --dataset mnist --train-subset 10000
train pgd_mnist --method pgd --eps 0.3 --steps 5 --eps-ramp 1 --epochs 3 --dataset mnist --train-subset 10000
train fast_carry_mnist --method fast --eps 0.3 --optimizer sgd --lr 0.1 --weight-decay 5e-4 --eps-ramp 2 \
    --fgsm-start carry --step-size 0.15 --stop-on-overfit 0.2 --dataset mnist --train-subset 20000
train fast_co --method fast --dataset mnist --epochs 4 --step-size 0.5 --train-subset 20000  # overfits catastrophically
train pgd_cifar --method pgd --eps 0.0313725 --steps 3 --epochs 5 --dataset cifar10 --train-subset 10000
echo "== done ($(date -u +%H:%M:%S))"
