#!/usr/bin/env bash
# Ships the EMA generator of a training run (scripts/train_generator.sh) as models/mnist/generator: the
# weights and config rebuilt from the run's checkpoint (so they say how far it got), its sample grid and
# metrics, and eval-gan's JSON with the shipped corrupted-trained classifier (quoted by the model card).
#   RUN=DIR          the train-gan output folder (default runs/generator-cpu-small)
#   METRICS="A B"    metrics.jsonl files to join, oldest first (default: the run's own; a warm-started
#                    run's history begins in the run it started from)
#   INIT_FROM=TEXT   what the run was warm-started from, as the shipped config.json should say it
#   EVAL_JSON=FILE   an eval-gan JSON already measured on these very weights (checked by the weights'
#                    sha256 in the file's "generator_sha256" key) instead of measuring again
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
import os
init = os.environ.get("INIT_FROM") or ck.get("init_from")
record = training_record(GANTrainConfig.from_saved(ck["train_config"]), ck["nimg"], ck["step"], init)
save_generator(G, dest, extra={"training": record})
print(f"shipped the EMA generator at kimg {ck['nimg'] / 1000:.2f} (step {ck['step']}) to {dest}")
PY
cp "$RUN/samples-latest.png" "$DEST/samples.png"
cp "$RUN/samples-latest.json" "$DEST/samples.json"
# shellcheck disable=SC2086  # a list of files
cat ${METRICS:-"$RUN/metrics.jsonl"} > "$DEST/metrics.jsonl"
if [ -n "${EVAL_JSON:-}" ]; then
  want=$(sha256sum "$DEST/generator.safetensors" | cut -d' ' -f1)
  have=$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1])).get('generator_sha256', ''))" "$EVAL_JSON")
  [ "$want" = "$have" ] || { echo "EVAL_JSON $EVAL_JSON was measured on other weights ($have, shipped $want)" >&2; exit 1; }
  cp "$EVAL_JSON" "$DEST/eval-gan.json"
else
  tcmalloc=$(ldconfig -p 2>/dev/null | awk '/libtcmalloc_minimal.so.4 /{p=$NF} END{print p}')
  LD_PRELOAD=${tcmalloc} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/failatlas eval-gan --generator "$DEST" \
    --classifier models/mnist/classifier-corrupted --n "${N:-10000}" --json > "$DEST/eval-gan.json.tmp"
  mv "$DEST/eval-gan.json.tmp" "$DEST/eval-gan.json"
fi
cat "$DEST/eval-gan.json"
