"""Local engine vs ``--engine dask`` (embedded LocalCluster) on a multi-file dataset.

    python benchmarks/bench_dask.py                 # 4 files x 1M rows x 16 float32 logits
    python benchmarks/bench_dask.py --rows 250000   # smaller

Both runs are whole ``xent score`` processes (start-up included), timed best of
``--repeat``; the data lives under ``bench-data/`` (git-ignored). Prints a markdown table
with the ratio dask / local.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import common


def make_dataset(root: Path, files: int, rows: int, classes: int) -> Path:
    """``files`` float32 logits dumps of ``rows`` rows each (ids running on across the files),
    in row groups of 262,144 rows, written into a temporary folder renamed at the end."""
    out = root / f"dask-{files}x{rows}x{classes}"
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for i in range(files):
        common.write_dump(tmp / f"part-{i:03d}.parquet", rows, classes, row_group=256 * 1024,
                          seed=i, scale=1.0, id_start=i * rows)
    tmp.rename(out)
    return out


def timed(cmd: list[str]) -> float:
    """Wall seconds of one whole process."""
    return common.run_process(cmd, cwd=Path.cwd())["wall"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per file")
    ap.add_argument("--classes", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--data", default=str(common.BENCH_DATA))
    args = ap.parse_args(argv)

    data = make_dataset(Path(args.data), args.files, args.rows, args.classes)
    out = Path(args.data) / "out"
    base = common.xent_command() + ["score", str(data), "--from-logits", "--keep", "id", "--quiet", "--overwrite"]
    runs = {
        "local engine": base + ["-o", str(out / "local.parquet")],
        "dask LocalCluster": base + ["-o", str(out / "dask"), "--engine", "dask"],
    }
    out.mkdir(parents=True, exist_ok=True)
    timed(runs["local engine"])  # warm the on-disk kernel cache and the page cache
    times = {name: min(timed(cmd) for _ in range(args.repeat)) for name, cmd in runs.items()}
    local = times["local engine"]
    total = args.files * args.rows
    print(f"\n{args.files} files x {args.rows:,} rows x {args.classes} float32 logits ({total:,} rows), CCE, best of {args.repeat}\n")
    print("| engine | time (s) | ratio to local |")
    print("|---|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {t:.2f} | {t / local:.2f}x |")


if __name__ == "__main__":
    main()
