"""CPU narrow-row block arithmetic: what a block of rows computes, vectorised across the
block (value checks, per-row sums and maxima, the CCE-from-logits log-sum-exp pieces, the
BCE terms, the per-row finish). ``cpu_blocks.py`` decides which pieces a block runs and
drives the blocks; the row formulas themselves are in ``cpu_rows.py``.

For float32 inputs the costly elementwise terms are float32 (8 lanes), summed per row in
float64: the BCE-from-logits and BCE-from-probabilities terms (kept in a float32 view of the
scratch) and the CCE-from-logits ``e^(x - m)`` (``_fastmath.exp32_sub``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from ..losses import EMPTY_ROW, IGNORED, LABEL_RANGE, OK, PRED_NONFINITE, TARGET_MASKED
from . import fastmath as fm
from .cpu_rows import (
    _INF,
    _NAN,
    _bce_finish,
    _bce_hard,
    _clip,
    _clog,
    _ijit,
    _jit,
    _logit_ok,
    _max,
    _prob_status,
    _softplus_term,
    _span,
)


@njit(**_ijit)
def _u(i):
    """An index as unsigned: Numba then skips the negative-index wraparound (which keeps
    loops from vectorising). Only for indices known to be >= 0."""
    return np.uint64(i)


@njit(**_jit)
def _flat_pred_ok(v, a0, a1, from_logits):
    """``(ok, masked)`` over ``v[a0:a1]`` in one vectorised pass: every value is a valid
    prediction; some logit is ``-inf`` (a masked class: the rows then take the slower
    finish that can flag ``TARGET_MASKED``)."""
    V = v[a0:a1]  # a view indexed from 0: no negative-index wraparound, so the loop vectorises
    if from_logits:
        inf = V.dtype.type(_INF)
        bad = False
        masked = False
        for k in range(V.shape[0]):
            bad, masked = _logit_flags(V[k], inf, bad, masked)
        return not bad, masked
    return _all_in_unit(V) or _all_probabilities(V), False


@njit(**_ijit)
def _logit_flags(x, inf, bad, masked):
    """One logit's part of ``_flat_pred_ok``, compared in its own dtype (``inf`` in it: all
    lanes): NaN or +inf is bad; -inf masks a class."""
    return bad | (x != x) | (x == inf), masked | (x == -inf)


@njit(**_ijit)
def _hard(t, hard):
    """One BCE target's part of the test that a block's targets are all 0 or 1 (taken in the
    terms passes, ``_logit_terms`` and ``_bce_hard_terms``)."""
    return hard & ((t == 0.0) | (t == 1.0))


@njit(**_ijit)
def _is_prob(x):
    """``x`` is a valid probability: in ``[0, 1]``, ``-0.0`` included (NaN fails)."""
    return (x >= 0.0) & (x <= 1.0)


@njit(**_jit)
def _all_probabilities(V):
    """The exact check that every value of ``V`` is a probability (``_is_prob``), for a block
    whose bit check (``_all_in_unit``) failed."""
    ok = True
    for k in range(V.shape[0]):
        ok &= _is_prob(V[k])
    return ok


_ONE_BITS32, _ONE_BITS64 = np.uint32(0x3F800000), np.uint64(0x3FF0000000000000)  # 1.0's bits


def _all_in_unit(V):
    """Whether every value of the contiguous float array ``V`` is in ``[+0, 1]``, by its bits."""


@overload(_all_in_unit, jit_options=_jit)
def _all_in_unit_impl(V):
    """As unsigned integers, the floats in ``[+0, 1]`` are exactly the bit patterns ``<= bits(1.0)``
    (non-negative floats order as their bits; a sign bit, NaN or a value above 1 is greater), so
    one unsigned max answers, cheaper than three float compares per value. ``-0.0`` answers
    no: its block then takes the exact check, which accepts it."""
    u, one = (np.uint32, _ONE_BITS32) if V.dtype == types.float32 else (np.uint64, _ONE_BITS64)

    def impl(V):
        B = V.view(u)
        m = u(0)
        for k in range(B.shape[0]):
            b = B[k]
            m = b if b > m else m
        return m <= one

    return impl


@njit(**_jit)
def _row_pred_status(v, a, n, from_logits):
    if from_logits:
        ok = True
        for c in range(a, a + n):
            ok &= _logit_ok(float(v[c]))
        return OK if ok else PRED_NONFINITE
    return _prob_status(v, a, n)


@njit(**_jit)
def _pred_statuses(v, po, pc, status, r0, r1, from_logits):
    """A block whose flat check failed: each OK row's prediction status."""
    for i in range(r0, r1):
        if status[i] == OK:
            a, n = _span(po, pc, i)
            status[i] = _row_pred_status(v, a, n, from_logits)


@njit(**_jit)
def _rsum(X, shift, po, pc, r0, r1, S):
    """``S_j = sum of X[a_i + shift : a_i + n_i + shift]`` for rows ``i = r0 + j``, added in
    class order in both layouts (so a row's sum does not depend on its layout: ``cpu.run``
    scores ragged rows of one length as dense ones).

    Dense rows of fewer than 8 classes: C strided passes across the block (vectorised across
    the rows, a vector gather per class); of 8 or more, row by row: from 8 classes a row's
    contiguous sum costs less than C vector gathers, below 8 the gathers cost less."""
    nb = r1 - r0
    if 0 <= pc < 8:
        base = r0 * pc + shift
        for j in range(nb):
            S[j] = 0.0
        for c in range(pc):
            for j in range(nb):
                S[j] += float(X[_u(base + j * pc + c)])
        return
    for i in range(r0, r1):  # in class order, kept (fm.add): the bits of the strided sums
        a, n = _span(po, pc, i)
        s = 0.0
        for c in range(a + shift, a + n + shift):
            s = fm.add(s, float(X[_u(c)]))
        S[i - r0] = s


@njit(**_jit)
def _class_major(src, a, pc, nb, dst):
    """``dst[c nb + j] = src[a + j pc + c]``: ``nb`` rows of ``pc`` values from ``src[a:]``,
    copied class-major (one strided pass), so that later passes run contiguously across the
    rows."""
    for c in range(pc):
        for j in range(nb):
            dst[_u(c * nb + j)] = src[_u(a + j * pc + c)]


@njit(**_jit)
def _sum_classes(X, pc, nb, S):
    """``S_j = sum_c X[c nb + j]`` in float64 and in class order (the bits of ``_rsum`` on the
    rows), for a class-major block (``_class_major``): contiguous across the rows."""
    for j in range(nb):
        S[j] = 0.0
    for c in range(pc):
        Xc = X[c * nb : (c + 1) * nb]
        for j in range(nb):
            S[j] += float(Xc[j])


@njit(**_jit)
def _rsum_terms(El, Xt, a0, po, pc, r0, r1, S):
    """``_rsum`` of a block's terms ``El`` (from 0), with the same bits: for dense float32
    rows of 2 to 7 classes the terms are first copied class-major into ``Xt`` (one strided
    pass), then summed per row in class order contiguously across the rows (contiguous loads
    cost less than the strided sums' vector gathers there)."""
    if not (2 <= pc < 8 and El.itemsize == 4):
        _rsum(El, -a0, po, pc, r0, r1, S)
        return
    nb = r1 - r0
    _class_major(El, 0, pc, nb, Xt)
    _sum_classes(Xt, pc, nb, S)


@njit(**_jit)
def _rmax(v, po, r0, r1, M):
    """``M_j = max of ragged row r0 + j`` (-inf for an empty row)."""
    for i in range(r0, r1):
        a, n = _span(po, -1, i)
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
def _shift_rows(v, po, a0, r0, r1, status, M, X):
    """Ragged rows: row maxima into ``M`` and, for each of the block's values, its row's shift
    ``m`` (from ``_row_shift``) into ``X``, in the input's dtype (which holds ``m`` exactly: a
    logit, 0 or NaN); returns how many rows have a max to leave out of ``_exp_rest``'s sum.
    (Dense rows take the class-major ``_shift_classes``.)"""
    _rmax(v, po, r0, r1, M)
    expected = 0.0
    for i in range(r0, r1):
        a, n = _span(po, -1, i)
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
    nz = zero  # counted in the input's dtype (exact: a block has at most 16,384 values), all lanes
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
    _class_major(v, a0, pc, nb, X)
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
def _neg_dot_classes(Tb, pc, nb, X, Dx, Tt, R):
    """``R_j = -sum_c t_c (x_c - m_j)`` (terms with ``t_c = 0`` left out) for the class-major
    block ``X`` and shifts ``Dx`` of ``_shift_classes``, in float64 and in class order (the
    bits of the ragged rows' ``_rsum`` of the products); the targets ``Tb`` (row-major) are
    copied class-major into ``Tt`` first (one strided pass). ``np.float64``, not ``float()``:
    Numba's ``float()`` of a float32 stays float32, and ``x - m`` would round."""
    _class_major(Tb, 0, pc, nb, Tt)
    for j in range(nb):
        R[j] = 0.0
    for c in range(pc):
        Xc, Tc = X[c * nb : (c + 1) * nb], Tt[c * nb : (c + 1) * nb]
        for j in range(nb):
            tk = np.float64(Tc[j])
            R[j] += tk * (np.float64(Xc[j]) - np.float64(Dx[j])) if tk != 0.0 else 0.0
    for j in range(nb):
        R[j] = -R[j]


_NO_PO = np.zeros(1, dtype=np.int64)  # the offsets argument of dense rows (unused)


@njit(**_jit)
def _exp_classes(X, Dx, pc, r0, r1, S, v, M, status, expected):
    """``_exp_rest`` on the class-major block of ``_shift_classes``: ``S_j = sum exp(x - m)``
    over every class but one row max, summed per row in class order (the same operations,
    so the same bits, as ``_shift_rows`` + ``_exp_rest`` on the rows)."""
    nb = r1 - r0
    zero, one = X.dtype.type(0.0), X.dtype.type(1.0)
    nz = zero  # counted in the input's dtype (exact: a block has at most 16,384 values), all lanes
    for c in range(pc):
        Xc = X[c * nb : (c + 1) * nb]
        for j in range(nb):
            x, m = Xc[j], Dx[j]
            nz += one if x == m else zero
            Xc[j] = _exp_sub(x, m) if x < m else zero
    _sum_classes(X, pc, nb, S)
    if nz != expected:
        _add_tied_maxima(v, _NO_PO, pc, r0, r1, S, M, status)


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


@njit(**_ijit)
def _label_status(n, y, ign, ignore_index):
    """An index label's status in a block (``cpu_rows._index_status``'s rule, as selects so
    that the loops around it vectorise): ``EMPTY_ROW`` for a row of no classes, else
    ``IGNORED`` for the ignored label (``ign``), else ``LABEL_RANGE`` outside ``0..n-1``."""
    s = OK
    s = LABEL_RANGE if (y < 0) | (y >= n) else s
    s = IGNORED if ign & (y == ignore_index) else s
    return EMPTY_ROW if n == 0 else s


@njit(**_jit)
def _pick_pairs(v, y, status, r0, r1, S, ign, ignore_index):
    """CCE from probabilities, dense rows of two classes against index labels, in one pass
    across the rows: each row's label status, ``S_j = p_y`` (its bits; the other class for an
    invalid label, which the finish turns to NaN) and whether every value is a probability
    (as ``_flat_pred_ok``). Two classes make the gather a select between the row's two values
    (contiguous loads: no vector gather, which costs more than the row)."""
    ok = True
    V, Y, St = v[2 * r0 : 2 * r1], y[r0:r1], status[r0:r1]  # indexed from 0: the loop vectorises
    for j in range(r1 - r0):
        x0, x1 = V[_u(2 * j)], V[_u(2 * j + 1)]
        ok &= _is_prob(x0) & _is_prob(x1)
        yi = Y[j]
        St[j] = _label_status(2, yi, ign, ignore_index)
        S[j] = x1 if yi == 1 else x0
    return ok


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
    """``E_k =`` BCE term of logit ``V_k`` against target ``T_k``; returns the block's flags
    ``(bad, masked, hard)`` (``_flat_pred_ok``'s, and every target 0 or 1), taken in the same
    pass; see the overload."""


@overload(_logit_terms, jit_options=_jit)
def _logit_terms_impl(V, T, E):
    """``_softplus_term`` in the input's precision: for float32 logits and targets that float32
    holds exactly (float32, 0/1 bytes) every operation is float32 (8 lanes where float64 has
    4; the block kernels keep these terms in a float32 view of the scratch and sum each row in
    float64). Each term is >= 0 and within a few float32 ulp. Float64 targets keep the linear
    part in float64 (a target of 1 - 1e-10 must not round to 1) and round the term once.
    The block's value and 0/1 checks ride in the same loop: a few compares beside the
    ``log1p(exp)``, where a pass of their own would read the block again.
    (The loop is inside each implementation: an overload per element would not be inlined,
    and a call per element keeps the loop from vectorising.)"""
    tt = T.dtype
    if V.dtype == types.float32 and tt in (types.float32, types.uint8):

        def term(x, t):
            return _softplus32(x, np.float32(t))

    elif V.dtype == types.float32:

        def term(x, t):
            return np.float32(_softplus_term(x, float(t)))

    else:

        def term(x, t):
            return _softplus_term(x, float(t))

    term = njit(**_ijit)(term)

    def terms(V, T, E):
        inf = V.dtype.type(_INF)
        bad = False
        masked = False
        hard = True
        for k in range(V.shape[0]):
            x, t = V[k], T[k]
            bad, masked = _logit_flags(x, inf, bad, masked)
            hard = _hard(t, hard)
            E[k] = term(x, t)
        return bad, masked, hard

    return terms


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


@njit(**_jit)
def _neglog_rows32(S, St, O, nb, lo, hi, scale):
    """``_neglog_rows`` for float32 ``S`` with float32 clip bounds (see the overload)."""
    if scale == 1.0:  # natural log: the float32 log is the loss (no widening to float64: all 8 lanes)
        nan = np.float32(_NAN)
        for j in range(nb):
            v32 = -fm.log32(_clip(np.float32(S[j]), lo, hi))
            O[j] = v32 if St[j] == OK else nan
        return
    for j in range(nb):
        p = _clip(np.float32(S[j]), lo, hi)  # exact: S holds float32 values
        v = -float(fm.log32(p)) * scale
        O[j] = v if St[j] == OK else _NAN


def _neglog_rows(S, St, O, nb, prm, pv):
    """``O_j = -log(clip(S_j)) * scale`` for OK rows, NaN for the others (see the overload)."""


@overload(_neglog_rows, inline="always", jit_options=_jit)
def _neglog_rows_impl(S, St, O, nb, prm, pv):
    """For float32 predictions whose clip bounds float32 holds exactly, with the lower one
    normal (``eps="auto"``, ``"keras"``): the clip in float32 is the same clip, and the ``log``
    is ``_fastmath.log32`` (within 1 float32 ulp, and no division). Otherwise the float64 ``log``.
    Which one runs depends on the call's options only, never on the rows."""
    if pv.dtype != types.float32:
        return lambda S, St, O, nb, prm, pv: _neglog_rows64(S, St, O, nb, prm)

    def maybe_log32(S, St, O, nb, prm, pv):
        if not _clip32_exact(prm):  # (which also means no floor on the log: logmin = -inf)
            _neglog_rows64(S, St, O, nb, prm)
            return
        _neglog_rows32(S, St, O, nb, np.float32(prm.lo), np.float32(prm.hi), prm.scale)

    return maybe_log32


@njit(**_ijit)
def _prob_flags(x, t, ok, hard):
    """One value's part of a probability block's checks: ``x`` a probability, the target 0 or 1."""
    return ok & _is_prob(x), _hard(t, hard)


@njit(**_jit)
def _bce_hard_terms64(V, T, E, prm):
    ok = True
    hard = True
    for k in range(V.shape[0]):
        x, t = V[k], T[k]
        ok, hard = _prob_flags(x, t, ok, hard)
        E[k] = _bce_hard(float(x), t != 0, prm.lo, prm.hi, prm.logmin)
    return ok, hard


def _bce_hard_terms(V, T, E, prm):
    """``E_k = -log p_k`` if ``T_k`` else ``-log(1 - p_k)``, clipped (BCE from probabilities
    against 0/1 targets); returns the block's flags ``(ok, hard)``: every value a
    probability, every target 0 or 1 (the terms stand only if both hold), taken in the same
    pass. See the overload."""


@overload(_bce_hard_terms, jit_options=_jit)
def _bce_hard_terms_impl(V, T, E, prm):
    """Float32 probabilities whose clip is exact in float32 (``_clip32_exact``): float32 terms
    with ``log_or_log1m32`` (8 lanes), kept in the float32 view of the scratch, the values
    checked by their bits as in ``_all_in_unit`` (one unsigned max, cheaper than the
    exact compares in this loop), the exact check only if that fails; otherwise
    ``_bce_hard`` in float64 (rounded once to ``E``'s dtype) with the exact compares. The loop
    is inside."""

    if V.dtype != types.float32:
        return lambda V, T, E, prm: _bce_hard_terms64(V, T, E, prm)

    def terms(V, T, E, prm):
        if not _clip32_exact(prm):
            return _bce_hard_terms64(V, T, E, prm)
        lo, hi = np.float32(prm.lo), np.float32(prm.hi)
        B = V.view(np.uint32)
        m = np.uint32(0)
        hard = True
        for k in range(V.shape[0]):
            x, t = V[k], T[k]
            b = B[k]
            m = b if b > m else m
            hard = _hard(t, hard)
            E[k] = -fm.log_or_log1m32(_clip(x, lo, hi), t != 0)
        return (m <= _ONE_BITS32) or _all_probabilities(V), hard

    return terms


@njit(**_jit)
def _flat_target_bad(T, bce):
    """Some value of the block's targets ``T`` is invalid: for BCE outside ``[0, 1]`` or NaN
    (asked only of a block that is not all 0/1: the terms pass tells), for CCE negative,
    infinite or NaN."""
    bad = False
    if bce:
        for k in range(T.shape[0]):
            t = T[k]
            bad |= (t < 0.0) | (t > 1.0) | (t != t)
    else:
        for k in range(T.shape[0]):
            t = float(T[k])
            bad |= not ((t >= 0.0) & (t < _INF))
    return bad
