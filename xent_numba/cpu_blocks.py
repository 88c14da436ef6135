"""CPU narrow-row kernels: blocks of rows scored as one flat run of values (the speed
machinery for few classes per row; the formulas themselves are in ``cpu_rows.py``).

Every kernel writes one loss and one status per row, with the numbers of the row
functions; for float32 inputs the BCE-from-logits terms are computed in float32 (kept in a
float32 view of the scratch) and summed per row in float64.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from . import _fastmath as fm
from .cpu_rows import (
    _INF,
    _NAN,
    _SUM_ATOL,
    _bce_finish,
    _bce_hard,
    _bce_soft,
    _bce_target_status,
    _cce_target_status,
    _clip,
    _clog,
    _fast_dense_row,
    _fast_index_row,
    _ijit,
    _jit,
    _logit_ok,
    _max,
    _pjit,
    _prob_status,
    _softplus_term,
    _span,
)
from .losses import (
    EMPTY_ROW,
    IGNORED,
    LABEL_RANGE,
    OK,
    PRED_NONFINITE,
    TARGET_MASKED,
    TARGET_SUM,
)

# ---- narrow rows (few classes): work on blocks of rows, vectorised across the block ---------
#
# With C = 10 the loop over one row's classes is shorter than a vector, so it runs scalar.
# Instead a block of ``_BLOCK`` rows is scored as one flat run of values: the per-element
# terms go to a float64 scratch ``E`` in one vectorised loop, per-row sums follow (for a
# dense (N, C) layout as C strided passes across the rows, which vectorise), and the last
# per-row ``log`` runs vectorised across the rows. Value checks are one flat branch-free
# pass per block, per row only when it fails. For float32 inputs the costly elementwise
# terms (BCE from logits) are computed in float32 and summed in float64.
#
# The scratch is allocated by the caller (``_scratch``): one row per chunk of blocks, and
# the kernels allocate nothing.

_BLOCK = 256
_NARROW = 64  # classes per row up to which rows are scored in blocks, in every mode (measured:
# CCE from logits at 2M-10M rows, float32, blocks against the row functions: C = 32 0.49x,
# C = 48 0.52x, C = 64 0.78x the time; at C = 128 even)
_GATHER_BLOCK = 4 * _BLOCK  # rows per block of CCE from probabilities + index labels (_rows_per_block)
_NROW = 5 * _BLOCK  # per-row scratch: S, R, T, M and the shifts in the input's dtype


@njit(**_ijit)
def _u(i):
    """An index as unsigned: Numba then skips the negative-index wraparound (which keeps
    loops from vectorising). Only for indices known to be >= 0."""
    return np.uint64(i)


@njit(**_ijit)
def _row_scratch(scr, cap, i, like):
    """Per-row scratch slot ``i`` (of ``_NROW // _BLOCK``) as an array of ``like``'s dtype."""
    k = 8 // like.itemsize
    return scr.view(like.dtype)[(cap + i * _BLOCK) * k : (cap + (i + 1) * _BLOCK) * k]


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
def _flat_pred_ok(v, a0, a1, from_logits):
    """``(ok, masked)`` over ``v[a0:a1]`` in one vectorised pass: every value is a valid
    prediction; some logit is ``-inf`` (a masked class: the rows then take the slower
    finish that can flag ``TARGET_MASKED``)."""
    bad = False
    masked = False
    V = v[a0:a1]  # a view indexed from 0: no negative-index wraparound, so the loop vectorises
    if from_logits:  # NaN or +inf (-inf masks a class)
        inf = V.dtype.type(_INF)
        for k in range(V.shape[0]):
            x = V[k]  # compared in its own dtype: all lanes
            bad |= (x != x) | (x == inf)
            masked |= x == -inf
    else:
        for k in range(V.shape[0]):
            x = V[k]
            bad |= (x < 0.0) | (x > 1.0) | (x != x)
    return not bad, masked


@njit(**_jit)
def _row_pred_status(v, a, n, from_logits):
    if from_logits:
        ok = True
        for c in range(a, a + n):
            ok &= _logit_ok(float(v[c]))
        return OK if ok else PRED_NONFINITE
    return _prob_status(v, a, n)


@njit(**_jit)
def _rsum(X, shift, po, pc, r0, r1, S):
    """``S_j = sum of X[a_i + shift : a_i + n_i + shift]`` for rows ``i = r0 + j``, added in
    class order in both layouts (so a row's sum does not depend on its layout: ``cpu.run``
    scores ragged rows of one length as dense ones).

    Dense rows: C strided passes across the block (vectorised across rows)."""
    nb = r1 - r0
    if pc >= 0:
        base = r0 * pc + shift
        for j in range(nb):
            S[j] = 0.0
        for c in range(pc):
            for j in range(nb):
                S[j] += float(X[_u(base + j * pc + c)])
        return
    for i in range(r0, r1):  # in class order, kept (fm.add): the bits of the dense layout's sums
        a, n = _span(po, pc, i)
        s = 0.0
        for c in range(a + shift, a + n + shift):
            s = fm.add(s, float(X[_u(c)]))
        S[i - r0] = s


@njit(**_jit)
def _rmax(v, po, pc, r0, r1, M):
    """``M_j = max of row r0 + j`` (-inf for an empty row); dense rows: strided passes."""
    nb = r1 - r0
    for j in range(nb):
        M[j] = -_INF
    if pc >= 0:
        base = r0 * pc
        for c in range(pc):
            for j in range(nb):
                x = float(v[_u(base + j * pc + c)])
                M[j] = x if x > M[j] else M[j]
        return
    for i in range(r0, r1):
        a, n = _span(po, pc, i)
        m = -_INF
        for c in range(a, a + n):
            x = float(v[_u(c)])
            m = x if x > m else m
        M[i - r0] = m


@njit(**_ijit)
def _row_shift(s, m):
    """The ``m`` subtracted from a row's logits: its max for a scored row, 0 for a row whose
    classes are all masked (every ``x - m`` is then ``-inf``), NaN for an invalid row (no
    ``x - m`` is then 0, so ``_exp_rest`` counts the maxima of scored rows only)."""
    if s != OK:
        return _NAN
    return m if m > -_INF else 0.0


@njit(**_jit)
def _shift_rows(v, po, pc, a0, r0, r1, status, M, X, D):
    """Row maxima into ``M`` and, for each of the block's values, its row's shift ``m`` (from
    ``_row_shift``; per row in ``D`` for dense rows) into ``X``, in the input's dtype (which
    holds ``m`` exactly: a logit, 0 or NaN); returns how many rows have a max to leave out of
    ``_exp_rest``'s sum. Dense rows: C strided passes across the rows (vectorised; a loop
    over a row's few classes is not)."""
    _rmax(v, po, pc, r0, r1, M)
    expected = 0.0
    if pc >= 0:
        nb = r1 - r0
        for j in range(nb):
            m = _row_shift(status[r0 + j], M[j])
            expected += 1.0 if m == M[j] else 0.0
            D[j] = m
        for c in range(pc):
            for j in range(nb):
                X[_u(j * pc + c)] = D[j]
        return expected
    for i in range(r0, r1):
        a, n = _span(po, pc, i)
        j = i - r0
        m = _row_shift(status[i], M[j])
        expected += 1.0 if m == M[j] else 0.0
        for c in range(a, a + n):
            X[_u(c - a0)] = m
    return expected


def _exp_sub(x, m):
    """``e^(x - m)``, in the precision of ``x`` (see the overload)."""


@overload(_exp_sub, inline="always", jit_options=_jit)
def _exp_sub_impl(x, m):
    """Float32 logits: ``_fastmath.exp32_sub`` (8 lanes, ``x - m`` taken exactly, within a
    few float32 ulp); float64: ``_fastmath.exp`` of the float64 difference."""
    if x == types.float32:
        return lambda x, m: fm.exp32_sub(x, m)
    return lambda x, m: fm.exp(x - m)


@njit(**_jit)
def _exp_rest(V, X, a0, po, pc, r0, r1, S, v, M, status, expected):
    """From the block's logits ``V`` and their rows' shifts ``X`` (``_shift_rows``):
    ``S_j = sum exp(x - m)`` over every class but one row max, i.e. the sum without one
    ``e^0 = 1`` (which ``log1p`` adds back: see ``cpu_rows._lse``); ``X`` is overwritten with
    the terms. One flat vectorised pass zeroes the maxima (``x = m``) and counts them; only a
    block whose count differs from ``expected`` (one per scored row) has ties, and only there
    are the other maxima added back row by row (a per-row arg max in the hot loop would cost
    a dependent select per value)."""
    zero, one = X.dtype.type(0.0), X.dtype.type(1.0)
    nz = zero  # counted in the input's dtype (exact: at most _BLOCK * _NARROW), all lanes
    for k in range(X.shape[0]):
        x, m = V[k], X[k]
        nz += one if x == m else zero
        X[k] = _exp_sub(x, m) if x < m else zero
    _rsum(X, -a0, po, pc, r0, r1, S)
    if nz != expected:
        _add_tied_maxima(v, po, pc, r0, r1, S, M, status)


@njit(**_jit)
def _add_tied_maxima(v, po, pc, r0, r1, S, M, status):
    """A block with tied row maxima: each row's other maxima count ``e^0 = 1`` each in ``S``."""
    for i in range(r0, r1):
        j = i - r0
        if (status[i] == OK) & (M[j] > -_INF):
            a, n = _span(po, pc, i)
            cnt = 0.0
            for c in range(a, a + n):
                cnt += 1.0 if float(v[c]) == M[j] else 0.0
            S[j] += cnt - 1.0


@njit(**_jit)
def _shift_classes(v, a0, pc, r0, r1, status, X, M, Dx):
    """Dense rows of ``pc`` logits: the block class-major, ``X[c nb + j] = x[r0 + j, c]`` (one
    strided pass; every later pass runs contiguously across the rows), row maxima into ``M``
    and the rows' shifts (``_row_shift``) into ``Dx``, in the input's dtype; returns how many
    rows have a max to leave out of ``_exp_classes``'s sum."""
    nb = r1 - r0
    for c in range(pc):
        for j in range(nb):
            X[_u(c * nb + j)] = v[_u(a0 + j * pc + c)]
    lo = X.dtype.type(-_INF)
    for j in range(nb):  # the maxima in the input's dtype (all lanes), then M in float64
        Dx[j] = lo
    for c in range(pc):
        Xc = X[c * nb : (c + 1) * nb]
        for j in range(nb):
            x = Xc[j]
            Dx[j] = x if x > Dx[j] else Dx[j]
    expected = 0.0
    for j in range(nb):
        M[j] = Dx[j]
        m = _row_shift(status[r0 + j], M[j])
        expected += 1.0 if m == M[j] else 0.0
        Dx[j] = m
    return expected


@njit(**_jit)
def _exp_classes(X, Dx, pc, r0, r1, S, v, M, status, expected):
    """``_exp_rest`` on the class-major block of ``_shift_classes``: ``S_j = sum exp(x - m)``
    over every class but one row max, summed per row in class order (the same operations,
    so the same bits, as ``_shift_rows`` + ``_exp_rest`` on the rows)."""
    nb = r1 - r0
    zero, one = X.dtype.type(0.0), X.dtype.type(1.0)
    nz = zero  # counted in the input's dtype (exact: at most _BLOCK * _NARROW), all lanes
    for c in range(pc):
        Xc = X[c * nb : (c + 1) * nb]
        for j in range(nb):
            x, m = Xc[j], Dx[j]
            nz += one if x == m else zero
            Xc[j] = _exp_sub(x, m) if x < m else zero
    for j in range(nb):
        S[j] = 0.0
    for c in range(pc):
        Xc = X[c * nb : (c + 1) * nb]
        for j in range(nb):
            S[j] += float(Xc[j])
    if nz != expected:
        _add_tied_maxima(v, _NO_PO, pc, r0, r1, S, M, status)


_NO_PO = np.zeros(1, dtype=np.int64)


@njit(**_ijit)
def _pair_exp(lo, sh):
    """``e^(lo - sh)`` in ``lo``'s precision (``_exp_sub``, as ``_exp_rest``) for ``lo`` below
    the row's shift ``sh`` (in the same dtype: it holds a logit, 0 or NaN exactly), 1 at it (a
    tie), else 0 (both classes masked, or an invalid row's NaN shift); as float64."""
    return float(_exp_sub(lo, sh)) if lo < sh else (1.0 if lo == sh else 0.0)


@njit(**_jit)
def _pair_rest(v, y, status, r0, r1, S, R, T):
    """CCE from logits, dense rows of two classes: ``R = m - x_y`` and ``S = e^(lo - m)``
    (``lo`` the other logit; 1 for a tie, 0 when both are masked), in one pass across the
    rows. The same operations on the same values as ``_shift_rows`` + ``_exp_rest``, so the
    same bits, without their passes over the classes (which cost more than the values at C = 2)."""
    for i in range(r0, r1):
        j = i - r0
        s = status[i]
        v0, v1 = v[_u(2 * i)], v[_u(2 * i + 1)]
        x0, x1 = float(v0), float(v1)
        m = x0 if x0 > x1 else x1
        lo = v1 if x0 > x1 else v0
        sh = _row_shift(s, m)
        xy = x1 if y[i] == 1 else x0
        R[j] = sh - xy if s == OK else 0.0
        S[j] = _pair_exp(lo, v.dtype.type(sh))
        T[j] = 1.0


@njit(**_jit)
def _pair_dense(V, Tb, status, r0, r1, S, R):
    """CCE from logits against dense targets, rows of two classes (``V``, ``Tb``: the block's
    values from 0): ``R = -sum_c t_c (x_c - m)`` (terms with ``t_c = 0`` left out) and ``S`` as
    in ``_pair_rest``; the same operations as ``_shift_rows`` + ``_rsum`` + ``_exp_rest``."""
    for j in range(r1 - r0):
        s = status[r0 + j]
        v0, v1 = V[_u(2 * j)], V[_u(2 * j + 1)]
        x0, x1 = float(v0), float(v1)
        t0 = float(Tb[_u(2 * j)])
        t1 = float(Tb[_u(2 * j + 1)])
        m = x0 if x0 > x1 else x1
        lo = v1 if x0 > x1 else v0
        sh = _row_shift(s, m)
        r = 0.0
        r += t0 * (x0 - sh) if t0 != 0.0 else 0.0
        r += t1 * (x1 - sh) if t1 != 0.0 else 0.0
        R[j] = -r
        S[j] = _pair_exp(lo, V.dtype.type(sh))


@njit(**_jit)
def _finish_rows(out, status, r0, r1, S, R, T, prm, log_s, masked):
    """``out_i = (R_i + T_i log1p(S_i)) * scale`` (or ``S_i`` without the log) for OK rows,
    inf for a masked true class (only where the block has a ``-inf`` logit), else NaN."""
    if masked:
        for i in range(r0, r1):
            j = i - r0
            v = fm.add(R[j], T[j] * fm.log1p(S[j])) if log_s else S[j]
            _put(out, status, i, v * prm.scale, log_s)
        return
    O, St = out[r0:r1], status[r0:r1]  # views indexed from 0: no wraparound, the loop vectorises
    for j in range(r1 - r0):
        v = fm.add(R[j], T[j] * fm.log1p(S[j])) if log_s else S[j]
        O[j] = v * prm.scale if St[j] == OK else _NAN


@njit(**_ijit)
def _put(out, status, i, v, logits):
    """Write row ``i``: ``v`` when OK; from logits an infinite ``v`` is a masked true class."""
    s = status[i]
    masked = logits & (s == OK) & (v == _INF)
    s = TARGET_MASKED if masked else s
    status[i] = s  # stored unconditionally, so the loop around stays branch-free (vectorised)
    out[i] = v if s == OK else (_INF if s == TARGET_MASKED else _NAN)


@njit(**_jit)
def _bce_rows(out, status, po, pc, r0, r1, S, prm, masked):
    if masked:
        for i in range(r0, r1):
            _, n = _span(po, pc, i)
            _put(out, status, i, _bce_finish(S[i - r0], n, prm), prm.from_logits)
        return
    O, St = out[r0:r1], status[r0:r1]  # views indexed from 0: no wraparound, the loop vectorises
    for j in range(r1 - r0):
        _, n = _span(po, pc, r0 + j)
        v = _bce_finish(S[j], n, prm)
        O[j] = v if St[j] == OK else _NAN


_ZERO32, _ONE32 = np.float32(0.0), np.float32(1.0)


@njit(**_ijit)
def _softplus32(x, t):
    """``_softplus_term`` in float32, for a float32 logit and target (``_logit_terms``); a
    ``-inf`` logit (masked) gives 0, or inf where ``t > 0``, as in float64."""
    lin = (t * _max(-x, _ZERO32) if t != _ZERO32 else _ZERO32) + (
        (_ONE32 - t) * _max(x, _ZERO32) if t != _ONE32 else _ZERO32)
    return lin + fm.log1pexp32(x)


def _logit_terms(V, T, E):
    """``E_k =`` BCE term of logit ``V_k`` against target ``T_k``; see the overload."""


@overload(_logit_terms, jit_options=_jit)
def _logit_terms_impl(V, T, E):
    """``_softplus_term`` in the input's precision: for float32 logits and targets that float32
    holds exactly (float32, 0/1 bytes) every operation is float32 (8 lanes where float64 has
    4; the block kernels keep these terms in a float32 view of the scratch and sum each row in
    float64). Each term is >= 0 and within a few float32 ulp. Float64 targets keep the linear
    part in float64 (a target of 1 - 1e-10 must not round to 1) and round the term once.
    (The loop is inside each implementation: an overload per element would not be inlined,
    and a call per element runs 7x slower.)"""
    tt = T.dtype
    if V.dtype == types.float32 and tt in (types.float32, types.uint8):

        def terms32(V, T, E):
            for k in range(V.shape[0]):
                E[k] = _softplus32(V[k], np.float32(T[k]))

        return terms32
    if V.dtype == types.float32:

        def terms32_t64(V, T, E):
            for k in range(V.shape[0]):
                E[k] = np.float32(_softplus_term(V[k], float(T[k])))

        return terms32_t64

    def terms64(V, T, E):
        for k in range(V.shape[0]):
            E[k] = _softplus_term(V[k], float(T[k]))

    return terms64


_TINY32 = float(np.finfo(np.float32).tiny)


@njit(**_ijit)
def _clip32_exact(prm):
    """float32 holds the clip bounds exactly, and a clipped ``p`` and ``1 - p`` are normal
    (``eps`` "auto", "keras"): clipping in float32 is the same clip, and ``log32`` applies.
    Decided per call (its options), never per row."""
    lo, hi = prm.lo, prm.hi
    exact = (float(np.float32(lo)) == lo) & (float(np.float32(hi)) == hi)
    return exact & (lo >= _TINY32) & (1.0 - hi >= _TINY32) & (prm.logmin == -_INF)


@njit(**_jit)
def _neglog_rows64(S, St, O, nb, prm):
    for j in range(nb):
        v = -_clog(S[j], prm.lo, prm.hi, prm.logmin) * prm.scale
        O[j] = v if St[j] == OK else _NAN


def _neglog_rows(S, St, O, nb, prm, pv):
    """``O_j = -log(clip(S_j)) * scale`` for OK rows, NaN for the others (see the overload)."""


@overload(_neglog_rows, inline="always", jit_options=_jit)
def _neglog_rows_impl(S, St, O, nb, prm, pv):
    """For float32 predictions whose clip bounds float32 holds exactly, with the lower one
    normal (``eps="auto"``, ``"keras"``): the clip in float32 is the same clip, and the ``log``
    is ``_fastmath.log32`` (within 1 float32 ulp, 2.4x faster). Otherwise the float64 ``log``.
    Which one runs depends on the call's options only, never on the rows."""
    if pv.dtype != types.float32:
        return lambda S, St, O, nb, prm, pv: _neglog_rows64(S, St, O, nb, prm)

    def maybe_log32(S, St, O, nb, prm, pv):
        if not _clip32_exact(prm):  # (which also means no floor on the log: logmin = -inf)
            _neglog_rows64(S, St, O, nb, prm)
            return
        lo, hi = np.float32(prm.lo), np.float32(prm.hi)
        for j in range(nb):
            p = _clip(np.float32(S[j]), lo, hi)  # exact: S holds float32 values
            v = -float(fm.log32(p)) * prm.scale
            O[j] = v if St[j] == OK else _NAN

    return maybe_log32


@njit(**_jit)
def _bce_hard_terms64(V, T, E, prm):
    for k in range(V.shape[0]):
        E[k] = _bce_hard(float(V[k]), T[k] != 0, prm.lo, prm.hi, prm.logmin)


def _bce_hard_terms(V, T, E, prm):
    """``E_k = -log p_k`` if ``T_k`` else ``-log(1 - p_k)``, clipped (BCE from probabilities
    against 0/1 targets); see the overload."""


@overload(_bce_hard_terms, jit_options=_jit)
def _bce_hard_terms_impl(V, T, E, prm):
    """Float32 probabilities whose clip is exact in float32 (``_clip32_exact``): float32 terms
    with ``log_or_log1m32`` (8 lanes, no division), kept in the float32 view of the scratch;
    otherwise ``_bce_hard`` in float64 (rounded once to ``E``'s dtype). The loop is inside."""

    if V.dtype != types.float32:
        return lambda V, T, E, prm: _bce_hard_terms64(V, T, E, prm)

    def terms(V, T, E, prm):
        if not _clip32_exact(prm):
            _bce_hard_terms64(V, T, E, prm)
            return
        lo, hi = np.float32(prm.lo), np.float32(prm.hi)
        for k in range(V.shape[0]):
            E[k] = -fm.log_or_log1m32(_clip(V[k], lo, hi), T[k] != 0)

    return terms


@njit(**_jit)
def _rows_one_by_one_index(pv, po, pc, y, prm, out, status, r0, r1):
    for i in range(r0, r1):
        a, n = _span(po, pc, i)
        v, s = _fast_index_row(pv, a, n, y[i], prm)
        out[i] = v
        status[i] = s


@njit(**_jit)
def _run_index(pv, po, pc, y, prm, out, status, r0, r1, scr):
    """Score rows ``r0:r1`` (at most ``_BLOCK``; ``_GATHER_BLOCK`` for CCE from probabilities)
    against index labels, vectorised across them."""
    a0, a1 = _block_span(po, pc, r0, r1)
    ne = a1 - a0
    cap = scr.shape[0] - _NROW
    if ne > cap:  # wider rows than the scratch holds
        _rows_one_by_one_index(pv, po, pc, y, prm, out, status, r0, r1)
        return
    flat_ok, masked = _flat_pred_ok(pv, a0, a1, prm.from_logits)
    ign = prm.has_ignore and not prm.bce
    Y, St = y[r0:r1], status[r0:r1]  # views indexed from 0: no wraparound, the loops vectorise
    for j in range(r1 - r0):  # branch-free row checks
        _, n = _span(po, pc, r0 + j)
        yi = Y[j]
        s = OK
        s = LABEL_RANGE if (yi < 0) | (yi >= n) else s
        s = IGNORED if ign & (yi == prm.ignore_index) else s
        s = EMPTY_ROW if n == 0 else s
        St[j] = s
    if not flat_ok:
        for i in range(r0, r1):
            if status[i] == OK:
                a, n = _span(po, pc, i)
                status[i] = _row_pred_status(pv, a, n, prm.from_logits)
    if not prm.bce and not prm.from_logits:  # -log p_y: gather, then one vectorised log
        O = out[r0:r1]
        S = scr.view(pv.dtype)[: r1 - r0]  # p_y in the input's precision (its bits); up to _GATHER_BLOCK
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
    S = scr[cap : cap + _BLOCK]
    R = scr[cap + _BLOCK : cap + 2 * _BLOCK]
    T = scr[cap + 2 * _BLOCK : cap + 3 * _BLOCK]
    if not prm.bce and pc == 2:  # two classes: the same sums, one row per step (see _pair_rest)
        _pair_rest(pv, y, status, r0, r1, S, R, T)
        _finish_rows(out, status, r0, r1, S, R, T, prm, True, masked)
        return
    if not prm.bce:  # CCE from logits: (m - x_y) + log1p(sum_{c != argmax} exp(x_c - m))
        M = scr[cap + 3 * _BLOCK : cap + 4 * _BLOCK]
        X = scr.view(pv.dtype)[:ne]
        if pc >= 0:
            Dx = _row_scratch(scr, cap, 4, pv)
            expected = _shift_classes(pv, a0, pc, r0, r1, status, X, M, Dx)
        else:
            expected = _shift_rows(pv, po, pc, a0, r0, r1, status, M, X, S)
        for j in range(r1 - r0):
            a, _ = _span(po, pc, r0 + j)
            R[j] = _row_shift(St[j], M[j]) - float(pv[a + Y[j]]) if St[j] == OK else 0.0
            T[j] = 1.0
        if pc >= 0:
            _exp_classes(X, Dx, pc, r0, r1, S, pv, M, status, expected)
        else:
            _exp_rest(pv[a0:a1], X, a0, po, pc, r0, r1, S, pv, M, status, expected)
        _finish_rows(out, status, r0, r1, S, R, T, prm, True, masked)
        return
    # BCE against index labels: the one-hot targets spelled out after the terms (in the input's
    # precision; runs are cut so that twice their values fit the scratch), then one vectorised
    # pass: from logits f(x, t) = t max(-x, 0) + (1-t) max(x, 0) + log1p(e^-|x|), from
    # probabilities -log p or -log(1 - p)
    if 2 * ne > cap:  # cannot happen (see _scratch and _narrow_run_end); the row functions if it did
        _rows_one_by_one_index(pv, po, pc, y, prm, out, status, r0, r1)
        return
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
    if prm.from_logits:
        _logit_terms(V, Y, El)
    else:
        _bce_hard_terms(V, Y, El, prm)
    _rsum(El, -a0, po, pc, r0, r1, S)
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
def _flat_target_flags(tv, b0, b1, bce):
    """``(bad, hard)`` over ``tv[b0:b1]``: some value invalid; every value 0 or 1."""
    bad = False
    hard = True
    T = tv[b0:b1]
    if bce:
        for k in range(T.shape[0]):
            t = T[k]
            bad |= (t < 0.0) | (t > 1.0) | (t != t)
            hard &= (t == 0.0) | (t == 1.0)
    else:
        for k in range(T.shape[0]):
            t = float(T[k])
            bad |= not ((t >= 0.0) & (t < _INF))
    return bad, hard


@njit(**_jit)
def _run_dense(pv, po, pc, tv, to, tc, prm, out, status, r0, r1, scr):
    """Score rows ``r0:r1`` (at most ``_BLOCK``) against dense targets, vectorised across them."""
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
    d = b0 - a0  # target index = pred index + d, for the whole block
    S = scr[cap : cap + _BLOCK]
    R = scr[cap + _BLOCK : cap + 2 * _BLOCK]
    T = scr[cap + 2 * _BLOCK : cap + 3 * _BLOCK]
    E = scr[:ne]
    bad_t, hard = _flat_target_flags(tv, b0, b1, prm.bce)
    if not prm.bce:
        _rsum(tv, d, po, pc, r0, r1, T)
    St = status[r0:r1]  # a view indexed from 0: no wraparound, the loop vectorises
    for j in range(r1 - r0):
        _, n = _span(po, pc, r0 + j)
        s = OK
        if not prm.bce:
            s = TARGET_SUM if abs(T[j] - 1.0) > _SUM_ATOL else s
        St[j] = EMPTY_ROW if n == 0 else s
    if bad_t:  # find the rows with an invalid target value
        for i in range(r0, r1):
            a, n = _span(po, pc, i)
            if status[i] != EMPTY_ROW:
                if prm.bce:
                    s, _ = _bce_target_status(tv, a + d, n)
                else:
                    s = _cce_target_status(tv, a + d, n)
                status[i] = s
    flat_ok, masked = _flat_pred_ok(pv, a0, a1, prm.from_logits)
    if not flat_ok:
        for i in range(r0, r1):
            if status[i] == OK:
                a, n = _span(po, pc, i)
                status[i] = _row_pred_status(pv, a, n, prm.from_logits)
    V = pv[a0:a1]
    Tb = tv[b0:b1]
    if prm.bce:
        if prm.from_logits or hard:  # the terms in the input's precision (see the overloads)
            El = scr.view(pv.dtype)[:ne]
            if prm.from_logits:
                _logit_terms(V, Tb, El)
            else:
                _bce_hard_terms(V, Tb, El, prm)
            _rsum(El, -a0, po, pc, r0, r1, S)
        else:
            for k in range(ne):
                E[k] = _bce_soft(float(V[k]), float(Tb[k]), prm.lo, prm.hi, prm.logmin)
            _rsum(E, -a0, po, pc, r0, r1, S)
        _bce_rows(out, status, po, pc, r0, r1, S, prm, masked)
        return
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
    M = scr[cap + 3 * _BLOCK : cap + 4 * _BLOCK]
    X = scr.view(pv.dtype)[:ne]  # the logits or their shifts, then the exp terms
    if pc >= 0:  # class-major (see _shift_classes)
        Dx = _row_scratch(scr, cap, 4, pv)
        expected = _shift_classes(pv, a0, pc, r0, r1, status, X, M, Dx)
        nb = r1 - r0
        for j in range(nb):
            R[j] = 0.0
        Tt = scr.view(tv.dtype)[ne * (8 // tv.itemsize) : ne * (8 // tv.itemsize) + ne]
        for c in range(pc):  # the targets class-major too (one strided pass)
            for j in range(nb):
                Tt[_u(c * nb + j)] = Tb[_u(j * pc + c)]
        for c in range(pc):  # R_j = -sum_c t_c d_c, in class order (as _rsum of the products)
            Xc, Tc = X[c * nb : (c + 1) * nb], Tt[c * nb : (c + 1) * nb]
            for j in range(nb):  # (np.float64: Numba's float() of a float32 stays float32)
                tk = np.float64(Tc[j])
                R[j] += tk * (np.float64(Xc[j]) - np.float64(Dx[j])) if tk != 0.0 else 0.0
        for j in range(nb):
            R[j] = -R[j]
        _exp_classes(X, Dx, pc, r0, r1, S, pv, M, status, expected)
        _finish_rows(out, status, r0, r1, S, R, T, prm, True, masked)
        return
    F = scr[ne : 2 * ne]  # the products t d, in float64 (d = x - m is exact there)
    expected = _shift_rows(pv, po, pc, a0, r0, r1, status, M, X, S)
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
def _block_index(pv, po, pc, y, prm, out, status, r0, r1, scr):
    """Rows ``r0:r1`` against index labels: runs of narrow rows in blocks, wide rows alone."""
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


@njit(**_jit)
def _block_dense(pv, po, pc, tv, to, tc, prm, out, status, r0, r1, scr):
    """Rows ``r0:r1`` against dense targets: runs of narrow rows in blocks, wide rows alone."""
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


def _chunks(n_blocks):
    return max(1, min(n_blocks, 4 * numba.get_num_threads()))


def _rows_per_block(n_rows, ragged, gather=False):
    """``_BLOCK``, or fewer rows per block for a short ragged batch, so that every thread gets
    blocks when its rows are wide (the blocks' boundaries never change a row's loss);
    ``_GATHER_BLOCK`` for dense rows whose only per-row work is a gather and a log (CCE from
    probabilities + index labels: no per-row scratch but the gathered ``p_y``)."""
    if not ragged:
        return _GATHER_BLOCK if gather else _BLOCK
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
    """Blocks of ``blk`` rows against index labels (see ``_block_index``; ``_rows_per_block``)."""
    n = y.shape[0]
    nblk = (n + blk - 1) // blk
    nch = scr.shape[0]
    for j in prange(nch):
        for b in range(j * nblk // nch, (j + 1) * nblk // nch):
            _block_index(pv, po, pc, y, prm, out, status, b * blk, min(n, (b + 1) * blk), scr[j])


@njit(**_pjit)
def _narrow_dense(pv, po, pc, tv, to, tc, prm, out, status, scr, blk=_BLOCK):
    """Blocks of ``blk`` (<= ``_BLOCK``) rows against dense targets (see ``_block_dense``)."""
    n = out.shape[0]
    nblk = (n + blk - 1) // blk
    nch = scr.shape[0]
    for j in prange(nch):
        for b in range(j * nblk // nch, (j + 1) * nblk // nch):
            _block_dense(pv, po, pc, tv, to, tc, prm, out, status, b * blk, min(n, (b + 1) * blk), scr[j])
