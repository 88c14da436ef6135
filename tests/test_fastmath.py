"""The hand-written vectorisable exp/log/log1p against NumPy over the whole float64 range."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from xent_numba import _fastmath as fm

TINY = np.finfo(np.float64).tiny
SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, TINY,
           TINY * 0.5, np.finfo(np.float64).max, 1e-300, 1 - 2**-53, 1 + 2**-52, 1e-20, -1e-20]


@njit(cache=True)
def _apply(name, x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        if name == 0:
            out[i] = fm.exp(x[i])
        elif name == 1:
            out[i] = fm.log(x[i])
        else:
            out[i] = fm.log1p(x[i])
    return out


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

    from xent_numba import cpu

    x = np.linspace(0.1, 0.9, 64)
    fresh = njit(cache=False)(cpu._narrow_dense.py_func)
    fresh(x, cpu._NO_OFFSETS, 8, x, cpu._NO_OFFSETS, 8, _params(), np.empty(8), np.empty(8, np.int8))
    asm = "".join(fresh.inspect_asm().values())
    assert any(r in asm for r in ("%ymm", "%zmm", "pd\t%xmm")), "no packed double instructions"


def _params():
    from xent_numba import losses

    return losses.make_params("bce", dtype=np.float64)
