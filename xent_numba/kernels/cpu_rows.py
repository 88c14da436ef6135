"""CPU row formulas: one small ``@njit`` per loss mode, the math a reader checks.

Every function scores one row and returns ``(loss, status)`` (see ``losses.OK`` and
friends): validation is fused into the scoring pass. Two families:

- the general row functions (``_cce_index_row``, ``_bce_dense_row``, ...), which take every
  option (label smoothing, ``class_weight``, ``pos_weight``, BCE's element ``weight``), and
  their ``@njit(parallel=True)`` loops over rows: ``_dense_index``/``_dense_dense`` for an
  ``(N, C)`` array, ``_ragged_index``/``_ragged_dense`` for ``values`` + absolute ``offsets``;
- the common case (no smoothing, no weights): one lean row function per mode (``_fast_*``)
  reading a row ``v[a : a + n]`` of a flat values array, and ``_fast_index``/``_fast_dense``.

All arithmetic is float64 whatever the input dtype; inputs may be read-only (zero-copy
Arrow buffers). The narrow-row block kernels (the speed machinery for few classes) are in
``cpu_blocks.py``; ``cpu.run`` picks the kernel.

Speed: ``exp``/``log`` come from ``_fastmath`` (no library calls), so the loops over a
row's classes vectorise; ``fastmath`` allows reassociation (vectorised sums) but never
``nnan``/``ninf``, and no ``contract`` here (an FMA formed in a vector body but not in
the scalar remainder would make a score depend on where a batch was split; the FMAs inside
``_fastmath`` keep their own flags). Reassociation must not cross a sum of two parts that are
each >= 0 but of very different size (``(m - x_y) + log1p(rest)`` of a confident row), so
those sums go through ``_fastmath.add``, which is compiled without it.

From logits ``-inf`` is a masked class (probability 0), NaN and ``+inf`` are invalid; a
masked class that the target counts gives ``inf`` with status ``TARGET_MASKED``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ..losses import (
    EMPTY_ROW,
    IGNORED,
    LABEL_RANGE,
    LENGTH,
    OK,
    PRED_NONFINITE,
    PRED_RANGE,
    TARGET_MASKED,
    TARGET_SUM,
    TARGET_VALUE,
)
from . import fastmath as fm

_INF = math.inf
_NAN = math.nan
_SUM_ATOL = 1e-3  # losses.DENSE_SUM_RTOL, against a target sum of 1

_FASTMATH = {"nsz", "arcp", "afn", "reassoc"}  # never nnan / ninf; no contract: see below
_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath=_FASTMATH)
_pjit = dict(_jit, parallel=True)
_ijit = dict(_jit, inline="always")  # tiny helpers: inlined so the loops around them vectorise


@njit(**_ijit)
def _max(a, b):
    """``max`` as a select (the builtin's NaN handling keeps loops from vectorising)."""
    return a if a > b else b


@njit(**_ijit)
def _clip(p, lo, hi):
    """``min(max(p, lo), hi)`` as selects."""
    p = p if p > lo else lo
    return p if p < hi else hi


@njit(**_jit)
def _log(p, prm):
    """Clipped log of a probability: ``max(log(clip(p, lo, hi)), logmin)``."""
    return _max(fm.log(_clip(p, prm.lo, prm.hi)), prm.logmin)


@njit(**_jit)
def _log1m(p, prm):
    """Clipped ``log(1 - p)``: ``max(log1p(-clip(p, lo, hi)), logmin)``."""
    return _max(fm.log1p(-_clip(p, prm.lo, prm.hi)), prm.logmin)


@njit(**_jit)
def _weight(w, c):
    """Per-class weight: 1 when ``w`` is empty, ``w[0]`` when it has one entry, else ``w[c]``."""
    n = w.shape[0]
    if n == 0:
        return 1.0
    if n == 1:
        return w[0]
    return w[c]


@njit(**_jit)
def _check_pred(p, prm):
    """Status of a prediction row: finite everywhere, and in [0, 1] for probabilities."""
    if prm.from_logits:  # -inf is a masked class; NaN and +inf are invalid
        for c in range(p.shape[0]):
            if not _logit_ok(float(p[c])):
                return PRED_NONFINITE
        return OK
    bad = False
    for c in range(p.shape[0]):
        x = p[c]
        bad |= not (x >= 0.0 and x <= 1.0)
    if bad:
        for c in range(p.shape[0]):
            if not math.isfinite(p[c]):
                return PRED_NONFINITE
        return PRED_RANGE
    return OK


@njit(**_ijit)
def _logit_ok(x):
    """A logit is valid unless NaN or +inf (-inf masks its class)."""
    return (x == x) & (x != _INF)


@njit(**_jit)
def _lse(p):
    """``(m, l)`` with ``lse = m + l``: ``m = max_c x_c`` and ``l = log1p(sum of exp(x_c - m)
    over every class but one at the max)`` (``_logit_max``, ``_log1p_rest``: the ``e^0 = 1`` of
    one max left out, so that ``-log p_c = (m - x_c) + l`` is a sum of two parts >= 0: no
    cancellation)."""
    m, _ = _logit_max(p, 0, p.shape[0])
    return m, _log1p_rest(p, 0, p.shape[0], m)


@njit(**_jit)
def _neglog(p, c, m, l, prm):
    """``-log p_c``: from logits ``(m - x_c) + l`` (see ``_lse``; inf for a masked class);
    from probabilities the clipped ``-log p_c``."""
    if prm.from_logits:
        x = float(p[c])
        return fm.add(m - x, l) if x > -_INF else _INF
    return -_log(float(p[c]), prm)


@njit(**_jit)
def _logit_loss(loss, prm):
    """``(loss, status)``: from logits only a masked class with positive weight gives inf."""
    if prm.from_logits and loss == _INF:
        return _INF, TARGET_MASKED
    return loss * prm.scale, OK


@njit(**_jit)
def _cce_index_row(p, y, prm, w):
    """CCE with an index target: ``(1-e) w_y (-log p_y) + e/C sum_c w_c (-log p_c)``."""
    n = p.shape[0]
    if n == 0:
        return _NAN, EMPTY_ROW
    if prm.has_ignore and y == prm.ignore_index:
        return _NAN, IGNORED
    if y < 0 or y >= n:
        return _NAN, LABEL_RANGE
    s = _check_pred(p, prm)
    if s != OK:
        return _NAN, s
    m, l = _lse(p) if prm.from_logits else (0.0, 0.0)
    e = prm.smoothing
    loss = 0.0
    wy = (1.0 - e) * _weight(w, y)
    if wy != 0.0:  # a zero weight skips the term (0 log 0 = 0)
        loss = wy * _neglog(p, y, m, l, prm)
    if e > 0.0:
        acc = 0.0
        for c in range(n):
            wc = _weight(w, c)
            if wc != 0.0:
                acc += wc * _neglog(p, c, m, l, prm)
        loss += e / n * acc
    return _logit_loss(loss, prm)


@njit(**_jit)
def _cce_dense_row(p, t, prm, w):
    """CCE with a dense target: ``sum_c w_c t'_c (-log p_c)``, ``t' = t(1-e) + e/C``."""
    n = p.shape[0]
    if n == 0:
        return _NAN, EMPTY_ROW
    tsum = 0.0
    for c in range(n):
        tc = float(t[c])
        if not (tc >= 0.0 and tc < _INF):
            return _NAN, TARGET_VALUE
        tsum += tc
    if abs(tsum - 1.0) > _SUM_ATOL:
        return _NAN, TARGET_SUM
    s = _check_pred(p, prm)
    if s != OK:
        return _NAN, s
    m, l = _lse(p) if prm.from_logits else (0.0, 0.0)
    e = prm.smoothing
    loss = 0.0
    for c in range(n):
        q = _weight(w, c) * (float(t[c]) * (1.0 - e) + e / n)
        if q != 0.0:  # a zero weight skips the term (0 log 0 = 0)
            loss += q * _neglog(p, c, m, l, prm)
    return _logit_loss(loss, prm)


@njit(**_jit)
def _bce_term(x, t, pw, prm):
    """One BCE component ``-[pw t log p + (1-t) log(1-p)]``; a part whose weight is 0 is
    skipped (``0 log 0 = 0``: one log for hard targets, never NaN).

    From logits (PyTorch's ``(1-t) x + (1 + (pw-1) t) (sp + max(-x, 0))`` rearranged into
    parts >= 0, so nothing cancels): ``pw t (sp + max(-x, 0)) + (1-t) (sp + max(x, 0))``,
    ``sp = log1p(exp(-|x|))``; ``x = -inf`` is ``p = 0``.
    """
    q = pw * t
    if prm.from_logits:
        sp = fm.log1p(fm.exp(-abs(x)))
        acc = q * (sp + _max(-x, 0.0)) if q != 0.0 else 0.0
        if t != 1.0:
            acc += (1.0 - t) * (sp + _max(x, 0.0))
        return acc
    acc = 0.0
    if q != 0.0:
        acc += q * _log(x, prm)
    if t != 1.0:
        acc += (1.0 - t) * _log1m(x, prm)
    return -acc


@njit(**_jit)
def _bce_finish(acc, n, prm):
    if prm.mean:
        acc /= n
    return acc * prm.scale


@njit(**_jit)
def _bce_general(acc, n, prm):
    """``(loss, status)`` of a general-path BCE row (``_logit_loss``'s masked rule)."""
    if prm.from_logits and acc == _INF:
        return _INF, TARGET_MASKED
    return _bce_finish(acc, n, prm), OK


@njit(**_jit)
def _bce_index_row(p, y, prm, w, pw):
    """BCE against the one-hot vector of class ``y``, summed or averaged over the C components;
    component ``c`` times its element weight ``w_c`` (PyTorch's ``BCELoss(weight=)``)."""
    n = p.shape[0]
    if n == 0:
        return _NAN, EMPTY_ROW
    if y < 0 or y >= n:
        return _NAN, LABEL_RANGE
    s = _check_pred(p, prm)
    if s != OK:
        return _NAN, s
    e = prm.smoothing
    off = e / 2.0
    on = 1.0 - e + off
    acc = 0.0
    for c in range(n):
        wc = _weight(w, c)
        if wc != 0.0:  # a zero weight skips the component (0 log 0 = 0)
            acc += wc * _bce_term(float(p[c]), on if c == y else off, _weight(pw, c), prm)
    return _bce_general(acc, n, prm)


@njit(**_jit)
def _bce_dense_row(p, t, prm, w, pw):
    """BCE against dense targets in [0, 1], ``t' = t(1-e) + e/2``, component ``c`` times its
    element weight ``w_c``, summed or averaged."""
    n = p.shape[0]
    if n == 0:
        return _NAN, EMPTY_ROW
    for c in range(n):
        tc = float(t[c])
        if not (tc >= 0.0 and tc <= 1.0):
            return _NAN, TARGET_VALUE
    s = _check_pred(p, prm)
    if s != OK:
        return _NAN, s
    e = prm.smoothing
    acc = 0.0
    for c in range(n):
        tc = float(t[c]) * (1.0 - e) + e / 2.0
        wc = _weight(w, c)
        if wc != 0.0:
            acc += wc * _bce_term(float(p[c]), tc, _weight(pw, c), prm)
    return _bce_general(acc, n, prm)


@njit(**_jit)
def _index_row(p, y, prm, w, pw):
    if prm.bce:
        return _bce_index_row(p, y, prm, w, pw)
    return _cce_index_row(p, y, prm, w)


@njit(**_jit)
def _dense_row(p, t, prm, w, pw):
    if p.shape[0] != t.shape[0]:
        return _NAN, LENGTH
    if prm.bce:
        return _bce_dense_row(p, t, prm, w, pw)
    return _cce_dense_row(p, t, prm, w)


@njit(**_ijit)
def _wrow(w, i):
    """Row ``i``'s weights: ``w`` is ``(1, k)`` (one vector for every row) or ``(N, C)``."""
    return w[i] if w.shape[0] > 1 else w[0]


@njit(**_pjit)
def _dense_index(P, y, prm, w, pw, out, status):
    """Rows of a dense ``(N, C)`` array against integer targets ``y`` (N,)."""
    for i in prange(P.shape[0]):
        v, s = _index_row(P[i], y[i], prm, _wrow(w, i), _wrow(pw, i))
        out[i] = v
        status[i] = s


@njit(**_pjit)
def _dense_dense(P, T, prm, w, pw, out, status):
    """Rows of a dense ``(N, C)`` array against dense targets ``(N, C)``."""
    for i in prange(P.shape[0]):
        v, s = _dense_row(P[i], T[i], prm, _wrow(w, i), _wrow(pw, i))
        out[i] = v
        status[i] = s


@njit(**_pjit)
def _ragged_index(pv, po, y, prm, w, pw, out, status):
    """Ragged rows ``pv[po[i]:po[i+1]]`` against integer targets ``y`` (N,)."""
    for i in prange(po.shape[0] - 1):
        v, s = _index_row(pv[po[i] : po[i + 1]], y[i], prm, _wrow(w, i), _wrow(pw, i))
        out[i] = v
        status[i] = s


@njit(**_pjit)
def _ragged_dense(pv, po, tv, to, prm, w, pw, out, status):
    """Ragged rows against ragged dense targets ``tv[to[i]:to[i+1]]``."""
    for i in prange(po.shape[0] - 1):
        v, s = _dense_row(pv[po[i] : po[i + 1]], tv[to[i] : to[i + 1]], prm, _wrow(w, i), _wrow(pw, i))
        out[i] = v
        status[i] = s


# ---- the common case: no label smoothing, no class_weight / pos_weight -------------------
#
# Each row function reads a row ``v[a : a + n]`` of a flat values array. Validation is a
# branch-free pass (flags OR-ed over the row); the scoring pass then runs without branches,
# so both vectorise. Error rows are sorted out after the row is read, off the hot path.


@njit(**_jit)
def _span(offs, width, i):
    """``(start, length)`` of row ``i``: ``width`` > 0 for a dense (N, C) array, else offsets."""
    if width >= 0:
        return i * width, width
    a = offs[i]
    return a, offs[i + 1] - a


@njit(**_jit)
def _prob_status(v, a, n):
    """Status of a probability row: OK, PRED_RANGE, or PRED_NONFINITE (NaN/inf anywhere)."""
    bad = False
    for c in range(a, a + n):
        x = v[c]
        bad |= not ((x >= 0.0) & (x <= 1.0))
    if not bad:
        return OK
    fin = True
    for c in range(a, a + n):
        fin &= abs(float(v[c])) < _INF
    return PRED_RANGE if fin else PRED_NONFINITE


@njit(**_jit)
def _logit_max(v, a, n):
    """``(max, all valid)`` of a logit row (-inf is valid: a masked class; NaN and +inf are
    not), in one pass with 8 running maxima: one running max (or an arg max) is a chain of
    dependent selects that does not vectorise, 8 independent ones do (wide rows gain most)."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = -_INF
    bad = False
    V = v[a : a + n]  # a view indexed from 0 (unsigned): no negative-index wraparound
    n8 = n - n % 8
    for c in range(0, n8, 8):
        u = np.uint64(c)
        x0, x1, x2, x3 = float(V[u]), float(V[u + 1]), float(V[u + 2]), float(V[u + 3])
        x4, x5, x6, x7 = float(V[u + 4]), float(V[u + 5]), float(V[u + 6]), float(V[u + 7])
        m0, m1, m2, m3 = _max(x0, m0), _max(x1, m1), _max(x2, m2), _max(x3, m3)
        m4, m5, m6, m7 = _max(x4, m4), _max(x5, m5), _max(x6, m6), _max(x7, m7)
        bad |= (x0 != x0) | (x1 != x1) | (x2 != x2) | (x3 != x3) | (x4 != x4) | (x5 != x5) | (x6 != x6) | (x7 != x7)
    for c in range(n8, n):
        x = float(V[np.uint64(c)])
        m0 = _max(x, m0)
        bad |= x != x
    m = _max(_max(_max(m0, m1), _max(m2, m3)), _max(_max(m4, m5), _max(m6, m7)))
    return m, not (bad | (m == _INF))


@njit(**_jit)
def _log1p_rest(v, a, n, m):
    """``log1p(sum_{x_c < m} exp(x_c - m) + (k - 1))``, ``k`` the number of classes at the max
    ``m``: the log-sum-exp less ``m`` without one ``e^0 = 1`` (so tiny sums are kept; see
    ``_lse``), in one vectorised pass (no arg max)."""
    if m == -_INF:
        return 0.0
    s = 0.0
    k = 0.0
    V = v[a : a + n]
    for c in range(n):
        d = float(V[np.uint64(c)]) - m
        s += fm.exp(d) if d < 0.0 else 0.0
        k += 1.0 if d == 0.0 else 0.0
    return fm.log1p(fm.add(s, k - 1.0))  # not reassociated to (s + k) - 1: a tiny s would vanish


@njit(**_ijit)
def _clog(p, lo, hi, logmin):
    """Clipped log of a probability (the eps policy), vectorisable."""
    return _max(fm.log(_clip(p, lo, hi)), logmin)


@njit(**_jit)
def _cce_target_status(t, b, n):
    """Dense CCE target row: OK, TARGET_VALUE (negative/NaN/inf) or TARGET_SUM (not 1)."""
    bad = False
    tsum = 0.0
    for c in range(b, b + n):
        tc = float(t[c])
        bad |= not ((tc >= 0.0) & (tc < _INF))
        tsum += tc
    if bad:
        return TARGET_VALUE
    if abs(tsum - 1.0) > _SUM_ATOL:
        return TARGET_SUM
    return OK


@njit(**_jit)
def _index_status(n, y, prm):
    if n == 0:
        return EMPTY_ROW
    if prm.has_ignore and y == prm.ignore_index and not prm.bce:
        return IGNORED
    if y < 0 or y >= n:
        return LABEL_RANGE
    return OK


@njit(**_jit)
def _fast_cce_prob_index(v, a, n, y, prm):
    """``-log p_y`` (clipped)."""
    s = _prob_status(v, a, n)
    if s != OK:
        return _NAN, s
    return -_clog(float(v[a + y]), prm.lo, prm.hi, prm.logmin), OK


@njit(**_jit)
def _fast_cce_logit_index(v, a, n, y, prm):
    """``(m - x_y) + log1p(sum_{c != one argmax} exp(x_c - m))``; inf if ``x_y = -inf``."""
    m, ok = _logit_max(v, a, n)
    if not ok:
        return _NAN, PRED_NONFINITE
    xy = float(v[a + y])
    if xy == -_INF:
        return _INF, TARGET_MASKED
    return fm.add(m - xy, _log1p_rest(v, a, n, m)), OK


@njit(**_jit)
def _fast_bce_prob_index(v, a, n, y, prm):
    """``-log p_y - sum_{c != y} log(1 - p_c)`` (clipped), one log per class."""
    s = _prob_status(v, a, n)
    if s != OK:
        return _NAN, s
    acc = 0.0
    for c in range(n):
        acc += _bce_hard(float(v[a + c]), c == y, prm.lo, prm.hi, prm.logmin)
    return acc, OK


@njit(**_jit)
def _fast_bce_logit_index(v, a, n, y, prm):
    """``sum_c max(x_c, 0) - x_c t_c + log1p(exp(-|x_c|))`` with ``t`` one-hot at ``y``."""
    ok = True
    acc = 0.0
    for c in range(n):
        x = v[a + c]
        ok &= _logit_ok(float(x))
        acc += _softplus_term(x, 1.0 if c == y else 0.0)
    if not ok:
        return _NAN, PRED_NONFINITE
    return acc, (OK if acc < _INF else TARGET_MASKED)


@njit(**_ijit)
def _bce_hard(p, on, lo, hi, logmin):
    """``-log p`` if ``on`` else ``-log(1 - p)`` (clipped), with a single log
    (``_fastmath.log_or_log1m``, exact for tiny ``p``)."""
    return -_max(fm.log_or_log1m(_clip(p, lo, hi), on), logmin)


@njit(**_ijit)
def _bce_soft(p, t, lo, hi, logmin):
    """``-[t log p + (1 - t) log(1 - p)]`` (clipped); a term with weight 0 is skipped."""
    pc = _clip(p, lo, hi)
    lp = _max(fm.log(pc), logmin)
    l1 = _max(fm.log1p(-pc), logmin)
    return -((t * lp if t != 0.0 else 0.0) + ((1.0 - t) * l1 if t != 1.0 else 0.0))


def _lpe(x):
    """``log(1 + e^-|x|)`` as a float64 (for jitted code; see the overload)."""


@overload(_lpe, inline="always", jit_options=_jit)
def _lpe_impl(x):
    """Float32 logits: computed in float32 (``log1pexp32``, twice the vector width), else
    float64. Inlined by Numba: an overload called per value is not, and costs a call each."""
    if x == types.float32:
        return lambda x: float(fm.log1pexp32(x))
    return lambda x: fm.log1p(fm.exp(-abs(float(x))))


@njit(**_ijit)
def _softplus_term(x, t):
    """BCE from a logit ``x`` (in its input dtype): ``max(x, 0) - x t + log1p(exp(-|x|))``, as
    the parts >= 0 ``t max(-x, 0) + (1 - t) max(x, 0) + sp`` in float64 (zero-weight parts
    skipped: ``x = -inf`` is p = 0); ``sp`` in float32 for float32 logits (``_lpe``)."""
    xf = np.float64(x)  # (Numba's float() of a float32 stays float32)
    lin = (t * _max(-xf, 0.0) if t != 0.0 else 0.0) + ((1.0 - t) * _max(xf, 0.0) if t != 1.0 else 0.0)
    return fm.add(lin, _lpe(x))


@njit(**_jit)
def _fast_cce_prob_dense(v, a, t, b, n, prm):
    """``sum_c t_c (-log p_c)`` over classes with ``t_c != 0`` (clipped logs)."""
    s = _cce_target_status(t, b, n)
    if s == OK:
        s = _prob_status(v, a, n)
    if s != OK:
        return _NAN, s
    acc = 0.0
    for c in range(n):
        tc = float(t[b + c])
        lp = _clog(float(v[a + c]), prm.lo, prm.hi, prm.logmin)
        acc += tc * lp if tc != 0.0 else 0.0
    return -acc, OK


@njit(**_jit)
def _fast_cce_logit_dense(v, a, t, b, n, prm):
    """``sum_c t_c (m - x_c) + T log1p(sum_{c != argmax} exp(x_c - m))`` over ``t_c != 0``,
    ``T = sum_c t_c`` (parts >= 0: no cancellation); inf if a class with ``t_c > 0`` is masked."""
    s = _cce_target_status(t, b, n)
    if s != OK:
        return _NAN, s
    m, ok = _logit_max(v, a, n)
    if not ok:
        return _NAN, PRED_NONFINITE
    acc = 0.0
    tsum = 0.0
    for c in range(n):
        tc = float(t[b + c])
        tsum += tc
        x = float(v[a + c])
        acc += tc * ((m - x) if x > -_INF else _INF) if tc != 0.0 else 0.0
    if acc == _INF:
        return _INF, TARGET_MASKED
    return fm.add(acc, tsum * _log1p_rest(v, a, n, m)), OK


@njit(**_jit)
def _bce_target_status(t, b, n):
    """``(status, hard)``: TARGET_VALUE unless every target is in [0, 1]; hard: all 0 or 1."""
    bad = False
    hard = True
    for c in range(b, b + n):
        tc = float(t[c])
        bad |= not ((tc >= 0.0) & (tc <= 1.0))
        hard &= (tc == 0.0) | (tc == 1.0)
    return (TARGET_VALUE if bad else OK), hard


@njit(**_jit)
def _fast_bce_prob_dense(v, a, t, b, n, prm):
    """``-sum_c [t_c log p_c + (1 - t_c) log(1 - p_c)]``; one log per class for 0/1 targets."""
    s, hard = _bce_target_status(t, b, n)
    if s == OK:
        s = _prob_status(v, a, n)
    if s != OK:
        return _NAN, s
    acc = 0.0
    if hard:
        for c in range(n):
            acc += _bce_hard(float(v[a + c]), float(t[b + c]) != 0.0, prm.lo, prm.hi, prm.logmin)
    else:
        for c in range(n):
            acc += _bce_soft(float(v[a + c]), float(t[b + c]), prm.lo, prm.hi, prm.logmin)
    return acc, OK


@njit(**_jit)
def _fast_bce_logit_dense(v, a, t, b, n, prm):
    """``sum_c max(x_c, 0) - x_c t_c + log1p(exp(-|x_c|))``."""
    s, _ = _bce_target_status(t, b, n)
    if s != OK:
        return _NAN, s
    ok = True
    acc = 0.0
    for c in range(n):
        x = v[a + c]
        ok &= _logit_ok(float(x))
        acc += _softplus_term(x, float(t[b + c]))
    if not ok:
        return _NAN, PRED_NONFINITE
    return acc, (OK if acc < _INF else TARGET_MASKED)


@njit(**_jit)
def _fast_index_row(v, a, n, y, prm):
    s = _index_status(n, y, prm)
    if s != OK:
        return _NAN, s
    if prm.bce:
        if prm.from_logits:
            r, s = _fast_bce_logit_index(v, a, n, y, prm)
        else:
            r, s = _fast_bce_prob_index(v, a, n, y, prm)
        return _bce_finish(r, n, prm), s
    if prm.from_logits:
        r, s = _fast_cce_logit_index(v, a, n, y, prm)
    else:
        r, s = _fast_cce_prob_index(v, a, n, y, prm)
    return r * prm.scale, s


@njit(**_jit)
def _fast_dense_row(v, a, n, t, b, k, prm):
    if n != k:
        return _NAN, LENGTH
    if n == 0:
        return _NAN, EMPTY_ROW
    if prm.bce:
        if prm.from_logits:
            r, s = _fast_bce_logit_dense(v, a, t, b, n, prm)
        else:
            r, s = _fast_bce_prob_dense(v, a, t, b, n, prm)
        return _bce_finish(r, n, prm), s
    if prm.from_logits:
        r, s = _fast_cce_logit_dense(v, a, t, b, n, prm)
    else:
        r, s = _fast_cce_prob_dense(v, a, t, b, n, prm)
    return r * prm.scale, s


@njit(**_pjit)
def _fast_index(pv, po, pc, y, prm, out, status):
    """Rows of flat ``pv`` (width ``pc``, or offsets ``po`` when ``pc < 0``) against labels ``y``."""
    for i in prange(y.shape[0]):
        a, n = _span(po, pc, i)
        v, s = _fast_index_row(pv, a, n, y[i], prm)
        out[i] = v
        status[i] = s


@njit(**_pjit)
def _fast_dense(pv, po, pc, tv, to, tc, prm, out, status):
    """Rows of flat ``pv`` against rows of flat dense targets ``tv`` (same row spans)."""
    for i in prange(out.shape[0]):
        a, n = _span(po, pc, i)
        b, k = _span(to, tc, i)
        v, s = _fast_dense_row(pv, a, n, tv, b, k, prm)
        out[i] = v
        status[i] = s
