"""Compile time, as a new user meets it: the first call of each documented input kind.

    python benchmarks/bench_compile.py            # every case (several minutes on 2 cores)
    python benchmarks/bench_compile.py --quick    # the README command and a few cases
    python benchmarks/bench_compile.py --cold     # also each case on its own empty cache

Every measurement runs in a fresh subprocess with ``NUMBA_CACHE_DIR`` pointed at a new
directory, so nothing compiled earlier (in ``__pycache__`` or elsewhere) is reused:

1. **README first command, cold**: ``xent score data/sample.parquet -o ... --keep id`` on an
   empty cache, whole-process wall time (target: < 4 s on the 2-core machine).
2. **after ``xent warmup``**: the cache is filled once by ``xent warmup``, then each case's
   first call is timed in its own process, and again its second call: the difference is
   what that input kind still compiles (target: <= 3 s for every documented kind).
3. with ``--cold``: each case on its own empty cache (what a user pays who skips warmup).

Cases are the modes, dtypes and layouts the README documents: CCE/BCE from probabilities
and logits, index and dense targets, float16/32/64 predictions, int32/int64/uint8 labels,
bool/uint8/float targets, NumPy (N, C), (N, 1), Fortran-ordered and sliced arrays, Arrow
list / large_list / fixed_size_list, and the general path (label smoothing, weights).
Figures depend on the machine's load: compare within one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap

import common

SETUP = """
import time, numpy as np, pyarrow as pa, xent_numba as xn
from common import dirichlet_probs, fixed_size_list as fsl, index_labels, list_array as lst, logits, one_hot
rng = np.random.default_rng(0)
N, C = 1000, 10
P = dirichlet_probs(rng, N, C)
X = logits(rng, N, C, scale=1.0, dtype=np.float64)
y = index_labels(rng, N, C)
T = one_hot(y, C, np.float64)
"""

# name -> the call to time (a Python expression using SETUP's names)
CASES = {
    "cce prob f32 list/int64 (README)": "xn.cce(lst(P.astype(np.float32)), pa.array(y))",
    "cce prob f64 numpy/int64": "xn.cce(P, y)",
    "cce prob f32 numpy/int32": "xn.cce(P.astype(np.float32), y.astype(np.int32))",
    "cce prob f16 numpy/int64": "xn.cce(P.astype(np.float16), y)",
    "cce logit f32 numpy/int64": "xn.cce(X.astype(np.float32), y, from_logits=True)",
    "cce logit f64 large_list": "xn.cce(lst(X, large=True), pa.array(y), from_logits=True)",
    "cce prob f32 fixed_size_list": "xn.cce(fsl(P.astype(np.float32)), pa.array(y.astype(np.int32)))",
    "cce prob f64 fortran/sliced": "xn.cce(np.asfortranarray(P)[::2], y[::2])",
    "cce prob f64 dense onehot f64": "xn.cce(P, T)",
    "cce prob f32 dense onehot bool": "xn.cce(P.astype(np.float32), T.astype(bool))",
    "bce prob f32 dense uint8": "xn.bce(P.astype(np.float32), T.astype(np.uint8))",
    "bce logit f32 dense f32": "xn.bce(X.astype(np.float32), T.astype(np.float32), from_logits=True)",
    "bce prob f64 (N,1) pred": "xn.bce(P[:, :1], T[:, :1])",
    "bce logit f64 index": "xn.bce(X, y, from_logits=True)",
    "cce smoothing+weights f32": "xn.cce(P.astype(np.float32), y, label_smoothing=0.1, class_weight=np.ones(C))",
    "bce pos_weight f64": "xn.bce(P, T, pos_weight=2.0)",
}
QUICK = [
    "cce prob f32 list/int64 (README)",
    "cce prob f32 numpy/int32",
    "cce prob f16 numpy/int64",
    "bce prob f64 (N,1) pred",
]


def _env(cache: str) -> dict:
    """A child's environment: this checkout's code, a cache of its own, the simulator off."""
    return common.child_env({"NUMBA_CACHE_DIR": cache}, drop=("NUMBA_ENABLE_CUDASIM",), benchmarks=True)


def time_case(expr: str, cache: str) -> tuple[float, float]:
    """(first call, second call) in seconds, in one fresh process."""
    code = SETUP + textwrap.dedent(f"""
        t0 = time.perf_counter(); {expr}; t1 = time.perf_counter(); {expr}; t2 = time.perf_counter()
        print(t1 - t0, t2 - t1)
    """)
    out = subprocess.run([sys.executable, "-c", code], env=_env(cache), capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def time_cmd(args: list[str], cache: str) -> float:
    """Wall seconds of one `xent` process on the cache ``cache``."""
    return common.run_process(common.xent_command() + args, env=_env(cache))["wall"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few cases only")
    ap.add_argument("--cold", action="store_true", help="also time each case on its own empty cache")
    ap.add_argument("--no-warmup", action="store_true", help="skip the after-`xent warmup` table")
    a = ap.parse_args(argv)
    names = QUICK if a.quick else list(CASES)
    with tempfile.TemporaryDirectory(prefix="xent-bench-compile-") as tmp:
        out = os.path.join(tmp, "scores.parquet")
        readme = ["score", "data/sample.parquet", "-o", out, "--keep", "id", "--overwrite", "--quiet"]
        cold = time_cmd(readme, os.path.join(tmp, "c0"))
        again = time_cmd(readme, os.path.join(tmp, "c0"))
        print(f"README first command: cold cache {cold:6.2f} s, warm cache {again:6.2f} s (target < 4 s cold)")
        warm, label = os.path.join(tmp, "c0"), "after the README command"
        if not a.no_warmup:
            warm, label = os.path.join(tmp, "warm"), "after xent warmup"
            t = time_cmd(["warmup"], warm)
            print(f"xent warmup on an empty cache: {t:6.2f} s")
            print(f"README first command after warmup: {time_cmd(readme, warm):6.2f} s")
        print(f"\n{'case (' + label + ')':40s} {'1st call':>9s} {'2nd call':>9s} {'compile':>8s}")
        worst = 0.0
        for name in names:  # in order, on one cache: each case also warms the next
            t1, t2 = time_case(CASES[name], warm)
            worst = max(worst, t1 - t2)
            print(f"{name:40s} {t1:8.2f}s {t2:8.3f}s {t1 - t2:7.2f}s", flush=True)
        print(f"worst compile {label}: {worst:.2f} s (target <= 3 s)")
        if a.cold:
            print(f"\n{'case (own empty cache)':40s} {'1st call':>9s} {'2nd call':>9s} {'compile':>8s}")
            for i, name in enumerate(names):
                t1, t2 = time_case(CASES[name], os.path.join(tmp, f"cold{i}"))
                print(f"{name:40s} {t1:8.2f}s {t2:8.3f}s {t1 - t2:7.2f}s")


if __name__ == "__main__":
    main()
