"""`xent score`, `advise` and `report` end to end on URLs, against a real S3 server (moto on
127.0.0.1): the same scores as the local run, atomic outputs, one-line errors (exit 2)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests import reference as ref
from xent_numba.cli.commands import app
from xent_numba.engine import local as pipeline
from xent_numba.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample.parquet"
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _put(s3, key: str, data: bytes) -> None:
    with s3.fs.open_output_stream(key) as f:
        f.write(data)


def _get(s3, key: str) -> bytes:
    with s3.fs.open_input_file(key) as f:
        return f.read()


def _parts(tmp_path: Path, s3, bucket: str, n: int = 3) -> Path:
    """sample.parquet cut into ``n`` Parquet files, in ``tmp_path/in/`` and under
    ``s3://bucket/run/`` (plus a _SUCCESS marker the listing must skip)."""
    t = pq.read_table(SAMPLE)
    local = tmp_path / "in"
    local.mkdir()
    step = -(-t.num_rows // n)
    for i in range(n):
        part = t.slice(i * step, step)
        pq.write_table(part, local / f"part-{i}.parquet", row_group_size=500)
        _put(s3, f"{bucket}/run/part-{i}.parquet", (local / f"part-{i}.parquet").read_bytes())
    _put(s3, f"{bucket}/run/_SUCCESS", b"")
    return local


def _one_line_error(res, *words):
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_prefix_to_bucket_matches_the_local_run_and_the_reference(tmp_path, s3):
    b = s3.bucket()
    local = _parts(tmp_path, s3, b)
    res = run("score", f"s3://{b}/run/", "-o", f"s3://{b}/scores.parquet", "--keep", "id", "-q")
    assert res.exit_code == 0, res.output
    assert run("score", local, "-o", tmp_path / "local.parquet", "--keep", "id", "-q").exit_code == 0
    remote = pq.read_table(pa.BufferReader(_get(s3, f"{b}/scores.parquet")))
    assert remote.equals(pq.read_table(tmp_path / "local.parquet"))
    t = pq.read_table(SAMPLE)
    want = ref.cce(t["pred"].to_pylist(), t["label"].to_numpy(), dtype=np.float32)
    ref.assert_close(remote["cce"].to_numpy(), want, np.float32)
    assert remote["id"].to_pylist() == t["id"].to_pylist()
    assert not [k for k in s3.keys(b) if ".tmp-" in k]


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_glob_to_text_formats_in_the_bucket(tmp_path, s3, ext):
    b = s3.bucket()
    local = _parts(tmp_path, s3, b)
    res = run("score", f"s3://{b}/run/part-*.parquet", "-o", f"s3://{b}/out/scores.{ext}", "--keep", "id", "-q")
    assert res.exit_code == 0, res.output
    run("score", str(local / "part-*.parquet"), "-o", tmp_path / f"local.{ext}", "--keep", "id", "-q")
    assert _get(s3, f"{b}/out/scores.{ext}") == (tmp_path / f"local.{ext}").read_bytes()


def test_single_feather_object_and_an_endpoint_from_the_option(tmp_path, s3, monkeypatch):
    b = s3.bucket()
    t = pq.read_table(SAMPLE)
    buf = io.BytesIO()
    feather.write_feather(t, buf, chunksize=700)
    _put(s3, f"{b}/dump.feather", buf.getvalue())
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # now only --storage-option says where the server is
    res = run("score", f"s3://{b}/dump.feather", "-o", f"s3://{b}/dump-scores.arrow", "--keep", "id", "-q",
              "--storage-option", f"endpoint_override={s3.endpoint}", "--storage-option", "region=us-east-1")
    assert res.exit_code == 0, res.output
    got = pa.ipc.open_file(pa.BufferReader(_get(s3, f"{b}/dump-scores.arrow"))).read_all()
    want = ref.cce(t["pred"].to_pylist(), t["label"].to_numpy(), dtype=np.float32)
    ref.assert_close(got["cce"].to_numpy(), want, np.float32)
    _one_line_error(run("score", f"s3://{b}/dump.feather", "-o", f"s3://{b}/x.arrow", "-q"), "cannot reach")


def test_overwrite_rules_and_never_an_input(tmp_path, s3):
    b = s3.bucket()
    _parts(tmp_path, s3, b)
    out = f"s3://{b}/o.parquet"
    assert run("score", f"s3://{b}/run/", "-o", out, "-q").exit_code == 0
    before = _get(s3, f"{b}/o.parquet")
    _one_line_error(run("score", f"s3://{b}/run/", "-o", out, "-q"), out, "exists; pass --overwrite")
    assert _get(s3, f"{b}/o.parquet") == before
    assert run("score", f"s3://{b}/run/", "-o", out, "-q", "--overwrite", "--keep", "id").exit_code == 0
    assert pq.read_table(pa.BufferReader(_get(s3, f"{b}/o.parquet"))).column_names == ["id", "cce"]
    _one_line_error(run("score", f"s3://{b}/run/", "-o", f"s3://{b}/run/part-0.parquet", "-q", "--overwrite"),
                    "is also an input")
    assert sorted(s3.keys(b)) == ["o.parquet", "run/_SUCCESS", "run/part-0.parquet", "run/part-1.parquet",
                                  "run/part-2.parquet"]


def test_errors_name_the_url_exit_2_and_leave_nothing(tmp_path, s3):
    b = s3.bucket()
    _parts(tmp_path, s3, b)
    cases = [
        ("s3://no-such-bucket-zz/run/", "bucket 'no-such-bucket-zz' does not exist"),
        (f"s3://{b}/missing.parquet", "no such object or prefix"),
        (f"s3://{b}/run/nothing-*.parquet", "no object matches this pattern"),
    ]
    for url, words in cases:
        _one_line_error(run("score", url, "-o", f"s3://{b}/e.parquet", "-q"), url, words)
    _one_line_error(run("score", f"s3://{b}/run/", "-o", "s3://no-such-bucket-zz/e.parquet", "-q"),
                    "s3://no-such-bucket-zz/e.parquet", "bucket 'no-such-bucket-zz' does not exist")
    port = s3.endpoint.rsplit(":", 1)[1]
    dead = f"http://127.0.0.1:{int(port) + 1 if int(port) < 65535 else 1}"
    _one_line_error(run("score", f"s3://{b}/run/", "-o", tmp_path / "x.parquet", "-q",
                        "--storage-option", f"endpoint_override={dead}", "--storage-option", "retries=1"),
                    f"s3://{b}/run/", f"cannot reach the storage endpoint {dead}")
    _one_line_error(run("score", f"s3://{b}/run/", "-o", tmp_path / "x.parquet", "-q", "--storage-option", "oops"),
                    "KEY=VALUE")
    assert not (tmp_path / "x.parquet").exists()
    assert not [k for k in s3.keys(b) if not k.startswith("run/")]


def test_access_denied_is_one_line(tmp_path, s3):
    import moto.settings

    b = s3.bucket()
    _parts(tmp_path, s3, b)
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # the server checks credentials from now on
    try:
        res = run("score", f"s3://{b}/run/", "-o", tmp_path / "x.parquet", "-q",
                  "--storage-option", "access_key=AKIDNOBODY", "--storage-option", "secret_key=nope")
    finally:
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    _one_line_error(res, f"s3://{b}/run/", "access denied")
    assert not list(tmp_path.glob("x.parquet*")) and not list(tmp_path.glob(".x.parquet*"))


def test_server_stopped_mid_run_clear_error_no_object(tmp_path, s3):
    b = s3.bucket()
    _parts(tmp_path, s3, b)
    opts = pipeline.ScoreOptions(keep=("id",))
    stopped = []

    def on_progress(done):
        if not stopped:
            stopped.append(done)
            s3.stop()

    try:
        with pytest.raises(InvalidInputError) as err:
            pipeline.score_files([f"s3://{b}/run/"], f"s3://{b}/out.parquet", opts, batch_rows=100,
                                 on_progress=on_progress, storage_options={"retries": "1"})
    finally:
        if stopped:
            s3.restart()
    assert stopped
    msg = str(err.value)
    assert msg.startswith(f"s3://{b}/") and "cannot reach the storage endpoint" in msg and "\n" not in msg
    assert sorted(s3.keys(b)) == ["run/_SUCCESS", "run/part-0.parquet", "run/part-1.parquet", "run/part-2.parquet"]


def test_ctrl_c_mid_run_leaves_no_object(tmp_path, s3):
    b = s3.bucket()
    _parts(tmp_path, s3, b)

    def on_progress(done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline.score_files([f"s3://{b}/run/"], f"s3://{b}/out.parquet", pipeline.ScoreOptions(), batch_rows=100,
                             on_progress=on_progress)
    assert sorted(s3.keys(b)) == ["run/_SUCCESS", "run/part-0.parquet", "run/part-1.parquet", "run/part-2.parquet"]


def test_a_real_process_reads_and_writes_the_bucket(tmp_path, s3):
    b = s3.bucket()
    _parts(tmp_path, s3, b)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "xent_numba", "score", f"s3://{b}/run/", "-o",
                           f"s3://{b}/p.parquet", "--keep", "id"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "rows scored" in proc.stdout
    assert pq.read_table(pa.BufferReader(_get(s3, f"{b}/p.parquet"))).num_rows == 4000
    proc = subprocess.run([sys.executable, "-m", "xent_numba", "score", f"s3://{b}/nope/", "-o", f"s3://{b}/q.parquet"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"s3://{b}/nope/: no such object or prefix" in proc.stderr + proc.stdout


def test_advise_and_report_take_urls(tmp_path, s3):
    pytest.importorskip("matplotlib")
    b = s3.bucket()
    local = _parts(tmp_path, s3, b)
    remote = run("advise", f"s3://{b}/run/", "--json")
    assert remote.exit_code == 0, remote.output
    assert json.loads(remote.output) == json.loads(run("advise", local, "--json").output)
    assert run("score", f"s3://{b}/run/", "-o", f"s3://{b}/s.parquet", "--keep", "label", "-q").exit_code == 0
    res = run("report", f"s3://{b}/s.parquet", "-o", f"s3://{b}/r.png")
    assert res.exit_code == 0, res.output
    assert _get(s3, f"{b}/r.png")[:8] == b"\x89PNG\r\n\x1a\n"
    _one_line_error(run("report", f"s3://{b}/none.parquet", "-o", tmp_path / "r.png"), "no such object")
    assert not [k for k in s3.keys(b) if ".tmp-" in k]


def test_dask_engine_reads_and_writes_the_bucket(tmp_path, s3):
    pytest.importorskip("distributed")
    b = s3.bucket()
    _parts(tmp_path, s3, b)
    t = pq.read_table(SAMPLE).sort_by("id")
    want = ref.cce(t["pred"].to_pylist(), t["label"].to_numpy(), dtype=np.float32)
    res = run("score", f"s3://{b}/run/", "-o", tmp_path / "d", "--engine", "dask", "--keep", "id", "-q")
    assert res.exit_code == 0, res.output
    ref.assert_close(pq.read_table(tmp_path / "d").sort_by("id")["cce"].to_numpy(), want, np.float32)
    res = run("score", f"s3://{b}/run/", "-o", f"s3://{b}/ds/", "--engine", "dask", "--keep", "id", "-q")
    assert res.exit_code == 0, res.output
    parts = [k for k in s3.keys(b) if k.startswith("ds/")]
    assert parts and all(k.startswith("ds/part.") for k in parts) and not [k for k in s3.keys(b) if ".tmp-" in k]
    got = pa.concat_tables(pq.read_table(pa.BufferReader(_get(s3, f"{b}/{k}"))) for k in parts).sort_by("id")
    ref.assert_close(got["cce"].to_numpy(), want, np.float32)
    _one_line_error(run("score", f"s3://{b}/run/", "-o", f"s3://{b}/ds", "--engine", "dask", "-q"),
                    f"s3://{b}/ds", "exists; pass --overwrite")
    assert run("score", f"s3://{b}/run/", "-o", f"s3://{b}/ds", "--engine", "dask", "-q", "--overwrite").exit_code == 0
    assert sorted(k for k in s3.keys(b) if k.startswith("ds/")) == sorted(parts)
    _one_line_error(run("score", f"s3://{b}/run/", "-o", f"s3://{b}/run", "--engine", "dask", "-q", "--overwrite"),
                    "holds the input")
    _one_line_error(run("score", f"s3://{b}/run/", tmp_path / "in", "-o", tmp_path / "e", "--engine", "dask", "-q"),
                    "one place")
    assert not (tmp_path / "e").exists()
    bad = pq.read_table(SAMPLE).slice(0, 50)
    bad = bad.set_column(2, "label", pa.array([99] * 50))  # class 99 of 10: an invalid row
    buf = io.BytesIO()
    pq.write_table(bad, buf)
    _put(s3, f"{b}/bad/part-9.parquet", buf.getvalue())
    _one_line_error(run("score", f"s3://{b}/bad/", "-o", f"s3://{b}/ds2", "--engine", "dask", "-q"),
                    f"s3://{b}/bad/part-9.parquet", "row 0")
    assert sorted({k.split("/")[0] for k in s3.keys(b)}) == ["bad", "ds", "run"]


def test_csv_output_reads_back_as_the_local_one(tmp_path, s3):
    b = s3.bucket()
    local = _parts(tmp_path, s3, b)
    assert run("score", f"s3://{b}/run/", "-o", f"s3://{b}/c.csv", "--keep", "id", "-q").exit_code == 0
    run("score", local, "-o", tmp_path / "c.csv", "--keep", "id", "-q")
    assert pacsv.read_csv(pa.BufferReader(_get(s3, f"{b}/c.csv"))).equals(pacsv.read_csv(tmp_path / "c.csv"))
