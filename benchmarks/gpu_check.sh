#!/usr/bin/env bash
# The GPU check of issue 11, in one command (about 9 minutes on an H200): every command at tiny size on CUDA
# (pytest -m cuda), then the throughput benchmark through the real engine (benchmarks/engine_iteration.py).
# Results and logs go to $OUT (default /tmp/gpu_check). On a machine without the dependencies, first
#   ../shared/tools/device-prep  (here)  and  bash .device/setup && . /tmp/site.env  (there).
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, deepspeed; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'deepspeed', deepspeed.__version__)"
} > "$OUT/env.txt" 2>&1
start=$(date +%s)
timeout "${TEST_TIMEOUT:-220}" $PY -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider --durations=0 \
  --junitxml="$OUT/cuda_tests.xml" > "$OUT/cuda_tests.log" 2>&1
echo "cuda tests: exit $? in $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"
tail -5 "$OUT/cuda_tests.log"
start=$(date +%s)
timeout "${BENCH_TIMEOUT:-330}" $PY -m benchmarks.engine_iteration ${BENCH_ARGS:---max-batch --compile} \
  --out "$OUT/engine_iteration.json" > "$OUT/engine_iteration.log" 2>&1
echo "benchmark: exit $? in $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"
grep -v -i warn "$OUT/engine_iteration.log" | tail -25
