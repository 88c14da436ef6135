"""The ``xent`` command line: a thin Typer shell over the library.

Each command calls one library function and turns library errors into one clear message
on stderr and an exit code: 2 for bad usage or bad input, 1 for anything unexpected.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

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


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _advice_panel(advice: dict):
    """The readable form of ``xent advise``: a rich panel."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    rec = advice["recommended_loss"]
    head = Text.assemble(
        ("Recommended loss: ", "bold"),
        ((rec or "none").upper(), "bold green" if rec else "bold red"),
        f"\nlabels: {advice['label_kind']}    predictions: {advice['pred_kind']}",
    )
    parts = [head, Text("")]
    parts += [Text(s) for s in advice["explanation"]]
    for w in advice["warnings"]:
        parts.append(Text.assemble(("warning: ", "bold yellow"), w))
    ev = advice["evidence"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="dim")
    table.add_column()
    def num(v):
        return f"{v:.4g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)

    for key, val in ev.items():
        if isinstance(val, dict):
            val = ", ".join(f"{k} {num(v)}" for k, v in val.items())
        table.add_row(key.replace("_", " "), num(val))
    parts += [Text(""), Text("Evidence", style="bold"), table]
    return Panel(Group(*parts), title="xent advise", expand=False)


@app.command("advise")
def advise_cmd(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Parquet files, directories or globs (only the first --sample-rows rows are read).", show_default=False)],
    pred: Annotated[str, typer.Option("--pred", help="Prediction column (a list per row), or a glob over one scalar column per class.")] = "pred",
    label: Annotated[str, typer.Option("--label", help="Label column: integer classes, or a list per row (one-hot, multi-hot, soft), or a glob.")] = "label",
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")] = False,
    sample_rows: Annotated[int, typer.Option("--sample-rows", min=1, help="How many rows to read (the first ones, streamed).")] = 100_000,
    ignore_index: Annotated[int | None, typer.Option("--ignore-index", help="Index label that marks rows to ignore (e.g. -100).")] = None,
):
    """Tell which loss fits the data: CCE (one exclusive choice per row) or BCE (independent yes/no per class).

    Reports the kind of labels (index, one_hot, multi_hot, soft) and of predictions (logits, normalised or independent probabilities), the recommended loss, why, and warnings.

    Example: [bold]xent advise data/seed_example.parquet --label label_one_hot --json[/]
    """
    import json

    from .advise import advise_file
    from .errors import InvalidInputError

    try:
        advice = advise_file(inputs, pred=pred, label=label, sample_rows=sample_rows, ignore_index=ignore_index)
    except InvalidInputError as e:
        fail(_escape(str(e)), 2)
    if as_json:
        typer.echo(json.dumps(advice, indent=2))
    else:
        out_console.print(_advice_panel(advice))


@app.command("report")
def report_cmd(
    scores: Annotated[str, typer.Argument(metavar="SCORES", help="A scores file written by `xent score` (.parquet or dataset directory, .csv, .jsonl, .feather).", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="report.png or report.html.", show_default=False)],
    label: Annotated[str | None, typer.Option("--label", help="Integer label column kept in SCORES (xent score --keep label) for per-class mean CCE; default: 'label' when present.")] = None,
):
    """Draw the losses: a histogram of per-row losses (log-scaled counts), mean CCE per class, and the summary.

    PNG is one figure; HTML embeds the same figures with the summary table. Needs matplotlib: pip install 'xent-numba\\[plot]'.

    Example: [bold]xent report scores.parquet --label label -o report.png[/]
    """
    from .errors import InvalidInputError
    from .report import render_report

    try:
        res = render_report(scores, output, label=label)
    except InvalidInputError as e:
        fail(_escape(str(e)), 2)
    except OSError as e:
        fail(_escape(f"{output}: cannot write the report ({e.strerror or e})"), 2)
    out_console.print(f"Wrote {res['output']} ({res['format'].upper()}, {res['summary']['rows']:,} rows)", highlight=False)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("[bold red]Interrupted.[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
