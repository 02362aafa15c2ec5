#!/usr/bin/env bash
# The GPU check of conflow, as one short script (under 8 minutes on one GPU).
#
#   benchmarks/gpu_check.sh OUT_DIR
#
# For a machine where a CUDA-enabled JAX, diffrax, equinox, optax, flax and pytest are already
# installed and nothing can be downloaded: no install, the checkout on PYTHONPATH. It prints
# jax.devices(), runs tests/test_gpu.py (GPU counts equal CPU counts level by level; no implicit
# host transfer in whole counts), then the `gpu` rows of benchmarks/bench_scaling.py (linear and
# ReLU at D ≈ 2,000 and 10,000, ReLU at D ≈ 100,000), each under a time limit, and writes
# everything (JSON and logs) to OUT_DIR.
set -u -o pipefail
OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CONFLOW_CACHE_DIR="$OUT/compile-cache"

python - <<'PY' 2>&1 | tee "$OUT/devices.txt"
import json, jax
info = {"jax": jax.__version__, "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()]}
print(json.dumps(info))
PY

timeout 150 python -m pytest -q -p no:cacheprovider tests/test_gpu.py \
    --junitxml="$OUT/test_gpu.xml" 2>&1 | tee "$OUT/test_gpu.txt"
tests=$?

timeout 330 python benchmarks/bench_scaling.py --only gpu --time-limit 60 \
    --out "$OUT/bench_scaling.json" 2>&1 | tee "$OUT/bench_scaling.txt"
bench=$?

echo "{\"tests_rc\": $tests, \"bench_rc\": $bench}" | tee "$OUT/summary.json"
exit $(( tests != 0 || bench != 0 ))
