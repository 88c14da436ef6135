"""The Arrow <-> NumPy conversions the kernels read through, against pyarrow's own."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xent_numba import arrow

TYPES = [pa.int8(), pa.uint16(), pa.int32(), pa.int64(), pa.uint64(), pa.float16(), pa.float32(), pa.float64(), pa.bool_()]


@pytest.mark.parametrize("typ", TYPES, ids=str)
@pytest.mark.parametrize("with_nulls", [False, True])
@pytest.mark.parametrize("sl", [slice(None), slice(3, 17), slice(9, 9)], ids=["whole", "sliced", "empty"])
def test_to_numpy_matches_pyarrow(typ, with_nulls, sl):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 2 if typ == pa.bool_() else 100, 23)
    values = [None if with_nulls and i % 5 == 1 else v for i, v in enumerate(raw.tolist())]
    arr = pa.array(values, type=pa.int64()).cast(typ)[sl]
    fill = 0
    got = arrow.to_numpy(arr, fill=fill)
    want = arr.fill_null(pa.scalar(bool(fill) if typ == pa.bool_() else fill, type=typ)).to_numpy(zero_copy_only=False)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_to_numpy_is_a_view_without_nulls():
    arr = pa.array(np.arange(10, dtype=np.float32))[2:]
    got = arrow.to_numpy(arr)
    assert not got.flags.writeable and got[0] == 2.0
    assert got.ctypes.data == arr.buffers()[1].address + 2 * 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, bool])
def test_from_numpy_round_trip(dtype):
    values = (np.arange(13) % 3).astype(dtype)
    null = np.arange(13) % 4 == 0
    got = arrow.from_numpy(values, null)
    want = pa.array(values, mask=null)
    assert got.equals(want)
    assert arrow.from_numpy(values).equals(pa.array(values))


def test_score_does_not_import_pandas(tmp_path):
    """pyarrow's to_numpy/pa.array import pandas when it is installed (start-up time on
    every run)."""
    pytest.importorskip("pandas")
    inp = tmp_path / "in.parquet"
    pred = pa.array([[0.1, 0.9], [0.5, None], [0.3, 0.7]], pa.list_(pa.float32()))
    pq.write_table(pa.table({"pred": pred, "label": pa.array([1, None, 0])}), inp)
    code = (
        "import sys\n"
        "from xent_numba.engine import local as pipeline\n"
        f"pipeline.score_files([{str(inp)!r}], {str(tmp_path / 'out.parquet')!r}, "
        "pipeline.ScoreOptions(loss='both', on_invalid='null'))\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert pq.read_table(tmp_path / "out.parquet").column("cce").null_count == 1


# ---- scalar (binary) columns, hostile offsets, foreign arrays ---------------------------------


def test_scalar_prediction_is_a_zero_copy_view():
    from xent_numba.arrow import Scalar, as_labels

    values = np.arange(10, dtype=np.float32) / 10
    arr = pa.array(values).slice(2, 5)
    layout, nulls = arrow.as_rows(arr, "pred", is_target=False)
    assert isinstance(layout, Scalar) and nulls is None
    np.testing.assert_array_equal(layout.values, values[2:7])
    assert not layout.values.flags.owndata  # a view of the Arrow buffer
    y, _ = as_labels(pa.array([True, False, True]), "label")
    assert y.dtype == np.uint8 and list(y) == [1, 0, 1]
    y, _ = as_labels(np.array([0, 1], dtype=np.int16), "label")
    assert y.dtype == np.int64  # canonical label dtypes: uint8, int64, float32, float64


@pytest.mark.parametrize("offsets, ok", [
    ([0, 2, 2, 5], True), ([1, 2, 5], True), ([0, 2, 6], False), ([-1, 2, 5], False), ([0, 3, 2, 5], False),
])
def test_check_offsets(offsets, ok):
    from xent_numba.arrow import check_offsets
    from xent_numba.errors import InvalidInputError

    if ok:
        check_offsets(np.array(offsets), 5, "pred")
    else:
        with pytest.raises(InvalidInputError, match="corrupt list offsets"):
            check_offsets(np.array(offsets), 5, "pred")


def test_big_endian_and_coerce():
    from xent_numba.arrow import coerce
    from xent_numba.errors import InvalidInputError

    layout, _ = arrow.as_rows(np.array([[0.25, 0.75]], dtype=">f8"), "pred", is_target=False)
    assert layout.values.dtype == np.float64 and layout.values.dtype.isnative
    y, _ = arrow.as_rows(np.array([1], dtype=">i8"), "target", is_target=True)
    assert y.dtype == np.int64 and y.dtype.isnative
    assert coerce(np.zeros(2)) is not None and isinstance(coerce([1, 2]), list)
    with pytest.raises(InvalidInputError, match="accepted"):
        coerce({"a": 1})
