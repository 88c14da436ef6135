"""`xent advise`: label and prediction kinds, the recommendation, warnings, and the CLI's JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import xent_numba as xn
from xent_numba.analysis.advise import (
    KEYS,
    LABEL_KINDS,
    PRED_KINDS,
    advise_arrays,
    advise_file,
    check_fit,
    first_batch_warning,
)
from xent_numba.cli.commands import app
from xent_numba.engine.local import ScoreOptions, resolve_columns
from xent_numba.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[1]
SEED = json.loads((ROOT.parent / "shared" / "seed-example.json").read_text()) if (
    ROOT.parent / "shared" / "seed-example.json"
).exists() else {"pred": [0.1, 0.3, 0.2, 0.4], "label_one_hot": [0, 1, 0, 0], "label_index": 1}

rng = np.random.default_rng(7)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def one_hot(y, c):
    return np.eye(c)[y]


N, C = 200, 5
Y = rng.integers(0, C, N)
LOGITS = rng.normal(size=(N, C))
SOFT_P = softmax(LOGITS)
SIG_P = sigmoid(LOGITS)
MULTI = (rng.random((N, C)) < 0.4).astype(np.int64)
MULTI[0] = [1, 1, 0, 0, 0]  # at least one row with several positives


# ---- the seed example ------------------------------------------------------------------------


@pytest.mark.parametrize("label", [np.array([[0, 1, 0, 0]]), np.array([1])], ids=["one_hot", "index"])
def test_seed_example_recommends_cce(label):
    a = advise_arrays(np.array([SEED["pred"]]), label)
    assert a["label_kind"] == ("index" if label.ndim == 1 else "one_hot")
    assert a["pred_kind"] == "probabilities_normalized"
    assert a["recommended_loss"] == "cce"
    text = " ".join(a["explanation"])
    assert "4 independent yes/no questions" in text
    assert "one exclusive choice among 4 classes" in text
    assert "1.204" in text and "2.043" in text  # the row itself, scored both ways (nats)
    assert a["warnings"] == []
    assert a["evidence"]["n_classes"] == 4 and a["evidence"]["rows_used"] == 1


def test_seed_file_both_label_columns():
    for label, kind in (("label", "index"), ("label_one_hot", "one_hot")):
        a = advise_file(ROOT / "data" / "seed_example.parquet", label=label)
        assert (a["label_kind"], a["recommended_loss"]) == (kind, "cce")


# ---- every label kind and prediction kind ---------------------------------------------------


@pytest.mark.parametrize(
    "pred, label, label_kind, pred_kind, loss",
    [
        (SOFT_P, Y, "index", "probabilities_normalized", "cce"),
        (SOFT_P, one_hot(Y, C), "one_hot", "probabilities_normalized", "cce"),
        (SOFT_P, softmax(rng.normal(size=(N, C))), "soft", "probabilities_normalized", "cce"),
        (SIG_P, MULTI, "multi_hot", "probabilities_independent", "bce"),
        (SIG_P, rng.random((N, C)), "soft_independent", "probabilities_independent", "bce"),
        (LOGITS, Y, "index", "logits", "cce"),
        (LOGITS, MULTI, "multi_hot", "logits", "bce"),
        (SIG_P, Y, "index", "probabilities_independent", "bce"),
    ],
    ids=["index", "one_hot", "soft", "multi_hot", "soft_independent", "logits_index",
         "logits_multi", "index_sigmoid"],
)
def test_kinds(pred, label, label_kind, pred_kind, loss):
    a = advise_arrays(pred, label)
    assert (a["label_kind"], a["pred_kind"], a["recommended_loss"]) == (label_kind, pred_kind, loss)
    assert a["label_kind"] in LABEL_KINDS and a["pred_kind"] in PRED_KINDS
    assert a["explanation"] and all(isinstance(s, str) for s in a["explanation"])
    json.dumps(a)  # JSON-ready: no NumPy scalars


def test_exclusive_labels_with_independent_predictions_warn():
    a = advise_arrays(SIG_P, Y)
    assert any("do not sum to 1" in w and "CCE" in w for w in a["warnings"])
    assert a["evidence"]["pred_fractions"]["sums_to_one"] < 0.1


def test_multi_label_with_softmax_warns():
    a = advise_arrays(SOFT_P, MULTI)
    assert a["recommended_loss"] == "bce"
    assert any("softmax" in w for w in a["warnings"])
    assert a["evidence"]["label_fractions"]["several_positives"] > 0


def test_logits_explanation_mentions_from_logits():
    a = advise_arrays(LOGITS, Y)
    assert "--from-logits" in " ".join(a["explanation"])
    assert a["evidence"]["pred_fractions"]["outside_0_1"] > 0.5


# ---- mixed and edge cases -----------------------------------------------------------------


def test_all_zero_rows_are_multi_hot_with_a_warning():
    label = one_hot(Y, C)
    label[:10] = 0
    a = advise_arrays(SOFT_P, label)
    assert a["label_kind"] == "multi_hot" and a["recommended_loss"] == "bce"
    assert any("no positive class" in w for w in a["warnings"])
    assert a["evidence"]["label_fractions"]["no_positive"] == pytest.approx(10 / N)


def test_mixed_one_hot_and_soft_rows_are_soft():
    label = one_hot(Y, C)
    label[:5] = [0.1, 0.6, 0.1, 0.1, 0.1]
    a = advise_arrays(SOFT_P, label)
    assert a["label_kind"] == "soft" and a["recommended_loss"] == "cce"
    fr = a["evidence"]["label_fractions"]
    assert fr["soft"] == pytest.approx(5 / N) and fr["one_positive"] == pytest.approx(1 - 5 / N)


def test_mostly_normalized_predictions_are_independent_with_a_hint():
    pred = SOFT_P.copy()
    pred[:20] = np.minimum(pred[:20] * 1.5, 1)  # e.g. rows truncated or re-scaled
    a = advise_arrays(pred, Y)
    assert a["pred_kind"] == "probabilities_independent"
    assert a["evidence"]["pred_fractions"]["sums_to_one"] == pytest.approx(0.9)
    assert any("truncated" in w for w in a["warnings"])


@pytest.mark.parametrize("value, kind", [(0.25, "probabilities_normalized"), (0.5, "probabilities_independent")])
def test_ties(value, kind):
    pred = np.full((3, 4), value)
    a = advise_arrays(pred, np.array([0, 1, 3]))
    assert a["pred_kind"] == kind
    assert a["evidence"]["classes_seen"] == 3


def test_two_classes_bce_is_twice_cce():
    p1 = rng.random(50)
    pred = np.column_stack([1 - p1, p1])
    y = (rng.random(50) < p1).astype(np.int64)
    a = advise_arrays(pred, y)
    assert (a["label_kind"], a["pred_kind"], a["recommended_loss"]) == ("index", "probabilities_normalized", "cce")
    assert "2 x CCE" in " ".join(a["explanation"])
    np.testing.assert_allclose(xn.bce(pred, y), 2 * xn.cce(pred, y), rtol=1e-12)


def test_one_prediction_column_binary_problem():
    p = rng.random((20, 1))
    y = (rng.random((20, 1)) < 0.5).astype(np.int64)
    y[0, 0], y[1, 0] = 0, 1
    a = advise_arrays(p, y)
    assert a["label_kind"] == "multi_hot" and a["recommended_loss"] == "bce"
    assert "single yes/no question" in " ".join(a["explanation"])
    # 0/1 index labels against one column: the label 1 is out of range, the advice says why
    a = advise_arrays(p, y[:, 0])
    assert any("binary problem" in w for w in a["warnings"])


def test_arrow_ragged_rows_and_nulls():
    pred = pa.array([[0.2, 0.8], None, [0.1, 0.2, 0.7], [0.5, 0.5]], type=pa.list_(pa.float32()))
    label = pa.array([1, 0, 2, None], type=pa.int64())
    a = advise_arrays(pred, label)
    assert a["evidence"]["rows_sampled"] == 4 and a["evidence"]["rows_used"] == 2
    assert a["evidence"]["n_classes"] == 3
    assert any("nulls" in w for w in a["warnings"])
    assert a["recommended_loss"] == "cce"


def test_chunked_and_sliced_arrow_input():
    pred = pa.array(SOFT_P.tolist(), type=pa.list_(pa.float64()))
    label = pa.array(one_hot(Y, C).tolist(), type=pa.list_(pa.int8()))
    cp = pa.chunked_array([pred.slice(0, 50), pred.slice(50)])
    cl = pa.chunked_array([label.slice(0, 120), label.slice(120)])
    a = advise_arrays(cp.slice(10), cl.slice(10))
    assert a["label_kind"] == "one_hot" and a["evidence"]["rows_used"] == N - 10


def test_bad_rows_are_left_out_and_reported():
    label = one_hot(Y, C)[:, :4]  # label rows shorter than the prediction rows
    a = advise_arrays(SOFT_P, pa.array(label.tolist()))
    assert a["recommended_loss"] is None and any("different lengths" in w for w in a["warnings"])
    y = Y.copy()
    y[:3] = [-100, 9, -100]
    a = advise_arrays(SOFT_P, y, ignore_index=-100)
    assert any("outside their prediction row" in w for w in a["warnings"])
    assert a["evidence"]["rows_used"] == N - 3 and a["recommended_loss"] == "cce"
    pred = SOFT_P.copy()
    pred[0, 0] = np.nan
    assert any("NaN" in w for w in advise_arrays(pred, Y)["warnings"])
    a = advise_arrays(SOFT_P, one_hot(Y, C) * 2)
    assert a["label_kind"] == "invalid" and a["recommended_loss"] is None


def test_row_count_mismatch_raises():
    with pytest.raises(InvalidInputError, match="rows"):
        advise_arrays(SOFT_P, Y[:-1])


# ---- check_fit and the score hook -----------------------------------------------------------


def test_check_fit():
    exclusive = advise_arrays(SOFT_P, Y)
    assert check_fit(exclusive, "cce") is None
    assert check_fit(exclusive, "both") is None
    line = check_fit(exclusive, "bce")
    assert "independent yes/no" in line and "recommends cce" in line and "\n" not in line
    multi = advise_arrays(SIG_P, MULTI)
    assert check_fit(multi, "bce") is None
    assert "recommends bce" in check_fit(multi, "cce")
    assert "recommends bce" in check_fit(multi, "both")
    sig = advise_arrays(SIG_P, Y)
    assert "do not sum to 1" in check_fit(sig, "cce")
    logits = advise_arrays(LOGITS, Y)
    assert "--from-logits" in check_fit(logits, "cce", from_logits=False)
    assert check_fit(logits, "cce", from_logits=True) is None
    assert "--from-logits was given" in check_fit(exclusive, "cce", from_logits=True)


def test_first_batch_warning():
    batch = pa.record_batch({
        "pred": pa.array(SOFT_P.tolist(), type=pa.list_(pa.float32())),
        "label": pa.array(Y),
    })
    opts = ScoreOptions(loss="bce")
    cols = resolve_columns(batch.schema, opts)
    assert "recommends cce" in first_batch_warning(batch, cols, opts)
    assert first_batch_warning(batch, cols, ScoreOptions(loss="cce")) is None
    broken = pa.record_batch({"pred": pa.array(["x"] * 3), "label": pa.array([0, 1, 2])})
    assert first_batch_warning(broken, resolve_columns(broken.schema, opts), opts) is None


# ---- files ------------------------------------------------------------------------------------


@pytest.fixture
def dump(tmp_path):
    d = tmp_path / "dump"
    d.mkdir()
    for k in range(2):
        sl = slice(k * 100, (k + 1) * 100)
        pq.write_table(pa.table({
            "id": np.arange(100),
            "pred": pa.array(SIG_P[sl].tolist(), type=pa.list_(pa.float32())),
            "labels": pa.array(MULTI[sl].tolist(), type=pa.list_(pa.int8())),
            **{f"prob_{c}": SIG_P[sl, c] for c in range(C)},
        }), d / f"part.{k}.parquet", row_group_size=30)
    return d


def test_advise_file_dir_glob_and_sample_rows(dump):
    a = advise_file(dump, label="labels")
    assert a["evidence"]["rows_sampled"] == 200 and a["recommended_loss"] == "bce"
    a = advise_file(str(dump / "*.parquet"), label="labels", sample_rows=45)
    assert a["evidence"]["rows_sampled"] == 45
    a = advise_file([dump / "part.1.parquet"], pred="prob_*", label="labels", sample_rows=10)
    assert a["evidence"]["n_classes"] == C and a["label_kind"] == "multi_hot"
    with pytest.raises(InvalidInputError, match="not found"):
        advise_file(dump, label="nope")
    with pytest.raises(InvalidInputError, match="no file matches"):
        advise_file(str(dump / "*.csv"))


# ---- the CLI ----------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_json_is_exactly_one_object():
    res = runner.invoke(app, ["advise", str(ROOT / "data" / "sample.parquet"), "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)  # the whole of stdout is one JSON document
    assert isinstance(obj, dict) and tuple(obj) == KEYS
    assert obj["label_kind"] in LABEL_KINDS and obj["pred_kind"] in PRED_KINDS
    assert obj["recommended_loss"] in ("cce", "bce")
    assert isinstance(obj["explanation"], list) and isinstance(obj["warnings"], list)
    ev = obj["evidence"]
    for key in ("rows_sampled", "n_classes", "classes_seen", "label_fractions", "pred_fractions"):
        assert key in ev
    assert ev["rows_sampled"] == 4000 and ev["n_classes"] == 10 and ev["classes_seen"] == 10


def test_cli_panel_and_errors(dump):
    res = runner.invoke(app, ["advise", str(ROOT / "data" / "seed_example.parquet"), "--label", "label_one_hot"])
    assert res.exit_code == 0 and "Recommended loss: CCE" in res.stdout
    res = runner.invoke(app, ["advise", str(dump), "--label", "labels", "--sample-rows", "20"])
    assert res.exit_code == 0 and "BCE" in res.stdout
    res = runner.invoke(app, ["advise", str(dump), "--label", "nope"])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["advise", "no/such.parquet"])
    assert res.exit_code == 2 and "no such file" in res.output


@pytest.mark.parametrize("cmd", ["advise", "report"])
def test_help_has_an_example(cmd):
    res = runner.invoke(app, [cmd, "--help"])
    assert res.exit_code == 0 and "Example:" in res.stdout


def test_row_blocks_do_not_change_the_advice(monkeypatch):
    import xent_numba.analysis.advise as adv

    label = one_hot(Y, C)
    label[:7] = 0
    pred = pa.array([row[: 2 + i % 4].tolist() for i, row in enumerate(SIG_P)])  # ragged rows
    lab = pa.array([row[: 2 + i % 4].tolist() for i, row in enumerate(label)])
    for p, t in ((SOFT_P, label), (pred, lab), (SIG_P, Y % 2)):
        whole = advise_arrays(p, t)
        monkeypatch.setattr(adv, "CHUNK_VALUES", 7)  # blocks of one or two rows
        assert advise_arrays(p, t) == whole
        monkeypatch.undo()


# ---- one prediction per row (issue 12) and robust logits (issue 17) -------------------------------


@pytest.mark.parametrize("label", [np.array([0, 1, 1, 0, 1]), np.array([False, True, True, False, True]),
                                   pa.array([0, 1, 1, 0, 1], pa.int8())], ids=["int", "bool", "arrow_int8"])
def test_scalar_probabilities_are_binary(label):
    p = np.array([0.1, 0.8, 0.7, 0.3, 0.95])
    a = advise_arrays(p, label)
    assert a["label_kind"] == "binary" and a["pred_kind"] == "probability" and a["recommended_loss"] == "bce"
    text = " ".join(a["explanation"])
    assert "[1 - p, p]" in text and "same number" in text
    assert f"{xn.bce(p[:1], np.array([0]))[0]:.4g}" in text  # the example row, scored
    assert a["warnings"] == []
    assert check_fit(a, "cce", from_logits=False) is None and check_fit(a, "bce", from_logits=False) is None
    assert "--from-logits" in check_fit(a, "bce", from_logits=True)


def test_scalar_logits_and_soft_labels():
    x = rng.normal(0, 3, 200)
    a = advise_arrays(pa.array(x.astype(np.float32)), pa.array(rng.random(200)))
    assert a["label_kind"] == "binary" and a["pred_kind"] == "logit" and a["recommended_loss"] == "bce"
    assert "--from-logits" in " ".join(a["explanation"])
    assert "logits" in check_fit(a, "bce", from_logits=False)
    assert check_fit(a, "bce", from_logits=True) is None
    bad = advise_arrays(np.array([0.2, 0.4, 0.6]), np.array([0, 1, 2]))
    assert bad["label_kind"] == "invalid" and bad["recommended_loss"] is None
    assert any("label other than 0/1" in w for w in bad["warnings"])


@pytest.mark.parametrize("scalar", [True, False], ids=["scalar", "list"])
def test_one_bad_probability_in_150_rows_is_not_logits(scalar):
    n = 150
    if scalar:
        p, y = rng.random(n), rng.integers(0, 2, n)
        p[77] = 1.3
    else:
        p = rng.random((n, 3)) + 0.05
        p /= p.sum(axis=1, keepdims=True)
        y = rng.integers(0, 3, n)
        p[77, 0] = 1.3
    a = advise_arrays(p, y)
    assert a["pred_kind"] in ("probability", "probabilities_normalized", "probabilities_independent")
    assert any("1 rows hold probabilities outside [0, 1] (first: row 77)" in w for w in a["warnings"])
    assert "logits" not in (check_fit(a, "cce", from_logits=False) or "")


def test_seed_sentence_is_not_repeated_for_every_dataset():
    a = advise_arrays(SOFT_P, Y)
    assert a["recommended_loss"] == "cce"
    assert not any("0.523" in s or "seed example" in s for s in a["explanation"])


def test_cli_binary_sample_and_score_warning(tmp_path):
    data = ROOT / "data" / "binary_sample.parquet"
    res = runner.invoke(app, ["advise", str(data), "--pred", "logit", "--label", "clicked", "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert (obj["label_kind"], obj["pred_kind"], obj["recommended_loss"]) == ("binary", "logit", "bce")
    res = runner.invoke(app, ["score", str(data), "-o", str(tmp_path / "o.csv"), "--pred", "logit",
                              "--label", "clicked", "--loss", "bce"])
    assert res.exit_code == 2 and "'logit'" in res.output  # logits outside [0, 1]: invalid probabilities
