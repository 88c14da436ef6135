"""SIGINT, SIGTERM and SIGHUP as ``Interrupted`` in the main thread, deferred while a
cleanup or the final rename runs."""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # not POSIX: no leases, mapped Arrow IPC is read through a file
    fcntl = None



# ---- signals ----------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP received: raised in the main thread. ``exit_code`` is
    128 + the signal number (130, 143, 129), the shell's convention."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _SignalState:
    signum = None  # the first signal received
    at = 0.0  # when (time.monotonic)
    deferred = 0  # > 0 while a cleanup or the final rename runs: signals are only recorded
    done = False  # the output is in place: the run has succeeded, a late signal changes nothing


_SIGNALS = _SignalState()
HANDLED_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
# after a first signal, more within this many seconds are recorded, not raised: a second
# Ctrl-C must not cut the cleanup (or the exit) short; a run still alive later can be stopped again
REPEAT_GRACE_S = 5.0


def _on_signal(signum, frame) -> None:
    now = time.monotonic()
    repeat = _SIGNALS.signum is not None and now - _SIGNALS.at < REPEAT_GRACE_S
    if _SIGNALS.signum is None:
        _SIGNALS.signum, _SIGNALS.at = signum, now
    if not (_SIGNALS.deferred or _SIGNALS.done or repeat):
        _SIGNALS.at = now
        raise Interrupted(signum)


def install_signal_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` in the main thread (the CLI calls
    this): every run then removes its temporary files on any of them. A signal that lands
    while a cleanup or the final rename runs, or within ``REPEAT_GRACE_S`` of the first, is
    recorded, not raised: the cleanup finishes."""
    _SIGNALS.signum, _SIGNALS.done = None, False
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, _on_signal)


def ignore_signals() -> None:
    """Ignore SIGINT, SIGTERM and SIGHUP from here on (the CLI calls this on its way out:
    the run is over and cleaned up; a signal during interpreter shutdown, which restores
    the default handlers, would otherwise turn the exit code into a death by signal)."""
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextmanager
def deferred_signals():
    """Signals received inside are recorded, not raised (cleanup must run to its end)."""
    _SIGNALS.deferred += 1
    try:
        yield
    finally:
        _SIGNALS.deferred -= 1


def output_in_place() -> None:
    """Called right after the output was renamed into place (signals deferred): from now
    on a signal is ignored, the run has succeeded (exit 0 always means a complete output,
    a signal's exit code never comes with one)."""
    _SIGNALS.done = True


def check_interrupted() -> None:
    """Raise ``Interrupted`` if a signal was received, even one whose exception was
    swallowed (e.g. raised inside a finaliser during start-up: "Exception ignored")."""
    if _SIGNALS.signum is not None:
        raise Interrupted(_SIGNALS.signum)
