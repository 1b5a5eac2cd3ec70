#!/usr/bin/env bash
# One prepared run on a CUDA machine (about 8 minutes; see benchmarks/RESULTS.md for what it found):
#   1. starts two GAN trainings in the background on the GPU, for TRAIN_MIN minutes each:
#      cpu-small (the shipped generator's config) and paper (the paper's 512-channel model), batch 64;
#   2. meanwhile builds failatlas._C with its CUDA kernels (FAILATLAS_CUDA=ON) and runs the tests that
#      compare every CUDA op with its CPU reference (tests/ops) plus the model and trainer tests
#      (a CUDA training run that resumes included);
#   3. judges both trained generators with eval-gan (n = 10000, generator on the GPU);
#   4. times generation, the ranking gradient and the native op (benchmarks/gpu_timing.py);
#   5. packs the cpu-small run folder (its checkpoint.pt too, so training can be resumed elsewhere) as
#      soon as training ends, into $OUT/run-cpu-small.tar.part-* (15 MB pieces: cat them | tar -x), and
#      at the end the logs, metrics, sample grids, eval JSON and timings into $OUT/gpu-check.tar.
# A step that fails is logged and the rest still run; if both trainings die at once the run ends early.
# Usage: OUT=/some/dir TRAIN_MIN=5.5 bash benchmarks/gpu_check.sh   (python3 must have a CUDA torch)
# Dry run on a CPU machine: DEVICE=cpu SKIP_BUILD=1 TRAIN_MIN=0.2 EVAL_N=200 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
TRAIN_MIN=${TRAIN_MIN:-5.5}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
EVAL_N=${EVAL_N:-10000}
CONFIGS=${CONFIGS:-cpu-small paper}  # which generator configs to train
SKIP_TIMING=${SKIP_TIMING:-}
W=/tmp/failatlas-gpu-check
rm -rf "$W" && mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
log() { echo "[gpu_check $(date -u +%T)] $*" | tee -a "$W/steps.log"; }

log "start; TRAIN_MIN=$TRAIN_MIN"
nvidia-smi >"$W/nvidia-smi.txt" 2>&1 || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1 | tee -a "$W/steps.log"

# 1. trainings (pure Python: they need no native build)
pids=()
for cfg in $CONFIGS; do
  PYTHONPATH=python $PY -m failatlas train-gan --dataset mnist --train-on corrupted --config "$cfg" --batch 64 \
    --kimg 100000 --max-minutes "$TRAIN_MIN" --snapshot-kimg 200 --seed 0 --device "$DEVICE" \
    --out "$W/$cfg" >"$W/train-$cfg.log" 2>&1 &
  pids+=($!)
done
log "trainings started: ${pids[*]}"

# 2. native build with CUDA, then the tests
t=$(date +%s)
if [ -z "${SKIP_BUILD:-}" ]; then
  TORCH_CUDA_ARCH_LIST=9.0 FAILATLAS_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=12 \
    $PY -m pip install --no-build-isolation --no-deps --no-index -v -e . >"$W/build.log" 2>&1
  log "build rc=$? in $(( $(date +%s) - t )) s"
fi
t=$(date +%s)
$PY -m pytest -q -p no:cacheprovider tests/ops tests/models tests/training/test_gan.py >"$W/pytest.log" 2>&1
log "pytest rc=$? in $(( $(date +%s) - t )) s: $(tail -n 1 "$W/pytest.log")"

# 3. wait for the trainings, then judge what they made
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; log "training ${pids[$i]} rc=$?"
done
for cfg in $CONFIGS; do
  tail -n 2 "$W/train-$cfg.log" | tee -a "$W/steps.log"
  tail -n 1 "$W/$cfg/metrics.jsonl" 2>/dev/null | tee -a "$W/steps.log"
done
# what matters most comes back first, even if a later step overruns the time limit
tar -C "$W" -cf - cpu-small steps.log train-cpu-small.log train-paper.log build.log pytest.log 2>/dev/null \
  | split -b 15M - "$OUT/run-cpu-small.tar.part-"
epids=()
for cfg in $CONFIGS; do
  if [ -f "$W/$cfg/generator.safetensors" ]; then
    OMP_NUM_THREADS=7 PYTHONPATH=python $PY -m failatlas eval-gan --generator "$W/$cfg" \
      --classifier models/mnist/classifier-corrupted --n "$EVAL_N" --device "$DEVICE" --json \
      >"$W/eval-gan-$cfg.json" 2>"$W/eval-gan-$cfg.log" &
    epids+=($!)
  fi
done

# 4. timings (while the evaluations run on the CPU)
if [ -z "$SKIP_TIMING" ]; then
  t=$(date +%s)
  $PY benchmarks/gpu_timing.py --device "$DEVICE" --json "$W/timing.json" >"$W/timing.log" 2>&1
  log "timing rc=$? in $(( $(date +%s) - t )) s"
fi
for p in "${epids[@]}"; do wait "$p"; log "eval $p rc=$?"; done
cat "$W"/eval-gan-*.json "$W/timing.json" 2>/dev/null

# 5. pack the rest (the paper run's weights and checkpoint are too large to bring back: its figures come)
rm -f "$W/paper/checkpoint.pt" "$W/paper/generator.safetensors"
tar -C "$W" --exclude=./cpu-small -cf "$OUT/gpu-check.tar" .
log "packed: $(ls "$OUT" | tr '\n' ' ')"
