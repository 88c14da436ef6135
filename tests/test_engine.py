"""The local engine's choices that cost time but never change a score: how many kernel
threads it runs (every core when the input needs no decoding: memory-mapped, uncompressed
Arrow IPC; one less otherwise, the reader thread decodes on it) and how the Parquet output
is encoded (numbers plain and uncompressed, strings dictionary + Snappy). Scores do not
depend on either (tests/test_determinism.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from xent_numba import io
from xent_numba.engine import local as pipeline
from xent_numba.io import readers


def _table():
    return pa.table({"pred": pa.array([[0.25, 0.75], [0.5, 0.5]], pa.list_(pa.float32())), "label": np.array([1, 0])})


@pytest.mark.parametrize(
    ("name", "write", "zero_copy"),
    [
        ("u.feather", lambda t, p: feather.write_feather(t, p, compression="uncompressed"), True),
        ("c.feather", lambda t, p: feather.write_feather(t, p, compression="lz4"), False),
        ("p.parquet", lambda t, p: pq.write_table(t, p), False),
    ],
)
def test_kernels_take_every_core_only_when_nothing_is_decoded(tmp_path, name, write, zero_copy):
    path = str(tmp_path / name)
    write(_table(), path)
    src = io.Source(path)
    assert src.zero_copy() is zero_copy
    assert pipeline.kernel_threads([src], 2) == (2 if zero_copy else 1)
    assert pipeline.kernel_threads([src], 1) == 1


def test_one_file_to_decode_leaves_the_decoder_its_core(tmp_path):
    fe, pa_ = str(tmp_path / "u.feather"), str(tmp_path / "p.parquet")
    feather.write_feather(_table(), fe, compression="uncompressed")
    pq.write_table(_table(), pa_)
    assert pipeline.kernel_threads([io.Source(fe), io.Source(pa_)], 4) == 3


def test_empty_arrow_file(tmp_path):
    path = str(tmp_path / "e.feather")
    feather.write_feather(_table().slice(0, 0), path, compression="uncompressed")
    assert io.Source(path).zero_copy() in (True, False)  # no batch to look at: either is fine


def test_parquet_output_numbers_uncompressed_strings_snappy(tmp_path):
    src = tmp_path / "in.parquet"
    t = _table().append_column("id", pa.array([7, 8])).append_column("name", pa.array(["a", "b"]))
    pq.write_table(t, src)
    out = tmp_path / "out.parquet"
    opts = pipeline.ScoreOptions(keep=("id", "name"))
    pipeline.score_files([str(src)], str(out), opts)
    md = pq.ParquetFile(out).metadata.row_group(0)
    codecs = {md.column(i).path_in_schema: md.column(i).compression for i in range(md.num_columns)}
    assert codecs == {"id": "UNCOMPRESSED", "name": "SNAPPY", "cce": "UNCOMPRESSED"}
    got = pq.read_table(out)
    assert got.column("id").to_pylist() == [7, 8] and got.column("name").to_pylist() == ["a", "b"]
    np.testing.assert_allclose(got.column("cce").to_numpy(), -np.log([0.75, 0.5]), rtol=1e-6)


def test_memory_mapped_input_pages_released_behind_the_reader_scores_unchanged(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    n, c = 40_000, 8
    p = rng.dirichlet(np.ones(c), n).astype(np.float32)
    y = rng.integers(0, c, n)
    t = pa.table({"pred": pa.FixedSizeListArray.from_arrays(pa.array(p.reshape(-1)), c), "label": y})
    path = str(tmp_path / "in.feather")
    feather.write_feather(t, path, compression="uncompressed", chunksize=5000)
    out = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    pipeline.score_files([path], str(out[0]), pipeline.ScoreOptions(), batch_rows=3000)
    monkeypatch.setattr(readers, "RELEASE_BEHIND", 0)  # release every page before the batch being read
    released = []
    real = io.Source._release_behind

    def spy(self, batch):
        real(self, batch)
        released.append(self._released)

    monkeypatch.setattr(io.Source, "_release_behind", spy)
    pipeline.score_files([path], str(out[1]), pipeline.ScoreOptions(), batch_rows=3000)
    assert max(released) > 0
    a, b = (pq.read_table(o).column("cce").to_numpy() for o in out)
    assert a.tobytes() == b.tobytes()
    np.testing.assert_allclose(a, -np.log(p[np.arange(n), y].astype(np.float64)), rtol=1e-5)
