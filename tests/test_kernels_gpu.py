"""Direct tests of the GPU kernel modules (``kernels/gpu_rows.py``, ``gpu_kernels.py``,
``gpu_launch.py``) against tests/reference.py, in the CUDA simulator: the row state folded
and merged by hand, each named kernel launched on its own, and the launch planning.

Without the simulator (a ``pytest -m gpu`` run) they are skipped: tests/test_gpu.py covers
the real GPU at full size.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from numba import config as nb_config

from tests import reference as ref
from xent_numba import config, losses

pytestmark = pytest.mark.skipif(not nb_config.ENABLE_CUDASIM, reason="needs the CUDA simulator")

TPB = 32


@pytest.fixture(autouse=True)
def _switch_often():
    """The simulator's block manager polls its threads under the GIL: switch often."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(5e-4)
    yield
    sys.setswitchinterval(interval)


def _spec(loss, from_logits, index, f32=False):
    from xent_numba.kernels.gpu_rows import Spec

    return Spec(loss == "bce", from_logits, index, f32, TPB, False, False)


def _case(loss, from_logits, n, c, seed=0):
    rng = np.random.default_rng(seed)
    if from_logits:
        p = rng.normal(0, 3, size=(n, c))
    else:
        p = rng.random((n, c)) + 0.01
        p /= p.sum(1, keepdims=True)
    return p, rng.integers(0, c, n)


def _reference(loss, p, y, **opts):
    f = ref.cce if loss == "cce" else ref.bce
    return f(list(p), list(y), **opts)


MODES = [(loss, lg) for loss in ("cce", "bce") for lg in (False, True)]


@pytest.mark.parametrize("loss,from_logits", MODES)
def test_state_fold_merge_and_finish_give_the_reference_loss(loss, from_logits):
    """One row folded class by class (``step``), or as two halves joined by ``merge``, then
    ``finish``: the same loss as the reference, status OK."""
    from xent_numba.kernels.gpu_launch import consts
    from xent_numba.kernels.gpu_rows import make_finish, make_state

    spec = _spec(loss, from_logits, index=True)
    st, finish = make_state(spec), make_finish(spec)
    p, y = _case(loss, from_logits, 1, 9, seed=2)
    row, yy = p[0], int(y[0])
    prm = losses.make_params(loss, dtype=np.float64, from_logits=from_logits, label_smoothing=0.1)
    k, ki, w = consts(prm), (0, 0, 0, 0), np.ones(1)

    def fold(classes):
        s = st.ident()
        for c in classes:
            s = st.step(s, row[c], 0, c, len(row), yy, k, w, w, ki)
        return s

    whole = fold(range(9))
    halves = st.merge(fold(range(0, 9, 2)), fold(range(1, 9, 2)))
    want = _reference(loss, p, y, from_logits=from_logits, label_smoothing=0.1)[0]
    for s in (whole, halves):
        loss_v, status = finish(s, losses.OK, len(row), yy, row[yy], k, w, ki)
        assert status == losses.OK
        assert math.isclose(loss_v, want, rel_tol=1e-12)


def test_finish_reports_the_status_known_before_reading():
    """A status found by ``row_info`` (here LENGTH) wins over the state: NaN, that status."""
    from xent_numba.kernels.gpu_launch import consts
    from xent_numba.kernels.gpu_rows import make_finish, make_state

    spec = _spec("cce", True, index=False)
    prm = losses.make_params("cce", dtype=np.float64, from_logits=True)
    v, s = make_finish(spec)(make_state(spec).ident(), losses.LENGTH, 3, 0, 0.0, consts(prm), np.ones(1), (0, 0, 0, 0))
    assert math.isnan(v) and s == losses.LENGTH


def _args(p, y, prm):
    """The arguments every kernel shape shares, for dense float64 rows and index labels."""
    from xent_numba.kernels.gpu_launch import consts

    n, c = p.shape
    dummy_i, ones = np.zeros(1, np.int64), np.zeros(1)
    return (p.reshape(-1), dummy_i, c, c, np.zeros(1), dummy_i, 0, 0, y.astype(np.int64),
            ones, ones, consts(prm), (0, 0, 0, 0))


@pytest.mark.parametrize("loss,from_logits", MODES)
@pytest.mark.parametrize("maker", ["make_warp_rows", "make_block_rows"])
def test_row_kernels_match_the_reference(maker, loss, from_logits):
    """``warp_rows`` and ``block_rows`` launched directly, on 2 blocks of 32 threads (so the
    grid-stride loops run), rows longer than a warp."""
    from xent_numba.kernels import gpu_kernels

    p, y = _case(loss, from_logits, 5, 40, seed=1)
    prm = losses.make_params(loss, dtype=np.float64, from_logits=from_logits)
    out, status = np.zeros(5), np.full(5, -1, np.int8)
    kernel = getattr(gpu_kernels, maker)(_spec(loss, from_logits, index=True))
    kernel[2, TPB](*_args(p, y, prm), out, status)
    assert (status == losses.OK).all()
    ref.assert_close(out, _reference(loss, p, y, from_logits=from_logits), np.float64)


@pytest.mark.parametrize("loss,from_logits", [("cce", True), ("bce", False)])
def test_split_rows_then_split_finish_match_the_reference(loss, from_logits):
    """``split_rows`` leaves one state per piece (``NF`` float rows, one int row);
    ``split_finish`` merges each row's pieces into its loss."""
    from xent_numba.kernels import gpu_kernels
    from xent_numba.kernels.gpu_rows import NF

    n, pieces = 3, 3
    p, y = _case(loss, from_logits, n, 100, seed=5)
    prm = losses.make_params(loss, dtype=np.float64, from_logits=from_logits)
    spec = _spec(loss, from_logits, index=True)
    part_f, part_i = np.zeros((NF, n * pieces)), np.zeros(n * pieces, np.int64)
    args = _args(p, y, prm)
    gpu_kernels.make_split_rows(spec)[2, TPB](*args, pieces, part_f, part_i)
    out, status = np.zeros(n), np.full(n, -1, np.int8)
    fin = args[:4] + args[5:10] + args[11:]  # no target values, no pos weights
    gpu_kernels.make_split_finish(spec)[1, TPB](*fin, pieces, part_f, part_i, out, status)
    assert (status == losses.OK).all()
    ref.assert_close(out, _reference(loss, p, y, from_logits=from_logits), np.float64)


def test_kernels_and_device_functions_are_built_once_per_spec():
    from xent_numba.kernels import gpu_kernels, gpu_rows

    spec = _spec("cce", True, index=True)
    assert gpu_kernels.kernels(spec)["warp"] is gpu_kernels.make_warp_rows(spec)
    assert gpu_rows.make_state(spec) is gpu_rows.make_state(spec._replace())
    assert gpu_kernels.make_warp_rows(spec) is not gpu_kernels.make_warp_rows(spec._replace(tpb=64))


def test_plan_takes_each_shape(monkeypatch):
    from xent_numba.kernels.gpu_launch import plan

    monkeypatch.setattr(config, "GPU_WARP_MAX_CLASSES", 8)
    monkeypatch.setattr(config, "GPU_SPLIT_MIN_CLASSES", 64)
    monkeypatch.setattr(config, "GPU_FILL_BLOCKS", 10)
    monkeypatch.setattr(config, "GPU_SPLIT_CHUNK", 16)
    assert plan(100, 8, 8) == ("warp", 1)
    assert plan(100, 100, 100) == ("block", 1)  # enough rows to fill the GPU
    assert plan(2, 100, 100) == ("split", 5)  # 10 blocks wanted over 2 rows
    assert plan(2, 100, 32) == ("block", 1)  # the longest row is too short to split
    assert plan(1, 30, 70) == ("split", 5)  # capped at 70 / 16 pieces


def test_launch_settings_are_checked(monkeypatch):
    from xent_numba.kernels import gpu_launch

    monkeypatch.setattr(config, "GPU_THREADS_PER_BLOCK", 48)
    with pytest.raises(ValueError, match="power of two"):
        gpu_launch.threads_per_block()
    monkeypatch.setattr(config, "GPU_THREADS_PER_BLOCK", 64)
    monkeypatch.setattr(config, "GPU_SHUFFLE", True)
    with pytest.raises(ValueError, match="no warp shuffles"):
        gpu_launch.use_shuffle()
    monkeypatch.setattr(config, "GPU_SHUFFLE", None)
    prm = losses.make_params("cce", dtype=np.float32, from_logits=True)
    # the simulator takes the shared-memory path and plain exp
    assert gpu_launch.spec(prm, True, True) == (False, True, True, True, 64, False, False)


def test_consts_hold_the_clip_logs():
    from xent_numba.kernels.gpu_launch import consts

    prm = losses.make_params("bce", dtype=np.float64, eps=1e-3, label_smoothing=0.2, log_base=2, reduce="mean")
    k = consts(prm)
    assert len(k) == 12
    assert k[0] == pytest.approx(1 / math.log(2)) and (k[1], k[2], k[4]) == (1e-3, 1 - 1e-3, 0.2)
    assert (k[5], k[6]) == (math.log(1e-3), math.log(1 - 1e-3))
    assert (k[7], k[8]) == (math.log1p(-1e-3), math.log1p(-(1 - 1e-3)))
    assert k[9] == 1.0 and k[10:] == pytest.approx((0.1, 0.9))
