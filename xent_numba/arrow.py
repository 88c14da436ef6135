"""NumPy and Arrow inputs as the two layouts the kernels take, zero-copy where possible.

- ``Dense``: an ``(N, C)`` NumPy array (a NumPy input, or an Arrow ``FixedSizeListArray``
  whose child buffer is viewed in place);
- ``Ragged``: ``values`` (1-D) and absolute ``offsets`` (N + 1) into it (Arrow ``ListArray``
  / ``LargeListArray``; a slice keeps its offsets and the unsliced child, as Arrow does);
- index targets: a 1-D int64 NumPy array.

Each conversion also returns a boolean mask of null rows (or None), so the caller can
mark them invalid after scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import InvalidInputError


@dataclass(frozen=True)
class Dense:
    values: np.ndarray  # (N, C)

    def __len__(self):
        return self.values.shape[0]

    def row(self, i):
        return self.values[i]


@dataclass(frozen=True)
class Ragged:
    values: np.ndarray  # 1-D
    offsets: np.ndarray  # (N + 1,) absolute offsets into values

    def __len__(self):
        return self.offsets.shape[0] - 1

    def row(self, i):
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self):
        return np.diff(self.offsets)

    @staticmethod
    def of(layout):
        """A ``Ragged`` view of either layout (a dense array gets computed offsets)."""
        if isinstance(layout, Ragged):
            return layout
        n, c = layout.values.shape
        flat = np.ascontiguousarray(layout.values).reshape(-1)
        return Ragged(flat, np.arange(n + 1, dtype=np.int64) * c)


def _float_values(arr: np.ndarray, column: str, *, allow_int: bool) -> np.ndarray:
    """Accept numeric values; float16 is widened to float32 (the kernels compute in float64)."""
    kind = arr.dtype.kind
    if kind == "f":
        return arr.astype(np.float32) if arr.dtype == np.float16 else arr
    if kind == "b":  # Numba's float() takes no bool: view the bytes as uint8 (no copy)
        arr = arr.view(np.uint8)
    if kind in "iub":
        return arr if allow_int else arr.astype(np.float64)
    raise InvalidInputError(f"values must be numeric, got dtype {arr.dtype}", column=column)


# Arrow primitive types read by viewing their data buffer. pyarrow's own ``to_numpy`` and
# ``pa.array(ndarray)`` go through its pandas conversion layer, which imports pandas when it
# is installed: about 0.3 s of start-up for every `xent score` run, for no work done.
_NUMPY_DTYPES = {
    pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
    pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64,
    pa.float16(): np.float16, pa.float32(): np.float32, pa.float64(): np.float64,
}


def to_numpy(arr: pa.Array, fill=0) -> np.ndarray:
    """An Arrow primitive or boolean array as NumPy: a read-only view of the data buffer when
    it has no nulls (booleans are unpacked from their bitmap); otherwise a copy with ``fill``
    in the null slots."""
    n, off = len(arr), arr.offset
    if pa.types.is_boolean(arr.type):
        buf = arr.buffers()[1]
        if buf is None or n == 0:
            values = np.zeros(n, dtype=bool)
        else:
            bits = np.frombuffer(buf, dtype=np.uint8)
            values = np.unpackbits(bits, count=off + n, bitorder="little")[off:].view(bool)
    elif arr.type in _NUMPY_DTYPES:
        dtype = np.dtype(_NUMPY_DTYPES[arr.type])
        buf = arr.buffers()[1]
        if buf is None or n == 0:
            values = np.empty(0, dtype=dtype)
        else:
            values = np.frombuffer(buf, dtype=dtype, count=n, offset=off * dtype.itemsize)
            values.flags.writeable = False  # Arrow memory is immutable; frombuffer says writable
    else:
        return arr.fill_null(fill).to_numpy(zero_copy_only=False) if arr.null_count else arr.to_numpy(zero_copy_only=False)
    if arr.null_count:
        values = values.copy()
        values[to_numpy(arr.is_null())] = fill
    return values


def from_numpy(values: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """A 1-D NumPy array as an Arrow array sharing its memory; ``null`` marks null rows."""
    values = np.ascontiguousarray(values)
    data = pa.py_buffer(np.packbits(values, bitorder="little") if values.dtype == bool else values)
    validity = None
    if null is not None and null.any():
        validity = pa.py_buffer(np.packbits(~null, bitorder="little"))
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [validity, data])


def _null_mask(arr: pa.Array):
    if arr.null_count == 0:
        return None
    return to_numpy(arr.is_null())


def _rows_with_null_values(child: pa.Array, offsets: np.ndarray, n: int):
    """Rows that hold a null element (a list row [0.1, null, 0.9])."""
    if child.null_count == 0:
        return None
    pos = np.flatnonzero(to_numpy(child.is_null()))
    rows = np.searchsorted(offsets, pos, side="right") - 1
    rows = rows[(rows >= 0) & (rows < n) & (pos < offsets[-1])]
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def _merge(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a | b


def _from_arrow(arr: pa.Array, column: str, *, is_target: bool):
    t = arr.type
    if pa.types.is_fixed_size_list(t):
        k = t.list_size
        n = len(arr)
        child = arr.values.slice(arr.offset * k, n * k)
        _check_arrow_numeric(child.type, column, is_target)
        vals = _float_values(to_numpy(child), column, allow_int=is_target).reshape(n, k)
        offs = np.arange(n + 1, dtype=np.int64) * k
        nulls = _merge(_null_mask(arr), _rows_with_null_values(child, offs, n))
        return Dense(vals), nulls
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        n = len(arr)
        offs = to_numpy(arr.offsets)
        child = arr.values
        _check_arrow_numeric(child.type, column, is_target)
        vals = _float_values(to_numpy(child), column, allow_int=is_target)
        nulls = _merge(_null_mask(arr), _rows_with_null_values(child, offs, n))
        return Ragged(vals, offs), nulls
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        if not is_target:
            raise InvalidInputError(
                f"pred must be a list of class scores per row, got a 1-D {t} array", column=column
            )
        return to_numpy(arr).astype(np.int64, copy=False), _null_mask(arr)
    if pa.types.is_dictionary(t):
        return _from_arrow(arr.cast(t.value_type), column, is_target=is_target)
    kind = "pred" if not is_target else "target"
    raise InvalidInputError(
        f"{kind} must be a list/fixed-size-list of numbers"
        + (" or integer class indices" if is_target else "")
        + f", got Arrow type {t}",
        column=column,
    )


def _check_arrow_numeric(t, column, is_target):
    ok = pa.types.is_floating(t) or pa.types.is_integer(t) or (is_target and pa.types.is_boolean(t))
    if not ok:
        raise InvalidInputError(f"list values must be numeric, got Arrow type {t}", column=column)


def as_rows(obj, column: str, *, is_target: bool):
    """Turn ``pred`` or ``target`` into ``(layout, null_mask)``.

    ``layout`` is ``Dense``, ``Ragged`` or (targets only) a 1-D int64 index array.
    ``obj`` is a NumPy array (or anything ``np.asarray`` takes) or a single Arrow array
    (the caller splits a ``ChunkedArray``).
    """
    if isinstance(obj, pa.ChunkedArray):
        obj = obj.combine_chunks()
    if isinstance(obj, pa.Array):
        return _from_arrow(obj, column, is_target=is_target)
    try:
        arr = np.asarray(obj)
    except (TypeError, ValueError) as exc:  # e.g. ragged Python lists
        raise InvalidInputError(
            f"cannot read as a numeric array ({exc}); pass an (N, C) array or an Arrow list array",
            column=column,
        ) from None
    if arr.dtype.kind not in "fiub":
        raise InvalidInputError(f"values must be numeric, got dtype {arr.dtype}", column=column)
    if arr.ndim == 2:
        return Dense(_float_values(arr, column, allow_int=is_target)), None
    if arr.ndim == 1 and is_target:
        if arr.dtype.kind not in "iub":
            raise InvalidInputError(
                f"a 1-D target must hold integer class indices, got dtype {arr.dtype}"
                " (pass dense targets as an (N, C) array)",
                column=column,
            )
        return arr.astype(np.int64, copy=False), None
    if arr.ndim == 1:
        raise InvalidInputError(
            f"pred must be 2-D (N, C), got shape {arr.shape}; for one score per row use "
            "pred.reshape(-1, 1)",
            column=column,
        )
    raise InvalidInputError(f"expected a 2-D (N, C) array, got shape {arr.shape}", column=column)


def aligned_slices(pred, target):
    """Yield ``(start, pred_piece, target_piece)`` over the common chunk boundaries of two
    inputs that may be ``ChunkedArray``s, so each piece is a single contiguous array."""
    def bounds(x):
        if isinstance(x, pa.ChunkedArray):
            return np.cumsum([0] + [len(c) for c in x.chunks])
        return np.array([0, len(x)])

    if not isinstance(pred, pa.ChunkedArray) and not isinstance(target, pa.ChunkedArray):
        yield 0, pred, target
        return
    cuts = np.union1d(bounds(pred), bounds(target))
    for a, b in zip(cuts[:-1], cuts[1:], strict=False):
        a, b = int(a), int(b)
        yield a, _piece(pred, a, b), _piece(target, a, b)


def _piece(x, a, b):
    if isinstance(x, pa.ChunkedArray):
        part = x.slice(a, b - a)
        return part.chunk(0) if part.num_chunks == 1 else part.combine_chunks()
    return x[a:b]

