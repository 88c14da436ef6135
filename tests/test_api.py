"""xn.cce / xn.bce against the NumPy reference, over layouts, dtypes and options."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

import xent_numba as xn
from tests import reference as ref
from tests.layouts import ALL_LAYOUTS, DENSE_LAYOUTS, build, build_index

DTYPES = [np.float32, np.float64]


def make_case(loss, from_logits, target_kind, *, n=37, c=5, ragged=False, seed=0):
    """Valid rows for a loss: ``(rows, targets)`` with targets as ints or dense rows."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 9, size=n) if ragged else np.full(n, c)
    rows, targets = [], []
    for k in lengths:
        k = int(k)
        if from_logits:
            p = rng.normal(0, 3, size=k)
        elif loss == "cce":
            p = rng.random(k) + 0.01
            p /= p.sum()
        else:
            p = rng.random(k)
        y = int(rng.integers(0, k))
        if target_kind == "index":
            t = y
        elif loss == "cce":
            t = np.zeros(k)
            t[y] = 1.0
            if rng.random() < 0.5:  # soft row
                t = rng.random(k)
                t /= t.sum()
        else:
            t = (rng.random(k) < 0.4).astype(float)
            if rng.random() < 0.3:
                t = rng.random(k)  # soft BCE targets
        rows.append(p)
        targets.append(t)
    return rows, targets


def call(loss, pred, target, **kw):
    return (xn.cce if loss == "cce" else xn.bce)(pred, target, **kw)


def reference(loss, rows, targets, **kw):
    return (ref.cce if loss == "cce" else ref.bce)(rows, targets, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ALL_LAYOUTS)
@pytest.mark.parametrize("target_kind", ["index", "dense"])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("loss", ["cce", "bce"])
def test_matches_reference(loss, from_logits, target_kind, layout, dtype):
    ragged = layout not in DENSE_LAYOUTS
    rows, targets = make_case(loss, from_logits, target_kind, ragged=ragged)
    rows = [np.asarray(r, dtype=dtype) for r in rows]  # the reference sees the rounded inputs
    pred = build(rows, layout, dtype)
    target = build_index(targets, layout) if target_kind == "index" else build(targets, layout, dtype)
    got = call(loss, pred, target, from_logits=from_logits)
    assert got.dtype == (np.float64 if dtype == np.float64 else np.float32)
    assert got.shape == (len(rows),)
    ref.assert_close(got, reference(loss, rows, targets, from_logits=from_logits, dtype=dtype), dtype)


OPTIONS = [
    {"log_base": 10},
    {"log_base": 2},
    {"log_base": 0.5},
    {"eps": 1e-3},
    {"eps": "keras"},
    {"eps": "torch"},
    {"eps": "sklearn"},
    {"label_smoothing": 0.1},
    {"label_smoothing": 1.0},
]
CCE_OPTIONS = OPTIONS + [
    {"class_weight": [0.5, 2.0, 1.0, 0.0, 3.0]},
    {"class_weight": [0.5, 2.0, 1.0, 0.1, 3.0], "label_smoothing": 0.2, "log_base": 10},
]
BCE_OPTIONS = OPTIONS + [
    {"reduce": "mean"},
    {"pos_weight": 3.0},
    {"pos_weight": [0.5, 2.0, 1.0, 0.0, 3.0]},
    {"pos_weight": [0.5, 2.0, 1.0, 1.5, 3.0], "label_smoothing": 0.3, "reduce": "mean"},
]


def _with_extremes(rows):
    """Put exact 0s and 1s into probability rows so the eps policy matters."""
    rows = [r.copy() for r in rows]
    rows[0][:] = 0.0
    rows[0][1] = 1.0
    rows[1][0] = 0.0
    return rows


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("target_kind", ["index", "dense"])
@pytest.mark.parametrize(
    "loss,opts",
    [("cce", o) for o in CCE_OPTIONS] + [("bce", o) for o in BCE_OPTIONS],
    ids=lambda x: repr(x) if isinstance(x, dict) else x,
)
def test_options_match_reference(loss, opts, target_kind, from_logits, dtype):
    rows, targets = make_case(loss, from_logits, target_kind, seed=3)
    if not from_logits:
        rows = _with_extremes(rows)
        if target_kind == "dense" and loss == "cce":
            targets[0] = np.eye(5)[1]
    rows = [np.asarray(r, dtype=dtype) for r in rows]
    pred = np.array(rows, dtype=dtype)
    target = np.array(targets) if target_kind == "dense" else np.array(targets, dtype=np.int64)
    if target_kind == "dense":
        target = target.astype(dtype)
    got = call(loss, pred, target, from_logits=from_logits, **opts)
    want = reference(loss, rows, targets, from_logits=from_logits, dtype=dtype, **opts)
    ref.assert_close(got, want, dtype)


@pytest.mark.parametrize("base", [10, math.e, 2])
def test_seed_example(base):
    """The worked example the project grew from: CCE 0.523 vs summed BCE 0.887 in base 10."""
    exp = ref.SEED["expected"][base]
    p = np.array([ref.SEED["pred"]])
    onehot = np.array([ref.SEED["label_one_hot"]])
    idx = np.array([ref.SEED["label_index"]])
    for target in (idx, onehot):
        assert xn.cce(p, target, log_base=base)[0] == pytest.approx(exp["cce"], rel=1e-12)
        assert xn.bce(p, target, log_base=base)[0] == pytest.approx(exp["bce_sum"], rel=1e-12)
        assert xn.bce(p, target, log_base=base, reduce="mean")[0] == pytest.approx(exp["bce_mean"], rel=1e-12)
    # the same row as logits (log p) gives the same CCE, since softmax(log p) = p when p sums to 1
    assert xn.cce(np.log(p), idx, from_logits=True, log_base=base)[0] == pytest.approx(exp["cce"], rel=1e-12)
    if base == 10:
        assert round(float(xn.cce(p, idx, log_base=10)[0]), 3) == 0.523
        assert round(float(xn.bce(p, onehot, log_base=10)[0]), 3) == 0.887


def test_seed_example_arrow_float32():
    pred = pa.array([ref.SEED["pred"]], type=pa.list_(pa.float32()))
    got = xn.cce(pred, pa.array([1]), log_base=10)
    assert got.dtype == np.float32
    assert got[0] == pytest.approx(0.5228787452803376, rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["cce", "bce"])
def test_extreme_logits_are_finite(loss, dtype):
    x = np.array([[1e4, -1e4, 0.0, 5e3], [-1e4, -1e4, -1e4, -1e4], [1e4, 1e4, -1e4, 1e4]], dtype=dtype)
    y = np.array([1, 2, 0])
    got = call(loss, x, y, from_logits=True)
    assert np.all(np.isfinite(got))
    rows = [r.astype(np.float64) for r in x]
    ref.assert_close(got, reference(loss, rows, list(y), from_logits=True), dtype)
    dense = np.eye(4, dtype=dtype)[y]
    assert np.all(np.isfinite(call(loss, x, dense, from_logits=True, label_smoothing=0.1)))


def test_float16_is_widened():
    rows, targets = make_case("cce", False, "index", seed=5)
    p16 = np.array(rows, dtype=np.float16)
    got = xn.cce(p16, np.array(targets))
    assert got.dtype == np.float32
    want = ref.cce(list(p16.astype(np.float64)), targets, dtype=np.float32)
    ref.assert_close(got, want, np.float32)
    got_arrow = xn.cce(pa.array(list(p16), type=pa.list_(pa.float16())), pa.array(targets))
    ref.assert_close(got_arrow, want, np.float32)


def test_ignore_index_gives_nan():
    p = np.full((3, 4), 0.25)
    got = xn.cce(p, np.array([1, -100, 2]), ignore_index=-100)
    assert np.isnan(got[1]) and np.all(np.isfinite(got[[0, 2]]))


def test_read_only_and_integer_targets():
    rows, targets = make_case("bce", False, "dense", seed=9)
    p = np.array(rows)
    t = np.array(targets).round().astype(np.int8)
    p.setflags(write=False)
    t.setflags(write=False)
    ref.assert_close(xn.bce(p, t), ref.bce(rows, list(t.astype(float))), np.float64)
    ref.assert_close(xn.bce(p, t.astype(bool)), ref.bce(rows, list(t.astype(float))), np.float64)


def test_arrow_zero_copy_does_not_copy_values():
    """The kernels read the Arrow buffer in place: no copy of the predictions is made."""
    from xent_numba.arrow import as_rows

    arr = pa.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]], type=pa.list_(pa.float64())).slice(1)
    layout, nulls = as_rows(arr, "pred", is_target=False)
    assert nulls is None
    assert layout.values.ctypes.data == arr.values.buffers()[1].address
    fsl = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32)), 2).slice(1)
    layout, _ = as_rows(fsl, "pred", is_target=False)
    assert layout.values.shape == (2, 2)
    assert layout.values.ctypes.data == fsl.values.buffers()[1].address + 2 * 4


def test_empty_input():
    assert xn.cce(np.empty((0, 3)), np.empty(0, dtype=np.int64)).shape == (0,)
    assert xn.bce(pa.array([], type=pa.list_(pa.float32())), pa.array([], type=pa.int64())).dtype == np.float32


def test_score_returns_status():
    from xent_numba import losses

    p = np.array([[0.5, 0.5], [1.5, -0.5], [0.3, 0.7]])
    out, status = xn.score("cce", p, np.array([0, 1, -1]), ignore_index=-1, on_invalid="nan")
    assert list(status) == [losses.OK, losses.PRED_RANGE, losses.IGNORED]
    assert np.isnan(out[1]) and np.isnan(out[2])
