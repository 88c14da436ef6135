"""The ``xent`` command line: ``commands`` (``app``, the Typer application; ``main``, the console script)."""

from .commands import app, main  # noqa: F401
