"""The GPU entry points: ``run`` (``cpu.run``'s contract for host layouts, staged through
pinned buffers on a CUDA stream, ``gpu_stage.py``) and ``score_device`` (device inputs,
taken zero-copy through ``__cuda_array_interface__``). Both give the same numbers and
statuses as ``cpu.py``; the kernels are in ``gpu_kernels.py`` over the row math of
``gpu_rows.py``, launched by ``gpu_launch.py``.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
from numba import cuda

from .. import losses, validate
from ..arrow import Dense, as_rows, is_device_array
from ..errors import InvalidInputError
from .gpu_launch import SIMULATOR, Rows, launch
from .gpu_stage import thread_stager

# The CUDA simulator runs one kernel at a time (it swaps the kernel modules' ``cuda`` global
# while one runs): there, one thread at a time.
_LAUNCH = threading.Lock() if SIMULATOR else contextlib.nullcontext()


def run(pred, target, prm, w, pw, out, status):
    """``cpu.run``'s contract on the GPU: score host layouts into host ``out``/``status``.

    Each calling thread has its own pinned buffers and stream, so the pipeline's two GPU
    threads overlap. Per-row ``(N, C)`` weights are scored on the CPU only."""
    for a, name in ((w, "weight"), (pw, "pos_weight")):
        if np.ndim(a) == 2 and np.shape(a)[0] > 1:
            raise InvalidInputError(f"per-row {name} of shape (N, C) is not supported on the GPU; use device='cpu'")
    with _LAUNCH:
        thread_stager().score(pred, target, prm, w, pw, out, status)


# --------------------------------------------------------------------------------------
# device inputs: zero-copy through __cuda_array_interface__
# --------------------------------------------------------------------------------------


def _producer_stream(obj):
    """The stream the producer of ``obj`` works on (CUDA array interface v3), so our work
    is ordered after its pending writes without a host synchronisation."""
    iface = getattr(obj, "__cuda_array_interface__", None)
    handle = iface.get("stream") if iface else None
    if handle is None or SIMULATOR:
        return cuda.default_stream()
    if handle == 1:
        return cuda.legacy_default_stream()
    if handle == 2:
        return cuda.per_thread_default_stream()
    return cuda.external_stream(handle)


def _as_device(obj):
    if SIMULATOR or isinstance(obj, cuda.devicearray.DeviceNDArray):
        return obj
    return cuda.as_cuda_array(obj, sync=False)


def _device_rows(arr, column):
    """A 2-D C-contiguous device array as ``Rows`` (zero-copy)."""
    if arr.ndim != 2:
        raise InvalidInputError(f"a device array must be 2-D (N, C), got shape {arr.shape}", column=column)
    if not _c_contiguous(arr):
        raise InvalidInputError(
            "device arrays must be C-contiguous (use cupy.ascontiguousarray / tensor.contiguous())",
            column=column,
        )
    n, c = arr.shape
    if c == 0:
        raise InvalidInputError("rows have no classes (shape (N, 0))", column=column)
    return Rows(arr.reshape(n * c), None, c, c, float(c), c)


def _c_contiguous(arr) -> bool:
    if hasattr(arr, "is_c_contiguous"):
        return bool(arr.is_c_contiguous())
    return bool(getattr(arr, "flags", {"C_CONTIGUOUS": True})["C_CONTIGUOUS"])


class _HostRows:
    """Copies single rows of a device layout to the host, for error messages."""

    def __init__(self, arr):
        self._arr = arr

    def row(self, i):
        r = self._arr[i : i + 1]
        return np.asarray(r.copy_to_host() if hasattr(r, "copy_to_host") else r)[0]

    def __getitem__(self, i):
        return self.row(i)


def _bool_as_uint8(arr):
    return arr.view(np.uint8) if arr.dtype == np.bool_ else arr


def score_device(loss, pred, target, *, on_invalid="error", class_weight=None, pos_weight=None, **options):
    """``api.score`` for device inputs: returns ``(losses, status)`` as device arrays.

    ``pred``: a 2-D float32/float64 device array; ``target``: a 1-D integer device array
    (class indices) or a 2-D device array of the shape of ``pred``; either may instead be a
    host array, copied to the device. Work is enqueued on the producer's stream (from the
    CUDA array interface); ``losses`` is a Numba device array (CuPy's ``cp.asarray`` and
    ``torch.as_tensor(..., device="cuda")`` wrap it without a copy). With
    ``on_invalid="error"`` the statuses are copied back (N bytes) to raise on the first
    invalid row.
    """
    src = pred if is_device_array(pred) else target
    stream = _producer_stream(src)
    if is_device_array(pred):
        p = _as_device(pred)
    else:
        layout, _ = as_rows(pred, "pred", is_target=False)
        if not isinstance(layout, Dense):
            raise InvalidInputError("with a device target, pred must be an (N, C) array", column="pred")
        p = cuda.to_device(np.ascontiguousarray(layout.values), stream=stream)
    if p.dtype not in (np.float32, np.float64):
        raise InvalidInputError(
            f"device predictions must be float32 or float64, got {p.dtype} (convert with .float())",
            column="pred",
        )
    prows = _device_rows(p, "pred")
    n = p.shape[0]
    if is_device_array(target):
        t = _bool_as_uint8(_as_device(target))
    else:
        t = np.asarray(target)
        if t.dtype == np.bool_:
            t = t.view(np.uint8)
        t = cuda.to_device(np.ascontiguousarray(t), stream=stream)
    validate.check_lengths(n, t.shape[0] if t.ndim else 0)
    dtype = np.float64 if p.dtype == np.float64 else np.float32
    prm = losses.make_params(loss, dtype=dtype, **options)
    c = p.shape[1]
    bce = loss == "bce"  # for BCE the class-weight slot carries api's per-element ``weight``
    w = validate.weights(class_weight, "weight" if bce else "class_weight", c, scalar_ok=bce)
    pw = validate.weights(pos_weight, "pos_weight", c, scalar_ok=True)
    out = cuda.device_array(n, dtype=dtype, stream=stream)
    status = cuda.device_array(n, dtype=np.int8, stream=stream)
    if t.ndim == 1:
        if t.dtype.kind not in "iu":
            raise InvalidInputError(
                f"a 1-D target must hold integer class indices, got dtype {t.dtype}", column="target"
            )
        launch(prows, None, t, w, pw, prm, out, status, stream)
    else:
        if t.dtype.kind not in "fiub":
            raise InvalidInputError(f"values must be numeric, got dtype {t.dtype}", column="target")
        launch(prows, _device_rows(t, "target"), None, w, pw, prm, out, status, stream)
    if on_invalid == "error":
        s = status.copy_to_host(stream=stream)
        stream.synchronize()
        target_rows = _HostRows(t)
        validate.raise_first_invalid(s, _HostRows(p), target_rows, prm)
    return out, status
