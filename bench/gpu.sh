#!/usr/bin/env bash
# The CIFAR-10 results at full scale, one prepared run per call, for a short GPU window (docs/gpu.md).
#
#   bench/gpu.sh RUN OUT_DIR CIFAR_DATA_DIR [DEADLINE_SECONDS]
#
# RUN is one of:
#   speed      bench/gpu_speed.py: the hot paths against their bare passes (cifar_cnn, preact_resnet18)
#   fast       Wong et al. 2020's fast adversarial training of PreAct ResNet-18 (15 epochs, eps 8/255, FGSM
#              step 10/255 from a random start, cyclic lr to 0.2, SGD, weight decay 5e-4, bf16 autocast),
#              then `advlab evaluate` (PGD-50 x 10, FGSM, C&W margin, worst case) on 1,000 test images
#   fast-carry the same with the carried start (--fgsm-start carry, step 4/255) of ATTA, without random crops
#   pgd        PGD-10 adversarial training of PreAct ResNet-18 (eps 8/255, step 2/255; Madry et al., Rice et
#              al.'s piecewise schedule), EPOCHS epochs (default 10: as many as a window allows), evaluated as above
#   smoothing  a Gaussian-noise PreAct ResNet-18 (sigma 0.25, EPOCHS, default 30), then CERTIFY on 500 test
#              images (every 20th) at n = 100,000 (Cohen et al. 2019), the batch size chosen from memory
#   backdoor   the 'deer' patch pipeline at full width: cifar_cnn (width 32) and preact_resnet18, attack
#              success before and after SPECTRE, spectral signatures and activation clustering
#
# Runs advlab from this checkout's src/ with whatever python3 has torch (nothing to install). Writes
# OUT_DIR/RUN.json (the figures, GPU, driver, torch version, wall time per step) and OUT_DIR/RUN.log, and
# copies the checkpoints to OUT_DIR so they can come back and be re-evaluated on a CPU. A step still running
# at the deadline is stopped and recorded as such. DEVICE (default cuda) and SMOKE=1 (a few hundred images,
# tiny budgets, cifar_cnn of width 8 in place of PreAct ResNet-18) run the script on a CPU in a minute; the
# test suite does so.
set -u
RUN=${1:?RUN (speed, fast, fast-carry, pgd, smoothing, backdoor)}; OUT=${2:?OUT_DIR}; DATA=${3:?CIFAR_DATA_DIR}
DEADLINE=${4:-540}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export ADVLAB_CACHE=${ADVLAB_CACHE:-$OUT/cache}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT" "$ADVLAB_CACHE"
START=$(date +%s)
EPS=0.03137254901960784      # 8/255
EVAL=(--n 1000 --steps 50 --restarts 10 --blackbox-n 100 --unbounded-n 200)
PRECISION=(--precision bf16)
if [ "${SMOKE:-0}" = 1 ]; then
    TRAIN=(--train-subset 128 --epochs 1); EVAL=(--n 10 --steps 3 --restarts 1 --blackbox-n 4 --blackbox-queries 20 --unbounded-n 4)
    CERT=(--n-images 2 --skip 1 --n 200 --n0 20); BACKDOOR=(--epochs 1 --train-subset 1000 --n-poison 30 --n-test 100)
    EPOCHS=1; MODEL=(--model cifar_cnn --width 8); MODELS=("cifar_cnn --width 8")
else
    TRAIN=(); CERT=(--n-images 500 --skip 20 --n 100000 --n0 100); BACKDOOR=(); EPOCHS=${EPOCHS:-}
    MODEL=(--model preact_resnet18); MODELS=("cifar_cnn" "preact_resnet18")
fi
LOG=$OUT/$RUN.log
STEPS=$OUT/$RUN.steps.jsonl
: >"$STEPS"
FAILED=0

left() { echo $(( DEADLINE - ($(date +%s) - START) )); }

step() {  # NAME COMMAND...: run one advlab command within what is left of the deadline, record how it ended
    local name=$1; shift
    local t0=$(date +%s) budget
    budget=$(left)
    if [ "$budget" -le 5 ]; then
        echo "{\"step\": \"$name\", \"status\": \"skipped: deadline\"}" >>"$STEPS"; return 1
    fi
    echo "== $name: $*" >>"$LOG"
    timeout --signal=TERM --kill-after=10 "$budget" "$PY" -m advlab "$@" --device "$DEVICE" --no-progress >>"$LOG" 2>&1
    local rc=$?
    local status=ok; [ $rc -eq 124 ] && status="stopped at the deadline"; [ $rc -ne 0 ] && [ $rc -ne 124 ] && status="failed ($rc)"
    echo "{\"step\": \"$name\", \"status\": \"$status\", \"seconds\": $(( $(date +%s) - t0 ))}" >>"$STEPS"
    [ $rc -eq 0 ] || FAILED=1
    [ $rc -eq 0 ]
}

case $RUN in
speed)
    if [ "${SMOKE:-0}" = 1 ]; then SPEED=(--smoke --models cifar_cnn); else SPEED=(); fi
    timeout "$(left)" "$PY" "$ROOT/bench/gpu_speed.py" --device "$DEVICE" --out "$OUT/speed_rows.json" "${SPEED[@]}" \
        >>"$LOG" 2>&1 && echo '{"step": "speed", "status": "ok"}' >>"$STEPS" || FAILED=1
    ;;
fast|fast-carry)
    # the carried start refuses random crops (ATTA's re-alignment of the stored perturbation is not implemented)
    START_OPT=(); [ "$RUN" = fast-carry ] && START_OPT=(--fgsm-start carry --step-size 0.01568627450980392 --no-augment)
    step train defend --method fast --dataset cifar10 --data-dir "$DATA" "${MODEL[@]}" --eps $EPS \
        --optimizer sgd --lr 0.2 --weight-decay 5e-4 --schedule cyclic --epochs ${EPOCHS:-15} --batch-size 128 \
        "${START_OPT[@]}" "${PRECISION[@]}" "${TRAIN[@]}" --checkpoint "$OUT/$RUN.safetensors" --out "$OUT/$RUN-train" &&
    step evaluate evaluate "$OUT/$RUN.safetensors" --dataset cifar10 --data-dir "$DATA" --eps $EPS "${EVAL[@]}" \
        --json "$OUT/$RUN-eval.json" --out "$OUT/$RUN-eval"
    ;;
pgd)
    step train defend --method pgd --dataset cifar10 --data-dir "$DATA" "${MODEL[@]}" --eps $EPS \
        --steps 10 --step-size 0.00784313725490196 --optimizer sgd --lr 0.1 --weight-decay 5e-4 --schedule step \
        --epochs ${EPOCHS:-10} --batch-size 128 "${PRECISION[@]}" "${TRAIN[@]}" \
        --checkpoint "$OUT/$RUN.safetensors" --out "$OUT/$RUN-train" &&
    step evaluate evaluate "$OUT/$RUN.safetensors" --dataset cifar10 --data-dir "$DATA" --eps $EPS "${EVAL[@]}" \
        --json "$OUT/$RUN-eval.json" --out "$OUT/$RUN-eval"
    ;;
smoothing)
    step train defend --method noise --sigma 0.25 --dataset cifar10 --data-dir "$DATA" "${MODEL[@]}" \
        --optimizer sgd --lr 0.1 --weight-decay 5e-4 --epochs ${EPOCHS:-30} "${PRECISION[@]}" "${TRAIN[@]}" \
        --checkpoint "$OUT/$RUN.safetensors" --out "$OUT/$RUN-train" &&
    step certify certify "$OUT/$RUN.safetensors" --dataset cifar10 --data-dir "$DATA" "${CERT[@]}" \
        --out "$OUT/$RUN-certify"
    ;;
backdoor)
    for spec in "${MODELS[@]}"; do
        read -r -a arch <<<"$spec"
        step "${arch[0]}" backdoor --dataset cifar10 --data-dir "$DATA" --model "${arch[@]}" --defense all "${BACKDOOR[@]}" \
            --out "$OUT/$RUN-${arch[0]}"
    done
    ;;
*)
    echo "unknown run $RUN; choose speed, fast, fast-carry, pgd, smoothing or backdoor" >&2; exit 2
    ;;
esac

"$PY" - "$OUT" "$RUN" "$(( $(date +%s) - START ))" <<'PY'
import json, sys
from pathlib import Path

out, run, wall = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
record = {"run": run, "wall_seconds": wall,
          "steps": [json.loads(line) for line in (out / f"{run}.steps.jsonl").read_text().splitlines() if line]}
try:
    import torch
    record["torch"] = torch.__version__
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(0)
        record["cuda"] = torch.version.cuda
        import subprocess
        record["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                          capture_output=True, text=True).stdout.strip() or None
except Exception as exc:  # the record is still worth keeping
    record["environment_error"] = repr(exc)
for folder in sorted(out.glob(f"{run}-*")):
    for name in ("metrics.json",):
        if (folder / name).is_file():
            record.setdefault("metrics", {})[folder.name] = json.loads((folder / name).read_text())
if (out / "speed_rows.json").is_file() and run == "speed":
    record["speed"] = json.loads((out / "speed_rows.json").read_text())
(out / f"{run}.json").write_text(json.dumps(record, indent=2) + "\n")
print(json.dumps({k: record[k] for k in ("run", "wall_seconds", "steps")}))
PY
exit $FAILED
