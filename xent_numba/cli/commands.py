"""The ``xent`` command line: a thin Typer shell over the library.

Each command calls one library function and turns library errors into one clear message
on stderr and an exit code: 2 for bad usage or bad input, 1 for anything unexpected.
"""

from __future__ import annotations

import gc
import json
import math
import os
import sys
import time
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .. import __version__


class _FlagMetavars:
    """Help that shows flags as flags: Typer's rich help gives every option a type column,
    and a flag's ``<bool>`` there reads as if it took a value (``--from-logits true``)."""

    def get_help_option(self, ctx):
        opt = super().get_help_option(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt


class _Command(_FlagMetavars, typer.core.TyperCommand):
    pass


class _Group(_FlagMetavars, typer.core.TyperGroup):
    pass


app = typer.Typer(
    cls=_Group,
    name="xent",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err_console = Console(stderr=True)
out_console = Console()


def fail(message: str, code: int = 2) -> None:
    """Print one clear error line on stderr and exit with ``code`` (the message is shown
    verbatim: brackets in column names or in ``pip install 'x[extra]'`` survive)."""
    from rich.markup import escape

    err_console.print(f"[bold red]Error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _version(value: bool):
    if value:
        out_console.print(f"xent-numba {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", metavar="", callback=_version, is_eager=True, help="Show the version and exit."),
):
    """Score per-row CCE and BCE over Parquet evaluation dumps.

    Example: [bold]xent score data/sample.parquet -o scores.parquet --keep id[/]
    """


# ---- score (issue 3) ------------------------------------------------------------------

def _choice(name: str, values: str) -> type[Enum]:
    return Enum(name, {v: v for v in values.split()}, type=str)


Loss = _choice("Loss", "cce bce both")
Reduce = _choice("Reduce", "sum mean")
Device = _choice("Device", "cpu cuda auto")
OnInvalid = _choice("OnInvalid", "error null")
Format = _choice("Format", "parquet csv jsonl arrow")
Engine = _choice("Engine", "local dask")
STORAGE_HELP = ("Option for s3://, gs://, hdfs://, abfs:// or fsspec URLs (repeatable), e.g. endpoint_override=http://127.0.0.1:9000, "
                "region=eu-west-1, anonymous=true; credentials come from the environment and config files.")


def _number(text: str, option: str) -> float:
    if text.strip().lower() == "e":
        return math.e
    try:
        return float(text)
    except ValueError:
        fail(f"{option} must be a number (or 'e'), got {text!r}")


def _log_base(text: str) -> float:
    """``--log-base`` as a number, refused under the option's own name (not the API keyword)."""
    base = _number(text, "--log-base")
    if not (math.isfinite(base) and base > 0 and base != 1):
        fail(f"--log-base must be a finite number > 0 and != 1 (e, 2, 10, ...), got {text!r}")
    return base


def _weights(text: str | None, option: str):
    """``"2.5"`` -> 2.5, ``"1,2,0.5"`` -> (1.0, 2.0, 0.5)."""
    if text is None:
        return None
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        fail(f"{option} must be a number or a comma-separated list of numbers, got {text!r}")
    return values[0] if len(values) == 1 and option == "--pos-weight" else values


def _eps(text: str):
    try:
        return float(text)
    except ValueError:
        return text


@app.command(cls=_Command)
def score(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT", help="Parquet or Arrow IPC/Feather files, directories of them, or globs.", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Output file (.parquet, .csv, .jsonl/.ndjson, .arrow/.feather), - for standard output (with --format csv or jsonl); a directory with --engine dask. Never an input.", show_default=False)],
    loss: Annotated[Loss, typer.Option(help="cce: one exclusive choice per row; bce: C independent yes/no questions; both.")] = Loss("cce"),
    pred: Annotated[str, typer.Option(help="Prediction column (list of class scores), or a glob such as 'p_*' of scalar columns, one per class.")] = "pred",
    label: Annotated[str, typer.Option(help="Label column: integer class indices, or lists (or a glob of scalar columns) in the layout of --pred.")] = "label",
    from_logits: Annotated[bool, typer.Option("--from-logits", metavar="", help="Predictions are logits (softmax for cce, sigmoid for bce).")] = False,
    log_base: Annotated[str, typer.Option(help="Logarithm base: e, 2, 10 or any number > 0 other than 1.")] = "e",
    eps: Annotated[str, typer.Option(help="Probability clipping: a number, or auto|keras|torch|sklearn|none.")] = "auto",
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing epsilon in [0, 1].")] = 0.0,
    class_weight: Annotated[str | None, typer.Option(help="CCE class weights, comma-separated, one per class.", show_default=False)] = None,
    pos_weight: Annotated[str | None, typer.Option(help="BCE positive-class weight: one number or one per class, comma-separated.", show_default=False)] = None,
    ignore_index: Annotated[int | None, typer.Option(help="Rows with this index label get a null score, counted as ignored (a CCE option; BCE skips them too).", show_default=False)] = None,
    normalize: Annotated[bool, typer.Option("--normalize", metavar="", help="CCE from probabilities: divide each row by its sum first (Keras' convention).")] = False,
    bce_reduce: Annotated[Reduce, typer.Option(help="BCE: sum or mean over the C components of a row.")] = Reduce("sum"),
    keep: Annotated[list[str] | None, typer.Option(help="Column carried into the output unchanged (repeatable), e.g. a row id.", show_default=False)] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", metavar="GLOB", help="Column left out of the wide matches of --pred and --label (repeatable), e.g. p_max.", show_default=False)] = None,
    device: Annotated[Device, typer.Option(help="cpu, cuda, or auto (the GPU when one is usable).")] = Device("cpu"),
    threads: Annotated[int | None, typer.Option(help="CPU threads for the kernels and the Parquet decoder (default: all cores, or NUMBA_NUM_THREADS).", show_default=False, min=1)] = None,
    batch_rows: Annotated[int | None, typer.Option(help="Rows per batch (default: about 8 MB of decoded input).", show_default=False, min=1)] = None,
    on_invalid: Annotated[OnInvalid, typer.Option(help="error: stop at the first invalid row; null: give it a null score and count it.")] = OnInvalid("error"),
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar="", help="Replace OUTPUT (and --summary-json) if it exists; an input is never replaced.")] = False,
    fmt: Annotated[Format | None, typer.Option("--format", help="Output format (default: from OUTPUT's extension).", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="No progress bar, summary or notes; errors only.")] = False,
    summary_json: Annotated[Path | None, typer.Option(help="Also write the summary and what was run as strict JSON to this path (checked before the run, like OUTPUT).", show_default=False)] = None,
    engine: Annotated[Engine, typer.Option(help="local: this process; dask: a Dask cluster (pip install 'xent-numba\\[dask]').")] = Engine("local"),
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (default: an embedded LocalCluster).", envvar="XENT_DASK_SCHEDULER", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(help="Dask LocalCluster worker processes, one thread each (default: one in-process worker with a thread per core).", show_default=False, min=1)] = None,
    storage_option: Annotated[list[str] | None, typer.Option("--storage-option", metavar="KEY=VALUE", help=STORAGE_HELP, show_default=False)] = None,
):
    """Score every row of INPUT and write the per-row losses, in input order, to OUTPUT.

    Example: [bold]xent score data/sample.parquet -o scores.parquet --keep id[/]

    Example: [bold]xent score dumps/*.parquet -o scores.csv --from-logits --loss both --log-base 10[/]

    Example: [bold]xent score s3://evals/run-42/ -o s3://evals/run-42-scores.parquet --storage-option region=eu-west-1[/]

    The output has the --keep columns, then cce and/or bce. It is written to a temporary
    file and renamed when every row is scored: a failed run leaves no output. Exit codes:
    0 done, 2 bad usage, bad input or an output that may not be written, 1 anything
    unexpected, 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP.
    """
    from .. import backend, io
    from ..engine import local as pipeline
    from ..errors import InvalidInputError
    from ..io import storage

    loss, bce_reduce, device, on_invalid, engine = (
        x.value for x in (loss, bce_reduce, device, on_invalid, engine)
    )
    fmt = fmt.value if fmt is not None else None
    started = time.perf_counter()
    _check_flag_words(inputs)
    if engine != "dask":
        given = [name for name, value in (("--workers", workers), ("--scheduler", scheduler))
                 if value is not None and _from_command_line(ctx, name)]
        if given:
            fail(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to --engine dask only; "
                 "add --engine dask, or leave it out")
    # the tables go to stderr when the scores go to stdout (a pipe must get the scores only)
    console = err_console if _is_stdout(output) else out_console
    try:
        storage_options = storage.parse_options(storage_option)
        if summary_json is not None:  # checked before the run, by the rules of OUTPUT
            if os.path.abspath(str(summary_json)) == os.path.abspath(output) and not io.is_stdout(output):
                fail(f"--summary-json {summary_json} is OUTPUT; give it another name")
            files = io.expand_inputs(inputs, storage_options=storage_options)  # as both engines do
            io.check_output(summary_json, files, given=inputs, overwrite=overwrite, what="--summary-json")
        if device != "cpu":
            with warnings.catch_warnings():  # the CLI says which device it chose, below
                warnings.simplefilter("ignore")
                chosen = backend.resolve(device)
            if device == "auto" and not quiet:
                note = "a CUDA GPU is usable" if chosen == "cuda" else (
                    "no CUDA GPU is usable" if backend.cuda_installed()
                    else f"the CUDA extra is not installed: {backend.CUDA_EXTRA_HINT}")
                err_console.print(f"device: {chosen} ({note})", highlight=False, markup=False)
            device = chosen
        opts = pipeline.ScoreOptions(
            loss=loss, pred=pred, label=label, from_logits=from_logits,
            log_base=_log_base(log_base), eps=_eps(eps), label_smoothing=label_smoothing,
            class_weight=_weights(class_weight, "--class-weight"), pos_weight=_weights(pos_weight, "--pos-weight"),
            ignore_index=ignore_index, bce_reduce=bce_reduce, keep=tuple(keep or ()), device=device,
            on_invalid=on_invalid, normalize=normalize, exclude=tuple(exclude or ()),
        )
        if not quiet and engine == "local":  # one line on stderr before a (cache-miss) compile
            backend.announce_compiles(lambda m: err_console.print(m, highlight=False, soft_wrap=True))
        with _progress(quiet) as progress:
            kwargs = dict(fmt=fmt, overwrite=overwrite, on_start=progress.start, on_progress=progress.update,
                          storage_options=storage_options, on_columns=None if quiet else _columns_header)
            if engine == "dask":
                from ..engine import dask as xdask

                summary = xdask.score_files(inputs, output, opts, scheduler=scheduler, workers=workers, **kwargs)
            else:
                summary = pipeline.score_files(
                    inputs, output, opts, batch_rows=batch_rows, threads=threads,
                    on_warning=None if quiet else _warn, **kwargs,
                )
        elapsed = time.perf_counter() - started
        if summary_json is not None:
            record = _run_record(summary, elapsed, inputs=inputs, files=files, output=output, opts=opts,
                                 fmt="parquet" if engine == "dask" else io.output_format(str(output), fmt),
                                 engine=engine)
            text = json.dumps(_strict_json(record), indent=2, allow_nan=False)
            io.write_text(summary_json, text + "\n", overwrite)
    except InvalidInputError as e:
        if getattr(e, "pipe_closed", False):  # `-o - | head`: the reader had enough
            raise typer.Exit(141) from None
        fail(str(e), 2)
    except typer.Exit:
        raise
    except io.Interrupted as e:
        err_console.print("[bold red]Interrupted.[/]")
        raise typer.Exit(e.exit_code) from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # a bug or an environment problem: one line, exit 1
        fail(f"unexpected error: {type(e).__name__}: {e}", 1)
    if not quiet:
        show_summary(summary, elapsed, output, console)


# what a user may type after a flag, reading its help as if it took a value
_FLAG_WORDS = {"true", "false", "yes", "no", "on", "off"}


def _check_flag_words(inputs) -> None:
    """Refuse an INPUT such as ``true`` that does not exist: it was meant as a flag's value
    (``--from-logits true``), and flags take none."""
    for item in inputs:
        if item.lower() in _FLAG_WORDS and not os.path.exists(item):
            fail(f"{item!r} is not an input file: flags such as --from-logits, --normalize and "
                 "--overwrite take no value (write the flag alone)")


def _from_command_line(ctx: typer.Context, option: str) -> bool:
    """The option was typed on the command line (not taken from its environment variable)."""
    source = ctx.get_parameter_source(option.lstrip("-").replace("-", "_"))
    return source is None or source.name == "COMMANDLINE"


def _run_record(summary, elapsed: float, *, inputs, files, output, opts, fmt: str, engine: str) -> dict:
    """What ``--summary-json`` holds: what was run (version, inputs as given and how many
    files they named, output, format, engine, device, every scoring option), then the
    summary (``Summary.to_dict``), each loss with how its median and p95 were found
    (``summary.QUANTILES``: approximate), and the timing."""
    import dataclasses

    from ..analysis.summary import QUANTILES

    d = summary.to_dict()
    d["losses"] = {name: st | {"quantiles": QUANTILES} for name, st in d["losses"].items()}
    options = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts) if f.name != "device"}
    return {
        "version": __version__,
        "inputs": {"given": [str(i) for i in inputs], "files": len(files)},
        "output": str(output),
        "format": fmt,
        "engine": engine,
        "device": opts.device,
        "options": options,
        **d,
        "wall_seconds": elapsed,
        "rows_per_second": summary.rows / elapsed if elapsed > 0 else None,
    }


def _strict_json(value):
    """``value`` with each non-finite float as a string, ``"Infinity"``, ``"-Infinity"`` or
    ``"NaN"`` (what ``float()`` reads back): strict JSON, which every parser accepts (the
    bare tokens Python's ``json`` writes are not JSON). ``None`` stays ``null``: no value."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def _is_stdout(output: str) -> bool:
    """OUTPUT is standard output: ``-``, or a name of it such as /dev/stdout."""
    if output == "-":
        return True
    try:
        return os.path.realpath(output) == os.path.realpath("/dev/stdout") or os.path.samefile(output, "/dev/stdout")
    except OSError:
        return False


def _columns_header(cols) -> None:
    """The run header: the columns a run reads (a glob's matches named), on stderr."""
    from rich.markup import escape

    err_console.print(escape(cols.header()), highlight=False, soft_wrap=True)


def _warn(message: str) -> None:
    from rich.markup import escape

    err_console.print(f"[bold yellow]Warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


class _NoProgress:
    def start(self, total):
        pass

    def update(self, done):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Progress(_NoProgress):
    """A rich progress bar on stderr: rows, rows/s, ETA."""

    def __init__(self):
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("scoring"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        )
        self._task = None
        self._t0 = time.perf_counter()

    def start(self, total):
        self._task = self._bar.add_task("score", total=total, rate="")

    def update(self, done):
        if self._task is not None:
            dt = time.perf_counter() - self._t0
            self._bar.update(self._task, completed=done, rate=f"{done / dt:,.0f} rows/s" if dt > 0 else "")

    def __enter__(self):
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bar.__exit__(*exc)


def _progress(quiet: bool):
    return _NoProgress() if quiet or not err_console.is_terminal else _Progress()


def show_summary(summary, elapsed: float, output, console=None) -> None:
    """The end-of-run table (shared by the local and the Dask engines)."""
    from rich.table import Table

    out_console = console or globals()["out_console"]

    d = summary.to_dict()
    table = Table(title=f"xent score -> {output}", title_justify="left")
    table.add_column("rows scored", justify="right")
    table.add_column("invalid", justify="right")
    table.add_column("ignored", justify="right")
    table.add_column("wall time", justify="right")
    table.add_column("rows/s", justify="right")
    table.add_row(
        f"{d['rows']:,}", f"{d['invalid_rows']:,}", f"{d['ignored_rows']:,}", f"{elapsed:.2f} s",
        f"{d['rows'] / elapsed:,.0f}" if elapsed > 0 else "-",
    )
    out_console.print(table)
    from ..analysis.summary import QUANTILES

    # median and p95 come from the log-binned histogram: marked approximate (~)
    losses = Table(show_edge=True)
    for name in ("loss", "mean", "median~", "p95~", "max"):
        losses.add_column(name, justify="right" if name != "loss" else "left")
    for name, st in d["losses"].items():
        cells = [st[k] for k in ("mean", "median", "p95", "max")]
        losses.add_row(name, *("-" if v is None else f"{v:.4g}" for v in cells))
    out_console.print(losses)
    out_console.print(f"~ {QUANTILES['description']}", highlight=False, soft_wrap=True)
    if d["worst_classes"]:
        worst = Table(title="worst classes by mean CCE", title_justify="left")
        for name in ("class", "mean CCE", "rows"):
            worst.add_column(name, justify="right")
        for row in d["worst_classes"]:
            worst.add_row(str(row["class"]), f"{row['mean_cce']:.4g}", f"{row['rows']:,}")
        out_console.print(worst)


# ---- advise / report (issue 7) --------------------------------------------------------


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


@app.command("advise", cls=_Command)
def advise_cmd(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Parquet files, directories or globs (only the first --sample-rows rows are read).", show_default=False)],
    pred: Annotated[str, typer.Option("--pred", help="Prediction column (a list per row), or a glob over one scalar column per class.")] = "pred",
    label: Annotated[str, typer.Option("--label", help="Label column: integer classes, or a list per row (one-hot, multi-hot, soft), or a glob.")] = "label",
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="Print exactly one JSON object on stdout.")] = False,
    sample_rows: Annotated[int, typer.Option("--sample-rows", min=1, help="How many rows to read (the first ones, streamed).")] = 100_000,
    ignore_index: Annotated[int | None, typer.Option("--ignore-index", help="Index label that marks rows to ignore (e.g. -100).")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", metavar="GLOB", help="Column left out of the wide matches of --pred and --label (repeatable).", show_default=False)] = None,
    storage_option: Annotated[list[str] | None, typer.Option("--storage-option", metavar="KEY=VALUE", help=STORAGE_HELP, show_default=False)] = None,
):
    """Tell which loss fits the data: CCE (one exclusive choice per row) or BCE (independent yes/no per class).

    Reports the kind of labels (index, one_hot, multi_hot, soft) and of predictions (logits, normalised or independent probabilities), the recommended loss, why, and warnings.

    Example: [bold]xent advise data/seed_example.parquet --label label_one_hot --json[/]
    """
    import json

    from ..analysis.advise import advise_file
    from ..errors import InvalidInputError
    from ..io import storage

    try:
        advice = advise_file(inputs, pred=pred, label=label, sample_rows=sample_rows, ignore_index=ignore_index,
                             storage_options=storage.parse_options(storage_option), exclude=tuple(exclude or ()))
    except InvalidInputError as e:
        fail(str(e), 2)
    if as_json:
        typer.echo(json.dumps(advice, indent=2))
    else:
        out_console.print(_advice_panel(advice))


@app.command("report", cls=_Command)
def report_cmd(
    scores: Annotated[str, typer.Argument(metavar="SCORES", help="A scores file written by `xent score` (.parquet or dataset directory, .csv, .jsonl, .feather).", show_default=False)],
    output: Annotated[str, typer.Option("-o", "--output", help="report.png or report.html (a path or a URL).", show_default=False)],
    label: Annotated[str | None, typer.Option("--label", help="Integer label column kept in SCORES (xent score --keep label) for per-class mean CCE; default: 'label' when present.")] = None,
    log_base: Annotated[str | None, typer.Option("--log-base", help="The --log-base the scores were computed with (e, 2, 10, ...), named on the axes.", show_default=False)] = None,
    storage_option: Annotated[list[str] | None, typer.Option("--storage-option", metavar="KEY=VALUE", help=STORAGE_HELP, show_default=False)] = None,
):
    """Draw the losses: a histogram of per-row losses (log-scaled loss axis and counts), mean CCE per class, and the summary.

    PNG is one figure; HTML embeds the same figures with the summary table. Needs matplotlib: pip install 'xent-numba\\[plot]'.

    Example: [bold]xent report scores.parquet --label label -o report.png[/]
    """
    from ..analysis.report import render_report
    from ..errors import InvalidInputError
    from ..io import storage

    try:
        res = render_report(scores, output, label=label, storage_options=storage.parse_options(storage_option),
                            log_base=None if log_base is None else _number(log_base, "--log-base"))
    except InvalidInputError as e:
        fail(str(e), 2)
    except OSError as e:
        fail(f"{output}: cannot write the report ({e.strerror or e})", 2)
    out_console.print(f"Wrote {res['output']} ({res['format'].upper()}, {res['summary']['rows']:,} rows)", highlight=False)


@app.command("warmup", cls=_Command)
def warmup_cmd(
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Processes compiling side by side (default: one per CPU).", show_default=False)] = None,
    all_kernels: Annotated[bool, typer.Option("--all", metavar="", help="Also the kernels for label smoothing and class/pos weights.")] = False,
):
    """Compile the CPU kernels for every input type ahead of time (once after installing).

    Kernels are compiled on first use and cached on disk; this compiles the common ones now,
    once, so that no later run waits for a compile.
    """
    from ..engine.warmup import warmup

    err_console.print("compiling kernels for every input type (once; cached on disk) ...", highlight=False)
    try:
        took = warmup(jobs=jobs, include_options=all_kernels, say=lambda m: err_console.print(m, highlight=False))
    except Exception as e:  # a broken Numba/LLVM install, a full disk: one line, exit 1
        fail(f"warm-up failed: {type(e).__name__}: {e}", 1)
    err_console.print(f"done in {took:.1f} s", highlight=False)


def main() -> None:
    """Console-script entry point."""
    # OpenMP's default keeps idle kernel threads spinning for a while after each launch;
    # in the streaming pipeline that spinning takes CPU from the Parquet decoder, which
    # shares the same cores. Read by the OpenMP runtime when the first kernel starts; a
    # value the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ..io import ignore_signals, install_signal_handlers

    # SIGTERM and SIGHUP stop a run like Ctrl-C: temporary files removed, exit 143 / 129
    install_signal_handlers()
    try:
        app()
    except KeyboardInterrupt as e:
        err_console.print("[bold red]Interrupted.[/]")
        sys.exit(getattr(e, "exit_code", 130))
    finally:
        ignore_signals()
        # the interpreter's last collections at exit walk every object Numba and pyarrow
        # made (a visible part of a short run); frozen, they are skipped (nothing is left to free)
        gc.freeze()


if __name__ == "__main__":
    main()
