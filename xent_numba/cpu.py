"""CPU backend: ``run()`` picks the kernel for a pair of layouts.

- no options (smoothing 0, no weights), ragged rows or at most ``cpu_blocks._NARROW`` (64)
  columns: the block kernels of ``cpu_blocks.py`` (which score each ragged row wider than
  that with its row function, so that a row's path never depends on the rest of the batch);
- no options, more columns: the per-row fast kernels of ``cpu_rows.py``;
- any option: the general row kernels of ``cpu_rows.py``.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from .arrow import Dense, Ragged
from .cpu_blocks import (
    _NARROW,
    _narrow_dense,
    _narrow_index,
    _rows_per_block,
    _scratch,
    uniform_width,
)
from .cpu_rows import (
    _dense_dense,
    _dense_index,
    _fast_dense,
    _fast_index,
    _ragged_dense,
    _ragged_index,
)

_NO_OFFSETS = np.zeros(1, dtype=np.int64)
_NO_OFFSETS.flags.writeable = False  # the same array type as canonical (read-only) Arrow offsets


def _flat(layout):
    """``(values, offsets, width)``: a dense layout as a flat C-order array and its width; ragged
    rows that all have one width (a list column of a fixed class count) are dense rows too,
    with the same bits (the block kernels sum each row in class order in both layouts)."""
    if isinstance(layout, Dense):
        vals = np.ascontiguousarray(layout.values)
        return vals.reshape(-1), _NO_OFFSETS, vals.shape[1]
    po, n = layout.offsets, len(layout.offsets) - 1
    w = uniform_width(po, n)
    if w > 0:
        return layout.values[po[0] : po[0] + n * w], _NO_OFFSETS, int(w)
    return layout.values, po, -1


def _as_rows(w):
    """Weights as a float64 ``(rows, k)`` array: a vector (or none) is one row for every row."""
    w = np.asarray(w, dtype=np.float64)
    return w if w.ndim == 2 else w.reshape(1, -1)


_LAUNCH_LOCK = threading.Lock()
_serialise = True  # until the first launch shows which threading layer Numba picked


def run(pred, target, prm, w, pw, out, status):
    """Launch the kernel that fits the layouts (``arrow.Dense``/``arrow.Ragged``/index array).
    Returns how many rows are invalid (status > IGNORED) where the kernel counted them (the
    block kernels), else None (the caller then scans ``status``).

    Numba picks the ``tbb`` or ``omp`` threading layer when it can (both are safe to launch
    from several Python threads at once, as the streaming pipeline does). Only the
    ``workqueue`` fallback is not: then launches are serialised with a lock.
    """
    global _serialise
    if _serialise:
        with _LAUNCH_LOCK:
            n_bad = _run(pred, target, prm, w, pw, out, status)
            try:
                _serialise = numba.threading_layer() == "workqueue"
            except ValueError:  # no parallel region ran yet
                pass
        return n_bad
    return _run(pred, target, prm, w, pw, out, status)


def _run(pred, target, prm, w, pw, out, status):
    w, pw = _as_rows(w), _as_rows(pw)
    if prm.smoothing == 0.0 and w.size == 0 and pw.size == 0:
        pv, po, pc = _flat(pred)
        n = out.shape[0]
        narrow = pc <= _NARROW  # ragged rows (pc < 0): the block kernels pick per row
        if not narrow:
            if isinstance(target, np.ndarray):
                _fast_index(pv, po, pc, target, prm, out, status)
            else:
                tv, to, tc = _flat(target)
                _fast_dense(pv, po, pc, tv, to, tc, prm, out, status)
            return
        gather = isinstance(target, np.ndarray) and not prm.bce and not prm.from_logits
        blk = _rows_per_block(n, pc, gather)
        scr = _scratch(n, pc * n if pc >= 0 else po[n] - po[0], ragged=pc < 0, blk=blk)
        if isinstance(target, np.ndarray):
            return int(_narrow_index(pv, po, pc, target, prm, out, status, scr, blk))
        tv, to, tc = _flat(target)
        return int(_narrow_dense(pv, po, pc, tv, to, tc, prm, out, status, scr, blk))
    if isinstance(target, np.ndarray):
        if isinstance(pred, Dense):
            _dense_index(pred.values, target, prm, w, pw, out, status)
        else:
            _ragged_index(pred.values, pred.offsets, target, prm, w, pw, out, status)
    elif isinstance(pred, Dense) and isinstance(target, Dense):
        _dense_dense(pred.values, target.values, prm, w, pw, out, status)
    else:
        p, t = Ragged.of(pred), Ragged.of(target)
        _ragged_dense(p.values, p.offsets, t.values, t.offsets, prm, w, pw, out, status)
