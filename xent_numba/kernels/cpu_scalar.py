"""CPU kernel for scalar binary rows: one probability ``p`` (or logit ``x``) and one label per row.

Per row, with the smoothed label ``t' = t(1-e) + e/2`` and weights ``a`` (positive term)
and ``b`` (negative term):

.. math:: \\ell = -\\frac{1}{\\ln b_{\\log}}\\left[a\\, t' \\log p + b\\,(1-t') \\log(1-p)\\right]

- BCE: ``a = pos_weight``, ``b = 1``;
- CCE over the two classes ``[1-p, p]`` with index label ``y``: ``a = w_1``, ``b = w_0``
  (``class_weight``); with no weights the same number as BCE.

``log(1-p)`` is ``log1p(-p)`` (exact for tiny ``p``); for hard 0/1 labels one log per row:
``log(q) + (-p - (q - 1)) / q`` with ``q = 1 - p``. From logits:
``-log p = max(-x, 0) + log1p(e^{-|x|})`` and ``-log(1-p) = max(x, 0) + log1p(e^{-|x|})``
(never clipped; ``x = -inf`` is ``p = 0``). A term whose weight ``t'`` or ``1-t'`` is 0 is
skipped (``0 log 0 = 0``).

Validation is fused: per row a status (``losses``): prediction NaN/inf (``+inf``/NaN logit),
probability outside [0, 1], an integer label other than 0/1 (``LABEL_RANGE``), a float
label outside [0, 1] (``TARGET_VALUE``), or ``IGNORED`` (CCE, ``ignore_index``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..losses import IGNORED, LABEL_RANGE, OK, PRED_NONFINITE, PRED_RANGE, TARGET_VALUE
from . import fastmath as fm
from .cpu_rows import _clip, _lpe, _max  # inlined, so compiled with this module's flags
from .signatures import frozen

_INF = math.inf
_NAN = math.nan
_BLOCK = 16384  # rows per parallel work item

_FASTMATH = False  # no reassociation: it would cancel the log1p correction below (no sums here)
_jit = dict(cache=True, nogil=True, error_model="numpy", fastmath=_FASTMATH)
_ijit = dict(_jit, inline="always")


@njit(**_ijit)
def _status(x, t, logits, soft, label_code, ignore, ig):
    """Row status, branch-free (selects only, so the row loop vectorises): IGNORED first, then
    the label (``label_code``: LABEL_RANGE for 0/1 labels, TARGET_VALUE for soft ones), then the
    prediction (NaN/+inf logit, or a probability outside [0, 1] / not finite)."""
    fin = abs(x) < _INF
    p_ok = (x < _INF) if logits else ((x >= 0.0) & (x <= 1.0))
    s = OK if p_ok else (PRED_RANGE if (fin and not logits) else PRED_NONFINITE)
    t_ok = (t >= 0.0) & (t <= 1.0) & (soft | (t == 0.0) | (t == 1.0))
    s = s if t_ok else label_code
    return IGNORED if (ignore & (t == ig)) else s


@njit(**_ijit)
def _prob_hard(p, on, lo, hi, logmin):
    """``-log p`` if ``on`` else ``-log(1 - p)`` (clipped), with a single log.

    ``log(1 - p) = log(q) + c / q`` with ``q = fl(1 - p)`` and its rounding error ``c``
    (log1p's correction). ``c`` is 0 unless ``q`` is in (0.5, 1] (``1 - p`` is exact for
    ``p >= 0.5``), where ``1/q = 1 + d + d^2 + ...`` (``d = 1 - q``) is replaced by
    ``2 - q``: a relative error ``d^2`` on a term below half an ulp of ``q``, far below the
    result's own rounding, and no division in the loop."""
    pc = _clip(p, lo, hi)
    q = pc if on else 1.0 - pc
    corr = 0.0 if on else (-pc - (q - 1.0)) * (2.0 - q)
    return -_max(fm.log(q) + corr, logmin)


@njit(**_ijit)
def _prob_soft(p, t, a, b, lo, hi, logmin):
    """``-[a t log p + b (1-t) log1p(-p)]`` (clipped); a term with weight 0 is skipped."""
    pc = _clip(p, lo, hi)
    lp = _max(fm.log(pc), logmin)
    l1 = _max(fm.log1p(-pc), logmin)
    return -((a * t * lp if t != 0.0 else 0.0) + (b * (1.0 - t) * l1 if t != 1.0 else 0.0))


@njit(**_ijit)
def _logit(x, t, a, b):
    """``a t softplus(-x) + b (1-t) softplus(x)``; a term with weight 0 is skipped."""
    xf = float(x)
    lpe = _lpe(x)
    neg = _max(-xf, 0.0) + lpe  # -log p
    pos = _max(xf, 0.0) + lpe  # -log(1 - p)
    return (a * t * neg if t != 0.0 else 0.0) + (b * (1.0 - t) * pos if t != 1.0 else 0.0)


@njit(**_jit)
def _block(p, y, soft, prm, a, b, ignore, out, status):
    """One block of rows (slices: indices from 0 are known non-negative, so the loops
    vectorise); returns how many rows are invalid (status above IGNORED)."""
    e = prm.smoothing
    logits = prm.from_logits
    hard = e == 0.0 and not logits
    if hard and soft:  # float labels: one log per row only when every label is 0 or 1
        for i in range(p.shape[0]):
            t = float(y[i])
            hard &= (t == 0.0) | (t == 1.0)
    lo, hi, lm, sc = prm.lo, prm.hi, prm.logmin, prm.scale
    code = TARGET_VALUE if soft else LABEL_RANGE
    ig = float(prm.ignore_index)
    keep, lose = 1.0 - e, 0.5 * e
    if logits:
        for i in range(p.shape[0]):
            x, t = p[i], float(y[i])
            s = _status(float(x), t, True, soft, code, ignore, ig)
            v = _logit(x, t * keep + lose, a, b) * sc
            status[i] = s
            out[i] = v if s == OK else _NAN
    elif hard:
        for i in range(p.shape[0]):
            x, t = float(p[i]), float(y[i])
            s = _status(x, t, False, soft, code, ignore, ig)
            on = t != 0.0
            v = _prob_hard(x, on, lo, hi, lm) * (a if on else b) * sc
            status[i] = s
            out[i] = v if s == OK else _NAN
    else:
        for i in range(p.shape[0]):
            x, t = float(p[i]), float(y[i])
            s = _status(x, t, False, soft, code, ignore, ig)
            v = _prob_soft(x, t * keep + lose, a, b, lo, hi, lm) * sc
            status[i] = s
            out[i] = v if s == OK else _NAN
    bad = 0  # counted here, over the block's statuses still in cache (not in the loops above,
    for i in range(p.shape[0]):  # where the extra reduction stopped them from vectorising)
        bad += status[i] > IGNORED
    return bad


@njit(parallel=True, **_jit)
def _binary(p, y, soft, prm, a, b, ignore, out, status):
    """Rows ``p[i]`` (probability or logit) against labels ``y[i]``, in blocks of ``_BLOCK``;
    returns the number of invalid rows."""
    n = p.shape[0]
    nblk = (n + _BLOCK - 1) // _BLOCK
    bad = 0
    for k in prange(nblk):
        r0, r1 = k * _BLOCK, min(n, (k + 1) * _BLOCK)
        bad += _block(p[r0:r1], y[r0:r1], soft, prm, a, b, ignore, out[r0:r1], status[r0:r1])
    return bad


def run(p: np.ndarray, y: np.ndarray, prm, a: float, b: float, out: np.ndarray, status: np.ndarray) -> int:
    """Score ``p`` (N,) against ``y`` (N,) into ``out`` and ``status`` (see the module
    docstring); return the number of invalid rows (so callers need no second pass).

    ``p``: float32/float64, contiguous. ``y``: uint8/int64 (0/1 labels; ``ignore_index``
    applies to CCE) or float32/float64 (soft labels): ``arrow.as_labels`` canonicalises them,
    so eight signatures cover every input."""
    p, y = frozen(p), frozen(y)  # one signature for NumPy and zero-copy Arrow inputs
    soft = y.dtype.kind == "f"
    ignore = bool(prm.has_ignore and not prm.bce and not soft)
    return int(_binary(p, y, soft, prm, float(a), float(b), ignore, out, status))


__all__ = ["run"]
