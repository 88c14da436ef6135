"""Hostile outputs: where the scores go and how they are written. Ordinary files under /dev
(the /dev/shm tmpfs) get the same safe write as anywhere else; a reader that closes a pipe
early ends a JSON Lines run like a CSV one; CSV and JSON Lines write a float in the same
shortest round-trip text; binary --keep columns are decoded as UTF-8 or refused by column
and row; --summary-json is strict JSON and records what was run. Every file is generated
here."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import uuid
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests import reference as ref
from xent_numba import __version__
from xent_numba import io as xio
from xent_numba.cli.commands import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def leftovers(*dirs) -> list[str]:
    return [p.name for d in dirs for p in Path(d).iterdir() if ".tmp-" in p.name]


def dump(path, n=200, c=4, *, seed=0, dtype=np.float32, extra=None, p=None, y=None):
    """A Parquet dump: id, pred (list of probabilities), label (int). Returns (p, y)."""
    if p is None:
        x = np.random.default_rng(seed).normal(size=(n, c))
        p = (np.exp(x) / np.exp(x).sum(1, keepdims=True)).astype(dtype)
        y = np.random.default_rng(seed + 1).integers(0, c, n)
    n, c = p.shape
    vtype = pa.from_numpy_dtype(p.dtype)
    pred = pa.FixedSizeListArray.from_arrays(pa.array(p.ravel(), vtype), c).cast(pa.list_(vtype))
    cols = {"id": pa.array(np.arange(n), pa.int64()), "pred": pred, "label": y}
    cols.update(extra or {})
    pq.write_table(pa.table(cols), path, row_group_size=64)
    return p, y


def arrow_dump(path, extra, n):
    """An Arrow IPC dump (keeps every column type as written: dictionary, large_binary ...)."""
    x = np.random.default_rng(0).normal(size=(n, 3))
    p = (np.exp(x) / np.exp(x).sum(1, keepdims=True)).astype(np.float32)
    pred = pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), 3).cast(pa.list_(pa.float32()))
    table = pa.table({"pred": pred, "label": np.zeros(n, dtype=np.int64), **extra})
    with pa.ipc.new_file(path, table.schema) as w:
        w.write_table(table)


@pytest.fixture
def shm():
    """A fresh folder on the /dev/shm tmpfs (skipped where there is none)."""
    root = Path("/dev/shm")
    if not (root.is_dir() and os.access(root, os.W_OK | os.X_OK)):
        pytest.skip("/dev/shm is not a writable directory here")
    d = root / f"xent-test-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ---- item 1: an ordinary file is ordinary wherever it lies --------------------------------


def test_special_is_decided_by_type_not_by_folder(shm, tmp_path):
    plain = shm / "o.parquet"
    plain.write_bytes(b"x")
    assert not xio.is_special(plain), "a regular file on /dev/shm"
    assert not xio.is_special(shm / "new.parquet"), "a new name on /dev/shm"
    assert not xio.is_special(shm), "a directory"
    fifo = shm / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "stdout-link"
    os.symlink("/proc/self/fd/1", link)
    chain = tmp_path / "chain"
    os.symlink(link, chain)
    fd_dir = tmp_path / "fds"
    os.symlink("/proc/self/fd", fd_dir)
    for path in (fifo, "/dev/null", "/dev/stdout", "/dev/stderr", "/dev/fd/1", "/proc/self/fd/1",
                 f"/proc/{os.getpid()}/fd/2", link, chain, fd_dir / "1"):
        assert xio.is_special(path), path
    to_file = tmp_path / "to-plain"
    os.symlink(plain, to_file)
    assert not xio.is_special(to_file), "a symlink to a regular file is a regular file"


def test_second_run_into_dev_shm_is_refused_and_the_file_kept(shm):
    src = shm / "in.parquet"
    dump(src)
    out = shm / "o.parquet"
    assert run("score", src, "-o", out, "-q").exit_code == 0
    before = out.read_bytes()
    res = run("score", src, "-o", out, "-q")
    assert res.exit_code == 2 and "exists" in res.output, res.output
    assert out.read_bytes() == before and pq.read_table(out).num_rows == 200
    assert not leftovers(shm)


@pytest.mark.parametrize("ext", [".parquet", ".csv"])
def test_overwrite_in_dev_shm_replaces_not_appends(shm, ext):
    src = shm / "in.parquet"
    dump(src)
    out = shm / f"o{ext}"
    assert run("score", src, "-o", out, "-q").exit_code == 0
    first = out.read_bytes()
    res = run("score", src, "-o", out, "--keep", "id", "--overwrite", "-q")
    assert res.exit_code == 0, res.output
    got = pq.read_table(out) if ext == ".parquet" else pacsv.read_csv(out)
    assert got.column_names == ["id", "cce"] and got.num_rows == 200
    assert got["id"].to_pylist() == list(range(200))
    assert out.read_bytes() != first and not leftovers(shm)


def test_failed_run_into_dev_shm_leaves_nothing(shm):
    src = shm / "in.parquet"
    p, y = dump(src)
    p[150] = [1.5, -0.5, 0.0, 0.0]  # not a probability vector
    dump(src, p=p, y=y)
    out = shm / "o.csv"
    res = run("score", src, "-o", out, "-q")
    assert res.exit_code == 2 and "row 150" in res.output, res.output
    assert not out.exists() and not leftovers(shm)


def test_output_naming_the_input_in_dev_shm_is_refused(shm, monkeypatch):
    src = shm / "in.parquet"
    dump(src)
    before = src.read_bytes()
    monkeypatch.chdir(shm)
    for name in (src, "in.parquet", "./in.parquet"):
        res = run("score", src, "-o", name, "--format", "parquet", "--overwrite", "-q")
        assert res.exit_code == 2 and "is the input file" in res.output, res.output
    assert src.read_bytes() == before and pq.read_table(src).num_rows == 200
    assert not leftovers(shm)


def test_fifo_and_dev_null_are_still_written_in_place(shm):
    src = shm / "in.parquet"
    dump(src, n=40)
    fifo = shm / "pipe"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("data", open(fifo, "rb").read()))
    reader.start()
    res = run("score", src, "-o", fifo, "--format", "csv", "-q")
    reader.join(60)
    assert res.exit_code == 0, res.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and len(got["data"].splitlines()) == 41
    assert not leftovers(shm)
    res = run("score", src, "-o", "/dev/null", "--format", "jsonl", "-q")
    assert res.exit_code == 0, res.output
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# ---- item 2: a reader that closes the pipe early ----------------------------------------


def test_both_text_formats_exit_141_when_the_reader_closes_the_pipe(tmp_path):
    src = tmp_path / "in.parquet"
    dump(src, n=60_000)  # megabytes of text (many pipe buffers) in one write (under WRITE_ROWS)
    results = {}
    for fmt in ("csv", "jsonl"):
        proc = subprocess.Popen([sys.executable, "-m", "xent_numba", "score", str(src), "-o", "-",
                                 "--format", fmt, "--keep", "id", "-q"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
        for _ in range(3):
            assert proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read()
        results[fmt] = (proc.wait(timeout=120), err)
    assert results["csv"][0] == 141, results
    assert results["jsonl"] == results["csv"], results
    assert b"Error" not in results["jsonl"][1] and b"Traceback" not in results["jsonl"][1]


class _ShortWrites:
    """A file whose ``write`` takes at most 1,000 bytes and says so (as a buffered file does
    when the reader of a pipe went away part-way through)."""

    def __init__(self):
        self.data = bytearray()

    def write(self, data):
        data = bytes(memoryview(data).cast("B"))[:1000]
        self.data += data
        return len(data)

    def flush(self):
        pass


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_short_write_is_never_taken_for_a_whole_one(fmt, monkeypatch):
    sink = _ShortWrites()
    table = pa.table({"id": np.arange(5000), "cce": np.linspace(0, 1, 5000)})
    writer = xio.Csv(sink, table.schema) if fmt == "csv" else xio.JsonLines(sink)
    writer.write_table(table)
    writer.close()
    lines = bytes(sink.data).decode().splitlines()
    assert len(lines) == 5000 + (fmt == "csv")


# ---- item 3: one float, one text -----------------------------------------------------------


def _csv_texts(path: Path, column: str) -> list[str]:
    lines = path.read_text().splitlines()
    k = [h.strip('"') for h in lines[0].split(",")].index(column)
    return [line.split(",")[k] for line in lines[1:]]


def _jsonl_texts(path: Path, column: str) -> list[str]:
    pat = re.compile(rf'"{column}": ([^,}}]+)')
    return [pat.search(line).group(1) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_csv_and_jsonl_write_each_float_in_its_shortest_round_trip_text(tmp_path, dtype):
    src = tmp_path / "in.parquet"
    dump(src, n=300, dtype=dtype)
    outs = {}
    for ext in ("parquet", "csv", "jsonl"):
        outs[ext] = tmp_path / f"o.{ext}"
        res = run("score", src, "-o", outs[ext], "--loss", "both", "--keep", "id", "-q")
        assert res.exit_code == 0, res.output
    exact = pq.read_table(outs["parquet"])
    for loss in ("cce", "bce"):
        values = exact[loss].to_numpy()
        assert values.dtype == dtype
        csv, jl = _csv_texts(outs["csv"], loss), _jsonl_texts(outs["jsonl"], loss)
        assert csv == jl, "the same text in both formats"
        for text, v in zip(jl, values, strict=True):
            assert dtype(text) == v, (text, v)
            assert Decimal(text) == Decimal(str(v)), "the shortest text of its dtype (NumPy's repr)"
    assert _jsonl_texts(outs["jsonl"], "id") == [str(i) for i in range(300)]


def test_jsonl_values_keep_their_documented_forms(tmp_path):
    strings = ['plain', 'q"uote', "back\\slash", "new\nline", "tab\t", "ctl\x01", "del\x7f", "é", "日本", "😀", "", None]
    n = len(strings)
    big = [2**63 - 1, -(2**63), 2**53 + 1] + list(range(n - 3))
    p = np.full((n, 3), 1 / 3)
    p[0] = [0.0, 1.0, 0.0]  # label 0 has p = 0: inf with --eps none
    p[1] = [np.nan, 0.5, 0.5]  # invalid: a null loss with --on-invalid null
    y = np.zeros(n, dtype=np.int64)
    lists = pa.array([[0.1, float("nan"), float("inf")], None, []] + [[1.5]] * (n - 3), pa.list_(pa.float32()))
    struct = pa.array([{"a": 1, "b": "x\"y"}, None] + [{"a": i, "b": None} for i in range(n - 2)])
    src = tmp_path / "in.parquet"
    dump(src, p=p, y=y, extra={"big": pa.array(big, pa.int64()), "s": pa.array(strings),
                               "l": lists, "st": struct})
    out = tmp_path / "o.jsonl"
    res = run("score", src, "-o", out, "--eps", "none", "--on-invalid", "null",
              "--keep", "big", "--keep", "s", "--keep", "l", "--keep", "st", "-q")
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert len(lines) == n
    rows = [json.loads(line) for line in lines]  # Infinity is the documented token
    assert lines[0].endswith('"cce": Infinity}') and rows[0]["cce"] == math.inf
    assert lines[1].endswith('"cce": null}')
    assert [r["big"] for r in rows] == big, "int64 ids exact"
    for line, s in zip(lines, strings, strict=True):
        assert f'"s": {json.dumps(s)}, ' in line, "escaped exactly as json.dumps does"
    assert '"l": [0.1, null, Infinity]' in lines[0], "list floats in their shortest float32 form, NaN null"
    assert rows[1]["l"] is None and rows[2]["l"] == [] and rows[3]["l"] == [1.5]
    assert rows[0]["st"] == {"a": 1, "b": 'x"y'} and rows[1]["st"] is None and rows[2]["st"] == {"a": 0, "b": None}


# ---- item 4: binary --keep columns into text formats -------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_binary_keep_columns_are_decoded_as_utf8(tmp_path, fmt):
    n = 6
    text = ["a", "é", 'q"', None, "日本", ""]
    enc = [None if t is None else t.encode() for t in text]
    extra = {
        "bin": pa.array(enc, pa.binary()),
        "lbin": pa.array(enc, pa.large_binary()),
        "lstr": pa.array(text, pa.large_string()),
        "dstr": pa.array(text).dictionary_encode(),
        "dbin": pa.array(enc, pa.binary()).dictionary_encode(),
    }
    src = tmp_path / "in.arrow"
    arrow_dump(src, extra, n)
    out = tmp_path / f"o.{fmt}"
    keep = [a for k in extra for a in ("--keep", k)]
    res = run("score", src, "-o", out, *keep, "-q")
    assert res.exit_code == 0, res.output
    if fmt == "csv":
        got = pacsv.read_csv(out, convert_options=pacsv.ConvertOptions(
            column_types={k: pa.string() for k in extra}, strings_can_be_null=True, quoted_strings_can_be_null=False))
        for k in extra:
            assert got[k].to_pylist() == text, k
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        for k in extra:
            assert [r[k] for r in rows] == text, k
        assert "b'" not in out.read_text()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("kind", ["binary", "large_binary", "dictionary", "list"])
def test_binary_that_is_not_utf8_is_refused_by_column_and_row(tmp_path, fmt, kind):
    if kind == "list" and fmt == "csv":
        pytest.skip("CSV refuses list columns before the run")
    n = 300
    enc = [f"r{i}".encode() for i in range(n)]
    enc[237] = b"\xff\xfe"
    make = {
        "binary": lambda v: pa.array(v, pa.binary()),
        "large_binary": lambda v: pa.array(v, pa.large_binary()),
        "dictionary": lambda v: pa.array(v, pa.binary()).dictionary_encode(),
        "list": lambda v: pa.array([[x] for x in v], pa.list_(pa.binary())),
    }[kind]
    a, b = tmp_path / "a.arrow", tmp_path / "b.arrow"
    arrow_dump(a, {"note": make([b"x"] * 100)}, 100)
    arrow_dump(b, {"note": make(enc)}, n)
    out = tmp_path / f"o.{fmt}"
    res = run("score", a, b, "-o", out, "--keep", "note", "--batch-rows", "50", "-q")
    assert res.exit_code == 2, res.output
    assert "row 337" in res.output and "'note'" in res.output and "UTF-8" in res.output, res.output
    assert "unexpected" not in res.output
    assert not out.exists() and not leftovers(tmp_path)


def test_csv_keeps_a_string_view_column(tmp_path):
    src = tmp_path / "in.arrow"
    arrow_dump(src, {"v": pa.array(["x", None, "z"], pa.string_view())}, 3)
    out = tmp_path / "o.csv"
    res = run("score", src, "-o", out, "--keep", "v", "-q")
    assert res.exit_code == 0, res.output
    opts = pacsv.ConvertOptions(strings_can_be_null=True)
    assert pacsv.read_csv(out, convert_options=opts)["v"].to_pylist() == ["x", None, "z"]


# ---- item 5: --summary-json is strict JSON and says what was run -----------------------------


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_summary_json_is_strict_and_records_the_run(tmp_path):
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
    y = np.array([1, 0, 2])
    src = tmp_path / "in.parquet"
    dump(src, p=p, y=y)
    out, summary = tmp_path / "o.parquet", tmp_path / "s.json"
    res = run("score", src, "-o", out, "--eps", "none", "--loss", "cce", "--log-base", "2",
              "--summary-json", summary, "--keep", "id")
    assert res.exit_code == 0, res.output
    s = _strict(summary.read_text())
    cce = s["losses"]["cce"]
    assert cce["max"] == "Infinity" and cce["mean"] == "Infinity" and cce["count"] == 3
    assert cce["min"] == pytest.approx(ref.cce(p, y, eps="none", log_base=2)[1])
    assert s["version"] == __version__
    assert s["inputs"] == {"given": [str(src)], "files": 1}
    assert s["output"] == str(out) and s["format"] == "parquet"
    assert s["engine"] == "local" and s["device"] == "cpu"
    opts = s["options"]
    assert opts["loss"] == "cce" and opts["eps"] == "none" and opts["log_base"] == 2.0
    for key in ("from_logits", "label_smoothing", "class_weight", "pos_weight", "ignore_index",
                "bce_reduce", "normalize", "on_invalid", "keep", "pred", "label"):
        assert key in opts, key
    assert opts["keep"] == ["id"] and opts["on_invalid"] == "error"
    q = cce["quantiles"]
    assert q["exact"] is False and "sketch" in q["method"] and 0 < q["relative_error"] < 0.01
    for words in ("median~", "p95~", "approximate"):
        assert words in res.stdout, res.stdout


def test_summary_json_writes_nan_as_a_string():
    from xent_numba.cli import commands as cli

    assert cli._strict_json({"a": [math.nan, -math.inf, 1.5, {"b": math.inf}], "c": None}) == {
        "a": ["NaN", "-Infinity", 1.5, {"b": "Infinity"}], "c": None}
