#!/usr/bin/env bash
# Reproduces the white-box benchmark (docs/benchmarks.md) with one command:
#   bench/run_whitebox.sh [--quick] [other bench/whitebox.py options]
# Builds the peers' environment (.venv-peers: torch + torchattacks, Foolbox, ART, installed --no-deps)
# if it is missing, adds the two small packages advlab's loaders need (safetensors, pillow), and runs
# advlab and the peers in that one environment, advlab from the source tree (PYTHONPATH=src).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PEERS_VENV:-.venv-peers}
if [ ! -x "$venv/bin/python" ]; then
  bash ../shared/tools/peers-venv.sh "$venv"
fi
"$venv/bin/python" -c "import safetensors, PIL" 2>/dev/null || "$venv/bin/pip" install -q safetensors pillow
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src exec "$venv/bin/python" bench/whitebox.py "$@"
