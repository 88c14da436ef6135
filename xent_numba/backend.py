"""The one place that decides CPU vs GPU."""

from __future__ import annotations

import os
import warnings

from .errors import InvalidInputError
from .losses import DEVICES

SIMULATOR_ENV = "XENT_NUMBA_SIMULATOR"


def cuda_usable() -> bool:
    """True when numba-cuda sees a usable GPU.

    The CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, which the test suite turns on) counts
    only when ``XENT_NUMBA_SIMULATOR=1`` is set too: it is thousands of times slower than
    the CPU kernels, so ``device="auto"`` must never pick it by accident.
    """
    try:
        from numba import config

        if config.ENABLE_CUDASIM and os.environ.get(SIMULATOR_ENV) != "1":
            return False
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # no driver, no toolkit, broken install: all mean "no GPU"
        return False


def resolve(device: str) -> str:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` -> the backend name that will run."""
    if device not in DEVICES:
        raise InvalidInputError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    if device == "auto":
        if cuda_usable():
            return "cuda"
        warnings.warn("device='auto': no CUDA GPU is usable here, scoring on the CPU", RuntimeWarning, stacklevel=4)
        return "cpu"
    if device == "cuda" and not cuda_usable():
        raise InvalidInputError(
            "device='cuda' was asked for but no CUDA GPU is usable here "
            "(numba.cuda.is_available() is False); use device='cpu' or 'auto'"
        )
    return device


def is_device_array(x) -> bool:
    """True for GPU arrays (CuPy, PyTorch CUDA tensors, Numba device arrays): anything with
    ``__cuda_array_interface__``, or the CUDA simulator's stand-in. Imports no CUDA."""
    if hasattr(x, "__cuda_array_interface__"):
        return True
    return type(x).__module__.startswith("numba.cuda.simulator")


def kernels(name: str):
    """The module whose ``run(pred, target, prm, w, pw, out, status)`` scores a piece."""
    if name == "cuda":
        from . import gpu

        return gpu
    from . import cpu

    return cpu
