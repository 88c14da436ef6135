"""GPU kernels (``@cuda.jit``) and device-array handling: the same numbers and statuses as
``cpu.py``, for host inputs (staged through pinned buffers on a CUDA stream) and device
inputs (taken zero-copy through ``__cuda_array_interface__``).

Kernel shapes, chosen per launch from the row lengths (``config.py``):

- ``warp``: one warp per row, lanes read classes ``lane, lane+32, ...`` (coalesced);
- ``block``: one block per row (long rows), the same strided loop over ``threads per block``;
- ``split``: a very long row is cut into pieces scored by several blocks, when there are too
  few rows to fill the GPU; a second kernel merges the pieces of each row.

Every thread folds its share of a row into a small *state* (one pass, nothing re-read):
``(flags, m, s, a, d, u, acc)`` = validation bits, running max ``m`` and ``s = sum exp(x - m)``
(online log-sum-exp, rescaled when the max grows), ``a = sum q_c`` and
``d = sum q_c (m - x_c)`` (so ``sum q_c (lse - x_c) = d + a log s`` with no cancellation),
the dense-target sum ``u`` and a plain sum ``acc`` (probability losses, BCE). States merge
associatively (warp shuffles, or shared memory where there are none: the CUDA simulator), and
the row's first thread turns the merged state into ``(loss, status)`` exactly as the CPU row
functions do, in the same order of checks.

Precision: transcendental functions run in the input precision (float32 ``exp`` through
the fast ``__expf`` intrinsic in the log-sum-exp, libdevice ``logf``/``log1pf`` elsewhere);
clipping, targets, weights and every accumulation are float64, so float32 results stay
within 1e-5 relative of the CPU and float64 results within 1e-9.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import deque
from functools import cache

import numpy as np
from numba import config as nb_config
from numba import cuda

from .. import config, losses, validate
from ..arrow import Dense, Ragged, as_rows, is_device_array
from ..errors import InvalidInputError

SIMULATOR = bool(nb_config.ENABLE_CUDASIM)

_OK = losses.OK
_IGNORED = losses.IGNORED
_NONFINITE = losses.PRED_NONFINITE
_RANGE = losses.PRED_RANGE
_LABEL = losses.LABEL_RANGE
_TVALUE = losses.TARGET_VALUE
_TSUM = losses.TARGET_SUM
_LENGTH = losses.LENGTH
_EMPTY = losses.EMPTY_ROW
_MASKED = losses.TARGET_MASKED
_SUM_ATOL = losses.DENSE_SUM_RTOL
_FULL_MASK = 0xFFFFFFFF
_NF = 6  # float fields of a state kept in shared memory (m, s, a, d, u, acc)
_UNROLL = 4  # loads in flight per thread in the main loop


# --------------------------------------------------------------------------------------
# kernels: built per (shape, loss mode, float width, launch settings) and cached
# --------------------------------------------------------------------------------------


@cache
def _kernels(bce: bool, logits: bool, index: bool, f32: bool, tpb: int, shuffle: bool, fast: bool):
    """Compile-time specialised kernels for one loss mode; returns a dict of kernels.

    ``bce``/``logits``/``index`` fix the formula (dead branches vanish), ``f32`` the float
    width of the element math, ``tpb`` the threads per block (sizes the shared arrays),
    ``shuffle`` the reduction path, ``fast`` float32 ``exp`` through ``__expf``.
    """
    BCE, LOGITS, INDEX = bce, logits, index
    FT = np.float32 if f32 else np.float64
    TPB = tpb
    NW = tpb // 32
    SHN = NW if shuffle else tpb  # shared slots per block
    if f32 and fast and not SIMULATOR:
        from numba.cuda import libdevice

        EXP = libdevice.fast_expf
    else:
        EXP = math.exp

    @cuda.jit(device=True)
    def weight(w, nw, c):
        """Per-class weight: 1 with no weights, ``w[0]`` for one entry, else ``w[c]``."""
        if nw == 0:
            return 1.0
        if nw == 1:
            return w[0]
        return w[c]

    @cuda.jit(device=True)
    def clog(x, k):
        """Clipped ``log p`` (float64): ``max(log(clip(p, lo, hi)), logmin)``; the clipped
        ends use logs computed on the host in float64, the rest the input precision."""
        v = np.float64(x)
        if v <= k[1]:
            r = k[5]
        elif v >= k[2]:
            r = k[6]
        else:
            r = np.float64(math.log(x))
        return max(r, k[3])

    @cuda.jit(device=True)
    def clog1m(x, k):
        """Clipped ``log(1 - p)``: ``max(log1p(-clip(p, lo, hi)), logmin)``."""
        v = np.float64(x)
        if v <= k[1]:
            r = k[7]
        elif v >= k[2]:
            r = k[8]
        else:
            r = np.float64(math.log1p(-x))
        return max(r, k[3])

    @cuda.jit(device=True)
    def bce_term(x, t, q, k):
        """One BCE component ``-[q t log p + (1-t) log(1-p)]`` (``q`` = pos_weight).

        From logits, with ``sp = log1p(exp(-|x|))``: ``q t (sp + max(-x,0)) + (1-t)(sp +
        max(x,0))`` (PyTorch's form rearranged into non-negative parts: no cancellation,
        so it is accurate in float32). A part whose weight is 0 is skipped (``0 log 0 = 0``;
        ``x = -inf`` is ``p = 0``)."""
        qt = q * t
        if LOGITS:
            zero = FT(0.0)
            sp = math.log1p(math.exp(-abs(x)))
            tt = FT(t)
            r = zero
            if qt != 0.0:
                r += FT(q) * tt * (sp + max(-x, zero))
            if t != 1.0:
                r += (FT(1.0) - tt) * (sp + max(x, zero))
            return np.float64(r)
        acc = 0.0
        if qt != 0.0:
            acc += qt * clog(x, k)
        if t != 1.0:
            acc += (1.0 - t) * clog1m(x, k)
        return -acc

    @cuda.jit(device=True)
    def ident():
        return (np.int64(0), FT(-math.inf), 0.0, 0.0, 0.0, 0.0, 0.0)

    @cuda.jit(device=True)
    def step(st, x, tval, c, n, yy, k, w, pw, ki):
        """Fold class ``c`` (prediction ``x``, dense target ``tval``) into a state."""
        f, m, s, a, d, u, acc = st
        if LOGITS:  # NaN and +inf are invalid; -inf masks the class
            if x != x or x == math.inf:
                f |= 1
        elif not (x >= 0.0 and x <= 1.0):
            f |= 2
            if not math.isfinite(x):
                f |= 1
        e = k[4]
        tv = 0.0
        if not INDEX:
            tv = np.float64(tval)
            if BCE:
                if not (tv >= 0.0 and tv <= 1.0):
                    f |= 4
            else:
                if not (tv >= 0.0 and tv < math.inf):
                    f |= 4
                u += tv
        if BCE:
            if INDEX:
                tt = k[11] if c == yy else k[10]
            else:
                tt = tv * (1.0 - e) + e / 2.0
            ew = weight(w, ki[0], c)  # BCE's per-element weight rides in the class-weight slot
            if ew != 0.0:
                acc += ew * bce_term(x, tt, weight(pw, ki[1], c), k)
        elif LOGITS:
            # s = sum exp(x - m) over the classes seen but the first arg max (its e^0 = 1 is
            # added back by log1p at the end: nothing cancels for a dominant class)
            if x > m:  # the running max grows: rescale s and d (float64, rare)
                if a != 0.0:
                    d += (np.float64(x) - np.float64(m)) * a
                s = (s + 1.0) * math.exp(np.float64(m) - np.float64(x)) if m > -math.inf else 0.0
                m = x
            elif x > -math.inf:
                s += np.float64(EXP(x - m))
            q = 0.0
            if INDEX:
                if e > 0.0:
                    q = weight(w, ki[0], c)
            else:
                tt = tv * (1.0 - e) + e / n
                if tt != 0.0:
                    q = weight(w, ki[0], c) * tt
            if q != 0.0:
                if x > -math.inf:
                    a += q
                    d += q * (np.float64(m) - np.float64(x))
                else:
                    f |= 8  # a masked class with positive weight: the loss is inf
        else:
            if INDEX:
                if e > 0.0:
                    q = weight(w, ki[0], c)
                    if q != 0.0:
                        acc += q * -clog(x, k)
            else:
                q = weight(w, ki[0], c) * (tv * (1.0 - e) + e / n)
                if q != 0.0:
                    acc += q * -clog(x, k)
        return (f, m, s, a, d, u, acc)

    @cuda.jit(device=True)
    def merge(p, q):
        """Combine two states (associative; the log-sum-exp parts rescaled to the larger max)."""
        m = p[1]
        s = p[2] + q[2]
        d = p[4] + q[4]
        if LOGITS and not BCE:
            # each s leaves out its own arg max; the merged one leaves out the larger max only
            if q[1] > m:
                m = q[1]
                s = q[2]
                if p[1] > -math.inf:
                    s += (p[2] + 1.0) * math.exp(np.float64(p[1]) - np.float64(m))
            else:
                s = p[2]
                if q[1] > -math.inf:
                    s += (q[2] + 1.0) * math.exp(np.float64(q[1]) - np.float64(m))
            if p[3] != 0.0:
                d += (np.float64(m) - np.float64(p[1])) * p[3]
            if q[3] != 0.0:
                d += (np.float64(m) - np.float64(q[1])) * q[3]
        return (p[0] | q[0], m, s, p[3] + q[3], d, p[5] + q[5], p[6] + q[6])

    @cuda.jit(device=True)
    def store(st, sf, si, j):
        si[j] = st[0]
        sf[0, j] = np.float64(st[1])
        sf[1, j] = st[2]
        sf[2, j] = st[3]
        sf[3, j] = st[4]
        sf[4, j] = st[5]
        sf[5, j] = st[6]

    @cuda.jit(device=True)
    def load(sf, si, j):
        return (si[j], FT(sf[0, j]), sf[1, j], sf[2, j], sf[3, j], sf[4, j], sf[5, j])

    @cuda.jit(device=True)
    def warp_reduce(st):
        """Shuffle-down tree over a warp; lane 0 ends with the warp's state."""
        off = 16
        while off > 0:
            o = (
                cuda.shfl_down_sync(_FULL_MASK, st[0], off),
                cuda.shfl_down_sync(_FULL_MASK, st[1], off),
                cuda.shfl_down_sync(_FULL_MASK, st[2], off),
                cuda.shfl_down_sync(_FULL_MASK, st[3], off),
                cuda.shfl_down_sync(_FULL_MASK, st[4], off),
                cuda.shfl_down_sync(_FULL_MASK, st[5], off),
                cuda.shfl_down_sync(_FULL_MASK, st[6], off),
            )
            st = merge(st, o)
            off //= 2
        return st

    @cuda.jit(device=True)
    def shared_reduce(st, sf, si, tid, width):
        """Tree over groups of ``width`` threads in shared memory (every thread of the block
        calls it); the first thread of each group ends with the group's state."""
        store(st, sf, si, tid)
        cuda.syncthreads()
        off = width // 2
        while off > 0:
            if (tid & (width - 1)) < off:
                st = merge(load(sf, si, tid), load(sf, si, tid + off))
                store(st, sf, si, tid)
            cuda.syncthreads()
            off //= 2
        return load(sf, si, tid)

    @cuda.jit(device=True)
    def block_reduce(st, sf, si, tid):
        """The block's state in thread 0 (every thread calls it)."""
        if shuffle:
            st = warp_reduce(st)
            if (tid & 31) == 0:
                store(st, sf, si, tid >> 5)
            cuda.syncthreads()
            if tid < 32:
                st = ident()
                if tid < NW:
                    st = load(sf, si, tid)
                st = warp_reduce(st)
            cuda.syncthreads()
            return st
        st = shared_reduce(st, sf, si, tid, TPB)
        cuda.syncthreads()
        return st

    @cuda.jit(device=True)
    def row_info(i, po, pld, pc, to, tld, tc, y, ki):
        """Row ``i``: (pred start, length, target start, label, status known before reading)."""
        if pld > 0:
            ps = i * pld
            n = pc
        else:
            ps = po[i]
            n = po[i + 1] - ps
        ts = ps - ps
        tn = n
        yy = ts
        if INDEX:
            yy = np.int64(y[i])
        elif tld > 0:
            ts = i * tld
            tn = tc
        else:
            ts = to[i]
            tn = to[i + 1] - ts
        pre = _OK
        if not INDEX and n != tn:
            pre = _LENGTH
        elif n == 0:
            pre = _EMPTY
        elif INDEX and not BCE and ki[2] != 0 and yy == ki[3]:
            pre = _IGNORED
        elif INDEX and (yy < 0 or yy >= n):
            pre = _LABEL
        return ps, n, ts, yy, pre

    @cuda.jit(device=True)
    def scan(st, pv, ps, tv, ts, c, c1, stride, n, yy, k, w, pw, ki):
        """Fold classes ``c, c+stride, ... < c1`` of one row, ``_UNROLL`` loads at a time."""
        span = (_UNROLL - 1) * stride
        while c + span < c1:
            x0 = pv[ps + c]
            x1 = pv[ps + c + stride]
            x2 = pv[ps + c + 2 * stride]
            x3 = pv[ps + c + 3 * stride]
            if INDEX:
                st = step(st, x0, 0, c, n, yy, k, w, pw, ki)
                st = step(st, x1, 0, c + stride, n, yy, k, w, pw, ki)
                st = step(st, x2, 0, c + 2 * stride, n, yy, k, w, pw, ki)
                st = step(st, x3, 0, c + 3 * stride, n, yy, k, w, pw, ki)
            else:
                t0 = tv[ts + c]
                t1 = tv[ts + c + stride]
                t2 = tv[ts + c + 2 * stride]
                t3 = tv[ts + c + 3 * stride]
                st = step(st, x0, t0, c, n, yy, k, w, pw, ki)
                st = step(st, x1, t1, c + stride, n, yy, k, w, pw, ki)
                st = step(st, x2, t2, c + 2 * stride, n, yy, k, w, pw, ki)
                st = step(st, x3, t3, c + 3 * stride, n, yy, k, w, pw, ki)
            c += _UNROLL * stride
        while c < c1:
            if INDEX:
                st = step(st, pv[ps + c], 0, c, n, yy, k, w, pw, ki)
            else:
                st = step(st, pv[ps + c], tv[ts + c], c, n, yy, k, w, pw, ki)
            c += stride
        return st

    @cuda.jit(device=True)
    def finish(st, pre, n, yy, xy, k, w, ki):
        """(loss, status) of a row from its merged state, checks in the CPU's order."""
        if pre != _OK:
            return math.nan, pre
        f = st[0]
        if not INDEX:
            if f & 4:
                return math.nan, _TVALUE
            if not BCE and abs(st[5] - 1.0) > _SUM_ATOL:
                return math.nan, _TSUM
        if f & 1:
            return math.nan, _NONFINITE
        if f & 2:
            return math.nan, _RANGE
        e = k[4]
        loss = 0.0
        if BCE:
            loss = st[6]
            if k[9] != 0.0:
                loss /= n
        elif LOGITS:
            if f & 8:
                return math.inf, _MASKED
            ls = math.log1p(st[2])  # lse = m + ls; -log p_c = (m - x_c) + ls, both >= 0
            if INDEX:
                wy = (1.0 - e) * weight(w, ki[0], yy)
                if wy != 0.0:
                    if xy == -math.inf:
                        return math.inf, _MASKED
                    loss = wy * ((np.float64(st[1]) - np.float64(xy)) + ls)
                if e > 0.0:
                    loss += e / n * (st[4] + st[3] * ls)
            else:
                loss = st[4] + st[3] * ls
        else:
            if INDEX:
                wy = (1.0 - e) * weight(w, ki[0], yy)
                if wy != 0.0:
                    loss = wy * -clog(np.float64(xy), k)
                if e > 0.0:
                    loss += e / n * st[6]
            else:
                loss = st[6]
        if LOGITS and loss == math.inf:  # BCE: a positive target on a -inf logit
            return math.inf, _MASKED
        return loss * k[0], _OK

    @cuda.jit(device=True)
    def write(i, st, pre, n, yy, pv, ps, k, w, ki, out, status):
        xy = FT(0.0)
        if INDEX and pre == _OK:
            xy = pv[ps + yy]
        v, s = finish(st, pre, n, yy, xy, k, w, ki)
        out[i] = v
        status[i] = s

    @cuda.jit
    def warp_rows(pv, po, pld, pc, tv, to, tld, tc, y, w, pw, k, ki, out, status):
        """One warp per row; the loop over row groups is uniform over the block."""
        sf = cuda.shared.array((_NF, SHN), np.float64)
        si = cuda.shared.array(SHN, np.int64)
        tid = cuda.threadIdx.x
        lane = tid & 31
        nrows = out.shape[0]
        base = cuda.blockIdx.x * NW
        while base < nrows:
            i = base + (tid >> 5)
            st = ident()
            ps = n = yy = 0
            pre = _OK
            if i < nrows:
                ps, n, ts, yy, pre = row_info(i, po, pld, pc, to, tld, tc, y, ki)
                if pre == _OK:
                    st = scan(st, pv, ps, tv, ts, lane, n, 32, n, yy, k, w, pw, ki)
            if shuffle:
                st = warp_reduce(st)
            else:
                st = shared_reduce(st, sf, si, tid, 32)
            if i < nrows and lane == 0:
                write(i, st, pre, n, yy, pv, ps, k, w, ki, out, status)
            base += cuda.gridDim.x * NW

    @cuda.jit
    def block_rows(pv, po, pld, pc, tv, to, tld, tc, y, w, pw, k, ki, out, status):
        """One block per row (grid-stride over rows)."""
        sf = cuda.shared.array((_NF, SHN), np.float64)
        si = cuda.shared.array(SHN, np.int64)
        tid = cuda.threadIdx.x
        nrows = out.shape[0]
        i = cuda.blockIdx.x
        while i < nrows:
            ps, n, ts, yy, pre = row_info(i, po, pld, pc, to, tld, tc, y, ki)
            st = ident()
            if pre == _OK:
                st = scan(st, pv, ps, tv, ts, tid, n, TPB, n, yy, k, w, pw, ki)
            st = block_reduce(st, sf, si, tid)
            if tid == 0:
                write(i, st, pre, n, yy, pv, ps, k, w, ki, out, status)
            i += cuda.gridDim.x

    @cuda.jit
    def split_rows(pv, po, pld, pc, tv, to, tld, tc, y, w, pw, k, ki, nsplit, part_f, part_i):
        """Piece ``j`` of row ``i`` (block ``i * nsplit + j``): its state into ``part_*``."""
        sf = cuda.shared.array((_NF, SHN), np.float64)
        si = cuda.shared.array(SHN, np.int64)
        tid = cuda.threadIdx.x
        total = part_i.shape[0]
        item = cuda.blockIdx.x
        while item < total:
            i = item // nsplit
            j = item - i * nsplit
            ps, n, ts, yy, pre = row_info(i, po, pld, pc, to, tld, tc, y, ki)
            st = ident()
            if pre == _OK:
                chunk = ((n + nsplit - 1) // nsplit + 31) // 32 * 32
                c0 = j * chunk
                c1 = min(n, c0 + chunk)
                st = scan(st, pv, ps, tv, ts, c0 + tid, c1, TPB, n, yy, k, w, pw, ki)
            st = block_reduce(st, sf, si, tid)
            if tid == 0:
                store(st, part_f, part_i, item)
            item += cuda.gridDim.x

    @cuda.jit
    def split_finish(pv, po, pld, pc, to, tld, tc, y, w, k, ki, nsplit, part_f, part_i, out, status):
        """Merge the pieces of each row (one thread per row) and write loss and status."""
        i = cuda.grid(1)
        nrows = out.shape[0]
        while i < nrows:
            ps, n, ts, yy, pre = row_info(i, po, pld, pc, to, tld, tc, y, ki)
            st = load(part_f, part_i, i * nsplit)
            for j in range(1, nsplit):
                st = merge(st, load(part_f, part_i, i * nsplit + j))
            write(i, st, pre, n, yy, pv, ps, k, w, ki, out, status)
            i += cuda.gridsize(1)

    return {"warp": warp_rows, "block": block_rows, "split": split_rows, "split_finish": split_finish}


# --------------------------------------------------------------------------------------
# launching
# --------------------------------------------------------------------------------------


class _Rows:
    """A device-side layout: ``values`` (1-D) plus either absolute ``offsets`` (ragged,
    ``ld == 0``) or a row pitch ``ld`` and ``ncols`` (dense)."""

    __slots__ = ("values", "offsets", "ld", "ncols", "mean_len", "max_len")

    def __init__(self, values, offsets, ld, ncols, mean_len, max_len):
        self.values, self.offsets, self.ld, self.ncols = values, offsets, ld, ncols
        self.mean_len, self.max_len = mean_len, max_len


def _sm_count() -> int:
    if SIMULATOR:
        return 1
    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:  # pragma: no cover - no device
        return 1


def _tpb() -> int:
    tpb = int(config.GPU_THREADS_PER_BLOCK)
    if tpb < 32 or tpb > 1024 or tpb & (tpb - 1):
        raise ValueError(f"GPU_THREADS_PER_BLOCK must be a power of two in [32, 1024], got {tpb}")
    return tpb


def _shuffle() -> bool:
    if config.GPU_SHUFFLE is None:
        return not SIMULATOR
    if config.GPU_SHUFFLE and SIMULATOR:
        raise ValueError("the CUDA simulator has no warp shuffles: leave GPU_SHUFFLE at None/False")
    return bool(config.GPU_SHUFFLE)


def plan(n_rows: int, mean_len: float, max_len: int) -> tuple[str, int]:
    """The kernel shape for a launch: ``("warp"|"block"|"split", pieces per row)``."""
    if mean_len <= config.GPU_WARP_MAX_CLASSES:
        return "warp", 1
    fill = config.GPU_FILL_BLOCKS or 4 * _sm_count()
    if max_len >= config.GPU_SPLIT_MIN_CLASSES and n_rows < fill:
        pieces = min(-(-fill // max(n_rows, 1)), -(-max_len // max(int(config.GPU_SPLIT_CHUNK), 1)))
        if pieces >= 2:
            return "split", int(pieces)
    return "block", 1


def _consts(prm) -> tuple:
    """Float options as one tuple (the layout ``k[...]`` in the kernels)."""
    lo, hi, e = float(prm.lo), float(prm.hi), float(prm.smoothing)
    neg_inf = -math.inf
    return (
        float(prm.scale),
        lo,
        hi,
        float(prm.logmin),
        e,
        math.log(lo) if lo > 0 else neg_inf,
        math.log(hi) if hi > 0 else neg_inf,
        math.log1p(-lo) if lo < 1 else neg_inf,
        math.log1p(-hi) if hi < 1 else neg_inf,
        1.0 if prm.mean else 0.0,
        e / 2.0,
        1.0 - e + e / 2.0,
    )


def _launch(p: _Rows, t, y, w, pw, prm, out, status, stream):
    """Launch the kernels for device layouts ``p`` (pred) and ``t`` (dense target ``_Rows``
    or None for index labels ``y``), writing device arrays ``out`` and ``status``."""
    n = out.shape[0]
    if n == 0:
        return
    index = t is None
    f32 = p.values.dtype == np.float32
    tpb = _tpb()
    ks = _kernels(bool(prm.bce), bool(prm.from_logits), index, f32, tpb, _shuffle(), bool(config.GPU_FASTMATH))
    k = _consts(prm)
    ki = (_host_len(w), _host_len(pw), int(prm.has_ignore), int(prm.ignore_index))
    wd = _small_to_device(w, stream)
    pwd = _small_to_device(pw, stream)
    dummy_i = _dummy(np.int64, stream)
    po = dummy_i if p.offsets is None else p.offsets
    if index:
        tv, to, tld, tc = _dummy(np.float64, stream), dummy_i, 0, 0
    else:
        tv, tld, tc = t.values, t.ld, t.ncols
        to = dummy_i if t.offsets is None else t.offsets
        y = dummy_i
    args = (p.values, po, p.ld, p.ncols, tv, to, tld, tc, y, wd, pwd, k, ki)
    max_blocks = config.GPU_MAX_BLOCKS or 32 * _sm_count()
    shape, pieces = plan(n, p.mean_len, p.max_len)
    if shape == "warp":
        blocks = min(-(-n // (tpb // 32)), max_blocks)
        ks["warp"][blocks, tpb, stream](*args, out, status)
    elif shape == "block":
        ks["block"][min(n, max_blocks), tpb, stream](*args, out, status)
    else:
        part_f = cuda.device_array((_NF, n * pieces), dtype=np.float64, stream=stream)
        part_i = cuda.device_array(n * pieces, dtype=np.int64, stream=stream)
        ks["split"][min(n * pieces, max_blocks), tpb, stream](*args, pieces, part_f, part_i)
        fin = (p.values, po, p.ld, p.ncols, to, tld, tc, y, wd, k, ki, pieces, part_f, part_i)
        ks["split_finish"][min(-(-n // tpb), max_blocks), tpb, stream](*fin, out, status)
    return shape


def _host_len(a) -> int:
    return int(np.asarray(a).size)


def _small_to_device(a, stream):
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float64).reshape(-1))
    if a.size == 0:
        a = np.zeros(1)
    return cuda.to_device(a, stream=stream)


def _dummy(dtype, stream):
    return cuda.to_device(np.zeros(1, dtype=dtype), stream=stream)


# --------------------------------------------------------------------------------------
# host inputs: pinned staging on a stream (double-buffered for a stream of batches)
# --------------------------------------------------------------------------------------


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
        """A host layout (``Dense``/``Ragged``) as a device ``_Rows`` (only its used range)."""
        if isinstance(layout, Dense) and layout.values.shape[1] > 0:
            v = layout.values
            c = v.shape[1]
            return _Rows(self.upload(role, v), None, c, c, float(c), c)
        layout = Ragged.of(layout)  # (N, 0): empty rows, as offsets
        offs = np.asarray(layout.offsets, dtype=np.int64)
        o0, o1 = int(offs[0]), int(offs[-1])
        vals = layout.values[o0:o1]
        dev = self.upload(role, vals) if vals.size else _dummy(layout.values.dtype, self.stream)
        lengths = np.diff(offs)
        rel = offs - o0
        return _Rows(
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
    slot's pinned buffers. The CLI pipeline calls ``score_batches`` with an iterator of
    ``(pred, target, prm, w, pw)`` (layouts as ``cpu.run`` takes them) and gets
    ``(out, status)`` per batch, in order.
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
            pending.shape = _launch(p, t, y, w, pw, prm, out_d, st_d, slot.stream)
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


def _stager() -> Stager:
    st = getattr(_local, "stager", None)
    if st is None:
        st = _local.stager = Stager(slots=1)
    return st


# The CUDA simulator swaps this module's ``cuda`` global while a kernel runs: there, one
# thread at a time.
_LAUNCH = threading.Lock() if SIMULATOR else contextlib.nullcontext()


def run(pred, target, prm, w, pw, out, status):
    """``cpu.run``'s contract on the GPU: score host layouts into host ``out``/``status``.

    Each calling thread has its own pinned buffers and stream, so the pipeline's two GPU
    threads overlap. Per-row ``(N, C)`` weights are scored on the CPU only."""
    for a, name in ((w, "weight"), (pw, "pos_weight")):
        if np.ndim(a) == 2 and np.shape(a)[0] > 1:
            raise InvalidInputError(f"per-row {name} of shape (N, C) is not supported on the GPU; use device='cpu'")
    with _LAUNCH:
        _stager().score(pred, target, prm, w, pw, out, status)


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
    """A 2-D C-contiguous device array as ``_Rows`` (zero-copy)."""
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
    return _Rows(arr.reshape(n * c), None, c, c, float(c), c)


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
        _launch(prows, None, t, w, pw, prm, out, status, stream)
    else:
        if t.dtype.kind not in "fiub":
            raise InvalidInputError(f"values must be numeric, got dtype {t.dtype}", column="target")
        _launch(prows, _device_rows(t, "target"), None, w, pw, prm, out, status, stream)
    if on_invalid == "error":
        s = status.copy_to_host(stream=stream)
        stream.synchronize()
        target_rows = _HostRows(t)
        validate.raise_first_invalid(s, _HostRows(p), target_rows, prm)
    return out, status
