"""`xent score` through Typer's CliRunner and real subprocesses: layouts, formats, kept
columns, multi-batch and multi-file inputs, every error case, --overwrite, interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import xent_numba as xn
from tests import reference as ref
from xent_numba.cli.commands import app

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def no_leftovers(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if ".tmp-" in p.name]


def read_any(path: Path) -> pa.Table:
    ext = path.suffix
    if ext == ".parquet":
        return pq.read_table(path)
    if ext == ".csv":
        return pacsv.read_csv(path)
    if ext in (".jsonl", ".ndjson"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return pa.Table.from_pylist(rows)
    return feather.read_table(path)


def _dump(path: Path, n=300, c=5, *, layout="list", label="index", logits=False, seed=0, row_group=64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c))
    p = x if logits else np.exp(x) / np.exp(x).sum(1, keepdims=True)
    y = rng.integers(0, c, n)
    cols = {"id": np.arange(n) * 10, "note": [f"r{i}" for i in range(n)]}
    flat = pa.array(p.astype(np.float32).ravel())
    if layout == "wide":
        for j in range(c):
            cols[f"p_{j}"] = p[:, j].astype(np.float32)
    else:
        fsl = pa.FixedSizeListArray.from_arrays(flat, c)
        cols["pred"] = fsl if layout == "fixed_size_list" else fsl.cast(pa.list_(pa.float32()))
    if label == "index":
        cols["label"] = y
    else:
        onehot = pa.FixedSizeListArray.from_arrays(pa.array(np.eye(c, dtype=np.float32)[y].ravel()), c)
        cols["label"] = onehot if layout == "fixed_size_list" else onehot.cast(pa.list_(pa.float32()))
    table = pa.table(cols)
    pq.write_table(table, path, row_group_size=row_group)
    return p.astype(np.float32), y


@pytest.mark.parametrize("layout,label", [("list", "index"), ("fixed_size_list", "index"), ("wide", "index"),
                                          ("list", "dense"), ("fixed_size_list", "dense")])
@pytest.mark.parametrize("logits", [False, True])
def test_layouts_match_api(tmp_path, layout, label, logits):
    src = tmp_path / "in.parquet"
    p, y = _dump(src, layout=layout, label=label, logits=logits)
    out = tmp_path / "out.parquet"
    args = ["score", src, "-o", out, "--loss", "both", "--keep", "id", "--batch-rows", "50", "-q"]
    if layout == "wide":
        args += ["--pred", "p_*"]
    if logits:
        args.append("--from-logits")
    res = run(*args)
    assert res.exit_code == 0, res.output
    got = pq.read_table(out)
    assert got.column_names == ["id", "cce", "bce"]
    np.testing.assert_array_equal(got["id"].to_numpy(), np.arange(300) * 10)
    rows = list(p.astype(np.float64))
    ref.assert_close(got["cce"].to_numpy(), ref.cce(rows, list(y), from_logits=logits, dtype=np.float32), np.float32)
    ref.assert_close(got["bce"].to_numpy(), ref.bce(rows, list(y), from_logits=logits, dtype=np.float32), np.float32)
    assert no_leftovers(tmp_path)


@pytest.mark.parametrize("ext", [".parquet", ".csv", ".jsonl", ".ndjson", ".arrow", ".feather"])
def test_every_output_format_reads_back(tmp_path, ext):
    out = tmp_path / f"scores{ext}"
    res = run("score", DATA / "sample.parquet", "-o", out, "--keep", "id", "--loss", "both", "-q")
    assert res.exit_code == 0, res.output
    got = read_any(out)
    src = pq.read_table(DATA / "sample.parquet")
    assert got.num_rows == src.num_rows == 4000
    np.testing.assert_array_equal(np.asarray(got["id"]), src["id"].to_numpy())
    np.testing.assert_allclose(np.asarray(got["cce"], dtype=float), xn.cce(src["pred"], src["label"]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got["bce"], dtype=float), xn.bce(src["pred"], src["label"]), rtol=1e-6)


def test_format_option_overrides_extension(tmp_path):
    out = tmp_path / "scores.out"
    assert run("score", DATA / "sample.parquet", "-o", out, "--format", "csv", "-q").exit_code == 0
    assert read_any(out.rename(tmp_path / "s.csv")).num_rows == 4000


def test_seed_example_and_options(tmp_path):
    out = tmp_path / "seed.jsonl"
    res = run("score", DATA / "seed_example.parquet", "-o", out, "--loss", "both", "--log-base", "10", "-q")
    assert res.exit_code == 0, res.output
    row = json.loads(out.read_text())
    assert row["cce"] == pytest.approx(0.5228787452803376, rel=1e-9)
    assert row["bce"] == pytest.approx(0.8873949984654255, rel=1e-9)
    res = run("score", DATA / "seed_example.parquet", "-o", out, "--loss", "bce", "--label", "label_one_hot",
              "--bce-reduce", "mean", "--overwrite", "-q")
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["bce"] == pytest.approx(0.5108256237659907, rel=1e-9)


def test_options_map_onto_the_api(tmp_path):
    src = tmp_path / "in.parquet"
    p, y = _dump(src, c=4)
    y = y.copy()
    out = tmp_path / "o.parquet"
    res = run("score", src, "-o", out, "--loss", "both", "--eps", "keras", "--label-smoothing", "0.1",
              "--class-weight", "1,2,0.5,1", "--pos-weight", "3", "--bce-reduce", "mean", "--log-base", "2",
              "--ignore-index", "2", "-q")
    assert res.exit_code == 0, res.output
    got = pq.read_table(out)
    kw = dict(eps="keras", label_smoothing=0.1, log_base=2)
    want_cce = xn.cce(p, y, class_weight=[1, 2, 0.5, 1], ignore_index=2, **kw)
    want_bce = np.where(y == 2, np.nan, xn.bce(p, y, pos_weight=3.0, reduce="mean", **kw))  # BCE skips them too
    cce = got["cce"].to_numpy(zero_copy_only=False)
    np.testing.assert_allclose(cce, want_cce, rtol=1e-6)  # ignored rows: null -> NaN on both sides
    assert got["cce"].null_count == got["bce"].null_count == int((y == 2).sum()) > 0
    np.testing.assert_allclose(got["bce"].to_numpy(zero_copy_only=False), want_bce, rtol=1e-6)


def test_multi_file_directory_and_glob_keep_order(tmp_path):
    d = tmp_path / "dump"
    d.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"id": np.arange(i * 100, i * 100 + 100),
                                 "pred": pa.array([[0.25, 0.75]] * 100), "label": np.ones(100, dtype=np.int64)}),
                       d / f"part-{i}.parquet", row_group_size=30)
    for inputs in ([d], [str(d / "part-*.parquet")], [d / "part-0.parquet", d / "part-1.parquet", d / "part-2.parquet"]):
        out = tmp_path / "o.parquet"
        res = run("score", *inputs, "-o", out, "--keep", "id", "--batch-rows", "7", "--overwrite", "-q")
        assert res.exit_code == 0, res.output
        got = pq.read_table(out)
        np.testing.assert_array_equal(got["id"].to_numpy(), np.arange(300))
        np.testing.assert_allclose(got["cce"].to_numpy(), -np.log(0.75), rtol=1e-6)


def test_feather_input_is_read(tmp_path):
    src = tmp_path / "in.feather"
    feather.write_feather(pq.read_table(DATA / "sample.parquet"), src, chunksize=1000)
    out = tmp_path / "o.parquet"
    assert run("score", src, "-o", out, "--keep", "id", "--batch-rows", "300", "-q").exit_code == 0
    want = pq.read_table(DATA / "sample.parquet")
    np.testing.assert_allclose(pq.read_table(out)["cce"].to_numpy(), xn.cce(want["pred"], want["label"]), rtol=1e-6)


def test_multiple_keep_columns_in_order(tmp_path):
    src = tmp_path / "in.parquet"
    _dump(src)
    out = tmp_path / "o.parquet"
    assert run("score", src, "-o", out, "--keep", "note", "--keep", "id", "--keep", "label", "-q").exit_code == 0
    got = pq.read_table(out)
    assert got.column_names == ["note", "id", "label", "cce"]
    assert got["note"].to_pylist()[:2] == ["r0", "r1"]


def test_on_invalid_null_counts_rows(tmp_path):
    table = pa.table({"id": [1, 2, 3, 4], "pred": pa.array([[0.5, 0.5], [1.5, -0.5], None, [0.1, 0.9]]),
                      "label": [0, 1, 0, 7]})
    src = tmp_path / "bad.parquet"
    pq.write_table(table, src)
    out = tmp_path / "o.parquet"
    summary = tmp_path / "s.json"
    res = run("score", src, "-o", out, "--on-invalid", "null", "--keep", "id", "--summary-json", summary)
    assert res.exit_code == 0, res.output
    got = pq.read_table(out)
    assert got["cce"].to_pylist()[0] == pytest.approx(np.log(2))
    assert got["cce"].to_pylist()[1:] == [None, None, None]
    s = json.loads(summary.read_text())
    assert s["rows"] == 4 and s["invalid_rows"] == 3
    assert s["losses"]["cce"]["count"] == 1
    assert "rows scored" in res.stdout


def test_summary_table_and_json(tmp_path):
    out, summary = tmp_path / "o.parquet", tmp_path / "s.json"
    res = run("score", DATA / "sample.parquet", "-o", out, "--summary-json", summary)
    assert res.exit_code == 0, res.output
    for words in ("rows scored", "4,000", "median", "p95", "worst classes", "rows/s"):
        assert words in res.stdout
    s = json.loads(summary.read_text())
    src = pq.read_table(DATA / "sample.parquet")
    want = xn.cce(src["pred"], src["label"]).astype(np.float64)
    assert s["losses"]["cce"]["mean"] == pytest.approx(want.mean(), rel=1e-6)
    assert s["losses"]["cce"]["max"] == pytest.approx(want.max(), rel=1e-6)
    assert s["losses"]["cce"]["median"] == pytest.approx(np.median(want), rel=0.01)
    assert len(s["worst_classes"]) == 5 and s["wall_seconds"] > 0


def test_empty_input_gives_empty_output(tmp_path):
    src = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.int64()), "pred": pa.array([], pa.list_(pa.float32())),
                             "label": pa.array([], pa.int64())}), src)
    out = tmp_path / "o.csv"
    res = run("score", src, "-o", out, "--keep", "id", "-q")
    assert res.exit_code == 0, res.output
    assert out.read_text().strip() == '"id","cce"'


BAD = [
    # (name, table-or-bytes, extra args, words)
    ("missing_pred", {"x": [1]}, [], ["column 'pred'", "not found", "columns are: x"]),
    ("missing_label", {"pred": [[0.5, 0.5]]}, [], ["label column 'label' not found"]),
    ("missing_keep", {"pred": [[0.5, 0.5]], "label": [0]}, ["--keep", "idx"], ["--keep column 'idx' not found"]),
    ("wrong_pred_type", {"pred": ["a"], "label": [0]}, [], ["column 'pred'", "Arrow type string"]),
    ("wrong_label_type", {"pred": [[0.5, 0.5]], "label": ["x"]}, [], ["column 'label'"]),
    ("prob_out_of_range", {"pred": [[0.5, 0.5]] * 70 + [[0.2, 1.2]], "label": [0] * 71}, ["--batch-rows", "16"],
     ["row 70", "column 'pred'", "outside [0, 1]", "1.2"]),
    ("nan_logit", {"pred": [[0.5, 0.5], [float("nan"), 1.0]], "label": [0, 0]}, ["--from-logits"], ["row 1", "NaN"]),
    ("label_range", {"pred": [[0.5, 0.5]] * 3, "label": [0, 1, 2]}, [], ["row 2", "column 'label'", "out of range"]),
    ("target_sum", {"pred": [[0.5, 0.5]], "label": [[1.0, 1.0]]}, [], ["row 0", "does not sum to 1"]),
    ("null_row", {"pred": [[0.5, 0.5], None], "label": [0, 0]}, [], ["row 1", "column 'pred'", "null"]),
    ("corrupt", b"PAR1 garbage garbage PAR1", [], ["cannot read as Parquet"]),
    ("truncated", "truncate", [], ["cannot read as Parquet"]),
    ("bad_log_base", {"pred": [[0.5, 0.5]], "label": [0]}, ["--log-base", "1"], ["--log-base"]),
    ("bad_eps", {"pred": [[0.5, 0.5]], "label": [0]}, ["--eps", "tf"], ["eps must be"]),
    ("bad_weights", {"pred": [[0.5, 0.5]], "label": [0]}, ["--class-weight", "1,x"], ["--class-weight"]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_errors_exit_2_with_one_clear_line(tmp_path, case):
    name, content, extra, words = case
    src = tmp_path / "in.parquet"
    if isinstance(content, bytes):
        src.write_bytes(content)
    elif content == "truncate":
        src.write_bytes((DATA / "sample.parquet").read_bytes()[:5000])
    else:
        pq.write_table(pa.table(content), src, row_group_size=16)
    out = tmp_path / "out.parquet"
    res = run("score", src, "-o", out, *extra)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, res.output  # one error line (an advise warning may precede it)
    for w in words:
        assert w in res.output, (w, res.output)
    assert str(src) in res.output or name.startswith("bad_")
    assert not out.exists() and no_leftovers(tmp_path)


def test_error_names_global_row_across_files(tmp_path):
    for i in range(2):
        pred = [[0.5, 0.5]] * 50 + ([[0.5, 2.0]] if i == 1 else [[0.5, 0.5]])
        pq.write_table(pa.table({"pred": pred, "label": [0] * 51}), tmp_path / f"p{i}.parquet")
    out = tmp_path / "o.parquet"
    res = run("score", tmp_path / "p0.parquet", tmp_path / "p1.parquet", "-o", out, "--batch-rows", "10")
    assert res.exit_code == 2
    assert f"{tmp_path / 'p1.parquet'}: row 101, column 'pred'" in res.output
    assert not out.exists()


@pytest.mark.parametrize("args,words", [
    (["score", "nope.parquet", "-o", "x.parquet"], ["nope.parquet: no such file or directory"]),
    (["score", "data/*.nothing", "-o", "x.parquet"], ["no file matches"]),
    (["score", "data/sample.parquet", "-o", "x.txt"], ["cannot tell the output format"]),
    (["score", "data/sample.parquet", "-o", "no/such/dir/x.parquet"], ["output directory does not exist"]),
    (["score", "data/sample.parquet", "-o", "x.parquet", "--loss", "mse"], ["--loss"]),
    (["score", "data/sample.parquet"], ["--output"]),
])
def test_usage_errors(args, words, monkeypatch):
    monkeypatch.chdir(ROOT)
    res = run(*args)
    assert res.exit_code == 2, res.output
    for w in words:
        assert w in res.output
    assert not Path(ROOT / "x.parquet").exists()


def test_existing_output_is_refused_then_overwritten(tmp_path):
    out = tmp_path / "o.parquet"
    out.write_text("precious")
    res = run("score", DATA / "sample.parquet", "-o", out, "-q")
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert out.read_text() == "precious"
    assert run("score", DATA / "sample.parquet", "-o", out, "--overwrite", "-q").exit_code == 0
    assert pq.read_table(out).num_rows == 4000


def test_failed_overwrite_keeps_the_old_file(tmp_path):
    out = tmp_path / "o.parquet"
    out.write_text("old")
    src = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"pred": [[0.5, 0.5]] * 20 + [[3.0, 0.0]], "label": [0] * 21}), src)
    assert run("score", src, "-o", out, "--overwrite", "--batch-rows", "5").exit_code == 2
    assert out.read_text() == "old" and no_leftovers(tmp_path)


def test_device_auto_falls_back_to_cpu_and_says_so(tmp_path):
    out = tmp_path / "o.parquet"
    res = run("score", DATA / "sample.parquet", "-o", out, "--device", "auto")
    assert res.exit_code == 0, res.output
    assert "device: cpu" in res.output
    res = run("score", DATA / "sample.parquet", "-o", out, "--device", "cuda", "--overwrite")
    assert res.exit_code == 2 and "no CUDA GPU" in res.output


def test_threads_option(tmp_path):
    out = tmp_path / "o.parquet"
    assert run("score", DATA / "sample.parquet", "-o", out, "--threads", "1", "-q").exit_code == 0
    assert pq.read_table(out).num_rows == 4000


def test_score_files_leaves_the_callers_thread_count(tmp_path):
    """The pipeline gives its kernels one core less (the reader decodes on it), for the run only."""
    import numba

    from xent_numba.engine import local as pipeline

    before = numba.get_num_threads()
    pipeline.score_files([DATA / "sample.parquet"], tmp_path / "o.parquet", pipeline.ScoreOptions())
    assert numba.get_num_threads() == before
    assert pq.read_table(tmp_path / "o.parquet").num_rows == 4000


@pytest.mark.parametrize("command", [[], ["score"], ["advise"], ["report"]])
def test_every_help_has_an_example(command):
    res = run(*command, "--help")
    assert res.exit_code == 0
    assert "Example" in res.output


def _subprocess_env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.mark.parametrize("entry", [[sys.executable, "-m", "xent_numba"], [sys.executable, str(ROOT / "cli.py")]])
def test_entry_points_in_a_real_process(tmp_path, entry):
    out = tmp_path / "o.parquet"
    proc = subprocess.run(entry + ["score", str(DATA / "sample.parquet"), "-o", str(out), "--keep", "id"],
                          capture_output=True, text=True, env=_subprocess_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "rows scored" in proc.stdout
    assert pq.read_table(out).num_rows == 4000
    bad = subprocess.run(entry + ["score", str(tmp_path / "missing.parquet"), "-o", str(tmp_path / "x.parquet")],
                         capture_output=True, text=True, env=_subprocess_env(), timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "no such file" in bad.stderr


def test_interrupt_leaves_no_output(tmp_path):
    """Ctrl-C (SIGINT) during a long run: exit 130, no output file, no temporary file."""
    src = tmp_path / "big.parquet"
    n, c = 400_000, 8
    pred = pa.FixedSizeListArray.from_arrays(pa.array(np.full(n * c, 1 / c, dtype=np.float32)), c)
    pq.write_table(pa.table({"pred": pred.cast(pa.list_(pa.float32())), "label": np.zeros(n, dtype=np.int64)}),
                   src, row_group_size=2000)
    out = tmp_path / "o.csv"
    proc = subprocess.Popen([sys.executable, "-m", "xent_numba", "score", str(src), "-o", str(out), "--batch-rows", "500"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_subprocess_env())
    deadline = time.time() + 120
    while not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]:  # wait until it is writing
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not out.exists() and no_leftovers(tmp_path)
