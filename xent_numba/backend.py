"""The one place that decides CPU vs GPU."""

from __future__ import annotations

from .errors import InvalidInputError
from .losses import DEVICES


def cuda_usable() -> bool:
    """True when numba-cuda sees a usable GPU (or the CUDA simulator is enabled)."""
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # no driver, no toolkit, broken install: all mean "no GPU"
        return False


def resolve(device: str) -> str:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` -> the backend name that will run."""
    if device not in DEVICES:
        raise InvalidInputError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    if device == "auto":
        return "cuda" if cuda_usable() else "cpu"
    if device == "cuda" and not cuda_usable():
        raise InvalidInputError(
            "device='cuda' was asked for but no CUDA GPU is usable here "
            "(numba.cuda.is_available() is False); use device='cpu' or 'auto'"
        )
    return device


def kernels(name: str):
    """The module whose ``run(pred, target, prm, w, pw, out, status)`` scores a piece."""
    if name == "cuda":
        from . import gpu

        return gpu
    from . import cpu

    return cpu
