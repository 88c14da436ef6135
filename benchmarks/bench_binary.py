"""Scalar binary rows (issue 12): one float32 probability (or logit) and one label per row.

    python benchmarks/bench_binary.py             # N = 50M rows in memory, 20M end to end
    python benchmarks/bench_binary.py --quick     # N = 5M, 2M end to end
    python benchmarks/bench_binary.py --rows 20000000 --e2e-rows 0

In memory, in one process, on the same arrays (float32 predictions, bool labels):

- the memory floor: ``np.add.reduce`` over the prediction array plus over the label array
  (one read of each, what any scorer must at least do);
- ``xn.bce`` on probabilities and on logits;
- PyTorch CPU ``F.binary_cross_entropy`` / ``F.binary_cross_entropy_with_logits``
  (``reduction="none"``; float32 targets, converted outside the timing);
- NumPy's vectorised formula (``-(y log p + (1-y) log1p(-p))`` with sklearn's clipping;
  ``max(x,0) - x y + log1p(exp(-|x|))``).

Targets: ``xn.bce`` within 2x of the floor, >= 5x PyTorch, >= 2x NumPy. End to end (a
Parquet dump with ``id`` int64, ``score`` float32, ``clicked`` bool): ``xent score --keep id``
to Parquet against a bare ``pyarrow.parquet.read_table`` of the same columns, each in its
own process (wall time and peak RSS). Times are the best of several runs; compare ratios
from one run, not absolute times across machines.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import common
import numpy as np
from common import best

import xent_numba as xn


def in_memory(n, repeat):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, n).astype(np.float32)
    p = common.sigmoid(x.astype(np.float64)).astype(np.float32)
    y = rng.random(n) < 0.3
    yf = y.astype(np.float32)
    rows = []
    floor = best(lambda: (np.add.reduce(p), np.add.reduce(y)), repeat)
    rows.append(("memory floor (np.add.reduce over pred + label)", floor))
    t_prob = best(lambda: xn.bce(p, y), repeat)
    t_logit = best(lambda: xn.bce(x, y, from_logits=True), repeat)
    rows.append(("xn.bce, probabilities", t_prob))
    rows.append(("xn.bce, logits", t_logit))
    rows.append(("xn.cce, probabilities ([1-p, p])", best(lambda: xn.cce(p, y), repeat)))
    e = float(np.finfo(np.float32).eps)

    def np_prob():
        pc = np.clip(p, e, 1 - e)
        return -(yf * np.log(pc) + (1 - yf) * np.log1p(-pc))

    def np_logit():
        return np.maximum(x, 0) - x * yf + np.log1p(np.exp(-np.abs(x)))

    t_np_prob = best(np_prob, repeat)
    t_np_logit = best(np_logit, repeat)
    rows.append(("NumPy formula, probabilities", t_np_prob))
    rows.append(("NumPy formula, logits", t_np_logit))
    t_torch_prob = t_torch_logit = None
    torch = common.peer("torch")
    if torch:
        F = torch.nn.functional
        pt, xt, yt = torch.from_numpy(p), torch.from_numpy(x), torch.from_numpy(yf)
        with torch.no_grad():
            t_torch_prob = best(lambda: F.binary_cross_entropy(pt, yt, reduction="none"), repeat)
            t_torch_logit = best(lambda: F.binary_cross_entropy_with_logits(xt, yt, reduction="none"), repeat)
        rows.append(("PyTorch CPU F.binary_cross_entropy", t_torch_prob))
        rows.append(("PyTorch CPU F.binary_cross_entropy_with_logits", t_torch_logit))
    else:
        print("(PyTorch not installed: skipped)")

    # accuracy on every row of a slice against float64 NumPy (log1p / logaddexp forms)
    k = slice(0, 1_000_000)
    p64, x64, y64 = p[k].astype(np.float64), x[k].astype(np.float64), y[k]
    pc = np.clip(p64, e, 1 - e)
    want_p = np.where(y64, -np.log(pc), -np.log1p(-pc))
    want_x = np.where(y64, np.logaddexp(0, -x64), np.logaddexp(0, x64))
    err_p = np.max(np.abs(xn.bce(p[k], y[k]) - want_p) / want_p)
    err_x = np.max(np.abs(xn.bce(x[k], y[k], from_logits=True) - want_x) / np.maximum(want_x, 1e-300))

    print(f"\n## In memory: N = {n:,} float32 rows, bool labels, {common.threads()} threads (best of {repeat})\n")
    print("| what | time | ns/row | vs xn.bce (same mode) |")
    print("|---|---:|---:|---:|")
    for name, t in rows:
        ref = t_logit if "logit" in name else t_prob
        print(f"| {name} | {t * 1e3:.1f} ms | {t / n * 1e9:.2f} | {t / ref:.2f}x |")
    print()
    print(f"- xn.bce probabilities / floor: {t_prob / floor:.2f}x (target <= 2x); logits / floor: {t_logit / floor:.2f}x")
    print(f"- NumPy / xn.bce: probabilities {t_np_prob / t_prob:.2f}x, logits {t_np_logit / t_logit:.2f}x (target >= 2x)")
    if t_torch_prob:
        print(f"- PyTorch / xn.bce: probabilities {t_torch_prob / t_prob:.2f}x, logits {t_torch_logit / t_logit:.2f}x (target >= 5x)")
    print(f"- max relative error over 1M rows (float32 results vs float64 reference): "
          f"probabilities {err_p:.2e}, logits {err_x:.2e} (contract: 1e-5)")


def end_to_end(n, repeat):
    with tempfile.TemporaryDirectory() as tmp:
        src = common.write_binary_dump(Path(tmp) / "ctr.parquet", n, seed=1)
        out = Path(tmp) / "scores.parquet"
        read = [sys.executable, "-c",
                f"import pyarrow.parquet as pq; pq.read_table({str(src)!r}, columns=['id', 'score', 'clicked'])"]
        score = common.xent_command() + ["score", str(src), "-o", str(out), "--overwrite", "-q",
                                         "--loss", "bce", "--pred", "score", "--label", "clicked", "--keep", "id"]
        # each command in a fresh process (peak RSS is per process), once first to warm the caches
        res = {}
        for name, cmd in (("pyarrow read_table", read), ("xent score --keep id -> parquet", score)):
            r = common.best_process(cmd, repeat)
            res[name] = (r["wall"], r["rss_max"])
    base = res["pyarrow read_table"][0]
    print(f"\n## End to end: {n:,}-row Parquet (id int64, score float32, clicked bool), best of {repeat}\n")
    print("| process | wall | vs read_table | peak RSS |")
    print("|---|---:|---:|---:|")
    for name, (w, m) in res.items():
        print(f"| {name} | {w:.2f} s | {w / base:.2f}x | {m:.0f} MiB |")
    print("\n(target: xent score within 1.3x of read_table, peak RSS < 512 MiB)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5M rows in memory, 2M end to end")
    ap.add_argument("--rows", type=int, default=None, help="rows in memory (default 50M)")
    ap.add_argument("--e2e-rows", type=int, default=None, help="rows end to end (0: skip; default 20M)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    n = args.rows or (5_000_000 if args.quick else 50_000_000)
    e2e = args.e2e_rows if args.e2e_rows is not None else (2_000_000 if args.quick else 20_000_000)
    in_memory(n, args.repeat)
    if e2e:
        end_to_end(e2e, args.repeat)
    if common.skipped_line():
        print(common.skipped_line())


if __name__ == "__main__":
    main()
