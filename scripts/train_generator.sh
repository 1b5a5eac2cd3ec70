#!/usr/bin/env bash
# Trains the shipped MNIST generator (models/mnist/generator): cpu-small on the corrupted MNIST-10k train
# split. Resumable: run it again to continue. Copy the EMA weights into models/ when done:
#   cp runs/generator-cpu-small/{generator.safetensors,config.json} models/mnist/generator/
set -euo pipefail
cd "$(dirname "$0")/.."
KIMG=${KIMG:-600}
OUT=${OUT:-runs/generator-cpu-small}
resume=()
[ -f "$OUT/checkpoint.pt" ] && resume=(--resume)
tcmalloc=$(ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal.so.4 /{p=$NF} END{print p}')
OMP_WAIT_POLICY=PASSIVE LD_PRELOAD=${tcmalloc} FAILATLAS_PROGRESS=1 PYTHONPATH=python .venv/bin/python -m failatlas train-gan \
  --dataset mnist --train-on corrupted --config cpu-small --batch 32 --kimg "$KIMG" --seed 0 --threads 2 \
  --snapshot-kimg 4 --out "$OUT" "${resume[@]}"
