"""Compile the common kernel signatures ahead of time (``xent warmup``).

Numba compiles a kernel the first time it meets an input type and keeps the machine code
in its on-disk cache (``__pycache__`` beside the package, or ``NUMBA_CACHE_DIR``), so only
the first run pays. ``canon`` reduces every input to a few types; this module calls each
kernel once on a tiny input of each of those types, so that later runs load code instead
of compiling it. Groups are independent kernels and can compile in parallel processes.

Why not at install time: Numba's cache entries are keyed to the source file's modification
time and to the host CPU's name and features, so code compiled while building a wheel is
not reused on the user's machine (pip writes new files, and the CPU may differ); Numba's
ahead-of-time compiler (``numba.pycc``) is deprecated and compiles no ``parallel=True``
kernel. Compiling on first import would make every ``import xent_numba`` wait for every
kernel's compile on a cold cache. So the warm-up is explicit: ``xent warmup`` once after installing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

# group name -> (targets, classes per row); "narrow" rows go through the blocked kernels.
# One group per top-level kernel, so that no two processes write the same kernel's cache
# index at once (Numba reads, updates and rewrites it: a concurrent write can drop an entry).
GROUPS = {
    "index-narrow": ("index", 4),
    "index-wide": ("index", 80),
    "dense-narrow": ("dense", 4),
    "dense-wide": ("dense", 80),
    "summary": (None, 0),
    "binary": ("scalar", 1),  # one score per row (binary classifier dumps)
}
OPTION_GROUPS = {  # the general kernels (label smoothing, class/pos weights): --all only
    "options-index": ("index", 4),
    "options-dense": ("dense", 4),
}


def _compile_group(name: str) -> None:
    from .. import api
    from ..analysis.summary import Summary
    from ..kernels import signatures as canon

    targets, c = {**GROUPS, **OPTION_GROUPS}[name]
    if targets == "scalar":
        _compile_binary()
        return
    if targets is None:
        s = Summary()
        s.add_losses("cce", np.ones(3), np.array([0, 1, 2]))
        s.add_classes(np.array([0, 1, 2]), np.ones(3))
        return
    n = 8
    y = np.arange(n) % c
    onehot = np.eye(c)[y]
    opts = {"label_smoothing": 0.1} if name.startswith("options") else {}
    for dt in canon.PRED_DTYPES:
        p = np.full((n, c), 1.0 / c, dtype=dt)
        preds = [p]
        if name.startswith("options"):  # ragged rows take their own general kernels
            import pyarrow as pa

            flat = pa.array(p.reshape(-1))
            preds.append(pa.ListArray.from_arrays(pa.array(np.arange(n + 1) * c, pa.int32()), flat))
        for pred in preds:
            if targets == "index":
                api.score("cce", pred, y, **opts)
                continue
            for tdt in canon.TARGET_DTYPES:
                api.score("cce", pred, onehot.astype(tdt), **opts)


def _compile_binary() -> None:
    """The scalar-row kernel (``cpu_binary``) for both prediction dtypes and every label form
    ``arrow.as_labels`` makes: 0/1 as uint8 (bool) or int64, soft labels as float32/float64."""
    from .. import api
    from ..kernels import signatures as canon

    n = 8
    y = np.arange(n) % 2
    for dt in canon.PRED_DTYPES:
        p = np.full(n, 0.5, dtype=dt)
        for labels in (y.astype(bool), y, y.astype(np.float32), y.astype(np.float64)):
            for loss in ("cce", "bce"):
                api.score(loss, p, labels)


def warmup(*, jobs: int | None = None, include_options: bool = False, say=print) -> float:
    """Compile the kernels for every canonical input type; return the seconds it took.

    ``jobs`` processes compile groups side by side (default: the number of CPUs; 1 compiles
    in this process). ``include_options`` adds the general kernels used with label
    smoothing or weights. Already-cached kernels are only loaded, so a second call is quick.
    """
    names = list(GROUPS) + (list(OPTION_GROUPS) if include_options else [])
    jobs = max(1, jobs or os.cpu_count() or 1)
    t0 = time.perf_counter()
    if jobs == 1:
        for name in names:
            t = time.perf_counter()
            _compile_group(name)
            say(f"  {name:14s} {time.perf_counter() - t:6.1f} s")
        return time.perf_counter() - t0
    running: list[tuple[str, float, subprocess.Popen]] = []
    pending = list(names)
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            code = f"from xent_numba.engine.warmup import _compile_group; _compile_group({name!r})"
            running.append((name, time.perf_counter(), subprocess.Popen([sys.executable, "-c", code])))
        for item in list(running):
            name, t, proc = item
            if proc.poll() is not None:
                running.remove(item)
                if proc.returncode != 0:
                    raise RuntimeError(f"warm-up of {name} failed (exit {proc.returncode})")
                say(f"  {name:14s} {time.perf_counter() - t:6.1f} s")
        time.sleep(0.05)
    return time.perf_counter() - t0
