"""CPU kernels: ``@njit(parallel=True)`` loops over rows, private and allocation-free.

Two families, one per layout:

- dense ``(N, C)`` predictions: ``_dense_index`` (integer targets) and ``_dense_dense``;
- ragged rows given by ``values`` + absolute ``offsets`` (Arrow list arrays):
  ``_ragged_index`` and ``_ragged_dense``.

Every kernel writes one loss per row into ``out`` and one status code per row into
``status`` (see ``losses.OK`` and friends): validation is fused into the scoring pass.
Rows are scored by the small row functions below, which state their formula. All
arithmetic is carried out in float64 whatever the input dtype; inputs may be read-only
(zero-copy Arrow buffers).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .arrow import Dense, Ragged
from .losses import (
    EMPTY_ROW,
    IGNORED,
    LABEL_RANGE,
    LENGTH,
    OK,
    PRED_NONFINITE,
    PRED_RANGE,
    TARGET_SUM,
    TARGET_VALUE,
)

_INF = math.inf
_NAN = math.nan
_SUM_ATOL = 1e-3  # losses.DENSE_SUM_RTOL, against a target sum of 1

_jit = dict(cache=True, nogil=True)
_pjit = dict(cache=True, nogil=True, parallel=True)


@njit(**_jit)
def _log(p, prm):
    """Clipped log of a probability: ``max(log(clip(p, lo, hi)), logmin)``."""
    return max(math.log(min(max(p, prm.lo), prm.hi)), prm.logmin)


@njit(**_jit)
def _log1m(p, prm):
    """Clipped ``log(1 - p)``: ``max(log1p(-clip(p, lo, hi)), logmin)``."""
    return max(math.log1p(-min(max(p, prm.lo), prm.hi)), prm.logmin)


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
    if prm.from_logits:
        for c in range(p.shape[0]):
            if not math.isfinite(p[c]):
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


@njit(**_jit)
def _lse(p):
    """Max-shifted log-sum-exp: ``m + log(sum_c exp(x_c - m))``, ``m = max_c x_c``."""
    m = -_INF
    for c in range(p.shape[0]):
        m = max(m, float(p[c]))
    s = 0.0
    for c in range(p.shape[0]):
        s += math.exp(float(p[c]) - m)
    return m + math.log(s)


@njit(**_jit)
def _neglog(p, c, lse, prm):
    """``-log p_c``: from logits ``lse - x_c``; from probabilities the clipped ``-log p_c``."""
    if prm.from_logits:
        return lse - float(p[c])
    return -_log(float(p[c]), prm)


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
    lse = _lse(p) if prm.from_logits else 0.0
    e = prm.smoothing
    loss = 0.0
    if e < 1.0:
        loss = (1.0 - e) * _weight(w, y) * _neglog(p, y, lse, prm)
    if e > 0.0:
        acc = 0.0
        for c in range(n):
            acc += _weight(w, c) * _neglog(p, c, lse, prm)
        loss += e / n * acc
    return loss * prm.scale, OK


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
    lse = _lse(p) if prm.from_logits else 0.0
    e = prm.smoothing
    loss = 0.0
    for c in range(n):
        tc = float(t[c]) * (1.0 - e) + e / n
        if tc != 0.0:
            loss += _weight(w, c) * tc * _neglog(p, c, lse, prm)
    return loss * prm.scale, OK


@njit(**_jit)
def _bce_term(x, t, pw, prm):
    """One BCE component ``-[pw t log p + (1-t) log(1-p)]``.

    From logits: ``(1-t) x + (1 + (pw-1) t) (log1p(exp(-|x|)) + max(-x, 0))``.
    From probabilities, a term whose target weight is 0 is skipped (one log for hard targets).
    """
    if prm.from_logits:
        return (1.0 - t) * x + (1.0 + (pw - 1.0) * t) * (math.log1p(math.exp(-abs(x))) + max(-x, 0.0))
    acc = 0.0
    if t != 0.0:
        acc += pw * t * _log(x, prm)
    if t != 1.0:
        acc += (1.0 - t) * _log1m(x, prm)
    return -acc


@njit(**_jit)
def _bce_finish(acc, n, prm):
    if prm.mean:
        acc /= n
    return acc * prm.scale


@njit(**_jit)
def _bce_index_row(p, y, prm, pw):
    """BCE against the one-hot vector of class ``y``, summed or averaged over the C components."""
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
        acc += _bce_term(float(p[c]), on if c == y else off, _weight(pw, c), prm)
    return _bce_finish(acc, n, prm), OK


@njit(**_jit)
def _bce_dense_row(p, t, prm, pw):
    """BCE against dense targets in [0, 1], ``t' = t(1-e) + e/2``, summed or averaged."""
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
        acc += _bce_term(float(p[c]), tc, _weight(pw, c), prm)
    return _bce_finish(acc, n, prm), OK


@njit(**_jit)
def _index_row(p, y, prm, w, pw):
    if prm.bce:
        return _bce_index_row(p, y, prm, pw)
    return _cce_index_row(p, y, prm, w)


@njit(**_jit)
def _dense_row(p, t, prm, w, pw):
    if p.shape[0] != t.shape[0]:
        return _NAN, LENGTH
    if prm.bce:
        return _bce_dense_row(p, t, prm, pw)
    return _cce_dense_row(p, t, prm, w)


@njit(**_pjit)
def _dense_index(P, y, prm, w, pw, out, status):
    """Rows of a dense ``(N, C)`` array against integer targets ``y`` (N,)."""
    for i in prange(P.shape[0]):
        v, s = _index_row(P[i], y[i], prm, w, pw)
        out[i] = v
        status[i] = s


@njit(**_pjit)
def _dense_dense(P, T, prm, w, pw, out, status):
    """Rows of a dense ``(N, C)`` array against dense targets ``(N, C)``."""
    for i in prange(P.shape[0]):
        v, s = _dense_row(P[i], T[i], prm, w, pw)
        out[i] = v
        status[i] = s


@njit(**_pjit)
def _ragged_index(pv, po, y, prm, w, pw, out, status):
    """Ragged rows ``pv[po[i]:po[i+1]]`` against integer targets ``y`` (N,)."""
    for i in prange(po.shape[0] - 1):
        v, s = _index_row(pv[po[i] : po[i + 1]], y[i], prm, w, pw)
        out[i] = v
        status[i] = s


@njit(**_pjit)
def _ragged_dense(pv, po, tv, to, prm, w, pw, out, status):
    """Ragged rows against ragged dense targets ``tv[to[i]:to[i+1]]``."""
    for i in prange(po.shape[0] - 1):
        v, s = _dense_row(pv[po[i] : po[i + 1]], tv[to[i] : to[i + 1]], prm, w, pw)
        out[i] = v
        status[i] = s


def run(pred, target, prm, w, pw, out, status):
    """Launch the kernel that fits the layouts (``arrow.Dense``/``arrow.Ragged``/index array)."""
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
