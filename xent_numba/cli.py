"""The ``xent`` command line: a thin Typer shell over the library.

Each command calls one library function and turns library errors into one clear message
on stderr and an exit code: 2 for bad usage or bad input, 1 for anything unexpected.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from . import __version__

app = typer.Typer(
    name="xent",
    help="Score per-row categorical (CCE) and binary (BCE) cross-entropy over large Parquet dumps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err_console = Console(stderr=True)
out_console = Console()


def fail(message: str, code: int = 2) -> None:
    """Print one clear error line on stderr and exit with ``code``."""
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _version(value: bool):
    if value:
        out_console.print(f"xent-numba {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
):
    """Score per-row CCE and BCE over Parquet evaluation dumps.

    Example: [bold]xent score data/sample.parquet -o scores.parquet --keep id[/]
    """


# ---- score (issue 3) ------------------------------------------------------------------


# ---- advise / report (issue 7) --------------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[bold red]Interrupted.[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
