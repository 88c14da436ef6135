"""Hypothesis property tests: random shapes, ragged rows and options against the reference,
batch splitting, and non-negativity."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

import xent_numba as xn
from tests import reference as ref

settings.register_profile("ci", max_examples=60, deadline=None)
settings.load_profile("ci")


@st.composite
def cases(draw):
    loss = draw(st.sampled_from(["cce", "bce"]))
    from_logits = draw(st.booleans())
    ragged = draw(st.booleans())
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(0, 40))
    c = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, c + 1, size=n) if ragged else np.full(n, c)
    hard = draw(st.booleans())
    rows, targets = [], []
    for k in lengths:
        k = int(k)
        scale = draw(st.sampled_from([1.0, 30.0, 1e3]))
        if from_logits:
            p = rng.normal(0, scale, size=k)
        else:
            p = rng.random(k)
            if loss == "cce":
                p /= p.sum()
        y = int(rng.integers(0, k))
        if hard:
            t = y
        elif loss == "cce":
            t = rng.dirichlet(np.ones(k))
        else:
            t = rng.random(k)
        rows.append(p.astype(dtype))
        targets.append(t)
    opts = {
        "log_base": draw(st.sampled_from([math.e, 2, 10, 3.5])),
        "eps": draw(st.sampled_from(["auto", "keras", "torch", 1e-4])),
        "label_smoothing": draw(st.sampled_from([0.0, 0.05, 0.5])),
    }
    if loss == "bce":
        opts["reduce"] = draw(st.sampled_from(["sum", "mean"]))
        opts["pos_weight"] = draw(st.sampled_from([None, 2.5]))
    return loss, from_logits, ragged, dtype, rows, targets, hard, opts


def _arrays(rows, targets, ragged, dtype, hard):
    t = pa.from_numpy_dtype(np.dtype(dtype))
    if ragged:
        pred = pa.array([r.tolist() for r in rows], type=pa.list_(t))
        target = pa.array(targets, pa.int64()) if hard else pa.array([list(x) for x in targets], type=pa.list_(pa.float64()))
    else:
        c = len(rows[0]) if rows else 1
        pred = np.array(rows, dtype=dtype).reshape(len(rows), c)
        target = np.array(targets, dtype=np.int64) if hard else np.array(targets).reshape(len(rows), c)
    return pred, target


@given(cases())
def test_random_cases_match_reference(case):
    loss, from_logits, ragged, dtype, rows, targets, hard, opts = case
    pred, target = _arrays(rows, targets, ragged, dtype, hard)
    fn, rfn = (xn.cce, ref.cce) if loss == "cce" else (xn.bce, ref.bce)
    got = fn(pred, target, from_logits=from_logits, **opts)
    want = rfn(rows, targets, from_logits=from_logits, dtype=dtype, **opts)
    assert got.shape == (len(rows),)
    ref.assert_close(got, want, dtype)
    if hard and opts["label_smoothing"] == 0 and opts["log_base"] > 1:
        assert np.all(got >= 0)
    if from_logits:
        assert np.all(np.isfinite(got))


@given(cases(), st.integers(1, 7))
def test_batch_splitting_does_not_change_results(case, pieces):
    loss, from_logits, ragged, dtype, rows, targets, hard, opts = case
    pred, target = _arrays(rows, targets, ragged, dtype, hard)
    fn = xn.cce if loss == "cce" else xn.bce
    whole = fn(pred, target, from_logits=from_logits, **opts)
    cuts = np.linspace(0, len(rows), pieces + 1).astype(int)
    parts = [fn(pred[a:b], target[a:b], from_logits=from_logits, **opts) for a, b in zip(cuts[:-1], cuts[1:], strict=False)]
    np.testing.assert_array_equal(np.concatenate(parts) if parts else whole, whole)
    if ragged:  # the same pieces as one ChunkedArray
        chunked_p = pa.chunked_array([pred[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=False)], type=pred.type)
        np.testing.assert_array_equal(fn(chunked_p, target, from_logits=from_logits, **opts), whole)
