"""The one place that decides CPU vs GPU."""

from __future__ import annotations

import os
import warnings

from .arrow import is_device_array  # noqa: F401  (the CPU/GPU decision reads it; defined below gpu)
from .errors import InvalidInputError
from .losses import DEVICES

SIMULATOR_ENV = "XENT_NUMBA_SIMULATOR"


CUDA_EXTRA_HINT = "pip install 'xent-numba[cuda]'"


def cuda_installed() -> bool:
    """True when the optional CUDA stack (the ``cuda`` extra: numba-cuda) can be imported.

    The CPU paths never need it: ``xent_numba`` imports no CUDA module until a GPU is asked for.
    """
    try:
        import numba_cuda  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_usable() -> bool:
    """True when numba-cuda sees a usable GPU.

    The CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, which the test suite turns on) counts
    only when ``XENT_NUMBA_SIMULATOR=1`` is set too: it interprets every GPU thread in Python,
    far slower than the CPU kernels, so ``device="auto"`` must never pick it by accident.
    """
    if not cuda_installed():
        return False
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
        why = "no CUDA GPU is usable here" if cuda_installed() else f"the CUDA extra is not installed ({CUDA_EXTRA_HINT})"
        warnings.warn(f"device='auto': {why}, scoring on the CPU", RuntimeWarning, stacklevel=4)
        return "cpu"
    if device == "cuda" and not cuda_installed():
        raise InvalidInputError(
            f"device='cuda' needs the CUDA extra, which is not installed: {CUDA_EXTRA_HINT} "
            "(numba-cuda); use device='cpu' or 'auto' meanwhile"
        )
    if device == "cuda" and not cuda_usable():
        raise InvalidInputError(
            "device='cuda' was asked for but no CUDA GPU is usable here "
            "(numba.cuda.is_available() is False); use device='cpu' or 'auto'"
        )
    return device


def kernels(name: str):
    """The module whose ``run(pred, target, prm, w, pw, out, status)`` scores a piece."""
    if name == "cuda":
        if not cuda_installed():
            raise InvalidInputError(f"the CUDA backend needs the CUDA extra: {CUDA_EXTRA_HINT}")
        from .kernels import gpu

        return gpu
    from .kernels import cpu

    return cpu


# ---- compile notices ----------------------------------------------------------------------

COMPILE_SECONDS = 10  # the notice's estimate per kernel signature (benchmarks/bench_compile.py)
_announcer = None


def announce_compiles(say) -> None:
    """Call ``say(message)`` once, just before the first xent-numba kernel compiles in this
    process (a cache miss: a new input type, or a cold cache after install or upgrade).

    Uses Numba's ``numba:compile`` event, which fires only when a compilation is about to
    start (a kernel loaded from the on-disk cache raises none), so it costs nothing on a
    warm cache. ``say=None`` removes the hook.
    """
    global _announcer
    from numba.core import event

    if _announcer is not None:
        event.unregister("numba:compile", _announcer)
        _announcer = None
    if say is None:
        return

    class _Announce(event.Listener):
        done = False

        def on_start(self, ev):
            disp = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
            module = getattr(getattr(disp, "py_func", None), "__module__", "") or ""
            if not self.done and module.startswith("xent_numba"):
                self.done = True
                say(
                    f"compiling kernels (first run, ~{COMPILE_SECONDS} s per input type; cached "
                    "afterwards; `xent warmup` compiles the common ones ahead of time)"
                )

        def on_end(self, ev):
            pass

    _announcer = _Announce()
    event.register("numba:compile", _announcer)
