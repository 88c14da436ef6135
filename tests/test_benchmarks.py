"""The benchmark scripts import, parse their options and share one set of helpers.

A broken import in ``benchmarks/`` (a moved internal module, a renamed helper) fails here
rather than on the next benchmark run. Nothing is timed: each script's ``main(["--help"])``
only parses its options.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCH.glob("bench*.py"))
PEERS = ("torch", "duckdb", "polars", "jax", "psutil")


@pytest.fixture
def bench(monkeypatch):
    """Import benchmark modules as ``python benchmarks/<script>.py`` does: with their own
    folder first on sys.path (so ``import common`` finds the sibling); forgotten afterwards."""
    monkeypatch.syspath_prepend(str(BENCH))
    # common.py sets OMP_WAIT_POLICY when unset: keep this process's environment as it was
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    before = set(sys.modules)
    yield importlib.import_module
    for name in ["common", *SCRIPTS]:
        if name not in before:
            sys.modules.pop(name, None)


def test_every_script_is_listed():
    assert SCRIPTS == ["bench", "bench_binary", "bench_compile", "bench_dask", "bench_floor",
                       "bench_gpu", "bench_score", "bench_stages"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_imports_and_parses_help(bench, name, capsys, monkeypatch):
    mod = bench(name)
    monkeypatch.setattr(sys, "argv", [f"{name}.py"])
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {name}.py")


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_uses_no_path_hack_nor_internal_module(name):
    """Scripts reach xent_numba through ``import xent_numba as xn`` (the public API) only;
    internal names come from common.internals(), and nothing edits sys.path."""
    source = (BENCH / f"{name}.py").read_text()
    assert "sys.path" not in source
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("xent_numba"), f"{name}: from {node.module} import ..."
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name == "xent_numba" or not alias.name.startswith("xent_numba."), alias.name


def test_documented_command_runs_and_loads_no_peer():
    """``PYTHONPATH=. python benchmarks/<script>.py`` works from the repository root, and
    importing every script loads none of the optional peers (they load when asked for)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "benchmarks/bench.py", "--help"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: bench.py")
    assert "not from this checkout" not in r.stderr
    code = (f"import sys; sys.path.insert(0, {str(BENCH)!r}); "
            + "; ".join(f"import {s}" for s in SCRIPTS)
            + f"; print(sorted(m for m in sys.modules if m.split('.')[0] in {PEERS!r}))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_peer_not_installed_is_skipped_and_named(bench):
    common = bench("common")
    n = len(common.SKIPPED)
    assert common.peer("no_such_peer_module_xyz") is None
    assert common.SKIPPED[n:] == ["no_such_peer_module_xyz (not installed: pip install no_such_peer_module_xyz)"]
    assert "no_such_peer_module_xyz" in common.skipped_line()
    del common.SKIPPED[n:]


def test_interleaved_rounds_and_ratios(bench):
    common = bench("common")
    calls = []
    jobs = {"a": lambda: calls.append("a") or 2.0, "b": lambda: calls.append("b") or 1.0, "none": None}
    seen = []
    out = common.interleaved(jobs, 3, on_round=lambda k, res: seen.append((k, res)))
    assert calls == ["a", "b"] + ["a", "b"] * 3  # one warm-up each, then a, b in every round
    assert out == {"a": [2.0] * 3, "b": [1.0] * 3, "none": None}
    assert seen[-1] == (2, {"a": 2.0, "b": 1.0})
    assert common.ratio(out["a"], out["b"]) == 2.0
    assert common.ratio([4.0, 1.0, 9.0], [1.0, 1.0, 1.0]) == 4.0  # median of the per-round ratios
    assert common.ratio(out["none"], out["b"]) is None and common.median(None) is None
    assert common.fmt_ms(None) == "—" and common.fmt_r(2) == "2.00×"
    t = common.interleaved_best({"f": lambda: None, "g": None}, 2, calls=2)
    assert len(t["f"]) == 2 and all(x >= 0 for x in t["f"]) and t["g"] is None


def test_data_makers(bench, tmp_path):
    common = bench("common")
    d = common.in_memory_data(50, 4, seed=1)
    assert {k: v.dtype for k, v in d.items() if k != "y"} == dict.fromkeys(
        ["logits", "probs", "onehot", "multihot", "sig"], np.dtype(np.float32))
    np.testing.assert_allclose(d["probs"].sum(1), 1, rtol=1e-6)
    assert (d["onehot"].argmax(1) == d["y"]).all() and d["onehot"].sum() == 50
    rng = np.random.default_rng(0)
    p = common.dirichlet_probs(rng, 5, 3)
    np.testing.assert_allclose(p.sum(1), 1)
    assert pa.types.is_large_list(common.list_array(p, large=True).type)
    assert pa.types.is_fixed_size_list(common.fixed_size_list(p).type)
    # a dump: rows in order across row groups and chunks, reused when it has its rows
    path = common.write_dump(tmp_path / "d.parquet", 1000, 3, row_group=300, chunk=128, probs=True, id_start=7)
    f = pq.ParquetFile(path)
    assert f.metadata.num_row_groups == 4 and f.schema_arrow == common.DUMP_SCHEMA
    t = f.read()
    assert t["id"].to_pylist() == list(range(7, 1007))
    np.testing.assert_allclose([sum(r) for r in t["pred"].to_pylist()], 1, rtol=1e-5)
    mtime = path.stat().st_mtime_ns
    assert common.write_dump(path, 1000, 3) == path and path.stat().st_mtime_ns == mtime
    feather = common.write_feather_copy(path)
    assert feather.suffix == ".feather" and not list(tmp_path.glob("*.tmp"))
    assert pa.ipc.open_file(feather).read_all().equals(t)
    b = pq.read_table(common.write_binary_dump(tmp_path / "b.parquet", 100))
    assert b.schema.names == ["id", "score", "clicked"] and b.num_rows == 100


def test_internal_entry_points_resolve(bench):
    """Every internal name the scripts rely on still exists where common.py imports it (the
    scripts that use them late, inside a section, would otherwise fail only when run)."""
    common = bench("common")
    xi = common.internals()
    assert all(v is not None for v in vars(xi).values())
    assert callable(xi.fastmath.exp32) and callable(xi.fastmath.log1pexp32) and callable(xi.fastmath.log32)
    gi = common.gpu_internals()
    assert callable(gi.cuda_usable) and callable(gi.plan)
