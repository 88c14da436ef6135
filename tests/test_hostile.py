"""Hostile input, signals and races (issue 11, and the fail-fast / output-name parts of
issue 17): every file is generated here. Each test is one class of fault: the user's
files are never replaced or deleted unless they are this tool's own output and
--overwrite was given, every failure removes its temporary files, every output reads
back with as many rows as the input, and bad usage is one clear line with exit 2."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests import reference as ref
from xent_numba import io as xio
from xent_numba.cli.commands import app
from xent_numba.engine import local as pipeline
from xent_numba.errors import InvalidInputError
from xent_numba.io import outputs

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def xent(*args, **kw):
    """``xent`` in a real process (signals, stdout, timing)."""
    return subprocess.run([sys.executable, "-m", "xent_numba", *map(str, args)],
                          capture_output=True, env=env(), timeout=300, **kw)


def leftovers(*dirs) -> list[str]:
    return [p.name for d in dirs for p in Path(d).iterdir() if ".tmp-" in p.name]


def _probs(n, c, seed=0, dtype=np.float32):
    x = np.random.default_rng(seed).normal(size=(n, c))
    return (np.exp(x) / np.exp(x).sum(1, keepdims=True)).astype(dtype)


def dump(path, n=200, c=4, *, seed=0, dtype=np.float32, id_type=pa.int64(), row_group=64, extra=None):
    """A Parquet dump: id, pred (list of probabilities), label (int). Returns (p, y)."""
    p = _probs(n, c, seed, dtype)
    y = np.random.default_rng(seed + 1).integers(0, c, n)
    vtype = pa.from_numpy_dtype(dtype)
    pred = pa.FixedSizeListArray.from_arrays(pa.array(p.ravel(), vtype), c).cast(pa.list_(vtype))
    cols = {"id": pa.array(np.arange(n), pa.int64()).cast(id_type), "pred": pred, "label": y}
    cols.update(extra or {})
    pq.write_table(pa.table(cols), path, row_group_size=row_group)
    return p, y


def big_dump(path, n=400_000, c=8, logits=False):
    x = np.random.default_rng(3).normal(size=(n, c)).astype(np.float32)
    p = x if logits else np.full((n, c), 1 / c, dtype=np.float32)
    pred = pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), c).cast(pa.list_(pa.float32()))
    pq.write_table(pa.table({"pred": pred, "label": np.zeros(n, dtype=np.int64)}), path, row_group_size=4000)


def digest(path: Path) -> bytes:
    return path.read_bytes()


# ---- items 5, 6: OUTPUT is, contains or lies inside an INPUT -----------------------------


@pytest.mark.parametrize("how", ["same", "dot-slash", "symlink", "hardlink"])
def test_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path, monkeypatch, how):
    src = tmp_path / "in.parquet"
    dump(src)
    before = digest(src)
    monkeypatch.chdir(tmp_path)
    out = {"same": "in.parquet", "dot-slash": "./in.parquet", "symlink": "link.parquet", "hardlink": "hard.parquet"}[how]
    if how == "symlink":
        os.symlink(src, out)
    if how == "hardlink":
        os.link(src, out)
    res = run("score", "in.parquet", "-o", out, "--overwrite", "-q")
    assert res.exit_code == 2, res.output
    assert "is the input file" in res.output and "Traceback" not in res.output
    assert digest(src) == before and not leftovers(tmp_path)


def test_output_inside_an_input_directory_is_refused(tmp_path):
    d = tmp_path / "dumps"
    d.mkdir()
    dump(d / "a.parquet")
    res = run("score", d, "-o", d / "scores.parquet", "-q")
    assert res.exit_code == 2 and "lies inside the input directory" in res.output
    assert sorted(p.name for p in d.iterdir()) == ["a.parquet"]


def test_dask_overwrite_of_the_current_directory_deletes_nothing(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    proj = tmp_path / "proj"
    (proj / "dump").mkdir(parents=True)
    dump(proj / "dump" / "a.parquet")
    (proj / "notes.txt").write_text("mine")
    monkeypatch.chdir(proj)
    for out in (".", str(proj)):
        res = run("score", "dump", "-o", out, "--engine", "dask", "--overwrite", "-q")
        assert res.exit_code == 2 and "contains the input file" in res.output, res.output
    assert (proj / "notes.txt").read_text() == "mine" and (proj / "dump" / "a.parquet").exists()


def test_dask_overwrite_replaces_only_a_previous_output(tmp_path):
    pytest.importorskip("distributed")
    src = tmp_path / "in.parquet"
    dump(src)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    res = run("score", src, "-o", foreign, "--engine", "dask", "--overwrite", "-q")
    assert res.exit_code == 2 and "not replaced" in res.output, res.output
    assert (foreign / "thesis.tex").read_text() == "years of work"
    out = tmp_path / "scores"
    assert run("score", src, "-o", out, "--engine", "dask", "-q").exit_code == 0
    res = run("score", src, "-o", out, "--engine", "dask", "--overwrite", "-q", "--keep", "id")
    assert res.exit_code == 0, res.output
    assert pq.read_table(out).column_names == ["id", "cce"] and not leftovers(tmp_path)


# ---- item 7: --summary-json ----------------------------------------------------------------


def test_summary_json_follows_the_rules_of_output(tmp_path):
    src = tmp_path / "in.parquet"
    dump(src)
    before = digest(src)
    out = tmp_path / "o.parquet"
    existing = tmp_path / "s.json"
    existing.write_text("keep me")
    cases = [
        (existing, [], "exists"),
        (src, ["--overwrite"], "is the input file"),
        (tmp_path / "no" / "s.json", [], "does not exist"),
        (out, [], "is OUTPUT"),
    ]
    for path, extra, words in cases:
        res = run("score", src, "-o", out, "--summary-json", path, "-q", *extra)
        assert res.exit_code == 2 and words in res.output, (path, res.output)
        assert not out.exists(), "checked before the run starts"
    assert existing.read_text() == "keep me" and digest(src) == before
    assert not (tmp_path / "no").exists()
    res = run("score", src, "-o", out, "--summary-json", existing, "--overwrite", "-q")
    assert res.exit_code == 0
    assert json.loads(existing.read_text())["rows"] == 200 and not leftovers(tmp_path)


# ---- item 8: standard output and special files ---------------------------------------------


def test_dash_writes_csv_or_jsonl_to_stdout(tmp_path):
    src = tmp_path / "in.parquet"
    p, y = dump(src, n=50)
    want = ref.cce(p, y, dtype=np.float32)
    csv = xent("score", src, "-o", "-", "--format", "csv", "--keep", "id")
    assert csv.returncode == 0, csv.stderr
    got = pacsv.read_csv(pa.BufferReader(csv.stdout))
    assert got.column_names == ["id", "cce"]
    ref.assert_close(got["cce"].to_numpy(), want, np.float32)
    assert b"rows scored" in csv.stderr, "the tables go to stderr when the scores go to stdout"
    jl = xent("score", src, "-o", "-", "--format", "jsonl", "-q")
    rows = [json.loads(line) for line in jl.stdout.decode().splitlines()]
    ref.assert_close([r["cce"] for r in rows], want, np.float32)
    res = run("score", src, "-o", "-")
    assert res.exit_code == 2 and "--format csv" in res.output
    assert not (tmp_path / "-").exists()


def test_a_reader_that_closes_the_pipe_ends_the_run_quietly(tmp_path):
    """`xent score ... -o - | head -1`: the reader had enough; exit 141 (128 + SIGPIPE), as a
    shell tool would, with no error message."""
    src = tmp_path / "in.parquet"
    dump(src, n=200_000)  # more output than a pipe buffer holds
    proc = subprocess.Popen([sys.executable, "-m", "xent_numba", "score", str(src), "-o", "-",
                             "--format", "csv", "--keep", "id", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    assert proc.stdout.readline() == b'"id","cce"\n'
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert b"Error" not in err and b"Traceback" not in err


def test_dev_stdout_and_a_fifo_are_written_in_place(tmp_path):
    src = tmp_path / "in.parquet"
    p, y = dump(src, n=40)
    # /dev/stdout itself without --overwrite (code that renames over it refuses then: the
    # test never puts the machine's /dev/stdout at risk), a symlink to it with --overwrite
    link = tmp_path / "stdout-link"
    os.symlink("/proc/self/fd/1", link)
    for target, extra in (("/dev/stdout", []), (str(link), ["--overwrite"])):
        sink = tmp_path / "captured.csv"
        with open(sink, "wb") as f:
            proc = subprocess.run([sys.executable, "-m", "xent_numba", "score", str(src), "-o", target,
                                   "--format", "csv", "-q", *extra], stdout=f, stderr=subprocess.PIPE,
                                  env=env(), timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert os.path.islink(target) and os.readlink(link) == "/proc/self/fd/1"
        ref.assert_close(pacsv.read_csv(sink)["cce"].to_numpy(), ref.cce(p, y, dtype=np.float32), np.float32)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("data", open(fifo, "rb").read()))
    reader.start()
    proc = xent("score", src, "-o", fifo, "--format", "jsonl", "-q")
    reader.join(60)
    assert proc.returncode == 0, proc.stderr
    assert fifo.is_fifo() and len(got["data"].splitlines()) == 40


# ---- item 9: two runs racing for one new OUTPUT -----------------------------------------


@pytest.mark.parametrize("rename", ["renameat2", "link"])
def test_output_that_appears_during_the_run_is_not_replaced(tmp_path, monkeypatch, rename):
    if rename == "link":
        monkeypatch.setattr(outputs, "_renameat2", lambda src, dst: False)
    src = tmp_path / "in.parquet"
    dump(src)
    out = tmp_path / "o.parquet"
    with pytest.raises(InvalidInputError, match="appeared while this run was writing"):
        pipeline.score_files([src], out, pipeline.ScoreOptions(), on_start=lambda total: out.write_text("the other run"))
    assert out.read_text() == "the other run" and not leftovers(tmp_path)


def test_dask_output_that_appears_during_the_run_is_not_replaced(tmp_path):
    pytest.importorskip("distributed")
    from xent_numba.engine import dask as xd

    src = tmp_path / "in.parquet"
    dump(src)
    out = tmp_path / "o"

    def other_run(total):
        out.mkdir()
        (out / "part.00000.parquet").write_text("the other run")

    with pytest.raises(InvalidInputError, match="appeared"):
        xd.score_files([src], out, pipeline.ScoreOptions(), on_start=other_run)
    assert (out / "part.00000.parquet").read_text() == "the other run" and not leftovers(tmp_path)


# ---- item 10: signals, a second Ctrl-C, a close that raises, a full disk -----------------


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
@pytest.mark.parametrize("engine", ["local", "dask"])
def test_signals_remove_the_temporary_output(tmp_path, sig, code, engine):
    if engine == "dask":
        pytest.importorskip("distributed")
        if sig == signal.SIGHUP:
            pytest.skip("SIGINT and SIGTERM cover the Dask engine's cleanup")
    src = tmp_path / "big.parquet"
    big_dump(src)
    out = tmp_path / ("o" if engine == "dask" else "o.csv")
    args = [sys.executable, "-m", "xent_numba", "score", str(src), "-o", str(out), "--engine", engine]
    if engine == "local":
        args += ["--batch-rows", "500"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    deadline = time.time() + 120
    while not leftovers(tmp_path):  # wait until it is writing
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    if sig == signal.SIGINT:
        time.sleep(0.01)
        proc.send_signal(sig)  # a second Ctrl-C during the cleanup
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Interrupted" in err
    assert not out.exists() and not leftovers(tmp_path)


def test_ctrl_c_at_start_up_is_never_swallowed(tmp_path):
    """Whenever the Ctrl-C lands (imports, loading kernels, the first batch), the run
    stops with 130 and writes nothing; it never finishes with exit 0."""
    src = tmp_path / "in.parquet"
    dump(src, n=20_000, row_group=1000)
    for delay in (0.3, 0.8, 1.2, 1.6, 2.0, 2.5, 3.0):
        out = tmp_path / f"o{delay}.parquet"
        proc = subprocess.Popen([sys.executable, "-m", "xent_numba", "score", str(src), "-o", str(out), "-q"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:  # finished before the signal: allowed only with a complete output
            assert pq.read_table(out).num_rows == 20_000
            continue
        # 130; or, while Python imports the package, Python's own death by SIGINT (the
        # shell reports it as 130 too)
        assert proc.returncode in (130, -signal.SIGINT), err
        assert not out.exists() and not leftovers(tmp_path)


def test_abort_removes_the_temporary_file_when_close_raises(tmp_path):
    w = xio.AtomicWriter(str(tmp_path / "o.parquet"), "parquet", overwrite=False)
    w.write(pa.record_batch({"cce": pa.array([1.0])}))
    w._flush(pa.schema({"cce": pa.float64()}))

    def boom():
        raise OSError(errno.EIO, "I/O error")

    w._writer.close = boom
    w._file.close = boom
    w.abort()
    assert not leftovers(tmp_path)
    w._writer.close = w._file.close = lambda: None  # the finalisers close again


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl", "arrow"])
def test_full_disk_is_exit_2_and_leaves_nothing(tmp_path, monkeypatch, fmt):
    src = tmp_path / "in.parquet"
    dump(src)
    real_flush = xio.AtomicWriter._flush

    def full(self, schema):
        real_flush(self, schema)
        raise xio.write_error(self.path, OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(xio.AtomicWriter, "_flush", full)
    res = run("score", src, "-o", tmp_path / f"o.{fmt}", "--format", fmt, "-q")
    assert res.exit_code == 2 and "disk full" in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 KiB tmpfs (root only; skipped elsewhere)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_on_a_real_tiny_filesystem(tmp_path, tiny_tmpfs):
    src = tmp_path / "in.parquet"
    dump(src, n=100_000, row_group=10_000)
    res = run("score", src, "-o", tiny_tmpfs / "o.csv", "--keep", "id", "-q")
    assert res.exit_code == 2 and "disk full" in res.output, res.output
    assert list(tiny_tmpfs.iterdir()) == [], "the partial file is removed: the disk is free again"


def test_dask_failure_creates_no_folders(tmp_path):
    pytest.importorskip("distributed")
    src = tmp_path / "in.parquet"
    dump(src)
    res = run("score", src, "-o", tmp_path / "new" / "deep" / "out", "--engine", "dask", "-q")
    assert res.exit_code == 2 and "does not exist" in res.output
    assert not (tmp_path / "new").exists()
    bad = tmp_path / "bad.parquet"
    p, y = dump(bad, n=100)
    t = pq.read_table(bad)
    pq.write_table(t.set_column(2, "label", pa.array(np.full(100, 99))), bad)
    res = run("score", bad, "-o", tmp_path / "out", "--engine", "dask", "-q")
    assert res.exit_code == 2 and not (tmp_path / "out").exists() and not leftovers(tmp_path)


# ---- item 11 / issue 17: fail fast ---------------------------------------------------------


def test_an_error_ends_the_run_sooner_than_a_success(tmp_path):
    """Forgetting --from-logits is found in the first batch: that run must end before the
    successful run on the same file ends (it used to wait on the writer thread). Timed
    in this process, with both kernels loaded first, so start-up does not blur it."""
    src = tmp_path / "logits.parquet"
    big_dump(src, n=300_000, c=10, logits=True)
    good_opts, bad_opts = pipeline.ScoreOptions(from_logits=True), pipeline.ScoreOptions()

    def timed(opts, out):
        t0 = time.perf_counter()
        try:
            pipeline.score_files([src], tmp_path / out, opts)
        except InvalidInputError as e:
            assert "probability" in str(e)
        return time.perf_counter() - t0

    timed(good_opts, "warm.parquet"), timed(bad_opts, "warm-bad.parquet")
    good = timed(good_opts, "ok.parquet")
    failed = timed(bad_opts, "bad.parquet")
    assert failed < good, (failed, good)
    assert not (tmp_path / "bad.parquet").exists() and not leftovers(tmp_path)


def test_stages_stop_at_once_on_an_error(tmp_path, monkeypatch):
    """In-process: the error reaches the caller without waiting on the writer's join."""
    src = tmp_path / "in.parquet"
    dump(src, n=2000, row_group=100)
    t = pq.read_table(src)
    pq.write_table(t.set_column(2, "label", pa.array(np.r_[np.zeros(1500, int), np.full(500, 9)])), src,
                   row_group_size=100)
    out = tmp_path / "o.parquet"
    pipeline.score_files([src], out, pipeline.ScoreOptions(on_invalid="null"), batch_rows=100)  # warm
    t0 = time.perf_counter()
    with pytest.raises(InvalidInputError, match="row 1500"):
        pipeline.score_files([src], tmp_path / "o2.parquet", pipeline.ScoreOptions(), batch_rows=100)
    assert time.perf_counter() - t0 < 2.5
    assert not (tmp_path / "o2.parquet").exists() and not leftovers(tmp_path)


# ---- items 12, 13: outputs read back -------------------------------------------------------


def test_csv_one_column_nulls_keep_their_rows(tmp_path):
    src = tmp_path / "in.parquet"
    p, y = dump(src, n=30)
    y = y.copy()
    y[[0, 1, 2, 7, 29]] = 99  # out of range: null with --on-invalid null
    t = pq.read_table(src)
    pq.write_table(t.set_column(2, "label", pa.array(y)), src)
    out = tmp_path / "o.csv"
    assert run("score", src, "-o", out, "--on-invalid", "null", "-q").exit_code == 0
    want = ref.cce(p, np.where(y == 99, 0, y), dtype=np.float32)
    want[y == 99] = np.nan
    for got in (pacsv.read_csv(out)["cce"].to_numpy(zero_copy_only=False), pd.read_csv(out)["cce"].to_numpy()):
        assert len(got) == 30
        assert np.array_equal(np.isnan(got), y == 99)
        ref.assert_close(got[y != 99], want[y != 99], np.float32)


def test_jsonl_infinite_losses_read_back_in_report(tmp_path):
    from xent_numba.analysis.report import load_scores

    c = 3
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25], [0.0, 1.0, 0.0]])
    y = np.array([1, 0, 1])
    pred = pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), c).cast(pa.list_(pa.float64()))
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"pred": pred, "label": y}), src)
    out = tmp_path / "o.jsonl"
    assert run("score", src, "-o", out, "--eps", "none", "-q").exit_code == 0
    want = ref.cce(p, y, eps="none")
    assert np.isinf(want[0])
    losses, _, _ = load_scores(out)
    for got in (losses["cce"], pajson.read_json(out)["cce"].to_numpy(), pd.read_json(out, lines=True)["cce"].to_numpy()):
        assert np.isposinf(got[0])
        ref.assert_close(got[1:], want[1:], np.float64)
    res = run("report", out, "-o", tmp_path / "r.html")
    assert res.exit_code == 0, res.output


# ---- item 14: mixed schemas across files ---------------------------------------------------


def test_mixed_numeric_schemas_are_widened(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pa_, ya = dump(a, n=100, dtype=np.float32, id_type=pa.int32(), seed=1)
    pb, yb = dump(b, n=80, dtype=np.float64, id_type=pa.int64(), seed=2)
    out = tmp_path / "o.parquet"
    res = run("score", a, b, "-o", out, "--keep", "id", "-q")
    assert res.exit_code == 0, res.output
    got = pq.read_table(out)
    assert got.schema.field("id").type == pa.int64() and got.schema.field("cce").type == pa.float64()
    want = ref.cce(np.vstack([pa_.astype(np.float64), pb]), np.r_[ya, yb])
    ref.assert_close(got["cce"].to_numpy(), want, np.float64)


def test_mixed_incompatible_schemas_name_both_files_and_the_column(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    dump(a, n=50)
    dump(b, n=50, id_type=pa.string())
    res = run("score", a, b, "-o", tmp_path / "o.parquet", "--keep", "id", "-q")
    assert res.exit_code == 2, res.output
    assert "a.parquet" in res.output and "b.parquet" in res.output and "'id'" in res.output
    assert not (tmp_path / "o.parquet").exists()


def test_dask_mixed_schemas_widened_or_refused(tmp_path):
    pytest.importorskip("distributed")
    d = tmp_path / "d"
    d.mkdir()
    pa_, ya = dump(d / "a.parquet", n=100, dtype=np.float32, id_type=pa.int32(), seed=1)
    pb, yb = dump(d / "b.parquet", n=80, dtype=np.float64, seed=2)
    out = tmp_path / "o"
    res = run("score", d, "-o", out, "--engine", "dask", "--keep", "id", "-q")
    assert res.exit_code == 0, res.output
    got = pq.read_table(out)  # one schema: pyarrow reads the dataset
    want = ref.cce(np.vstack([pa_.astype(np.float64), pb]), np.r_[ya, yb])
    ref.assert_close(got["cce"].to_numpy(), want, np.float64)
    dump(d / "c.parquet", n=10, id_type=pa.string())
    res = run("score", d, "-o", tmp_path / "o2", "--engine", "dask", "--keep", "id", "-q")
    assert res.exit_code == 2 and "c.parquet" in res.output and "'id'" in res.output
    assert not (tmp_path / "o2").exists()


# ---- item 15: literal names first ----------------------------------------------------------


def test_existing_names_with_glob_characters_are_literal(tmp_path):
    literal = tmp_path / "run[1].parquet"
    other = tmp_path / "run1.parquet"  # what the glob run[1].parquet would match
    p, y = dump(literal, n=30, seed=5)
    dump(other, n=70, seed=6)
    out = tmp_path / "o.parquet"
    assert run("score", literal, "-o", out, "-q").exit_code == 0
    ref.assert_close(pq.read_table(out)["cce"].to_numpy(), ref.cce(p, y, dtype=np.float32), np.float32)
    assert xio.expand_inputs([str(tmp_path / "run[0-9].parquet")]) == [str(other)]


# ---- everything else -----------------------------------------------------------------------


def test_huge_numbers_in_options(tmp_path):
    src = tmp_path / "in.parquet"
    p, y = dump(src)
    res = run("score", src, "-o", tmp_path / "a.parquet", "--ignore-index", "99999999999999999999", "-q")
    assert res.exit_code == 2 and "--ignore-index" in res.output and "Traceback" not in res.output
    for opt in ("--batch-rows", "--threads"):
        out = tmp_path / f"{opt[2:]}.parquet"
        res = run("score", src, "-o", out, opt, "10000000000000", "-q")
        assert res.exit_code == 0, res.output
        ref.assert_close(pq.read_table(out)["cce"].to_numpy(), ref.cce(p, y, dtype=np.float32), np.float32)


def test_read_only_output_folder(tmp_path, monkeypatch):
    src = tmp_path / "in.parquet"
    dump(src)

    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(outputs, "open", denied, raising=False)
    res = run("score", src, "-o", tmp_path / "o.parquet", "-q")
    assert res.exit_code == 2 and "Permission denied" in res.output and "Traceback" not in res.output


def test_read_only_filesystem(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        src = tmp_path / "in.parquet"
        dump(src)
        res = run("score", src, "-o", mnt / "o.parquet", "-q")
        assert res.exit_code == 2 and ("not writable" in res.output or "Read-only" in res.output), res.output
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_batch_rows_1_does_not_write_a_row_group_per_row(tmp_path):
    src = tmp_path / "in.parquet"
    p, y = dump(src, n=3000, row_group=1000)
    out = tmp_path / "o.parquet"
    assert run("score", src, "-o", out, "--batch-rows", "1", "-q").exit_code == 0
    meta = pq.ParquetFile(out).metadata
    assert meta.num_rows == 3000 and meta.num_row_groups == 1
    ref.assert_close(pq.read_table(out)["cce"].to_numpy(), ref.cce(p, y, dtype=np.float32), np.float32)


# ---- issue 17: output names ----------------------------------------------------------------


def test_duplicate_keep_names_are_written_once(tmp_path):
    src = tmp_path / "in.parquet"
    p, y = dump(src)
    out = tmp_path / "o.parquet"
    assert run("score", src, "-o", out, "--keep", "id", "--keep", "label", "--keep", "id", "-q").exit_code == 0
    got = pq.read_table(out)
    assert got.column_names == ["id", "label", "cce"]
    ref.assert_close(got["cce"].to_numpy(), ref.cce(p, y, dtype=np.float32), np.float32)


@pytest.mark.parametrize("loss,name", [("cce", "cce"), ("both", "bce")])
def test_kept_column_named_like_a_loss_is_refused(tmp_path, loss, name):
    src = tmp_path / "in.parquet"
    dump(src, extra={name: np.zeros(200)})
    res = run("score", src, "-o", tmp_path / "o.parquet", "--keep", name, "--loss", loss, "-q")
    assert res.exit_code == 2 and f"'{name}'" in res.output and "loss column" in res.output
    assert not (tmp_path / "o.parquet").exists()


def test_list_column_kept_into_csv_is_refused_up_front(tmp_path):
    src = tmp_path / "in.parquet"
    dump(src)
    res = run("score", src, "-o", tmp_path / "o.csv", "--keep", "pred", "-q")
    assert res.exit_code == 2 and "'pred'" in res.output and "CSV cannot hold" in res.output
    assert not (tmp_path / "o.csv").exists() and not leftovers(tmp_path)
    out = tmp_path / "o.jsonl"  # JSON Lines holds lists
    assert run("score", src, "-o", out, "--keep", "pred", "-q").exit_code == 0
    assert len(json.loads(out.read_text().splitlines()[0])["pred"]) == 4


def test_tiny_batches_are_gathered_into_one_object(tmp_path):
    """Memory stays flat with --batch-rows 1: the writer does not hold one Arrow object per
    row until it has a row group's worth (at most ``_PENDING_BATCHES`` wait)."""
    w = xio.AtomicWriter(str(tmp_path / "o.parquet"), "parquet", overwrite=False)
    one = pa.record_batch({"cce": pa.array([1.5])})
    for _ in range(10_000):
        w.write(one)
        assert len(w._pending) <= outputs._PENDING_BATCHES
    w.commit(one.schema)
    assert pq.ParquetFile(tmp_path / "o.parquet").metadata.num_row_groups == 1
    assert pq.read_table(tmp_path / "o.parquet")["cce"].to_pylist() == [1.5] * 10_000
