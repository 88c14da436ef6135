"""Vectorisable ``exp``, ``log`` and ``log1p`` in float64 for the CPU kernels.

Numba >= 0.62 no longer links SVML, so ``math.exp``/``math.log`` inside a loop stay scalar
library calls and stop LLVM from vectorising the loop. These are written with arithmetic,
integer bit operations and selects only (no calls, no branches), so a loop that calls them
vectorises. Accuracy: within a few ulp of the C library over the whole float64 range,
subnormals, 0, 1, +-inf and NaN included (``tests/test_fastmath.py``).

- ``exp``: ``x = k ln2 + r``, ``|r| <= ln2/2``, degree-13 Taylor polynomial of ``e^r``,
  times ``2^k`` built by bit-casting the exponent (in two halves, so that overflow to inf
  and gradual underflow to subnormals and 0 come out right);
- ``log``: fdlibm's ``x = 2^k (1+f)``, ``log(1+f) = 2 atanh(f/(2+f))`` with its minimax
  polynomial; subnormals are scaled by ``2^54`` first;
- ``log1p``: ``log(1+u)`` plus the rounding correction ``(u - ((1+u) - 1)) / (1+u)``;
- ``log_or_log1m``: ``log p`` or ``log(1 - p)`` with one ``log`` call (BCE with 0/1 targets),
  the second with the same correction.

Only ``contract`` (fused multiply-add) is allowed here; reassociation would undo the
compensated steps, and NaN/inf handling is kept (no ``nnan``/``ninf``).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_fm = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})

_INF = math.inf
_LOG2E = 1.4426950408889634
_LN2_HI = float.fromhex("0x1.62e42fee00000p-1")  # 6.93147180369123816490e-01
_LN2_LO = float.fromhex("0x1.a39ef35793c76p-33")  # 1.90821492927058770002e-10
_SHIFT = 6755399441055744.0  # 1.5 * 2**52: x + SHIFT - SHIFT rounds x to an integer
_EXP_HI = 709.8  # exp overflows above 709.78
_EXP_LO = -746.0  # exp underflows to 0 below -745.13
_TWO54 = 18014398509481984.0
_MIN_NORMAL = 2.2250738585072014e-308

# fdlibm / musl log: minimax polynomial of (log(1+f) - 2s)/s - ... in z = s^2
_LG1 = float.fromhex("0x1.5555555555593p-1")
_LG2 = float.fromhex("0x1.999999997fa04p-2")
_LG3 = float.fromhex("0x1.2492494229359p-2")
_LG4 = float.fromhex("0x1.c71c51d8e78afp-3")
_LG5 = float.fromhex("0x1.7466496cb03dep-3")
_LG6 = float.fromhex("0x1.39a09d078c69fp-3")
_LG7 = float.fromhex("0x1.2f112df3e5244p-3")

# 1/n! for the exp polynomial
_E2, _E3, _E4, _E5, _E6, _E7 = (1 / math.factorial(n) for n in range(2, 8))
_E8, _E9, _E10, _E11, _E12, _E13 = (1 / math.factorial(n) for n in range(8, 14))


@intrinsic
def as_float(typingctx, bits):
    """Reinterpret the 64 bits of an int64 as a float64 (no conversion)."""
    if not isinstance(bits, types.Integer) or bits.bitwidth != 64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(bits), codegen


@intrinsic
def as_int(typingctx, x):
    """Reinterpret the bits of a float64 as an int64, of a float32 as an int32 (no conversion)."""
    if x not in (types.float64, types.float32):
        return None
    width = x.bitwidth

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(width))

    return types.Integer.from_bitwidth(width)(x), codegen


@njit(**_fm)
def exp(x):
    """``e^x`` for a float64, vectorisable; ``exp(-inf) = 0``, ``exp(inf) = inf``, NaN stays NaN."""
    xc = x if x < _EXP_HI else _EXP_HI
    xc = xc if xc > _EXP_LO else _EXP_LO  # NaN -> EXP_LO here, put back at the end
    kf = (xc * _LOG2E + _SHIFT) - _SHIFT
    r = (xc - kf * _LN2_HI) - kf * _LN2_LO
    p = _E13
    p = p * r + _E12
    p = p * r + _E11
    p = p * r + _E10
    p = p * r + _E9
    p = p * r + _E8
    p = p * r + _E7
    p = p * r + _E6
    p = p * r + _E5
    p = p * r + _E4
    p = p * r + _E3
    p = p * r + _E2
    p = p * r + 1.0
    p = p * r + 1.0
    k = np.int64(kf)  # in [-1076, 1024]
    k1 = k >> 1
    k2 = k - k1
    y = p * as_float((k1 + 1023) << 52) * as_float((k2 + 1023) << 52)
    return y if x == x else x


@njit(**_fm)
def log(x):
    """Natural log of a float64, vectorisable; ``log(0) = -inf``, ``log(x<0) = NaN``."""
    sub = x < _MIN_NORMAL
    xs = x * _TWO54 if sub else x
    ix = as_int(xs)
    hx = (ix >> 32) + (0x3FF00000 - 0x3FE6A09E)
    k = (hx >> 20) - (0x3FF + 54 if sub else 0x3FF)
    hx = (hx & 0x000FFFFF) + 0x3FE6A09E
    m = as_float((hx << 32) | (ix & 0xFFFFFFFF))  # in [sqrt(2)/2, sqrt(2))
    f = m - 1.0
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    dk = np.float64(k)
    y = s * (hfsq + t1 + t2) + dk * _LN2_LO - hfsq + f + dk * _LN2_HI
    y = y if x < _INF else x  # +inf and NaN
    y = y if x != 0.0 else -_INF
    return y if x >= 0.0 else math.nan


@njit(**_fm)
def log1p(u):
    """``log(1 + u)`` of a float64, accurate for tiny ``u``, vectorisable."""
    w = 1.0 + u
    ok = (w != 0.0) & (w < _INF)
    c = (u - (w - 1.0)) / w if ok else 0.0
    return log(w) + c


@njit(**_fm)
def add(a, b):
    """``a + b`` kept as written: callers built with ``fastmath`` reassociation would turn
    ``(m - x) + l`` into ``(m + l) - x`` and lose a tiny ``l`` (CCE of a confident row)."""
    return a + b


@njit(**_fm)
def log_or_log1m(p, on):
    """``log p`` if ``on`` else ``log(1 - p)`` (exact for tiny ``p``), with a single ``log``:
    ``log(1 - p) = log(q) + (-p - (q - 1)) / q``, ``q = 1 - p`` rounded.

    The correction lives here, compiled without reassociation, so that a caller built with
    ``fastmath`` cannot fold ``-p - ((1 - p) - 1)`` to 0 (it did: -log(1 - 1e-13) was off by
    3e-4 relative)."""
    q = p if on else 1.0 - p
    c = 0.0 if (on | (q == 0.0)) else (-p - (q - 1.0)) / q
    return log(q) + c


# ---- float32 ---------------------------------------------------------------------------------
#
# For float32 inputs the elementwise terms can be computed in float32 (twice the vector
# width of float64). Results are within a few float32 ulp of the correctly rounded value;
# the kernels sum them per row in float64.
#
# - ``exp32``: Cephes ``expf``: ``x = k ln2 + r`` (two-part ln2), degree-5 polynomial of
#   ``(e^r - 1 - r) / r^2``, times ``2^k`` built from the bits in two halves (overflow to inf,
#   gradual underflow to subnormals and 0);
# - ``exp32_sub``: ``e^(x - m)`` with ``x - m`` taken exactly (two-sum), for CCE from logits;
# - ``log1pexp32``: ``log(1 + e^-|x|)``, the softplus tail of BCE from logits:
#   ``u = e^-|x|`` in [0, 1], ``log1p(u) = 2 atanh(s)``, ``s = u / (2 + u)`` in [0, 1/3], as
#   ``u * (2 / (2 + u)) * P(s^2)`` (all terms positive: no cancellation, exact for tiny u);
# - ``softplus32``: ``log(1 + e^x) = max(x, 0) + log1pexp32(x)``;
# - ``log32``: Cephes ``logf`` for a positive normal float32 (a probability clipped to
#   float32 bounds): ``x = 2^e m``, ``m`` in ``[sqrt(2)/2, sqrt(2))``, ``f = m - 1`` (exact,
#   so ``log`` near 1 keeps its relative accuracy), ``log x = f - f^2/2 + f^3 P(f) + e ln2``
#   (two-part ln2, degree-8 ``P``), within 1 float32 ulp; no division (the float64 ``log``'s
#   ``f / (2 + f)`` is most of its cost), so it is the cheaper log in a vectorised loop.

_F32 = np.float32
_LOG2E_F = _F32(1.4426950408889634)
_SHIFT_F = _F32(12582912.0)  # 1.5 * 2**23
_LN2_HI_F = _F32(0.693359375)
_LN2_LO_F = _F32(-2.12194440e-4)
_EXP_HI_F = _F32(89.0)  # e^x overflows float32 above 88.72
_EXP_LO_F = _F32(-104.0)  # and rounds to 0 below -103.97
_EP0 = _F32(1.9875691500e-4)
_EP1 = _F32(1.3981999507e-3)
_EP2 = _F32(8.3334519073e-3)
_EP3 = _F32(4.1665795894e-2)
_EP4 = _F32(1.6666665459e-1)
_EP5 = _F32(5.0000001201e-1)
_ONE_F = _F32(1.0)
_TWO_F = _F32(2.0)
_ZERO_F = _F32(0.0)
# 2 atanh(s) / s = 2 (1 + z/3 + z^2/5 + ...), z = s^2 <= 1/9: truncation error < 2e-8
_AT = tuple(_F32(2.0 / (2 * k + 1)) for k in range(7))


@intrinsic
def as_float32(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (no conversion)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if v.type.width > 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(bits), codegen


@njit(**_fm)
def exp32(x):
    """``e^x`` for a float32, in float32, vectorisable; ``exp32(-inf) = 0``, NaN stays NaN."""
    xc = x if x < _EXP_HI_F else _EXP_HI_F
    xc = xc if xc > _EXP_LO_F else _EXP_LO_F  # NaN -> EXP_LO here, put back at the end
    kf = (xc * _LOG2E_F + _SHIFT_F) - _SHIFT_F
    r = (xc - kf * _LN2_HI_F) - kf * _LN2_LO_F
    p = _EP0
    p = p * r + _EP1
    p = p * r + _EP2
    p = p * r + _EP3
    p = p * r + _EP4
    p = p * r + _EP5
    p = p * (r * r) + r + _ONE_F
    k = np.int32(kf)  # in [-150, 129]
    k1 = k >> 1
    k2 = k - k1
    y = p * as_float32((k1 + 127) << 23) * as_float32((k2 + 127) << 23)
    return y if x == x else x


@njit(**_fm)
def exp32_sub(x, m):
    """``e^(x - m)`` for float32 ``x``, ``m``, in float32, with ``x - m`` taken exactly: its
    float32 rounding ``d`` and the error ``t`` (Knuth's two-sum, 6 additions), ``e^(d + t)``
    through ``exp32``'s reduction with ``t`` added to ``r``. Rounding ``x - m`` first would
    cost ``|x - m| 2^-24`` relative (5e-6 at ``x - m = -80``); this stays within a few
    float32 ulp however far ``x`` is below ``m``. Here, without reassociation, which would
    fold ``t`` to 0. ``e^(-inf) = 0``; NaN stays NaN. (The body repeats ``exp32``'s on
    purpose: with it behind a shared helper, LLVM stopped inlining ``exp32`` into
    ``log1pexp32``, and BCE from float32 logits then ran scalar instead of vectorised.)"""
    d = x - m
    bp = d - x  # two-sum of x and -m: d + t = x - m exactly
    t = (x - (d - bp)) + (-m - bp)
    xc = d if d < _EXP_HI_F else _EXP_HI_F
    xc = xc if xc > _EXP_LO_F else _EXP_LO_F  # NaN -> EXP_LO here, put back at the end
    t = t if xc == d else _ZERO_F  # clamped, infinite or NaN d: no correction (t may be NaN)
    kf = (xc * _LOG2E_F + _SHIFT_F) - _SHIFT_F
    r = ((xc - kf * _LN2_HI_F) - kf * _LN2_LO_F) + t
    p = _EP0
    p = p * r + _EP1
    p = p * r + _EP2
    p = p * r + _EP3
    p = p * r + _EP4
    p = p * r + _EP5
    p = p * (r * r) + r + _ONE_F
    k = np.int32(kf)  # in [-150, 129]
    k1 = k >> 1
    k2 = k - k1
    y = p * as_float32((k1 + 127) << 23) * as_float32((k2 + 127) << 23)
    return y if d == d else d


@njit(**_fm)
def log1pexp32(x):
    """``log(1 + e^-|x|)`` for a float32, in float32, vectorisable (NaN stays NaN)."""
    u = exp32(-abs(x))
    q = _TWO_F / (_TWO_F + u)
    s = u * q * _F32(0.5)
    z = s * s
    p = _AT[6]
    p = p * z + _AT[5]
    p = p * z + _AT[4]
    p = p * z + _AT[3]
    p = p * z + _AT[2]
    p = p * z + _AT[1]
    p = p * z + _AT[0]
    return u * (_F32(0.5) * q * p)


@njit(**_fm)
def softplus32(x):
    """``log(1 + e^x)`` for a float32, in float32, vectorisable."""
    return (x if x > _ZERO_F else _ZERO_F) + log1pexp32(x)


_I32 = np.int32
_SQRTHF_F = _F32(0.707106781186547524)
_LG32 = tuple(_F32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                               1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                               3.3333331174e-1))


@njit(**_fm)
def log32(x):
    """Natural log of a positive normal float32 (>= 2^-126, finite), in float32, vectorisable.
    Zero, subnormals, negatives, inf and NaN give unspecified values: callers clip first."""
    ix = as_int(x)  # int32
    e = ((ix >> _I32(23)) & _I32(0xFF)) - _I32(126)
    m = as_float32((ix & _I32(0x007FFFFF)) | _I32(0x3F000000))  # in [0.5, 1)
    small = m < _SQRTHF_F
    e = e - _I32(1) if small else e
    f = (m + m - _ONE_F) if small else (m - _ONE_F)  # exact
    z = f * f
    p = _LG32[0]
    p = p * f + _LG32[1]
    p = p * f + _LG32[2]
    p = p * f + _LG32[3]
    p = p * f + _LG32[4]
    p = p * f + _LG32[5]
    p = p * f + _LG32[6]
    p = p * f + _LG32[7]
    p = p * f + _LG32[8]
    fe = _F32(e)
    y = p * f * z + fe * _LN2_LO_F - _F32(0.5) * z
    return (f + y) + fe * _LN2_HI_F


@njit(**_fm)
def log_or_log1m32(p, on):
    """``log_or_log1m`` for a float32 ``p`` with ``p`` and ``1 - p`` normal (a probability
    clipped to float32 bounds), in float32 with one ``log32``: ``q = 1 - p`` rounded and
    ``r = -p - (q - 1)``, its rounding error, exactly (each step is exact in float32: Sterbenz,
    or a representable result), so ``log(1 - p) = log32(q) + r / q`` (``|r / q| <= 2^-24``;
    the dropped ``(r/q)^2 / 2`` is below the result's float32 resolution). Here, compiled
    without reassociation, for the reason given at ``log_or_log1m``."""
    q = p if on else _ONE_F - p
    r = _ZERO_F if on else -p - (q - _ONE_F)
    return log32(q) + r / q
