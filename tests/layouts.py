"""Build the same rows in every input layout the API accepts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

DENSE_LAYOUTS = ["numpy", "numpy_strided", "fixed_size_list", "fixed_size_list_sliced"]
RAGGED_LAYOUTS = ["list", "large_list", "list_sliced", "chunked"]
ALL_LAYOUTS = DENSE_LAYOUTS + RAGGED_LAYOUTS


def _arrow_type(dtype):
    return pa.from_numpy_dtype(np.dtype(dtype))


def build(rows, layout, dtype):
    """``rows``: list of 1-D arrays (equal lengths for the dense layouts)."""
    rows = [np.asarray(r, dtype=dtype) for r in rows]
    t = _arrow_type(dtype)
    if layout == "numpy":
        return np.array(rows, dtype=dtype).reshape(len(rows), -1)
    if layout == "numpy_strided":  # every other column of a wider array
        a = np.array(rows, dtype=dtype).reshape(len(rows), -1)
        wide = np.zeros((a.shape[0], a.shape[1] * 2), dtype=dtype)
        wide[:, ::2] = a
        return wide[:, ::2]
    if layout == "fixed_size_list":
        k = len(rows[0]) if rows else 1
        return pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(rows) if rows else [], t), k)
    if layout == "fixed_size_list_sliced":
        k = len(rows[0]) if rows else 1
        pad = [np.zeros(k, dtype=dtype)]
        flat = np.concatenate(pad + rows + pad)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, t), k).slice(1, len(rows))
    if layout in ("list", "large_list"):
        return pa.array([r.tolist() for r in rows], type=(pa.list_ if layout == "list" else pa.large_list)(t))
    if layout == "list_sliced":
        pad = [np.full(3, 7.0, dtype=dtype)]
        return pa.array([r.tolist() for r in pad + rows + pad], type=pa.list_(t)).slice(1, len(rows))
    if layout == "chunked":
        half = len(rows) // 2
        parts = [rows[:half], rows[half:]]
        return pa.chunked_array([pa.array([r.tolist() for r in p], type=pa.list_(t)) for p in parts], type=pa.list_(t))
    raise ValueError(layout)


def build_index(labels, layout):
    """Index labels as NumPy for NumPy layouts, Arrow otherwise (chunked with other cuts)."""
    y = np.asarray(labels, dtype=np.int64)
    if layout.startswith("numpy"):
        return y
    if layout == "chunked":
        third = len(y) // 3
        return pa.chunked_array([pa.array(y[:third]), pa.array(y[third:])], type=pa.int64())
    return pa.array(y.astype(np.int32))
