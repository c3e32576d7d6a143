#!/usr/bin/env bash
# The GPU checks of medgan in one command, for a lent GPU machine (see docs/benchmarks.md):
#   1. install the wheels fetched by fetch_wheels.sh (.whl/) into /tmp/site;
#   2. the CUDA tests (tests/gpu: AMP, channels_last, no host sync between log steps, pinned
#      bank, torch.compile, sampling);
#   3. the full benchmark on CUDA (training ratio vs plain PyTorch, data, sampling, memory).
# Everything is written to $OUT (default ./gpu-results): gpu.json, tests.log, bench.log,
# nvidia-smi.txt. Each part has its own time limit so that a slow part still leaves results.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch, monai, medgan; print('torch', torch.__version__, 'monai', \
monai.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))" \
  | tee "$OUT/versions.txt"
timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider tests/gpu \
  tests/augment/test_lesion_transforms.py 2>&1 | tee "$OUT/tests.log"
timeout "${BENCH_TIMEOUT:-300}" python3 benchmarks/run.py --device cuda \
  --out "$OUT/gpu.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
