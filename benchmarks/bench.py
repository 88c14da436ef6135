"""xent-numba against the tools users would pick instead, in one process, on the same data.

    python benchmarks/bench.py            # full run (N = 2M rows, C = 10, float32)
    python benchmarks/bench.py --quick    # a short run (N = 200k)
    python benchmarks/bench.py --only memory -c 10,2   # the kernel tables at C = 10 and C = 2

Prints markdown tables: in-memory kernels (NumPy, PyTorch CPU, a memory-bandwidth floor),
end to end from Parquet (`xent score` vs a bare `pyarrow.parquet.read_table`, DuckDB,
Polars), scaling in C and N, and the warm start of the CLI. Peers are optional
(`pip install '.[bench]'`); what is not installed is skipped and named. Times are the best
of several runs; compare ratios from one run, not absolute times across machines.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import common
import numpy as np
from common import best, fmt_ms, fmt_r

import xent_numba as xn

# ---- in-memory kernels ---------------------------------------------------------------------


def numpy_impls(d):
    P, L, y, OH, MH, S = d["probs"], d["logits"], d["y"], d["onehot"], d["multihot"], d["sig"]
    rows = np.arange(len(y))
    eps = np.finfo(np.float32).eps

    def lse(x):
        m = x.max(1)
        return m + np.log(np.exp(x - m[:, None]).sum(1))

    def bce_prob():
        p = np.clip(S, eps, 1 - eps)
        return -(MH * np.log(p) + (1 - MH) * np.log1p(-p)).sum(1)

    return {
        "cce_prob_index": lambda: -np.log(P[rows, y]),
        "cce_logit_index": lambda: lse(L) - L[rows, y],
        "cce_logit_onehot": lambda: lse(L) - (OH * L).sum(1),
        "bce_prob_multihot": bce_prob,
        "bce_logit_multihot": lambda: (np.maximum(L, 0) - L * MH + np.log1p(np.exp(-np.abs(L)))).sum(1),
    }


def torch_impls(d, torch):
    F = torch.nn.functional
    P, L, Y, OH, MH, S = (torch.from_numpy(d[k]) for k in ("probs", "logits", "y", "onehot", "multihot", "sig"))

    def nograd(f):
        def g():
            with torch.no_grad():
                return f()
        return g

    return {
        "cce_prob_index": nograd(lambda: F.nll_loss(torch.log(P), Y, reduction="none")),
        "cce_logit_index": nograd(lambda: F.cross_entropy(L, Y, reduction="none")),
        "cce_logit_onehot": nograd(lambda: F.cross_entropy(L, OH, reduction="none")),
        "bce_prob_multihot": nograd(lambda: F.binary_cross_entropy(S, MH, reduction="none").sum(1)),
        "bce_logit_multihot": nograd(
            lambda: F.binary_cross_entropy_with_logits(L, MH, reduction="none").sum(1)
        ),
    }


def xent_impls(d):
    P, L, y, OH, MH, S = d["probs"], d["logits"], d["y"], d["onehot"], d["multihot"], d["sig"]
    return {
        "cce_prob_index": lambda: xn.cce(P, y),
        "cce_logit_index": lambda: xn.cce(L, y, from_logits=True),
        "cce_logit_onehot": lambda: xn.cce(L, OH, from_logits=True),
        "bce_prob_multihot": lambda: xn.bce(S, MH),
        "bce_logit_multihot": lambda: xn.bce(L, MH, from_logits=True),
    }


MODES = {
    "cce_prob_index": "CCE, probabilities + index labels",
    "cce_logit_index": "CCE, logits + index labels",
    "cce_logit_onehot": "CCE, logits + one-hot",
    "bce_prob_multihot": "BCE, probabilities + multi-hot",
    "bce_logit_multihot": "BCE, logits + multi-hot",
}


def check_agreement(d, ours, theirs, name):
    """Every peer must compute the same numbers (else the timing means nothing)."""
    for mode in MODES:
        a = np.asarray(ours[mode](), dtype=np.float64)
        b = theirs[mode]()
        b = np.asarray(b.numpy() if hasattr(b, "numpy") else b, dtype=np.float64)
        if not np.allclose(a, b, rtol=2e-4, atol=1e-5):
            raise SystemExit(f"{name} disagrees with xent-numba on {mode}: max diff {np.abs(a - b).max()}")


def in_memory(total, cs, repeat):
    """One table per C, each on N = total // C rows (the same N*C values, so the same bytes of predictions)."""
    torch = common.peer("torch")
    for c in cs:
        n = max(1, total // c)
        d = common.in_memory_data(n, c)
        ours, floor, np_ = xent_impls(d), common.floor_impls(d), numpy_impls(d)
        th = torch_impls(d, torch) if torch else None
        check_agreement(d, ours, np_, "NumPy")
        if th:
            check_agreement(d, ours, th, "PyTorch")
        print(f"\n### In-memory kernels (N = {n:,}, C = {c}, float32, {common.threads()} threads)\n")
        print("| mode | xent-numba ms | NumPy ms | PyTorch CPU ms | floor ms | vs NumPy | vs PyTorch | xent / floor |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for mode, label in MODES.items():
            t = common.interleaved_best({"xent": ours[mode], "numpy": np_[mode],
                                         "torch": th[mode] if th else None, "floor": floor[mode]}, repeat)
            med, r = common.median, common.ratio
            print(f"| {label} | {fmt_ms(med(t['xent']))} | {fmt_ms(med(t['numpy']))} | {fmt_ms(med(t['torch']))} "
                  f"| {fmt_ms(med(t['floor']))} | {fmt_r(r(t['numpy'], t['xent']))} | {fmt_r(r(t['torch'], t['xent']))} "
                  f"| {fmt_r(r(t['xent'], t['floor']))} |")
    print(f"\nTimes: median over {repeat} interleaved rounds of the best of 3 calls; ratios: median over "
          "rounds of the ratio within a round.")
    print("\n'vs X' = X's time / xent-numba's time (higher: xent-numba faster). NumPy's CCE from "
          "probabilities is the bare fancy-index gather `-log(P[i, y])` (no validation). The floor is "
          "a 2-thread Numba `prange` sum over each array the mode reads (predictions and targets), once. "
          "Every table has the same N*C values.")


# ---- scaling --------------------------------------------------------------------------------


def scaling(total, repeat):
    print(f"\n### Scaling (CCE from logits + index labels, float32; about {total:,} values per run)\n")
    print("| N | C | ms | ns per value |")
    print("|---:|---:|---:|---:|")
    for c in (1, 2, 3, 4, 8, 10, 64, 1000, 32768, 262144):
        n = max(1, total // c)
        d = common.in_memory_data(n, c, seed=1)
        t = best(lambda d=d: xn.cce(d["logits"], d["y"], from_logits=True), repeat)
        print(f"| {n:,} | {c:,} | {fmt_ms(t)} | {t / (n * c) * 1e9:.2f} |")
    base = max(1, total // 10 // 8)
    for k in range(4):
        n = base * 2**k
        d = common.in_memory_data(n, 10, seed=2)
        t = best(lambda d=d: xn.cce(d["logits"], d["y"], from_logits=True), repeat)
        print(f"| {n:,} | 10 | {fmt_ms(t)} | {t / (n * 10) * 1e9:.2f} |")


# ---- end to end from Parquet ------------------------------------------------------------------


def end_to_end(n, c, repeat, tmp):
    import pyarrow.feather as pf
    import pyarrow.parquet as pq

    src = common.write_dump(Path(tmp) / "logits.parquet", n, c, row_group=128 * 1024, seed=3)
    feather = common.write_feather_copy(src)
    size = src.stat().st_size / 1e6
    print(f"\n### End to end from Parquet (CCE from logits, N = {n:,}, C = {c}, list<float>, "
          f"{size:.0f} MB, row groups of 131,072)\n")
    rows = []
    t_read = best(lambda: pq.read_table(src, columns=["pred", "label"]), repeat)
    rows.append(("bare `pyarrow.parquet.read_table` of pred + label (floor)", t_read))
    rows.append(("`pyarrow.feather.read_table`, memory-mapped (Arrow IPC input)",
                 best(lambda: pf.read_table(feather, memory_map=True, columns=["pred", "label"]), repeat)))
    xi = common.internals()
    opts = xi.ScoreOptions(from_logits=True)
    out = Path(tmp) / "scores.parquet"

    def engine(path):
        return lambda: xi.score_files([str(path)], str(out), opts, overwrite=True)

    engine(src)()  # kernels loaded once, as in any long-lived process
    t_xent = best(engine(src), repeat)
    rows.append(("`xent score` engine (`pipeline.score_files`, Parquet -> Parquet)", t_xent))
    rows.append(("`xent score` engine on the Feather copy", best(engine(feather), repeat)))

    def read_and_score():  # to separate decode from compute
        t = pq.read_table(src, columns=["pred", "label"])
        return xn.cce(t["pred"], t["label"], from_logits=True)

    rows.append(("in-process `read_table` + `xn.cce` (no write)", best(read_and_score, repeat)))
    duckdb = common.peer("duckdb")
    t_duck = None
    if duckdb:
        dout = Path(tmp) / "duck.parquet"
        sql = (f"COPY (SELECT m + ln(list_sum(list_transform(pred, lambda x: exp(x - m)))) - pred[label + 1] "
               f"AS loss FROM (SELECT pred, label, list_max(pred) AS m FROM read_parquet('{src}'))) "
               f"TO '{dout}' (FORMAT parquet)")
        con = duckdb.connect()
        t_duck = best(lambda: con.execute(sql), repeat)
        rows.append(("DuckDB SQL, Parquet -> Parquet", t_duck))
    pl = common.peer("polars")
    if pl:
        pout = Path(tmp) / "polars.parquet"

        def polars_job():
            m = pl.col("pred").list.max()
            loss = ((pl.col("pred") - m).list.eval(pl.element().exp()).list.sum().log() + m
                    - pl.col("pred").list.get(pl.col("label")))
            pl.scan_parquet(src).select(loss=loss).sink_parquet(pout)

        rows.append(("Polars (lazy scan -> sink_parquet)", best(polars_job, repeat)))
    print("In one process, start-up excluded (kernels already loaded, as in a notebook or a worker):\n")
    print("| job | ms | vs bare read | vs xent score |")
    print("|---|---:|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {fmt_ms(t)} | {t / t_read:.2f}× | {t / t_xent:.2f}× |")
    if t_duck:
        print(f"\nDuckDB / xent score engine: {t_duck / t_xent:.2f}× (target >= 3×); "
              f"xent score engine / bare read: {t_xent / t_read:.2f}× (target <= 1.25×).")
    argv = common.xent_command() + ["score", str(src), "-o", str(out), "--from-logits", "--overwrite", "--quiet"]
    env = common.child_env()
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        common.SKIPPED.append(f"xent score ({r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode})")
        return
    bare = [sys.executable, "-c", f"import pyarrow.parquet as pq; pq.read_table({str(src)!r}, columns=['pred', 'label'])"]
    t_bare_p = best(lambda: subprocess.run(bare, check=True, capture_output=True, env=env), repeat)
    t_cli = best(lambda: subprocess.run(argv, check=True, capture_output=True, env=env), repeat)
    print("\nWhole processes, start-up included (`benchmarks/bench_score.py` does this on the issue's 4M x 16 dump):\n")
    print("| process | ms | vs bare read |")
    print("|---|---:|---:|")
    print(f"| `python -c 'pq.read_table(...)'` (floor) | {fmt_ms(t_bare_p)} | 1.00× |")
    print(f"| `xent score --from-logits` | {fmt_ms(t_cli)} | {t_cli / t_bare_p:.2f}× |")


def warm_start(tmp):
    sample = common.ROOT / "data" / "sample.parquet"
    base = [sys.executable, "-c", "import numba, pyarrow"]
    lib = [sys.executable, "-c", "import numpy as np, xent_numba as xn; "
           "xn.cce(np.full((4, 3), 1/3, np.float32), np.array([0, 1, 2, 0])); "
           "xn.bce(np.full((4, 3), 0.5), np.eye(3)[[0, 1, 2, 0]], from_logits=True)"]
    rows = [("`python -c \"import numba, pyarrow\"`", base), ("import xent_numba + two small calls (cached kernels)", lib)]
    out = Path(tmp) / "sample_scores.parquet"
    rows.append(("`xent score data/sample.parquet`",
                 common.xent_command() + ["score", str(sample), "-o", str(out), "--overwrite"]))
    print("\n### Warm start (second run; compiled kernels loaded from Numba's on-disk cache)\n")
    print("| process | s | minus bare imports |")
    print("|---|---:|---:|")
    t0 = None
    env = common.child_env()
    for name, argv in rows:
        subprocess.run(argv, capture_output=True, cwd=common.ROOT, env=env)  # first run fills the cache
        t = best(lambda argv=argv: subprocess.run(argv, capture_output=True, cwd=common.ROOT, env=env), 3)
        t0 = t if t0 is None else t0
        print(f"| {name} | {t:.2f} | {t - t0:+.2f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 200k and fewer repeats")
    ap.add_argument("-n", type=int, default=None, help="rows (default 2,000,000; 200,000 with --quick)")
    ap.add_argument("-c", default="10,2",
                    help="classes, a comma-separated list (default 10,2): one in-memory table per C, each "
                         "with the same N*C values as N rows at the first C; e2e uses the first")
    ap.add_argument("--repeat", type=int, default=None, help="runs per timing, best kept (default 5; 2 with --quick)")
    ap.add_argument("--only", choices=["memory", "e2e", "scaling", "warm"], action="append",
                    help="run only these sections (repeatable)")
    a = ap.parse_args(argv)
    n = a.n or (200_000 if a.quick else 2_000_000)
    repeat = a.repeat or (2 if a.quick else 5)
    sections = a.only or ["memory", "e2e", "scaling", "warm"]
    cs = [int(c) for c in str(a.c).split(",") if c.strip()]
    print(f"# xent-numba benchmark — `python benchmarks/bench.py{' --quick' if a.quick else ''}`")
    with tempfile.TemporaryDirectory() as tmp:
        if "memory" in sections:
            in_memory(n * cs[0], cs, repeat)
        if "e2e" in sections:
            end_to_end(n, cs[0], repeat, tmp)
        if "scaling" in sections:
            scaling(n * cs[0], repeat)
        if "warm" in sections:
            warm_start(tmp)
    print(f"\nMachine: {common.machine()}.")
    if common.skipped_line():
        print(common.skipped_line())


if __name__ == "__main__":
    main()
