"""NumPy and Arrow inputs as the two layouts the kernels take, zero-copy where possible.

- ``Dense``: an ``(N, C)`` NumPy array (a NumPy input, or an Arrow ``FixedSizeListArray``
  whose child buffer is viewed in place);
- ``Ragged``: ``values`` (1-D) and absolute ``offsets`` (N + 1) into it (Arrow ``ListArray``
  / ``LargeListArray``; a slice keeps its offsets and the unsliced child, as Arrow does);
- index targets: a 1-D int64 NumPy array;
- ``Scalar``: one number per row (a 1-D NumPy array or an Arrow numeric array): a binary
  prediction P(y=1) or its logit; its label (``as_labels``) is a 1-D array of 0/1 integers,
  booleans (viewed as uint8) or soft labels in [0, 1], in the input dtype (no copy).

List offsets read from Arrow are checked (first >= 0, monotone, last within the values
buffer) before any kernel sees them: a corrupt Feather file is an ``InvalidInputError``,
never a read past the buffer. ``coerce`` turns pandas / polars Series and torch tensors
into NumPy or Arrow first.

Dictionary-encoded arrays are read as their values (``decoded``). Boolean predictions are
refused (a yes/no decision has no cross-entropy; ``BOOL_PRED``), boolean labels are 0/1
targets; string labels (class names, plain or dictionary-encoded) are refused by name.

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
class Scalar:
    values: np.ndarray  # (N,): one probability (or logit) per row

    def __len__(self):
        return self.values.shape[0]

    def row(self, i):
        return self.values[i : i + 1]


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


def _native(arr: np.ndarray) -> np.ndarray:
    """A big-endian (non-native byte order) array as a native copy; bfloat16 widened to float32."""
    if arr.dtype.name == "bfloat16":  # ml_dtypes' NumPy bfloat16
        return arr.astype(np.float32)
    if arr.dtype.byteorder not in "=|" and arr.dtype.kind in "fiub":
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


BOOL_PRED = (
    "holds booleans: a hard yes/no decision, not a probability or a logit, so it has no "
    "cross-entropy; cast it to float if you mean probabilities 0 and 1"
)


def _float_values(arr: np.ndarray, column: str, *, allow_int: bool) -> np.ndarray:
    """Accept numeric values; float16 is widened to float32 (the kernels compute in float64).
    ``allow_int`` (targets): integers and booleans kept as they are; predictions (``False``)
    take integers as float64 and refuse booleans (``BOOL_PRED``)."""
    arr = _native(arr)
    kind = arr.dtype.kind
    if kind == "f":
        return arr.astype(np.float32) if arr.dtype == np.float16 else arr
    if kind == "b" and not allow_int:
        raise InvalidInputError(f"the prediction {BOOL_PRED}", column=column)
    if kind == "b":  # Numba's float() takes no bool: view the bytes as uint8 (no copy)
        arr = arr.view(np.uint8)
    if kind in "iub":
        return arr if allow_int else arr.astype(np.float64)
    raise InvalidInputError(f"values must be numeric, got dtype {arr.dtype}", column=column)


# Arrow primitive types read by viewing their data buffer. pyarrow's own ``to_numpy`` and
# ``pa.array(ndarray)`` go through its pandas conversion layer, which imports pandas when it
# is installed: start-up time for every `xent score` run, for no work done.
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


def check_offsets(offs: np.ndarray, n_values: int, column: str) -> None:
    """Refuse list offsets a kernel could not read safely: the first below 0, a decrease, or
    the last beyond the ``n_values`` of the values buffer (a corrupt or hostile file)."""
    if offs.size == 0:
        return
    first, last = int(offs[0]), int(offs[-1])
    bad = first < 0 or last > n_values or last < first
    if not bad and offs.size > 2:
        bad = bool(np.any(offs[1:] < offs[:-1]))
    if bad:
        raise InvalidInputError(
            "corrupt list offsets: they must rise from >= 0 to at most the "
            f"{n_values} values stored (first {first}, last {last}); the file is damaged",
            column=column,
        )


def check_lists(arr, column: str) -> None:
    """``check_offsets`` on a list array (each chunk of a ChunkedArray) before anything
    (a concatenation, a slice of its values, a kernel) follows its offsets."""
    if isinstance(arr, pa.ChunkedArray):
        for chunk in arr.chunks:
            check_lists(chunk, column)
        return
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        check_offsets(to_numpy(arr.offsets), len(arr.values), column)


def _child_values(arr, column):
    try:
        return to_numpy(arr)
    except (ValueError, pa.ArrowException) as exc:  # a values buffer shorter than its length
        raise InvalidInputError(f"corrupt list values ({exc})", column=column) from None


def _from_arrow(arr: pa.Array, column: str, *, is_target: bool):
    t = arr.type
    if pa.types.is_fixed_size_list(t):
        k = t.list_size
        n = len(arr)
        if len(arr.values) < (arr.offset + n) * k:
            raise InvalidInputError(
                f"corrupt fixed-size list: {n} rows of {k} need {(arr.offset + n) * k} values, "
                f"{len(arr.values)} are stored",
                column=column,
            )
        child = arr.values.slice(arr.offset * k, n * k)
        _check_arrow_numeric(child.type, column, is_target)
        vals = _float_values(_child_values(child, column), column, allow_int=is_target).reshape(n, k)
        offs = np.arange(n + 1, dtype=np.int64) * k
        nulls = _merge(_null_mask(arr), _rows_with_null_values(child, offs, n))
        return Dense(vals), nulls
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        n = len(arr)
        offs = to_numpy(arr.offsets)
        child = arr.values
        _check_arrow_numeric(child.type, column, is_target)
        vals = _float_values(_child_values(child, column), column, allow_int=is_target)
        check_offsets(offs, vals.shape[0], column)
        nulls = _merge(_null_mask(arr), _rows_with_null_values(child, offs, n))
        return Ragged(vals, offs), nulls
    if not is_target and _is_scalar_number(t):
        return Scalar(_scalar_values(arr, column)), _null_mask(arr)
    if not is_target and pa.types.is_boolean(t):
        raise InvalidInputError(f"the prediction {BOOL_PRED}", column=column)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return index_labels(to_numpy(arr), column), _null_mask(arr)
    if is_target:
        refuse_text(t, column)
    if pa.types.is_dictionary(t) and not _is_text(t.value_type):
        return _from_arrow(decoded(arr, column), column, is_target=is_target)
    kind = "pred" if not is_target else "target"
    raise InvalidInputError(
        f"{kind} must be a list/fixed-size-list of numbers"
        + (" or integer class indices" if is_target else " or one number per row (a binary prediction)")
        + f", got Arrow type {t}",
        column=column,
    )


def _is_text(t) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def refuse_text(t, column: str) -> None:
    """Labels that are strings (plain, or a dictionary of strings) are class names: refused."""
    if _is_text(t) or (pa.types.is_dictionary(t) and _is_text(t.value_type)):
        raise InvalidInputError(
            f"the label holds strings ({t}): class names are not supported; map them to integer "
            "class indices, in the order of the prediction's classes",
            column=column,
        )


def decoded(obj, column: str):
    """A dictionary-encoded Arrow array or ChunkedArray as its values (``dictionary_decode``,
    chunk by chunk: Arrow cannot unify dictionaries of lists across chunks); anything else,
    and dictionaries of strings (refused by the readers, by name), unchanged."""
    if not isinstance(obj, (pa.Array, pa.ChunkedArray)) or not pa.types.is_dictionary(obj.type):
        return obj
    if _is_text(obj.type.value_type):
        return obj
    try:
        if isinstance(obj, pa.ChunkedArray):
            return pa.chunked_array([c.dictionary_decode() for c in obj.chunks], type=obj.type.value_type)
        return obj.dictionary_decode()
    except (pa.ArrowException, ValueError) as exc:  # an index past the dictionary: a damaged file
        raise InvalidInputError(f"cannot decode the dictionary-encoded column ({exc})", column=column) from None


def _check_arrow_numeric(t, column, is_target):
    if not is_target and pa.types.is_boolean(t):
        raise InvalidInputError(f"the prediction {BOOL_PRED}", column=column)
    ok = pa.types.is_floating(t) or pa.types.is_integer(t) or (is_target and pa.types.is_boolean(t))
    if not ok:
        raise InvalidInputError(f"list values must be numeric, got Arrow type {t}", column=column)


ACCEPTED = (
    "NumPy arrays (or nested lists of numbers), pyarrow Array/ChunkedArray, pandas Series "
    "(numeric, lists, or ArrowDtype), polars Series and CPU torch tensors"
)
_INT64_MAX = np.iinfo(np.int64).max


def coerce(obj):
    """pandas / polars Series and torch tensors as NumPy or Arrow (zero-copy where they allow);
    NumPy, Arrow, lists and other array-likes unchanged; anything else is refused."""
    if isinstance(obj, (np.ndarray, pa.Array, pa.ChunkedArray, list, tuple)):
        return obj
    lib = type(obj).__module__.split(".")[0]
    if lib == "torch" and hasattr(obj, "detach"):
        t = obj.detach()  # a tensor that requires grad: the same memory, no graph
        if t.device.type != "cpu":
            raise InvalidInputError(f"a torch tensor on {t.device} cannot be read here; move it to the CPU or CUDA")
        if str(t.dtype) == "torch.bfloat16":  # NumPy has no bfloat16: widened (exactly) to float32
            t = t.float()
        return t.resolve_conj().resolve_neg().numpy()
    if lib == "polars" and hasattr(obj, "to_arrow"):
        return obj.to_arrow()
    if lib == "pandas" and hasattr(obj, "dtype"):
        if isinstance(obj.dtype, np.dtype) and obj.dtype != object:
            return obj.to_numpy()
        # extension dtypes (nullable Int64 / boolean / Float64, category, ArrowDtype) and
        # object columns (lists, from ``table.to_pandas()``) through Arrow: <NA> becomes a
        # null, scored exactly as the same data in a pyarrow array
        try:
            return pa.array(obj)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise InvalidInputError(f"cannot read this pandas Series as numbers ({exc})") from None
    if hasattr(obj, "__array__") or hasattr(obj, "__array_interface__") or isinstance(obj, (memoryview, range)):
        return obj
    raise InvalidInputError(f"cannot read a {type(obj).__module__}.{type(obj).__name__}; accepted: {ACCEPTED}")


def index_labels(arr: np.ndarray, column: str) -> np.ndarray:
    """Integer (or boolean) class indices as int64; uint64 values past int64 are refused,
    never wrapped to negative numbers."""
    arr = _native(arr)
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > _INT64_MAX:
        i = int(np.argmax(arr > _INT64_MAX))
        raise InvalidInputError(
            f"label {int(arr[i])} does not fit a signed 64-bit class index", row=i, column=column
        )
    return arr.astype(np.int64, copy=False)


def _is_scalar_number(t) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t)


def _scalar_values(arr: pa.Array, column: str) -> np.ndarray:
    """A numeric Arrow array as 1-D float values (floats as stored, no copy without nulls;
    integers and decimals read as float64)."""
    if pa.types.is_decimal(arr.type):
        arr = arr.cast(pa.float64())
    return _float_values(to_numpy(arr), column, allow_int=False)


def as_labels(obj, column: str):
    """The label of a scalar (binary) prediction: ``(1-D array, null_mask)``, one number per
    row: 0/1 integers (any width), booleans (viewed as uint8) or soft labels in [0, 1]
    (float16 widened to float32). Values are checked by the kernel, not here."""
    obj = decoded(obj, column)
    if isinstance(obj, pa.ChunkedArray):
        obj = obj.combine_chunks()
    if isinstance(obj, pa.Array):
        t = obj.type
        refuse_text(t, column)
        if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t):
            return _label_values(to_numpy(obj), column), _null_mask(obj)
        if pa.types.is_decimal(t):
            return to_numpy(obj.cast(pa.float64())), _null_mask(obj)
        raise InvalidInputError(
            "with one prediction per row the label must be one number per row (0/1, bool, or a "
            f"soft label in [0, 1]), got Arrow type {t}",
            column=column,
        )
    arr = _numpy(obj, column)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InvalidInputError(
            f"with one prediction per row the label must be 1-D (N,), got shape {arr.shape}",
            column=column,
        )
    return _label_values(arr, column), None


def _label_values(arr: np.ndarray, column: str) -> np.ndarray:
    """Canonical binary labels, so that a handful of kernel signatures cover every input:
    uint8 (booleans viewed, no copy), int64 (other integers), float32 or float64 (soft)."""
    arr = np.ascontiguousarray(_native(arr))
    if arr.dtype.kind == "b":
        return arr.view(np.uint8)
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if arr.dtype.kind in "iu" and arr.dtype not in (np.uint8, np.int64):
        return index_labels(arr, column)
    if arr.dtype.kind not in "fiu":
        raise InvalidInputError(f"labels must be numeric, got dtype {arr.dtype}", column=column)
    return arr


def _numpy(obj, column):
    try:
        arr = np.asarray(obj)
    except (TypeError, ValueError) as exc:  # e.g. ragged Python lists
        raise InvalidInputError(
            f"cannot read as a numeric array ({exc}); pass an (N, C) array or an Arrow list array",
            column=column,
        ) from None
    arr = _native(arr)
    if arr.dtype.kind not in "fiub":
        raise InvalidInputError(
            f"values must be numeric, got dtype {arr.dtype}; accepted: {ACCEPTED}", column=column
        )
    return arr


def as_rows(obj, column: str, *, is_target: bool):
    """Turn ``pred`` or ``target`` into ``(layout, null_mask)``.

    ``layout`` is ``Dense``, ``Ragged``, ``Scalar`` (a 1-D prediction: one number per row)
    or (targets only) a 1-D int64 index array. ``obj`` is a NumPy array (or anything
    ``np.asarray`` takes) or a single Arrow array (the caller splits a ``ChunkedArray``).
    """
    obj = decoded(obj, column)
    if isinstance(obj, pa.ChunkedArray):
        check_lists(obj, column)
        obj = obj.combine_chunks()
    if isinstance(obj, pa.Array):
        return _from_arrow(obj, column, is_target=is_target)
    arr = _numpy(obj, column)
    if arr.ndim == 2:
        return Dense(_float_values(arr, column, allow_int=is_target)), None
    if arr.ndim == 1 and is_target:
        if arr.dtype.kind not in "iub":
            raise InvalidInputError(
                f"a 1-D target must hold integer class indices, got dtype {arr.dtype}"
                " (pass dense targets as an (N, C) array)",
                column=column,
            )
        return index_labels(arr, column), None
    if arr.ndim == 1:
        return Scalar(np.ascontiguousarray(_float_values(arr, column, allow_int=False))), None
    raise InvalidInputError(f"expected a 1-D (N,) or 2-D (N, C) array, got shape {arr.shape}", column=column)


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


def is_device_array(x) -> bool:
    """True for GPU arrays (CuPy, PyTorch CUDA tensors, Numba device arrays): anything with
    ``__cuda_array_interface__``, or the CUDA simulator's stand-in. Imports no CUDA."""
    if hasattr(x, "__cuda_array_interface__"):
        return True
    return type(x).__module__.startswith("numba.cuda.simulator")
