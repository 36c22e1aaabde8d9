#!/usr/bin/env bash
# `notme bench` on an NVIDIA GPU through MLX's CUDA backend (mlx[cuda13]).
#
#   benchmarks/bench_cuda.sh OUT_DIR [PYTHON]
#
# The model is SmolLM2-135M's architecture with random weights (preset smollm2-135m-arch), so
# no checkpoint has to travel to the GPU box; step cost depends on shapes, not weight values.
# Two shapes of step: the CPU benchmark's (seq 256, 4 rows / 1,024-token budget) and a
# GPU-sized one (seq 512, 16 rows / 8,192-token budget). Each run is its own process.
set -euo pipefail
out=${1:?usage: bench_cuda.sh OUT_DIR [PYTHON]}
py=${2:-python3}
mkdir -p "$out"
export NOTME_BLAS=off PYTHONUNBUFFERED=1
"$py" - <<'P'
import mlx.core as mx
print("mlx", mx.__version__, "device", mx.default_device(), "cuda", mx.cuda.is_available())
print(mx.device_info())
a = mx.random.normal((4096, 4096)); mx.eval(a @ a)
P
"$py" -m notme_mlx.cli bench --model smollm2-135m-arch --synthetic --seq 512 --batch 16 \
    --batch-tokens 8192 --steps 10 --warmup 3 --repeat 3 --json "$out/cuda_seq512.json" 2>&1 | tee "$out/cuda_seq512.log"
"$py" -m notme_mlx.cli bench --model smollm2-135m-arch --synthetic --seq 256 --batch 4 \
    --batch-tokens 1024 --steps 10 --warmup 3 --repeat 2 --json "$out/cuda_seq256.json" 2>&1 | tee "$out/cuda_seq256.log"
