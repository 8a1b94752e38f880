#!/usr/bin/env bash
# The GPU benchmark of docs/BENCHMARKS.md, as one command for a machine with an NVIDIA GPU
# whose Python already holds CUDA builds of JAX and torch (plus flax, optax, tqdm, matplotlib):
#
#     JAXDL_MNIST_DIR=/path/to/mnist OUT=/tmp/out bash scripts/gpu_benchmark.sh
#
# It uses that machine's own JAX and torch (no install: this project pins the CPU builds), so
# the versions are printed and recorded in each JSON. Writes $OUT/gpu-*.json and logs.
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=.5 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
    "$PY" -c 'import jax, flax, optax, torch, sys; print(sys.version.split()[0], "jax", jax.__version__, jax.devices(), "flax", flax.__version__, "optax", optax.__version__, "torch", torch.__version__, torch.cuda.is_available())'
} 2>&1 | tee "$OUT/env.txt"
# 1. The headline: siamese_aux (step, run, 10-run sweep loop vs vmap) and Project II.
timeout 270 "$PY" scripts/benchmark.py --models siamese_aux --repeats 3 \
    --json "$OUT/gpu-siamese_aux.json" 2>&1 | tee "$OUT/gpu-siamese_aux.md"
# 2. The other Project I models (Project II shortened: measured in 1).
timeout 150 "$PY" scripts/benchmark.py --models mlp cnn siamese cnn_aux siamese_exact \
    --sweep-models siamese_exact --repeats 3 --framework-epochs 2 \
    --json "$OUT/gpu-other-models.json" 2>&1 | tee "$OUT/gpu-other-models.md"
# 3. The CLI on the GPU: the default model, 10 runs; its error should match the CPU's.
rm -rf /tmp/jaxdl-gpu-train
timeout 90 "$PY" scripts/train_flax.py --runs 10 --out /tmp/jaxdl-gpu-train 2>&1 \
    | tail -n 25 | tee "$OUT/train_flax.txt"
cp /tmp/jaxdl-gpu-train/results.json "$OUT/train_flax-results.json"
# 4. The same runs trained together (--sweep: every run batched with vmap, scanned epochs).
rm -rf /tmp/jaxdl-gpu-sweep
timeout 90 "$PY" scripts/train_flax.py --runs 10 --sweep --out /tmp/jaxdl-gpu-sweep 2>&1 \
    | tail -n 25 | tee "$OUT/train_flax-sweep.txt"
cp /tmp/jaxdl-gpu-sweep/results.json "$OUT/train_flax-sweep-results.json"
