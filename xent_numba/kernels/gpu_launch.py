"""Launch planning for the GPU kernels: the device layout of a batch (``Rows``), the launch
settings read from ``config.py`` when a batch is launched (threads per block, warp shuffles,
fast exp, block counts), the kernel shape for the row lengths (``plan``), the options as
kernel arguments (``consts``), and ``launch``, which starts the kernels on a stream.
"""

from __future__ import annotations

import math

import numpy as np
from numba import config as nb_config
from numba import cuda

from .. import config
from .gpu_kernels import kernels
from .gpu_rows import NF, Spec

SIMULATOR = bool(nb_config.ENABLE_CUDASIM)


class Rows:
    """A device-side layout: ``values`` (1-D) plus either absolute ``offsets`` (ragged,
    ``ld == 0``) or a row pitch ``ld`` and ``ncols`` (dense)."""

    __slots__ = ("values", "offsets", "ld", "ncols", "mean_len", "max_len")

    def __init__(self, values, offsets, ld, ncols, mean_len, max_len):
        self.values, self.offsets, self.ld, self.ncols = values, offsets, ld, ncols
        self.mean_len, self.max_len = mean_len, max_len


def sm_count() -> int:
    """The streaming multiprocessors of the current device (1 in the simulator)."""
    if SIMULATOR:
        return 1
    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:  # pragma: no cover - no device
        return 1


def threads_per_block() -> int:
    """``config.GPU_THREADS_PER_BLOCK``, checked: a power of two in [32, 1024]."""
    tpb = int(config.GPU_THREADS_PER_BLOCK)
    if tpb < 32 or tpb > 1024 or tpb & (tpb - 1):
        raise ValueError(f"GPU_THREADS_PER_BLOCK must be a power of two in [32, 1024], got {tpb}")
    return tpb


def use_shuffle() -> bool:
    """Whether the reductions take warp shuffles (``config.GPU_SHUFFLE``; None: on a real
    GPU, not in the simulator, which has none)."""
    if config.GPU_SHUFFLE is None:
        return not SIMULATOR
    if config.GPU_SHUFFLE and SIMULATOR:
        raise ValueError("the CUDA simulator has no warp shuffles: leave GPU_SHUFFLE at None/False")
    return bool(config.GPU_SHUFFLE)


def spec(prm, index: bool, f32: bool) -> Spec:
    """The kernel spec for the options ``prm`` and the current launch settings."""
    fast = bool(config.GPU_FASTMATH) and not SIMULATOR  # the simulator has no __expf
    return Spec(bool(prm.bce), bool(prm.from_logits), index, f32, threads_per_block(), use_shuffle(), fast)


def plan(n_rows: int, mean_len: float, max_len: int) -> tuple[str, int]:
    """The kernel shape for a launch: ``("warp"|"block"|"split", pieces per row)``."""
    if mean_len <= config.GPU_WARP_MAX_CLASSES:
        return "warp", 1
    fill = config.GPU_FILL_BLOCKS or 4 * sm_count()
    if max_len >= config.GPU_SPLIT_MIN_CLASSES and n_rows < fill:
        pieces = min(-(-fill // max(n_rows, 1)), -(-max_len // max(int(config.GPU_SPLIT_CHUNK), 1)))
        if pieces >= 2:
            return "split", int(pieces)
    return "block", 1


def consts(prm) -> tuple:
    """Float options as one tuple (the layout ``k[...]`` in the kernels)."""
    lo, hi, e = float(prm.lo), float(prm.hi), float(prm.smoothing)
    neg_inf = -math.inf
    return (
        float(prm.scale),
        lo,
        hi,
        float(prm.logmin),
        e,
        math.log(lo) if lo > 0 else neg_inf,
        math.log(hi) if hi > 0 else neg_inf,
        math.log1p(-lo) if lo < 1 else neg_inf,
        math.log1p(-hi) if hi < 1 else neg_inf,
        1.0 if prm.mean else 0.0,
        e / 2.0,
        1.0 - e + e / 2.0,
    )


def launch(p: Rows, t, y, w, pw, prm, out, status, stream):
    """Launch the kernels for device layouts ``p`` (pred) and ``t`` (dense target ``Rows``
    or None for index labels ``y``), writing device arrays ``out`` and ``status``; returns
    the shape launched (None for no rows)."""
    n = out.shape[0]
    if n == 0:
        return
    index = t is None
    f32 = p.values.dtype == np.float32
    tpb = threads_per_block()
    ks = kernels(spec(prm, index, bool(f32)))
    k = consts(prm)
    ki = (_host_len(w), _host_len(pw), int(prm.has_ignore), int(prm.ignore_index))
    wd = _small_to_device(w, stream)
    pwd = _small_to_device(pw, stream)
    dummy_i = dummy(np.int64, stream)
    po = dummy_i if p.offsets is None else p.offsets
    if index:
        tv, to, tld, tc = dummy(np.float64, stream), dummy_i, 0, 0
    else:
        tv, tld, tc = t.values, t.ld, t.ncols
        to = dummy_i if t.offsets is None else t.offsets
        y = dummy_i
    args = (p.values, po, p.ld, p.ncols, tv, to, tld, tc, y, wd, pwd, k, ki)
    max_blocks = config.GPU_MAX_BLOCKS or 32 * sm_count()
    shape, pieces = plan(n, p.mean_len, p.max_len)
    if shape == "warp":
        blocks = min(-(-n // (tpb // 32)), max_blocks)
        ks["warp"][blocks, tpb, stream](*args, out, status)
    elif shape == "block":
        ks["block"][min(n, max_blocks), tpb, stream](*args, out, status)
    else:
        part_f = cuda.device_array((NF, n * pieces), dtype=np.float64, stream=stream)
        part_i = cuda.device_array(n * pieces, dtype=np.int64, stream=stream)
        ks["split"][min(n * pieces, max_blocks), tpb, stream](*args, pieces, part_f, part_i)
        fin = (p.values, po, p.ld, p.ncols, to, tld, tc, y, wd, k, ki, pieces, part_f, part_i)
        ks["split_finish"][min(-(-n // tpb), max_blocks), tpb, stream](*fin, out, status)
    return shape


def _host_len(a) -> int:
    """The number of entries of a host weight array (0: no weights)."""
    return int(np.asarray(a).size)


def _small_to_device(a, stream):
    """A small host array as a flat float64 device array (one 0 if empty)."""
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float64).reshape(-1))
    if a.size == 0:
        a = np.zeros(1)
    return cuda.to_device(a, stream=stream)


def dummy(dtype, stream):
    """A one-element device array for an argument a kernel does not read."""
    return cuda.to_device(np.zeros(1, dtype=dtype), stream=stream)
