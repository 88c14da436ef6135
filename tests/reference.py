"""Plain NumPy references: slow, row by row, obviously correct. Every test compares to these.

Rows are lists of 1-D float64 arrays (ragged allowed); targets are a list of ints (index
labels) or a list of 1-D arrays (dense). Invalid rows are not handled here: tests that use
these references feed valid rows only (invalid rows are tested on their own).
"""

from __future__ import annotations

import math

import numpy as np

SEED = {
    "pred": [0.1, 0.3, 0.2, 0.4],
    "label_one_hot": [0, 1, 0, 0],
    "label_index": 1,
    "expected": {
        10: {"cce": 0.5228787452803376, "bce_sum": 0.8873949984654255, "bce_mean": 0.22184874961635637},
        math.e: {"cce": 1.2039728043259361, "bce_sum": 2.043302495063963, "bce_mean": 0.5108256237659907},
        2: {"cce": 1.7369655941662063, "bce_sum": 2.947862376664825, "bce_mean": 0.7369655941662062},
    },
}


def clip_policy(eps, dtype):
    """(lo, hi, logmin) for an eps number or preset, as documented in xent_numba.losses."""
    if eps in ("auto", "sklearn"):
        e = float(np.finfo(dtype).eps)
        return e, 1 - e, -np.inf
    if eps == "keras":  # Keras clips in the input dtype: float32 gives [1e-7, 1 - 2**-23]
        if np.dtype(dtype) == np.float32:
            return float(np.float32(1e-7)), 1 - 2**-23, -np.inf
        return 1e-7, 1 - 1e-7, -np.inf
    if eps == "torch":
        return 0.0, 1.0, -100.0
    if eps == "none":
        return 0.0, 1.0, -np.inf
    return float(eps), 1 - float(eps), -np.inf


def _log_probs(p, from_logits, lo, hi, logmin):
    p = np.asarray(p, dtype=np.float64)
    if from_logits:
        m = p.max()
        return p - m - np.log(np.sum(np.exp(p - m)))
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(np.clip(p, lo, hi)), logmin)


def _dense_target(t, c):
    if np.ndim(t) == 0:
        out = np.zeros(c)
        out[int(t)] = 1.0
        return out
    return np.asarray(t, dtype=np.float64)


def cce(rows, targets, *, from_logits=False, log_base=math.e, eps="auto", dtype=np.float64,
        label_smoothing=0.0, class_weight=None, ignore_index=None):
    lo, hi, logmin = clip_policy(eps, dtype)
    out = []
    for p, t in zip(rows, targets, strict=False):
        c = len(p)
        if ignore_index is not None and np.ndim(t) == 0 and int(t) == ignore_index:
            out.append(np.nan)
            continue
        tt = _dense_target(t, c) * (1 - label_smoothing) + label_smoothing / c
        w = np.ones(c) if class_weight is None else np.asarray(class_weight, float)[:c]
        lp = _log_probs(p, from_logits, lo, hi, logmin)
        terms = np.where(tt != 0, -w * tt * np.where(tt != 0, lp, 0.0), 0.0)
        out.append(terms.sum() / math.log(log_base))
    return np.array(out)


def bce(rows, targets, *, from_logits=False, log_base=math.e, eps="auto", dtype=np.float64,
        label_smoothing=0.0, pos_weight=None, reduce="sum"):
    lo, hi, logmin = clip_policy(eps, dtype)
    out = []
    for p, t in zip(rows, targets, strict=False):
        p = np.asarray(p, dtype=np.float64)
        c = len(p)
        tt = _dense_target(t, c) * (1 - label_smoothing) + label_smoothing / 2
        if pos_weight is None:
            pw = np.ones(c)
        elif np.ndim(pos_weight) == 0:
            pw = np.full(c, float(pos_weight))
        else:
            pw = np.asarray(pos_weight, float)[:c]
        if from_logits:
            # -[pw t log(sigmoid x) + (1-t) log(1 - sigmoid x)], log-sigmoid computed stably
            log_sig = -np.logaddexp(0.0, -p)
            log_one_minus = -np.logaddexp(0.0, p)
            terms = -(pw * tt * log_sig + (1 - tt) * log_one_minus)
        else:
            pc = np.clip(p, lo, hi)
            with np.errstate(divide="ignore"):
                lp = np.maximum(np.log(pc), logmin)
                l1 = np.maximum(np.log1p(-pc), logmin)
            terms = -(np.where(tt != 0, pw * tt * lp, 0.0) + np.where(tt != 1, (1 - tt) * l1, 0.0))
        v = terms.sum() / math.log(log_base)
        out.append(v / c if reduce == "mean" else v)
    return np.array(out)


def binary(p, t, *, loss="bce", from_logits=False, log_base=math.e, eps="auto", dtype=np.float64,
           label_smoothing=0.0, class_weight=None, pos_weight=None, ignore_index=None):
    """One prediction per row (the 1-D reading): ``p`` P(y=1) (or its logit), ``t`` 0/1 or soft.

    ``-[a t' log p + b (1-t') log(1-p)]``, ``t' = t(1-e) + e/2``; BCE: ``a = pos_weight, b = 1``;
    CCE over the two classes ``[1-p, p]``: ``(b, a) = class_weight`` (CCE's dense-target
    smoothing ``e/C`` is ``e/2`` here too). Rows whose integer label is ``ignore_index``
    (CCE) are NaN."""
    p = np.asarray(p, dtype=np.float64)
    raw = np.asarray(t)
    t = raw.astype(np.float64)
    tt = t * (1 - label_smoothing) + label_smoothing / 2
    a, b = 1.0, 1.0
    if loss == "bce" and pos_weight is not None:
        a = float(np.ravel(pos_weight)[0])
    if loss == "cce" and class_weight is not None:
        b, a = (float(w) for w in class_weight[:2])
    lo, hi, logmin = clip_policy(eps, dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        if from_logits:
            neg_lp, neg_l1 = np.logaddexp(0.0, -p), np.logaddexp(0.0, p)  # -log p, -log(1-p)
        else:
            pc = np.clip(p, lo, hi)
            neg_lp = -np.maximum(np.log(pc), logmin)
            neg_l1 = -np.maximum(np.log1p(-pc), logmin)
        out = np.where(tt != 0, a * tt * neg_lp, 0.0) + np.where(tt != 1, b * (1 - tt) * neg_l1, 0.0)
    out = out / math.log(log_base)
    if loss == "cce" and ignore_index is not None and raw.dtype.kind in "iu":
        out = np.where(raw == ignore_index, np.nan, out)
    return out


def assert_close(got, want, dtype):
    """The accuracy contract: 1e-9 relative for float64 results, 1e-5 for float32."""
    rtol = 1e-9 if np.dtype(dtype) == np.float64 else 1e-5
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=rtol, atol=1e-12)


def summary_stats(values, *, lo_decade=-12, hi_decade=6, bins_per_decade=200):
    """The loss summary in plain NumPy: NaN skipped; count, count of infinities, sum of the
    finite values (exact, fsum), min, max, and the log-binned histogram (bin 0: <= 1e-12,
    the last: >= 1e6 and inf)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    finite = np.isfinite(v)
    n_bins = (hi_decade - lo_decade) * bins_per_decade + 2
    # bin b (1 .. n_bins-2) holds [edge[b-1], edge[b]), edge[j] = 10**(lo_decade + j/bins_per_decade)
    edges = 10.0 ** (lo_decade + np.arange(n_bins - 1) / bins_per_decade)
    b = np.searchsorted(edges, v, side="right")
    b[~(v > edges[0])] = 0
    return {
        "count": v.size,
        "n_inf": int((~finite).sum()),
        "total": math.fsum(v[finite]),
        "min": float(v.min()) if v.size else math.inf,
        "max": float(v.max()) if v.size else -math.inf,
        "hist": np.bincount(b, minlength=n_bins),
    }


def class_sums(labels, values):
    """Per-class sums and counts of the non-NaN losses of rows with a label >= 0."""
    labels, values = np.asarray(labels), np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(values) & (labels >= 0)
    k = int(labels[ok].max()) + 1 if ok.any() else 0
    return (np.bincount(labels[ok], weights=values[ok], minlength=k),
            np.bincount(labels[ok], minlength=k))


# ---- exact references (mpmath, 60 digits) for the hard rows of tests/test_numerics.py -------
#
# The same formulas as above, but every log, exp and sum carried out in 60-digit arithmetic
# on the exact values of the (float64 or widened float32) inputs, so a loss of 1e-20 is known
# to all its digits. Clipping uses the float64 bounds the kernels use; a term whose weight is
# 0 is 0 (0 log 0 = 0); a -inf logit is a class of probability 0.


def _mp():
    import mpmath

    mpmath.mp.dps = 60
    return mpmath


def _mp_log_softmax(row, mp):
    finite = [mp.mpf(float(x)) for x in row if x != -np.inf]
    if not finite:
        return [-mp.inf for _ in row]
    m = max(finite)
    lse = m + mp.log(mp.fsum(mp.exp(x - m) for x in finite))
    return [(-mp.inf if x == -np.inf else mp.mpf(float(x)) - lse) for x in row]


def _mp_clipped_logs(row, lo, hi, logmin, mp):
    lp, l1 = [], []
    for x in row:
        p = mp.mpf(min(max(float(x), lo), hi))  # the float64 clip, then exact logs
        a = mp.log(p) if p > 0 else -mp.inf
        b = mp.log(1 - p) if p < 1 else -mp.inf
        lp.append(max(a, logmin))
        l1.append(max(b, logmin))
    return lp, l1


def exact_cce(row, target, *, from_logits=False, eps="auto", dtype=np.float64, label_smoothing=0.0,
              class_weight=None, normalize=False):
    """CCE of one row to 60 digits, as a float (inf when a counted class has probability 0)."""
    mp = _mp()
    c = len(row)
    if normalize and not from_logits:
        s = mp.fsum(mp.mpf(float(x)) for x in row)
        row = [float(mp.mpf(float(x)) / s) for x in row]
        row = np.asarray(row, dtype=dtype)
    if from_logits:
        lp = _mp_log_softmax(row, mp)
    else:
        lo, hi, logmin = clip_policy(eps, dtype)
        lp, _ = _mp_clipped_logs(row, lo, hi, logmin, mp)
    t = _dense_target(target, c) * (1 - label_smoothing) + label_smoothing / c
    w = np.ones(c) if class_weight is None else np.asarray(class_weight, float)[:c]
    acc = mp.mpf(0)
    for k in range(c):
        q = mp.mpf(float(w[k])) * mp.mpf(float(t[k]))
        if q != 0:
            acc -= q * lp[k]
    return float(acc)


def exact_bce(row, target, *, from_logits=False, eps="auto", dtype=np.float64, label_smoothing=0.0,
              pos_weight=None, weight=None, reduce="sum"):
    """BCE of one row to 60 digits, as a float; ``weight`` multiplies each component."""
    mp = _mp()
    c = len(row)
    t = _dense_target(target, c) * (1 - label_smoothing) + label_smoothing / 2
    pw = np.ones(c) if pos_weight is None else np.broadcast_to(np.asarray(pos_weight, float), (c,))
    ew = np.ones(c) if weight is None else np.broadcast_to(np.asarray(weight, float), (c,))
    if from_logits:  # log sigmoid(x) = -log(1 + e^-x); a -inf logit is p = 0
        lp = [-mp.log1p(mp.exp(-mp.mpf(float(x)))) if x != -np.inf else -mp.inf for x in row]
        l1 = [-mp.log1p(mp.exp(mp.mpf(float(x)))) if x != -np.inf else mp.mpf(0) for x in row]
    else:
        lo, hi, logmin = clip_policy(eps, dtype)
        lp, l1 = _mp_clipped_logs(row, lo, hi, logmin, mp)
    acc = mp.mpf(0)
    for k in range(c):
        tk = mp.mpf(float(t[k]))
        a = mp.mpf(float(pw[k])) * tk
        b = 1 - tk
        term = (a * lp[k] if a != 0 else 0) + (b * l1[k] if b != 0 else 0)
        e = mp.mpf(float(ew[k]))
        acc -= e * term if e != 0 else 0
    v = float(acc)
    return v / c if reduce == "mean" else v
