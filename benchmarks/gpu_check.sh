#!/usr/bin/env bash
# Issue 16: everything a lent GPU machine should run, in one call, each step time-boxed.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]        # OUTDIR defaults to $OUT (device tool) or ./gpu-check
#
# That machine has no network: the project runs from its source tree (PYTHONPATH=.), with
# the image's numba, numba-cuda, pyarrow, typer, CuPy, PyTorch and pytest; tests whose
# optional dependencies are missing skip. Every log and table lands in OUTDIR:
#   env.txt        nvidia-smi, versions
#   gpu-tests.log  pytest -m gpu tests/test_gpu.py (real GPU, full-size comparisons)
#   cpu-tests.log  the suite without 'slow' tests, simulator off (the small GPU tests run on the card)
#   bench.log      benchmarks/bench_gpu.py: bandwidth fraction, vs PyTorch, CLI cuda vs cpu
# Budgets (seconds) can be changed with the variables below; a step that runs past its
# budget is killed and the next one starts, so one hang cannot eat the session's GPU time.
set -u
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
unset NUMBA_ENABLE_CUDASIM XENT_NUMBA_SIMULATOR
PY=${PY:-python3}
T_GPU_TESTS=${T_GPU_TESTS:-150}
T_CPU_TESTS=${T_CPU_TESTS:-120}
T_BENCH=${T_BENCH:-240}
CLI_ROWS=${CLI_ROWS:-4000000}

step() {  # step NAME BUDGET CMD...
    local name=$1 budget=$2
    shift 2
    local t0=$SECONDS
    timeout --kill-after=10 "$budget" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$name: rc=$rc in $((SECONDS - t0)) s (budget $budget s)" | tee -a "$out/steps.txt"
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
    nproc
    $PY -c 'import numba, numba_cuda, pyarrow, numpy; print("numba", numba.__version__, "numba-cuda", numba_cuda.__version__, "pyarrow", pyarrow.__version__, "numpy", numpy.__version__)'
    $PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())' 2>&1
    $PY -c 'import cupy; print("cupy", cupy.__version__)' 2>&1
} >"$out/env.txt" 2>&1

step gpu-tests "$T_GPU_TESTS" $PY -m pytest -q -x -m gpu tests/test_gpu.py -p no:cacheprovider
# NUMBA_ENABLE_CUDASIM=0: conftest.py would otherwise turn the simulator on for a non-gpu run;
# with it off, the simulator-sized GPU tests run on the real card too.
step cpu-tests "$T_CPU_TESTS" env NUMBA_ENABLE_CUDASIM=0 $PY -m pytest -q -m 'not slow' -p no:cacheprovider
step bench "$T_BENCH" $PY benchmarks/bench_gpu.py --cli-rows "$CLI_ROWS"
cat "$out/steps.txt"
