"""Inputs users try first (issue 17): pandas Series (lists, ArrowDtype), polars Series, torch
tensors (requires_grad, bfloat16), ``score("both")``, and a clear error for anything else;
hostile Arrow inputs (issue 11): corrupt list offsets, wide uint64 labels, big-endian arrays."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest
from typer.testing import CliRunner

import xent_numba as xn
from tests import reference as ref
from xent_numba.cli.commands import app

rng = np.random.default_rng(17)
P = rng.random((40, 4)) + 0.05
P /= P.sum(axis=1, keepdims=True)
Y = rng.integers(0, 4, size=40)
ROWS = list(P)


def want_cce(dtype=np.float64):
    return ref.cce(ROWS, list(Y), dtype=dtype)


def test_pandas_series_of_lists_and_arrow_dtype():
    pd = pytest.importorskip("pandas")
    table = pa.table({"pred": pa.array([r.tolist() for r in P]), "label": pa.array(Y)})
    df = table.to_pandas()  # a Series of NumPy arrays (dtype object)
    ref.assert_close(xn.cce(df["pred"], df["label"]), want_cce(), np.float64)
    arrow_df = table.to_pandas(types_mapper=pd.ArrowDtype)
    ref.assert_close(xn.cce(arrow_df["pred"], arrow_df["label"]), want_cce(), np.float64)
    p1 = pd.Series(P[:, 0])
    ref.assert_close(xn.bce(p1, pd.Series(Y % 2)), ref.binary(P[:, 0], Y % 2), np.float64)


def test_polars_series():
    pl = pytest.importorskip("polars")
    pred = pl.Series("pred", [r.tolist() for r in P])
    ref.assert_close(xn.cce(pred, pl.Series("y", Y)), want_cce(), np.float64)
    arr = pl.Series("pred", P).cast(pl.Array(pl.Float64, 4))
    ref.assert_close(xn.cce(arr, pl.Series("y", Y)), want_cce(), np.float64)
    ref.assert_close(xn.bce(pl.Series(P[:, 1]), pl.Series((Y % 2).astype(bool))),
                     ref.binary(P[:, 1], Y % 2), np.float64)


def test_torch_tensors_requiring_grad_and_bfloat16():
    torch = pytest.importorskip("torch")
    p = torch.tensor(P, requires_grad=True)
    ref.assert_close(xn.cce(p, torch.tensor(Y)), want_cce(), np.float64)
    x = torch.tensor(rng.normal(size=50), dtype=torch.float32, requires_grad=True)
    t = torch.tensor(rng.random(50) < 0.5)
    got = xn.bce(x, t, from_logits=True)
    ref.assert_close(got, ref.binary(x.detach().numpy(), t.numpy(), from_logits=True, dtype=np.float32), np.float32)
    pb = torch.tensor(P, dtype=torch.bfloat16)
    got = xn.cce(pb, torch.tensor(Y), eps="none")  # widened exactly to float32
    rows = list(pb.float().numpy().astype(np.float64))
    assert got.dtype == np.float32
    ref.assert_close(got, ref.cce(rows, list(Y), dtype=np.float32, eps="none"), np.float32)


def test_score_both_returns_both():
    losses_, status = xn.score("both", P, Y)
    assert set(losses_) == set(status) == {"cce", "bce"}
    ref.assert_close(losses_["cce"], want_cce(), np.float64)
    ref.assert_close(losses_["bce"], ref.bce(ROWS, list(Y)), np.float64)
    assert (status["cce"] == 0).all() and (status["bce"] == 0).all()


@pytest.mark.parametrize("bad", [{"a": 1}, "text", object(), {1, 2}])
def test_other_types_are_refused_with_the_accepted_list(bad):
    with pytest.raises(xn.InvalidInputError, match="accepted"):
        xn.cce(bad, Y)


# ---- hostile Arrow input -----------------------------------------------------------------------

GOOD = np.array([0, 5, 9, 13], dtype=np.int32)


def corrupt_feather(tmp_path, offsets):
    """A Feather file whose list offsets were patched on disk (the IPC reader trusts them)."""
    pred = pa.ListArray.from_arrays(pa.array(GOOD), pa.array(np.full(13, 0.25, dtype=np.float32)))
    t = pa.table({"pred": pred, "label": pa.array([0, 1, 2])})
    path = tmp_path / "ok.feather"
    feather.write_feather(t, path, compression="uncompressed")
    raw = path.read_bytes()
    assert raw.count(GOOD.tobytes()) == 1
    bad = tmp_path / "bad.feather"
    bad.write_bytes(raw.replace(GOOD.tobytes(), np.array(offsets, dtype=np.int32).tobytes()))
    return bad


BAD_OFFSETS = {
    "last_past_values": [0, 5, 9, 13 + 64],
    "last_far_past": [0, 5, 9, 0x7FFF0000],
    "middle_huge": [0, 5, 0x7FFF0000, 13],
    "negative_first": [-4, 5, 9, 13],
    "decreasing": [0, 9, 5, 13],
}


@pytest.mark.parametrize("name", list(BAD_OFFSETS))
def test_corrupt_offsets_are_refused_everywhere(tmp_path, name):
    bad = corrupt_feather(tmp_path, BAD_OFFSETS[name])
    runner = CliRunner()
    for extra in ([], ["--on-invalid", "null"]):
        out = tmp_path / "o.csv"
        res = runner.invoke(app, ["score", str(bad), "-o", str(out), *extra])
        assert res.exit_code == 2, res.output
        assert "bad.feather" in res.output and "'pred'" in res.output and "corrupt list offsets" in res.output
        assert not out.exists()
    res = runner.invoke(app, ["advise", str(bad)])
    assert res.exit_code == 2 and "corrupt list offsets" in res.output and "Traceback" not in res.output
    table = feather.read_table(bad, memory_map=False)
    with pytest.raises(xn.InvalidInputError, match="corrupt list offsets"):
        xn.cce(table["pred"], table["label"])
    with pytest.raises(xn.InvalidInputError, match="corrupt list offsets"):
        xn.cce(table["pred"].chunk(0), table["label"].chunk(0))


def test_advise_mixed_label_types_and_wide_uint64(tmp_path):
    import pyarrow.parquet as pq

    pred = pa.array([[0.5, 0.5]] * 3)
    pq.write_table(pa.table({"pred": pred, "label": pa.array([0, 1, 0])}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"pred": pred, "label": pa.array(["x", "y", "z"])}), tmp_path / "b.parquet")
    res = CliRunner().invoke(app, ["advise", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    wide = tmp_path / "wide"
    wide.mkdir()
    pq.write_table(pa.table({"p_0": pa.array([0.5, 0.5]), "p_1": pa.array([0.5, 0.5]),
                             "y_0": pa.array([2**64 - 1, 0], pa.uint64()), "y_1": pa.array([0, 1], pa.int64())}),
                   wide / "w.parquet")
    res = CliRunner().invoke(app, ["advise", str(wide / "w.parquet"), "--pred", "p_*", "--label", "y_*"])
    assert res.exit_code in (0, 2) and "Traceback" not in res.output, res.output
    assert "y_0" in res.output or "outside [0, 1]" in res.output
    res = CliRunner().invoke(app, ["score", str(wide / "w.parquet"), "-o", str(wide / "o.csv"),
                                   "--pred", "p_*", "--label", "y_*", "--loss", "bce"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output


def test_advise_memory_is_linear_in_classes():
    import tracemalloc

    from xent_numba.analysis.advise import advise_arrays

    c = 20_000
    p = np.full((3, c), 1.0 / c)
    tracemalloc.start()
    a = advise_arrays(p, np.array([0, 1, 2]))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert a["recommended_loss"] == "cce"
    assert peak < 64 * 2**20  # np.eye(20k) alone would be 3.2 GB
