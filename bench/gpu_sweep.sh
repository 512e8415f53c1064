#!/usr/bin/env bash
# One GPU, many small jobs at once: single-step adversarial training sweeps on MNIST (each run trained
# with `advlab defend` and evaluated with `advlab evaluate --eps 0.3`, PGD-40 x 10 on the first 1,000
# test images) and CIFAR-10 training runs (`advlab train --dataset cifar10`).
#
#   bench/gpu_sweep.sh OUT_DIR CIFAR_DATA_DIR [DEADLINE_SECONDS] [SWEEP]
#
# SWEEP 1 (default): Wong et al.'s fast training on mnist_cnn under 13 settings, and three CIFAR-10
# models. SWEEP 2: N-FGSM, an eps warm-up and Wong et al.'s small CNN. SWEEP 3: the small CNN with
# the eps warm-up under 8 more settings. SWEEP 4: mnist_cnn under 12 untried fast-training settings
# (higher learning rates, weight decay, SGD, a larger step, batch 200, more seeds of the cyclic
# schedule), 3 GradAlign runs long enough to finish, and PGD-2 training as a cheap multi-step
# reference; its evaluations skip the black-box and unbounded checks, as the CPU figures do, and the
# three strongest checkpoints come back (so in sweeps 5 and 6). SWEEP 5: 16 settings on mnist_cnn,
# mostly SGD (the best of sweep 4). SWEEP 6: more seeds of sweep 5's two best SGD recipes, the two
# combined, and the best on Wong et al.'s small CNN. Results: bench/results/gpu_sweep/sweepN.jsonl.
#
# Runs advlab from this checkout's src/ with whatever python3 has torch (no install needed). Every job
# appends one JSON line to OUT_DIR/summary.jsonl when it ends; the log of each is in OUT_DIR/logs.tgz.
# Jobs still running at the deadline are stopped (their line says so).
# DEVICE (default cuda) and SMOKE=1 (training on 500 images, a 50-image evaluation) check the
# script itself on a CPU.
set -u
OUT=${1:?OUT_DIR}; DATA=${2:?CIFAR_DATA_DIR}; DEADLINE=${3:-420}; SWEEP=${4:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
export ADVLAB_CACHE=${ADVLAB_CACHE:-$OUT/cache}
WORK=${WORK:-$OUT/work}; mkdir -p "$WORK" "$ADVLAB_CACHE"
START=$(date +%s)
DEVICE=${DEVICE:-cuda}
SMOKE_TRAIN=(); SMOKE_EVAL=()
if [ "${SMOKE:-0}" = 1 ]; then
    SMOKE_TRAIN=(--train-subset 500); SMOKE_EVAL=(--n 50 --restarts 1 --steps 5 --blackbox-n 5 --blackbox-queries 50 --unbounded-n 10)
fi
[ "$SWEEP" -ge 4 ] && SMOKE_EVAL=("${SMOKE_EVAL[@]}" --blackbox-n 0 --unbounded-n 0)
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }

record() {  # NAME KIND STATUS SECONDS EXTRA_JSON
    python3 - "$@" >>"$OUT/summary.jsonl" <<'PY'
import json, sys
name, kind, status, seconds, extra = sys.argv[1:6]
row = {"name": name, "kind": kind, "status": status, "seconds": float(seconds)}
row.update(json.loads(extra or "{}"))
print(json.dumps(row))
PY
}

fast_job() {  # NAME FLAGS... (--method and its options)
    local name=$1; shift; local t0; t0=$(date +%s)
    local log=$WORK/$name.log ckpt=$WORK/$name.safetensors
    if timeout "$(left)" python3 -m advlab defend --dataset mnist --device "$DEVICE" --no-progress \
            --out "$WORK/$name-defend" --checkpoint "$ckpt" "$@" "${SMOKE_TRAIN[@]}" >"$log" 2>&1 \
       && timeout "$(left)" python3 -m advlab evaluate "$ckpt" --eps 0.3 --n 1000 --device "$DEVICE" --no-progress \
            --out "$WORK/$name-evaluate" --json "$WORK/$name.json" "${SMOKE_EVAL[@]}" >>"$log" 2>&1; then
        record "$name" fast ok $(( $(date +%s) - t0 )) "$(python3 - "$WORK/$name.json" "$ckpt" "$*" <<'PY'
import json, sys
from advlab.models.checkpoint import read_metadata
ev = next(iter(json.load(open(sys.argv[1]))["evaluations"].values()))
meta = read_metadata(sys.argv[2])
hist = meta.get("history") or meta.get("training", {}).get("history") or []
print(json.dumps({"flags": sys.argv[3], "clean_1000": ev["clean_accuracy"],
                  "fgsm": ev["robust_accuracy"]["fgsm"][-1], "pgd": ev["robust_accuracy"]["pgd"][-1],
                  "cw": ev["robust_accuracy"]["cw"][-1], "worst": ev["worst_case"][-1],
                  "test_accuracy": meta.get("test_accuracy"), "epochs_run": len(hist),
                  "masking_suspected": ev["masking_suspected"]}))
PY
)"
    else
        record "$name" fast failed $(( $(date +%s) - t0 )) "{\"flags\": \"$*\", \"tail\": $(tail -c 300 "$log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}"
    fi
}

cifar_job() {  # NAME FLAGS...
    local name=$1; shift; local t0; t0=$(date +%s)
    local log=$WORK/$name.log ckpt=$WORK/$name.safetensors
    if timeout "$(left)" python3 -m advlab train --dataset cifar10 --data-dir "$DATA" --device "$DEVICE" --no-progress \
            --out "$WORK/$name-train" --checkpoint "$ckpt" "$@" "${SMOKE_TRAIN[@]}" >"$log" 2>&1; then
        record "$name" cifar ok $(( $(date +%s) - t0 )) "$(python3 - "$ckpt" "$*" <<'PY'
import json, sys
from advlab.models.checkpoint import read_metadata
meta = read_metadata(sys.argv[1])
print(json.dumps({"flags": sys.argv[2], "test_accuracy": meta.get("test_accuracy"),
                  "train_seconds": meta.get("train_seconds")}))
PY
)"
    else
        record "$name" cifar failed $(( $(date +%s) - t0 )) "{\"flags\": \"$*\", \"tail\": $(tail -c 300 "$log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}"
    fi
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >"$OUT/device.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" >>"$OUT/device.txt" 2>&1
# decode the data sets once, before the jobs race for the cache
[ "$SWEEP" = 1 ] || DATA=""
python3 - "$DATA" <<'PY' >>"$OUT/device.txt" 2>&1
import sys, time
from advlab.data import load_dataset
t = time.time()
for name, root in (("mnist", None), ("cifar10", sys.argv[1])):
    if root == "":
        continue
    for split in ("train", "test"):
        load_dataset(name, split, root)
print(f"decoded in {time.time() - t:.1f} s")
PY

if [ "$SWEEP" = 1 ]; then
    cifar_job cifar_cnn_w48 --width 48 &
    cifar_job cifar_cnn_w64 --width 64 &
    cifar_job preact_resnet18 --model preact_resnet18 --epochs 15 &
    fast_job fast_default --method fast &
    fast_job fast_seed1 --method fast --seed 1 &
    fast_job fast_seed2 --method fast --seed 2 &
    fast_job fast_alpha1 --method fast --step-size 0.3 &
    fast_job fast_alpha1_e20 --method fast --step-size 0.3 --epochs 20 --stop-on-overfit 0.2 &
    fast_job fast_e20_guard --method fast --epochs 20 --stop-on-overfit 0.2 &
    fast_job fast_e30_guard --method fast --epochs 30 --stop-on-overfit 0.2 &
    fast_job fast_lr1e3_e20 --method fast --lr 1e-3 --epochs 20 --stop-on-overfit 0.2 &
    fast_job fast_b50 --method fast --batch-size 50 --stop-on-overfit 0.2 &
    fast_job fast_eps04 --method fast --eps 0.4 --stop-on-overfit 0.2 &
    fast_job fast_e15_guard --method fast --epochs 15 --stop-on-overfit 0.2 &
    fast_job fast_alpha11 --method fast --step-size 0.33 &
    fast_job fast_lr2e3 --method fast --lr 2e-3 &
elif [ "$SWEEP" = 3 ]; then
    small=(--method fast --model small_cnn --eps-ramp 2)  # later flags override (argparse keeps the last)
    fast_job small_ramp2_seed1 "${small[@]}" --seed 1 &
    fast_job small_ramp2_seed2 "${small[@]}" --seed 2 &
    fast_job small_e15_ramp3 "${small[@]}" --epochs 15 --eps-ramp 3 &
    fast_job small_e15_ramp3_seed1 "${small[@]}" --epochs 15 --eps-ramp 3 --seed 1 &
    fast_job small_ramp4 "${small[@]}" --eps-ramp 4 &
    fast_job small_ramp2_lr2e3 "${small[@]}" --lr 2e-3 &
    fast_job small_e20_ramp5 "${small[@]}" --epochs 20 --eps-ramp 5 &
    fast_job small_ramp2_alpha1 "${small[@]}" --step-size 0.3 &
elif [ "$SWEEP" = 4 ]; then
    fast=(--method fast --stop-on-overfit 0.2)
    align=(--method gradalign --random-start --step-size 0.375 --stop-on-overfit 0.2)
    fast_job fast_lr1e2 "${fast[@]}" --lr 1e-2 &
    fast_job fast_lr75e4 "${fast[@]}" --lr 7.5e-3 &
    fast_job fast_lr1e2_ramp2 "${fast[@]}" --lr 1e-2 --eps-ramp 2 &
    fast_job fast_lr1e2_cyclic_ramp2 "${fast[@]}" --lr 1e-2 --schedule cyclic --eps-ramp 2 &
    fast_job fast_wd5e4 "${fast[@]}" --weight-decay 5e-4 &
    fast_job fast_wd5e4_cyclic_ramp2 "${fast[@]}" --weight-decay 5e-4 --schedule cyclic --eps-ramp 2 &
    fast_job fast_sgd_lr05_cyclic "${fast[@]}" --optimizer sgd --lr 0.05 --schedule cyclic &
    fast_job fast_sgd_lr1_ramp2 "${fast[@]}" --optimizer sgd --lr 0.1 --eps-ramp 2 &
    fast_job fast_alpha15 "${fast[@]}" --step-size 0.45 &
    fast_job fast_b200_lr1e2 "${fast[@]}" --batch-size 200 --lr 1e-2 &
    fast_job fast_cyclic_ramp2_seed1 "${fast[@]}" --schedule cyclic --eps-ramp 2 --seed 1 &
    fast_job fast_cyclic_ramp2_seed2 "${fast[@]}" --schedule cyclic --eps-ramp 2 --seed 2 &
    fast_job gradalign_rs_l1_ramp2 "${align[@]}" --align-weight 1 --eps-ramp 2 &
    fast_job gradalign_rs_l15_ramp3 "${align[@]}" --align-weight 1.5 --eps-ramp 3 &
    fast_job gradalign_rs_l1_cyclic_ramp2 "${align[@]}" --align-weight 1 --eps-ramp 2 --schedule cyclic &
    fast_job pgd2 --method pgd --steps 2 --stop-on-overfit 0.2 &
elif [ "$SWEEP" = 5 ]; then
    sgd=(--method fast --stop-on-overfit 0.2 --optimizer sgd --lr 0.05 --schedule cyclic)  # later flags override
    fast_job sgd_cyclic_seed1 "${sgd[@]}" --seed 1 &
    fast_job sgd_cyclic_seed2 "${sgd[@]}" --seed 2 &
    fast_job sgd_cyclic_wd5e4 "${sgd[@]}" --weight-decay 5e-4 &
    fast_job sgd_cyclic_lr1 "${sgd[@]}" --lr 0.1 &
    fast_job sgd_cyclic_lr02 "${sgd[@]}" --lr 0.02 &
    fast_job sgd_cyclic_lr2 "${sgd[@]}" --lr 0.2 &
    fast_job sgd_cyclic_e20 "${sgd[@]}" --epochs 20 &
    fast_job sgd_cyclic_e15_ramp3 "${sgd[@]}" --epochs 15 --eps-ramp 3 &
    fast_job sgd_cyclic_ramp2 "${sgd[@]}" --eps-ramp 2 &
    fast_job sgd_cyclic_alpha11 "${sgd[@]}" --step-size 0.33 &
    fast_job sgd_cyclic_b128 "${sgd[@]}" --batch-size 128 &
    fast_job sgd_onecycle_lr2_ramp2 "${sgd[@]}" --schedule onecycle --lr 0.2 --eps-ramp 2 &
    fast_job sgd_onecycle_lr1_ramp2_wd5e4 "${sgd[@]}" --schedule onecycle --lr 0.1 --eps-ramp 2 --weight-decay 5e-4 &
    fast_job adam_cyclic_wd1e3 --method fast --stop-on-overfit 0.2 --weight-decay 1e-3 --schedule cyclic &
    fast_job gradalign_sgd_cyclic_l1 --method gradalign --stop-on-overfit 0.2 --optimizer sgd --lr 0.05 --schedule cyclic --align-weight 1 &
    fast_job gradalign_sgd_cyclic_rs_l05_ramp2 --method gradalign --random-start --step-size 0.375 --stop-on-overfit 0.2 --optimizer sgd --lr 0.05 --schedule cyclic --align-weight 0.5 --eps-ramp 2 &
elif [ "$SWEEP" = 6 ]; then
    onecycle=(--method fast --stop-on-overfit 0.2 --optimizer sgd --lr 0.1 --eps-ramp 2 --weight-decay 5e-4)
    cyclic=(--method fast --stop-on-overfit 0.2 --optimizer sgd --lr 0.05 --schedule cyclic --eps-ramp 2)
    fast_job sgd_onecycle_lr1_ramp2_wd5e4_seed1 "${onecycle[@]}" --seed 1 &
    fast_job sgd_onecycle_lr1_ramp2_wd5e4_seed2 "${onecycle[@]}" --seed 2 &
    fast_job sgd_onecycle_lr1_ramp2_wd5e4_seed3 "${onecycle[@]}" --seed 3 &
    fast_job sgd_cyclic_ramp2_seed1 "${cyclic[@]}" --seed 1 &
    fast_job sgd_cyclic_ramp2_seed2 "${cyclic[@]}" --seed 2 &
    fast_job sgd_cyclic_ramp2_wd5e4 "${cyclic[@]}" --weight-decay 5e-4 &
    fast_job sgd_cyclic_ramp2_wd5e4_seed1 "${cyclic[@]}" --weight-decay 5e-4 --seed 1 &
    fast_job sgd_cyclic_ramp2_wd5e4_seed2 "${cyclic[@]}" --weight-decay 5e-4 --seed 2 &
    fast_job small_sgd_onecycle_lr1_ramp2_wd5e4 "${onecycle[@]}" --model small_cnn &
    fast_job small_sgd_onecycle_lr1_ramp2_wd5e4_seed1 "${onecycle[@]}" --model small_cnn --seed 1 &
else
    fast_job nfgsm --method nfgsm &
    fast_job nfgsm_seed1 --method nfgsm --seed 1 &
    fast_job nfgsm_ramp2 --method nfgsm --eps-ramp 2 &
    fast_job nfgsm_ramp2_seed1 --method nfgsm --eps-ramp 2 --seed 1 &
    fast_job nfgsm_e15_ramp3 --method nfgsm --epochs 15 --eps-ramp 3 &
    fast_job fast_ramp2 --method fast --eps-ramp 2 &
    fast_job fast_ramp2_seed1 --method fast --eps-ramp 2 --seed 1 &
    fast_job fast_e15_ramp3_guard --method fast --epochs 15 --eps-ramp 3 --stop-on-overfit 0.2 &
    fast_job small_fast --method fast --model small_cnn &
    fast_job small_fast_seed1 --method fast --model small_cnn --seed 1 &
    fast_job small_nfgsm --method nfgsm --model small_cnn &
    fast_job small_fast_ramp2 --method fast --model small_cnn --eps-ramp 2 &
    fast_job pgd_ref --method pgd &
fi
wait
echo "all jobs done in $(( $(date +%s) - START )) s" >>"$OUT/device.txt"
tar -C "$WORK" -czf "$OUT/logs.tgz" --exclude='*.safetensors' . 2>/dev/null
# bring back the strongest fast-trained checkpoint (three from sweep 4 on) and the small CIFAR ones
python3 - "$OUT/summary.jsonl" "$SWEEP" <<'PY' | while read -r f; do cp "$WORK/$f.safetensors" "$OUT/" 2>/dev/null; done
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
fast = [r for r in rows if r["kind"] == "fast" and r["status"] == "ok"]
for row in sorted(fast, key=lambda r: r["worst"], reverse=True)[:3 if int(sys.argv[2]) >= 4 else 1]:
    print(row["name"])
if sys.argv[2] == "1":
    print("cifar_cnn_w48"); print("cifar_cnn_w64")
PY
