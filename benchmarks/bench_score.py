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
as its only child; /proc/PID/status is also polled to split the peak into anonymous memory
and file pages (memory-mapped input counts towards RSS). Dumps are generated in chunks under
``bench-data/`` (git-ignored) and reused; row groups default to 1,048,576 rows, pyarrow's
``write_table`` default. Times are the best of ``--repeat`` runs; compare ratios within one
run, not absolute times across machines.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
MEM_ROWS, MEM_CLASSES, MEM_LIMIT_MB, MEM_RATIO = 12_000_000, 32, 512, 1.2
TIME_ROWS, TIME_CLASSES, TIME_RATIO = 4_000_000, 16, 1.25
ENGINE_ROWS, ENGINE_CLASSES, DUCK_RATIO, FEATHER_RATIO = 20_000_000, 16, 2.0, 3.0


def xent_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("xent")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "xent_numba"]


def make_dump(data: Path, rows: int, classes: int, row_group: int, chunk: int = 1 << 19) -> Path:
    """A float32 logits dump written chunk by chunk (generation holds one chunk)."""
    path = data / f"logits-{rows}x{classes}-rg{row_group}.parquet"
    if path.exists():
        md = pq.ParquetFile(path).metadata
        if md.num_rows == rows:
            return path
    data.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    schema = pa.schema([("id", pa.int64()), ("pred", pa.list_(pa.float32())), ("label", pa.int64())])
    rng = np.random.default_rng(rows * 31 + classes)
    t0 = time.perf_counter()
    with pq.ParquetWriter(tmp, schema) as w:
        # ParquetWriter starts a row group per write_table call: write row-group-sized pieces,
        # each built from chunks of at most ``chunk`` rows
        for start in range(0, rows, row_group):
            n = min(row_group, rows - start)
            parts = []
            for s in range(0, n, chunk):
                k = min(chunk, n - s)
                logits = rng.standard_normal(k * classes, dtype=np.float32) * 2.0
                pred = pa.ListArray.from_arrays(pa.array(np.arange(0, (k + 1) * classes, classes, dtype=np.int32)), pa.array(logits))
                parts.append(pa.record_batch([
                    pa.array(np.arange(start + s, start + s + k, dtype=np.int64)),
                    pred,
                    pa.array(rng.integers(0, classes, k, dtype=np.int64)),
                ], schema=schema))
            w.write_table(pa.Table.from_batches(parts, schema), row_group_size=n)
            del parts
    tmp.rename(path)
    print(f"generated {path.name} ({path.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


def _status_kb(pid: int, peaks: dict, stop: threading.Event) -> None:
    keys = ("VmHWM:", "RssAnon:", "RssFile:")
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(keys):
                        k, v = line.split()[:2]
                        peaks[k] = max(peaks.get(k, 0), int(v))
        except (OSError, ValueError):
            return
        stop.wait(0.005)


_PEAK_WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "sys.stderr.write('\\n@@maxrss %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


def run(argv: list[str]) -> dict:
    """Run one process: its wall time and its peak RSS (MB).

    The peak is ``ru_maxrss`` of the command as a child of a fresh, small ``python -S``
    wrapper (a child's ``ru_maxrss`` starts from its parent's RSS at the fork, so measuring
    from this process, which holds data, would overstate it). /proc/PID/status of the
    command is polled every 5 ms for the anonymous / file-backed split of the peak
    (memory-mapped input shows as file pages). Wall time includes the wrapper's start
    (~20 ms, the same for every command).
    """
    peaks: dict = {}
    stop = threading.Event()
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-S", "-c", _PEAK_WRAPPER, *argv], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, cwd=ROOT)
    poll = threading.Thread(target=_watch_child, args=(p.pid, peaks, stop), daemon=True)
    poll.start()
    err = p.stderr.read().decode(errors="replace")
    p.wait()
    wall = time.perf_counter() - t0
    stop.set()
    poll.join()
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {shlex.join(argv)}\n{err}")
    maxrss = int(re.search(r"@@maxrss (\d+)", err).group(1))
    return dict(wall=wall, rss=maxrss / 1024, anon=peaks.get("RssAnon:", 0) / 1024,
                file=peaks.get("RssFile:", 0) / 1024, hwm=peaks.get("VmHWM:", 0) / 1024)


def _watch_child(wrapper_pid: int, peaks: dict, stop: threading.Event) -> None:
    """Find the wrapper's child, then poll its /proc status."""
    while not stop.is_set():
        try:
            kids = Path(f"/proc/{wrapper_pid}/task/{wrapper_pid}/children").read_text().split()
        except OSError:
            return
        if kids:
            _status_kb(int(kids[0]), peaks, stop)
            return
        stop.wait(0.002)


def best(argv: list[str], repeat: int) -> dict:
    """Run once to warm the caches, then ``repeat`` times: the lowest wall time and peak RSS
    (each is the best-case figure of a noisy shared machine; RSS varies little)."""
    run(argv)
    runs = [run(argv) for _ in range(repeat)]
    return dict(
        wall=min(r["wall"] for r in runs),
        rss=min(r["rss"] for r in runs),
        rss_max=max(r["rss"] for r in runs),
        anon=min(r["anon"] for r in runs),
        file=min(r["file"] for r in runs),
        hwm=min(r["hwm"] for r in runs),
    )


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
    cmd = lambda src: xent_cmd() + ["score", str(src), "-o", str(out), "--from-logits", "--keep", "id", "--quiet", "--overwrite", *extra]  # noqa: E731
    res = {}
    for src in (small, big):
        res[src] = best(cmd(src), repeat)
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
    score = xent_cmd() + ["score", str(src), "-o", str(out), "--from-logits", "--quiet", "--overwrite", *extra]
    startup = xent_cmd() + ["score", "--help"]
    jobs = [
        ("bare `pq.read_table` of pred + label (floor)", read),
        ("`xent score --from-logits`", score),
        ("`python -c 'import pyarrow.parquet'` (start-up part of the floor)", imports),
        ("`xent score --help` (start-up part of xent score)", startup),
    ]
    res = {name: best(argv, repeat) for name, argv in jobs}
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


def make_feather(src: Path) -> Path:
    """The Parquet dump ``src`` copied to an uncompressed Arrow IPC (Feather v2) file,
    row group by row group (record batches of the dump's row-group size)."""
    path = src.with_suffix(".feather")
    if path.exists() and pa.ipc.open_file(path).schema.names and path.stat().st_mtime >= src.stat().st_mtime:
        return path
    tmp = path.with_suffix(".tmp")
    pf = pq.ParquetFile(src)
    with pa.OSFile(str(tmp), "wb") as f, pa.ipc.new_file(f, pf.schema_arrow) as w:
        for i in range(pf.metadata.num_row_groups):
            w.write_table(pf.read_row_group(i))
    tmp.rename(path)
    return path


def duckdb_script(src: Path, out: Path) -> str:
    """DuckDB's CCE from logits, Parquet -> Parquet, the id kept (a whole process)."""
    sql = (f"COPY (SELECT id, m + ln(list_sum(list_transform(pred, lambda x: exp(x - m)))) - pred[label + 1] "
           f"AS cce FROM (SELECT id, pred, label, list_max(pred) AS m FROM read_parquet('{src}'))) "
           f"TO '{out}' (FORMAT parquet)")
    return f"import duckdb; duckdb.connect().execute({sql!r})"


def engine_section(data: Path, rows: int, classes: int, row_group: int, repeat: int, extra: list[str]) -> bool:
    """Issue 14, targets 3 and 4: whole processes on the 20M x 16 logits dump (id kept)."""
    src = make_dump(data, rows, classes, row_group)
    feather = make_feather(src)
    out = data / "scores-engine.parquet"
    score = lambda inp, *more: xent_cmd() + ["score", str(inp), "-o", str(out), "--from-logits", "--keep", "id",  # noqa: E731
                                             "--quiet", "--overwrite", *more, *extra]
    read = [sys.executable, "-c", f"import pyarrow.parquet as pq; pq.read_table({str(src)!r}, columns=['pred', 'label'])"]
    jobs = [
        ("bare `pq.read_table` of pred + label (floor)", read),
        ("`xent score --from-logits --keep id` (Parquet)", score(src)),
        ("`xent score ... --threads 1` (Parquet)", score(src, "--threads", "1")),
        ("`xent score ... --threads 2` (Parquet)", score(src, "--threads", "2")),
        ("`xent score ... ` on the Feather copy", score(feather)),
    ]
    try:
        import duckdb  # noqa: F401

        jobs.append(("DuckDB, the same query Parquet -> Parquet, id kept", [sys.executable, "-c", duckdb_script(src, data / "duck.parquet")]))
    except ImportError:
        print("(DuckDB not installed: skipped)", file=sys.stderr)
    # Interleaved rounds (every command once per round, after one warm-up run each): the
    # shared machine's speed drifts by up to 1.7x within minutes, so each ratio is taken
    # within a round and the median over rounds is reported, not a ratio of two best times
    # measured minutes apart.
    for _name, argv in jobs:
        run(argv)
    runs = {name: [] for name, _ in jobs}
    for k in range(repeat):
        for name, argv in jobs:
            runs[name].append(run(argv))
        print(f"  round {k + 1}: " + ", ".join(f"{runs[n][-1]['wall']:.2f}" for n, _ in jobs), file=sys.stderr)
    names = [n for n, _ in jobs]
    bare, xent_name = names[0], names[1]

    def ratio(a, b):  # median over rounds of a's time / b's time in the same round
        return statistics.median(x["wall"] / y["wall"] for x, y in zip(runs[a], runs[b]))

    res = {n: dict(wall=statistics.median(r["wall"] for r in runs[n]), low=min(r["wall"] for r in runs[n]),
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
    sys.path.insert(0, str(ROOT))
    from xent_numba import io as xio
    from xent_numba.columns import Columns
    from xent_numba.engine.local import _default_batch_rows

    src = make_dump(data, rows, classes, row_group)
    cols = ["id", "pred", "label"]

    def engine_reader(decoders):
        def job():
            s = xio.Source(str(src))
            for _ in s.batches(cols, _default_batch_rows(s, Columns(("pred",), ("label",), ("id",))), decoders):
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


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    load = os.getloadavg()
    return (f"{model}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, pyarrow {pa.__version__}; "
            f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end of the run")


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
    ap.add_argument("--data", default=str(ROOT / "bench-data"), help="where the dumps are kept (default bench-data/)")
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
    print(f"\nMachine: {machine()}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
