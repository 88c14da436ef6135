"""What the benchmark scripts share: data, timing, peers, the machine, internal entry points.

Every script runs from the repository root as ``PYTHONPATH=. python benchmarks/<script>.py``
(or as ``python benchmarks/<script>.py`` after ``pip install -e .``). Python puts the
script's own folder, ``benchmarks/``, first on ``sys.path``, so each script imports this
module as ``common``; ``PYTHONPATH=.`` makes ``import xent_numba`` find this checkout. When
the imported xent_numba is another copy, a line on stderr names it.

Importing this module sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set) and imports NumPy,
pyarrow and xent_numba's public API, nothing else: the peers (PyTorch, DuckDB, polars, JAX)
load when a script asks for them (:func:`peer`), and so do the internal modules that a few
scripts time (:func:`internals`, :func:`gpu_internals`).
"""

from __future__ import annotations

import importlib
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
from types import SimpleNamespace

# PyTorch and Numba's omp layer each bring an OpenMP runtime; with the default (active)
# wait policy the idle threads of one spin on the cores the other needs, and a kernel's
# spinning threads are charged to whatever runs after it. Passive waiting, as the CLI sets
# it (cli.py), keeps them from taxing each other; it must be set before either is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
BENCH_DATA = ROOT / "bench-data"  # generated dumps, reused between runs (git-ignored)

try:
    import xent_numba  # noqa: E402
except ModuleNotFoundError as e:  # pragma: no cover - depends on how the script is started
    if e.name != "xent_numba":
        raise
    raise SystemExit("benchmarks: xent_numba is not importable; run from the repository root as "
                     "`PYTHONPATH=. python benchmarks/<script>.py`, or `pip install -e .` first") from None

XN_HOME = Path(xent_numba.__file__).resolve().parents[1]  # the folder holding the package timed
if XN_HOME != ROOT:
    print(f"benchmarks: timing xent_numba from {XN_HOME}, not from this checkout ({ROOT}); "
          "`PYTHONPATH=.` selects this one", file=sys.stderr)


# ---- processes ------------------------------------------------------------------------------


def child_env(extra: dict | None = None, drop: tuple[str, ...] = (), benchmarks: bool = False) -> dict:
    """This process's environment for a child, with ``PYTHONPATH`` led by the folder of the
    xent_numba imported here (so a child `xent` scores with the same code), then
    ``benchmarks/`` when ``benchmarks`` is True (a child that imports this module); ``extra``
    set on top, ``drop`` removed."""
    env = dict(os.environ)
    paths = [str(XN_HOME)] + ([str(BENCH_DIR)] if benchmarks else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra or {})
    for k in drop:
        env.pop(k, None)
    return env


def xent_command() -> list[str]:
    """The `xent` CLI: the console script next to this interpreter, else ``python -m xent_numba``."""
    exe = Path(sys.executable).with_name("xent")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "xent_numba"]


def threads() -> int:
    """The kernels' thread count (``numba.get_num_threads()``)."""
    import numba

    return numba.get_num_threads()


# ---- peers ----------------------------------------------------------------------------------

PEERS = {  # the optional tools the scripts compare against, and how to get them
    "torch": "pip install '.[bench]'",
    "duckdb": "pip install '.[bench]'",
    "polars": "pip install '.[bench]'",
    "psutil": "pip install '.[bench]'",
    "jax": "pip install jax",
}
SKIPPED: list[str] = []  # what a run left out, in order ("torch (not installed)", ...)


def peer(name: str):
    """The optional module ``name``, or None when it is not installed (then noted in
    :data:`SKIPPED`). PyTorch is set to the kernels' thread count, so that both sides of a
    comparison run on the same cores."""
    try:
        mod = importlib.import_module(name)
    except ImportError:
        SKIPPED.append(f"{name} (not installed: {PEERS.get(name, f'pip install {name}')})")
        return None
    if name == "torch":
        mod.set_num_threads(threads())
    return mod


def skipped_line() -> str | None:
    """``Skipped: a; b.`` for what :data:`SKIPPED` holds, or None when nothing was skipped."""
    return "Skipped: " + "; ".join(dict.fromkeys(SKIPPED)) + "." if SKIPPED else None


# ---- data -----------------------------------------------------------------------------------


def logits(rng, n: int, c: int, scale: float = 2.0, dtype=np.float32) -> np.ndarray:
    """(n, c) logits drawn from N(0, scale²)."""
    return rng.normal(0.0, scale, (n, c)).astype(dtype)


def softmax(x: np.ndarray) -> np.ndarray:
    """Each row's softmax, in the dtype of ``x``."""
    e = np.exp(x - x.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(x.dtype)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function of every value, in the dtype of ``x``."""
    return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)


def dirichlet_probs(rng, n: int, c: int, dtype=np.float64) -> np.ndarray:
    """(n, c) probability rows drawn from a flat Dirichlet (each row sums to 1)."""
    return rng.dirichlet(np.ones(c), n).astype(dtype)


def index_labels(rng, n: int, c: int) -> np.ndarray:
    """n int64 class indices in [0, c)."""
    return rng.integers(0, c, n)


def one_hot(y: np.ndarray, c: int, dtype=np.float32) -> np.ndarray:
    """The (len(y), c) one-hot rows of index labels ``y``."""
    t = np.zeros((len(y), c), dtype=dtype)
    t[np.arange(len(y)), y] = 1
    return t


def multi_hot(rng, n: int, c: int, p: float = 0.3, dtype=np.float32) -> np.ndarray:
    """(n, c) multi-hot targets, each 1 with probability ``p``."""
    return (rng.random((n, c)) < p).astype(dtype)


def in_memory_data(n: int, c: int, seed: int = 0) -> dict:
    """The arrays of the in-memory tables, float32: ``logits``, their softmax ``probs``, index
    labels ``y``, their ``onehot`` rows, ``multihot`` targets and the logits' ``sig``moid."""
    rng = np.random.default_rng(seed)
    x = logits(rng, n, c)
    y = index_labels(rng, n, c)
    return dict(logits=x, probs=softmax(x), y=y, onehot=one_hot(y, c), multihot=multi_hot(rng, n, c), sig=sigmoid(x))


def list_array(a: np.ndarray, large: bool = False) -> pa.Array:
    """The rows of a 2-D array as an Arrow list (``large_list`` with ``large``) column."""
    off = pa.array(np.arange(a.shape[0] + 1) * a.shape[1], pa.int64() if large else pa.int32())
    return (pa.LargeListArray if large else pa.ListArray).from_arrays(off, pa.array(a.reshape(-1)))


def fixed_size_list(a: np.ndarray) -> pa.Array:
    """The rows of a 2-D array as an Arrow ``fixed_size_list`` column."""
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


DUMP_SCHEMA = pa.schema([("id", pa.int64()), ("pred", pa.list_(pa.float32())), ("label", pa.int64())])


def write_dump(path: Path, rows: int, classes: int, *, probs: bool = False, row_group: int = 1 << 20,
               chunk: int = 1 << 19, seed: int = 0, scale: float = 2.0, id_start: int = 0) -> Path:
    """A Parquet evaluation dump at ``path``: int64 ``id`` (from ``id_start``), list<float32>
    ``pred`` (logits from N(0, scale²), or their softmax with ``probs``), int64 ``label``.

    Written row group by row group (``row_group`` rows each), each built from chunks of at
    most ``chunk`` rows (generation holds one chunk), under a temporary name renamed at the
    end. An existing file of ``rows`` rows is reused as it is.
    """
    path = Path(path)
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(tmp, DUMP_SCHEMA) as w:
        # ParquetWriter starts a row group per write_table call: write row-group-sized pieces
        for start in range(0, rows, row_group):
            n = min(row_group, rows - start)
            parts = []
            for s in range(0, n, chunk):
                k = min(chunk, n - s)
                x = rng.standard_normal((k, classes), dtype=np.float32) * np.float32(scale)
                parts.append(pa.record_batch([
                    pa.array(np.arange(k, dtype=np.int64) + (id_start + start + s)),
                    list_array(softmax(x) if probs else x),
                    pa.array(rng.integers(0, classes, k, dtype=np.int64)),
                ], schema=DUMP_SCHEMA))
            w.write_table(pa.Table.from_batches(parts, DUMP_SCHEMA), row_group_size=n)
            del parts
    tmp.rename(path)
    return path


def write_feather_copy(src: Path, path: Path | None = None) -> Path:
    """The Parquet file ``src`` copied to an uncompressed Arrow IPC (Feather v2) file, one
    record batch per row group (``src`` with the suffix .feather unless ``path`` is given);
    a copy newer than ``src`` is reused."""
    src = Path(src)
    path = Path(path) if path else src.with_suffix(".feather")
    if path.exists() and path.stat().st_mtime >= src.stat().st_mtime and pa.ipc.open_file(path).schema.names:
        return path
    tmp = path.with_suffix(".tmp")
    pf = pq.ParquetFile(src)
    with pa.OSFile(str(tmp), "wb") as f, pa.ipc.new_file(f, pf.schema_arrow) as w:
        for i in range(pf.metadata.num_row_groups):
            w.write_table(pf.read_row_group(i))
    tmp.rename(path)
    return path


def write_binary_dump(path: Path, rows: int, seed: int = 1, row_group: int = 1 << 20) -> Path:
    """A one-score-per-row Parquet dump: int64 ``id``, float32 ``score`` (uniform in [0, 1)),
    bool ``clicked`` (True for about 20% of the rows)."""
    rng = np.random.default_rng(seed)
    t = pa.table({
        "id": pa.array(np.arange(rows, dtype=np.int64)),
        "score": pa.array(rng.random(rows, dtype=np.float32)),
        "clicked": pa.array(rng.random(rows) < 0.2),
    })
    pq.write_table(t, path, row_group_size=row_group)
    return Path(path)


# ---- timing ---------------------------------------------------------------------------------
#
# This shared machine's speed drifts by up to 1.7x within minutes, so comparisons are made in
# interleaved rounds (each round runs every contender once) and each ratio is the median over
# rounds of the ratio within a round; best times taken minutes apart gave 2x swings.


def best(fn, repeat: int, warm: bool = True, sync=None) -> float:
    """Best wall time of ``repeat`` calls of ``fn`` (after one untimed call unless ``warm`` is
    False); ``sync`` (a GPU's synchronize) is called after each call, inside the timing."""
    sync = sync or (lambda: None)
    if warm:
        fn()
        sync()
    t = float("inf")
    for _ in range(repeat):
        s = time.perf_counter()
        fn()
        sync()
        t = min(t, time.perf_counter() - s)
    return t


def interleaved(jobs: dict, rounds: int, warm: bool = True, on_round=None) -> dict:
    """Call every job of ``jobs`` (name -> callable returning a measurement, or None) once per
    round, in order, ``rounds`` times: {name: [its measurements, one per round]}, None for a
    None job. With ``warm`` each job is called once first, untimed; ``on_round(k, results)``
    is told each finished round (``results``: name -> that round's measurement)."""
    live = {k: f for k, f in jobs.items() if f is not None}
    if warm:
        for f in live.values():
            f()
    out = {k: ([] if f is not None else None) for k, f in jobs.items()}
    for k in range(rounds):
        for name, f in live.items():
            out[name].append(f())
        if on_round:
            on_round(k, {name: out[name][-1] for name in live})
    return out


def interleaved_best(fns: dict, rounds: int, calls: int = 3) -> dict:
    """:func:`interleaved` timing of in-process functions: each round's measurement of a
    function is the best of ``calls`` calls; each is called once first, untimed."""
    for f in fns.values():
        if f is not None:
            f()
    jobs = {k: None if f is None else (lambda f=f: best(f, calls, warm=False)) for k, f in fns.items()}
    return interleaved(jobs, rounds, warm=False)


def median(xs):
    """The median of ``xs``, None for None."""
    return None if xs is None else statistics.median(xs)


def ratio(a, b):
    """The median over rounds of ``a``'s measurement / ``b``'s in the same round (None if
    either is None)."""
    if a is None or b is None:
        return None
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def fmt_ms(t) -> str:
    """Seconds as milliseconds with one decimal, a dash for None."""
    return "—" if t is None else f"{t * 1e3:.1f}"


def fmt_r(r) -> str:
    """A ratio as ``1.23×``, a dash for None."""
    return "—" if r is None else f"{r:.2f}×"


# The command runs as the only child of a small `python -S` wrapper, which times it and then
# reads its peak RSS: a child's ru_maxrss starts from its parent's RSS at the fork, so
# measuring from a benchmark process that holds data would overstate it.
_PEAK_WRAPPER = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); rc = subprocess.call(sys.argv[1:]); "
    "t = time.perf_counter() - t; sys.stderr.write('\\n@@wall %r @@maxrss %d\\n' % "
    "(t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)"
)


def run_process(argv: list[str], env: dict | None = None, cwd: Path = ROOT) -> dict:
    """Run one process (``env`` default :func:`child_env`): its wall time in seconds (of the
    command alone, timed by the wrapper) and its peak RSS in MB (``rss``: ``ru_maxrss``;
    ``anon`` / ``file`` / ``hwm``: the peaks of RssAnon, RssFile and VmHWM, polled from
    /proc/PID/status every 5 ms where there is one: memory-mapped input shows as file
    pages). A failing command ends the benchmark with its stderr."""
    peaks: dict = {}
    stop = threading.Event()
    p = subprocess.Popen([sys.executable, "-S", "-c", _PEAK_WRAPPER, *argv], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, cwd=cwd, env=child_env() if env is None else env)
    poll = threading.Thread(target=_watch_child, args=(p.pid, peaks, stop), daemon=True)
    poll.start()
    err = p.stderr.read().decode(errors="replace")
    p.wait()
    stop.set()
    poll.join()
    m = re.search(r"@@wall (\S+) @@maxrss (\d+)", err)
    if p.returncode != 0 or not m:
        sys.exit(f"failed ({p.returncode}): {shlex.join(argv)}\n{err}")
    return dict(wall=float(m.group(1)), rss=int(m.group(2)) / 1024, anon=peaks.get("RssAnon:", 0) / 1024,
                file=peaks.get("RssFile:", 0) / 1024, hwm=peaks.get("VmHWM:", 0) / 1024)


def best_process(argv: list[str], repeat: int, env: dict | None = None) -> dict:
    """:func:`run_process` once to warm the caches, then ``repeat`` times: the lowest wall
    time and peak RSS (``rss_max``: the highest peak), each the best case of a noisy machine."""
    run_process(argv, env)
    runs = [run_process(argv, env) for _ in range(repeat)]
    out = {k: min(r[k] for r in runs) for k in ("wall", "rss", "anon", "file", "hwm")}
    out["rss_max"] = max(r["rss"] for r in runs)
    return out


def _watch_child(wrapper_pid: int, peaks: dict, stop: threading.Event) -> None:
    """Find the wrapper's child, then poll its /proc status until ``stop``."""
    while not stop.is_set():
        try:
            kids = Path(f"/proc/{wrapper_pid}/task/{wrapper_pid}/children").read_text().split()
        except OSError:
            return
        if kids:
            _status_kb(int(kids[0]), peaks, stop)
            return
        stop.wait(0.002)


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


# ---- the memory floor -----------------------------------------------------------------------

_FLOOR_SUM = None


def floor_sum():
    """A Numba ``prange`` sum over a flat array (fastmath reduction): one read of it."""
    global _FLOOR_SUM
    if _FLOOR_SUM is None:
        import numba

        @numba.njit(parallel=True, fastmath=True, cache=False)
        def psum(a):
            s = a.dtype.type(0)
            for i in numba.prange(a.size):
                s += a[i]
            return s

        _FLOOR_SUM = psum
    return _FLOOR_SUM


def floor_impls(d: dict) -> dict:
    """Per in-memory mode (keys of ``bench.MODES``), a ``prange`` sum over each array of
    :func:`in_memory_data` ``d`` that the mode reads: what memory bandwidth alone costs."""
    flat = {k: np.ascontiguousarray(v).reshape(-1) for k, v in d.items()}
    P, L, y, OH, MH, S = (flat[k] for k in ("probs", "logits", "y", "onehot", "multihot", "sig"))
    f = floor_sum()
    return {
        "cce_prob_index": lambda: (f(P), f(y)),
        "cce_logit_index": lambda: (f(L), f(y)),
        "cce_logit_onehot": lambda: (f(L), f(OH)),
        "bce_prob_multihot": lambda: (f(S), f(MH)),
        "bce_logit_multihot": lambda: (f(L), f(MH)),
    }


# ---- the machine ----------------------------------------------------------------------------


def machine() -> str:
    """CPU model and count, versions, Numba's threading layer (once a parallel kernel has
    launched it) and the load average now (a shared machine's load moves its figures)."""
    import numba

    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    try:
        layer = f", threading layer {numba.threading_layer()}"
    except ValueError:  # no parallel kernel has run in this process
        layer = ""
    load = os.getloadavg()
    return (f"{model}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
            f"numba {numba.__version__}, numpy {np.__version__}, pyarrow {pa.__version__}{layer}; "
            f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end of the run")


# ---- internal entry points ------------------------------------------------------------------
#
# The scripts go through the public API (xent_numba.cce / bce / score, xent_numba.dask.score,
# the `xent` CLI) except where they time what it does not expose. The internal names they rely
# on are imported here and nowhere else, so a module move inside xent_numba changes this block.


def internals() -> SimpleNamespace:
    """The internal entry points of the CPU benchmarks, by the script that uses them."""
    from xent_numba import arrow, io, losses, validate
    from xent_numba.analysis.summary import N_BINS, Summary, _bin_index
    from xent_numba.columns import Columns
    from xent_numba.engine.local import (
        DEFAULT_BATCH_BYTES,
        ScoreOptions,
        _default_batch_rows,
        class_labels,
        score_files,
    )
    from xent_numba.kernels import cpu
    from xent_numba.kernels import fastmath as _fastmath
    from xent_numba.kernels import signatures as canon

    return SimpleNamespace(
        # bench.py: the local engine in one process, start-up excluded (what `xent score` runs)
        score_files=score_files, ScoreOptions=ScoreOptions,
        # bench_floor.py: the float32 / float64 exp, log and log1p(exp) that the kernels inline
        fastmath=_fastmath,
        # bench_score.py (decode): the engine's reader and its default batch size
        Source=io.Source, Columns=Columns, default_batch_rows=_default_batch_rows,
        # bench_stages.py: each stage of the engine, called one batch at a time
        AtomicWriter=io.AtomicWriter, as_rows=arrow.as_rows, from_numpy=arrow.from_numpy,
        kernel_inputs=canon.kernel_inputs, cpu_run=cpu.run, make_params=losses.make_params, OK=losses.OK,
        weights=validate.weights, raise_first_invalid=validate.raise_first_invalid,
        DEFAULT_BATCH_BYTES=DEFAULT_BATCH_BYTES, class_labels=class_labels,
        Summary=Summary, N_BINS=N_BINS, bin_index=_bin_index,
    )


def gpu_internals() -> SimpleNamespace:
    """bench_gpu.py's internal entry points (importing them imports numba.cuda): whether the
    library would use the GPU, and the kernel shape it plans for an (N, C) call."""
    from xent_numba import backend
    from xent_numba.kernels import gpu_launch

    return SimpleNamespace(cuda_usable=backend.cuda_usable, plan=gpu_launch.plan)
