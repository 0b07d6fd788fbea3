#!/usr/bin/env bash
# One prepared run on a lent GPU (the `device` tool's H200, or any CUDA machine with jax, flax, optax, orbax,
# scipy, scikit-learn, matplotlib and pytest installed): what runs there, and how fast. Each step has its own
# time limit, so a slow step costs only itself; everything goes to $OUT/gpu_check.log (and JSON beside it).
#
#     OUT=/tmp/gpu bash bench/gpu_check.sh      # needs runs/clip, runs/clip-s1, runs/vqgan for the clip-guided step
#
# Steps: the environment; CLIP-guided generation (40 typed prompts, one image and best of 2) through runs/vqgan;
# `minimodal tour --fast`; a subset of the unit tests on the GPU; the default DDPM trained and evaluated.
set -u
export OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
py=${PYTHON:-python3}
step() { echo "== $(date +%T) $*"; }
{
step environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
jax.devices())"

step clip-guided
timeout 90 $py - <<'EOF'
import json, os
from minimodal import clip_guided
one = clip_guided.evaluate(clip_guided.ClipGuided("runs/clip", "runs/vqgan"), per_pair=2, seed=0)
two = clip_guided.evaluate(clip_guided.ClipGuided("runs/clip", "runs/vqgan", judge="runs/clip-s1"), per_pair=2,
                           seed=0, candidates=2)
print(json.dumps({"one_image": one, "best_of_2": two}, indent=1))
json.dump({"one_image": one, "best_of_2": two}, open(os.environ["OUT"] + "/clip_guided.json", "w"), indent=1)
EOF

step tour-fast
start=$(date +%s)
timeout 190 $py -m minimodal tour --fast --workdir /tmp/tour-fast > "$OUT/tour_fast.log" 2>&1
echo "tour --fast: rc $?, $(( $(date +%s) - start )) s"
cp /tmp/tour-fast/results.json "$OUT/tour_fast.json" 2>/dev/null

step tests
# first the tests suspected of one unexplained failure on 2026-12-04 (bench/results/gpu.md), with tracebacks
timeout 60 $py -m pytest -q -p no:cacheprovider -p no:benchmark --tb=short -rf tests/test_dalle.py \
    -k "cache or guid or greedy or argmax" 2>&1 | tail -40
timeout 80 $py -m pytest -v -n 8 -p no:cacheprovider -p no:benchmark --tb=line tests/test_unet.py tests/test_nn_attention.py \
    tests/test_ddpm.py tests/test_clip.py tests/test_dalle.py tests/test_clip_guided.py tests/test_train.py \
    tests/test_vqvae.py 2>&1 | grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed|Error|assert" | tail -150

step ddpm-default
start=$(date +%s)
timeout 110 $py -m minimodal train ddpm --data shapes --workdir /tmp/ddpm micro_batches=1 2>&1 | tail -5
echo "train ddpm (default, micro_batches=1): $(( $(date +%s) - start )) s"
start=$(date +%s)
timeout 50 $py -m minimodal eval ddpm --workdir /tmp/ddpm 2>&1 | tail -25
echo "eval ddpm: $(( $(date +%s) - start )) s"
step done
} 2>&1 | tee "$OUT/gpu_check.log"
