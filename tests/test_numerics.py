"""Hard rows against an exact (mpmath, 60-digit) reference, on every path.

Confident, correct rows (losses from 1e-20 to 1e-3) are where a naive ``lse - x_y`` or
``max(x, 0) - x t + ...`` cancels to 0. Each table is scored through every kernel path:

- ``narrow``: the block kernels (few classes, no options);
- ``wide``: the per-row fast kernels (rows padded past ``cpu_blocks._NARROW`` classes);
- ``general``: the row functions that take options (a class weight / pos_weight that is
  not 1, so the fast paths are not used);
- ``ragged``: Arrow list rows (offsets) through the narrow kernels;
- the GPU kernels in the CUDA simulator (warp-, block- and split-per-row shapes).

The promise checked: float64 within 1e-9 relative of the exact value, float32 within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import xent_numba as xn
from tests import reference as ref
from tests.test_gpu import sim_gpu  # noqa: F401  (fixture)
from xent_numba import losses
from xent_numba.errors import InvalidInputError
from xent_numba.kernels import cpu_blocks

GAPS = (7.0, 10.0, 14.0, 20.0, 25.0, 30.0, 36.0, 40.0, 46.0)  # losses ~1e-3 .. ~1e-20
PAD = cpu_blocks._NARROW + 8  # classes appended for the "wide" path, at a logit far below the rest


def _cce_logit_rows():
    rows = [[g, 0.0, -1.0] for g in GAPS] + [[0.0, -g, -g - 3.0] for g in GAPS]
    rows += [[g, g - 50.0, -np.inf] for g in (3.0, 30.0)]  # a masked class drops out
    rows += [[30.0, 30.0, -1.0], [2.0, 2.0, 2.0], [1.0, 5.0, 5.0]]  # tied maxima
    return [np.array(r) for r in rows], [0] * len(rows)


def _bce_logit_rows():
    rows = [[g, -g] for g in GAPS] + [[-g, -g - 1.0] for g in GAPS]
    targets = [0] * len(GAPS) + [1] * len(GAPS)  # index labels
    # the second half: the true class is the one with the small logit: a large loss, for contrast
    return [np.array(r) for r in rows], targets


def _prob_rows():
    """CCE/BCE from probabilities: confident rows whose losses are tiny."""
    rows, y = [], []
    for k in (10, 20, 30, 40, 50):
        q = 2.0**-k
        rows.append(np.array([1.0 - q, q, 0.0]))
        y.append(0)
    for p in (1e-3, 1e-8, 1e-13, 1e-15):  # -log(1 - p) for small p: the one-log correction
        rows.append(np.array([0.5, p, p]))
        y.append(0)
    return rows, y


def _pad(rows, value):
    return [np.concatenate([r, np.full(PAD, value)]) for r in rows]


def _one_hot(targets, c):
    return np.eye(c)[np.asarray(targets)]


def _exact(loss, rows, targets, **kw):
    f = ref.exact_cce if loss == "cce" else ref.exact_bce
    return np.array([f(r, t, **kw) for r, t in zip(rows, targets, strict=True)])


def _check(got, want, dtype):
    rtol = 1e-9 if np.dtype(dtype) == np.float64 else 1e-5
    got = np.asarray(got, dtype=np.float64)
    assert np.all(np.isfinite(got)) and np.all(got > 0), got
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0)


def _score(loss, rows, targets, path, dtype, *, target_kind, from_logits, device="cpu", **opts):
    c = len(rows[0])
    if target_kind == "dense":
        targets = list(_one_hot(targets, c))
    if path == "ragged":
        t = pa.list_(pa.from_numpy_dtype(np.dtype(dtype)))
        pred = pa.array([np.asarray(r, dtype=dtype).tolist() for r in rows], type=t)
        target = (pa.array(np.asarray(targets, dtype=np.int64)) if target_kind == "index"
                  else pa.array([np.asarray(r, dtype=dtype).tolist() for r in targets], type=t))
    else:
        pred = np.array(rows, dtype=dtype)
        target = np.asarray(targets, dtype=np.int64) if target_kind == "index" else np.array(targets, dtype=dtype)
    fn = xn.cce if loss == "cce" else xn.bce
    return fn(pred, target, from_logits=from_logits, device=device, **opts), targets


def _general_opts(loss, c):
    w = np.linspace(0.5, 2.0, c)
    return {"class_weight": w} if loss == "cce" else {"pos_weight": w}


def _exact_opts(opts):
    return {k: v for k, v in opts.items()}


PATHS = ["narrow", "wide", "general", "ragged"]


def _table(loss, from_logits):
    if from_logits:
        return _cce_logit_rows() if loss == "cce" else _bce_logit_rows()
    return _prob_rows()


def _run_case(loss, from_logits, target_kind, path, dtype, device="cpu"):
    rows, y = _table(loss, from_logits)
    rows = [np.asarray(r, dtype=dtype) for r in rows]
    opts = {}
    if path == "wide":  # padding that changes no loss: a far-below logit, or p = 0 for CCE
        rows = _pad(rows, -1e4 if from_logits else 0.0)
        if loss == "bce" and not from_logits:
            pytest.skip("BCE from probabilities: padding adds terms; the narrow/general rows cover it")
    if path == "general":
        opts = _general_opts(loss, len(rows[0]))
    got, targets = _score(loss, rows, y, path, dtype, target_kind=target_kind, from_logits=from_logits,
                          device=device, **opts)
    want = _exact(loss, rows, targets, from_logits=from_logits, dtype=dtype, **_exact_opts(opts))
    _check(got, want, dtype)
    return got, want


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("target_kind", ["index", "dense"])
@pytest.mark.parametrize("loss,from_logits", [("cce", True), ("bce", True), ("cce", False), ("bce", False)])
def test_hard_rows_every_cpu_path(loss, from_logits, target_kind, path, dtype):
    _run_case(loss, from_logits, target_kind, path, dtype)


def test_issue_examples():
    """The numbers quoted in issue 13, exactly."""
    got = xn.cce(np.array([[40.0, 0.0, -1.0]]), np.array([0]), from_logits=True)
    np.testing.assert_allclose(got, [5.811236444626578e-18], rtol=1e-12)
    bl = np.array([[45.0, -45.0]])
    want = ref.exact_bce(bl[0], 0, from_logits=True)
    for opts in ({}, {"pos_weight": 1.0}, {"pos_weight": [1.0, 2.0]}, {"label_smoothing": 0.0}):
        np.testing.assert_allclose(xn.bce(bl, np.array([0]), from_logits=True, **opts), [want], rtol=1e-12)
    p = np.array([[1e-13]])
    want = ref.exact_bce(p[0], np.array([0.0]))
    assert abs(want - 1e-13) < 1e-25
    for opts in ({}, {"pos_weight": 1.0}, {"pos_weight": 2.0}):
        np.testing.assert_allclose(xn.bce(p, np.array([[0.0]]), **opts), [want], rtol=1e-12)


@pytest.mark.parametrize("target_kind", ["index", "dense"])
@pytest.mark.parametrize("loss,from_logits", [("cce", True), ("bce", True), ("cce", False), ("bce", False)])
def test_noop_options_change_nothing(loss, from_logits, target_kind):
    """pos_weight=1, class weights of 1 and smoothing 0 give the same bits as no option."""
    rows, y = _table(loss, from_logits)
    base, _ = _score(loss, rows, y, "narrow", np.float64, target_kind=target_kind, from_logits=from_logits)
    c = len(rows[0])
    noops = [{"label_smoothing": 0.0}]
    noops += [{"class_weight": np.ones(c)}] if loss == "cce" else [{"pos_weight": 1.0}, {"pos_weight": np.ones(c)},
                                                                   {"weight": np.ones(c)}, {"weight": 1.0}]
    for opts in noops:
        got, _ = _score(loss, rows, y, "narrow", np.float64, target_kind=target_kind, from_logits=from_logits, **opts)
        np.testing.assert_array_equal(got, base, err_msg=str(opts))


def test_fastmath_log1p_survives_reassociation():
    """``_fastmath``'s compensated steps keep their meaning inside a caller built with
    reassociation (as the CPU kernels are)."""
    from numba import njit

    from xent_numba.kernels import fastmath as fm

    @njit(fastmath={"reassoc", "nsz", "arcp", "afn"})
    def f(p, m, x, l):
        return fm.log1p(-p), fm.log_or_log1m(p, False), fm.add(m - x, l)

    a, b, c = f(1e-13, 40.0, 40.0, 5.8e-18)
    want = float(ref._mp().log1p(-ref._mp().mpf(1e-13)))
    assert a == pytest.approx(want, rel=1e-15) and b == pytest.approx(want, rel=1e-15)
    assert c == 5.8e-18


# ---- masked classes (-inf logits) -------------------------------------------------------------


MASKED = np.array([[-np.inf, 2.0, 1.0, -np.inf], [3.0, -np.inf, -np.inf, -np.inf], [0.5, 0.25, -np.inf, 0.0]])


@pytest.mark.parametrize("path", ["narrow", "wide", "general", "ragged"])
def test_masked_logits_drop_out(path):
    y = [1, 0, 3]
    rows = list(MASKED)
    opts = {}
    if path == "wide":
        rows = _pad(rows, -np.inf)
    if path == "general":
        opts = {"label_smoothing": 0.0, "class_weight": np.full(len(rows[0]), 2.0)}
    for kind in ("index", "dense"):
        got, targets = _score("cce", rows, y, path, np.float64, target_kind=kind, from_logits=True, **opts)
        want = _exact("cce", rows, targets, from_logits=True, **opts)
        np.testing.assert_allclose(got, want, rtol=1e-12)
    # BCE: -inf is p = 0: free where the target is 0
    bopts = {"pos_weight": np.full(len(rows[0]), 2.0)} if path == "general" else {}
    got, targets = _score("bce", rows, [1, 0, 0], path, np.float64, target_kind="index", from_logits=True, **bopts)
    want = _exact("bce", rows, targets, from_logits=True, **bopts)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("path", ["narrow", "wide", "general", "ragged"])
@pytest.mark.parametrize("loss", ["cce", "bce"])
def test_masked_true_class_is_inf_with_its_status(loss, path):
    rows = list(MASKED)
    y = [0, 1, 2]  # every true class masked
    opts = {}
    if path == "wide":
        rows = _pad(rows, -np.inf)
    if path == "general":
        opts = {"class_weight": np.full(len(rows[0]), 2.0)} if loss == "cce" else {"pos_weight": 2.0}
    for kind in ("index", "dense"):
        c = len(rows[0])
        tgt = np.asarray(y) if kind == "index" else _one_hot(y, c)
        pred = np.array(rows)
        if path == "ragged":
            pred = pa.array([r.tolist() for r in rows])
            tgt = pa.array(tgt) if kind == "index" else pa.array([r.tolist() for r in tgt])
        out, status = xn.score(loss, pred, tgt, from_logits=True, on_invalid="nan", **opts)
        assert list(status) == [losses.TARGET_MASKED] * 3, (kind, status)
        assert np.all(out == np.inf)
        with pytest.raises(InvalidInputError, match="masked") as e:
            xn.score(loss, pred, tgt, from_logits=True, **opts)
        assert e.value.row == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_plus_inf_logits_stay_invalid(bad):
    for path_pad in (False, True):
        row = np.array([[0.0, bad, -np.inf]])
        if path_pad:
            row = np.array(_pad(list(row), 0.0))
        for loss in ("cce", "bce"):
            _, status = xn.score(loss, row, np.array([0]), from_logits=True, on_invalid="nan")
            assert status[0] == losses.PRED_NONFINITE


# ---- zero weights times log 0 (issue 11, item 4) -------------------------------------------------


@pytest.mark.parametrize("kind", ["index", "dense"])
def test_zero_weight_times_log_zero_is_zero(kind):
    """A weight of 0 on a term whose log is -inf (p = 0, eps="none") scores 0, never NaN."""
    p = np.array([[0.0, 0.5, 0.5], [0.0, 0.25, 0.75]])
    y = np.array([0, 0])
    t = y if kind == "index" else _one_hot(y, 3)
    tt = list(_one_hot(y, 3))
    cases = [
        ("cce", dict(class_weight=[0.0, 1.0, 1.0])),
        ("cce", dict(class_weight=[0.0, 1.0, 1.0], label_smoothing=0.1)),
        ("bce", dict(pos_weight=[0.0, 1.0, 1.0])),
        ("bce", dict(weight=[0.0, 1.0, 2.0])),
        ("bce", dict(weight=[0.0, 1.0, 2.0], pos_weight=3.0, label_smoothing=0.0)),
    ]
    for loss, opts in cases:
        out, st = xn.score(loss, p, t, eps="none", on_invalid="nan", **opts)
        assert list(st) == [0, 0], (loss, opts)
        want = _exact(loss, list(p), tt, eps="none", **opts)
        assert np.all(np.isfinite(want))
        np.testing.assert_allclose(out, want, rtol=1e-12, atol=0, err_msg=f"{loss} {opts}")
    # logits: a -inf logit on a positive target weighted 0
    x = np.array([[-np.inf, 1.0]])
    out, st = xn.score("bce", x, np.array([[1.0, 0.0]]), from_logits=True, pos_weight=[0.0, 1.0], on_invalid="nan")
    assert st[0] == 0 and out[0] == pytest.approx(ref.exact_bce(x[0], np.array([0.0, 0.0]), from_logits=True))


# ---- framework conventions ----------------------------------------------------------------------


def test_keras_published_bce_values():
    """keras/src/losses/losses_test.py, BinaryCrossentropyTest (Keras averages over the batch;
    its values are rounded and checked to 3 decimals there, except 3.98559, which pins the
    float32 clip [1e-7, 1 - 2**-23] to 1e-5: 4.0295 with a symmetric 1e-7)."""
    kw = dict(eps="keras", reduce="mean")
    yt = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype="float32")
    yp = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.1, 0.2, 0.7]], dtype="float32")
    np.testing.assert_allclose(xn.bce(yp, yt, **kw).mean(), 0.20046903, rtol=1e-6)
    yt = np.array([1, 0, 1, 0], dtype="float32").reshape(2, 2)
    yp = np.array([1, 1, 1, 0], dtype=np.float32).reshape(2, 2)
    per_row = xn.bce(yp, yt, **kw)
    assert per_row.mean() == pytest.approx(3.98559, abs=1e-5)
    assert (per_row * 2.3).mean() == pytest.approx(9.1668, abs=1e-3)  # sample_weight=2.3
    assert (per_row * [1.2, 3.4]).mean() == pytest.approx(4.7827, abs=1e-3)  # sample_weight [1.2, 3.4]
    yt = np.array([[1, 0, 1], [0, 1, 1]], dtype="float32")
    logits = np.array([[10.0, -10.0, 10.0], [10.0, 10.0, -10.0]], dtype="float32")
    per_row = xn.bce(logits, yt, from_logits=True, **kw)
    assert per_row.mean() == pytest.approx(3.3333, abs=1e-3)
    np.testing.assert_allclose(per_row, [0.0, 6.666], atol=1e-3)
    assert (per_row * 2.3).mean() == pytest.approx(7.666, abs=1e-3)
    assert (per_row * [4, 3]).mean() == pytest.approx(10.0, abs=1e-3)
    got = xn.bce(np.array([[10.0, -10.0, -10.0]], "float32"), np.array([[1, 0, 1]], "float32"),
                 from_logits=True, label_smoothing=0.1, **kw)
    assert got[0] == pytest.approx((10.0 + 5.0 * 0.1) / 3.0, abs=1e-3)  # Keras leaves out the e^-10 terms


def test_keras_published_cce_values():
    """keras/src/losses/losses_test.py, CategoricalCrossentropyTest: Keras renormalises the
    probability rows (``normalize=True``)."""
    yt = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype="float32")
    yp = np.array([[0.9, 0.05, 0.05], [0.5, 0.89, 0.6], [0.05, 0.01, 0.94]], dtype="float32")
    per_row = xn.cce(yp, yt, eps="keras", normalize=True)
    assert per_row.mean() == pytest.approx(0.3239, abs=1e-3)
    assert (per_row * 2.3).mean() == pytest.approx(0.7449, abs=1e-3)
    assert (per_row * [1.2, 3.4, 5.6]).mean() == pytest.approx(1.0696, abs=1e-3)
    np.testing.assert_allclose(xn.cce(yp, np.array([0, 1, 2]), eps="keras", normalize=True), per_row, rtol=1e-6)
    logits = np.array([[8.0, 1.0, 1.0], [0.0, 9.0, 1.0], [2.0, 3.0, 5.0]], dtype="float32")
    per_row = xn.cce(logits, yt, from_logits=True)
    np.testing.assert_allclose(per_row, (0.001822, 0.000459, 0.169846), rtol=1e-3)
    assert per_row.mean() == pytest.approx(0.0573, abs=1e-3)
    assert (per_row * [1.2, 3.4, 5.6]).mean() == pytest.approx(0.31829, abs=1e-3)
    got = xn.cce(np.array([[100.0, -100.0, -100.0]], "float32"), np.array([[1, 0, 0]], "float32"),
                 from_logits=True, label_smoothing=0.1)
    assert got[0] == pytest.approx(400.0 * 0.1 / 3.0, rel=1e-6)


def test_keras_clips_float32_in_float32():
    lo, hi, _ = losses.clip_policy("keras", np.float32)
    assert hi == 1 - 2**-23 and lo == float(np.float32(1e-7))
    assert losses.clip_policy("keras", np.float64)[:2] == (1e-7, 1 - 1e-7)
    got = xn.bce(np.array([[1.0]], np.float32), np.array([[0.0]], np.float32), eps="keras")
    assert got[0] == pytest.approx(23 * np.log(2), rel=1e-6)


@pytest.mark.parametrize("layout", ["numpy", "ragged"])
def test_normalize_divides_rows_by_their_sum(layout):
    rows = [np.array([0.5, 0.89, 0.6]), np.array([2.0, 2.0]), np.array([0.1, 0.1, 0.1, 0.1])]
    if layout == "numpy":
        rows = rows[:1] * 2
        pred = np.array(rows)
    else:
        pred = pa.array([r.tolist() for r in rows])
    y = np.array([1, 0, 3][: len(rows)])
    got = xn.cce(pred, y, normalize=True)
    want = [ref.exact_cce(r, t, normalize=True) for r, t in zip(rows, y, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # rows that cannot be normalised keep their values: the usual checks name them
    with pytest.raises(InvalidInputError, match="outside"):
        xn.cce(np.array([[-0.5, 1.5]]), np.array([0]), normalize=True)
    for bad in (dict(from_logits=True), dict()):
        fn = xn.score
        with pytest.raises(InvalidInputError, match="normalize"):
            fn("bce" if not bad else "cce", pred, y, normalize=True, **bad)


def test_normalize_cli(tmp_path):
    import pyarrow.parquet as pq

    from xent_numba.engine import local as pipeline

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"pred": [[0.5, 0.89, 0.6], [0.2, 0.2]], "label": [1, 0]}), src)
    opts = pipeline.ScoreOptions(normalize=True)
    assert opts.kernel_kwargs("cce")["normalize"] is True
    assert "normalize" not in opts.kernel_kwargs("bce")
    import subprocess
    import sys

    out = tmp_path / "out.parquet"
    r = subprocess.run([sys.executable, "-m", "xent_numba", "score", str(src), "-o", str(out), "--normalize", "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = pq.read_table(out)["cce"].to_numpy()
    np.testing.assert_allclose(got, [-np.log(0.89 / 1.99), np.log(2)], rtol=1e-12)


# ---- BCE element weights and per-row pos_weight ------------------------------------------------------


def test_bce_element_weight_and_per_row_pos_weight():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 0.99, (5, 4))
    t = (rng.uniform(size=(5, 4)) > 0.5).astype(float)
    w_c = np.array([0.5, 1.0, 2.0, 0.0])
    w_nc = rng.uniform(0, 2, (5, 4))
    pw_nc = rng.uniform(0, 3, (5, 4))
    for w in (w_c, w_nc):
        got = xn.bce(p, t, weight=w)
        want = [ref.exact_bce(p[i], t[i], weight=np.broadcast_to(w, p.shape)[i]) for i in range(5)]
        np.testing.assert_allclose(got, want, rtol=1e-12)
    got = xn.bce(p, t, pos_weight=pw_nc)
    want = [ref.exact_bce(p[i], t[i], pos_weight=pw_nc[i]) for i in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # torch's own numbers
    torch = pytest.importorskip("torch")
    tw = torch.nn.functional.binary_cross_entropy(torch.tensor(p), torch.tensor(t), weight=torch.tensor(w_nc),
                                                  reduction="none").sum(1).numpy()
    np.testing.assert_allclose(xn.bce(p, t, weight=w_nc, eps="torch"), tw, rtol=1e-12)
    x = rng.normal(size=(5, 4)) * 5
    tl = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(x), torch.tensor(t), weight=torch.tensor(w_c), pos_weight=torch.tensor(pw_nc), reduction="none"
    ).sum(1).numpy()
    np.testing.assert_allclose(xn.bce(x, t, from_logits=True, weight=w_c, pos_weight=pw_nc), tl, rtol=1e-10)


@pytest.mark.parametrize("bad", [[-1.0, 1, 1, 1], [np.nan, 1, 1, 1], np.ones((4, 4)), np.ones((5, 3)), [1.0, 2.0]])
def test_bad_weights_refused(bad):
    p = np.full((5, 4), 0.5)
    with pytest.raises(InvalidInputError):
        xn.bce(p, np.zeros((5, 4)), weight=bad)


def test_options_of_the_wrong_type_are_refused_by_name():
    p, y = np.array([[0.2, 0.8]]), np.array([1])
    cases = [
        (dict(eps=None), "eps"),
        (dict(label_smoothing="abc"), "label_smoothing"),
        (dict(ignore_index="x"), "ignore_index"),
        (dict(ignore_index=1.5), "ignore_index"),
        (dict(ignore_index=10**20), "ignore_index"),
        (dict(ignore_index=True), "ignore_index"),
        (dict(class_weight=["a", "b"]), "class_weight"),
    ]
    for opts, name in cases:
        with pytest.raises(InvalidInputError, match=name):
            xn.cce(p, y, **opts)
    assert np.isnan(xn.cce(p, y, ignore_index=1.0)[0])


# ---- the same tables on the GPU kernels (CUDA simulator) -----------------------------------------------


@pytest.mark.parametrize("shape", ["warp", "block"])
@pytest.mark.parametrize("target_kind", ["index", "dense"])
@pytest.mark.parametrize("loss,from_logits", [("cce", True), ("bce", True), ("cce", False), ("bce", False)])
def test_hard_rows_gpu(sim_gpu, loss, from_logits, target_kind, shape):  # noqa: F811
    if shape == "block" and not from_logits:
        pytest.skip("the block shape shares the warp shape's per-class code; logits cover its merge")
    sim_gpu(shape)
    for dtype in (np.float64, np.float32):
        _run_case(loss, from_logits, target_kind, "narrow", dtype, device="cuda")
        _run_case(loss, from_logits, target_kind, "general", dtype, device="cuda")


def test_masked_and_zero_weight_gpu(sim_gpu):  # noqa: F811
    sim_gpu("split")
    rows = list(MASKED)
    for kind in ("index", "dense"):
        y = [1, 0, 3]
        got, targets = _score("cce", rows, y, "narrow", np.float64, target_kind=kind, from_logits=True, device="cuda")
        np.testing.assert_allclose(got, _exact("cce", rows, targets, from_logits=True), rtol=1e-12)
        out, status = xn.score("cce", np.array(rows), np.array([0, 1, 2]), from_logits=True, on_invalid="nan",
                               device="cuda")
        assert list(status) == [losses.TARGET_MASKED] * 3 and np.all(out == np.inf)
    out, status = xn.score("bce", np.array(rows), np.array([0, 1, 2]), from_logits=True, on_invalid="nan",
                           device="cuda")
    assert list(status) == [losses.TARGET_MASKED] * 3
    got, targets = _score("bce", rows, [1, 0, 0], "narrow", np.float64, target_kind="index", from_logits=True,
                          device="cuda")
    np.testing.assert_allclose(got, _exact("bce", rows, targets, from_logits=True), rtol=1e-12)
    p = np.array([[0.0, 0.5, 0.5]])
    out, st = xn.score("cce", p, np.array([0]), eps="none", class_weight=[0.0, 1.0, 1.0], on_invalid="nan",
                       device="cuda")
    assert st[0] == 0 and out[0] == 0.0
    out, st = xn.score("bce", p, np.array([[1.0, 0, 0]]), eps="none", pos_weight=[0.0, 1.0, 1.0],
                       weight=[1.0, 2.0, 1.0], on_invalid="nan", device="cuda")
    want = ref.exact_bce(p[0], np.array([1.0, 0, 0]), eps="none", pos_weight=[0.0, 1, 1], weight=[1.0, 2.0, 1.0])
    assert st[0] == 0 and out[0] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("target_dtype", [np.float32, np.float64, np.bool_])
def test_float32_logit_terms_keep_every_target_exact(target_dtype):
    """BCE from float32 logits in the block kernels computes each term in float32; a target
    float32 cannot hold (1 - 1e-10 as float64) must keep its linear part in float64, or the
    confident row's loss (5e-9, against a softplus tail of 2e-22) would come out as 2e-22."""
    x = np.array([[50.0, -50.0, -60.0], [-20.0, 20.0, 0.5], [-90.0, 1.0, 88.0]], np.float32)
    if target_dtype is np.bool_:
        t = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 1]], bool)
    else:
        t = np.array([[1 - 1e-10, 0.0, 0.0], [0.25, 1.0, 1e-7], [0.0, 1.0, 1.0]], target_dtype)
    got = xn.bce(x, t, from_logits=True)
    assert got.dtype == np.float32
    want = [ref.exact_bce(r, np.asarray(tr, np.float64), from_logits=True) for r, tr in zip(x, t, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)
    # index labels take the same terms (the one-hot targets spelled out in the scratch)
    got = xn.bce(x, np.array([0, 1, 2]), from_logits=True)
    want = [ref.exact_bce(r, k, from_logits=True) for k, r in enumerate(x)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("eps", ["auto", "keras", 1e-7, "torch", "none"])
def test_float32_probability_logs_agree_whichever_log_runs(eps):
    """CCE from float32 probabilities + index labels takes the division-free float32 ``log``
    when float32 holds the clip bounds exactly and the lower one is normal ("auto", "keras"),
    else the float64 one: either way every row, the clipped and the confident ones included,
    agrees with the exact value to 1e-5."""
    p = np.array([0.5, 1 - 2.0**-24, 1 - 2.0**-20, 1e-3, 2.0**-30, 0.0, 1.0, 0.3], np.float32)
    pred = np.stack([p, 1 - p], axis=1).astype(np.float32)  # two classes; p is the true one
    pred = np.tile(pred, (40, 1))  # several blocks' worth: the block kernel
    y = np.zeros(len(pred), np.int64)
    got = xn.cce(pred, y, eps=eps)
    want = np.array([ref.exact_cce(r, 0, eps=eps, dtype=np.float32) for r in pred[:8]])
    np.testing.assert_allclose(np.tile(want, 40), got, rtol=1e-5, atol=0)


@pytest.mark.parametrize("eps", ["auto", "keras", 1e-7, "torch", "none"])
@pytest.mark.parametrize("target_kind", ["index", "float32", "bool", "float64"])
def test_float32_bce_probability_terms_whichever_log_runs(eps, target_kind):
    """BCE from float32 probabilities against 0/1 targets computes each term in float32 with
    the division-free ``log32`` and an exact ``log(1 - p)`` correction when float32 holds the
    clip bounds ("auto", "keras"), else in float64: every row, with p near 0 and near 1 (the
    correction's cases: 1 - p rounded in float32), agrees with the exact value to 1e-5."""
    p = np.array([[0.5, 3e-8, 2.0**-30, 0.25], [1 - 2.0**-24, 3e-8, 2.0**-30, 1e-7], [0.0, 1.0, 0.999, 1e-3]],
                 np.float32)  # the second row is confident: its loss (~2e-7) is its tiny log(1 - p) terms
    p = np.tile(p, (30, 1))  # several blocks' worth
    labels = np.tile(np.array([3, 0, 2]), 30)
    onehot = np.eye(4)[labels]
    if target_kind == "index":
        target = labels
    else:
        target = onehot.astype(bool if target_kind == "bool" else target_kind)
    got = xn.bce(p, target, eps=eps)
    want = np.array([ref.exact_bce(r, t, eps=eps, dtype=np.float32) for r, t in zip(p[:3], onehot[:3], strict=True)])
    np.testing.assert_allclose(got, np.tile(want, 30), rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["index", "dense"])
def test_masked_bce_logits_in_float32_blocks_as_in_float64(dtype, kind):
    """A ``-inf`` logit (p = 0) costs nothing where its target is 0 and is a masked true class
    (inf, ``TARGET_MASKED``) where it is 1, in the float32 block terms as in float64 (the
    float32 term once took its zero as ``x - x``: NaN, with status OK)."""
    x = np.array([[-np.inf, 1.0, 2.0], [-np.inf, 1.0, 2.0]], dtype)
    labels = np.array([1, 0])
    target = labels if kind == "index" else np.eye(3, dtype=dtype)[labels]
    out, st = xn.score("bce", x, target, from_logits=True, on_invalid="nan")
    assert list(st) == [losses.OK, losses.TARGET_MASKED] and out[1] == np.inf
    want = ref.exact_bce(x[0], np.eye(3)[1], from_logits=True)
    np.testing.assert_allclose(out[0], want, rtol=1e-5 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("layout", ["dense", "ragged"])
@pytest.mark.parametrize("kind", ["index", "dense"])
def test_float32_cce_logit_blocks_take_x_minus_m_exactly(layout, kind):
    """CCE from float32 logits in the block kernels computes ``e^(x - m)`` in float32 with the
    difference taken exactly (``exp32_sub``). Built so that every ``x - m`` (-80 - k 2^-18)
    rounds half-way in float32: rounding it first would be off by ~4e-6 relative, within the
    1e-5 promise but far above what the kernel gives (within 1e-6 here, checked on C = 3 to
    24, dense and ragged, index and one-hot targets)."""
    rng = np.random.default_rng(8)
    for c in (3, 7, 10, 16, 24):
        n = 300
        m = (np.float32(40.0) + np.float32(2.0**-18) * rng.integers(1, 8, n).astype(np.float32))
        x = np.full((n, c), -40.0, np.float32)
        x[:, 0] = m
        y = np.zeros(n, np.int64)
        target = y if kind == "index" else np.eye(c, dtype=np.float32)[y]
        pred = x if layout == "dense" else pa.array(list(x), type=pa.list_(pa.float32()))
        if layout == "ragged" and kind == "dense":
            target = pa.array(list(target), type=pa.list_(pa.float32()))
        got = xn.cce(pred, target, from_logits=True)
        want = np.array([ref.exact_cce(r.astype(np.float64), 0, from_logits=True) for r in x[:20]])
        np.testing.assert_allclose(got[:20], want, rtol=1e-6, atol=0)
        assert got.dtype == np.float32
