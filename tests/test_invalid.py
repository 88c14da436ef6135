"""Every bad-input case raises InvalidInputError naming the row and the reason; on_invalid="nan"
scores the rest."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import xent_numba as xn
from tests import reference as ref
from xent_numba import losses

P = np.array([[0.2, 0.8], [0.5, 0.5], [0.6, 0.4], [0.1, 0.9]])
Y = np.array([1, 0, 1, 0])
T = np.eye(2)[Y]


def _bad_pred(row, value, col=0):
    p = P.copy()
    p[row, col] = value
    return p


CASES = [
    # (id, loss, pred, target, kwargs, row, words in the message)
    ("nan_prob", "cce", _bad_pred(2, np.nan), Y, {}, 2, ["NaN or infinite", "pred", "class 0"]),
    ("inf_prob", "bce", _bad_pred(1, np.inf), T, {}, 1, ["NaN or infinite", "pred"]),
    ("prob_above_1", "cce", _bad_pred(3, 1.5, 1), Y, {}, 3, ["outside [0, 1]", "1.5", "class 1"]),
    ("prob_negative", "bce", _bad_pred(0, -0.1), Y, {}, 0, ["outside [0, 1]", "-0.1"]),
    ("nan_logit", "cce", _bad_pred(1, np.nan), Y, {"from_logits": True}, 1, ["NaN or infinite"]),
    ("inf_logit", "bce", _bad_pred(2, np.inf), T, {"from_logits": True}, 2, ["NaN or infinite"]),
    ("label_too_big", "cce", P, np.array([1, 0, 2, 0]), {}, 2, ["class index out of range", "label 2", "target"]),
    ("label_negative", "cce", P, np.array([1, -1, 0, 0]), {}, 1, ["class index out of range", "label -1"]),
    ("label_neg_not_ignored", "cce", P, np.array([1, -1, 0, 0]), {"ignore_index": -100}, 1, ["out of range"]),
    ("bce_label_too_big", "bce", P, np.array([1, 0, 0, 5]), {}, 3, ["out of range"]),
    ("cce_target_negative", "cce", P, np.array([[0, 1], [1.5, -0.5], [1, 0], [0, 1.0]]), {}, 1, ["target value invalid", ">= 0"]),
    ("cce_target_sum", "cce", P, np.array([[0, 1], [1, 0], [1, 1], [0, 1.0]]), {}, 2, ["does not sum to 1", "sums to 2"]),
    ("cce_target_zero", "cce", P, np.array([[0, 1], [1, 0], [0, 1], [0, 0.0]]), {}, 3, ["does not sum to 1"]),
    ("bce_target_above_1", "bce", P, np.array([[0, 1], [1, 0], [0, 2], [0, 1.0]]), {}, 2, ["target value invalid", "[0, 1]"]),
    ("bce_target_nan", "bce", P, np.array([[0, 1], [np.nan, 0], [0, 1], [0, 1.0]]), {}, 1, ["target value invalid"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_invalid_rows(case):
    _, loss, pred, target, kw, row, words = case
    fn = xn.cce if loss == "cce" else xn.bce
    with pytest.raises(xn.InvalidInputError) as err:
        fn(pred, target, **kw)
    e = err.value
    assert isinstance(e, ValueError)
    assert e.row == row
    msg = str(e)
    assert msg.startswith(f"row {row}")
    for w in words:
        assert w in msg, (w, msg)
    # on_invalid="nan": that row is NaN, the others are scored as if alone
    got = fn(pred, target, on_invalid="nan", **kw)
    assert np.isnan(got[row])
    good = [i for i in range(len(pred)) if i != row]
    want = fn(np.asarray(pred)[good], np.asarray(target)[good], **kw)
    np.testing.assert_allclose(got[good], want, rtol=1e-12)


def test_ragged_length_mismatch_and_empty_row():
    pred = pa.array([[0.5, 0.5], [0.2, 0.3, 0.5], [], [1.0]], type=pa.list_(pa.float64()))
    target = pa.array([[0, 1], [0, 1], [], [1]], type=pa.list_(pa.float64()))
    with pytest.raises(xn.InvalidInputError, match=r"^row 1, column 'target': .*differ in length.*pred has 3 values, target has 2"):
        xn.cce(pred, target)
    out = xn.bce(pred, target, on_invalid="nan")
    assert np.isnan(out[1]) and np.isnan(out[2]) and np.isfinite(out[[0, 3]]).all()
    with pytest.raises(xn.InvalidInputError, match=r"^row 2, column 'pred': row has no classes"):
        xn.cce(pred, pa.array([0, 0, 0, 0]))


def test_dense_shape_mismatch_is_row_error():
    with pytest.raises(xn.InvalidInputError, match="differ in length"):
        xn.bce(P, np.zeros((4, 3)))


def test_null_rows_and_null_values():
    pred = pa.array([[0.5, 0.5], None, [0.2, None], [0.3, 0.7]], type=pa.list_(pa.float32()))
    with pytest.raises(xn.InvalidInputError, match=r"^row 1, column 'pred': row is null"):
        xn.cce(pred, pa.array([0, 1, 0, 1]))
    out = xn.cce(pred, pa.array([0, 1, 0, 1]), on_invalid="nan")
    assert np.isnan(out[1]) and np.isnan(out[2])
    ref.assert_close(out[[0, 3]], ref.cce([[0.5, 0.5], [0.3, 0.7]], [0, 1], dtype=np.float32), np.float32)
    with pytest.raises(xn.InvalidInputError, match=r"^row 2, column 'target': row is null"):
        xn.cce(P, pa.array([0, 1, None, 1]))
    fsl = pa.FixedSizeListArray.from_arrays(pa.array([0.5, 0.5, 0.1, None, 0.3, 0.7]), 2)
    with pytest.raises(xn.InvalidInputError, match=r"^row 1, column 'pred'"):
        xn.bce(fsl, pa.array([0, 1, 0]))


@pytest.mark.parametrize(
    "pred,target,words",
    [
        (np.array([0.1, 0.9]), np.array([[1, 0], [0, 1]]), ["must be 1-D (N,)", "'target'"]),  # 1-D pred: binary
        (np.array([["a", "b"]]), np.array([0]), ["numeric", "'pred'"]),
        (P, np.array([0, 1]), ["4 rows", "target has 2"]),
        (P, np.array([0.0, 1.0, 0.0, 1.0]), ["integer class indices", "'target'"]),
        (pa.array(["x", "y"]), pa.array([0, 1]), ["Arrow type string"]),
        (pa.array([["a", "b"]], type=pa.list_(pa.string())), pa.array([0]), ["numeric"]),
        (pa.array([0.5, 0.5]), pa.array([[0], [1]]), ["one number per row", "list<item: int64>"]),
        ([[0.1, 0.9], [0.5]], [0, 1], ["cannot read"]),
    ],
)
def test_structural_errors(pred, target, words):
    with pytest.raises(xn.InvalidInputError) as err:
        xn.cce(pred, target)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


@pytest.mark.parametrize(
    "kw,words",
    [
        ({"log_base": 1}, ["log_base", "!= 1"]),
        ({"log_base": 0}, ["log_base"]),
        ({"log_base": -10}, ["log_base"]),
        ({"log_base": "ten"}, ["log_base"]),
        ({"eps": "tensorflow"}, ["eps", "keras"]),
        ({"eps": 0.7}, ["eps"]),
        ({"label_smoothing": 1.5}, ["label_smoothing"]),
        ({"on_invalid": "skip"}, ["on_invalid"]),
        ({"device": "tpu"}, ["device"]),
        ({"class_weight": [1.0]}, ["class_weight", "1 entries"]),
        ({"class_weight": [1.0, -1.0]}, ["class_weight", ">= 0"]),
    ],
)
def test_option_errors(kw, words):
    with pytest.raises(xn.InvalidInputError) as err:
        xn.cce(P, Y, **kw)
    for w in words:
        assert w in str(err.value)


def test_bce_option_errors():
    with pytest.raises(xn.InvalidInputError, match="reduce"):
        xn.bce(P, T, reduce="max")
    with pytest.raises(xn.InvalidInputError, match="pos_weight"):
        xn.bce(P, T, pos_weight=[1.0, 2.0, 3.0][:1] + [np.nan])


def test_cuda_without_gpu_is_a_clear_error(monkeypatch):
    from xent_numba import backend

    monkeypatch.setattr(backend, "cuda_usable", lambda: False)
    with pytest.raises(xn.InvalidInputError, match="no CUDA GPU"):
        xn.cce(P, Y, device="cuda")
    with pytest.warns(RuntimeWarning, match="scoring on the CPU"):
        got = xn.cce(P, Y, device="auto")
    np.testing.assert_array_equal(got, xn.cce(P, Y))


def test_error_counts_invalid_rows():
    p = P.copy()
    p[[1, 3], 0] = 2.0
    with pytest.raises(xn.InvalidInputError, match="2 invalid rows in total") as err:
        xn.cce(p, Y)
    assert err.value.n_invalid == 2 and err.value.row == 1


def test_chunked_error_uses_global_row():
    pred = pa.chunked_array([pa.array([[0.5, 0.5]] * 3), pa.array([[0.5, 0.5], [0.5, 1.5]])])
    with pytest.raises(xn.InvalidInputError, match=r"^row 4, column 'pred': probability outside"):
        xn.cce(pred, pa.array([0, 1, 0, 1, 0]))


@pytest.mark.parametrize("loss", ["cce", "bce"])
@pytest.mark.parametrize("pred_layout", ["numpy", "fixed_size_list"])
def test_fixed_width_pred_against_list_targets_of_other_lengths(loss, pred_layout):
    """Issue 11, item 2: equal totals (3 rows x 3 = 3 + 2 + 4) are not equal rows: every
    layout pairing checks each row's length (the narrow block kernels, too)."""
    p = np.array([[0.2, 0.3, 0.5]] * 3)
    rows = [[0.0, 1.0, 0.0], [1.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    target = pa.array(rows)
    pred = p if pred_layout == "numpy" else pa.FixedSizeListArray.from_arrays(pa.array(p.reshape(-1)), 3)
    for opts in ({}, {"pos_weight": 2.0} if loss == "bce" else {"class_weight": [1.0, 2.0, 1.0]}):
        _, status = xn.score(loss, pred, target, on_invalid="nan", **opts)
        assert list(status) == [0, losses.LENGTH, losses.LENGTH], opts
        with pytest.raises(xn.InvalidInputError, match="differ in length") as err:
            xn.score(loss, pred, target, **opts)
        assert err.value.row == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unscored_rows_next_to_scored_ones_in_a_block(dtype):
    """The block kernel's gather of p_y reads a clamped index for rows it does not score (an
    empty last row, labels out of range either side): those rows get NaN and their status,
    and every scored row keeps its reference value."""
    rows = [[0.2, 0.8], [0.5, 0.25, 0.25], [0.6, 0.4], [0.1, 0.9], []]
    labels = [1, 7, -1, 0, 3]
    pred = pa.array([np.asarray(r, dtype) for r in rows], type=pa.list_(pa.from_numpy_dtype(dtype)))
    out, status = xn.score("cce", pred, pa.array(labels), on_invalid="nan")
    ok = [0, 3]
    ref.assert_close(out[ok], ref.cce([rows[i] for i in ok], [labels[i] for i in ok], dtype=dtype), dtype)
    assert np.isnan(out[[1, 2, 4]]).all()
    assert list(status) == [losses.OK, losses.LABEL_RANGE, losses.LABEL_RANGE, losses.OK, losses.EMPTY_ROW]
    dense = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]], dtype)
    out, status = xn.score("cce", dense, np.array([1, 2, -5]), on_invalid="nan")
    ref.assert_close(out[:1], ref.cce(dense[:1], [1], dtype=dtype), dtype)
    assert np.isnan(out[1:]).all() and list(status) == [losses.OK, losses.LABEL_RANGE, losses.LABEL_RANGE]


@pytest.mark.parametrize("pos", [0, 5, 7, 64, 95, 96, 99])
def test_wide_logit_rows_check_every_lane(pos):
    """Wide logit rows (> 64 classes) take their max in 8 interleaved lanes plus a tail: a NaN
    or +inf in any lane or in the tail makes the row invalid, a -inf there is a masked class."""
    y = np.array([50, 50, 50])
    for bad in (np.nan, np.inf):
        x = np.zeros((3, 100), np.float32)
        x[1, pos] = bad
        out, st = xn.score("cce", x, y, from_logits=True, on_invalid="nan")
        assert list(st) == [losses.OK, losses.PRED_NONFINITE, losses.OK] and np.isnan(out[1])
    x = np.zeros((3, 100), np.float32)
    x[1, pos] = -np.inf
    out, st = xn.score("cce", x, y, from_logits=True, on_invalid="nan")
    assert list(st) == [losses.OK] * 3
    ref.assert_close(out, ref.cce(list(x), list(y), from_logits=True, dtype=np.float32), np.float32)


@pytest.mark.parametrize("c", [5, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cce_probability_blocks_flag_rows_anywhere_in_their_1024(dtype, c):
    """CCE from probabilities + index labels scores dense rows in blocks of 1,024
    (``cpu_blocks._MAX_ROWS``; at C = 2 the pick is a select, ``_pick_pairs``): invalid
    rows at either edge of a block and inside it (a NaN, a value above 1 or below 0 in a class
    that is not the label's, labels out of range, the ignored label) get NaN and their status,
    and every other row keeps its reference value."""
    rng = np.random.default_rng(4)
    n = 3000
    p = rng.dirichlet(np.ones(c), n).astype(dtype)
    y = rng.integers(0, c, n)
    p[0, 1], y[0] = np.nan, 0
    p[1023, 0], y[1023] = 1.5, 1
    p[2047, 0], y[2047] = -0.5, 1  # the only bad value of its block, in class 0
    p[2998, 1], y[2998] = 2.0, 0  # the only bad value of its block, in class 1
    y[1024] = c
    y[700] = -1
    y[2999] = 1
    y[1500] = -100
    out, status = xn.score("cce", p, y, on_invalid="nan", ignore_index=-100)
    bad = {0: losses.PRED_NONFINITE, 1023: losses.PRED_RANGE, 2047: losses.PRED_RANGE, 2998: losses.PRED_RANGE,
           1024: losses.LABEL_RANGE, 700: losses.LABEL_RANGE, 1500: losses.IGNORED}
    ok = np.array([i for i in range(n) if i not in bad])
    ref.assert_close(out[ok], ref.cce(p[ok], y[ok], dtype=dtype), dtype)
    for i, s in bad.items():
        assert status[i] == s and np.isnan(out[i]), (i, status[i])
    assert (status[ok] == losses.OK).all()


@pytest.mark.parametrize("c", [2, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_negative_zero_is_a_valid_probability(dtype, c):
    """The narrow kernels' fast check reads ``[+0, 1]`` from the values' bits, where ``-0.0``
    is out (its sign bit): such a block takes the exact check, and ``-0.0`` scores as ``0``
    (CCE and BCE, index and dense targets), with the neighbours of its row untouched."""
    rng = np.random.default_rng(11)
    n = 3000
    p = rng.dirichlet(np.ones(c), n).astype(dtype)
    p[1500, 0] = 0.0
    y = rng.integers(0, c, n)
    p_neg = p.copy()
    p_neg[1500, 0] = -0.0
    onehot = np.eye(c, dtype=dtype)[y]
    for loss, target in (("cce", y), ("cce", onehot), ("bce", onehot)):
        want, want_st = xn.score(loss, p, target)
        got, got_st = xn.score(loss, p_neg, target)
        assert (got_st == losses.OK).all() and (want_st == losses.OK).all()
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("c", [2, 10])
def test_block_kernels_count_the_invalid_rows(c):
    """The block kernels count the invalid rows as they go (``cpu.run`` returns the count, and
    the API scans the statuses only when it is not 0): the count is the statuses' own, for
    index and dense targets, whichever block the rows fall in."""
    from xent_numba.arrow import Dense
    from xent_numba.kernels import cpu

    rng = np.random.default_rng(5)
    n = 5000
    p = rng.dirichlet(np.ones(c), n).astype(np.float32)
    y = rng.integers(0, c, n)
    bad = [0, 255, 256, 1023, 1024, 2047, 4999]
    for k, i in enumerate(bad):
        if k % 2:
            p[i, 0] = np.nan
        else:
            y[i] = c
    y[300] = -100  # ignored: not invalid
    for loss, target in (("cce", y), ("bce", np.eye(c, dtype=np.float32)[np.clip(y, 0, c - 1)])):
        kw = {"ignore_index": -100} if loss == "cce" else {}
        prm = losses.make_params(loss, dtype=np.float32, **kw)
        out, status = np.empty(n, np.float32), np.empty(n, np.int8)
        t = target if target.ndim == 1 else Dense(target)
        n_bad = cpu.run(Dense(p), t, prm, np.zeros(0), np.zeros(0), out, status)
        assert n_bad == int((status > losses.IGNORED).sum()) == (len(bad) if loss == "cce" else len(bad) // 2)
        with pytest.raises(xn.InvalidInputError):
            xn.score(loss, p, target, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("from_logits", [False, True])
def test_bce_block_checks_ride_in_the_terms_pass(from_logits, dtype):
    """BCE blocks check their values and whether their targets are all 0/1 in the pass that
    makes the terms: a soft target after a 0/1 one, a soft first target, a bad value, a bad
    target and -0.0 must each be found wherever they sit in a block (1,500 rows x 4: blocks of
    512 rows)."""
    rng = np.random.default_rng(5)
    n, c = 1500, 4
    pred = (rng.normal(0, 3, (n, c)) if from_logits else rng.random((n, c))).astype(dtype)
    hard = (rng.random((n, c)) < 0.4).astype(dtype)

    def check(target, bad_rows=()):
        want = ref.bce(list(pred), list(target), from_logits=from_logits, dtype=dtype)
        got = xn.bce(pred, target, from_logits=from_logits, on_invalid="nan")
        assert np.isnan(got[list(bad_rows)]).all()
        ok = np.setdiff1d(np.arange(n), bad_rows)
        ref.assert_close(got[ok], want[ok], dtype)
        if bad_rows:
            with pytest.raises(xn.InvalidInputError, match=rf"^row {min(bad_rows)},"):
                xn.bce(pred, target, from_logits=from_logits)

    check(hard)
    soft_later = hard.copy()
    soft_later[700, 2] = 0.25  # a 0/1 block that turns out not to be
    check(soft_later)
    soft_first = hard.copy()
    soft_first[1024] = 0.5  # the first row of the third block
    check(soft_first)
    bad = hard.copy()
    bad[1100, 1] = 2.0
    pred[900, 3] = np.nan
    pred[1200, 0] = np.inf if from_logits else 1.5
    if not from_logits:
        pred[300, 1] = -0.0  # fails the bit check, passes the exact one
    check(bad, bad_rows=(900, 1100, 1200))
    got = xn.bce(pred, rng.integers(0, c, n), from_logits=from_logits, on_invalid="nan")
    assert np.isnan(got[[900, 1200]]).all() and np.isfinite(np.delete(got, [900, 1200])).all()
