#!/usr/bin/env bash
# Ships the EMA generator of a training run (scripts/train_generator.sh) as models/mnist/generator: the
# weights and config rebuilt from the run's checkpoint (so they say how far it got), its sample grid and
# metrics, and eval-gan's JSON with the shipped corrupted-trained classifier (quoted by the model card).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/generator-cpu-small}
DEST=models/mnist/generator
mkdir -p "$DEST"
.venv/bin/python - "$RUN" "$DEST" <<'PY'
import sys
from failatlas._io import load_checkpoint
from failatlas.models.stylegan2 import Generator, StyleGANConfig, save_generator
from failatlas.training.gan import GANTrainConfig, training_record
run, dest = sys.argv[1:]
ck = load_checkpoint(f"{run}/checkpoint.pt", "training checkpoint")
G = Generator(StyleGANConfig.from_json(ck["arch"]))
G.load_state_dict(ck["G_ema"])
save_generator(G, dest, extra={"training": training_record(GANTrainConfig(**ck["train_config"]), ck["nimg"], ck["step"])})
print(f"shipped the EMA generator at kimg {ck['nimg'] / 1000:.2f} (step {ck['step']}) to {dest}")
PY
cp "$RUN/samples-latest.png" "$DEST/samples.png"
cp "$RUN/samples-latest.json" "$DEST/samples.json"
cp "$RUN/metrics.jsonl" "$DEST/metrics.jsonl"
tcmalloc=$(ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal.so.4 /{p=$NF} END{print p}')
LD_PRELOAD=${tcmalloc} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/failatlas eval-gan --generator "$DEST" \
  --classifier models/mnist/classifier-corrupted --n "${N:-10000}" --json > "$DEST/eval-gan.json.tmp"
mv "$DEST/eval-gan.json.tmp" "$DEST/eval-gan.json"
cat "$DEST/eval-gan.json"
