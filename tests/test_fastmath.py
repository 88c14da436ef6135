"""The hand-written vectorisable exp/log/log1p against NumPy over the whole float64 range."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from xent_numba.kernels import fastmath as fm

TINY = np.finfo(np.float64).tiny
SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, TINY,
           TINY * 0.5, np.finfo(np.float64).max, 1e-300, 1 - 2**-53, 1 + 2**-52, 1e-20, -1e-20]


@njit(cache=True)
def _apply(name, x):
    """One approximation over an array: 0-2 exp/log/log1p (float64), 3-5 exp32/log1pexp32/softplus32."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        if name == 0:
            out[i] = fm.exp(x[i])
        elif name == 1:
            out[i] = fm.log(x[i])
        elif name == 2:
            out[i] = fm.log1p(x[i])
        elif name == 3:
            out[i] = fm.exp32(x[i])
        elif name == 4:
            out[i] = fm.log1pexp32(x[i])
        else:
            out[i] = fm.softplus32(x[i])
    return out


def _apply32(name, x):
    return _apply(3 + name, x)


FUNCS = {"exp": (0, np.exp), "log": (1, np.log), "log1p": (2, np.log1p)}


def _inputs(name):
    rng = np.random.default_rng(7)
    if name == "exp":
        body = [rng.uniform(-760, 720, 200_000), rng.uniform(-1, 1, 50_000),
                [709.78, 709.79, -708.39, -708.4, -745.13, -745.14, -746.0, 1e-300]]
    elif name == "log":
        body = [np.exp(rng.uniform(-745, 709.7, 200_000)), rng.uniform(0, 2, 50_000),
                rng.uniform(-5, 0, 100)]
    else:
        body = [np.exp(rng.uniform(-745, 709.7, 200_000)), -np.exp(rng.uniform(-745, 0, 50_000)),
                rng.uniform(-1, 1, 50_000), [-2.0, -1.0 + 2**-53]]
    bits = rng.integers(0, 2**63, 50_000, dtype=np.int64).view(np.float64)  # any float, subnormals too
    return np.concatenate([*map(np.asarray, body), SPECIAL, bits, -bits])


def _ulps(got, want):
    with np.errstate(all="ignore"):
        d = np.abs(got - want) / np.spacing(np.abs(want))
    d[(got == want) | (np.isnan(got) & np.isnan(want))] = 0.0
    return d


@pytest.mark.parametrize("name", list(FUNCS))
def test_within_one_ulp_of_numpy(name):
    code, ref = FUNCS[name]
    x = _inputs(name)
    with np.errstate(all="ignore"):
        want = ref(x)
    got = _apply(code, x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.sign(got[finite]), np.sign(want[finite]))
    assert _ulps(got, want).max() <= 1.0


def test_special_values():
    e = _apply(0, np.array([0.0, -np.inf, np.inf, np.nan, -1000.0, 1000.0]))
    assert e[0] == 1.0 and e[1] == 0.0 and e[2] == np.inf and np.isnan(e[3]) and e[4] == 0.0 and e[5] == np.inf
    lg = _apply(1, np.array([1.0, 0.0, -0.0, -1.0, np.inf, np.nan, 5e-324]))
    assert lg[0] == 0.0 and lg[1] == -np.inf and lg[2] == -np.inf and np.isnan(lg[3])
    assert lg[4] == np.inf and np.isnan(lg[5]) and lg[6] == pytest.approx(np.log(5e-324), rel=1e-15)
    l1 = _apply(2, np.array([0.0, -1.0, -2.0, np.inf, np.nan, 1e-300, -0.5]))
    assert l1[0] == 0.0 and l1[1] == -np.inf and np.isnan(l1[2]) and l1[3] == np.inf and np.isnan(l1[4])
    assert l1[5] == 1e-300 and l1[6] == np.log1p(-0.5)


def test_float32_inputs_are_exact_enough():
    """The kernels widen float32 to float64; results rounded back to float32 are exact."""
    x = np.random.default_rng(1).uniform(-80, 80, 100_000).astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(_apply(0, x).astype(np.float32), np.exp(x).astype(np.float32))


def test_kernel_loops_vectorise():
    """The point of these functions: a loop calling them compiles to vector code (AVX/SSE).

    Numba hides the assembly of kernels loaded from its on-disk cache, so an uncached copy
    of the kernel is compiled here."""
    from numba import njit

    from xent_numba.kernels import cpu

    x = np.linspace(0.1, 0.9, 64)
    fresh = njit(cache=False)(cpu._narrow_dense.py_func)
    scr = cpu._scratch(8, 64)
    fresh(x, cpu._NO_OFFSETS, 8, x, cpu._NO_OFFSETS, 8, _params(), np.empty(8), np.empty(8, np.int8), scr)
    asm = "".join(fresh.inspect_asm().values())
    assert any(r in asm for r in ("%ymm", "%zmm", "pd\t%xmm")), "no packed double instructions"


def _params():
    from xent_numba import losses

    return losses.make_params("bce", dtype=np.float64)


# ---- float32 variants -------------------------------------------------------------------------



def _ref32(name, x64):
    with np.errstate(all="ignore"):
        if name == "exp32":
            return np.exp(x64)
        if name == "log1pexp32":
            return np.log1p(np.exp(-np.abs(x64)))
        return np.logaddexp(0.0, x64)


SPECIAL32 = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 2.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.1754944e-38,
                      -1.1754944e-38, 3.4028235e38, -3.4028235e38, 88.72283, 88.72284, 88.8, -87.3, -103.27,
                      -103.98, -104.0, -110.0, 1e-7, -1e-7, 16.6, -16.6], dtype=np.float32)
ULPS32 = {"exp32": 1.5, "log1pexp32": 5.0, "softplus32": 5.0}


@pytest.mark.parametrize("name", list(ULPS32))
def test_float32_within_a_few_ulp(name):
    """Every float32 bit pattern class (subnormals, huge, 0, 1, +-inf, NaN), in float32 ulps
    of the exact result (computed in float64)."""
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2**32, 2_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([bits, rng.uniform(-110, 95, 1_000_000).astype(np.float32),
                        rng.uniform(-2, 2, 500_000).astype(np.float32), SPECIAL32])
    want = _ref32(name, x.astype(np.float64))
    got = _apply32(list(ULPS32).index(name), x)
    assert got.dtype == np.float32
    with np.errstate(over="ignore"):
        want32 = want.astype(np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want32))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want32))
    fin = np.isfinite(want32)
    with np.errstate(over="ignore"):
        ulp = np.spacing(np.abs(want32[fin])).astype(np.float64)  # inf at the top: no error
    err = np.abs(got[fin].astype(np.float64) - want[fin]) / ulp
    assert err.max() <= ULPS32[name]


def test_float32_special_values():
    e = _apply32(0, np.array([0.0, -np.inf, np.inf, np.nan, -200.0, 200.0, 1.0], np.float32))
    assert e[0] == 1.0 and e[1] == 0.0 and e[2] == np.inf and np.isnan(e[3]) and e[4] == 0.0 and e[5] == np.inf
    assert e[6] == np.float32(np.e)
    lp = _apply32(1, np.array([0.0, np.inf, -np.inf, np.nan, 200.0, 1e-45], np.float32))
    assert lp[0] == np.float32(np.log(2.0)) and lp[1] == 0.0 and lp[2] == 0.0 and np.isnan(lp[3]) and lp[4] == 0.0
    sp = _apply32(2, np.array([np.inf, -np.inf, 50.0, -50.0], np.float32))
    assert sp[0] == np.inf and sp[1] == 0.0 and sp[2] == 50.0 and sp[3] == np.float32(np.exp(-50.0))


@njit(cache=True)
def _log32_all(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = fm.log32(x[i])
    return out


def test_log32_within_one_ulp_on_positive_normals():
    """``log32`` (no division) on what it is given: positive normal float32, as a clipped
    probability is. Near 1 (a confident row's p) its result keeps its relative accuracy."""
    rng = np.random.default_rng(5)
    bits = rng.integers(0x00800000, 0x7F800000, 2_000_000, dtype=np.int64).astype(np.uint32).view(np.float32)
    near1 = (1.0 - rng.integers(1, 2**20, 100_000) * 2.0**-24).astype(np.float32)
    x = np.concatenate([bits, rng.random(1_000_000).astype(np.float32), near1,
                        np.array([1.0, 2.0**-23, 1 - 2.0**-23, 1.1754944e-38, 3.4028235e38, 0.5, 2.0], np.float32)])
    x = x[x >= np.finfo(np.float32).tiny]
    got = _log32_all(x)
    want = np.log(x.astype(np.float64))
    assert got.dtype == np.float32 and got[x == 1.0].tolist() == [0.0] * int((x == 1.0).sum())
    nz = want != 0
    ulp = np.spacing(np.abs(want[nz]).astype(np.float32)).astype(np.float64)
    assert (np.abs(got[nz].astype(np.float64) - want[nz]) / ulp).max() <= 1.0


@njit(cache=True)
def _exp32_sub_all(x, m):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = fm.exp32_sub(x[i], m[i])
    return out


def test_exp32_sub_takes_the_difference_exactly():
    """``e^(x - m)`` for float32 ``x <= m`` within 1.5 float32 ulp (``exp32``'s bound) of the
    exact value (the difference of two float32 is exact in float64), however far below ``m``: rounding
    ``x - m`` to float32 first would cost up to ``|x - m| 2^-24`` (5e-6 at -80; the second
    half of the data is built to round half-way there)."""
    rng = np.random.default_rng(3)
    m = rng.normal(0.0, 30.0, 1_000_000).astype(np.float32)
    x = (m.astype(np.float64) - rng.uniform(0.0, 87.0, m.size)).astype(np.float32)
    m2 = np.float32(40.0) + np.float32(2.0**-18) * rng.integers(1, 8, 10_000).astype(np.float32)
    x2 = np.full(m2.size, -40.0, np.float32)  # x - m = -80 - k 2^-18: half-way cases for float32
    x, m = np.concatenate([x, x2]), np.concatenate([m, m2])
    got = _exp32_sub_all(x, m)
    want = np.exp(x.astype(np.float64) - m.astype(np.float64))
    ok = want >= np.finfo(np.float32).tiny
    ulp = np.spacing(want[ok].astype(np.float32)).astype(np.float64)
    assert got.dtype == np.float32
    assert (np.abs(got[ok].astype(np.float64) - want[ok]) / ulp).max() <= ULPS32["exp32"]
    naive = np.exp((x2 - m2).astype(np.float64))  # what rounding x - m first gives
    assert np.abs(naive / np.exp(x2.astype(np.float64) - m2) - 1).max() > 1e-6
    s = _exp32_sub_all(np.array([-np.inf, np.nan, 1.0, 0.0, -200.0, 5.0], np.float32),
                       np.array([0.0, 0.0, np.nan, 0.0, 0.0, 0.0], np.float32))
    assert s[0] == 0.0 and np.isnan(s[1]) and np.isnan(s[2]) and s[3] == 1.0 and s[4] == 0.0
    assert s[5] == np.float32(np.exp(5.0))
