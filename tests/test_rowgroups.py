"""Parquet row groups decoded on several threads (xent_numba/rowgroups.py, used by
io.Source.batches and the local engine): the batches come out in file order, the scores
and ids are those of one decoder, memory ahead is bounded, a decoder's error reaches the
caller, and stopping early joins every thread."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import reference as ref
from xent_numba import InvalidInputError, io, pipeline, rowgroups


def _dump(path, n=2000, group=97, seed=0):
    rng = np.random.default_rng(seed)
    widths = rng.integers(1, 12, n)
    rows = [rng.normal(0, 2, c).astype(np.float32) for c in widths]
    labels = [int(rng.integers(0, c)) for c in widths]
    table = pa.table({"id": np.arange(n), "pred": pa.array([r.tolist() for r in rows], pa.list_(pa.float32())),
                      "label": np.array(labels)})
    pq.write_table(table, path, row_group_size=group)
    return table, rows, labels


def _decode_threads():
    return [t for t in threading.enumerate() if t.name.startswith("xent-decode")]


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
@pytest.mark.parametrize("ahead", [1, 1 << 20])
def test_batches_come_out_in_file_order(tmp_path, workers, ahead):
    path = str(tmp_path / "in.parquet")
    table, _, _ = _dump(path)
    n_groups = pq.ParquetFile(path).metadata.num_row_groups
    assert n_groups > 10
    got = list(rowgroups.ordered_batches(lambda: pq.ParquetFile(path), n_groups, ["id", "label"], 13, workers, ahead))
    assert all(b.num_rows <= 13 for b in got)
    assert pa.Table.from_batches(got).equals(table.select(["id", "label"]))
    assert not _decode_threads()


def test_engine_with_two_decoders_matches_one(tmp_path):
    path = str(tmp_path / "in.parquet")
    _, rows, labels = _dump(path)
    opts = pipeline.ScoreOptions(from_logits=True, keep=("id",))
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    pipeline.score_files([path], one, opts, threads=1, batch_rows=50)
    pipeline.score_files([path], two, opts, threads=2, batch_rows=50)
    a, b = pq.read_table(one), pq.read_table(two)
    assert a.equals(b)  # bit-identical scores, ids in order
    assert b["id"].to_pylist() == list(range(len(rows)))
    want = ref.cce([r.astype(np.float64) for r in rows], labels, from_logits=True)
    ref.assert_close(b["cce"].to_numpy(), want, np.float32)
    assert not _decode_threads()


def test_source_uses_several_decoders_only_for_local_multi_group_parquet(tmp_path):
    path = str(tmp_path / "in.parquet")
    table, _, _ = _dump(path, n=300, group=300)  # one row group: the single reader
    src = io.Source(path)
    assert pa.Table.from_batches(list(src.batches(["id"], 64, decoders=4))).equals(table.select(["id"]))


class _Failing:
    """A ParquetFile stand-in whose row group 3 cannot be decoded."""

    def __init__(self, path):
        self._pf = pq.ParquetFile(path)

    def iter_batches(self, *, row_groups, **kw):
        if row_groups == [3]:
            raise pa.ArrowInvalid("bad page in row group 3")
        return self._pf.iter_batches(row_groups=row_groups, **kw)


def test_a_decoders_error_reaches_the_caller(tmp_path):
    path = str(tmp_path / "in.parquet")
    _dump(path)
    gen = rowgroups.ordered_batches(lambda: _Failing(path), 10, ["id"], 1000, 2, 1 << 20)
    seen = []
    with pytest.raises(pa.ArrowInvalid, match="row group 3"):
        for b in gen:
            seen.extend(b["id"].to_pylist())
    # raised as soon as a decoder fails (the run is over): what came before is a prefix, in order
    assert seen == list(range(len(seen))) and len(seen) <= 3 * 97
    assert not _decode_threads()


def test_a_corrupt_multi_group_file_is_a_clear_error_and_no_output(tmp_path):
    path = tmp_path / "in.parquet"
    _dump(str(path), n=20000, group=2000)
    col = pq.ParquetFile(path).metadata.row_group(5).column(1)  # pred of a middle row group
    data = bytearray(path.read_bytes())
    start = col.data_page_offset
    data[start : start + col.total_compressed_size] = b"\x07" * col.total_compressed_size
    path.write_bytes(bytes(data))
    out = tmp_path / "out.parquet"
    with pytest.raises(InvalidInputError):
        pipeline.score_files([str(path)], out, pipeline.ScoreOptions(from_logits=True), threads=2)
    assert not out.exists() and list(tmp_path.iterdir()) == [path]
    assert not _decode_threads()


def test_stopping_early_joins_every_decoder(tmp_path):
    path = str(tmp_path / "in.parquet")
    _dump(path)
    n_groups = pq.ParquetFile(path).metadata.num_row_groups
    gen = rowgroups.ordered_batches(lambda: pq.ParquetFile(path), n_groups, ["id"], 10, 3, 1)
    assert next(gen)["id"].to_pylist() == list(range(10))
    gen.close()
    assert not _decode_threads()
