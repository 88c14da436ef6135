"""What the arithmetic alone costs, against the memory floor (issue 14, target 1).

    python benchmarks/bench_floor.py            # 20M values, C = 10 and C = 2
    python benchmarks/bench_floor.py --quick

The floor of `bench.py --only memory` is a 2-thread `prange` sum over the arrays a mode
reads. A kernel cannot beat its own instructions either: this script times the passes that
every loss mode needs at the least, each on its own, on a block of values that stays in the
L1 cache (so memory costs nothing here), written the way Numba vectorises best (flat
float32 loops for the per-value math with each value's check fused in, the faster layout for
per-row reductions), and sums the passes a mode cannot avoid. When that sum, on cached data,
is more than 2.5x the floor on data in memory, 2.5x the floor is out of reach on this machine
whatever the kernel's layout. Ratios are medians over interleaved rounds (the shared machine's speed drifts).
"""

from __future__ import annotations

import argparse
import statistics

import common
import numpy as np
from numba import njit, prange

fm = common.internals().fastmath  # the kernels' own exp / log twins (an internal module)

_J = dict(parallel=True, nogil=True, error_model="numpy", fastmath={"nsz", "arcp", "afn", "reassoc"})
_F32 = np.float32
_BLOCK = 2560  # values per block: 10 KB of float32, in L1 with its output


@njit(**_J)
def _pass(block, out, reps, which):
    """``reps`` passes per thread-chunk over the chunk's own cached block (``which`` picks
    the arithmetic); ``out`` keeps every result alive."""
    for ch in prange(block.shape[0]):
        V = block[ch]
        O = out[ch]
        for _ in range(reps):
            if which == 0:  # a plain pass: read, subtract, store
                for k in range(V.shape[0]):
                    O[k] = V[k] - _F32(1.0)
            elif which == 1:  # e^x in float32 (8 lanes): CCE from logits, one per value
                for k in range(V.shape[0]):
                    O[k] = fm.exp32(V[k])
            elif which == 2:  # log(1 + e^-|x|) in float32: BCE from logits, one per value
                for k in range(V.shape[0]):
                    O[k] = fm.log1pexp32(V[k])
            elif which == 3:  # log p in float64: BCE from probabilities, one per value
                for k in range(V.shape[0]):
                    O[k] = fm.log(float(V[k]) * 0.01 + 0.5)
            elif which == 4:  # the same in float32, no division
                for k in range(V.shape[0]):
                    O[k] = fm.log32(V[k] * _F32(0.01) + _F32(0.5))
            # the same with each value's check fused in (every kernel must check every value;
            # one loop, so the check costs only its compares, not a second read)
            elif which == 5:  # e^x, logits checked: NaN or +inf
                bad = False
                for k in range(V.shape[0]):
                    x = V[k]
                    bad |= (x != x) | (x == _F32(np.inf))
                    O[k] = fm.exp32(x)
                O[0] += _F32(bad)
            elif which == 6:  # log(1 + e^-|x|), logits checked (its own loop: as one loop with a
                # select, LLVM computed both functions)
                bad = False
                for k in range(V.shape[0]):
                    x = V[k]
                    bad |= (x != x) | (x == _F32(np.inf))
                    O[k] = fm.log1pexp32(x)
                O[0] += _F32(bad)
            else:  # float32 log of a probability, checked: in [0, 1], not NaN
                bad = False
                for k in range(V.shape[0]):
                    p = V[k] * _F32(0.01) + _F32(0.5)
                    bad |= (p < _F32(0.0)) | (p > _F32(1.0)) | (p != p)
                    O[k] = fm.log32(p)
                O[0] += _F32(bad)


@njit(**_J)
def _fill(out, status):
    """Write one loss and one status per row (what every kernel does at the least)."""
    for i in prange(out.shape[0]):
        out[i] = _F32(1.0)
        status[i] = 0


def _result(n):
    """Allocate and write a fresh result (N float32 losses, N int8 statuses), as every call does."""
    _fill(np.empty(n, np.float32), np.empty(n, np.int8))


@njit(**_J)
def _rows(block, out, reps, c, which):
    """A per-row sum (``which`` 1) or max (0) over rows of ``c`` values of the cached block,
    row by row (``strided`` False) or across the rows one class at a time (True)."""
    strided = which >= 2
    which = which % 2
    for ch in prange(block.shape[0]):
        V = block[ch]
        O = out[ch]
        nr = V.shape[0] // c
        for _ in range(reps):
            if strided:
                for j in range(nr):
                    O[j] = V[j * c]
                for k in range(1, c):
                    Vk = V[k : nr * c : c]
                    for j in range(nr):
                        x = Vk[j]
                        O[j] = (x if x > O[j] else O[j]) if which == 0 else O[j] + x
                continue
            for j in range(nr):
                if which == 0:
                    m = V[j * c]
                    for k in range(j * c + 1, j * c + c):
                        m = V[k] if V[k] > m else m
                    O[j] = m
                else:
                    s = _F32(0.0)
                    for k in range(j * c, j * c + c):
                        s += V[k]
                    O[j] = s


PASSES = {  # the least each mode needs (row reductions at the table's C); every mode checks
    # each prediction (fused into its arithmetic pass) and returns a fresh result. CCE from
    # logits also needs each row's max: the promised max-shifted log-sum-exp (a row shifted by
    # its true class's logit instead, a one-hot target has no one such class)
    "CCE, logits + index labels": ["exp, checked", "row max", "row sum", "result"],
    "CCE, logits + one-hot": ["exp, checked", "row max", "row sum", "row sum", "result"],  # + the targets' dot product
    "BCE, probabilities + multi-hot": ["log, checked", "row sum", "result"],
    "BCE, logits + multi-hot": ["log1p(exp), checked", "row sum", "result"],
    "CCE, probabilities + index labels": ["flat pass", "log per row", "result"],
}
MODE_KEYS = dict(zip(PASSES, ["cce_logit_index", "cce_logit_onehot", "bce_prob_multihot",
                              "bce_logit_multihot", "cce_prob_index"], strict=True))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2M values and 3 rounds")
    ap.add_argument("-c", default="10,2", help="classes per row, comma-separated (default 10,2)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5)")
    a = ap.parse_args(argv)
    total = 2_000_000 if a.quick else 20_000_000
    rounds = a.rounds or (3 if a.quick else 5)
    nch = 4 * common.threads()
    reps = max(1, total // (nch * _BLOCK))
    block = np.random.default_rng(0).normal(0.0, 2.0, (nch, _BLOCK)).astype(np.float32)
    out = np.empty_like(block)
    print(f"# Arithmetic against the floor — `python benchmarks/bench_floor.py{' --quick' if a.quick else ''}`")
    for c in [int(x) for x in a.c.split(",")]:
        n = total // c
        d = common.in_memory_data(n, c)
        floors = common.floor_impls(d)
        cached = {
            "flat pass": lambda: _pass(block, out, reps, 0),
            "exp": lambda: _pass(block, out, reps, 1),
            "log1p(exp)": lambda: _pass(block, out, reps, 2),
            "log, float64": lambda: _pass(block, out, reps, 3),
            "log, float32 (no division)": lambda: _pass(block, out, reps, 4),
            "exp, checked": lambda: _pass(block, out, reps, 5),
            "log1p(exp), checked": lambda: _pass(block, out, reps, 6),
            "log, float32, checked": lambda: _pass(block, out, reps, 7),
            "result (in memory)": lambda n=n: _result(n),
            "row sum, row by row": lambda c=c: _rows(block, out, reps, c, 1),
            "row sum, across rows": lambda c=c: _rows(block, out, reps, c, 3),
            "row max, row by row": lambda c=c: _rows(block, out, reps, c, 0),
            "row max, across rows": lambda c=c: _rows(block, out, reps, c, 2),
        }
        times = common.interleaved_best({**cached, **floors}, rounds)  # every pass and floor once per round
        for r in range(rounds):  # the faster of each pair in each round; a log per row is 1/C of a log pass
            times.setdefault("row sum", []).append(min(times["row sum, row by row"][r], times["row sum, across rows"][r]))
            times.setdefault("log", []).append(min(times["log, float64"][r], times["log, float32 (no division)"][r]))
            times.setdefault("log, checked", []).append(times["log, float32, checked"][r])
            times.setdefault("row max", []).append(min(times["row max, row by row"][r], times["row max, across rows"][r]))
            times.setdefault("log per row", []).append(times["log"][r] / c)
            times.setdefault("result", []).append(times["result (in memory)"][r])
        print(f"\n### One pass each, data in L1 ({nch * reps * _BLOCK:,} values, C = {c}, "
              f"{common.threads()} threads)\n")
        print("| pass (cached data) | ms |")
        print("|---|---:|")
        for k in list(cached) + ["log per row"]:
            print(f"| {k} | {common.fmt_ms(statistics.median(times[k]))} |")
        print(f"\n### Lower bound per mode (N = {n:,}, C = {c}): its passes on cached data vs its floor\n")
        print("| mode | passes it cannot avoid | passes ms (cached) | floor ms (in memory) | passes / floor | 2.5x reachable? |")
        print("|---|---|---:|---:|---:|---|")
        for mode, ps in PASSES.items():
            key = MODE_KEYS[mode]
            per_round = [sum(times[p][r] for p in ps) / times[key][r] for r in range(rounds)]
            ratio = statistics.median(per_round)
            tp = statistics.median(sum(times[p][r] for p in ps) for r in range(rounds))
            print(f"| {mode} | {' + '.join(ps)} | {common.fmt_ms(tp)} | {common.fmt_ms(statistics.median(times[key]))} "
                  f"| {ratio:.2f}x | {'no' if ratio > 2.5 else 'not excluded'} |")
    print("\nPasses: flat float32 loops (8 lanes here) for the per-value math; a row sum is the "
          "faster of its two layouts, a log the faster of float64 and float32, in each round. "
          "'result' allocates and writes N float32 losses and N int8 statuses (in memory: every "
          "call returns a fresh array, as PyTorch's do). 'checked': the pass with each prediction's "
          "validity check fused into the same loop. Not counted: the targets' checks and moving the "
          "data from memory, so the bound is optimistic.")
    print(f"\nMachine: {common.machine()}.")


if __name__ == "__main__":
    main()
