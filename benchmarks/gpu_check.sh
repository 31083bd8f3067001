#!/usr/bin/env bash
# The GPU check, in one run on a lent H100/H200 (or any machine with an NVIDIA GPU and PyTorch
# with CUDA): installs the carried wheels, runs the tests marked `gpu`, then times the GPU path
# against the CPU path on the same machine (benchmarks/gpu_bench.py).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # default: $OUT, else runs/gpu_check
#
# .whl/ (git-ignored) holds what the device image lacks, for Python 3.12: faiss-cpu,
# pydantic (+ pydantic-core, annotated-types, typing-inspection), bm25s, and the teacher's
# tokenizer.json (the teacher wheel itself is too large to carry). See README, "GPU".
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-runs/gpu_check}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOWERSERVE_PROGRESS=0
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; } \
    2>&1 | tee "$out/machine.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
[ -f .whl/tokenizer.json ] && export TOWERSERVE_TOKENIZER="$PWD/.whl/tokenizer.json"
python3 - <<'PY' 2>&1 | tee -a "$out/machine.txt"
import faiss, numpy, onnxruntime, torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
print("numpy", numpy.__version__, "transformers", transformers.__version__,
      "onnxruntime", onnxruntime.__version__, "faiss", faiss.__version__,
      "faiss-gpu", hasattr(faiss, "StandardGpuResources"))
PY
work="${GPU_WORK:-/tmp/towerserve_gpu_work}"
python3 - "$work" <<'PY' 2>&1 | tail -3 | tee "$out/bundle.log"
import sys, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
from gpu_bench import build_bundle
t = time.time()
print("bundle", build_bundle(Path(sys.argv[1]), 1900, 2, 384, 12), f"{time.time() - t:.1f} s")
PY
export TOWERSERVE_GPU_BUNDLE="$work/bundle"
timeout "${GPU_TEST_TIMEOUT_S:-240}" python3 -m pytest -m gpu tests/gpu -q -p no:cacheprovider \
    -o addopts="--strict-markers -ra" 2>&1 | tee "$out/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
timeout "${GPU_BENCH_TIMEOUT_S:-300}" python3 benchmarks/gpu_bench.py --out "$out" \
    --bundle-work "$work" 2>&1 | tee "$out/bench.log" | grep -v " INFO \| serving\.\| towers\." 
echo "gpu tests exit code: $tests_rc"
exit "$tests_rc"
