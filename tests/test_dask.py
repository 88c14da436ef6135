"""The Dask engine: same values as the local engine, on a LocalCluster and on a real
scheduler + workers started as subprocesses; bad files give a clear error and no output."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("distributed")
pytest.importorskip("dask.dataframe")

import xent_numba as xn  # noqa: E402
from xent_numba.engine import dask as xd  # noqa: E402
from xent_numba.engine.local import ScoreOptions  # noqa: E402

N_FILES, ROWS, C = 4, 900, 6


def _write_dataset(root: Path, *, bad_row=None, corrupt=False) -> Path:
    rng = np.random.default_rng(7)
    root.mkdir()
    for i in range(N_FILES):
        logits = rng.normal(size=(ROWS, C)).astype(np.float32)
        label = rng.integers(0, C, ROWS)
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        if bad_row is not None and i == 2:
            probs[bad_row, 0] = 1.5
        pred = pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel()), C).cast(pa.list_(pa.float32()))
        table = pa.table({"id": np.arange(ROWS) + i * ROWS, "pred": pred, "label": label, "extra": np.zeros(ROWS)})
        pq.write_table(table, root / f"part-{i}.parquet", row_group_size=400)
    if corrupt:
        (root / "part-9.parquet").write_bytes(b"PAR1 this is not parquet")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("ds") / "dump")


def _local_reference(root: Path, loss="both"):
    src = pq.read_table(sorted(root.glob("*.parquet")))
    return src, {"cce": xn.cce(src["pred"], src["label"]), "bce": xn.bce(src["pred"], src["label"])}


def _check_output(out: Path, root: Path):
    got = pq.read_table(out)
    src, want = _local_reference(root)
    assert got.column_names == ["id", "cce", "bce"]
    assert got.num_rows == src.num_rows == N_FILES * ROWS
    np.testing.assert_array_equal(got["id"].to_numpy(), src["id"].to_numpy())
    for loss in ("cce", "bce"):
        np.testing.assert_allclose(got[loss].to_numpy(), want[loss], rtol=1e-6)


def test_local_cluster_matches_local_engine(dataset, tmp_path):
    out = tmp_path / "scores"
    seen = []
    summary = xd.score_files([str(dataset)], str(out), ScoreOptions(loss="both", keep=("id",)), workers=2, on_progress=seen.append)
    _check_output(out, dataset)
    assert sorted(p.name for p in out.iterdir())[0] == "part.00000.parquet"
    assert len(list(out.iterdir())) == N_FILES * 3  # one part per partition (row group)
    assert summary.rows == N_FILES * ROWS and summary.invalid == 0
    assert seen[-1] == N_FILES * ROWS
    _, want = _local_reference(dataset)
    assert summary.stats["cce"].to_dict()["mean"] == pytest.approx(float(np.mean(want["cce"])), rel=1e-6)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_python_api_on_a_dask_dataframe(dataset):
    import dask.dataframe as dd

    ddf = dd.read_parquet(str(dataset), dtype_backend="pyarrow")
    scored = xd.score(ddf, loss="cce", keep=["id"], log_base=10)
    assert list(scored.columns) == ["id", "cce"]
    got = scored.compute(scheduler="sync")
    src = pq.read_table(sorted(dataset.glob("*.parquet")))
    np.testing.assert_allclose(got["cce"].to_numpy(dtype=float), xn.cce(src["pred"], src["label"], log_base=10), rtol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scheduler_address():
    """A real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    dask_cmd = [str(bindir / "dask")] if (bindir / "dask").exists() else [sys.executable, "-m", "dask"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [subprocess.Popen(dask_cmd + ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        from distributed import Client

        deadline = time.time() + 60
        while True:
            try:
                Client(address, timeout=2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        for _ in range(2):
            procs.append(subprocess.Popen(dask_cmd + ["worker", address, "--nthreads", "1", "--no-dashboard"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        with Client(address, timeout=10) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_real_scheduler_via_cli(dataset, tmp_path, scheduler_address):
    out = tmp_path / "scores"
    cmd = [sys.executable, "-m", "xent_numba", "score", str(dataset), "-o", str(out), "--engine", "dask",
           "--scheduler", scheduler_address, "--loss", "both", "--keep", "id", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _check_output(out, dataset)


def test_bad_row_in_one_file(tmp_path, scheduler_address):
    root = _write_dataset(tmp_path / "dump", bad_row=123)
    out = tmp_path / "scores"
    with pytest.raises(xn.InvalidInputError) as err:
        xd.score_files([str(root)], str(out), ScoreOptions(keep=("id",)), scheduler=scheduler_address)
    msg = str(err.value)
    assert "part-2.parquet" in msg and f"row {2 * ROWS + 123}" in msg and "column 'pred'" in msg, msg
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_default_cluster_is_one_threaded_worker(dataset, tmp_path, monkeypatch):
    """No --workers, no --scheduler: one in-process worker, a thread per core; same results."""
    import distributed

    made = []
    real = distributed.LocalCluster

    def spy(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(distributed, "LocalCluster", spy)
    out = tmp_path / "scores"
    xd.score_files([str(dataset)], str(out), ScoreOptions(loss="both", keep=("id",)))
    _check_output(out, dataset)
    assert made and made[0]["processes"] is False and made[0]["n_workers"] == 1


def test_bad_row_on_the_default_cluster(tmp_path):
    root = _write_dataset(tmp_path / "dump", bad_row=45)
    out = tmp_path / "scores"
    with pytest.raises(xn.InvalidInputError) as err:
        xd.score_files([str(root)], str(out), ScoreOptions(keep=("id",)))
    msg = str(err.value)
    assert "part-2.parquet" in msg and f"row {2 * ROWS + 45}" in msg and "column 'pred'" in msg, msg
    assert not out.exists()


def test_corrupt_file_among_good_ones(tmp_path):
    root = _write_dataset(tmp_path / "dump", corrupt=True)
    out = tmp_path / "scores"
    with pytest.raises(xn.InvalidInputError, match=r"part-9\.parquet: cannot read Parquet"):
        xd.score_files([str(root)], str(out), ScoreOptions(), workers=1)
    assert not out.exists()


def test_existing_output_is_refused(dataset, tmp_path):
    out = tmp_path / "scores"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(xn.InvalidInputError, match="--overwrite"):
        xd.score_files([str(dataset)], str(out), ScoreOptions(), workers=1)
    assert (out / "keep.txt").read_text() == "mine"
