"""CPU kernels: ``@njit(parallel=True)`` loops over rows, private and allocation-free.

Two families, one per layout:

- dense ``(N, C)`` predictions: ``_dense_index`` (integer targets) and ``_dense_dense``;
- ragged rows given by ``values`` + absolute ``offsets`` (Arrow list arrays):
  ``_ragged_index`` and ``_ragged_dense``.

Every kernel writes one loss per row into ``out`` and one status code per row into
``status`` (see ``losses.OK`` and friends): validation is fused into the scoring pass.
Rows are scored by the small row functions below, which state their formula. All
arithmetic is carried out in float64 whatever the input dtype, except the BCE-from-logits
term ``log1p(exp(-|x|))`` of float32 inputs in the narrow kernels (float32, summed in
float64); inputs may be read-only (zero-copy Arrow buffers).

Speed: ``exp``/``log`` come from ``_fastmath`` (no library calls), so the loops over a
row's classes vectorise; ``fastmath`` allows reassociation (vectorised sums) but never
``nnan``/``ninf``, and no ``contract`` here (an FMA formed in a vector body but not in
the scalar remainder would make a score depend on where a batch was split; the FMAs inside
``_fastmath`` keep their own flags). Reassociation must not cross a sum of two parts that are
each >= 0 but of very different size (``(m - x_y) + log1p(rest)`` of a confident row), so
those sums go through ``_fastmath.add``, which is compiled without it.

From logits ``-inf`` is a masked class (probability 0), NaN and ``+inf`` are invalid; a
masked class that the target counts gives ``inf`` with status ``TARGET_MASKED``. The common case (no label smoothing, no weights) has one lean row
function per mode (``_fast_*``); options fall back to the general row functions.
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from . import _fastmath as fm
from .arrow import Dense, Ragged
from .losses import (
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
    """``(m, l)`` with ``lse = m + l``: ``m = max_c x_c = x_a`` (first arg max) and
    ``l = log1p(sum_{c != a} exp(x_c - m))`` (the term ``e^0 = 1`` of ``a`` left out, so
    that ``-log p_c = (m - x_c) + l`` is a sum of two parts >= 0: no cancellation)."""
    m = -_INF
    am = 0
    for c in range(p.shape[0]):
        x = float(p[c])
        am = c if x > m else am
        m = _max(m, x)
    if m == -_INF:  # every class masked
        return m, 0.0
    s = 0.0
    for c in range(p.shape[0]):
        e = fm.exp(float(p[c]) - m)
        s += e if c != am else 0.0
    return m, fm.log1p(s)


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
    """``(max, first arg max, all valid)`` of a logit row in one pass (-inf is valid: masked)."""
    m = -_INF
    am = a
    ok = True
    for c in range(a, a + n):
        x = float(v[c])
        am = c if x > m else am
        m = x if x > m else m
        ok &= _logit_ok(x)
    return m, am, ok


@njit(**_jit)
def _log1p_rest(v, a, n, m, am):
    """``log1p(sum_{c != am} exp(x_c - m))``: the log-sum-exp less ``m``, without the
    ``e^0 = 1`` of the arg max ``am`` (so tiny sums are kept; see ``_lse``)."""
    if m == -_INF:
        return 0.0
    s = 0.0
    for c in range(a, a + n):
        e = fm.exp(float(v[c]) - m)
        s += e if c != am else 0.0
    return fm.log1p(s)


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
    """``(m - x_y) + log1p(sum_{c != argmax} exp(x_c - m))``; inf if ``x_y = -inf``."""
    m, am, ok = _logit_max(v, a, n)
    if not ok:
        return _NAN, PRED_NONFINITE
    xy = float(v[a + y])
    if xy == -_INF:
        return _INF, TARGET_MASKED
    return fm.add(m - xy, _log1p_rest(v, a, n, m, am)), OK


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
        x = float(v[a + c])
        ok &= _logit_ok(x)
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


@njit(**_ijit)
def _softplus_term(x, t):
    """BCE from a logit: ``max(x, 0) - x t + log1p(exp(-|x|))``, as the parts >= 0
    ``t max(-x, 0) + (1 - t) max(x, 0) + sp`` (zero-weight parts skipped: ``x = -inf`` is p = 0)."""
    lin = (t * _max(-x, 0.0) if t != 0.0 else 0.0) + ((1.0 - t) * _max(x, 0.0) if t != 1.0 else 0.0)
    return fm.add(lin, fm.log1p(fm.exp(-abs(x))))


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
    m, am, ok = _logit_max(v, a, n)
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
    return fm.add(acc, tsum * _log1p_rest(v, a, n, m, am)), OK


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
        x = float(v[a + c])
        ok &= _logit_ok(x)
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
_NROW = 5 * _BLOCK  # per-row scratch: S, R, T, M, K


@njit(**_ijit)
def _u(i):
    """An index as unsigned: Numba then skips the negative-index wraparound (which keeps
    loops from vectorising). Only for indices known to be >= 0."""
    return np.uint64(i)


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
        for k in range(V.shape[0]):
            x = float(V[k])
            bad |= (x != x) | (x == _INF)
            masked |= x == -_INF
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
    """``S_j = sum of X[a_i + shift : a_i + n_i + shift]`` for rows ``i = r0 + j``.

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
    for i in range(r0, r1):
        a, n = _span(po, pc, i)
        s = 0.0
        for c in range(a + shift, a + n + shift):
            s += float(X[_u(c)])
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


@njit(**_jit)
def _exp_rest(E, Z, a0, po, pc, r0, r1, S, K):
    """From ``E = x - m`` (per row): ``S_j = sum exp(x - m)`` over the classes below the row
    max plus ``(number of maxima) - 1``, i.e. the sum without one ``e^0 = 1`` (which
    ``log1p`` adds back: see ``_lse``). Two flat vectorised sums (``Z`` counts the maxima);
    a per-row arg max would cost a dependent select per value."""
    for k in range(E.shape[0]):
        d = E[k]
        Z[k] = 1.0 if d == 0.0 else 0.0
        E[k] = fm.exp(d) if d < 0.0 else 0.0
    _rsum(E, -a0, po, pc, r0, r1, S)
    _rsum(Z, -a0, po, pc, r0, r1, K)
    for j in range(r1 - r0):
        S[j] += _max(K[j] - 1.0, 0.0)  # ties: the other maxima count 1 each


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
    for i in range(r0, r1):
        j = i - r0
        v = fm.add(R[j], T[j] * fm.log1p(S[j])) if log_s else S[j]
        out[i] = v * prm.scale if status[i] == OK else _NAN


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
    for i in range(r0, r1):
        _, n = _span(po, pc, i)
        v = _bce_finish(S[i - r0], n, prm)
        out[i] = v if status[i] == OK else _NAN


def _lpe(x):
    """``log(1 + e^-|x|)`` as a float64 (for jitted code; see the overload)."""


@overload(_lpe, jit_options=_ijit)
def _lpe_impl(x):
    if x == types.float32:  # float32 inputs: computed in float32 (2x the vector width)
        return lambda x: float(fm.log1pexp32(x))
    return lambda x: fm.log1p(fm.exp(-abs(float(x))))


@njit(**_ijit)
def _softplus_t(x, t):
    """BCE from a logit ``x`` (input dtype): ``max(x, 0) - x t + log1p(exp(-|x|))``, as
    float64, in the parts >= 0 of ``_softplus_term``."""
    xf = float(x)
    lin = (t * _max(-xf, 0.0) if t != 0.0 else 0.0) + ((1.0 - t) * _max(xf, 0.0) if t != 1.0 else 0.0)
    return fm.add(lin, _lpe(x))


@njit(**_jit)
def _rows_one_by_one_index(pv, po, pc, y, prm, out, status, r0, r1):
    for i in range(r0, r1):
        a, n = _span(po, pc, i)
        v, s = _fast_index_row(pv, a, n, y[i], prm)
        out[i] = v
        status[i] = s


@njit(**_jit)
def _block_index(pv, po, pc, y, prm, out, status, r0, r1, scr):
    """Score rows ``r0:r1`` against index labels, vectorised across the block."""
    a0, a1 = _block_span(po, pc, r0, r1)
    ne = a1 - a0
    cap = scr.shape[0] - _NROW
    if ne > cap:  # wider rows than the scratch holds
        _rows_one_by_one_index(pv, po, pc, y, prm, out, status, r0, r1)
        return
    flat_ok, masked = _flat_pred_ok(pv, a0, a1, prm.from_logits)
    ign = prm.has_ignore and not prm.bce
    for i in range(r0, r1):  # branch-free row checks
        _, n = _span(po, pc, i)
        yi = y[i]
        s = OK
        s = LABEL_RANGE if (yi < 0) | (yi >= n) else s
        s = IGNORED if ign & (yi == prm.ignore_index) else s
        s = EMPTY_ROW if n == 0 else s
        status[i] = s
    if not flat_ok:
        for i in range(r0, r1):
            if status[i] == OK:
                a, n = _span(po, pc, i)
                status[i] = _row_pred_status(pv, a, n, prm.from_logits)
    S = scr[cap : cap + _BLOCK]
    if not prm.bce and not prm.from_logits:  # -log p_y: gather, then one vectorised log
        for i in range(r0, r1):
            a, _ = _span(po, pc, i)
            S[i - r0] = float(pv[a + y[i]]) if status[i] == OK else 1.0
        for i in range(r0, r1):
            v = -_clog(S[i - r0], prm.lo, prm.hi, prm.logmin) * prm.scale
            out[i] = v if status[i] == OK else _NAN
        return
    E = scr[:ne]
    R = scr[cap + _BLOCK : cap + 2 * _BLOCK]
    T = scr[cap + 2 * _BLOCK : cap + 3 * _BLOCK]
    if not prm.bce:  # CCE from logits: (m - x_y) + log1p(sum_{c != argmax} exp(x_c - m))
        if 2 * ne > cap:  # E and the maxima count Z
            _rows_one_by_one_index(pv, po, pc, y, prm, out, status, r0, r1)
            return
        M = scr[cap + 3 * _BLOCK : cap + 4 * _BLOCK]
        K = scr[cap + 4 * _BLOCK : cap + 5 * _BLOCK]
        _rmax(pv, po, pc, r0, r1, M)
        for i in range(r0, r1):
            a, n = _span(po, pc, i)
            j = i - r0
            m = M[j] if (status[i] == OK) & (M[j] > -_INF) else 0.0  # all masked: any finite m
            for c in range(a, a + n):
                E[_u(c - a0)] = float(pv[_u(c)]) - m
            R[j] = m - float(pv[a + y[i]]) if status[i] == OK else 0.0
            T[j] = 1.0
        _exp_rest(E, scr[ne : 2 * ne], a0, po, pc, r0, r1, S, K)
        _finish_rows(out, status, r0, r1, S, R, T, prm, True, masked)
        return
    if prm.from_logits:  # BCE: sum_c f(x_c, t_c), f(x, t) = t max(-x, 0) + (1-t) max(x, 0) + log1p(e^-|x|)
        V = pv[a0:a1]
        for k in range(ne):
            E[k] = _softplus_t(V[k], 0.0)
        for i in range(r0, r1):
            a, n = _span(po, pc, i)
            if status[i] == OK:
                k = a + y[i]
                E[k - a0] = _softplus_t(pv[k], 1.0)
        _rsum(E, -a0, po, pc, r0, r1, S)
    else:  # BCE from probabilities, hard one-hot targets: one log per class
        V = pv[a0:a1]
        for k in range(ne):
            E[k] = _bce_hard(float(V[k]), False, prm.lo, prm.hi, prm.logmin)
        for i in range(r0, r1):
            a, n = _span(po, pc, i)
            if status[i] == OK:
                k = a + y[i]
                E[k - a0] = _bce_hard(float(pv[k]), True, prm.lo, prm.hi, prm.logmin)
        _rsum(E, -a0, po, pc, r0, r1, S)
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
def _block_dense(pv, po, pc, tv, to, tc, prm, out, status, r0, r1, scr):
    """Score rows ``r0:r1`` against dense targets, vectorised across the block."""
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
    for i in range(r0, r1):
        _, n = _span(po, pc, i)
        s = OK
        if not prm.bce:
            s = TARGET_SUM if abs(T[i - r0] - 1.0) > _SUM_ATOL else s
        status[i] = EMPTY_ROW if n == 0 else s
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
        if prm.from_logits:
            for k in range(ne):
                E[k] = _softplus_t(V[k], float(Tb[k]))
        elif hard:
            for k in range(ne):
                E[k] = _bce_hard(float(V[k]), float(Tb[k]) != 0.0, prm.lo, prm.hi, prm.logmin)
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
    # E holds d, then exp(d); the products t d go to the scratch after E.
    M = scr[cap + 3 * _BLOCK : cap + 4 * _BLOCK]
    K = scr[cap + 4 * _BLOCK : cap + 5 * _BLOCK]
    F = scr[ne : 2 * ne]
    _rmax(pv, po, pc, r0, r1, M)
    for i in range(r0, r1):
        a, n = _span(po, pc, i)
        j = i - r0
        m = M[j] if (status[i] == OK) & (M[j] > -_INF) else 0.0  # all masked: any finite m
        for c in range(a - a0, a - a0 + n):
            E[_u(c)] = float(V[_u(c)]) - m
    for k in range(ne):
        tk = float(Tb[k])
        e = E[k]
        F[k] = tk * e if tk != 0.0 else 0.0
    _rsum(F, -a0, po, pc, r0, r1, R)
    for j in range(r1 - r0):
        R[j] = -R[j]
    _exp_rest(E, F, a0, po, pc, r0, r1, S, K)  # F is free again: the maxima count
    _finish_rows(out, status, r0, r1, S, R, T, prm, True, masked)


def _chunks(n_blocks):
    return max(1, min(n_blocks, 4 * numba.get_num_threads()))


def _scratch(n_rows, n_values):
    """Caller-allocated scratch for the narrow kernels: one row per chunk of blocks."""
    n_blocks = (n_rows + _BLOCK - 1) // _BLOCK
    per_block = -(-n_values // max(n_blocks, 1))
    cap = min(max(4 * per_block, 1), 4 * _BLOCK * _NARROW)
    return np.empty((_chunks(n_blocks), cap + _NROW))


@njit(**_pjit)
def _narrow_index(pv, po, pc, y, prm, out, status, scr):
    """Blocks of ``_BLOCK`` rows against index labels (see ``_block_index``)."""
    n = y.shape[0]
    nblk = (n + _BLOCK - 1) // _BLOCK
    nch = scr.shape[0]
    for j in prange(nch):
        for b in range(j * nblk // nch, (j + 1) * nblk // nch):
            _block_index(pv, po, pc, y, prm, out, status, b * _BLOCK, min(n, (b + 1) * _BLOCK), scr[j])


@njit(**_pjit)
def _narrow_dense(pv, po, pc, tv, to, tc, prm, out, status, scr):
    """Blocks of ``_BLOCK`` rows against dense targets (see ``_block_dense``)."""
    n = out.shape[0]
    nblk = (n + _BLOCK - 1) // _BLOCK
    nch = scr.shape[0]
    for j in prange(nch):
        for b in range(j * nblk // nch, (j + 1) * nblk // nch):
            _block_dense(pv, po, pc, tv, to, tc, prm, out, status, b * _BLOCK, min(n, (b + 1) * _BLOCK), scr[j])


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


_NO_OFFSETS = np.zeros(1, dtype=np.int64)
_NARROW = 64  # mean classes per row up to which rows are scored in blocks


def _flat(layout):
    """``(values, offsets, width)``: a dense layout as a flat C-order array and its width."""
    if isinstance(layout, Dense):
        vals = np.ascontiguousarray(layout.values)
        return vals.reshape(-1), _NO_OFFSETS, vals.shape[1]
    return layout.values, layout.offsets, -1


def _as_rows(w):
    """Weights as a float64 ``(rows, k)`` array: a vector (or none) is one row for every row."""
    w = np.asarray(w, dtype=np.float64)
    return w if w.ndim == 2 else w.reshape(1, -1)


_LAUNCH_LOCK = threading.Lock()
_serialise = True  # until the first launch shows which threading layer Numba picked


def run(pred, target, prm, w, pw, out, status):
    """Launch the kernel that fits the layouts (``arrow.Dense``/``arrow.Ragged``/index array).

    Numba picks the ``tbb`` or ``omp`` threading layer when it can (both are safe to launch
    from several Python threads at once, as the streaming pipeline does). Only the
    ``workqueue`` fallback is not: then launches are serialised with a lock.
    """
    global _serialise
    if _serialise:
        with _LAUNCH_LOCK:
            _run(pred, target, prm, w, pw, out, status)
            try:
                _serialise = numba.threading_layer() == "workqueue"
            except ValueError:  # no parallel region ran yet
                pass
    else:
        _run(pred, target, prm, w, pw, out, status)


def _run(pred, target, prm, w, pw, out, status):
    w, pw = _as_rows(w), _as_rows(pw)
    if prm.smoothing == 0.0 and w.size == 0 and pw.size == 0:
        pv, po, pc = _flat(pred)
        n = out.shape[0]
        narrow = (pc if pc >= 0 else (po[n] - po[0]) / max(n, 1)) <= _NARROW
        if not narrow:
            if isinstance(target, np.ndarray):
                _fast_index(pv, po, pc, target, prm, out, status)
            else:
                tv, to, tc = _flat(target)
                _fast_dense(pv, po, pc, tv, to, tc, prm, out, status)
            return
        scr = _scratch(n, pc * n if pc >= 0 else po[n] - po[0])
        if isinstance(target, np.ndarray):
            _narrow_index(pv, po, pc, target, prm, out, status, scr)
        else:
            tv, to, tc = _flat(target)
            _narrow_dense(pv, po, pc, tv, to, tc, prm, out, status, scr)
        return
    if isinstance(target, np.ndarray):
        if isinstance(pred, Dense):
            _dense_index(pred.values, target, prm, w, pw, out, status)
        else:
            _ragged_index(pred.values, pred.offsets, target, prm, w, pw, out, status)
    elif isinstance(pred, Dense) and isinstance(target, Dense):
        _dense_dense(pred.values, target.values, prm, w, pw, out, status)
    else:
        p, t = Ragged.of(pred), Ragged.of(target)
        _ragged_dense(p.values, p.offsets, t.values, t.offsets, prm, w, pw, out, status)
