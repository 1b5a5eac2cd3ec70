#!/usr/bin/env bash
# Train and evaluate the two shipped MNIST classifiers (DESIGN §2):
#   models/mnist/classifier-clean      trained on clean MNIST-10k training digits
#   models/mnist/classifier-corrupted  trained on the corrupted mix (paper blur)
# Recipe: the train-classifier defaults (Adam, batch 64, 20 epochs, one-cycle max lr 1e-3, ±2 px shifts), seed 0.
# Each folder gets config.json, model.safetensors, training.json (per-epoch log, wall time, machine) and
# eval-clean.json / eval-corrupted.json (eval-classifier on the test split). Run from anywhere; CPU only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}"

for kind in clean corrupted; do
    out="models/mnist/classifier-$kind"
    "$PY" -m failatlas train-classifier --dataset mnist --train-on "$kind" --epochs 20 --seed 0 --overwrite --out "$out"
    for on in clean corrupted; do
        "$PY" -m failatlas eval-classifier --model "$out" --dataset mnist --on "$on" --json > "$out/.eval-$on.json.tmp"
        mv "$out/.eval-$on.json.tmp" "$out/eval-$on.json"
        "$PY" -m failatlas eval-classifier --model "$out" --dataset mnist --on "$on"
    done
done
