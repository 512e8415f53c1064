#!/usr/bin/env bash
# The model table of docs/evaluation.md in one command: advlab's standard suite (fast schedule) against the
# official AutoAttack (standard version; rand version for the noise-trained model) on every model, and
# advlab's APGD-CE against torchattacks' APGD over seeds on two models.
#   bash bench/autoattack_table.sh [N] [DEVICE] [PLAN]  (default 1000 images, cpu; a GPU session: 1000 cuda)
# PLAN: a file of 'NAME IMAGES' lines that sets the images per model (at most N); the 2-core CPU run of
# docs/evaluation.md used bench/autoattack_table_cpu.txt.
# Needs the bench-only environment (.venv-peers: official AutoAttack from its source, torchattacks) and
# trains the models it lacks first (bench/table_models.sh; cached). Results: bench/results/table/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
DEVICE=${2:-cpu}
PLAN=${3:-}
PEERS=${PEERS:-.venv-peers/bin/python}
export PYTHONPATH=src OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ADVLAB_DATA=${ADVLAB_DATA:-../shared/data}
CACHE=${ADVLAB_CACHE:-$HOME/.cache/advlab}
PY=${PY:-python} bash bench/table_models.sh "$ADVLAB_DATA"
OUT=bench/results/table
mkdir -p "$OUT"
images() {  # NAME -> images for that model: the plan's figure, at most N
  local n=$N
  if [ -n "$PLAN" ]; then
    n=$(awk -v k="$1" '$1 == k {print $2}' "$PLAN")
    n=${n:-$N}; [ "$n" -gt "$N" ] && n=$N
  fi
  echo "$n"
}
compare() {  # NAME CHECKPOINT DATASET EPS [extra args]
  local name=$1 ckpt=$2 dataset=$3 eps=$4; shift 4
  [ -f "$OUT/$name.json" ] && { echo "$name: $OUT/$name.json exists"; return; }
  echo "== $name ($(date -u +%H:%M:%S))"
  $PEERS bench/autoattack_compare.py --model "$ckpt" --dataset "$dataset" --eps "$eps" --n "$(images "$name")" --device "$DEVICE" \
      --skip torchattacks "$@" --out "$OUT/$name.json"
}
compare standard_mnist "$CACHE/models/mnist_cnn-mnist-6431bc6a738d6433.safetensors" mnist 0.3
compare distill_mnist bench/checkpoints/distill_mnist.safetensors mnist 0.3
compare standard_cifar "$CACHE/models/cifar_cnn-cifar10-c2fc69aa8195873a.safetensors" cifar10 0.0313725
compare standard_mnist_eps01 "$CACHE/models/mnist_cnn-mnist-6431bc6a738d6433.safetensors" mnist 0.1
compare fast_overfit_mnist bench/checkpoints/fast_co.safetensors mnist 0.1
compare pgd_mnist bench/checkpoints/pgd_mnist.safetensors mnist 0.3
compare fast_carry_mnist bench/checkpoints/fast_carry_mnist.safetensors mnist 0.3
compare noise_mnist bench/checkpoints/noise_mnist.safetensors mnist 0.1 --noise-sigma 0.3
compare pgd_cifar bench/checkpoints/pgd_cifar.safetensors cifar10 0.0313725
for m in standard_mnist_eps01:"$CACHE/models/mnist_cnn-mnist-6431bc6a738d6433.safetensors" \
         fast_overfit_mnist:bench/checkpoints/fast_co.safetensors pgd_mnist:bench/checkpoints/pgd_mnist.safetensors; do
  name=${m%%:*}; ckpt=${m#*:}; eps=0.1; [ "$name" = pgd_mnist ] && eps=0.3
  [ -f "$OUT/apgd_$name.json" ] || $PEERS bench/apgd_vs_torchattacks.py --model "$ckpt" --eps $eps --n "$(images "apgd_$name")" \
      --seeds 0,1,2,3,4 --out "$OUT/apgd_$name.json"
done
$PEERS bench/autoattack_table.py "$OUT"
