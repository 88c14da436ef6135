"""The GPU kernels (``@cuda.jit``), one per shape, built per ``Spec`` from the device
functions of ``gpu_rows.py``; the shape is chosen per launch from the row lengths
(``gpu_launch.plan``):

- ``warp_rows``: one warp per row, lanes read classes ``lane, lane+32, ...`` (coalesced);
- ``block_rows``: one block per row (long rows), the same strided loop over threads per block;
- ``split_rows``: a very long row is cut into pieces scored by several blocks, when there are
  too few rows to fill the GPU; ``split_finish`` then merges the pieces of each row.

Each thread folds its share of a row into a state (``gpu_rows.make_state``); the states of a
row merge through warp shuffles, or through shared memory where there are none (the CUDA
simulator). Every factory is cached per spec.

Every kernel takes the pred layout ``pv, po, pld, pc`` (values; offsets, or row pitch and
columns for dense rows), the target layout ``tv, to, tld, tc`` or the index labels ``y``,
the class weights ``w``, the pos weights ``pw`` and the option tuples ``k``, ``ki``.
"""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ..losses import EMPTY_ROW, IGNORED, LABEL_RANGE, LENGTH, OK
from .gpu_rows import NF, Spec, float_type, make_finish, make_state

_FULL_MASK = 0xFFFFFFFF
_UNROLL = 4  # loads in flight per thread in the main loop


@cache
def make_reduce(spec: Spec) -> SimpleNamespace:
    """The reductions of states over threads: ``warp_reduce`` (shuffles), ``shared_reduce``
    (shared memory) and ``block_reduce`` (the whole block, by the spec's path)."""
    TPB = spec.tpb
    NW = spec.tpb // 32
    SHUFFLE = spec.shuffle
    state = make_state(spec)
    ident, merge, store, load = state.ident, state.merge, state.store, state.load

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
        if SHUFFLE:
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

    return SimpleNamespace(warp_reduce=warp_reduce, shared_reduce=shared_reduce, block_reduce=block_reduce)


@cache
def make_row_io(spec: Spec) -> SimpleNamespace:
    """Reading and writing one row: ``row_info`` (where it lies, what is known before
    reading it), ``scan`` (fold a strided share of its classes) and ``write`` (its loss and
    status)."""
    BCE, INDEX = spec.bce, spec.index
    FT = float_type(spec)
    step = make_state(spec).step
    finish = make_finish(spec)

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
        pre = OK
        if not INDEX and n != tn:
            pre = LENGTH
        elif n == 0:
            pre = EMPTY_ROW
        elif INDEX and not BCE and ki[2] != 0 and yy == ki[3]:
            pre = IGNORED
        elif INDEX and (yy < 0 or yy >= n):
            pre = LABEL_RANGE
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
    def write(i, st, pre, n, yy, pv, ps, k, w, ki, out, status):
        """Row ``i``'s loss and status into ``out`` and ``status`` (the label's prediction
        ``xy`` read here, for index labels)."""
        xy = FT(0.0)
        if INDEX and pre == OK:
            xy = pv[ps + yy]
        v, s = finish(st, pre, n, yy, xy, k, w, ki)
        out[i] = v
        status[i] = s

    return SimpleNamespace(row_info=row_info, scan=scan, write=write)


@cache
def make_warp_rows(spec: Spec):
    """The kernel ``warp_rows(pv, po, pld, pc, tv, to, tld, tc, y, w, pw, k, ki, out, status)``."""
    NW = spec.tpb // 32
    SHN = NW if spec.shuffle else spec.tpb  # shared slots per block
    SHUFFLE = spec.shuffle
    ident = make_state(spec).ident
    red, io = make_reduce(spec), make_row_io(spec)
    warp_reduce, shared_reduce = red.warp_reduce, red.shared_reduce
    row_info, scan, write = io.row_info, io.scan, io.write

    @cuda.jit
    def warp_rows(pv, po, pld, pc, tv, to, tld, tc, y, w, pw, k, ki, out, status):
        """One warp per row; the loop over row groups is uniform over the block."""
        sf = cuda.shared.array((NF, SHN), np.float64)
        si = cuda.shared.array(SHN, np.int64)
        tid = cuda.threadIdx.x
        lane = tid & 31
        nrows = out.shape[0]
        base = cuda.blockIdx.x * NW
        while base < nrows:
            i = base + (tid >> 5)
            st = ident()
            ps = n = yy = 0
            pre = OK
            if i < nrows:
                ps, n, ts, yy, pre = row_info(i, po, pld, pc, to, tld, tc, y, ki)
                if pre == OK:
                    st = scan(st, pv, ps, tv, ts, lane, n, 32, n, yy, k, w, pw, ki)
            if SHUFFLE:
                st = warp_reduce(st)
            else:
                st = shared_reduce(st, sf, si, tid, 32)
            if i < nrows and lane == 0:
                write(i, st, pre, n, yy, pv, ps, k, w, ki, out, status)
            base += cuda.gridDim.x * NW

    return warp_rows


@cache
def make_block_rows(spec: Spec):
    """The kernel ``block_rows(pv, po, pld, pc, tv, to, tld, tc, y, w, pw, k, ki, out, status)``."""
    TPB = spec.tpb
    SHN = spec.tpb // 32 if spec.shuffle else spec.tpb
    ident = make_state(spec).ident
    block_reduce = make_reduce(spec).block_reduce
    io = make_row_io(spec)
    row_info, scan, write = io.row_info, io.scan, io.write

    @cuda.jit
    def block_rows(pv, po, pld, pc, tv, to, tld, tc, y, w, pw, k, ki, out, status):
        """One block per row (grid-stride over rows)."""
        sf = cuda.shared.array((NF, SHN), np.float64)
        si = cuda.shared.array(SHN, np.int64)
        tid = cuda.threadIdx.x
        nrows = out.shape[0]
        i = cuda.blockIdx.x
        while i < nrows:
            ps, n, ts, yy, pre = row_info(i, po, pld, pc, to, tld, tc, y, ki)
            st = ident()
            if pre == OK:
                st = scan(st, pv, ps, tv, ts, tid, n, TPB, n, yy, k, w, pw, ki)
            st = block_reduce(st, sf, si, tid)
            if tid == 0:
                write(i, st, pre, n, yy, pv, ps, k, w, ki, out, status)
            i += cuda.gridDim.x

    return block_rows


@cache
def make_split_rows(spec: Spec):
    """The kernel ``split_rows(pv, po, pld, pc, tv, to, tld, tc, y, w, pw, k, ki, nsplit,
    part_f, part_i)``: the state of each piece of each row into ``part_f``/``part_i``
    (``NF`` float rows and one int row, one column per piece)."""
    TPB = spec.tpb
    SHN = spec.tpb // 32 if spec.shuffle else spec.tpb
    state = make_state(spec)
    ident, store = state.ident, state.store
    block_reduce = make_reduce(spec).block_reduce
    io = make_row_io(spec)
    row_info, scan = io.row_info, io.scan

    @cuda.jit
    def split_rows(pv, po, pld, pc, tv, to, tld, tc, y, w, pw, k, ki, nsplit, part_f, part_i):
        """Piece ``j`` of row ``i`` (block ``i * nsplit + j``): its state into ``part_*``."""
        sf = cuda.shared.array((NF, SHN), np.float64)
        si = cuda.shared.array(SHN, np.int64)
        tid = cuda.threadIdx.x
        total = part_i.shape[0]
        item = cuda.blockIdx.x
        while item < total:
            i = item // nsplit
            j = item - i * nsplit
            ps, n, ts, yy, pre = row_info(i, po, pld, pc, to, tld, tc, y, ki)
            st = ident()
            if pre == OK:
                chunk = ((n + nsplit - 1) // nsplit + 31) // 32 * 32
                c0 = j * chunk
                c1 = min(n, c0 + chunk)
                st = scan(st, pv, ps, tv, ts, c0 + tid, c1, TPB, n, yy, k, w, pw, ki)
            st = block_reduce(st, sf, si, tid)
            if tid == 0:
                store(st, part_f, part_i, item)
            item += cuda.gridDim.x

    return split_rows


@cache
def make_split_finish(spec: Spec):
    """The kernel ``split_finish(pv, po, pld, pc, to, tld, tc, y, w, k, ki, nsplit, part_f,
    part_i, out, status)``: merges the pieces ``split_rows`` left."""
    state = make_state(spec)
    merge, load = state.merge, state.load
    io = make_row_io(spec)
    row_info, write = io.row_info, io.write

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

    return split_finish


def kernels(spec: Spec) -> dict:
    """The kernels of one spec by shape: ``warp``, ``block``, ``split``, ``split_finish``."""
    return {
        "warp": make_warp_rows(spec),
        "block": make_block_rows(spec),
        "split": make_split_rows(spec),
        "split_finish": make_split_finish(spec),
    }
