"""GPU kernels against the same NumPy reference as the CPU tests.

Without a GPU (CI) they run in the CUDA simulator (tests/conftest.py turns it on) on tiny
shapes, with threads per block patched to 32 and the launch capped at 2 blocks, so tiny
inputs span several blocks and grid-stride iterations; the shape thresholds are patched so
that the warp-per-row, block-per-row and split-row kernels each run. The simulator has no
warp shuffles: it takes the shared-memory reduction, and a PTX build of the shuffle path is
checked where libNVVM is installed. Tests marked ``gpu`` run the same comparisons at full
size on a real GPU (``pytest -m gpu``), plus CuPy and PyTorch device inputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest
from numba import config as nb_config

import xent_numba as xn
from tests import reference as ref
from tests.layouts import build, build_index
from tests.test_api import BCE_OPTIONS, CCE_OPTIONS, _with_extremes, call, make_case, reference
from xent_numba import config, losses

SIM = bool(nb_config.ENABLE_CUDASIM)

SHAPES = {
    "warp": {},
    "block": {"GPU_WARP_MAX_CLASSES": 0},
    "split": {"GPU_WARP_MAX_CLASSES": 0, "GPU_SPLIT_MIN_CLASSES": 1, "GPU_FILL_BLOCKS": 16, "GPU_SPLIT_CHUNK": 16},
}


@pytest.fixture
def sim_gpu(monkeypatch):
    """``device="cuda"`` runs the simulated kernels with tiny launch settings; yields a
    function that patches the shape thresholds and records which kernel shapes ran."""
    if not SIM:
        pytest.skip("needs the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")
    from xent_numba.kernels import gpu_launch

    monkeypatch.setenv("XENT_NUMBA_SIMULATOR", "1")
    # the simulator's block manager polls its threads under the GIL: switch often
    interval = sys.getswitchinterval()
    sys.setswitchinterval(5e-4)
    monkeypatch.setattr(config, "GPU_THREADS_PER_BLOCK", 32)
    monkeypatch.setattr(config, "GPU_MAX_BLOCKS", 2)
    ran = []
    real_plan = gpu_launch.plan

    def plan(*a):
        got = real_plan(*a)
        ran.append(got[0])
        return got

    monkeypatch.setattr(gpu_launch, "plan", plan)

    def use(shape):
        for name, value in SHAPES[shape].items():
            monkeypatch.setattr(config, name, value)
        return ran

    yield use
    sys.setswitchinterval(interval)


def _case(loss, from_logits, target_kind, dtype, *, n=6, c=5, seed=0, ragged=False):
    rows, targets = make_case(loss, from_logits, target_kind, n=n, c=c, seed=seed, ragged=ragged)
    rows = [np.asarray(r, dtype=dtype) for r in rows]
    pred = np.array(rows, dtype=dtype) if not ragged else rows
    if target_kind == "index":
        target = np.array(targets, dtype=np.int64)
    else:
        target = np.array(targets, dtype=dtype) if not ragged else targets
    return rows, targets, pred, target


MODES = [(loss, lg, tk) for loss in ("cce", "bce") for lg in (False, True) for tk in ("index", "dense")]
MODE_IDS = [f"{loss}-{'logits' if lg else 'probs'}-{tk}" for loss, lg, tk in MODES]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss,from_logits,target_kind", MODES, ids=MODE_IDS)
def test_modes_warp_per_row(sim_gpu, loss, from_logits, target_kind, dtype):
    ran = sim_gpu("warp")
    rows, targets, pred, target = _case(loss, from_logits, target_kind, dtype)
    got = call(loss, pred, target, from_logits=from_logits, device="cuda")
    assert got.dtype == (np.float64 if dtype == np.float64 else np.float32)
    want = reference(loss, rows, targets, from_logits=from_logits, dtype=dtype)
    ref.assert_close(got, want, dtype)
    assert ran == ["warp"]


@pytest.mark.parametrize("shape", ["block", "split"])
@pytest.mark.parametrize("loss,from_logits,target_kind", MODES, ids=MODE_IDS)
def test_modes_block_and_split(sim_gpu, shape, loss, from_logits, target_kind):
    ran = sim_gpu(shape)
    dtype = np.float32 if from_logits else np.float64
    # rows longer than the 32 threads of a block, so every thread and piece has work
    rows, targets, pred, target = _case(loss, from_logits, target_kind, dtype, n=3, c=40, seed=1)
    opts = {"label_smoothing": 0.1} if target_kind == "index" else {}
    got = call(loss, pred, target, from_logits=from_logits, device="cuda", **opts)
    want = reference(loss, rows, targets, from_logits=from_logits, dtype=dtype, **opts)
    ref.assert_close(got, want, dtype)
    assert ran == [shape]


@pytest.mark.parametrize(
    "layout,loss,from_logits,target_kind",
    [
        ("numpy_strided", "cce", True, "index"),
        ("fixed_size_list_sliced", "bce", False, "dense"),
        ("list", "cce", False, "dense"),
        ("large_list", "bce", True, "index"),
        ("list_sliced", "cce", True, "dense"),
        ("list_sliced", "bce", True, "dense"),
        ("chunked", "cce", False, "index"),
    ],
)
def test_layouts(sim_gpu, layout, loss, from_logits, target_kind):
    sim_gpu("warp")
    dtype = np.float32
    ragged = not layout.startswith(("numpy", "fixed"))
    rows, targets = make_case(loss, from_logits, target_kind, n=7, ragged=ragged, seed=4)
    rows = [np.asarray(r, dtype=dtype) for r in rows]
    pred = build(rows, layout, dtype)
    target = build_index(targets, layout) if target_kind == "index" else build(targets, layout, dtype)
    got = call(loss, pred, target, from_logits=from_logits, device="cuda")
    ref.assert_close(got, reference(loss, rows, targets, from_logits=from_logits, dtype=dtype), dtype)


@pytest.mark.parametrize(
    "loss,opts",
    [("cce", o) for o in CCE_OPTIONS] + [("bce", o) for o in BCE_OPTIONS],
    ids=lambda x: repr(x) if isinstance(x, dict) else x,
)
def test_options(sim_gpu, loss, opts):
    """Every option, probabilities with exact 0s and 1s (the eps policy matters) against
    dense targets, and logits against index labels; float32 and float64 alternate."""
    sim_gpu("warp")
    for k, (from_logits, target_kind, dtype) in enumerate(
        [(False, "dense", np.float64), (True, "index", np.float32)]
    ):
        rows, targets = make_case(loss, from_logits, target_kind, n=5, seed=3 + k)
        if not from_logits:
            rows = _with_extremes(rows)
            if loss == "cce":
                targets[0] = np.eye(5)[1]
        rows = [np.asarray(r, dtype=dtype) for r in rows]
        pred = np.array(rows, dtype=dtype)
        target = np.array(targets, dtype=dtype) if target_kind == "dense" else np.array(targets)
        got = call(loss, pred, target, from_logits=from_logits, device="cuda", **opts)
        want = reference(loss, rows, targets, from_logits=from_logits, dtype=dtype, **opts)
        ref.assert_close(got, want, dtype)


@pytest.mark.parametrize("shape", ["warp", "block"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits(sim_gpu, shape, dtype):
    sim_gpu(shape)
    x = np.array([[1e4, -1e4, 0.0, 5e3], [-1e4, -1e4, -1e4, -1e4], [1e4, 1e4, -1e4, 1e4]], dtype=dtype)
    y = np.array([1, 2, 0])
    rows = [r.astype(np.float64) for r in x]
    for loss in ("cce", "bce"):
        got = call(loss, x, y, from_logits=True, device="cuda")
        assert np.all(np.isfinite(got))
        ref.assert_close(got, reference(loss, rows, list(y), from_logits=True), dtype)


def _bad_batch():
    """Probability rows with every kind of invalid row, and the targets that go with them."""
    p = np.full((9, 3), 1 / 3)
    p[1, 2] = np.nan
    p[2, 0] = 1.5
    p[3, 1] = -np.inf
    y = np.array([0, 1, 2, 0, 3, -1, -100, 1, 2])
    t = np.eye(3)[np.clip(y, 0, 2)]
    t[4] = [0.5, 0.2, 0.2]  # sums to 0.9
    t[5] = [1.5, -0.5, 0.0]  # negative
    t[7] = [0.0, np.nan, 1.0]
    return p, y, t


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN/inf arithmetic, in the simulator too
@pytest.mark.parametrize(
    "loss,from_logits,target_kind,shape",
    [m + ("warp",) for m in MODES] + [("cce", True, "index", "split"), ("bce", False, "dense", "block")],
)
def test_invalid_rows_match_cpu(sim_gpu, shape, loss, from_logits, target_kind):
    """Statuses (and NaNs) equal the CPU's for a batch full of invalid rows."""
    sim_gpu(shape)
    p, y, t = _bad_batch()
    if from_logits:
        p = np.log(np.where(np.isfinite(p), np.abs(p), p))
    target = y if target_kind == "index" else t
    kw = dict(from_logits=from_logits, on_invalid="nan")
    if loss == "cce" and target_kind == "index":
        kw["ignore_index"] = -100
    got, got_s = xn.score(loss, p, target, device="cuda", **kw)
    want, want_s = xn.score(loss, p, target, **kw)
    np.testing.assert_array_equal(got_s, want_s)
    assert len(set(want_s.tolist())) >= 3
    np.testing.assert_allclose(got, want, rtol=1e-9, equal_nan=True)
    with pytest.raises(xn.InvalidInputError) as cpu_err:
        xn.score(loss, p, target, from_logits=from_logits)
    with pytest.raises(xn.InvalidInputError) as gpu_err:
        xn.score(loss, p, target, from_logits=from_logits, device="cuda")
    assert str(gpu_err.value) == str(cpu_err.value)


def test_ragged_length_empty_and_null_rows(sim_gpu):
    sim_gpu("warp")
    pred = pa.array([[0.5, 0.5], [0.2, 0.3, 0.5], [], [1.0], None], type=pa.list_(pa.float64()))
    target = pa.array([[0, 1], [0, 1], [], [1], [1]], type=pa.list_(pa.float64()))
    for loss in ("cce", "bce"):
        got, got_s = xn.score(loss, pred, target, on_invalid="nan", device="cuda")
        want, want_s = xn.score(loss, pred, target, on_invalid="nan")
        np.testing.assert_array_equal(got_s, want_s)
        np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    assert list(want_s[1:]) == [losses.LENGTH, losses.EMPTY_ROW, losses.OK, losses.NULL_ROW]
    _, s = xn.score("bce", np.empty((2, 0)), np.empty((2, 0)), on_invalid="nan", device="cuda")
    assert list(s) == [losses.EMPTY_ROW] * 2


def test_device_array_input_stays_on_device(sim_gpu):
    """Device inputs imply device="cuda" and give a device array back."""
    from numba import cuda

    sim_gpu("warp")
    rows, targets, pred, target = _case("cce", True, "index", np.float32)
    d_pred, d_target = cuda.to_device(pred), cuda.to_device(target)
    got = xn.cce(d_pred, d_target, from_logits=True)
    assert not isinstance(got, np.ndarray) and hasattr(got, "copy_to_host")
    want = ref.cce(rows, targets, from_logits=True, dtype=np.float32)
    ref.assert_close(got.copy_to_host(), want, np.float32)
    # dense targets on the device, host pred alongside a device target, statuses
    t = np.eye(5, dtype=np.float32)[target]
    out, status = xn.score("bce", cuda.to_device(pred), cuda.to_device(t), from_logits=True)
    ref.assert_close(out.copy_to_host(), ref.bce(rows, list(t), from_logits=True), np.float32)
    assert (status.copy_to_host() == losses.OK).all()
    got = xn.bce(pred, d_target, from_logits=True, reduce="mean")
    ref.assert_close(got.copy_to_host(), ref.bce(rows, targets, from_logits=True, reduce="mean"), np.float32)
    bad = target.copy()
    bad[2] = 9
    with pytest.raises(xn.InvalidInputError, match=r"^row 2, column 'target': class index out of range"):
        xn.cce(d_pred, cuda.to_device(bad), from_logits=True)


def test_stager_double_buffers_batches(sim_gpu):
    """``Stager.score_batches``: several batches in flight, results in order."""
    from xent_numba import losses as L
    from xent_numba.arrow import Dense
    from xent_numba.kernels import gpu_stage

    sim_gpu("warp")
    batches, wants = [], []
    for seed in range(3):
        rows, targets, pred, target = _case("cce", True, "index", np.float32, n=4 + seed, seed=seed)
        prm = L.make_params("cce", dtype=np.float32, from_logits=True)
        batches.append((Dense(pred), target, prm, np.empty(0), np.empty(0)))
        wants.append(ref.cce(rows, targets, from_logits=True, dtype=np.float32))
    results = list(gpu_stage.Stager(slots=2).score_batches(iter(batches)))
    assert len(results) == 3
    for (out, status), want in zip(results, wants, strict=True):
        ref.assert_close(out, want, np.float32)
        assert (status == L.OK).all()


def test_score_files_on_the_gpu_keeps_two_batches_in_flight(sim_gpu, tmp_path, monkeypatch):
    """`xent score --device cuda`: batches scored by two threads (a stream each), so one
    batch's transfers and kernel overlap the next one's; output identical in content and
    order to the CPU run, and a bad row still named by file and global row."""
    import threading

    import pyarrow as pa
    import pyarrow.parquet as pq

    from xent_numba.engine import local as pipeline
    from xent_numba.kernels import gpu

    rng = np.random.default_rng(3)
    n, c = 40, 5
    logits = rng.normal(size=(n, c)).astype(np.float32)
    pred = pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), c).cast(pa.list_(pa.float32()))
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": np.arange(n), "pred": pred, "label": rng.integers(0, c, n)}), src)
    threads = set()
    real_run = gpu.run

    def run(*a):
        threads.add(threading.get_ident())
        return real_run(*a)

    monkeypatch.setattr(gpu, "run", run)
    opts = dict(loss="both", from_logits=True, keep=("id",))
    pipeline.score_files([src], tmp_path / "gpu.parquet", pipeline.ScoreOptions(device="cuda", **opts), batch_rows=7)
    pipeline.score_files([src], tmp_path / "cpu.parquet", pipeline.ScoreOptions(**opts), batch_rows=7)
    got, want = pq.read_table(tmp_path / "gpu.parquet"), pq.read_table(tmp_path / "cpu.parquet")
    assert got.column("id").to_pylist() == list(range(n))
    for loss in ("cce", "bce"):
        np.testing.assert_allclose(got[loss].to_numpy(), want[loss].to_numpy(), rtol=1e-5)
    assert len(threads) == 2 and threading.get_ident() not in threads

    bad = pa.table({"id": np.arange(n), "pred": pred, "label": np.where(np.arange(n) == 23, c + 4, 0)})
    pq.write_table(bad, src)
    with pytest.raises(xn.InvalidInputError, match=r"in\.parquet.*row 23"):
        pipeline.score_files([src], tmp_path / "bad.parquet", pipeline.ScoreOptions(device="cuda", from_logits=True), batch_rows=7)
    assert not (tmp_path / "bad.parquet").exists()


def test_plan_picks_shapes(monkeypatch):
    from xent_numba.kernels import gpu_launch

    monkeypatch.setattr(config, "GPU_FILL_BLOCKS", 528)
    assert gpu_launch.plan(1_000_000, 1000, 1000) == ("warp", 1)
    assert gpu_launch.plan(1_000_000, 32000, 32000) == ("block", 1)
    shape, pieces = gpu_launch.plan(4, 256_000, 256_000)
    assert shape == "split" and pieces == 63  # 528 / 4 = 132 wanted, capped at 256k / 4096
    assert gpu_launch.plan(4, 8000, 8000) == ("block", 1)  # too short to split


def test_cuda_is_refused_without_a_usable_gpu():
    """The simulator does not count as a GPU for device="cuda"/"auto" (no opt-in here)."""
    if os.environ.get("XENT_NUMBA_SIMULATOR") == "1":
        pytest.skip("simulator opted in for the whole run")
    from xent_numba import backend

    if not SIM and backend.cuda_usable():
        pytest.skip("a real GPU is usable")
    p = np.array([[0.2, 0.8]])
    with pytest.raises(xn.InvalidInputError, match="no CUDA GPU"):
        xn.cce(p, np.array([1]), device="cuda")
    np.testing.assert_array_equal(xn.cce(p, np.array([1]), device="auto"), xn.cce(p, np.array([1])))


_PTX_CHECK = textwrap.dedent(
    """
    import types
    import numba.cuda.dispatcher as d
    from numba import cuda, types as T
    d.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    from xent_numba.kernels import gpu_kernels

    def arr(ty, nd=1):
        return T.Array(ty, nd, "C")

    for bce, logits, index, f32 in [(0, 1, 1, 1), (1, 1, 0, 1), (0, 0, 0, 0), (1, 0, 1, 0)]:
        ks = gpu_kernels.kernels(gpu_kernels.Spec(bool(bce), bool(logits), bool(index), bool(f32), 256, True, True))
        ft = T.float32 if f32 else T.float64
        k, ki = T.UniTuple(T.float64, 12), T.UniTuple(T.int64, 4)
        tv = arr(T.float64) if index else arr(T.uint8)
        common = (arr(ft), arr(T.int64), T.int64, T.int64, tv, arr(T.int64), T.int64, T.int64,
                  arr(T.int64), arr(T.float64), arr(T.float64), k, ki)
        outs, parts = (arr(ft), arr(T.int8)), (arr(T.float64, 2), arr(T.int64))
        fin = (arr(ft), arr(T.int64), T.int64, T.int64, arr(T.int64), T.int64, T.int64,
               arr(T.int64), arr(T.float64), k, ki, T.int64)
        sigs = {"warp": common + outs, "block": common + outs, "split": common + (T.int64,) + parts,
                "split_finish": fin + parts + outs}
        for name, sig in sigs.items():
            ptx, _ = cuda.compile_ptx(ks[name].py_func, sig, cc=(9, 0))
            assert "shfl.sync.down" in ptx or name == "split_finish", name
            if f32 and logits and not bce and name != "split_finish":
                assert "ex2.approx" in ptx
    print("PTX OK")
    """
)


def test_shuffle_path_compiles_to_ptx():
    """The real-GPU path (warp shuffles, fast exp) through NVVM, no GPU needed; skipped
    where libNVVM is not installed (pip install nvidia-cuda-nvcc-cu12 nvidia-cuda-nvrtc-cu12)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    trivial = (  # the whole toolchain the check needs (NVVM, NVRTC, libdevice) on a tiny kernel
        "from numba import cuda, types as T\n"
        "def k(a):\n    a[0] = cuda.shfl_down_sync(0xffffffff, a[0], 1)\n"
        "cuda.compile_ptx(k, (T.float32[:],), cc=(9, 0))"
    )
    probe = subprocess.run([sys.executable, "-c", trivial], env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the CUDA compiler libraries (libNVVM/NVRTC) are not installed")
    res = subprocess.run([sys.executable, "-c", _PTX_CHECK], env=env, capture_output=True, text=True)
    assert res.returncode == 0 and "PTX OK" in res.stdout, res.stderr[-3000:]


# ------------------------------------------------------------------------------------
# real GPU: the same comparisons at full size, and CuPy / PyTorch device inputs
# ------------------------------------------------------------------------------------

real_gpu = pytest.mark.skipif(SIM, reason="needs a real GPU, not the simulator")


def _real_gpu():
    from xent_numba import backend

    if not backend.cuda_usable():
        pytest.skip("no usable CUDA GPU")


def _big_case(loss, from_logits, target_kind, dtype, n, c, seed=0):
    rng = np.random.default_rng(seed)
    if from_logits:
        p = rng.normal(0, 3, size=(n, c))
    else:
        p = rng.random((n, c)) + 0.01
        if loss == "cce":
            p /= p.sum(1, keepdims=True)
    y = rng.integers(0, c, n)
    if target_kind == "index":
        t = y
    elif loss == "cce":
        t = rng.random((n, c))
        t /= t.sum(1, keepdims=True)
    else:
        t = (rng.random((n, c)) < 0.3).astype(np.float64)
    p = p.astype(dtype)
    t = t if target_kind == "index" else t.astype(dtype)
    return p, t


@pytest.mark.gpu
@real_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c", [(20_000, 5), (4_000, 1000), (3_000, 40_000), (3, 256_000)])
@pytest.mark.parametrize("loss,from_logits,target_kind", MODES, ids=MODE_IDS)
def test_full_size_matches_cpu(loss, from_logits, target_kind, n, c, dtype):
    """Every mode and kernel shape (short rows: warp; 40k: block; 3 x 256k: split) at full
    size, compared with the CPU kernels (which the reference tests pin down)."""
    _real_gpu()
    p, t = _big_case(loss, from_logits, target_kind, dtype, n, c)
    kw = dict(from_logits=from_logits, label_smoothing=0.05 if target_kind == "index" else 0.0)
    got, got_s = xn.score(loss, p, t, device="cuda", **kw)
    want, want_s = xn.score(loss, p, t, **kw)
    np.testing.assert_array_equal(got_s, want_s)
    ref.assert_close(got, want, dtype)


@pytest.mark.gpu
@real_gpu
def test_cupy_inputs():
    _real_gpu()
    cp = pytest.importorskip("cupy")
    p, y = _big_case("cce", True, "index", np.float32, 10_000, 1000)
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        dp, dy = cp.asarray(p), cp.asarray(y)
        out = xn.cce(dp, dy, from_logits=True)  # enqueued on s, the producer's stream
        got = cp.asarray(out)  # zero-copy wrap of the Numba device array
        assert got.data.ptr == out.__cuda_array_interface__["data"][0]
        host = cp.asnumpy(got)
    ref.assert_close(host, xn.cce(p, y, from_logits=True), np.float32)
    t = cp.asarray(np.eye(1000, dtype=np.float32)[y])
    ref.assert_close(cp.asnumpy(cp.asarray(xn.bce(dp, t, from_logits=True))),
                     xn.bce(p, np.eye(1000, dtype=np.float32)[y], from_logits=True), np.float32)


@pytest.mark.gpu
@real_gpu
def test_torch_inputs():
    _real_gpu()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA")
    p, y = _big_case("cce", True, "index", np.float32, 10_000, 1000)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        dp = torch.as_tensor(p, device="cuda")
        dy = torch.as_tensor(y, device="cuda")
        out = torch.as_tensor(xn.cce(dp, dy, from_logits=True), device="cuda")
        want = torch.nn.functional.cross_entropy(dp, dy, reduction="none")
    torch.cuda.synchronize()
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)
    tt = torch.nn.functional.one_hot(dy, 1000).float()
    out = torch.as_tensor(xn.bce(dp, tt.bool(), from_logits=True), device="cuda")
    want = torch.nn.functional.binary_cross_entropy_with_logits(dp, tt, reduction="none").sum(1)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-4)
