"""Hostile column types and values: wide-layout globs that match a summary column, labels
of 2**40 and huge --ignore-index sentinels, boolean predictions, dictionary-encoded
columns, pandas nullable dtypes, the invalid-row count of a run that stops early, and
--ignore-index with BCE. Each test is one class of fault; the sweep at the end feeds every
column type through the CLI and the API: each either scores and matches tests/reference.py
or is refused with exit 2 / InvalidInputError naming the column, never exit 1 or another
exception."""

from __future__ import annotations

import decimal
import json
import math
import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import xent_numba as xn
from tests import reference as ref
from xent_numba import losses
from xent_numba.analysis.advise import advise_arrays, advise_file
from xent_numba.analysis.summary import DENSE_CLASSES, Summary
from xent_numba.cli.commands import app
from xent_numba.columns import Columns, family
from xent_numba.engine import local as pipeline
from xent_numba.errors import InvalidInputError

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _probs(n, c, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, c))
    return np.exp(x) / np.exp(x).sum(1, keepdims=True)


def _list(p, vtype=pa.float64()):
    n, c = p.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(p.ravel(), vtype), c).cast(pa.list_(vtype))


def _cli_ok(res):
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output


def _cli_refused(res, *words):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "unexpected error" not in res.output, res.output
    for w in words:
        assert w in res.output, (w, res.output)


def _scores(path, name="cce"):
    return pq.read_table(path)[name].to_numpy(zero_copy_only=False)


# ---- 1. wide-layout globs: one family of class columns --------------------------------------


def _wide(path, names, n=120, seed=0, extra=None):
    p = _probs(n, len(names), seed)
    y = np.random.default_rng(seed + 1).integers(0, len(names), n)
    cols = {name: p[:, j] for j, name in enumerate(names)}
    cols.update(extra(p) if extra else {})
    cols["label"] = y
    pq.write_table(pa.table(cols), path)
    return p, y


def test_glob_that_also_matches_a_summary_column_is_refused(tmp_path):
    src, out = tmp_path / "w.parquet", tmp_path / "o.parquet"
    p, y = _wide(src, [f"p_{j}" for j in range(10)], extra=lambda p: {"p_max": p.max(1)})
    res = run("score", src, "-o", out, "--pred", "p*")
    _cli_refused(res, "p_max", "p_0", "p_9", "--exclude")
    assert not out.exists()
    # left out by --exclude, the run scores the ten classes; the header names them
    res = run("score", src, "-o", out, "--pred", "p*", "--exclude", "p_max")
    _cli_ok(res)
    want = ref.cce(list(p), list(y))
    ref.assert_close(_scores(out), want, np.float64)
    assert "pred: p_0, p_1, p_2, p_3, p_4, p_5, p_6, p_7, p_8, p_9 (10 columns); label: label" in res.output
    # a glob that fits the family needs nothing more
    res = run("score", src, "-o", out, "--pred", "p_[0-9]*", "--overwrite")
    _cli_ok(res)
    ref.assert_close(_scores(out), want, np.float64)


def test_exclude_is_repeatable_and_globs(tmp_path):
    src, out = tmp_path / "w.parquet", tmp_path / "o.parquet"
    names = [f"p_{j}" for j in range(4)]
    p, y = _wide(src, names, extra=lambda p: {"p_max": p.max(1), "p_argmax": p.argmax(1), "p_top1": p.max(1)})
    res = run("score", src, "-o", out, "--pred", "p_*", "--exclude", "p_max", "--exclude", "p_[at]*")
    _cli_ok(res)
    ref.assert_close(_scores(out), ref.cce(list(p), list(y)), np.float64)
    res = run("score", src, "-o", tmp_path / "o2.parquet", "--pred", "p_*", "--exclude", "p_*")
    _cli_refused(res, "--exclude left none")


def test_wide_numbers_must_run_from_0_or_1_in_column_order(tmp_path):
    gap = tmp_path / "gap.parquet"
    _wide(gap, ["p_0", "p_2"])
    _cli_refused(run("score", gap, "-o", tmp_path / "o.parquet", "--pred", "p_*"), "p_2", "0, 2")
    lexical = tmp_path / "lex.parquet"  # p_10 before p_2: class 2 would be read from p_10
    _wide(lexical, ["p_0", "p_1", "p_10", "p_2", "p_3", "p_4", "p_5", "p_6", "p_7", "p_8", "p_9"])
    _cli_refused(run("score", lexical, "-o", tmp_path / "o.parquet", "--pred", "p_*"), "p_10")
    late = tmp_path / "late.parquet"
    _wide(late, ["p_5", "p_6"])
    _cli_refused(run("score", late, "-o", tmp_path / "o.parquet", "--pred", "p_*"), "p_5")
    one = tmp_path / "one.parquet"  # from 1 is fine
    p, y = _wide(one, ["p1", "p2", "p3"])
    res = run("score", one, "-o", tmp_path / "o.parquet", "--pred", "p?")
    _cli_ok(res)
    ref.assert_close(_scores(tmp_path / "o.parquet"), ref.cce(list(p), list(y)), np.float64)


def test_wide_family_of_class_names(tmp_path):
    src, out = tmp_path / "w.parquet", tmp_path / "o.parquet"
    p, y = _wide(src, ["p_cat", "p_dog", "p_bird"])
    res = run("score", src, "-o", out, "--pred", "p_*", "--loss", "both")
    _cli_ok(res)
    ref.assert_close(_scores(out), ref.cce(list(p), list(y)), np.float64)
    ref.assert_close(_scores(out, "bce"), ref.bce(list(p), list(y)), np.float64)
    assert "pred: p_cat, p_dog, p_bird (3 columns)" in res.output
    mean = tmp_path / "m.parquet"
    _wide(mean, ["p_cat", "p_dog"], extra=lambda p: {"p_mean": p.mean(1)})
    _cli_refused(run("score", mean, "-o", out, "--pred", "p_*", "--overwrite"), "p_mean")


@pytest.mark.parametrize("names,odd", [
    (["p_0", "p_1", "p_max"], ["p_max"]),
    (["p_0", "p_2"], ["p_2"]),
    (["p_1", "p_0"], ["p_0"]),
    (["p_cat", "p_dog", "p_top_1"], ["p_top_1"]),
    (["p_cat", "p_dog", "p_3"], ["p_3"]),
    (["p_cat", "p_dog", "pred_class"], ["pred_class"]),
    (["cat", "dog"], ["cat", "dog"]),
    (["p_cat", "p_dog", "p_Entropy"], ["p_Entropy"]),
])
def test_family_names_what_breaks_it(names, odd):
    assert family(tuple(names))[1] == odd


@pytest.mark.parametrize("names,parts", [
    (["p_0", "p_1", "p_2"], (0, 1, 2)),
    (["logit1", "logit2"], (1, 2)),
    (["p_00", "p_01", "p_02"], (0, 1, 2)),
    (["p_cat", "p_car"], ("cat", "car")),
    (["p_h1n1", "p_h3n2"], ("h1n1", "h3n2")),
])
def test_family_accepts(names, parts):
    assert family(tuple(names)) == (parts, [], "")


def test_wide_pred_and_label_classes_must_agree(tmp_path):
    p = _probs(60, 3)
    y = np.eye(3)[np.arange(60) % 3]
    cols = {f"p_{j}": p[:, j] for j in range(3)}
    good, bad = dict(cols), dict(cols)
    good.update({f"y_{j}": y[:, j] for j in range(3)})
    bad.update({f"y_{j + 1}": y[:, j] for j in range(3)})
    pq.write_table(pa.table(good), tmp_path / "good.parquet")
    pq.write_table(pa.table(bad), tmp_path / "bad.parquet")
    out = tmp_path / "o.parquet"
    res = run("score", tmp_path / "good.parquet", "-o", out, "--pred", "p_*", "--label", "y_*", "--loss", "bce")
    _cli_ok(res)
    ref.assert_close(_scores(out, "bce"), ref.bce(list(p), list(y)), np.float64)
    assert "label: y_0, y_1, y_2 (3 columns)" in res.output
    res = run("score", tmp_path / "bad.parquet", "-o", tmp_path / "o2.parquet", "--pred", "p_*", "--label", "y_*")
    _cli_refused(res, "different classes", "y_1")


def test_run_header_lists_long_layouts_first_to_last_and_is_quiet_with_q(tmp_path):
    src, out = tmp_path / "w.parquet", tmp_path / "o.parquet"
    _wide(src, [f"p_{j}" for j in range(30)])
    res = run("score", src, "-o", out, "--pred", "p_*")
    _cli_ok(res)
    assert "pred: p_0..p_29 (30 columns); label: label" in res.output
    res = run("score", src, "-o", out, "--pred", "p_*", "--overwrite", "-q")
    _cli_ok(res)
    assert "pred:" not in res.output


def test_score_files_reports_columns_once_before_any_work(tmp_path):
    src = tmp_path / "w.parquet"
    p, y = _wide(src, ["p_0", "p_1", "p_2"], extra=lambda p: {"p_max": p.max(1)})
    calls = []
    opts = pipeline.ScoreOptions(pred="p_*", exclude=("p_max",))
    summary = pipeline.score_files([src], str(tmp_path / "o.parquet"), opts, batch_rows=16,
                                   on_columns=lambda c: calls.append(("columns", c)),
                                   on_start=lambda n: calls.append(("start", n)))
    assert calls == [("columns", Columns(("p_0", "p_1", "p_2"), ("label",), ())), ("start", 120)]
    assert summary.rows == 120
    with pytest.raises(InvalidInputError, match="p_max"):
        pipeline.score_files([src], str(tmp_path / "o2.parquet"), pipeline.ScoreOptions(pred="p_*"))


def test_advise_takes_exclude_and_refuses_a_broken_family(tmp_path):
    src = tmp_path / "w.parquet"
    _wide(src, ["p_0", "p_1", "p_2"], extra=lambda p: {"p_max": p.max(1)})
    with pytest.raises(InvalidInputError, match="p_max"):
        advise_file(src, pred="p_*")
    assert advise_file(src, pred="p_*", exclude=("p_max",))["recommended_loss"] == "cce"
    res = run("advise", src, "--pred", "p_*")
    _cli_refused(res, "p_max")
    res = run("advise", src, "--pred", "p_*", "--exclude", "p_max", "--json")
    _cli_ok(res)
    assert json.loads(res.stdout)["evidence"]["n_classes"] == 3


# ---- 2. huge labels and sentinels: per-class state by the classes seen ------------------------


def _dump(path, y, c=4, seed=0):
    p = _probs(len(y), c, seed)
    pq.write_table(pa.table({"pred": _list(p), "label": pa.array(y, pa.int64())}), path)
    return p


@pytest.mark.parametrize("big", [2**40, 10**12, 2**63 - 1, -(2**40), -(2**63)])
def test_huge_label_with_on_invalid_null(tmp_path, big):
    y = np.arange(50) % 4
    y[7] = big
    src = tmp_path / "in.parquet"
    _dump(src, y)
    sj = tmp_path / "s.json"
    res = run("score", src, "-o", tmp_path / "o.parquet", "--on-invalid", "null", "--loss", "both",
              "--summary-json", sj, "-q")
    _cli_ok(res)
    s = json.loads(sj.read_text())
    assert (s["invalid_rows"], s["ignored_rows"], s["rows"]) == (1, 0, 50)
    assert {c["class"] for c in s["worst_classes"]} <= {0, 1, 2, 3}


@pytest.mark.parametrize("sentinel", [2**40, 10**12, -(2**40), -(2**63), 2**63 - 1])
@pytest.mark.parametrize("loss", ["cce", "bce", "both"])
def test_huge_ignore_index_sentinel(tmp_path, sentinel, loss):
    y = np.arange(60) % 4
    y[::5] = sentinel
    src = tmp_path / "in.parquet"
    p = _dump(src, y)
    sj, out = tmp_path / "s.json", tmp_path / "o.parquet"
    res = run("score", src, "-o", out, "--ignore-index", sentinel, "--loss", loss, "--summary-json", sj, "-q")
    _cli_ok(res)
    s = json.loads(sj.read_text())
    assert (s["invalid_rows"], s["ignored_rows"]) == (0, 12)
    keep = y != sentinel
    for name in pipeline.ScoreOptions(loss=loss).losses:
        got = _scores(out, name)
        assert np.isnan(got[~keep]).all()
        want = (ref.cce if name == "cce" else ref.bce)(list(p[keep]), list(y[keep]))
        ref.assert_close(got[keep], want, np.float64)


def test_summary_tables_grow_by_the_rows_with_a_loss():
    s = Summary()
    s.add_losses("cce", np.array([1.0, np.nan, 2.0, np.nan]), np.array([0, 2**40, 3, -(2**62)]))
    s.add_classes(np.array([1, 2**62, 2**63 - 1]), np.array([0.5, np.nan, np.nan]))
    assert s.class_count.size == 4 and s.class_sum.size == 4
    assert s.worst_classes() == [(3, 2.0, 1), (0, 1.0, 1), (1, 0.5, 1)]
    assert s.to_dict()["losses"]["cce"]["count"] == 2


def test_summary_of_huge_classes_with_a_loss_is_sparse():
    tracemalloc.start()
    s = Summary()
    s.add_losses("cce", np.array([1.0, 3.0, 2.0, 5.0]), np.array([2, 2**40, 2**40, 2**62]))
    s.add_classes(np.array([2**62, 7]), np.array([1.0, 4.0]))
    other = Summary()
    other.add_losses("cce", np.array([6.0, 1.0]), np.array([2**40, 10**15]))
    s.merge(other)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20
    assert s.class_count.size <= DENSE_CLASSES
    worst = {c: (m, n) for c, m, n in s.worst_classes(10)}
    assert worst == {2: (1.0, 1), 7: (4.0, 1), 2**40: (11.0 / 3, 3), 2**62: (3.0, 2), 10**15: (1.0, 1)}
    assert s.stats["cce"].count == 6


def test_summary_dense_and_sparse_agree_with_the_reference():
    rng = np.random.default_rng(4)
    v = rng.exponential(size=5000)
    v[rng.random(v.size) < 0.1] = np.nan
    labels = rng.integers(0, 6, v.size)
    shifted = labels + np.where(labels % 2 == 1, DENSE_CLASSES, 0)  # odd classes moved past the dense table
    a, b = Summary(), Summary()
    a.add_losses("cce", v, labels)
    for lo in range(0, v.size, 999):
        b.add_losses("cce", v[lo:lo + 999], shifted[lo:lo + 999])
    csum, ccount = ref.class_sums(labels, v)
    cls, sums, counts = b.per_class()
    order = [0, 2, 4, 1, 3, 5]  # class order: the dense classes, then the moved ones
    np.testing.assert_array_equal(cls, [c + (DENSE_CLASSES if c % 2 else 0) for c in order])
    np.testing.assert_array_equal(counts, ccount[order])
    np.testing.assert_allclose(sums, csum[order], rtol=1e-12)
    da, db = a.to_dict()["losses"]["cce"], b.to_dict()["losses"]["cce"]
    assert da.pop("mean") == pytest.approx(db.pop("mean"), rel=1e-14) and da == db


# ---- 3. boolean predictions: refused by name everywhere; boolean labels stay valid ------------

BOOL_PREDS = {
    "numpy 1-D": lambda: np.array([True, False, True]),
    "numpy 2-D": lambda: np.array([[True, False], [False, True], [True, False]]),
    "arrow bool": lambda: pa.array([True, False, True]),
    "chunked bool": lambda: pa.chunked_array([[True], [False, True]]),
    "list<bool>": lambda: pa.array([[True, False], [False, True], [True, False]]),
    "fixed_size_list<bool>": lambda: pa.array([[True, False], [False, True], [True, False]], pa.list_(pa.bool_(), 2)),
    "pandas bool": lambda: pd.Series([True, False, True]),
    "pandas boolean": lambda: pd.Series([True, None, True], dtype="boolean"),
}


@pytest.mark.parametrize("kind", list(BOOL_PREDS))
@pytest.mark.parametrize("loss", ["cce", "bce", "both"])
def test_bool_predictions_are_refused_by_the_api(kind, loss):
    with pytest.raises(InvalidInputError, match="cast it to float") as e:
        xn.score(loss, BOOL_PREDS[kind](), np.array([0, 1, 0]))
    assert e.value.column == "pred"
    with pytest.raises(InvalidInputError, match="booleans"):
        advise_arrays(BOOL_PREDS[kind](), np.array([0, 1, 0]))


def test_bool_labels_stay_valid():
    p = np.array([0.2, 0.7, 0.9])
    t = np.array([False, True, True])
    ref.assert_close(xn.bce(p, t), ref.binary(p, t.astype(float)), np.float64)
    ref.assert_close(xn.bce(pa.array(p), pa.array(t)), ref.binary(p, t.astype(float)), np.float64)
    P = _probs(3, 2)
    T = np.array([[True, False], [False, True], [True, True]])
    ref.assert_close(xn.bce(P, T), ref.bce(list(P), list(T.astype(float))), np.float64)


@pytest.mark.parametrize("layout", ["scalar", "list", "wide"])
def test_bool_prediction_columns_are_refused_by_score_and_advise(tmp_path, layout):
    n = 40
    b = np.arange(n) % 2 == 0
    if layout == "scalar":
        cols, pred = {"hard": b, "label": (~b).astype(np.int64)}, "hard"
    elif layout == "list":
        cols, pred = {"hard": pa.array([[bool(x), not x] for x in b]), "label": np.zeros(n, np.int64)}, "hard"
    else:
        cols, pred = {"h_0": b, "h_1": ~b, "label": np.zeros(n, np.int64)}, "h_*"
    src, out = tmp_path / "in.parquet", tmp_path / "o.parquet"
    pq.write_table(pa.table(cols), src)
    _cli_refused(run("score", src, "-o", out, "--pred", pred), "'h", "cast it to float")
    assert not out.exists()
    _cli_refused(run("advise", src, "--pred", pred), "'h", "cast it to float")


# ---- 4. dictionary-encoded columns ----------------------------------------------------------


def _dict_lists(rows, idx):
    return pa.DictionaryArray.from_arrays(pa.array(idx, pa.int32()), pa.array(rows))


def test_dictionary_of_lists_in_the_api():
    rows = _probs(3, 4)
    idx = np.array([0, 2, 1, 1, 0])
    pred = _dict_lists(rows.tolist(), idx)
    hot = np.eye(4)
    label = _dict_lists(hot.tolist(), np.array([3, 0, 1, 2, 2]))
    y = np.array([3, 0, 1, 2, 2])
    want = ref.cce(list(rows[idx]), list(y))
    ref.assert_close(xn.cce(pred, label), want, np.float64)
    ref.assert_close(xn.cce(pred, pa.array(y).dictionary_encode()), want, np.float64)
    # chunks with different dictionaries (Arrow cannot unify dictionaries of lists)
    chunked = pa.chunked_array([_dict_lists(rows.tolist(), [0, 2]), _dict_lists(rows[[1, 0]].tolist(), [0, 0, 1])])
    ref.assert_close(xn.cce(chunked, pa.array(y)), want, np.float64)
    ref.assert_close(xn.bce(chunked, label), ref.bce(list(rows[idx]), list(hot[y])), np.float64)
    assert advise_arrays(chunked, label)["label_kind"] == "one_hot"


@pytest.mark.parametrize("strings", [pa.string(), pa.large_string()])
def test_string_labels_are_refused_as_class_names(tmp_path, strings):
    names = pa.array(["cat", "dog", "cat"], strings)
    for label in (names, names.dictionary_encode(), pd.Series(["cat", "dog", "cat"], dtype="category")):
        with pytest.raises(InvalidInputError, match="class names") as e:
            xn.cce(_probs(3, 2), label)
        assert e.value.column == "target"
        with pytest.raises(InvalidInputError, match="class names"):
            xn.bce(np.array([0.1, 0.2, 0.3]), label)
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"pred": _list(_probs(3, 2)), "animal": names.dictionary_encode()}), src)
    _cli_refused(run("score", src, "-o", tmp_path / "o.parquet", "--label", "animal"), "'animal'", "class names")
    _cli_refused(run("advise", src, "--label", "animal"), "class names")


def test_dictionary_columns_in_a_file(tmp_path):
    """Arrow IPC keeps dictionaries of lists and of numbers (Parquet decodes them)."""
    rows = _probs(4, 3)
    idx = np.arange(40) % 4
    y = np.arange(40) % 3
    table = pa.table({
        "pred": _dict_lists(rows.tolist(), idx),
        "label": pa.array(y).dictionary_encode(),
        "hot": _dict_lists(np.eye(3).tolist(), y),
        "p_0": pa.array(rows[idx, 0]).dictionary_encode(),
        "p_1": pa.array(rows[idx, 1]).dictionary_encode(),
        "p_2": pa.array(rows[idx, 2]).dictionary_encode(),
    })
    src, out = tmp_path / "in.arrow", tmp_path / "o.parquet"
    feather.write_feather(table, src, compression="uncompressed")
    want_cce = ref.cce(list(rows[idx]), list(y))
    want_bce = ref.bce(list(rows[idx]), list(y))
    for pred, label in (("pred", "label"), ("pred", "hot"), ("p_*", "label"), ("p_*", "hot")):
        res = run("score", src, "-o", out, "--pred", pred, "--label", label, "--loss", "both", "--overwrite",
                  "--batch-rows", 16)
        _cli_ok(res)
        ref.assert_close(_scores(out), want_cce, np.float64)
        ref.assert_close(_scores(out, "bce"), want_bce, np.float64)
        res = run("advise", src, "--pred", pred, "--label", label, "--json")
        _cli_ok(res)
        assert json.loads(res.stdout)["recommended_loss"] == "cce"
    sj = tmp_path / "s.json"
    _cli_ok(run("score", src, "-o", out, "--overwrite", "--summary-json", sj))
    assert {c["class"] for c in json.loads(sj.read_text())["worst_classes"]} == {0, 1, 2}  # per-class sums kept


def test_files_that_differ_only_in_dictionary_encoding_are_read_as_one(tmp_path):
    rows = _probs(20, 3)
    y = np.arange(20) % 3
    plain = pa.table({"pred": _list(rows[:10]), "label": pa.array(y[:10]), "id": pa.array(["a"] * 10)})
    encoded = pa.table({"pred": _dict_lists(rows[10:].tolist(), np.arange(10)),
                        "label": pa.array(y[10:], pa.int32()).dictionary_encode(),
                        "id": pa.array(["b"] * 10).dictionary_encode()})
    feather.write_feather(plain, tmp_path / "a.arrow")
    feather.write_feather(encoded, tmp_path / "b.arrow")
    out = tmp_path / "o.parquet"
    res = run("score", tmp_path / "a.arrow", tmp_path / "b.arrow", "-o", out, "--keep", "id", "--batch-rows", 4)
    _cli_ok(res)
    ref.assert_close(_scores(out), ref.cce(list(rows), list(y)), np.float64)
    assert pq.read_table(out)["id"].to_pylist() == ["a"] * 10 + ["b"] * 10


def test_dictionary_columns_in_the_dask_engine(tmp_path):
    pytest.importorskip("distributed")
    import dask.dataframe as dd

    from xent_numba.engine import dask as xdask

    rows = _probs(3, 3)
    idx = np.arange(30) % 3
    y = np.arange(30) % 3
    lists = pd.Series(pa.array(rows[idx].tolist()), dtype=pd.ArrowDtype(pa.list_(pa.float64())))
    frame = pd.DataFrame({"pred": lists, "label": pd.Series(y).astype("category")})
    got = xdask.score(dd.from_pandas(frame, npartitions=2), loss="cce").compute()
    ref.assert_close(got["cce"].to_numpy(dtype=float), ref.cce(list(rows[idx]), list(y)), np.float64)
    names = frame.assign(label=pd.Series(np.array(["a", "b", "c"])[y]).astype("category"))
    with pytest.raises(InvalidInputError, match="class names"):
        xdask.score(dd.from_pandas(names, npartitions=2)).compute()
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"pred": _list(rows[idx]), "label": pa.array(np.array(["a", "b", "c"])[y]).dictionary_encode()}), src)
    res = run("score", src, "-o", tmp_path / "out", "--engine", "dask", "-q")
    _cli_refused(res, "class names", "'label'")


# ---- 5. pandas nullable and Arrow-backed dtypes read as nulls -------------------------------


def _same_as_arrow(pred, label, pa_pred, pa_label, loss="cce"):
    got, st = xn.score(loss, pred, label, on_invalid="nan")
    want, wst = xn.score(loss, pa_pred, pa_label, on_invalid="nan")
    np.testing.assert_array_equal(st, wst)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(InvalidInputError) as a:
        xn.score(loss, pred, label)
    with pytest.raises(InvalidInputError) as b:
        xn.score(loss, pa_pred, pa_label)
    assert str(a.value) == str(b.value)
    return got, st


@pytest.mark.parametrize("dtype", ["Int64", "Int8", "UInt16", pd.ArrowDtype(pa.int64()), pd.ArrowDtype(pa.int16())])
def test_nullable_integer_labels_with_na(dtype):
    P = _probs(4, 3)
    y = pd.Series([0, None, 2, 1], dtype=dtype)
    got, st = _same_as_arrow(P, y, P, pa.array([0, None, 2, 1], pa.int64()))
    assert st[1] == losses.NULL_ROW and np.isnan(got[1])
    ref.assert_close(got[[0, 2, 3]], ref.cce(list(P[[0, 2, 3]]), [0, 2, 1]), np.float64)
    ref.assert_close(xn.cce(P[[0, 2, 3]], pd.Series([0, 2, 1], dtype=dtype)), got[[0, 2, 3]], np.float64)


@pytest.mark.parametrize("dtype", ["boolean", "Float64", "Float32", "Int64", pd.ArrowDtype(pa.float64()),
                                   pd.ArrowDtype(pa.bool_())])
def test_nullable_binary_labels_with_na(dtype):
    p = np.array([0.2, 0.7, 0.9, 0.4])
    values = [True, None, False, True] if "bool" in str(dtype) else [1, None, 0, 1]
    label = pd.Series(values, dtype=dtype)
    pa_label = pa.array(label.astype(object).where(label.notna(), None).tolist(),
                        pa.bool_() if "bool" in str(dtype) else pa.from_numpy_dtype(np.float64))
    if str(dtype) in ("Int64",):
        pa_label = pa_label.cast(pa.int64())
    elif str(dtype) == "Float32":
        pa_label = pa_label.cast(pa.float32())
    got, st = _same_as_arrow(p, label, p, pa_label, loss="bce")
    assert st[1] == losses.NULL_ROW
    ref.assert_close(got[[0, 2, 3]], ref.binary(p[[0, 2, 3]], np.array([1.0, 0.0, 1.0])), np.float64)


@pytest.mark.parametrize("dtype,atype", [("Float64", pa.float64()), ("Float32", pa.float32()),
                                         (pd.ArrowDtype(pa.float64()), pa.float64()),
                                         (pd.ArrowDtype(pa.float32()), pa.float32())])
def test_nullable_scalar_predictions_with_na(dtype, atype):
    p = pd.Series([0.2, None, 0.9], dtype=dtype)
    t = np.array([0, 1, 1])
    got, st = _same_as_arrow(p, t, pa.array([0.2, None, 0.9], atype), t, loss="bce")
    assert st[1] == losses.NULL_ROW
    ref.assert_close(got[[0, 2]], ref.binary(np.array([0.2, 0.9], atype.to_pandas_dtype()), [0, 1],
                                             dtype=atype.to_pandas_dtype()), atype.to_pandas_dtype())


# ---- 6. the invalid-row count tells the truth ------------------------------------------------


def test_count_of_invalid_rows_of_a_run_that_stops_at_the_first_bad_batch(tmp_path):
    n, c = 50_000, 4
    x = np.random.default_rng(0).normal(size=(n, c)) * 3
    x[:, 0] = 5.0  # every row holds a logit outside [0, 1]
    src = tmp_path / "logits.parquet"
    pq.write_table(pa.table({"pred": _list(x), "label": np.zeros(n, np.int64)}), src)
    res = run("score", src, "-o", tmp_path / "o.parquet", "--batch-rows", 8192, "-q")
    _cli_refused(res, "at least 8192 invalid rows", "counted in the batch that stopped the run")
    assert "in total" not in res.output
    with pytest.raises(InvalidInputError) as e:  # the API counts its whole call
        xn.cce(x, np.zeros(n, np.int64))
    assert e.value.n_invalid == n and e.value.counted is None
    assert f"; {n} invalid rows in total" in str(e.value)
    # a ChunkedArray stops at the first chunk with one: "at least", up to where it stopped
    chunked = pa.chunked_array([_list(x[:1000]), _list(x[1000:])])
    with pytest.raises(InvalidInputError, match=r"at least 1000 invalid rows \(counted in rows 0\.\.999"):
        xn.cce(chunked, np.zeros(n, np.int64))
    with pytest.raises(InvalidInputError, match=f"; {n} invalid rows in total"):
        xn.cce(pa.chunked_array([_list(x)]), np.zeros(n, np.int64))


def test_count_is_exact_when_every_bad_row_is_in_the_call():
    p = np.array([0.2, 1.5, 0.3, -1.0])
    with pytest.raises(InvalidInputError, match="2 invalid rows in total"):
        xn.bce(p, np.array([0, 1, 0, 1]))
    e = InvalidInputError("x", n_invalid=5, counted="somewhere")
    assert "at least 5 invalid rows (somewhere)" in str(e)
    import pickle

    assert pickle.loads(pickle.dumps(e)).counted == "somewhere"


# ---- 7. --ignore-index with BCE -------------------------------------------------------------


@pytest.mark.parametrize("loss", ["bce", "both"])
@pytest.mark.parametrize("sentinel", [-100, 2])
@pytest.mark.parametrize("on_invalid", ["error", "null"])
def test_ignore_index_with_bce(tmp_path, loss, sentinel, on_invalid):
    y = np.arange(80) % 4
    y[::4] = sentinel  # label 2 is also a class: BCE skips it too, as CCE does
    src, out, sj = tmp_path / "in.parquet", tmp_path / "o.parquet", tmp_path / "s.json"
    p = _dump(src, y)
    res = run("score", src, "-o", out, "--loss", loss, "--ignore-index", sentinel, "--on-invalid", on_invalid,
              "--summary-json", sj)
    _cli_ok(res)
    assert res.output.count("--ignore-index is a CCE option") == 1
    ignored = y == sentinel
    got = _scores(out, "bce")
    assert np.isnan(got[ignored]).all() and pq.read_table(out)["bce"].null_count == ignored.sum()
    ref.assert_close(got[~ignored], ref.bce(list(p[~ignored]), list(y[~ignored])), np.float64)
    s = json.loads(sj.read_text())
    assert (s["ignored_rows"], s["invalid_rows"]) == (int(ignored.sum()), 0)


def test_ignored_and_invalid_counts_do_not_depend_on_the_loss(tmp_path):
    y = np.arange(60) % 3
    y[::6] = -100
    y[1] = 7  # out of range: invalid for both losses
    src = tmp_path / "in.parquet"
    _dump(src, y, c=3)
    counts = {}
    for loss in ("cce", "bce", "both"):
        sj = tmp_path / f"{loss}.json"
        res = run("score", src, "-o", tmp_path / f"{loss}.parquet", "--loss", loss, "--ignore-index", -100,
                  "--on-invalid", "null", "--summary-json", sj, "-q")
        _cli_ok(res)
        s = json.loads(sj.read_text())
        counts[loss] = (s["ignored_rows"], s["invalid_rows"])
    assert counts == {"cce": (10, 1), "bce": (10, 1), "both": (10, 1)}


def test_api_bce_ignore_index_marks_rows_ignored():
    P = _probs(5, 3)
    y = np.array([0, -100, 2, -100, 1])
    out, st = xn.score("both", P, y, ignore_index=-100)
    for name in ("cce", "bce"):
        np.testing.assert_array_equal(st[name], [0, losses.IGNORED, 0, losses.IGNORED, 0])
        assert np.isnan(out[name][[1, 3]]).all()
    ref.assert_close(out["bce"][[0, 2, 4]], ref.bce(list(P[[0, 2, 4]]), [0, 2, 1]), np.float64)
    # an ignored row is never an error, even when its prediction is bad
    Q = P.copy()
    Q[1] = [2.0, -1.0, np.nan]
    out, st = xn.score("bce", Q, y, ignore_index=-100)
    assert st[1] == losses.IGNORED
    # one score per row: the same for binary labels
    p, t = np.array([0.2, 0.8, 0.6]), np.array([0, 1, -1])
    out, st = xn.score("bce", p, t, ignore_index=-1)
    np.testing.assert_array_equal(st, [0, 0, losses.IGNORED])
    ref.assert_close(out[:2], ref.binary(p[:2], t[:2]), np.float64)
    with pytest.raises(InvalidInputError, match="ignore_index"):
        xn.score("bce", p, t, ignore_index=1.5)


# ---- the sweep: every column type through the CLI and the API ---------------------------------

N = 12
_RNG = np.random.default_rng(11)
_P2 = _probs(N, 3, seed=5)  # list rows, C = 3
_P1 = np.round(_RNG.uniform(0.05, 0.95, N), 3)  # one score per row
_Y3 = np.arange(N) % 3
_Y2 = np.arange(N) % 2
_NULL = np.zeros(N, dtype=bool)
_NULL[[2, 9]] = True


def _masked(values, nulls):
    return [None if m else v for v, m in zip(values, nulls, strict=True)]


def _fsl(values, k, vtype):
    return pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(values).ravel(), vtype), k)


# (name, pred, label, kind, ok): kind is "binary" (one score per row), "index" or "dense";
# ok: the column is read (and scored against the reference), else refused naming the column
PRED_CASES = []
for _t in ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]:
    PRED_CASES.append((f"pred {_t}", pa.array(_Y2[::-1].copy(), _t), pa.array(_Y2), "binary", True))
    PRED_CASES.append((f"pred list<{_t}>", pa.array(np.eye(3, dtype=_t)[_Y3[::-1]].tolist(), pa.list_(pa.type_for_alias(_t))),
                       pa.array(_Y3), "index", True))
for _t in ["float16", "float32", "float64"]:
    PRED_CASES.append((f"pred {_t}", pa.array(_P1.astype(_t)), pa.array(_Y2), "binary", True))
    PRED_CASES.append((f"pred nullable {_t}", pa.array(_masked(_P1.astype(_t), _NULL), _t), pa.array(_Y2), "binary", True))
    PRED_CASES.append((f"pred list<{_t}>", pa.array(_P2.astype(_t).tolist(), pa.list_(pa.type_for_alias(_t))), pa.array(_Y3), "index", True))
    PRED_CASES.append((f"pred large_list<{_t}>", pa.array(_P2.astype(_t).tolist(), pa.large_list(pa.type_for_alias(_t))),
                       pa.array(_Y3), "index", True))
    PRED_CASES.append((f"pred fixed_size_list<{_t}>", _fsl(_P2.astype(_t), 3, pa.type_for_alias(_t)), pa.array(_Y3), "index", True))
PRED_CASES += [
    ("pred decimal", pa.array([decimal.Decimal(str(v)) for v in _P1], pa.decimal128(6, 3)), pa.array(_Y2), "binary", True),
    ("pred dictionary<float64>", pa.array(_P1).dictionary_encode(), pa.array(_Y2), "binary", True),
    ("pred dictionary<list>", _dict_lists(_P2.tolist(), np.arange(N)), pa.array(_Y3), "index", True),
    ("pred nullable list", pa.array(_masked(_P2.tolist(), _NULL), pa.list_(pa.float64())), pa.array(_Y3), "index", True),
    ("pred list with a null value", pa.array([[None, 0.5, 0.5]] + _P2[1:].tolist()), pa.array(_Y3), "index", True),
    ("pred bool", pa.array(_Y2.astype(bool)), pa.array(_Y2), "binary", False),
    ("pred list<bool>", pa.array(np.eye(3, dtype=bool)[_Y3].tolist()), pa.array(_Y3), "index", False),
    ("pred string", pa.array([str(v) for v in _P1]), pa.array(_Y2), "binary", False),
    ("pred binary", pa.array([b"x"] * N), pa.array(_Y2), "binary", False),
    ("pred list<string>", pa.array([["a", "b", "c"]] * N), pa.array(_Y3), "index", False),
    ("pred dictionary<string>", pa.array(["a", "b"] * (N // 2)).dictionary_encode(), pa.array(_Y2), "binary", False),
]
LABEL_CASES = []
for _t in ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]:
    LABEL_CASES.append((f"label {_t}", pa.array(_P2.tolist()), pa.array(_Y3, _t), "index", True))
    LABEL_CASES.append((f"binary label {_t}", pa.array(_P1), pa.array(_Y2, _t), "binary", True))
    LABEL_CASES.append((f"label nullable {_t}", pa.array(_P2.tolist()), pa.array(_masked(_Y3, _NULL), _t), "index", True))
    LABEL_CASES.append((f"label dictionary<{_t}>", pa.array(_P2.tolist()), pa.array(_Y3, _t).dictionary_encode(),
                        "index", True))
for _t in ["float16", "float32", "float64"]:
    LABEL_CASES.append((f"binary soft label {_t}", pa.array(_P1), pa.array((_Y2 * 0.5 + 0.25).astype(_t)), "binary", True))
    LABEL_CASES.append((f"label list<{_t}>", pa.array(_P2.tolist()), pa.array(np.eye(3, dtype=_t)[_Y3].tolist(), pa.list_(pa.type_for_alias(_t))),
                        "dense", True))
    LABEL_CASES.append((f"label fixed_size_list<{_t}>", _fsl(_P2, 3, pa.float64()), _fsl(np.eye(3)[_Y3].astype(_t), 3, pa.type_for_alias(_t)),
                        "dense", True))
    LABEL_CASES.append((f"index label {_t}", pa.array(_P2.tolist()), pa.array(_Y3.astype(_t)), "index", False))
LABEL_CASES += [
    ("label bool", pa.array(_P2.tolist()), pa.array(_Y2.astype(bool)), "index", True),
    ("binary label bool", pa.array(_P1), pa.array(_Y2.astype(bool)), "binary", True),
    ("binary label nullable bool", pa.array(_P1), pa.array(_masked(_Y2.astype(bool), _NULL)), "binary", True),
    ("label large_list", pa.array(_P2.tolist()), pa.array(np.eye(3)[_Y3].tolist(), pa.large_list(pa.float64())), "dense", True),
    ("label list<bool>", pa.array(_P2.tolist()), pa.array(np.eye(3, dtype=bool)[_Y3].tolist()), "dense", True),
    ("label dictionary<list>", pa.array(_P2.tolist()), _dict_lists(np.eye(3).tolist(), _Y3), "dense", True),
    ("binary label decimal", pa.array(_P1), pa.array([decimal.Decimal(int(v)) for v in _Y2], pa.decimal128(3, 0)),
     "binary", True),
    ("index label decimal", pa.array(_P2.tolist()), pa.array([decimal.Decimal(int(v)) for v in _Y3], pa.decimal128(3, 0)),
     "index", False),
    ("label string", pa.array(_P2.tolist()), pa.array(["a", "b", "c"] * (N // 3)), "index", False),
    ("binary label string", pa.array(_P1), pa.array(["a", "b"] * (N // 2)), "binary", False),
    ("label dictionary<string>", pa.array(_P2.tolist()), pa.array(["a", "b", "c"] * (N // 3)).dictionary_encode(),
     "index", False),
    ("label binary", pa.array(_P2.tolist()), pa.array([b"a"] * N), "index", False),
    ("label list<string>", pa.array(_P2.tolist()), pa.array([["a", "b", "c"]] * N), "dense", False),
]
CASES = {c[0]: c[1:] for c in PRED_CASES + LABEL_CASES}


def _float_rows(arr) -> list:
    vals = arr.to_pylist()
    return [None if v is None else (np.array([math.nan if x is None else float(x) for x in v])
                                    if isinstance(v, list) else float(v)) for v in vals]


def _reference(pred, label, kind, loss, dtype):
    """Per-row losses from the values as Python objects; NaN for a null row or value."""
    P, T = _float_rows(pred), _float_rows(label)
    out = np.full(N, np.nan)
    for i, (p, t) in enumerate(zip(P, T, strict=True)):
        if p is None or t is None or np.isnan(np.sum(p)) or np.isnan(np.sum(t)):
            continue
        if kind == "binary":
            out[i] = ref.binary(np.array([p]), np.array([t]), loss=loss, dtype=dtype)[0]
        else:
            target = int(t) if kind == "index" else t
            fn = ref.cce if loss == "cce" else ref.bce
            out[i] = fn([p], [target], dtype=dtype)[0]
    return out


def _result_dtype(pred):
    t = pred.type
    while pa.types.is_dictionary(t) or hasattr(t, "value_type"):
        t = t.value_type
    return np.float64 if t == pa.float64() or not pa.types.is_floating(t) else np.float32


@pytest.mark.parametrize("name", list(CASES))
def test_sweep_api(name):
    pred, label, kind, ok = CASES[name]
    for loss in ("cce", "bce"):
        for p, t in ((pred, label), (pa.chunked_array([pred[:5], pred[5:]]), pa.chunked_array([label[:7], label[7:]]))):
            if not ok:
                with pytest.raises(InvalidInputError) as e:
                    xn.score(loss, p, t, on_invalid="nan")
                assert e.value.column in ("pred", "target"), str(e.value)
                continue
            got, status = xn.score(loss, p, t, on_invalid="nan")
            dtype = _result_dtype(pred)
            assert got.dtype == dtype
            want = _reference(pred, label, kind, loss, dtype)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            ref.assert_close(got[~np.isnan(want)], want[~np.isnan(want)], dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_sweep_cli(tmp_path, name):
    pred, label, kind, ok = CASES[name]
    src, out = tmp_path / "in.arrow", tmp_path / "out.parquet"
    feather.write_feather(pa.table({"yhat": pred, "truth": label}), src)
    inputs = [src]
    try:  # the same columns in Parquet, where Parquet can hold them
        pq.write_table(pa.table({"yhat": pred, "truth": label}), tmp_path / "in.parquet")
        inputs.append(tmp_path / "in.parquet")
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        pass
    for path in inputs:
        res = run("score", path, "-o", out, "--pred", "yhat", "--label", "truth", "--loss", "both",
                  "--on-invalid", "null", "--overwrite", "-q")
        assert res.exit_code in (0, 2), res.output
        assert "Traceback" not in res.output and "unexpected error" not in res.output, res.output
        if not ok:
            assert res.exit_code == 2 and ("'yhat'" in res.output or "'truth'" in res.output), res.output
            assert not out.exists()
            continue
        assert res.exit_code == 0, res.output
        got = pq.read_table(out)
        dtype = _result_dtype(pred)
        for loss in ("cce", "bce"):
            v = got[loss].to_numpy(zero_copy_only=False)
            want = _reference(pred, label, kind, loss, dtype)
            np.testing.assert_array_equal(np.isnan(v), np.isnan(want))
            ref.assert_close(v[~np.isnan(want)], want[~np.isnan(want)], dtype)
        out.unlink()
        res = run("advise", path, "--pred", "yhat", "--label", "truth", "--json")
        assert res.exit_code in (0, 2) and "Traceback" not in res.output, res.output


PANDAS_CASES = {
    "Int64 label": (pa.array(_P2.tolist()), pd.Series(_masked(_Y3, _NULL), dtype="Int64"), "index"),
    "UInt8 label": (pa.array(_P2.tolist()), pd.Series(_masked(_Y3, _NULL), dtype="UInt8"), "index"),
    "boolean label": (pa.array(_P1), pd.Series(_masked(_Y2.astype(bool), _NULL), dtype="boolean"), "binary"),
    "Float64 label": (pa.array(_P1), pd.Series(_masked(_Y2 * 0.5, _NULL), dtype="Float64"), "binary"),
    "Float32 label": (pa.array(_P1), pd.Series(_masked(_Y2 * 0.5, _NULL), dtype="Float32"), "binary"),
    "category label": (pa.array(_P2.tolist()), pd.Series(_Y3).astype("category"), "index"),
    "ArrowDtype label": (pa.array(_P2.tolist()), pd.Series(pa.array(_masked(_Y3, _NULL), pa.int32()),
                                                           dtype=pd.ArrowDtype(pa.int32())), "index"),
    "Float64 pred": (pd.Series(_masked(_P1, _NULL), dtype="Float64"), pa.array(_Y2), "binary"),
    "Float32 pred": (pd.Series(_masked(_P1, _NULL), dtype="Float32"), pa.array(_Y2), "binary"),
    "ArrowDtype pred": (pd.Series(pa.array(_masked(_P1, _NULL)), dtype=pd.ArrowDtype(pa.float64())), pa.array(_Y2),
                        "binary"),
    "ArrowDtype list pred": (pd.Series(pa.array(_P2.tolist()), dtype=pd.ArrowDtype(pa.list_(pa.float64()))),
                             pa.array(_Y3), "index"),
    "numpy float pred": (pd.Series(_P1), pd.Series(_Y2), "binary"),
}


@pytest.mark.parametrize("name", list(PANDAS_CASES))
def test_sweep_pandas_dtypes_score_as_their_arrow_arrays(name):
    pred, label, kind = PANDAS_CASES[name]
    as_arrow = [x if isinstance(x, pa.Array) else pa.array(x) for x in (pred, label)]
    for loss in ("cce", "bce"):
        got, st = xn.score(loss, pred, label, on_invalid="nan")
        want, wst = xn.score(loss, *as_arrow, on_invalid="nan")
        np.testing.assert_array_equal(st, wst)
        np.testing.assert_array_equal(got, want)
        dtype = got.dtype
        expect = _reference(as_arrow[0], as_arrow[1], kind, loss, dtype)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expect))
        ref.assert_close(got[~np.isnan(expect)], expect[~np.isnan(expect)], dtype)


@pytest.mark.parametrize("dtype", ["string", "datetime64[ns]", "timedelta64[ns]", "complex128", "object"])
def test_sweep_pandas_unreadable_dtypes_are_refused(dtype):
    values = {"string": ["a"] * N, "datetime64[ns]": pd.date_range("2020", periods=N),
              "timedelta64[ns]": pd.to_timedelta(np.arange(N), "s"), "complex128": np.ones(N) * 1j,
              "object": [object()] * N}[dtype]
    s = pd.Series(values) if dtype == "object" else pd.Series(values, dtype=dtype)
    for pred, label in ((s, pa.array(_Y2)), (pa.array(_P1), s)):
        with pytest.raises(InvalidInputError):
            xn.bce(pred, label)
