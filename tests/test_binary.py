"""Scalar binary rows (one probability or logit per row, issue 12): every layout against
``reference.binary``, the CLI round trip, CCE over [1-p, p] == BCE, and bad inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import xent_numba as xn
from tests import reference as ref
from xent_numba import losses
from xent_numba.cli.commands import app

rng = np.random.default_rng(12)
N = 301


def make(n=N, *, logits=False, label="int", seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(0, 4, n) if logits else r.random(n)
    if not logits:  # confident rows too: losses down to ~1e-18
        x[:4] = [1e-18, 1 - 1e-12, 0.0, 1.0]
    y = (r.random(n) < 0.4).astype(np.int64)
    if not logits:
        y[:4] = [0, 1, 0, 1]
    else:
        x[:4] = [-40.0, 40.0, 0.0, -3.0]
        y[:4] = [0, 1, 1, 0]
    if label == "soft":
        return x, r.random(n)
    return x, y


def as_label(y, kind):
    if kind == "int":
        return np.asarray(y, dtype=np.int64)
    if kind == "int8":
        return np.asarray(y, dtype=np.int8)
    if kind == "bool":
        return np.asarray(y, dtype=bool)
    if kind == "float_hard":
        return np.asarray(y, dtype=np.float32)
    return np.asarray(y, dtype=np.float64)  # soft


def container(a, how):
    if how == "numpy":
        return a
    if how == "arrow":
        return pa.array(a)
    if how == "arrow_sliced":
        pad = np.zeros(3, dtype=a.dtype)
        return pa.array(np.concatenate([pad, a, pad])).slice(3, len(a))
    if how == "chunked":
        k = len(a) // 3
        return pa.chunked_array([pa.array(a[:k]), pa.array(a[k:])])
    if how == "chunked_other_cuts":
        k = len(a) // 2
        return pa.chunked_array([pa.array(a[:k]), pa.array(a[k : k + 5]), pa.array(a[k + 5 :])])
    raise ValueError(how)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label", ["int", "int8", "bool", "float_hard", "soft"])
@pytest.mark.parametrize("how", [("numpy", "numpy"), ("arrow", "arrow"), ("arrow_sliced", "chunked"),
                                 ("chunked", "chunked_other_cuts")], ids=lambda h: "-".join(h))
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("loss", ["bce", "cce"])
def test_every_layout_matches_reference(dtype, label, how, from_logits, loss):
    x, y = make(logits=from_logits, label="soft" if label == "soft" else "int")
    x = x.astype(dtype)
    y = as_label(y, label)
    got = (xn.bce if loss == "bce" else xn.cce)(container(x, how[0]), container(y, how[1]), from_logits=from_logits)
    want = ref.binary(x, y, loss=loss, from_logits=from_logits, dtype=dtype)
    assert got.dtype == dtype and got.shape == (N,)
    ref.assert_close(got, want, dtype)


def test_confident_rows_to_the_last_digit():
    p = np.array([1e-18, 1e-300, 1 - 1e-12, 0.3, 1e-9])
    y = np.array([0, 0, 1, 0, 0])
    got = xn.bce(p, y, eps="none")
    want = -np.log1p(-p)
    want[2] = -np.log(p[2])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == pytest.approx(1e-18, rel=1e-12)
    x = np.array([-50.0, 50.0, 700.0, -700.0, 0.0])
    t = np.array([0, 1, 1, 0, 1])
    got = xn.bce(x, t, from_logits=True)
    np.testing.assert_allclose(got, ref.binary(x, t, from_logits=True), rtol=1e-12)
    assert got[0] == pytest.approx(math.exp(-50), rel=1e-12)
    got32 = xn.bce(x.astype(np.float32), t, from_logits=True)
    ref.assert_close(got32, ref.binary(x, t, from_logits=True), np.float32)


def test_minus_inf_logit_is_p_zero_and_plus_inf_nan_invalid():
    got, st = xn.score("bce", np.array([-np.inf, -np.inf]), np.array([0, 1]), from_logits=True, on_invalid="nan")
    assert got[0] == 0.0 and got[1] == np.inf and list(st) == [losses.OK, losses.OK]
    got, st = xn.score("bce", np.array([np.inf, np.nan, 1.0]), np.array([1, 0, 0]), from_logits=True, on_invalid="nan")
    assert list(st) == [losses.PRED_NONFINITE, losses.PRED_NONFINITE, losses.OK]
    assert np.isnan(got[:2]).all()


@pytest.mark.parametrize("from_logits", [False, True])
def test_cce_over_two_classes_is_bce(from_logits):
    x, y = make(logits=from_logits)
    np.testing.assert_array_equal(xn.cce(x, y, from_logits=from_logits), xn.bce(x, y, from_logits=from_logits))
    # and the list reading [1-p, p] (or logits [0, x]) agrees with the reference CCE
    mid = slice(4, None)  # (1 - p in float64 loses the confident rows' digits; the 1-D path does not)
    rows = [np.array([0.0, v]) if from_logits else np.array([1 - v, v]) for v in x[mid]]
    np.testing.assert_allclose(xn.cce(x[mid], y[mid], from_logits=from_logits), ref.cce(rows, list(y[mid]), from_logits=from_logits),
                               rtol=1e-9)


def test_two_d_n_by_one_keeps_working():
    p, y = make()
    got = xn.bce(p.reshape(-1, 1)[4:], y.reshape(-1, 1)[4:].astype(float))
    ref.assert_close(got, ref.binary(p[4:], y[4:]), np.float64)


OPTION_CASES = [
    dict(pos_weight=3.0),
    dict(pos_weight=1.0),
    dict(label_smoothing=0.1),
    dict(eps="keras"),
    dict(eps="torch"),
    dict(eps="none"),
    dict(eps=1e-3),
    dict(log_base=10),
    dict(log_base=2, label_smoothing=0.2, pos_weight=0.5),
]


@pytest.mark.parametrize("kw", OPTION_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("label", ["int", "soft"])
def test_options(kw, from_logits, label):
    x, y = make(logits=from_logits, label=label)
    if kw.get("eps") in ("none", "torch") and not from_logits:
        x[:4] = [0.3, 0.7, 0.0, 1.0]  # p = 0 against label 0 is fine; keep the counted terms finite
    ref.assert_close(xn.bce(x, y, from_logits=from_logits, **kw), ref.binary(x, y, from_logits=from_logits, **kw), np.float64)


def test_options_that_do_not_change_the_maths_change_nothing():
    x, y = make()
    base = xn.bce(x, y)
    np.testing.assert_array_equal(xn.bce(x, y, pos_weight=1.0), base)
    np.testing.assert_array_equal(xn.bce(x, y, label_smoothing=0.0), base)
    np.testing.assert_array_equal(xn.cce(x, y, class_weight=[1.0, 1.0]), base)


def test_cce_class_weight_and_ignore_index():
    x, y = make()
    y = y.copy()
    y[10] = -100
    got = xn.cce(x, y, class_weight=[0.5, 2.0], ignore_index=-100)
    want = ref.binary(x, y, loss="cce", class_weight=[0.5, 2.0], ignore_index=-100)
    assert np.isnan(got[10])
    ref.assert_close(got, want, np.float64)
    _, st = xn.score("cce", x, y, ignore_index=-100)
    assert st[10] == losses.IGNORED and (np.delete(st, 10) == losses.OK).all()


def test_nulls_are_named_or_nulled():
    p = pa.array([0.2, None, 0.7, 0.4], type=pa.float32())
    y = pa.array([0, 1, None, 1])
    with pytest.raises(xn.InvalidInputError, match="row 1, column 'pred'"):
        xn.bce(p, y)
    got, st = xn.score("bce", p, y, on_invalid="nan")
    assert list(st) == [0, losses.NULL_ROW, losses.NULL_ROW, 0]
    ref.assert_close(got[[0, 3]], ref.binary([0.2, 0.4], [0, 1], dtype=np.float32), np.float32)


@pytest.mark.parametrize("p, y, words", [
    ([0.2, 1.5], [0, 1], "row 1, column 'pred': probability outside [0, 1] (value 1.5)"),
    ([0.2, -0.1], [0, 1], "probability outside [0, 1]"),
    ([0.2, np.nan], [0, 1], "row 1, column 'pred': prediction is NaN or infinite"),
    ([0.2, np.inf], [0, 1], "NaN or infinite"),
    ([0.2, 0.3], [0, 2], "row 1, column 'target': class index out of range (label 2; binary labels are 0 or 1"),
    ([0.2, 0.3], [-1, 0], "row 0, column 'target'"),
    ([0.2, 0.3], [0.5, 1.5], "row 1, column 'target': target value invalid (value 1.5; soft labels must be in [0, 1])"),
    ([0.2, 0.3], [0.5, np.nan], "target value invalid"),
])
def test_bad_values_are_named(p, y, words):
    with pytest.raises(xn.InvalidInputError) as e:
        xn.bce(np.array(p), np.array(y))
    assert words in str(e.value)
    _, st = xn.score("bce", np.array(p), np.array(y), on_invalid="nan")
    assert (st > losses.IGNORED).sum() == 1


def test_bad_shapes_and_types():
    with pytest.raises(xn.InvalidInputError, match="rows"):
        xn.bce(np.array([0.1, 0.2]), np.array([0, 1, 1]))
    with pytest.raises(xn.InvalidInputError, match="label must be one number per row"):
        xn.bce(pa.array([0.1, 0.2]), pa.array([[0], [1]]))
    with pytest.raises(xn.InvalidInputError, match="pos_weight must be one number"):
        xn.bce(np.array([0.1, 0.2]), np.array([0, 1]), pos_weight=[1.0, 2.0])
    with pytest.raises(xn.InvalidInputError, match="class_weight"):
        xn.cce(np.array([0.1, 0.2]), np.array([0, 1]), class_weight=[1.0])
    with pytest.raises(xn.InvalidInputError, match="must be numeric"):
        xn.bce(np.array([0.1, 0.2]), np.array(["a", "b"], dtype=object))


def test_uint64_and_big_endian_labels():
    y = np.array([0, 1, 2**64 - 1], dtype=np.uint64)
    with pytest.raises(xn.InvalidInputError, match="does not fit"):
        xn.bce(np.array([0.1, 0.2, 0.3]), y)
    with pytest.raises(xn.InvalidInputError, match="does not fit"):  # list predictions: no wrap to -1
        xn.cce(np.full((3, 2), 0.5), y, ignore_index=-1)
    p = np.array([0.1, 0.8], dtype=">f8")
    t = np.array([0, 1], dtype=">i4")
    np.testing.assert_allclose(xn.bce(p, t), ref.binary([0.1, 0.8], [0, 1]), rtol=1e-12)
    np.testing.assert_allclose(xn.cce(np.array([[0.9, 0.1]], dtype=">f4"), np.array([0], dtype=">i8")),
                               [-math.log(np.float32(0.9))], rtol=1e-6)


def test_decimal_and_integer_prediction_columns():
    import decimal

    p = pa.array([decimal.Decimal("0.25"), decimal.Decimal("0.5")], type=pa.decimal128(5, 3))
    np.testing.assert_allclose(xn.bce(p, pa.array([1, 0])), ref.binary([0.25, 0.5], [1, 0]), rtol=1e-12)
    np.testing.assert_allclose(xn.bce(pa.array([0, 1], pa.int8()), pa.array([False, True]), eps="keras"),
                               ref.binary([0, 1], [0, 1], eps="keras"), rtol=1e-9)
    np.testing.assert_allclose(xn.bce(pa.array([0.25, 0.5], pa.float16()), pa.array([1.0, 0.0], pa.float16())),
                               ref.binary([0.25, 0.5], [1, 0], dtype=np.float32), rtol=1e-5)


def test_zero_rows():
    got = xn.bce(np.empty(0, np.float32), np.empty(0, np.int64))
    assert got.shape == (0,) and got.dtype == np.float32


# ---- the CLI -----------------------------------------------------------------------------------

runner = CliRunner()


def dump(path, n=500, *, fmt="parquet", nulls=False, row_group=128):
    r = np.random.default_rng(3)
    score = r.random(n).astype(np.float32)
    clicked = r.random(n) < 0.3
    t = pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "score": pa.array(score, mask=(np.arange(n) % 97 == 5) if nulls else None),
        "logit": pa.array(np.log(score / (1 - score)).astype(np.float32)),
        "clicked": pa.array(clicked),
        "soft": pa.array(r.random(n)),
    })
    if fmt == "parquet":
        pq.write_table(t, path, row_group_size=row_group)
    else:
        feather.write_feather(t, path, chunksize=row_group)
    return t


def read_any(path):
    if path.suffix == ".parquet":
        return pq.read_table(path)
    if path.suffix == ".csv":
        import pyarrow.csv as pacsv

        return pacsv.read_csv(path)
    if path.suffix == ".jsonl":
        return pa.Table.from_pylist([json.loads(line) for line in path.read_text().splitlines()])
    return feather.read_table(path)


@pytest.mark.parametrize("ext", [".parquet", ".csv", ".jsonl", ".feather"])
@pytest.mark.parametrize("src_fmt", ["parquet", "feather"])
def test_cli_round_trip_every_format(tmp_path, ext, src_fmt):
    src = tmp_path / f"ctr.{src_fmt}"
    t = dump(src, fmt=src_fmt)
    out = tmp_path / f"o{ext}"
    res = runner.invoke(app, ["score", str(src), "-o", str(out), "--loss", "both", "--pred", "score",
                              "--label", "clicked", "--keep", "id", "-q"])
    assert res.exit_code == 0, res.output
    got = read_any(out)
    assert got.column_names == ["id", "cce", "bce"] and got.num_rows == 500
    np.testing.assert_array_equal(np.asarray(got["id"]), np.arange(500))
    want = ref.binary(t["score"].to_numpy(), t["clicked"].to_numpy(), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(got["bce"], dtype=float), want, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(got["cce"]), np.asarray(got["bce"]))


def test_cli_logits_options_and_soft_labels(tmp_path):
    src = tmp_path / "ctr.parquet"
    t = dump(src)
    out = tmp_path / "o.parquet"
    res = runner.invoke(app, ["score", str(src), "-o", str(out), "--loss", "bce", "--pred", "logit", "--from-logits",
                              "--label", "soft", "--pos-weight", "2", "--label-smoothing", "0.1", "--log-base", "10", "-q"])
    assert res.exit_code == 0, res.output
    want = ref.binary(t["logit"].to_numpy(), t["soft"].to_numpy(), from_logits=True, pos_weight=2.0,
                      label_smoothing=0.1, log_base=10, dtype=np.float32)
    ref.assert_close(pq.read_table(out)["bce"].to_numpy(), want, np.float32)
    res = runner.invoke(app, ["score", str(src), "-o", str(tmp_path / "e.parquet"), "--loss", "bce", "--pred", "score",
                              "--label", "clicked", "--eps", "torch", "-q"])
    assert res.exit_code == 0, res.output


def test_cli_nulls_error_then_null(tmp_path):
    src = tmp_path / "ctr.parquet"
    dump(src, nulls=True)
    out = tmp_path / "o.parquet"
    res = runner.invoke(app, ["score", str(src), "-o", str(out), "--loss", "bce", "--pred", "score", "--label", "clicked"])
    assert res.exit_code == 2 and "ctr.parquet" in res.output and "row 5" in res.output and "'score'" in res.output
    assert not out.exists()
    res = runner.invoke(app, ["score", str(src), "-o", str(out), "--loss", "bce", "--pred", "score", "--label", "clicked",
                              "--on-invalid", "null", "-q"])
    assert res.exit_code == 0, res.output
    got = pq.read_table(out)["bce"]
    assert len(got) == 500
    assert got.null_count == len(range(5, 500, 97))


def test_cli_bad_value_names_file_column_and_global_row(tmp_path):
    src = tmp_path / "ctr.parquet"
    t = dump(src)
    score = t["score"].to_numpy().copy()
    score[301] = 1.25
    pq.write_table(t.set_column(1, "score", pa.array(score)), src, row_group_size=128)
    res = runner.invoke(app, ["score", str(src), "-o", str(tmp_path / "o.csv"), "--loss", "cce", "--pred", "score",
                              "--label", "clicked"])
    assert res.exit_code == 2
    assert "ctr.parquet" in res.output and "row 301" in res.output and "'score'" in res.output and "1.25" in res.output


def test_cli_log_base_error_names_the_option(tmp_path):
    src = tmp_path / "ctr.parquet"
    dump(src)
    for bad in ("1", "-2", "inf"):
        res = runner.invoke(app, ["score", str(src), "-o", str(tmp_path / "o.csv"), "--pred", "score",
                                  "--label", "clicked", "--log-base", bad])
        assert res.exit_code == 2 and "--log-base" in res.output and "log_base" not in res.output


def test_binary_sample_in_data():
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "data" / "binary_sample.parquet"
    t = pq.read_table(src)
    assert t.column_names == ["id", "score", "logit", "clicked"] and t.num_rows == 5000
    np.testing.assert_allclose(xn.bce(t["score"], t["clicked"]), xn.bce(t["logit"], t["clicked"], from_logits=True),
                               rtol=1e-4)
