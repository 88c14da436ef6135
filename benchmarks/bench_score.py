"""The targets of the `xent score` issue, measured on whole processes.

    python benchmarks/bench_score.py                      # the issue's sizes (a few minutes)
    python benchmarks/bench_score.py --rows 2000000 --time-rows 1000000 --engine-rows 2000000   # scaled down
    python benchmarks/bench_score.py --only engine --only decode   # issue 14 (20M x 16)

1. Memory: peak RSS of `xent score --from-logits --keep id` on a 12M-row x 32-class float32
   logits dump (list<float32> `pred`, int64 `label`, int64 `id`) must be <= 512 MB, and
   within 1.2x of the peak on a dump four times smaller (3M rows).
2. Time: the whole `xent score --from-logits` process on a 4M x 16 logits dump must take
   <= 1.25x a bare `python -c "import pyarrow.parquet as pq; pq.read_table(path,
   columns=['pred', 'label'])"` process (page cache warm: every command runs once first).
3. Issue 14, on a 20M-row x 16-class float32 logits dump (`--from-logits --keep id`): the
   whole `xent score` process <= 1.25x the bare read process, DuckDB's CCE-from-logits query
   Parquet -> Parquet (the id kept, a whole `python -c` process too) >= 2x `xent score`,
   `xent score` on the Feather (uncompressed Arrow IPC) copy >= 3x faster than on Parquet,
   peak RSS <= 512 MB; `--threads 1` vs `--threads 2`. Then the decode rates in one process
   (the engine's reader vs `read_table` on 1 and 2 threads): is one decoder thread the
   bottleneck?

Peak RSS is the command's ``ru_maxrss``, read by a small ``python -S`` wrapper that runs it
as its only child and times it (``common.run_process``); /proc/PID/status is also polled to
split the peak into anonymous memory and file pages (memory-mapped input counts towards RSS). Dumps are generated in chunks under
``bench-data/`` (git-ignored) and reused; row groups default to 1,048,576 rows, pyarrow's
``write_table`` default. Times are the best of ``--repeat`` runs; compare ratios within one
run, not absolute times across machines.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import common
import pyarrow as pa
import pyarrow.parquet as pq
from common import ROOT, best_process

MEM_ROWS, MEM_CLASSES, MEM_LIMIT_MB, MEM_RATIO = 12_000_000, 32, 512, 1.2
TIME_ROWS, TIME_CLASSES, TIME_RATIO = 4_000_000, 16, 1.25
ENGINE_ROWS, ENGINE_CLASSES, DUCK_RATIO, FEATHER_RATIO = 20_000_000, 16, 2.0, 3.0


def make_dump(data: Path, rows: int, classes: int, row_group: int) -> Path:
    """The float32 logits dump of ``rows`` x ``classes`` under ``data`` (generated once)."""
    path = data / f"logits-{rows}x{classes}-rg{row_group}.parquet"
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    t0 = time.perf_counter()
    common.write_dump(path, rows, classes, row_group=row_group, seed=rows * 31 + classes)
    print(f"generated {path.name} ({path.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


def show(argv: list[str]) -> str:
    rel = [os.path.relpath(a, ROOT) if os.path.isabs(a) and a.startswith(str(ROOT)) else a for a in argv]
    if rel and rel[0].endswith("/xent"):
        rel[0] = "xent"
    elif rel[:1] == [sys.executable]:
        rel[0] = "python"
    return shlex.join(rel)


def memory_section(data: Path, rows: int, classes: int, row_group: int, repeat: int, extra: list[str]) -> bool:
    big = make_dump(data, rows, classes, row_group)
    small = make_dump(data, rows // 4, classes, row_group)
    out = data / "scores-mem.parquet"
    cmd = lambda src: common.xent_command() + ["score", str(src), "-o", str(out), "--from-logits", "--keep", "id", "--quiet", "--overwrite", *extra]  # noqa: E731
    res = {}
    for src in (small, big):
        res[src] = best_process(cmd(src), repeat)
    r_big, r_small = res[big], res[small]
    ratio = r_big["rss"] / r_small["rss"]
    scaled = "" if rows == MEM_ROWS else f" — **scaled down** from the issue's {MEM_ROWS:,} rows"
    print(f"\n#### Peak memory: {rows:,} x {classes} float32 logits vs {rows // 4:,} rows{scaled}\n")
    print(f"Row groups of {row_group:,} rows; best of {repeat} after a warm-up run. Command: `{show(cmd(big))}`\n")
    print("| input | file MB | wall s | peak RSS MB | of which anon / file MB | rows/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for src, n in ((small, rows // 4), (big, rows)):
        r = res[src]
        print(f"| {n:,} rows | {src.stat().st_size / 1e6:,.0f} | {r['wall']:.2f} | {r['rss']:.0f} | "
              f"{r['anon']:.0f} / {r['file']:.0f} | {n / r['wall']:,.0f} |")
    ok_abs = r_big["rss"] <= MEM_LIMIT_MB
    ok_ratio = ratio <= MEM_RATIO
    print(f"\nTarget: peak RSS <= {MEM_LIMIT_MB} MB on the big dump: **{r_big['rss']:.0f} MB, "
          f"{'met' if ok_abs else 'missed'}**; big / small <= {MEM_RATIO}x: **{ratio:.2f}x, "
          f"{'met' if ok_ratio else 'missed'}**.")
    return ok_abs and ok_ratio


def time_section(data: Path, rows: int, classes: int, row_group: int, repeat: int, extra: list[str]) -> bool:
    src = make_dump(data, rows, classes, row_group)
    out = data / "scores-time.parquet"
    read = [sys.executable, "-c", f"import pyarrow.parquet as pq; pq.read_table({str(src)!r}, columns=['pred', 'label'])"]
    imports = [sys.executable, "-c", "import pyarrow.parquet"]
    score = common.xent_command() + ["score", str(src), "-o", str(out), "--from-logits", "--quiet", "--overwrite", *extra]
    startup = common.xent_command() + ["score", "--help"]
    jobs = [
        ("bare `pq.read_table` of pred + label (floor)", read),
        ("`xent score --from-logits`", score),
        ("`python -c 'import pyarrow.parquet'` (start-up part of the floor)", imports),
        ("`xent score --help` (start-up part of xent score)", startup),
    ]
    res = {name: best_process(argv, repeat) for name, argv in jobs}
    floor = res[jobs[0][0]]["wall"]
    ratio = res[jobs[1][0]]["wall"] / floor
    scaled = "" if rows == TIME_ROWS else f" — **scaled down** from the issue's {TIME_ROWS:,} rows"
    print(f"\n#### Whole-process time: {rows:,} x {classes} float32 logits, "
          f"{src.stat().st_size / 1e6:,.0f} MB{scaled}\n")
    print(f"Row groups of {row_group:,} rows; page cache warm (each command run once first), best of {repeat}.\n")
    print("| process | wall s | vs bare read | peak RSS MB |")
    print("|---|---:|---:|---:|")
    for name, _ in jobs:
        r = res[name]
        print(f"| {name} | {r['wall']:.2f} | {r['wall'] / floor:.2f}× | {r['rss']:.0f} |")
    print("\nCommands:\n")
    for _name, argv in jobs[:2]:
        print(f"    {show(argv)}")
    ok = ratio <= TIME_RATIO
    print(f"\nTarget: `xent score` <= {TIME_RATIO}x the bare read: **{ratio:.2f}x, {'met' if ok else 'missed'}**.")
    return ok


def duckdb_script(src: Path, out: Path) -> str:
    """DuckDB's CCE from logits, Parquet -> Parquet, the id kept (a whole process)."""
    sql = (f"COPY (SELECT id, m + ln(list_sum(list_transform(pred, lambda x: exp(x - m)))) - pred[label + 1] "
           f"AS cce FROM (SELECT id, pred, label, list_max(pred) AS m FROM read_parquet('{src}'))) "
           f"TO '{out}' (FORMAT parquet)")
    return f"import duckdb; duckdb.connect().execute({sql!r})"


def engine_section(data: Path, rows: int, classes: int, row_group: int, repeat: int, extra: list[str]) -> bool:
    """Issue 14, targets 3 and 4: whole processes on the 20M x 16 logits dump (id kept)."""
    src = make_dump(data, rows, classes, row_group)
    feather = common.write_feather_copy(src)
    out = data / "scores-engine.parquet"
    score = lambda inp, *more: common.xent_command() + ["score", str(inp), "-o", str(out), "--from-logits", "--keep", "id",  # noqa: E731
                                             "--quiet", "--overwrite", *more, *extra]
    read = [sys.executable, "-c", f"import pyarrow.parquet as pq; pq.read_table({str(src)!r}, columns=['pred', 'label'])"]
    jobs = [
        ("bare `pq.read_table` of pred + label (floor)", read),
        ("`xent score --from-logits --keep id` (Parquet)", score(src)),
        ("`xent score ... --threads 1` (Parquet)", score(src, "--threads", "1")),
        ("`xent score ... --threads 2` (Parquet)", score(src, "--threads", "2")),
        ("`xent score ... ` on the Feather copy", score(feather)),
    ]
    if common.peer("duckdb"):
        jobs.append(("DuckDB, the same query Parquet -> Parquet, id kept", [sys.executable, "-c", duckdb_script(src, data / "duck.parquet")]))
    else:
        print("(DuckDB not installed: skipped)", file=sys.stderr)
    # Interleaved rounds (every command once per round, after one warm-up run each): the
    # shared machine's speed drifts by up to 1.7x within minutes, so each ratio is taken
    # within a round and the median over rounds is reported, not a ratio of two best times
    # measured minutes apart.
    runs = common.interleaved({name: (lambda argv=argv: common.run_process(argv)) for name, argv in jobs}, repeat,
                              on_round=lambda k, res: print(f"  round {k + 1}: " + ", ".join(
                                  f"{r['wall']:.2f}" for r in res.values()), file=sys.stderr))
    names = [n for n, _ in jobs]
    bare, xent_name = names[0], names[1]

    def ratio(a, b):  # median over rounds of a's time / b's time in the same round
        return common.ratio([x["wall"] for x in runs[a]], [y["wall"] for y in runs[b]])

    res = {n: dict(wall=common.median([r["wall"] for r in runs[n]]), low=min(r["wall"] for r in runs[n]),
                   rss=min(r["rss"] for r in runs[n]), rss_max=max(r["rss"] for r in runs[n]),
                   anon=min(r["anon"] for r in runs[n]), file=min(r["file"] for r in runs[n])) for n in names}
    scaled = "" if rows == ENGINE_ROWS else f" — **scaled down** from the issue's {ENGINE_ROWS:,} rows"
    print(f"\n#### Whole processes: {rows:,} x {classes} float32 logits, list<float32> `pred`, int64 `label`, `id`; "
          f"Parquet {src.stat().st_size / 1e6:,.0f} MB, Feather {feather.stat().st_size / 1e6:,.0f} MB{scaled}\n")
    print(f"Row groups of {row_group:,} rows; page cache warm (each command run once first); {repeat} interleaved "
          "rounds: wall = median (lowest), ratios = median over rounds of the ratio within a round.\n")
    print("| process | wall s | vs bare read | vs xent score | peak RSS MB | anon / file MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        r = res[name]
        print(f"| {name} | {r['wall']:.2f} ({r['low']:.2f}) | {ratio(name, bare):.2f}× | {ratio(name, xent_name):.2f}× | "
              f"{r['rss']:.0f} | {r['anon']:.0f} / {r['file']:.0f} |")
    print("\n(file MB: pages of memory-mapped files, the Feather input among them: page cache the"
          " kernel may drop, not memory the process allocated)")
    print("\nCommands:\n")
    for _name, argv in jobs:
        print(f"    {show(argv)}")
    ok = True
    r_bare = ratio(xent_name, bare)
    ok &= r_bare <= TIME_RATIO
    print(f"\nTargets: `xent score` <= {TIME_RATIO}x the bare read: **{r_bare:.2f}x, {'met' if r_bare <= TIME_RATIO else 'missed'}**", end="")
    duck = next((n for n in names if n.startswith("DuckDB")), None)
    if duck is not None:
        r_duck = ratio(duck, xent_name)
        ok &= r_duck >= DUCK_RATIO
        print(f"; DuckDB / xent score >= {DUCK_RATIO}x: **{r_duck:.2f}x, {'met' if r_duck >= DUCK_RATIO else 'missed'}**", end="")
    r_fe = ratio(xent_name, names[4])
    ok &= r_fe >= FEATHER_RATIO
    print(f"; Parquet / Feather >= {FEATHER_RATIO}x: **{r_fe:.2f}x, {'met' if r_fe >= FEATHER_RATIO else 'missed'}**", end="")
    rss = max(res[n]["rss_max"] for n in names[1:4])
    ok &= rss <= MEM_LIMIT_MB
    anon = res[names[4]]["anon"]
    print(f"; peak RSS of xent score on Parquet <= {MEM_LIMIT_MB} MB: **{rss:.0f} MB, {'met' if rss <= MEM_LIMIT_MB else 'missed'}**"
          f" (on Feather: {anon:.0f} MB anonymous, the rest the memory-mapped input).")
    print(f"Threads: --threads 1 / --threads 2: {ratio(names[2], names[3]):.2f}x (median {res[names[2]]['wall']:.2f} s "
          f"vs {res[names[3]]['wall']:.2f} s).")
    return ok


def decode_section(data: Path, rows: int, classes: int, row_group: int, repeat: int) -> None:
    """Is one decoder thread the bottleneck? The engine's reader (``io.Source.batches`` on
    one decoder thread, and on one per core: row groups in parallel) against ``read_table``
    on 1 and 2 threads, in this process: wall and core seconds of decoding pred, label, id."""
    xi = common.internals()
    src = make_dump(data, rows, classes, row_group)
    cols = ["id", "pred", "label"]

    def engine_reader(decoders):
        def job():
            s = xi.Source(str(src))
            for _ in s.batches(cols, xi.default_batch_rows(s, xi.Columns(("pred",), ("label",), ("id",))), decoders):
                pass
        return job

    def read_table(n):
        def job():
            pa.set_cpu_count(n)
            try:
                pq.read_table(src, columns=cols)
            finally:
                pa.set_cpu_count(os.cpu_count() or 1)
        return job

    jobs = [("engine reader, one decoder thread (`--threads 1`)", engine_reader(1)),
            ("engine reader, row groups on 2 decoder threads (the default here)", engine_reader(2)),
            ("`read_table`, pyarrow on 1 thread", read_table(1)),
            ("`read_table`, pyarrow on 2 threads", read_table(2))]
    print(f"\n#### Decoding {rows:,} x {classes} (pred, label, id) in one process: is one decoder thread the bottleneck?\n")
    print("| reader | wall s | core s | cores busy | rows/s |")
    print("|---|---:|---:|---:|---:|")
    for name, fn in jobs:
        fn()
        runs = []
        for _ in range(repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            runs.append((time.perf_counter() - w0, time.process_time() - c0))
        w, c = min(runs)
        print(f"| {name} | {w:.2f} | {c:.2f} | {c / w:.2f} | {rows / w:,.0f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=MEM_ROWS, help=f"rows of the big memory dump (default {MEM_ROWS:,}; the small one has a quarter)")
    ap.add_argument("--classes", type=int, default=MEM_CLASSES, help=f"classes of the memory dumps (default {MEM_CLASSES})")
    ap.add_argument("--time-rows", type=int, default=TIME_ROWS, help=f"rows of the timing dump (default {TIME_ROWS:,})")
    ap.add_argument("--time-classes", type=int, default=TIME_CLASSES, help=f"classes of the timing dump (default {TIME_CLASSES})")
    ap.add_argument("--engine-rows", type=int, default=ENGINE_ROWS, help=f"rows of the engine dump (default {ENGINE_ROWS:,})")
    ap.add_argument("--engine-classes", type=int, default=ENGINE_CLASSES, help=f"classes of the engine dump (default {ENGINE_CLASSES})")
    ap.add_argument("--row-group", type=int, default=1 << 20, help="rows per Parquet row group of the dumps (default 1,048,576)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per command after a warm-up run, best kept (default 3)")
    ap.add_argument("--only", choices=["memory", "time", "engine", "decode"], action="append", help="run only these sections (repeatable)")
    ap.add_argument("--data", default=str(common.BENCH_DATA), help="where the dumps are kept (default bench-data/)")
    ap.add_argument("--xent-arg", action="append", default=[], help="extra argument for every xent score run (repeatable)")
    a = ap.parse_args(argv)
    sections = a.only or ["memory", "time", "engine", "decode"]
    data = Path(a.data)
    print(f"### `xent score` targets — `{show([sys.executable, *sys.argv]) if argv is None else 'bench_score'}`")
    ok = True
    if "memory" in sections:
        ok &= memory_section(data, a.rows, a.classes, a.row_group, a.repeat, a.xent_arg)
    if "time" in sections:
        ok &= time_section(data, a.time_rows, a.time_classes, a.row_group, a.repeat, a.xent_arg)
    if "engine" in sections:
        ok &= engine_section(data, a.engine_rows, a.engine_classes, a.row_group, a.repeat, a.xent_arg)
    if "decode" in sections:
        decode_section(data, a.engine_rows, a.engine_classes, a.row_group, a.repeat)
    print(f"\nMachine: {common.machine()}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
