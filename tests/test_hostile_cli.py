"""The messages a user reads: help that shows flags as flags, options that apply to another
engine, hints that keep their brackets, `xent report` pointed at the wrong column or run
where matplotlib complains, the default batch for very wide rows, and `xent warmup`
covering one-score-per-row dumps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import xent_numba as xn
from xent_numba import backend
from xent_numba.cli.commands import app
from xent_numba.columns import Columns
from xent_numba.engine import local as pipeline
from xent_numba.engine import warmup
from xent_numba.kernels import cpu_scalar as cpu_binary

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = str(ROOT / "data" / "sample.parquet")
runner = CliRunner()


# ---- help and hints ---------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["score"], ["advise"], ["report"], ["warmup"]])
def test_help_shows_flags_without_a_value(command):
    res = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert res.exit_code == 0
    assert "<bool>" not in res.output  # read as "--from-logits <bool>": a flag that takes a value


def test_a_flag_given_a_value_is_refused_by_name(tmp_path):
    out = tmp_path / "s.parquet"
    res = runner.invoke(app, ["score", SAMPLE, "true", "-o", str(out), "--from-logits"])
    assert res.exit_code == 2
    assert "'true' is not an input file" in res.output and "take no value" in res.output
    assert not out.exists()


@pytest.mark.parametrize("extra", [["--workers", "2"], ["--scheduler", "tcp://127.0.0.1:1"]])
def test_dask_options_without_the_dask_engine_are_refused(tmp_path, extra):
    out = tmp_path / "s.parquet"
    res = runner.invoke(app, ["score", SAMPLE, "-o", str(out), *extra])
    assert res.exit_code == 2
    assert f"{extra[0]} applies to --engine dask only" in res.output
    assert not out.exists()


def test_a_scheduler_from_the_environment_does_not_stop_a_local_run(tmp_path):
    out = tmp_path / "s.parquet"
    res = runner.invoke(app, ["score", SAMPLE, "-o", str(out), "-q"], env={"XENT_DASK_SCHEDULER": "tcp://127.0.0.1:1"})
    assert res.exit_code == 0, res.output
    assert pq.read_metadata(out).num_rows == 4000


def test_device_auto_hint_keeps_the_extra_in_brackets(tmp_path, monkeypatch):
    monkeypatch.setattr(backend, "cuda_installed", lambda: False)
    monkeypatch.setattr(backend, "resolve", lambda device: "cpu")
    res = runner.invoke(app, ["score", SAMPLE, "-o", str(tmp_path / "s.parquet"), "--device", "auto"])
    assert res.exit_code == 0, res.output
    assert "pip install 'xent-numba[cuda]'" in res.output


# ---- xent report ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def id_scores(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "scores.parquet"
    n = 5000
    rng = np.random.default_rng(3)
    pq.write_table(pa.table({"id": np.arange(n), "label": rng.integers(0, 10, n), "cce": rng.random(n)}), path)
    return path


def test_report_refuses_a_row_id_as_the_class_label(id_scores, tmp_path):
    out = tmp_path / "r.png"
    res = runner.invoke(app, ["report", str(id_scores), "-o", str(out), "--label", "id"])
    assert res.exit_code == 2
    assert "'id' has 5,000 distinct values in 5,000 rows" in res.output and "row id" in res.output
    assert not out.exists()
    res = runner.invoke(app, ["report", str(id_scores), "-o", str(out), "--label", "label"])
    assert res.exit_code == 0, res.output


def test_report_keeps_matplotlib_notices_off_stderr(id_scores, tmp_path):
    """An unwritable matplotlib config folder (a container's read-only HOME) makes matplotlib
    log two lines at import: they are not the report's business."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLCONFIGDIR="/proc/no-such-folder", HOME="/proc/no-such-home")
    proc = subprocess.run([sys.executable, "-m", "xent_numba", "report", str(id_scores), "-o", str(tmp_path / "r.png")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


# ---- the default batch follows the byte budget ------------------------------------------


class _RowSize:
    def __init__(self, per_row):
        self.per_row = per_row

    def bytes_per_row(self, columns):
        return self.per_row


@pytest.mark.parametrize("per_row, rows", [
    (4 * 131072 + 8, 15),  # 128k float32 classes a row: ~8 MB, not a 1,024-row (512 MB) floor
    (4 * 1024 * 1024 * 16, 1),  # a row past the budget: one row a batch
    (88, (8 << 20) // 88),
    (1, 1 << 20),  # capped
    (0, 65536),  # unknown row size
])
def test_default_batch_rows_follow_the_byte_budget(per_row, rows):
    cols = Columns(("pred",), ("label",), ())
    assert pipeline._default_batch_rows(_RowSize(per_row), cols) == rows


def test_a_wide_dump_is_read_in_batches_of_about_8_mb(tmp_path):
    n, c = 300, 32768  # 128 KB a row: 64 rows a batch
    rng = np.random.default_rng(5)
    p = rng.random((n, c), dtype=np.float32)
    p /= p.sum(axis=1, keepdims=True)
    table = pa.table({"pred": pa.FixedSizeListArray.from_arrays(pa.array(p.reshape(-1)), c),
                      "label": rng.integers(0, c, n)})
    pq.write_table(table, tmp_path / "wide.parquet", row_group_size=n)
    seen = []
    pipeline.score_files([str(tmp_path / "wide.parquet")], str(tmp_path / "s.parquet"), pipeline.ScoreOptions(),
                         on_progress=seen.append)
    steps = np.diff([0, *seen])
    assert seen[-1] == n and steps.max() <= 70, steps
    got = pq.read_table(tmp_path / "s.parquet").column("cce").to_numpy()
    np.testing.assert_allclose(got, xn.cce(p, table.column("label").to_numpy()), rtol=1e-6)


# ---- xent warmup covers one score per row -----------------------------------------------


def test_warmup_compiles_the_binary_kernels_every_binary_input_uses(monkeypatch):
    seen = []
    real = cpu_binary.run

    def spy(p, y, prm, a, b, out, status):
        seen.append((numba.typeof(np.ascontiguousarray(p)).dtype, numba.typeof(np.ascontiguousarray(y)).dtype,
                     numba.typeof(prm)))
        return real(p, y, prm, a, b, out, status)

    monkeypatch.setattr(cpu_binary, "run", spy)
    warmup._compile_group("binary")
    warmed = set(seen)
    seen.clear()
    n = 40
    rng = np.random.default_rng(9)
    p64 = rng.random(n)
    y = rng.integers(0, 2, n)
    preds = [p64, p64.astype(np.float32), p64.astype(np.float16), pa.array(p64.astype(np.float32))]
    labels = [y, y.astype(bool), y.astype(np.int8), y.astype(np.uint8), y.astype(np.int32),
              pa.array(y.astype(bool)), pa.array(y), p64 * 0 + 0.5, (p64 * 0 + 0.5).astype(np.float32)]
    for pred in preds:
        for label in labels:
            for loss in ("cce", "bce"):
                xn.score(loss, pred, label)
                assert seen[-1] in warmed, (type(pred), getattr(label, "dtype", None), loss, seen[-1])
    assert "binary" in warmup.GROUPS


# ---- the invalid-row count says what it counted -----------------------------------------


def test_a_run_stopped_by_its_only_batch_counts_every_row(tmp_path):
    """One batch held every row: its count of invalid rows is the total, not a lower bound;
    a run stopped in a first batch of several says "at least"."""
    n = 3000
    logits = np.random.default_rng(2).normal(0, 3, n)
    pq.write_table(pa.table({"pred": logits, "label": (logits > 0).astype(np.int64)}), tmp_path / "d.parquet")
    bad = int(np.count_nonzero((logits < 0) | (logits > 1)))
    res = runner.invoke(app, ["score", str(tmp_path / "d.parquet"), "-o", str(tmp_path / "a.parquet"), "-q"])
    assert res.exit_code == 2
    assert f"; {bad} invalid rows in total" in res.output
    res = runner.invoke(app, ["score", str(tmp_path / "d.parquet"), "-o", str(tmp_path / "b.parquet"), "-q",
                              "--batch-rows", "1000"])
    assert res.exit_code == 2
    assert "; at least " in res.output and "(counted in the batch that stopped the run)" in res.output
    assert not (tmp_path / "a.parquet").exists() and not (tmp_path / "b.parquet").exists()
