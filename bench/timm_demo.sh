#!/usr/bin/env bash
# docs/models.md, "a timm model of your own": every command end to end on timm:resnet18 loaded from a plain
# state dict, at small budgets. Run from the repository root after bench/timm_finetune.py OUT:
#   OMP_NUM_THREADS=1 PYTHONPATH=src bash bench/timm_demo.sh OUT
# Writes one run folder per command under OUT/runs and prints the figures docs/models.md quotes.
set -euo pipefail
OUT=${1:?usage: bench/timm_demo.sh OUT (the folder bench/timm_finetune.py wrote)}
PY=${PYTHON:-python}
ADVLAB="$PY -W ignore -m advlab"
DATA="folder:$OUT/cifar10-subset"
SPEC=(timm:resnet18 --weights "$OUT/resnet18.pth" --input-size 64)
COMMON=(--dataset "$DATA" --image-size 64 --no-progress)
RUNS="$OUT/runs"
rm -rf "$RUNS" && mkdir -p "$RUNS"
step() { echo; echo "== $1"; }

step "inspect"
$ADVLAB inspect "${SPEC[@]}" --dataset "$DATA" --image-size 64 --json "$RUNS/inspect.json" > "$RUNS/inspect.txt"
sed -n '1,7p;$p' "$RUNS/inspect.txt"

step "clean accuracy (advlab eval) on all test images of the subset"
$ADVLAB eval "${SPEC[@]}" "${COMMON[@]}" --out "$RUNS/eval" | tail -2

step "PGD-10, Linf eps 2/255, 50 images"
$ADVLAB attack --model "${SPEC[@]}" "${COMMON[@]}" --attack pgd --eps 0.00784313725 --steps 10 --n 50 \
  --out "$RUNS/pgd" | tail -2

step "evaluation suite (standard: APGD-CE, APGD-T, FAB-T, Square), eps 2/255, 10 images, small budgets"
$ADVLAB evaluate "${SPEC[@]}" "${COMMON[@]}" --suite standard --eps 0.00784313725 --n 10 --iterations 10 \
  --targets 3 --square-queries 100 --out "$RUNS/suite" | tail -4

step "certification (randomized smoothing, sigma 0.25, n0 10, n 100, 10 images)"
$ADVLAB certify "${SPEC[@]}" "${COMMON[@]}" --sigma 0.25 --n0 10 --n 100 --n-images 10 --skip 30 \
  --out "$RUNS/certify" | tail -3

step "universal patch (10% of the image, target airplane, 20 steps, 50 train / 50 test images)"
$ADVLAB patch --model "${SPEC[@]}" "${COMMON[@]}" --target airplane --sizes 0.1 --steps 20 --n-train 50 \
  --n-test 50 --out "$RUNS/patch" | tail -3

step "detection on a named layer (SPECTRE on 1.global_pool, all training images of the subset, 5% budget)"
$ADVLAB detect --model "${SPEC[@]}" --dataset "$DATA" --image-size 64 --split train --layer 1.global_pool \
  --method spectre --poison-fraction 0.05 --out "$RUNS/detect.json" | tail -3

step "black-box Square through advlab serve (eps 8/255, 10 images, 200 queries each)"
PORT=${PORT:-8731}
$ADVLAB serve "${SPEC[@]}" --port "$PORT" > "$RUNS/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  $PY -c "import httpx,sys; sys.exit(httpx.get('http://127.0.0.1:$PORT/health').status_code != 200)" 2>/dev/null \
    && break || sleep 1
done
$ADVLAB blackbox --oracle "http://127.0.0.1:$PORT" --attack square --eps 0.0313725 --n 10 --queries 200 \
  "${COMMON[@]}" --out "$RUNS/blackbox" | tail -3
kill $SERVER
