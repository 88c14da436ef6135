"""Host inputs on the GPU: pinned host buffers and device buffers on CUDA streams, reused
across batches (``_Slot``), and the ``Stager``, which copies host layouts in, launches the
kernels and copies the results out, double-buffering a stream of batches.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
from numba import cuda

from ..arrow import Dense, Ragged
from .gpu_launch import Rows, dummy, launch


class _Slot:
    """One set of pinned host buffers and device buffers on one stream, reused across batches."""

    def __init__(self):
        self.stream = cuda.stream()
        self._bufs = {}

    def buffers(self, role, n, dtype, pinned=True):
        dtype = np.dtype(dtype)
        cur = self._bufs.get(role)
        if cur is None or cur[1].dtype != dtype or cur[1].size < n:
            cap = max(int(n * 1.25), 1)
            host = cuda.pinned_array(cap, dtype=dtype) if pinned else None
            cur = (host, cuda.device_array(cap, dtype=dtype))
            self._bufs[role] = cur
        host, dev = cur
        return (host[:n] if host is not None else None), dev[:n]

    def upload(self, role, arr):
        """Copy ``arr`` (any strides) into the slot's pinned buffer, then enqueue the
        host-to-device copy on the slot's stream; returns the flat device view."""
        host, dev = self.buffers(role, arr.size, arr.dtype)
        np.copyto(host.reshape(arr.shape), arr)
        dev.copy_to_device(host, stream=self.stream)
        return dev

    def stage(self, role, layout):
        """A host layout (``Dense``/``Ragged``) as a device ``Rows`` (only its used range)."""
        if isinstance(layout, Dense) and layout.values.shape[1] > 0:
            v = layout.values
            c = v.shape[1]
            return Rows(self.upload(role, v), None, c, c, float(c), c)
        layout = Ragged.of(layout)  # (N, 0): empty rows, as offsets
        offs = np.asarray(layout.offsets, dtype=np.int64)
        o0, o1 = int(offs[0]), int(offs[-1])
        vals = layout.values[o0:o1]
        dev = self.upload(role, vals) if vals.size else dummy(layout.values.dtype, self.stream)
        lengths = np.diff(offs)
        rel = offs - o0
        return Rows(
            dev, self.upload(role + "_offsets", rel), 0, 0,
            float(lengths.mean()) if lengths.size else 0.0, int(lengths.max()) if lengths.size else 0,
        )


class _Pending:
    """A batch in flight: ``result()`` waits for its stream and returns ``(out, status)``."""

    def __init__(self, slot, n, out_host, status_host):
        self._slot, self._n = slot, n
        self._out, self._status = out_host, status_host
        self.shape = None

    def result(self, out=None, status=None):
        self._slot.stream.synchronize()
        if out is None:
            return self._out.copy(), self._status.copy()
        out[:] = self._out
        status[:] = self._status
        return out, status


class Stager:
    """Scores host batches on the GPU through pinned buffers on CUDA streams.

    With ``slots=2`` (the default) consecutive batches are double-buffered: while one batch's
    copy-in, kernel and copy-out run on its stream, the next batch is staged into the other
    slot's pinned buffers. ``score_batches`` takes an iterator of ``(pred, target, prm, w,
    pw)`` (layouts as ``cpu.run`` takes them) and yields ``(out, status)`` per batch, in
    order. The CLI pipeline instead calls ``gpu.run`` from two threads, each with its own
    one-slot stager (``thread_stager``), which overlaps two batches the same way.
    """

    def __init__(self, slots: int = 2):
        self._slots = [_Slot() for _ in range(max(1, int(slots)))]
        self._next = 0

    def submit(self, pred, target, prm, w, pw) -> _Pending:
        """Enqueue one batch on the next slot (whose previous batch must be collected)."""
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        n = len(pred)
        dtype = np.float64 if pred.values.dtype == np.float64 else np.float32
        p = slot.stage("pred", pred)
        if isinstance(target, np.ndarray):
            t, y = None, slot.upload("y", np.asarray(target, dtype=np.int64))
        else:
            t, y = slot.stage("target", target), None
        out_h, out_d = slot.buffers("out", n, dtype)
        st_h, st_d = slot.buffers("status", n, np.int8)
        pending = _Pending(slot, n, out_h, st_h)
        if n:
            pending.shape = launch(p, t, y, w, pw, prm, out_d, st_d, slot.stream)
            out_d.copy_to_host(out_h, stream=slot.stream)
            st_d.copy_to_host(st_h, stream=slot.stream)
        return pending

    def score(self, pred, target, prm, w, pw, out, status):
        """One batch, synchronously, into the host arrays ``out`` and ``status``."""
        return self.submit(pred, target, prm, w, pw).result(out, status)

    def score_batches(self, batches):
        """Yield ``(out, status)`` for each ``(pred, target, prm, w, pw)``, overlapping the
        transfers and kernels of consecutive batches."""
        pending = deque()
        for item in batches:
            if len(pending) == len(self._slots):
                yield pending.popleft().result()
            pending.append(self.submit(*item))
        while pending:
            yield pending.popleft().result()


_local = threading.local()


def thread_stager() -> Stager:
    """This thread's own one-slot ``Stager`` (its own pinned buffers and stream)."""
    st = getattr(_local, "stager", None)
    if st is None:
        st = _local.stager = Stager(slots=1)
    return st

