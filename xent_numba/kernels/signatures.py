"""Inputs in canonical form before they reach the kernels: a handful of compiled signatures.

Numba compiles one machine-code version of a kernel per argument *type*, and an array's
type carries its dtype, number of dimensions, memory layout (C or strided) and whether it
is writable. Zero-copy Arrow buffers are read-only, NumPy arrays are writable, ``astype``
copies are writable, slices are strided: left alone, each mix compiles the kernels again,
on the user's run. Here every array handed to a kernel is brought to one form:

- prediction values: float32 or float64 (float16 is widened to float32 upstream), C-order;
- index targets: int64, C-order; offsets: int64;
- dense target values: float32 or float64 as given, bool viewed as uint8, any other integer
  type widened to float64 (exact below 2**53), C-order;
- class/pos weights: float64, C-order;
- every one of them read-only (a view: no copy of data that is already in that form).

So the CPU kernels see at most 2 prediction dtypes x (1 index + 3 dense target dtypes)
signatures per kernel, the ones ``xent warmup`` compiles ahead of time.
"""

from __future__ import annotations

import numpy as np

from ..arrow import Dense, Ragged

PRED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
TARGET_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.uint8))


def frozen(a: np.ndarray, dtype=None) -> np.ndarray:
    """``a`` as a C-ordered, read-only array of ``dtype`` (a view when nothing changes)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def _target_values(v: np.ndarray) -> np.ndarray:
    if v.dtype == np.bool_:
        return frozen(v.view(np.uint8))
    if v.dtype in TARGET_DTYPES:
        return frozen(v)
    return frozen(v, np.float64)


def _pred_values(v: np.ndarray) -> np.ndarray:
    return frozen(v if v.dtype in PRED_DTYPES else v.astype(np.float64))


def _layout(x, values):
    if isinstance(x, Dense):
        return Dense(values(x.values))
    return Ragged(values(x.values), frozen(x.offsets, np.int64))


def kernel_inputs(pred, target, w, pw):
    """``(pred, target, w, pw)`` in canonical form (see the module docstring).

    ``pred`` is an ``arrow.Dense``/``arrow.Ragged``, ``target`` one of those or a 1-D
    integer index array, ``w``/``pw`` float weight vectors.
    """
    pred = _layout(pred, _pred_values)
    if isinstance(target, np.ndarray):
        target = frozen(target, np.int64)
    else:
        target = _layout(target, _target_values)
    return pred, target, frozen(w, np.float64), frozen(pw, np.float64)
