"""The per-row math of the GPU kernels as ``@cuda.jit`` device functions: the same numbers
and statuses as the CPU row functions (``cpu_rows.py``), for a reader who checks formulas.

Every thread folds its share of a row into a small *state* (one pass, nothing re-read):
``(flags, m, s, a, d, u, acc)`` = validation bits, running max ``m`` and ``s = sum exp(x - m)``
(online log-sum-exp, rescaled when the max grows), ``a = sum q_c`` and
``d = sum q_c (m - x_c)`` (so ``sum q_c (lse - x_c) = d + a log s`` with no cancellation),
the dense-target sum ``u`` and a plain sum ``acc`` (probability losses, BCE). States merge
associatively (``merge``), and the row's first thread turns the merged state into
``(loss, status)`` exactly as the CPU row functions do, in the same order of checks
(``make_finish``).

The functions are specialised at compile time by a ``Spec`` (loss mode, float width, launch
settings): its fields are constants of the closures the factories build, so dead branches
vanish. Each factory is cached per spec, so a spec's device functions are built once and
shared by every kernel shape (``gpu_kernels.py``).

Precision: transcendental functions run in the input precision (float32 ``exp`` through
the fast ``__expf`` intrinsic in the log-sum-exp, libdevice ``logf``/``log1pf`` elsewhere);
clipping, targets, weights and every accumulation are float64, so float32 results stay
within 1e-5 relative of the CPU and float64 results within 1e-9.

The options arrive as two tuples: ``k`` (floats, ``gpu_launch.consts``: scale, lo, hi,
logmin, smoothing, the logs of the clip ends, mean, the smoothed BCE targets) and ``ki``
(ints: number of class weights, of pos weights, has ignore_index, ignore_index).
"""

from __future__ import annotations

import math
from functools import cache
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
from numba import cuda

from ..losses import (
    DENSE_SUM_RTOL,
    OK,
    PRED_NONFINITE,
    PRED_RANGE,
    TARGET_MASKED,
    TARGET_SUM,
    TARGET_VALUE,
)

NF = 6  # float fields of a state kept in shared memory (m, s, a, d, u, acc)


class Spec(NamedTuple):
    """What a kernel is compiled for (each field is a compile-time constant).

    ``bce``/``logits``/``index`` fix the formula (BCE or CCE, logits or probabilities, index
    labels or dense targets), ``f32`` the float width of the element math, ``tpb`` the threads
    per block (sizes the shared arrays), ``shuffle`` the reduction path (warp shuffles, or
    shared memory), ``fast`` float32 ``exp`` through the ``__expf`` intrinsic (a real GPU
    only: ``gpu_launch.spec`` turns it off in the CUDA simulator).
    """

    bce: bool
    logits: bool
    index: bool
    f32: bool
    tpb: int
    shuffle: bool
    fast: bool


def float_type(spec: Spec):
    """The NumPy float type of the element math."""
    return np.float32 if spec.f32 else np.float64


@cache
def make_terms(spec: Spec) -> SimpleNamespace:
    """The element terms: ``weight``, ``clog``, ``clog1m``, ``bce_term``."""
    LOGITS = spec.logits
    FT = float_type(spec)

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

    return SimpleNamespace(weight=weight, clog=clog, clog1m=clog1m, bce_term=bce_term)


@cache
def make_state(spec: Spec) -> SimpleNamespace:
    """The row state: ``ident``, ``step`` (fold one class in), ``merge`` (two states into
    one), and ``store``/``load`` (a state in the ``NF`` float rows and the int row of
    shared or global memory)."""
    BCE, LOGITS, INDEX = spec.bce, spec.logits, spec.index
    FT = float_type(spec)
    if spec.f32 and spec.fast:
        from numba.cuda import libdevice

        EXP = libdevice.fast_expf
    else:
        EXP = math.exp
    terms = make_terms(spec)
    weight, clog, bce_term = terms.weight, terms.clog, terms.bce_term

    @cuda.jit(device=True)
    def ident():
        """The empty state (the identity of ``merge``)."""
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
        """Write state ``st`` to column ``j`` of ``sf`` (floats) and ``si`` (flags)."""
        si[j] = st[0]
        sf[0, j] = np.float64(st[1])
        sf[1, j] = st[2]
        sf[2, j] = st[3]
        sf[3, j] = st[4]
        sf[4, j] = st[5]
        sf[5, j] = st[6]

    @cuda.jit(device=True)
    def load(sf, si, j):
        """The state in column ``j`` of ``sf`` and ``si``."""
        return (si[j], FT(sf[0, j]), sf[1, j], sf[2, j], sf[3, j], sf[4, j], sf[5, j])

    return SimpleNamespace(ident=ident, step=step, merge=merge, store=store, load=load)


@cache
def make_finish(spec: Spec):
    """``finish(st, pre, n, yy, xy, k, w, ki)``: a row's ``(loss, status)`` from its merged
    state."""
    BCE, LOGITS, INDEX = spec.bce, spec.logits, spec.index
    terms = make_terms(spec)
    weight, clog = terms.weight, terms.clog

    @cuda.jit(device=True)
    def finish(st, pre, n, yy, xy, k, w, ki):
        """(loss, status) of a row from its merged state, checks in the CPU's order."""
        if pre != OK:
            return math.nan, pre
        f = st[0]
        if not INDEX:
            if f & 4:
                return math.nan, TARGET_VALUE
            if not BCE and abs(st[5] - 1.0) > DENSE_SUM_RTOL:
                return math.nan, TARGET_SUM
        if f & 1:
            return math.nan, PRED_NONFINITE
        if f & 2:
            return math.nan, PRED_RANGE
        e = k[4]
        loss = 0.0
        if BCE:
            loss = st[6]
            if k[9] != 0.0:
                loss /= n
        elif LOGITS:
            if f & 8:
                return math.inf, TARGET_MASKED
            ls = math.log1p(st[2])  # lse = m + ls; -log p_c = (m - x_c) + ls, both >= 0
            if INDEX:
                wy = (1.0 - e) * weight(w, ki[0], yy)
                if wy != 0.0:
                    if xy == -math.inf:
                        return math.inf, TARGET_MASKED
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
            return math.inf, TARGET_MASKED
        return loss * k[0], OK

    return finish
