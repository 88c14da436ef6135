"""A new user's first run: few compiled signatures, a notice before a compile, CUDA optional,
help text that matches the code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

import xent_numba as xn
from tests import reference as ref
from xent_numba import backend
from xent_numba.cli.commands import app
from xent_numba.engine import warmup
from xent_numba.errors import InvalidInputError
from xent_numba.kernels import cpu
from xent_numba.kernels import signatures as canon

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
rng = np.random.default_rng(7)
N, C = 50, 6
P = rng.dirichlet(np.ones(C), N)
Y = rng.integers(0, C, N)
T = np.eye(C)[Y]


def _list(a, large=False):
    off = pa.array(np.arange(a.shape[0] + 1) * a.shape[1], pa.int64() if large else pa.int32())
    cls = pa.LargeListArray if large else pa.ListArray
    return cls.from_arrays(off, pa.array(a.reshape(-1)))


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# (pred, target, float64 result?) in every dtype/layout the README documents
INPUTS = {
    "f64 numpy / int64": (P, Y),
    "f32 numpy / int32": (P.astype(np.float32), Y.astype(np.int32)),
    "f32 numpy / uint8": (P.astype(np.float32), Y.astype(np.uint8)),
    "f16 numpy / int64": (P.astype(np.float16), Y),
    "f64 fortran / strided labels": (np.asfortranarray(P), np.repeat(Y, 2)[::2]),
    "f64 readonly / readonly": (_readonly(P), _readonly(Y)),
    "f32 list / arrow int64": (_list(P.astype(np.float32)), pa.array(Y)),
    "f64 large_list / arrow int16": (_list(P, large=True), pa.array(Y.astype(np.int16))),
    "f32 fixed_size_list": (pa.FixedSizeListArray.from_arrays(pa.array(P.reshape(-1).astype(np.float32)), C), pa.array(Y)),
    "f32 (N, 1) / (N, 1)": (P[:, :1].astype(np.float32), (Y[:, None] == 0).astype(np.float32)),
    "f64 dense f64": (P, T),
    "f64 dense f32": (P, T.astype(np.float32)),
    "f32 dense bool": (P.astype(np.float32), T.astype(bool)),
    "f32 dense uint8": (P.astype(np.float32), T.astype(np.uint8)),
    "f64 dense int32": (P, T.astype(np.int32)),
    "f64 dense int64 list": (_list(P), _list(T.astype(np.int64))),
    "f32 dense f64 fortran": (P.astype(np.float32), np.asfortranarray(T)),
}


def _fast_path_types(pred, target, prm, w, pw, out, status):
    """What the lean kernels are compiled for: the Numba types of their array arguments."""
    pv, po, pc = cpu._flat(pred)
    narrow = pc < 0 or pc <= cpu._NARROW  # ragged rows: the block kernels pick per row
    if isinstance(target, np.ndarray):
        tt = (numba.typeof(target),)
    else:
        tv, to, _ = cpu._flat(target)
        tt = (numba.typeof(tv), numba.typeof(to))
    return (narrow, numba.typeof(pv), numba.typeof(po), *tt, numba.typeof(out))


def _record(monkeypatch):
    """Replace the CPU kernels by a recorder of their argument types (nothing compiles)."""
    seen = []

    def spy(pred, target, prm, w, pw, out, status):
        seen.append(_fast_path_types(pred, target, prm, w, pw, out, status))
        out[:] = 0.0
        status[:] = 0

    monkeypatch.setattr(cpu, "run", spy)
    return seen


def test_every_documented_input_lands_on_a_warmed_signature(monkeypatch):
    """Canonicalisation: every dtype/layout maps onto one of the few signatures that
    `xent warmup` compiles, so none of them compiles the kernels again."""
    seen = _record(monkeypatch)
    for group in ("index-narrow", "index-wide", "dense-narrow", "dense-wide"):
        warmup._compile_group(group)
    warmed = set(seen)
    assert len(warmed) == 2 * 2 + 2 * 2 * 3  # f32/f64 x (index + 3 dense target dtypes) x narrow/wide
    seen.clear()
    for name, (pred, target) in INPUTS.items():
        for loss in ("cce", "bce"):
            if loss == "cce" and name.startswith("f32 (N, 1)"):
                continue  # one class: a CCE target must sum to 1, tested elsewhere
            xn.score(loss, pred, target)
            assert seen[-1] in warmed, (name, loss, seen[-1])


@pytest.mark.parametrize("name", list(INPUTS))
def test_canonical_inputs_give_the_reference(name):
    pred, target = INPUTS[name]
    pn = np.asarray(pred.to_pylist() if isinstance(pred, pa.Array) else pred, dtype=np.float64)
    tn = np.asarray(target.to_pylist() if isinstance(target, pa.Array) else target)
    dtype = np.float64 if "f64" in name.split()[0] else np.float32
    got = xn.bce(pred, target)
    assert got.dtype == dtype
    ref.assert_close(got, ref.bce(list(pn), list(tn), dtype=dtype), dtype)
    if pn.shape[1] > 1:
        ref.assert_close(xn.cce(pred, target), ref.cce(list(pn), list(tn), dtype=dtype), dtype)


def test_canon_is_a_view_when_nothing_changes():
    values = np.zeros((4, 3), dtype=np.float32)
    out = canon.frozen(values)
    assert np.shares_memory(out, values) and not out.flags.writeable and values.flags.writeable
    ro = canon.frozen(np.arange(5))
    assert canon.frozen(ro) is ro


# ---- compile notice ---------------------------------------------------------------------


def test_compile_notice_fires_once_before_a_compile_and_never_on_a_loaded_kernel():
    said = []
    backend.announce_compiles(said.append)
    try:
        xn.cce(P, Y)  # compiled (or loaded from the cache) by earlier tests: no notice
        assert said == []

        def probe(x):
            return x + 1

        probe.__module__ = "xent_numba.probe"  # a kernel of this package, never compiled yet
        f = numba.njit(probe)
        f(1)
        f(1.5)  # a second compile in the same run: still one line
        assert len(said) == 1 and said[0].startswith("compiling kernels (first run, ~")
        numba.njit(lambda x: x)(1)  # not ours: no notice
        assert len(said) == 1
    finally:
        backend.announce_compiles(None)


def _xent(args, cache_dir, **kw):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "xent_numba", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, **kw)


@pytest.mark.slow
def test_cli_announces_a_cold_cache_compile(tmp_path):
    out = tmp_path / "s.parquet"
    cold = _xent(["score", "data/sample.parquet", "-o", str(out)], tmp_path / "cache")
    assert cold.returncode == 0, cold.stderr
    assert "compiling kernels (first run" in cold.stderr
    warm = _xent(["score", "data/sample.parquet", "-o", str(out), "--overwrite"], tmp_path / "cache")
    assert warm.returncode == 0 and "compiling kernels" not in warm.stderr
    quiet = _xent(["score", "data/sample.parquet", "-o", str(out), "--overwrite", "-q"], tmp_path / "c2")
    assert quiet.returncode == 0 and quiet.stderr == ""


# ---- CUDA is an extra --------------------------------------------------------------------


def test_missing_cuda_extra_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba_cuda", None)  # import numba_cuda -> ImportError
    assert not backend.cuda_installed() and not backend.cuda_usable()
    with pytest.raises(InvalidInputError, match=r"pip install 'xent-numba\[cuda\]'"):
        xn.cce(P, Y, device="cuda")
    with pytest.warns(RuntimeWarning, match=r"CUDA extra is not installed .*xent-numba\[cuda\]"):
        got = xn.cce(P, Y, device="auto")
    ref.assert_close(got, ref.cce(list(P), list(Y)), np.float64)
    with pytest.raises(InvalidInputError, match=r"xent-numba\[cuda\]"):
        backend.kernels("cuda")


_NO_CUDA = """
import sys, json, warnings
sys.modules["numba_cuda"] = None  # as if `pip install xent-numba` had not brought numba-cuda
sys.modules["numba.cuda"] = None
import numpy as np, xent_numba as xn
from xent_numba.cli import main
p = np.array([[0.1, 0.3, 0.2, 0.4]])
res = {"cce": float(xn.cce(p, np.array([1]), log_base=10)[0])}
try:
    xn.bce(p, np.array([1]), device="cuda")
except xn.InvalidInputError as e:
    res["cuda_error"] = str(e)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    res["auto"] = float(xn.cce(p, np.array([1]), device="auto")[0])
    res["auto_warning"] = str(w[0].message)
res["cuda_imported"] = [m for m in sys.modules if "cuda" in m and sys.modules[m] is not None
                       and m != "_numba_cuda_redirector"]  # numba-cuda's .pth hook, loaded at start-up
print(json.dumps(res))
sys.argv = ["xent"] + sys.argv[1:]
main()
"""


def test_cpu_paths_work_without_numba_cuda(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = tmp_path / "s.parquet"
    run = subprocess.run([sys.executable, "-c", _NO_CUDA, "score", "data/sample.parquet", "-o", str(out), "-q"],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    res = json.loads(run.stdout.splitlines()[0])
    assert abs(res["cce"] - 0.5228787452803375) < 1e-12
    assert "pip install 'xent-numba[cuda]'" in res["cuda_error"]
    assert "xent-numba[cuda]" in res["auto_warning"]
    assert res["cuda_imported"] == []
    assert out.exists()
    run = subprocess.run([sys.executable, "-c", _NO_CUDA, "score", "data/sample.parquet", "-o",
                          str(tmp_path / "g.parquet"), "--device", "cuda"],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "pip install 'xent-numba[cuda]'" in run.stderr
    assert not (tmp_path / "g.parquet").exists()


# ---- help text ---------------------------------------------------------------------------


def test_help_matches_the_code():
    from xent_numba.engine import local as pipeline

    res = runner.invoke(app, ["score", "--help"], env={"COLUMNS": "250"}, terminal_width=250)
    text = " ".join(res.output.split())
    assert pipeline.DEFAULT_BATCH_BYTES == 8 << 20 and "about 8 MB" in text and "32 MB" not in text
    assert "pip install 'xent-numba[dask]'" in text  # not eaten as rich markup
    res = runner.invoke(app, ["warmup", "--help"], terminal_width=200)
    assert res.exit_code == 0 and "ahead of time" in res.output
