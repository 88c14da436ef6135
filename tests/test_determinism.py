"""`xent score` gives bit-identical losses whatever the batch size and thread count.

The engine splits a file into batches (``--batch-rows``, or ~8 MB of input by default) and
the kernels pick their code path per batch (narrow rows scored in blocks, wide rows one by
one, across however many threads run): none of it may change a single bit of a loss. Each
case scores one Parquet file of ragged list rows (1 to 40 classes, a few of 300, confident
rows among them) with ``pipeline.score_files`` at batch sizes 1, 7, 1000 and the default,
threads 1 and 2, and compares the loss columns byte for byte (values and null masks); every
run is also checked against the NumPy reference, so identical never means identically wrong.
``score_batch`` on the whole table with 1 and 2 kernel threads is compared the same way (on
two cores ``score_files`` leaves the kernels one thread, the decoder the other).
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import reference as ref
from xent_numba.engine import local as pipeline

N = 1500
BATCHES = [1, 7, 1000, None]  # None: the engine's default (the whole file here)
# Found by this file (2026-11-27): a BCE row of 300 classes scored alone (the per-row kernel)
# and inside a batch of narrow rows (the block kernel) differed in the last bit, because the
# batch's mean row length picked the arithmetic. Now a row's path depends on its own length
# only (cpu.run sends ragged batches to the block kernels, which score wide rows with the row
# functions), so BCE is held to the same bit-identity as CCE.
LOSSES = ["cce", "bce"]


def _rows(rng, from_logits: bool, dtype) -> list[np.ndarray]:
    widths = rng.integers(1, 41, N)
    widths[rng.random(N) < 0.02] = 300  # wide rows: the per-row kernels, not the blocks
    rows = []
    for i, c in enumerate(widths):
        x = rng.normal(0.0, 3.0, c)
        if i % 50 == 0 and c > 1:
            x[0] += 60.0  # confident rows: losses ~1e-26 from logits
        if not from_logits:
            x = np.exp(x - x.max())
            x /= x.sum()
        rows.append(x.astype(dtype))
    return rows


def _dump(tmp_path, loss: str, from_logits: bool, dtype) -> tuple[str, list, list]:
    rng = np.random.default_rng(14 + from_logits + 2 * (loss == "bce"))
    rows = _rows(rng, from_logits, dtype)
    t = pa.from_numpy_dtype(np.dtype(dtype))
    if loss == "cce":
        targets = [int(rng.integers(0, r.size)) for r in rows]
        label = pa.array(targets, pa.int64())
    else:
        targets = [(rng.random(r.size) < 0.3).astype(np.float32) for r in rows]
        label = pa.array([tg.tolist() for tg in targets], pa.list_(pa.float32()))
    table = pa.table({"id": np.arange(N), "pred": pa.array([r.tolist() for r in rows], pa.list_(t)), "label": label})
    path = str(tmp_path / f"in-{loss}-{from_logits}.parquet")
    pq.write_table(table, path, row_group_size=600)  # row groups that batches straddle
    return path, rows, targets


def _loss_bytes(col: pa.ChunkedArray | pa.Array) -> tuple[bytes, bytes]:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    values = np.asarray(col.fill_null(0).to_numpy(zero_copy_only=False))
    return values.tobytes(), np.asarray(col.is_null().to_numpy(zero_copy_only=False)).tobytes()


def _reference(loss, rows, targets, from_logits, dtype) -> np.ndarray:
    fn = ref.cce if loss == "cce" else ref.bce
    return fn(rows, targets, from_logits=from_logits, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
@pytest.mark.parametrize("loss", LOSSES)
def test_losses_bit_identical_across_batch_sizes_and_threads(tmp_path, loss, from_logits, dtype):
    path, rows, targets = _dump(tmp_path, loss, from_logits, dtype)
    opts = pipeline.ScoreOptions(loss=loss, from_logits=from_logits, keep=("id",))
    want = _reference(loss, rows, targets, from_logits, dtype)
    results = {}
    for threads in (1, 2):
        for batch_rows in BATCHES:
            out = tmp_path / f"out-{threads}-{batch_rows}.parquet"
            pipeline.score_files([path], str(out), opts, batch_rows=batch_rows, threads=threads)
            table = pq.read_table(out)
            assert table.column("id").to_pylist() == list(range(N))  # rows in = rows out, in order
            got = table.column(loss).to_numpy()
            ref.assert_close(got, want, dtype)
            results[(threads, batch_rows)] = _loss_bytes(table.column(loss))
    first = next(iter(results.values()))
    differ = [k for k, v in results.items() if v != first]
    assert not differ, f"losses differ from threads=1, batch_rows=1 in runs (threads, batch_rows) = {differ}"


@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
@pytest.mark.parametrize("loss", LOSSES)
def test_score_batch_bit_identical_across_kernel_threads(tmp_path, loss, from_logits):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one core: no second kernel thread")
    path, _, _ = _dump(tmp_path, loss, from_logits, np.float32)
    table = pq.read_table(path)
    opts = pipeline.ScoreOptions(loss=loss, from_logits=from_logits)
    cols = pipeline.resolve_columns(table.schema, opts)
    caller = numba.get_num_threads()
    got = {}
    try:
        for n in (1, 2):
            numba.set_num_threads(n)
            got[n] = _loss_bytes(pipeline.score_batch(table, opts, cols).column(loss))
    finally:
        numba.set_num_threads(caller)
    assert got[1] == got[2]
