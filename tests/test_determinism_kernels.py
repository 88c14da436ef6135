"""A row's loss does not depend on which rows share its call, block or thread (issue 14).

Every CPU fast mode (CCE/BCE x probabilities/logits x index/dense targets, no options)
scores N rows at once, then in slices of 1, 7, 255-257 and 1,023-1,025 rows, then with one
Numba thread; the losses must be bit-identical (NaN where NaN). The narrow (block) kernels
work on blocks of ``cpu_blocks._BLOCK`` rows (up to ``_MAX_ROWS`` for dense rows of a few
classes), so the slices put each row in blocks with other neighbours, at other offsets; the
ragged layouts mix short rows with rows wider than ``cpu_blocks._NARROW``, so that some
slices average under the block threshold and others over it
(the same row then goes through the block kernels in one call and the per-row kernels in
another). Values are checked against the NumPy reference too, so that "equal" is not
"equally wrong".
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
import pytest

import xent_numba as xn
from tests import reference as ref
from xent_numba.kernels import cpu_blocks

N = 2100  # over two blocks of cpu_blocks._MAX_ROWS (1,024 rows: dense rows of two classes)
SLICES = (1, 7, 255, 256, 257, 1023, 1024, 1025)
MODES = ("cce_prob_index", "cce_logit_index", "cce_logit_onehot", "cce_prob_onehot",
         "bce_prob_multihot", "bce_logit_multihot", "bce_logit_index")


def _lengths(c, ragged, rng):
    if not ragged:
        return np.full(N, c)
    # mostly short rows (1..c), every 9th row wider than the block threshold: the mean of
    # the whole array is under it, a slice of one wide row is over it
    n = rng.integers(1, c + 1, N)
    n[::9] = cpu_blocks._NARROW + 40
    return n


def _data(mode, c, dtype, ragged, seed=0):
    rng = np.random.default_rng(seed)
    lens = _lengths(c, ragged, rng)
    rows, tgts, labels = [], [], []
    for i, n in enumerate(lens):
        x = rng.normal(0.0, 3.0, n)
        if i % 5 == 0:  # a confident row: one logit far above the rest (losses ~1e-18)
            x[rng.integers(0, n)] += 45.0
        y = int(rng.integers(0, n))
        if i % 5 == 0:
            y = int(np.argmax(x))
        if mode.startswith("cce"):
            p = np.exp(x - x.max())
            p /= p.sum()
        else:
            p = 1.0 / (1.0 + np.exp(-x))
        pred = x if "logit" in mode else p
        if mode.startswith("bce") and "multihot" in mode:
            t = (rng.random(n) < 0.3).astype(float)
        else:
            t = np.zeros(n)
            t[y] = 1.0
        rows.append(pred.astype(dtype))
        tgts.append(t.astype(dtype))
        labels.append(y)
    labels = np.array(labels)
    if ragged:
        typ = pa.float32() if dtype == np.float32 else pa.float64()
        P = pa.array([r.tolist() for r in rows], type=pa.list_(typ))
        T = pa.array([t.tolist() for t in tgts], type=pa.list_(typ))
    else:
        P, T = np.stack(rows), np.stack(tgts)
    target = labels if mode.endswith("index") else T
    return P, target, rows, tgts, labels


def _score(mode, P, target):
    fn = xn.cce if mode.startswith("cce") else xn.bce
    return np.asarray(fn(P, target, from_logits="logit" in mode))


def _slice(a, i, j):
    return a[i:j] if isinstance(a, np.ndarray) else a.slice(i, j - i)


def _expected(mode, rows, tgts, labels, dtype):
    rows = [r.astype(np.float64) for r in rows]
    logits = "logit" in mode
    if mode.startswith("cce"):
        targets = labels if mode.endswith("index") else [t.astype(np.float64) for t in tgts]
        return ref.cce(rows, targets, from_logits=logits, dtype=dtype)
    targets = labels if mode.endswith("index") else [t.astype(np.float64) for t in tgts]
    return ref.bce(rows, targets, from_logits=logits, dtype=dtype)


@pytest.mark.parametrize("ragged", [False, True], ids=["dense", "ragged"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", [2, 10, 40])  # 40: wider than a vector, narrower than the block limit
@pytest.mark.parametrize("mode", MODES)
def test_rows_do_not_depend_on_their_neighbours(mode, c, dtype, ragged):
    P, target, rows, tgts, labels = _data(mode, c, dtype, ragged)
    whole = _score(mode, P, target)
    assert whole.shape == (N,)
    ref.assert_close(whole, _expected(mode, rows, tgts, labels, dtype), dtype)
    for k in SLICES:
        n = N if k > 1 else 150  # single rows: the first 150 (each is its own call)
        parts = np.concatenate([_score(mode, _slice(P, i, min(i + k, n)), _slice(target, i, min(i + k, n)))
                                for i in range(0, n, k)])
        np.testing.assert_array_equal(parts, whole[:n], err_msg=f"slices of {k} rows")
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one = _score(mode, P, target)
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(one, whole, err_msg="one thread")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [2, 3, 10, 24, 40, 70])
def test_cce_logits_one_hot_targets_score_as_their_index_labels(c, dtype):
    """CCE from logits: a one-hot target row and its index label give the same bits, dense or
    as Arrow lists, uniform or not (``sum_c t_c (m - x_c)`` is ``m - x_y`` exactly, in
    float64). A difference ``x_c - m`` rounded in float32 (Numba's ``float()`` of a float32
    stays float32) once broke this in some rows, by 1 ulp."""
    rng = np.random.default_rng(c)
    n = 2000
    x = rng.normal(0.0, 3.0, (n, c)).astype(dtype)
    y = rng.integers(0, c, n)
    oh = np.eye(c, dtype=dtype)[y]
    want = xn.cce(x, y, from_logits=True)
    lt = pa.list_(pa.from_numpy_dtype(np.dtype(dtype)))
    odd = np.zeros(c + 1, dtype)
    odd[0] = 1.0
    cases = {
        "dense": (x, oh),
        "lists": (pa.array(list(x), type=lt), pa.array(list(oh), type=lt)),
        "ragged": (pa.array(list(x) + [odd], type=lt), pa.array(list(oh) + [odd], type=lt)),
    }
    for name, (p, t) in cases.items():
        got = xn.cce(p, t, from_logits=True)[:n]
        assert np.array_equal(got, want), (name, int((got != want).sum()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [2, 3, 10, 40, 70])
def test_a_row_scores_the_same_in_every_layout(c, dtype):
    """Every mode: the same rows as an (N, C) array, as Arrow lists of one width (which
    ``cpu.run`` scores as dense rows) and as lists with one row of another width appended (the
    ragged kernels) give the same bits: a row's sums run in class order in every layout."""
    rng = np.random.default_rng(100 + c)
    n = 1500
    logits = rng.normal(0.0, 3.0, (n, c)).astype(dtype)
    e = np.exp(logits - logits.max(1, keepdims=True))
    probs = (e / e.sum(1, keepdims=True)).astype(dtype)
    y = rng.integers(0, c, n)
    oh = np.eye(c, dtype=dtype)[y]
    mh = (rng.random((n, c)) < 0.3).astype(dtype)
    lt = pa.list_(pa.from_numpy_dtype(np.dtype(dtype)))
    odd = np.zeros(c + 1, dtype)
    odd[0] = 1.0

    def layouts(a):
        return a, pa.array(list(a), type=lt), pa.array(list(a) + [odd], type=lt)

    modes = [("cce", logits, y, True), ("cce", logits, oh, True), ("cce", probs, y, False),
             ("cce", probs, oh, False), ("bce", logits, mh, True), ("bce", 1 / (1 + np.exp(-logits)), mh, False),
             ("bce", logits, y, True)]
    for loss, p, t, fl in modes:
        fn = xn.cce if loss == "cce" else xn.bce
        p = p.astype(dtype)
        want = fn(p, t, from_logits=fl)
        for k, (pl, tl) in enumerate(zip(layouts(p), layouts(t) if t.ndim == 2 else (t, t, np.append(t, 0)), strict=True)):
            if k == 0:
                continue
            got = fn(pl, tl, from_logits=fl)[:n]
            assert np.array_equal(got, want), (loss, fl, t.ndim, k, int((got != want).sum()))
