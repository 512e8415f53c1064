#!/usr/bin/env bash
# The live measurements of the masking diagnostics (docs/defenses.md, "Diagnostics that fire"):
#   bench/run_diagnostics.sh            # train (cached) and evaluate the models below
# 1. a standard mnist_cnn and a catastrophically overfitted fast one (FGSM step 0.5 = 1.67 eps from a
#    random start, Adam at Wong et al.'s settings, no --stop-on-overfit), both on the first 20,000
#    training images to fit a shared CPU;
# 2. advlab evaluate on the first 300 test images (PGD-40 x 2 on CE and C&W, FGSM, the effort check on
#    200 images), JSON in bench/results/diagnostics/.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${ADVLAB_DATA:-../shared/data}
ckpt=bench/checkpoints
out=bench/results/diagnostics
mkdir -p "$ckpt" "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
advlab=${ADVLAB:-.venv/bin/advlab}
common=(--dataset mnist --data-dir "$data" --no-progress --train-subset 20000)
[ -f "$ckpt/standard20k.safetensors" ] || $advlab train "${common[@]}" --checkpoint "$ckpt/standard20k.safetensors" \
  --out "$out/train-standard"
[ -f "$ckpt/fast_co.safetensors" ] || $advlab defend --method fast "${common[@]}" --epochs 4 --step-size 0.5 \
  --checkpoint "$ckpt/fast_co.safetensors" --out "$out/train-fast_co"
for name in standard20k fast_co; do
  $advlab evaluate "$ckpt/$name.safetensors" --dataset mnist --data-dir "$data" --eps 0.1,0.2,0.3 --n 300 \
    --steps 40 --restarts 2 --blackbox-n 0 --unbounded-n 0 --effort-n 200 --no-progress --json "$out/$name.json" \
    --out "$out/evaluate-$name"
done
