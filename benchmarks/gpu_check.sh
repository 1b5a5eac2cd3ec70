#!/usr/bin/env bash
# One prepared run on a CUDA machine (about 8 minutes; see benchmarks/RESULTS.md for what it found):
#   1. starts GAN trainings in the background on the GPU, side by side, for TRAIN_MIN minutes each, batch 64:
#      by default cpu-small (the shipped generator's config), wide-latent (cpu-small's synthesis with the
#      paper's 512-dimensional z and w: issue 4's separation goal, see README "The analysis") and paper (the
#      paper's 512-channel model);
#      RUNS="name|train-gan options;name|options;..." trains other variants (at batch 64 each run is bound
#      by Python and kernel launches, so several share one GPU at nearly full speed);
#   2. meanwhile builds failatlas._C with its CUDA kernels (FAILATLAS_CUDA=ON) and runs the tests that
#      compare every CUDA op with its CPU reference (tests/ops) plus the model and trainer tests
#      (a CUDA training run that resumes included);
#   3. judges the trained generators with eval-gan (n = 10000, generator on the GPU) and, on the CPU,
#      ranks each cpu-small-sized one with `failatlas rank --n RANK_N` (default 2000; 0: off): issue 4's
#      KS ratio (top 10 vs 10 random dims), the failure direction's spread and how many independent
#      directions the styles span, one line per run;
#   4. times generation, the ranking gradient and every native op (benchmarks/gpu_timing.py);
#   5. packs the run folder of PACK (default: the first run; "best": the run with the best eval-gan
#      figures, see below) with its checkpoint.pt, so training can be resumed elsewhere, into
#      $OUT/run-NAME.tar.part-* (15 MB pieces: cat them | tar -x), and at the end the logs, metrics,
#      sample grids, every run's EMA generator (not the paper config's: too large), eval JSON and timings
#      into $OUT/gpu-check.tar.
# A step that fails is logged and the rest still run.
# Usage: OUT=/some/dir TRAIN_MIN=5.5 bash benchmarks/gpu_check.sh   (python3 must have a CUDA torch)
# Dry run on a CPU machine: DEVICE=cpu SKIP_BUILD=1 TRAIN_MIN=0.2 EVAL_N=200 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
TRAIN_MIN=${TRAIN_MIN:-5.5}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
EVAL_N=${EVAL_N:-10000}
RANK_N=${RANK_N:-2000}
RUNS=${RUNS:-"cpu-small|--config cpu-small;wide-latent|--config wide-latent;paper|--config paper"}
SKIP_TIMING=${SKIP_TIMING:-}
IFS=';' read -ra RUN_LIST <<<"$RUNS"
NAMES=()
for r in "${RUN_LIST[@]}"; do NAMES+=("${r%%|*}"); done
PACK=${PACK:-${NAMES[0]}}
W=/tmp/failatlas-gpu-check
rm -rf "$W" && mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
log() { echo "[gpu_check $(date -u +%T)] $*" | tee -a "$W/steps.log"; }

log "start; TRAIN_MIN=$TRAIN_MIN"
nvidia-smi >"$W/nvidia-smi.txt" 2>&1 || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))" 2>&1 | tee -a "$W/steps.log"

# 1. trainings (pure Python: they need no native build)
pids=()
for r in "${RUN_LIST[@]}"; do
  name=${r%%|*}
  # shellcheck disable=SC2086  # the options are meant to split into words
  PYTHONPATH=python $PY -m failatlas train-gan --dataset mnist --train-on corrupted --batch 64 \
    --kimg 100000 --max-minutes "$TRAIN_MIN" --snapshot-kimg 200 --seed 0 --device "$DEVICE" \
    ${r#*|} --out "$W/$name" >"$W/train-$name.log" 2>&1 &
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
for name in "${NAMES[@]}"; do
  tail -n 2 "$W/train-$name.log" | tee -a "$W/steps.log"
  tail -n 1 "$W/$name/metrics.jsonl" 2>/dev/null | tee -a "$W/steps.log"
done
pack_run() {  # the run folder with its checkpoint, in pieces small enough to come back
  tar -C "$W" -cf - "$1" steps.log build.log pytest.log 2>/dev/null | split -b 15M - "$OUT/run-$1.tar.part-"
  log "packed run $1"
}
# what matters most comes back first, even if a later step overruns the time limit
[ "$PACK" != best ] && pack_run "$PACK"
epids=()
threads=$(( 14 / ${#NAMES[@]} )); [ "$threads" -lt 1 ] && threads=1
for name in "${NAMES[@]}"; do
  if [ -f "$W/$name/generator.safetensors" ]; then
    OMP_NUM_THREADS=$threads PYTHONPATH=python $PY -m failatlas eval-gan --generator "$W/$name" \
      --classifier models/mnist/classifier-corrupted --n "$EVAL_N" --device "$DEVICE" --json \
      >"$W/eval-gan-$name.json" 2>"$W/eval-gan-$name.log" &
    epids+=($!)
  fi
done

if [ "$RANK_N" -gt 0 ]; then  # the analysis' view of each generator (not the paper config's 5,632 dims)
  for name in "${NAMES[@]}"; do
    if [ "$name" != paper ] && [ -f "$W/$name/generator.safetensors" ]; then
      OMP_NUM_THREADS=$threads PYTHONPATH=python $PY -m failatlas rank --generator "$W/$name" --n "$RANK_N" \
        --out "$W/rank-$name" >"$W/rank-$name.log" 2>&1 &
      epids+=($!)
    fi
  done
fi

# 4. timings (while the evaluations run on the CPU)
if [ -z "$SKIP_TIMING" ]; then
  t=$(date +%s)
  $PY benchmarks/gpu_timing.py --device "$DEVICE" --json "$W/timing.json" >"$W/timing.log" 2>&1
  log "timing rc=$? in $(( $(date +%s) - t )) s"
fi
for p in "${epids[@]}"; do wait "$p"; log "eval $p rc=$?"; done
for name in "${NAMES[@]}"; do  # issue 4's figures of each ranked generator, one line each
  [ -f "$W/rank-$name/ranking.json" ] && PYTHONPATH=python $PY - "$W/rank-$name/ranking.json" "$name" <<'PYEOF' | tee -a "$W/steps.log"
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
d = s.get("latent_direction")
where = (f"half its effect over {d['dims_for_half']} dims; dims' mean KS {d['mean_ks_heldout']:.3f} -> "
         f"{d['mean_ks_removed']:.3f} without it (chance {d['mean_ks_shuffled']:.3f})") if d else \
    f"none ({s.get('latent_direction_error')})"
import numpy as np, torch
from failatlas.analysis.direction import effective_dimension
styles = torch.from_numpy(np.load(sys.argv[1].replace("ranking.json", "population.npz"))["s"])
span = f"; styles span {effective_dimension(styles):.1f} directions"
print(f"rank {sys.argv[2]}: top10 KS {s['top10_mean_ks']:.3f} vs random10 {s['random10_mean_ks']:.3f} "
      f"({s['top10_mean_ks'] / s['random10_mean_ks']:.2f}x, goal 2); failure direction: {where}{span}")
PYEOF
done
cat "$W/timing.json" 2>/dev/null
# one line per run; the last line names the best: lowest corruption_tv (const noise) plus the shortfall
# of within-class diversity below 0.8 and of the lowest class accuracy below 0.9 (issue 3's bar)
best=$($PY benchmarks/pick_best.py "$W" "${NAMES[@]}" 2>&1 | tee -a "$W/steps.log" | tail -n 1)
[ "$PACK" = best ] && [ -n "$best" ] && pack_run "$best"

# 5. pack the rest (the paper run's weights and checkpoint are too large to bring back: its figures come)
rm -f "$W"/*/checkpoint.pt "$W/paper/generator.safetensors"
tar -C "$W" -cf "$OUT/gpu-check.tar" .
log "packed: $(ls "$OUT" | tr '\n' ' ')"
