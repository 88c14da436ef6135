"""CPU narrow-row kernels: blocks of rows scored as one flat run of values (the speed
machinery for few classes per row). This module decides which pieces of
``cpu_block_terms.py`` a block runs, cuts ragged batches into runs, sizes the scratch and
runs the blocks in parallel; the row formulas themselves are in ``cpu_rows.py``.

Every kernel writes one loss and one status per row, with the numbers of the row functions.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from ..losses import EMPTY_ROW, IGNORED, OK, TARGET_SUM
from .cpu_block_terms import (
    _bce_hard_terms,
    _bce_rows,
    _exp_classes,
    _exp_rest,
    _finish_rows,
    _flat_pred_ok,
    _flat_target_bad,
    _hard,
    _label_status,
    _logit_terms,
    _neg_dot_classes,
    _neglog_rows,
    _pair_dense,
    _pair_rest,
    _pick_pairs,
    _pred_statuses,
    _row_shift,
    _rsum,
    _rsum_terms,
    _shift_classes,
    _shift_rows,
    _u,
)
from .cpu_rows import (
    _SUM_ATOL,
    _bce_soft,
    _bce_target_status,
    _cce_target_status,
    _clog,
    _fast_dense_row,
    _fast_index_row,
    _ijit,
    _jit,
    _pjit,
    _span,
)

# ---- narrow rows (few classes): work on blocks of rows, vectorised across the block ---------
#
# With C = 10 the loop over one row's classes is shorter than a vector, so it runs scalar.
# Instead a block of ``_BLOCK`` rows is scored as one flat run of values: the per-element
# terms go to a float64 scratch ``E`` in one vectorised loop, per-row sums follow (for a
# dense (N, C) layout of fewer than 8 classes as C strided passes across the rows, which
# vectorise, or for BCE's float32 terms a class-major copy summed contiguously; row by row
# from 8), and the last per-row ``log`` runs vectorised across the rows.
# CCE from logits copies a dense block class-major first, so that all its passes run
# contiguously across the rows. Value checks are one flat branch-free pass per block (BCE's
# ride in its terms pass), per row only when it fails. For float32 inputs the costly
# elementwise terms are computed in float32 and summed in float64.
#
# The scratch is allocated by the caller (``_scratch``): one row per chunk of blocks, and
# the kernels allocate nothing.

_BLOCK = 256
_NARROW = 64  # classes per row up to which rows are scored in blocks, in every mode: up to
# here a block beats the row functions; the gain shrinks as rows widen and is gone by C = 128
_MAX_ROWS = 4 * _BLOCK  # the most rows in a block: dense rows of a few classes (_rows_per_block)
_BLOCK_VALUES = 2048  # dense rows: a block of _BLOCK rows, or more rows of fewer classes up to this
_NROW = 5 * _MAX_ROWS  # per-row scratch: S, R, T, M and the shifts in the input's dtype


@njit(**_ijit)
def _row_scratch(scr, cap, i, like):
    """Per-row scratch slot ``i`` (of ``_NROW // _MAX_ROWS``) as an array of ``like``'s dtype."""
    k = 8 // like.itemsize
    return scr.view(like.dtype)[(cap + i * _MAX_ROWS) * k : (cap + (i + 1) * _MAX_ROWS) * k]


@njit(**_jit)
def uniform_width(po, n):
    """The width of ``n`` ragged rows (offsets ``po``) when every row has the same one, >= 1;
    else -1."""
    if n == 0:
        return -1
    w = po[1] - po[0]
    same = w >= 1
    for i in range(1, n):
        same &= po[i + 1] - po[i] == w
    return w if same else -1


@njit(**_jit)
def _block_span(po, pc, r0, r1):
    if pc >= 0:
        return r0 * pc, r1 * pc
    return po[r0], po[r1]


@njit(**_jit)
def _rows_one_by_one_index(pv, po, pc, y, prm, out, status, r0, r1):
    for i in range(r0, r1):
        a, n = _span(po, pc, i)
        v, s = _fast_index_row(pv, a, n, y[i], prm)
        out[i] = v
        status[i] = s


@njit(**_jit)
def _run_index(pv, po, pc, y, prm, out, status, r0, r1, scr):
    """Score rows ``r0:r1`` (at most ``_MAX_ROWS``: ``_rows_per_block``) against index labels,
    vectorised across them."""
    a0, a1 = _block_span(po, pc, r0, r1)
    ne = a1 - a0
    cap = scr.shape[0] - _NROW
    if ne > cap:  # wider rows than the scratch holds
        _rows_one_by_one_index(pv, po, pc, y, prm, out, status, r0, r1)
        return
    ign = prm.has_ignore and not prm.bce
    Y, St = y[r0:r1], status[r0:r1]  # views indexed from 0: no wraparound, the loops vectorise
    if not prm.bce and not prm.from_logits and pc == 2:  # -log p_y, two classes: checks and pick in one pass
        S = scr.view(pv.dtype)[: r1 - r0]
        if not _pick_pairs(pv, y, status, r0, r1, S, ign, prm.ignore_index):
            _pred_statuses(pv, po, pc, status, r0, r1, False)
        _neglog_rows(S, St, out[r0:r1], r1 - r0, prm, pv)
        return
    for j in range(r1 - r0):  # branch-free row checks
        _, n = _span(po, pc, r0 + j)
        St[j] = _label_status(n, Y[j], ign, prm.ignore_index)
    if prm.bce:  # (its value checks ride in its terms pass)
        _bce_index(pv, po, pc, y, prm, out, status, r0, r1, scr, a0, a1)
        return
    flat_ok, masked = _flat_pred_ok(pv, a0, a1, prm.from_logits)
    if not flat_ok:
        _pred_statuses(pv, po, pc, status, r0, r1, prm.from_logits)
    if not prm.from_logits:  # -log p_y: gather, then one vectorised log
        O = out[r0:r1]
        S = scr.view(pv.dtype)[: r1 - r0]  # p_y in the input's precision (its bits)
        last = pv.shape[0] - 1  # >= 0: a scored row has a value
        one = pv.dtype.type(1.0)
        for j in range(r1 - r0):  # branch-free (a clamped index for unscored rows): vectorises
            a, _ = _span(po, pc, r0 + j)
            ok = St[j] == OK
            k = a + (Y[j] if ok else 0)
            x = pv[_u(k if k < last else last)]
            S[j] = x if ok else one
        _neglog_rows(S, St, O, r1 - r0, prm, pv)
        return
    S = scr[cap : cap + _MAX_ROWS]
    R = scr[cap + _MAX_ROWS : cap + 2 * _MAX_ROWS]
    T = scr[cap + 2 * _MAX_ROWS : cap + 3 * _MAX_ROWS]
    if pc == 2:  # two classes: the same sums, one row per step (see _pair_rest)
        _pair_rest(pv, y, status, r0, r1, S, R, T)
        _finish_rows(out, status, r0, r1, S, R, T, prm, True, masked)
        return
    # CCE from logits: (m - x_y) + log1p(sum_{c != argmax} exp(x_c - m))
    M = scr[cap + 3 * _MAX_ROWS : cap + 4 * _MAX_ROWS]
    X = scr.view(pv.dtype)[:ne]
    if pc >= 0:
        Dx = _row_scratch(scr, cap, 4, pv)
        expected = _shift_classes(pv, a0, pc, r0, r1, status, X, M, Dx)
    else:
        expected = _shift_rows(pv, po, a0, r0, r1, status, M, X)
    for j in range(r1 - r0):
        a, _ = _span(po, pc, r0 + j)
        R[j] = _row_shift(St[j], M[j]) - float(pv[a + Y[j]]) if St[j] == OK else 0.0
        T[j] = 1.0
    if pc >= 0:
        _exp_classes(X, Dx, pc, r0, r1, S, pv, M, status, expected)
    else:
        _exp_rest(pv[a0:a1], X, a0, po, pc, r0, r1, S, pv, M, status, expected)
    _finish_rows(out, status, r0, r1, S, R, T, prm, True, masked)


@njit(**_jit)
def _bce_index(pv, po, pc, y, prm, out, status, r0, r1, scr, a0, a1):
    """BCE against index labels, rows ``r0:r1`` whose label statuses are set: the one-hot
    targets spelled out after the terms (in the input's precision; runs are cut so that twice
    their values fit the scratch), then one vectorised pass that also checks the values: from
    logits f(x, t) = t max(-x, 0) + (1-t) max(x, 0) + log1p(e^-|x|), from probabilities
    -log p or -log(1 - p)."""
    ne = a1 - a0
    cap = scr.shape[0] - _NROW
    if 2 * ne > cap:  # cannot happen (see _scratch and _narrow_run_end); the row functions if it did
        _rows_one_by_one_index(pv, po, pc, y, prm, out, status, r0, r1)
        return
    S = scr[cap : cap + _MAX_ROWS]
    V = pv[a0:a1]
    El = scr.view(pv.dtype)[:ne]
    Y = scr.view(pv.dtype)[ne : 2 * ne]
    zero, one = V.dtype.type(0.0), V.dtype.type(1.0)
    for k in range(ne):
        Y[k] = zero
    for i in range(r0, r1):
        a, n = _span(po, pc, i)
        if status[i] == OK:
            Y[a + y[i] - a0] = one
    masked = False
    if prm.from_logits:
        bad, masked, _ = _logit_terms(V, Y, El)
        flat_ok = not bad
    else:
        flat_ok, _ = _bce_hard_terms(V, Y, El, prm)
    if not flat_ok:
        _pred_statuses(pv, po, pc, status, r0, r1, prm.from_logits)
    _rsum_terms(El, Y, a0, po, pc, r0, r1, S)  # (Y is free again)
    _bce_rows(out, status, po, pc, r0, r1, S, prm, masked)


@njit(**_jit)
def _rows_one_by_one_dense(pv, po, pc, tv, to, tc, prm, out, status, r0, r1):
    for i in range(r0, r1):
        a, n = _span(po, pc, i)
        b, k = _span(to, tc, i)
        v, s = _fast_dense_row(pv, a, n, tv, b, k, prm)
        out[i] = v
        status[i] = s


@njit(**_jit)
def _bce_dense(pv, po, pc, tv, prm, out, status, r0, r1, scr, a0, a1, b0):
    """BCE, rows ``r0:r1`` of a block against their dense targets ``tv[b0:]`` (aligned with
    ``pv[a0:a1]``): the terms and the block's checks in one pass (the value checks, and whether
    every target is 0 or 1, the usual multi-hot), then the statuses, the row sums, the finish.
    From probabilities, a block whose first target is not 0 or 1 (soft targets) skips the
    0/1 terms and takes the soft ones; so does a block that turns out not all 0/1."""
    ne = a1 - a0
    d = b0 - a0
    cap = scr.shape[0] - _NROW
    S = scr[cap : cap + _MAX_ROWS]
    V = pv[a0:a1]
    Tb = tv[b0 : b0 + ne]
    El = scr.view(pv.dtype)[:ne]  # the terms in the input's precision (see the overloads)
    masked = False
    if prm.from_logits:
        bad, masked, hard = _logit_terms(V, Tb, El)
        flat_ok = not bad
    elif ne > 0 and _hard(Tb[0], True):
        flat_ok, hard = _bce_hard_terms(V, Tb, El, prm)
    else:
        flat_ok, _ = _flat_pred_ok(pv, a0, a1, False)
        hard = False
    St = status[r0:r1]  # a view indexed from 0: no wraparound, the loop vectorises
    for j in range(r1 - r0):
        _, n = _span(po, pc, r0 + j)
        St[j] = EMPTY_ROW if n == 0 else OK
    if not hard and _flat_target_bad(Tb, True):  # find the rows with an invalid target value
        for i in range(r0, r1):
            a, n = _span(po, pc, i)
            if status[i] != EMPTY_ROW:
                s, _ = _bce_target_status(tv, a + d, n)
                status[i] = s
    if not flat_ok:
        _pred_statuses(pv, po, pc, status, r0, r1, prm.from_logits)
    if prm.from_logits or hard:
        _rsum_terms(El, scr.view(pv.dtype)[ne : 2 * ne], a0, po, pc, r0, r1, S)
    else:
        E = scr[:ne]
        for k in range(ne):
            E[k] = _bce_soft(float(V[k]), float(Tb[k]), prm.lo, prm.hi, prm.logmin)
        _rsum(E, -a0, po, pc, r0, r1, S)
    _bce_rows(out, status, po, pc, r0, r1, S, prm, masked)


@njit(**_jit)
def _run_dense(pv, po, pc, tv, to, tc, prm, out, status, r0, r1, scr):
    """Score rows ``r0:r1`` (at most ``_MAX_ROWS``) against dense targets, vectorised across them."""
    a0, a1 = _block_span(po, pc, r0, r1)
    b0, b1 = _block_span(to, tc, r0, r1)
    ne = a1 - a0
    cap = scr.shape[0] - _NROW
    need = ne if prm.bce or not prm.from_logits else 2 * ne
    aligned = need <= cap and b1 - b0 == ne
    if aligned and (pc < 0 or tc < 0):  # equal totals do not mean equal rows (issue 11)
        for i in range(r0, r1):
            _, n = _span(po, pc, i)
            _, k = _span(to, tc, i)
            aligned &= n == k
    if not aligned:  # some row's target length differs, or the rows are too wide
        _rows_one_by_one_dense(pv, po, pc, tv, to, tc, prm, out, status, r0, r1)
        return
    if prm.bce:
        _bce_dense(pv, po, pc, tv, prm, out, status, r0, r1, scr, a0, a1, b0)
        return
    d = b0 - a0  # target index = pred index + d, for the whole block
    S = scr[cap : cap + _MAX_ROWS]
    R = scr[cap + _MAX_ROWS : cap + 2 * _MAX_ROWS]
    T = scr[cap + 2 * _MAX_ROWS : cap + 3 * _MAX_ROWS]
    E = scr[:ne]
    Tb = tv[b0:b1]
    bad_t = _flat_target_bad(Tb, False)
    _rsum(tv, d, po, pc, r0, r1, T)
    St = status[r0:r1]  # a view indexed from 0: no wraparound, the loop vectorises
    for j in range(r1 - r0):
        _, n = _span(po, pc, r0 + j)
        s = TARGET_SUM if abs(T[j] - 1.0) > _SUM_ATOL else OK
        St[j] = EMPTY_ROW if n == 0 else s
    if bad_t:  # find the rows with an invalid target value
        for i in range(r0, r1):
            a, n = _span(po, pc, i)
            if status[i] != EMPTY_ROW:
                status[i] = _cce_target_status(tv, a + d, n)
    flat_ok, masked = _flat_pred_ok(pv, a0, a1, prm.from_logits)
    if not flat_ok:
        _pred_statuses(pv, po, pc, status, r0, r1, prm.from_logits)
    V = pv[a0:a1]
    if not prm.from_logits:  # CCE: sum_c t_c (-log p_c) over t_c != 0
        for k in range(ne):
            tk = float(Tb[k])
            lp = _clog(float(V[k]), prm.lo, prm.hi, prm.logmin)
            E[k] = -(tk * lp) if tk != 0.0 else 0.0
        _rsum(E, -a0, po, pc, r0, r1, S)
        _finish_rows(out, status, r0, r1, S, S, T, prm, False, False)
        return
    # CCE from logits: sum_c t_c (lse - x_c) = T log sum_c exp(d_c) - sum_c t_c d_c, d = x - m.
    # X holds each value's row shift m, then exp(x - m); the products t d go to the scratch after it.
    if pc == 2:  # two classes: one pass across the rows (see _pair_dense)
        _pair_dense(V, Tb, status, r0, r1, S, R)
        _finish_rows(out, status, r0, r1, S, R, T, prm, True, masked)
        return
    M = scr[cap + 3 * _MAX_ROWS : cap + 4 * _MAX_ROWS]
    X = scr.view(pv.dtype)[:ne]  # the logits or their shifts, then the exp terms
    if pc >= 0:  # class-major (see _shift_classes)
        Dx = _row_scratch(scr, cap, 4, pv)
        expected = _shift_classes(pv, a0, pc, r0, r1, status, X, M, Dx)
        Tt = scr.view(tv.dtype)[ne * (8 // tv.itemsize) : ne * (8 // tv.itemsize) + ne]  # after X
        _neg_dot_classes(Tb, pc, r1 - r0, X, Dx, Tt, R)
        _exp_classes(X, Dx, pc, r0, r1, S, pv, M, status, expected)
        _finish_rows(out, status, r0, r1, S, R, T, prm, True, masked)
        return
    F = scr[ne : 2 * ne]  # the products t d, in float64 (d = x - m is exact there)
    expected = _shift_rows(pv, po, a0, r0, r1, status, M, X)
    for k in range(ne):
        tk = np.float64(Tb[k])  # (np.float64: Numba's float() of a float32 stays float32)
        F[k] = tk * (np.float64(V[k]) - np.float64(X[k])) if tk != 0.0 else 0.0
    _rsum(F, -a0, po, pc, r0, r1, R)
    for j in range(r1 - r0):
        R[j] = -R[j]
    _exp_rest(V, X, a0, po, pc, r0, r1, S, pv, M, status, expected)
    _finish_rows(out, status, r0, r1, S, R, T, prm, True, masked)


# ---- a row's path depends on its own length only ------------------------------------------
#
# A row of at most ``_NARROW`` classes is scored by the block arithmetic above, a wider row by
# its row function (``cpu_rows``): the two sum in different orders, so which one scores a row
# must not depend on its neighbours (results are bit-identical whatever the batch split or
# thread count). A ragged block is cut into runs of consecutive narrow rows that fit the
# scratch (a run's per-row sums do not depend on where it starts), with the wide rows between.


@njit(**_jit)
def _narrow_run_end(po, pc, i, r1, cap, limit):
    """The end of the run of rows of at most ``limit`` classes starting at ``i`` whose values
    (twice) fit ``cap``."""
    if pc >= 0:
        return r1
    tot = 0
    j = i
    while j < r1:
        _, n = _span(po, pc, j)
        if n > limit or 2 * (tot + n) > cap:
            break
        tot += n
        j += 1
    return j


@njit(**_jit)
def _n_invalid(status, r0, r1):
    """How many of rows ``r0:r1`` are invalid (status > IGNORED): counted while the block's
    statuses are in the cache, so that the caller need not scan them again."""
    St = status[r0:r1]
    k = 0
    for j in range(r1 - r0):
        k += St[j] > IGNORED
    return k


@njit(**_jit)
def _block_index(pv, po, pc, y, prm, out, status, r0, r1, scr):
    """Rows ``r0:r1`` against index labels: runs of narrow rows in blocks, wide rows alone;
    returns how many are invalid."""
    cap = scr.shape[0] - _NROW
    i = r0
    while i < r1:
        j = _narrow_run_end(po, pc, i, r1, cap, _NARROW)
        if j > i:
            _run_index(pv, po, pc, y, prm, out, status, i, j, scr)
            i = j
        else:
            _rows_one_by_one_index(pv, po, pc, y, prm, out, status, i, i + 1)
            i += 1
    return _n_invalid(status, r0, r1)


@njit(**_jit)
def _block_dense(pv, po, pc, tv, to, tc, prm, out, status, r0, r1, scr):
    """Rows ``r0:r1`` against dense targets: runs of narrow rows in blocks, wide rows alone;
    returns how many are invalid."""
    cap = scr.shape[0] - _NROW
    i = r0
    while i < r1:
        j = _narrow_run_end(po, pc, i, r1, cap, _NARROW)
        if j > i:
            _run_dense(pv, po, pc, tv, to, tc, prm, out, status, i, j, scr)
            i = j
        else:
            _rows_one_by_one_dense(pv, po, pc, tv, to, tc, prm, out, status, i, i + 1)
            i += 1
    return _n_invalid(status, r0, r1)


def _chunks(n_blocks):
    return max(1, min(n_blocks, 4 * numba.get_num_threads()))


def _rows_per_block(n_rows, width, gather=False):
    """Rows per block for rows of ``width`` classes (< 0: ragged). Dense rows: ``_BLOCK``, or
    more rows of fewer classes up to ``_BLOCK_VALUES`` values (at C = 2 the per-block work
    outweighs the rows' at 256 rows; 1,024 rows spread it thinner, in every mode), and
    ``_MAX_ROWS`` for CCE from probabilities + index labels (``gather``: no per-row scratch but
    the gathered ``p_y``). Ragged rows: ``_BLOCK``, or fewer rows per block for a short batch,
    so that every thread gets blocks when its rows are wide. A block's boundaries never change
    a row's loss."""
    if width >= 0:
        return _MAX_ROWS if gather else max(_BLOCK, min(_MAX_ROWS, _BLOCK_VALUES // max(width, 1)))
    return max(1, min(_BLOCK, -(-n_rows // (4 * numba.get_num_threads()))))


def _scratch(n_rows, n_values, ragged=False, blk=_BLOCK):
    """Caller-allocated scratch for the narrow kernels: one row per chunk of blocks."""
    n_blocks = (n_rows + blk - 1) // blk
    per_block = -(-n_values // max(n_blocks, 1))
    # ragged rows: room for any run of narrow rows (twice its values: CCE from dense logits)
    run = 2 * min(n_rows, _BLOCK) * _NARROW if ragged else 1
    cap = min(max(4 * per_block, run), 4 * _BLOCK * _NARROW)
    return np.empty((_chunks(n_blocks), cap + _NROW))


@njit(**_pjit)
def _narrow_index(pv, po, pc, y, prm, out, status, scr, blk=_BLOCK):
    """Blocks of ``blk`` rows against index labels (see ``_block_index``; ``_rows_per_block``);
    returns how many rows are invalid."""
    n = y.shape[0]
    nblk = (n + blk - 1) // blk
    nch = scr.shape[0]
    n_bad = 0
    for j in prange(nch):
        for b in range(j * nblk // nch, (j + 1) * nblk // nch):
            n_bad += _block_index(pv, po, pc, y, prm, out, status, b * blk, min(n, (b + 1) * blk), scr[j])
    return n_bad


@njit(**_pjit)
def _narrow_dense(pv, po, pc, tv, to, tc, prm, out, status, scr, blk=_BLOCK):
    """Blocks of ``blk`` (<= ``_MAX_ROWS``) rows against dense targets (see ``_block_dense``);
    returns how many rows are invalid."""
    n = out.shape[0]
    nblk = (n + blk - 1) // blk
    nch = scr.shape[0]
    n_bad = 0
    for j in prange(nch):
        for b in range(j * nblk // nch, (j + 1) * nblk // nch):
            n_bad += _block_dense(pv, po, pc, tv, to, tc, prm, out, status, b * blk, min(n, (b + 1) * blk), scr[j])
    return n_bad
