"""GPU launch settings: one dict of defaults, plain module constants, and a reset.

The GPU launch (``kernels/gpu_launch.py``) reads these when a batch is launched (compiled
kernels are cached per setting), so tests can patch them small (``monkeypatch.setattr(config,
"GPU_THREADS_PER_BLOCK", 32)``) and tiny inputs still span several blocks and take every
kernel shape.
"""

from __future__ import annotations

_DEFAULTS = {
    # threads per block (a multiple of 32 and a power of two)
    "GPU_THREADS_PER_BLOCK": 256,
    # rows of up to this many classes (on average) are scored by one warp each, with
    # coalesced strided loads; longer rows by a whole block (one-pass online log-sum-exp)
    "GPU_WARP_MAX_CLASSES": 1024,
    # a row at least this long may be split across several blocks ...
    "GPU_SPLIT_MIN_CLASSES": 16384,
    # ... when there are fewer rows than blocks needed to fill the GPU (None: 4 per SM)
    "GPU_FILL_BLOCKS": None,
    # each piece of a split row holds at least this many classes
    "GPU_SPLIT_CHUNK": 4096,
    # the most blocks one launch starts (grid-stride loops cover the rest; None: 32 per SM)
    "GPU_MAX_BLOCKS": None,
    # warp shuffles for reductions (None: on a real GPU; the CUDA simulator has none and
    # takes the shared-memory path, which also runs on a GPU)
    "GPU_SHUFFLE": None,
    # float32 exp through the fast intrinsic (__expf); float64 is always exact libm
    "GPU_FASTMATH": True,
}

GPU_THREADS_PER_BLOCK = _DEFAULTS["GPU_THREADS_PER_BLOCK"]
GPU_WARP_MAX_CLASSES = _DEFAULTS["GPU_WARP_MAX_CLASSES"]
GPU_SPLIT_MIN_CLASSES = _DEFAULTS["GPU_SPLIT_MIN_CLASSES"]
GPU_FILL_BLOCKS = _DEFAULTS["GPU_FILL_BLOCKS"]
GPU_SPLIT_CHUNK = _DEFAULTS["GPU_SPLIT_CHUNK"]
GPU_MAX_BLOCKS = _DEFAULTS["GPU_MAX_BLOCKS"]
GPU_SHUFFLE = _DEFAULTS["GPU_SHUFFLE"]
GPU_FASTMATH = _DEFAULTS["GPU_FASTMATH"]


def _reset():
    """Restore every setting to its default."""
    globals().update(_DEFAULTS)
