"""Where the core-seconds of `xent score` go: decode, kernel, summary, encode, batch handling.

    python benchmarks/bench_stages.py                 # 2M x 10 float32 probabilities (issue 14)
    python benchmarks/bench_stages.py --rows 500000   # quicker
    python benchmarks/bench_stages.py --from-logits   # the logits kernels
    python benchmarks/bench_stages.py --from-logits --dump bench-data/logits-20000000x16-rg1048576.parquet

Each stage of the local engine is called directly, one batch at a time, in one process,
and timed with ``time.process_time()`` (CPU time of every thread of the process, i.e.
core-seconds): the sum is what a whole `xent score --keep id` run spends beyond start-up,
without the overlap of its threads. Stages:

- decode: the engine's reader (``io.Source.batches``: ``ParquetFile.iter_batches`` through an
  8 MB buffered stream) of ``pred``, ``label`` and ``id`` (the read);
- batch handling: Arrow -> kernel layouts (``arrow.as_rows``), canonical forms
  (``canon``), options, output allocation, the first-invalid check, the output record batch;
- kernel: ``cpu.run`` (the compiled scoring pass);
- summary: ``Summary.add_losses`` with the labels (one compiled pass: counts, sum, min/max,
  histogram, per-class sums), with the NumPy passes it replaced for comparison (not part
  of the total);
- encode: the engine's Parquet writer (``io.AtomicWriter``) writing ``id, cce``.

``OMP_WAIT_POLICY=PASSIVE`` is set as the CLI sets it: with OpenMP's default (spinning),
the kernel threads' spin after each kernel is charged to the next stage (encode measured
115-121 core-ms instead of 70 on 2M x 10).

The dump (list<float32> ``pred`` of softmax probabilities or logits, int64 ``label`` and
``id``) is written under ``bench-data/`` (git-ignored) and reused. Batches have the
engine's default size (about 8 MB of decoded input). Figures from a shared 2-core machine
vary by 10-20%; compare stages within one run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import common  # sets OMP_WAIT_POLICY=PASSIVE, as the CLI does (before numba is imported)
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import xent_numba as xn

xi = common.internals()  # every stage below is an internal entry point of the engine


def make_dump(rows: int, classes: int, logits: bool) -> Path:
    """The stages' dump under bench-data/: float32 softmax probabilities of N(0, 1) logits,
    or the logits themselves (generated once)."""
    path = common.BENCH_DATA / f"stages-{rows}x{classes}-{'logits' if logits else 'probs'}.parquet"
    return common.write_dump(path, rows, classes, probs=not logits, scale=1.0)


def numpy_summary(values: np.ndarray, labels: np.ndarray) -> None:
    """The summary's former NumPy passes (log10 of every loss, masks, bincounts)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    finite = np.isfinite(v)
    float(v[finite].sum()), float(v.min()), float(v.max())
    np.bincount(xi.bin_index(v), minlength=xi.N_BINS)
    ok = ~np.isnan(values) & (labels >= 0)
    lab = labels[ok].astype(np.int64)
    k = int(lab.max()) + 1
    np.bincount(lab, weights=values[ok].astype(np.float64), minlength=k)
    np.bincount(lab, minlength=k)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--from-logits", action="store_true")
    ap.add_argument("--dump", help="an existing dump with list<float32> `pred`, int64 `label` and `id` "
                    "(e.g. bench_score.py's 20M x 16 logits) instead of a generated one")
    a = ap.parse_args(argv)
    path = a.dump or make_dump(a.rows, a.classes, a.from_logits)
    pf = pq.ParquetFile(path)
    if a.dump:
        a.classes = len(next(pf.iter_batches(batch_size=1, columns=["pred"])).column(0)[0])
    per_row = a.classes * 4 + 8 + 8 + 8  # values, offset, label, id
    batch_rows = int(min(max(xi.DEFAULT_BATCH_BYTES / per_row, 1024), 1 << 20))
    t = dict.fromkeys(["decode", "batch handling", "kernel", "summary", "encode"], 0.0)
    t_numpy_summary = 0.0
    clock = time.process_time
    prm = xi.make_params("cce", dtype=np.float32, from_logits=a.from_logits)
    summary = xi.Summary()
    rows = 0
    with tempfile.TemporaryDirectory() as tmp:
        writer = xi.AtomicWriter(os.path.join(tmp, "out.parquet"), "parquet", overwrite=False)
        batches = xi.Source(str(path)).batches(["id", "pred", "label"], batch_rows)  # the engine's reader
        # warm the compiled code (loading from the cache is start-up, not a stage)
        xn.score("cce", pa.array([[0.5, 0.5]], pa.list_(pa.float32())), np.array([0]), from_logits=a.from_logits)
        summary.add_losses("cce", np.ones(2, np.float32), np.zeros(2, np.int64))
        while True:
            c0 = clock()
            batch = next(batches, None)
            c1 = clock()
            t["decode"] += c1 - c0
            if batch is None:
                break
            n = batch.num_rows
            rows += n
            # batch handling, part 1: layouts, canonical forms, options, outputs
            c0 = clock()
            p, _ = xi.as_rows(batch.column("pred"), "pred", is_target=False)
            y, _ = xi.as_rows(batch.column("label"), "target", is_target=True)
            w = xi.weights(None, "class_weight", 0, scalar_ok=False)
            pw = xi.weights(None, "pos_weight", 0, scalar_ok=True)
            p, y, w, pw = xi.kernel_inputs(p, y, w, pw)
            out = np.empty(n, dtype=np.float32)
            status = np.empty(n, dtype=np.int8)
            c1 = clock()
            xi.cpu_run(p, y, prm, w, pw, out, status)
            c2 = clock()
            xi.raise_first_invalid(status, p, y, prm, None)
            null = status != xi.OK
            rb = pa.RecordBatch.from_arrays([batch.column("id"), xi.from_numpy(out, null)], names=["id", "cce"])
            c3 = clock()
            labels = xi.class_labels(batch.column("label"))
            summary.add_losses("cce", out, labels)  # as score_batch does
            c4 = clock()
            writer.write(rb)
            c5 = clock()
            if not a.dump:
                numpy_summary(out, labels)
            c6 = clock()
            t["batch handling"] += (c1 - c0) + (c3 - c2)
            t["kernel"] += c2 - c1
            t["summary"] += c4 - c3
            t["encode"] += c5 - c4
            t_numpy_summary += c6 - c5
        c0 = clock()
        writer.commit(pa.schema([("id", pa.int64()), ("cce", pa.float32())]))
        t["encode"] += clock() - c0
    total = sum(t.values())
    mode = "logits" if a.from_logits else "probabilities"
    print(f"{rows:,} rows x {a.classes} classes, float32 {mode}, batches of {batch_rows:,} rows, "
          f"{common.threads()} kernel threads")
    print(f"{'stage':28s} {'core-ms':>9s} {'share':>6s}  {'ns/row':>7s}")
    for name, sec in t.items():
        print(f"{name:28s} {sec * 1e3:9.0f} {sec / total:6.0%}  {sec / rows * 1e9:7.1f}")
    print(f"{'total':28s} {total * 1e3:9.0f}")
    beyond = total - t["decode"]
    print(f"overhead beyond decoding: {beyond / t['decode']:.2f}x the decode (issue 14 target <= 0.5x)")
    if not a.dump:
        print(f"(the former NumPy summary passes: {t_numpy_summary * 1e3:.0f} core-ms, "
              f"{t_numpy_summary / max(t['summary'], 1e-9):.1f}x the compiled pass)")


if __name__ == "__main__":
    main()
