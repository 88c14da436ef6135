"""Pictures of a scores file (``xent report``): a histogram of per-row losses (log-scaled
loss axis and counts), the mean CCE per class when index labels were kept (else a note
saying why not), and the summary statistics.

The scores file is what ``xent score`` writes (Parquet file or dataset directory, CSV,
JSON Lines or Feather/Arrow IPC): the kept columns, then ``cce`` and/or ``bce``. Only the
loss columns and the label column are read. The statistics are those of the end-of-run
summary (``xent_numba.analysis.summary``), so the numbers match what ``xent score`` printed.

PNG output is one figure; HTML embeds the same figures (as base64 PNG) beside an HTML table.
Needs matplotlib (``pip install 'xent-numba[plot]'``); figures are drawn without pyplot, on
the Agg canvas, so nothing global is changed and no display is needed.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import InvalidInputError
from ..io import storage
from ..losses import log_scale
from .summary import Summary

LOSSES = ("cce", "bce")
MAX_CLASSES_SHOWN = 40
FORMATS = {".png": "png", ".html": "html", ".htm": "html"}


def _matplotlib():
    try:
        with quiet_matplotlib():
            from matplotlib.figure import Figure
    except ImportError:
        raise InvalidInputError(
            "xent report needs matplotlib: pip install 'xent-numba[plot]'"
        ) from None
    return Figure


@contextmanager
def quiet_matplotlib():
    """matplotlib's own notices (an unwritable config or cache folder at import, font and
    layout warnings while drawing) kept off stderr: they say nothing about the report."""
    logger = logging.getLogger("matplotlib")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# an integer column where nearly every row has a value of its own is a row id, not a class
ID_LIKE_SHARE = 0.9
ID_LIKE_MIN_ROWS = 100


def check_class_labels(labels: np.ndarray, column: str) -> None:
    """Refuse a ``--label`` column that cannot be class indices: one where at least
    ``ID_LIKE_SHARE`` of the rows (of at least ``ID_LIKE_MIN_ROWS``) have a value of their
    own, as a row id does; per-class means over it would be one row each."""
    valid = labels[labels >= 0]
    if valid.size < ID_LIKE_MIN_ROWS:
        return
    distinct = np.unique(valid).size
    if distinct >= ID_LIKE_SHARE * valid.size:
        raise InvalidInputError(
            f"--label column {column!r} has {distinct:,} distinct values in {valid.size:,} rows: it "
            "looks like a row id, not a class label; name the integer class column kept in the "
            "scores (xent score ... --keep label)"
        )


# ---- reading -------------------------------------------------------------------------------


def _read_table(path, columns=None) -> pa.Table:
    """A scores file: a local ``Path`` or a ``storage.Location`` (an object in a store)."""
    loc = path if isinstance(path, storage.Location) else None
    suffix = Path(loc.path if loc else path).suffix.lower()
    try:
        src = storage.open_input(loc) if loc else path
        if (loc is None and path.is_dir()) or suffix in (".parquet", ".pq", ".parq"):
            import pyarrow.parquet as pq

            return pq.read_table(src, columns=columns)
        if suffix in (".feather", ".arrow", ".ipc"):
            import pyarrow.feather as feather

            return feather.read_table(src, columns=columns)
        if suffix == ".csv":
            import pyarrow.csv as csv

            return csv.read_csv(src, convert_options=csv.ConvertOptions(include_columns=columns))
        if suffix in (".jsonl", ".ndjson", ".json"):
            import pyarrow.json as pj

            t = pj.read_json(src)
            return t.select(columns) if columns is not None else t
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(f"{path}: cannot read the scores file ({exc})") from None
    raise InvalidInputError(
        f"{path}: unknown scores format {suffix!r}; expected .parquet (or a directory), .csv, "
        ".jsonl or .feather"
    )


def _schema_names(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in (".parquet", ".pq", ".parq"):
        import pyarrow.dataset as ds

        try:
            return list(ds.dataset(path, format="parquet").schema.names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InvalidInputError(f"{path}: cannot read the scores file ({exc})") from None
    if suffix == ".csv":
        with open(path, encoding="utf-8") as f:
            import csv as pycsv

            return next(pycsv.reader([f.readline()]), [])
    return list(_read_table(path).schema.names)


def load_scores(scores_path, label: str | None = None, storage_options=None) -> tuple[dict, np.ndarray | None, str | None]:
    """``({loss: float64 array with NaN for null}, labels or None, label column or None)``.

    ``label`` names an integer column kept in the scores file (``xent score --keep label``);
    without it a column named ``label`` is used when it holds integers. ``scores_path`` may
    be a URL (an object, or a prefix of Parquet parts), read with ``storage_options``."""
    whole = None
    if storage.is_url(storage.local_path(str(scores_path))):
        path = scores_path
        whole = pa.concat_tables(
            [_read_table(loc) for loc in storage.expand(scores_path, storage_options)], promote_options="default"
        )
        names = whole.schema.names
    else:
        path = Path(storage.local_path(str(scores_path)))
        if not path.exists():
            raise InvalidInputError(f"{path}: no such file or directory")
        names = _schema_names(path)
    found = [n for n in LOSSES if n in names]
    if not found:
        raise InvalidInputError(
            f"{path}: no 'cce' or 'bce' column (columns: {', '.join(names) or 'none'}); "
            "is it a file written by `xent score`?"
        )
    label_col = label
    if label is not None and label not in names:
        raise InvalidInputError(
            f"--label column {label!r} is not in {path} (columns: {', '.join(names)}); "
            "keep it when scoring: xent score ... --keep " + label
        )
    if label is None and "label" in names:
        label_col = "label"
    columns = list(dict.fromkeys(found + ([label_col] if label_col else [])))
    table = whole.select(columns) if whole is not None else _read_table(path, columns=columns)
    losses = {}
    for n in found:
        col = table.column(n)
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type)):
            raise InvalidInputError(f"{path}: column {n!r} is {col.type}, not a number")
        losses[n] = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    labels = None
    if label_col:
        col = table.column(label_col)
        if pa.types.is_integer(col.type):
            labels = col.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            if label is not None:
                check_class_labels(labels, label)
        elif label is not None:
            raise InvalidInputError(
                f"--label column {label!r} is {col.type}; per-class means need integer class indices"
            )
        else:
            label_col = None
    return losses, labels, label_col


def summarize(losses: dict, labels: np.ndarray | None) -> Summary:
    s = Summary()
    s.rows = len(next(iter(losses.values())))
    for name, v in losses.items():
        s.add_losses(name, v)
    if labels is not None and "cce" in losses:
        s.add_classes(labels, losses["cce"])
    return s


# ---- figures -------------------------------------------------------------------------------


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return "inf" if math.isinf(v) else f"{v:.4g}"


def summary_rows(summary: Summary, losses: dict) -> tuple[list[str], list[list[str]]]:
    """The summary table: a header and one row per statistic (one column per loss)."""
    names = list(losses)
    stats = {n: summary.stats[n].to_dict() if n in summary.stats else {} for n in names}
    header = ["statistic"] + names
    rows = [["rows"] + [_fmt(summary.rows) for _ in names]]
    rows.append(["null (invalid/ignored)"] + [_fmt(int(np.isnan(losses[n]).sum())) for n in names])
    for key in ("mean", "median", "p95", "min", "max"):
        rows.append([key] + [_fmt(stats[n].get(key)) for n in names])
    rows.append(["infinite"] + [_fmt(summary.stats[n].n_inf if n in summary.stats else 0) for n in names])
    return header, rows


def _per_class(summary: Summary):
    seen, sums, counts = summary.per_class()
    return seen, sums / counts, counts


def log_unit(log_base) -> str:
    """How a loss in ``log_base`` is named on an axis: "nats (log base e)", "bits (log base 2)"."""
    if log_base is None:
        return "log base as scored: e unless --log-base was given"
    b = float(log_base)
    if math.isclose(b, math.e):
        return "nats (log base e)"
    if b == 2:
        return "bits (log base 2)"
    return f"log base {b:g}"


def no_class_panel_reason(losses: dict, summary: Summary, label_col) -> str | None:
    """Why the figure has no per-class panel (None when it has one)."""
    if "cce" not in losses:
        return "No per-class panel: per-class means are drawn for CCE, and this file has only BCE."
    if summary.class_count.size and summary.class_count.sum() > 0:
        return None
    if label_col is None:
        return ("No per-class panel: the scores file has no integer label column "
                "(score with --keep label, then xent report --label label).")
    return f"No per-class panel: no row of column {label_col!r} has a valid class and a scored CCE."


def _loss_histogram(ax, name, v, summary, color, log_base):
    """Histogram of one loss on a log-scaled loss axis (log-spaced bins, log counts): a good
    model's losses span decades (median 0.004, tail 5), which a linear axis squeezes into
    its first bar. Zero losses (and null/inf) cannot sit on a log axis: they are counted in
    the title."""
    finite = v[np.isfinite(v)]
    pos = finite[finite > 0]
    hidden = {"zero": int(finite.size - pos.size), "null/inf": int(v.size - finite.size)}
    if pos.size:
        lo, hi = float(pos.min()), float(pos.max())
        bins = np.geomspace(lo, hi, 61) if hi > lo else np.geomspace(lo / 1.5, hi * 1.5, 11)
        ax.hist(pos, bins=bins, color=color, log=True)
        ax.set_xscale("log")
        st = summary.stats[name].to_dict()
        mean = st["mean"] if math.isfinite(st["mean"]) else float(np.mean(finite))
        for value, style, what in ((mean, "--", "mean"), (st["median"], ":", "median")):
            if value is not None and value > 0:
                ax.axvline(value, color="k", linestyle=style, linewidth=1, label=f"{what} {_fmt(value)}")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finite positive values", ha="center", va="center", transform=ax.transAxes)
    note = ", ".join(f"{n:,} {k}" for k, n in hidden.items() if n)
    ax.set_title(f"{name.upper()} per row" + (f" ({note} not shown)" if note else ""), fontsize=10)
    ax.set_xlabel(f"{name.upper()}, {log_unit(log_base)}\n(log-scaled axis)")
    ax.set_ylabel("rows (log scale)")


def build_figure(losses: dict, summary: Summary, *, label_col=None, with_table: bool = True, log_base=None):
    """One matplotlib Figure: a histogram per loss (log-scaled loss axis labelled with the
    loss's log base), mean CCE per class (index labels) or a note saying why it is absent,
    and (``with_table``) the summary table."""
    Figure = _matplotlib()
    has_classes = "cce" in losses and summary.class_count.size and summary.class_count.sum() > 0
    why_not = no_class_panel_reason(losses, summary, label_col)
    n_rows = 1 + 1 + bool(with_table)
    heights = [3.2] + ([3.0] if has_classes else [0.35]) + ([2.4] if with_table else [])
    fig = Figure(figsize=(11, sum(heights) + 0.8), dpi=100, layout="constrained")
    grid = fig.add_gridspec(n_rows, len(losses), height_ratios=heights)
    fig.suptitle(f"Per-row losses ({summary.rows:,} rows)", fontsize=13)
    colors = {"cce": "#3366aa", "bce": "#cc6633"}
    for j, (name, v) in enumerate(losses.items()):
        _loss_histogram(fig.add_subplot(grid[0, j]), name, v, summary, colors.get(name), log_base)
    r = 1
    if why_not:
        ax = fig.add_subplot(grid[r, :])
        ax.axis("off")
        ax.text(0.5, 0.5, why_not, ha="center", va="center", fontsize=9, style="italic", transform=ax.transAxes)
        r += 1
    if has_classes:
        ax = fig.add_subplot(grid[r, :])
        cls, means, counts = _per_class(summary)
        title = f"mean CCE per class ({label_col})"
        if cls.size > MAX_CLASSES_SHOWN:
            order = np.sort(np.argsort(-means, kind="stable")[:MAX_CLASSES_SHOWN])
            cls, means, counts = cls[order], means[order], counts[order]
            title += f": the {MAX_CLASSES_SHOWN} worst of {summary.class_count.astype(bool).sum()} classes"
        pos = np.arange(cls.size)
        ax.bar(pos, means, color=colors["cce"])
        ax.set_xticks(pos, [str(c) for c in cls], fontsize=8, rotation=90 if cls.size > 20 else 0)
        ax.set_xlabel("class")
        ax.set_ylabel(f"mean CCE, {log_unit(log_base)}")
        ax.set_title(title, fontsize=10)
        r += 1
    if with_table:
        ax = fig.add_subplot(grid[r, :])
        ax.axis("off")
        header, rows = summary_rows(summary, losses)
        tbl = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="right")
        tbl.auto_set_font_size(False)
        tbl.set_fontsize(9)
        tbl.scale(1, 1.15)
    return fig


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _html(losses, summary, fig_png: bytes, source: str, label_col) -> str:
    header, rows = summary_rows(summary, losses)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    classes = ""
    if summary.class_count.size and summary.class_count.sum():
        worst = summary.worst_classes(10)
        trs = "".join(f"<tr><td>{c}</td><td>{m:.4g}</td><td>{n:,}</td></tr>" for c, m, n in worst)
        classes = (
            f"<h2>Worst classes by mean CCE ({html.escape(label_col or 'label')})</h2>"
            f"<table><tr><th>class</th><th>mean CCE</th><th>rows</th></tr>{trs}</table>"
        )
    img = base64.b64encode(fig_png).decode("ascii")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xent report: {html.escape(source)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>xent report</h1>
<p>Scores: <code>{html.escape(source)}</code>, {summary.rows:,} rows.</p>
<h2>Summary</h2>
<table><tr>{th}</tr>{body}</table>
{classes}
<h2>Figures</h2>
<img alt="histograms of per-row losses and per-class mean CCE" src="data:image/png;base64,{img}">
</body></html>
"""


def render_report(scores_path, output, label: str | None = None, log_base=None, storage_options=None) -> dict:
    """Write a PNG or HTML report (chosen by ``output``'s suffix) of a scores file; return
    ``{"output": path, "format": "png"|"html", "summary": Summary.to_dict()}``.

    ``log_base``: the base the losses were scored in (``xent score --log-base``), named on
    the axes; None when unknown. ``scores_path`` and ``output`` may be URLs."""
    remote = storage.is_url(storage.local_path(str(output)))
    out = Path(storage.local_path(str(output)))
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise InvalidInputError(f"{out}: the report must end in .png or .html")
    _matplotlib()  # fail before reading a large file
    if log_base is not None:
        log_scale(log_base)  # a base > 0 and != 1, or a clear error
    if remote:
        return _render_to_url(scores_path, str(output), fmt, label, log_base, storage_options)
    if not out.parent.exists():
        raise InvalidInputError(f"{out.parent}: output directory does not exist")
    losses, labels, label_col = load_scores(scores_path, label, storage_options)
    summary = summarize(losses, labels)
    with quiet_matplotlib():
        fig = build_figure(losses, summary, label_col=label_col, with_table=fmt == "png", log_base=log_base)
        data = _png_bytes(fig)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        if fmt == "png":
            tmp.write_bytes(data)
        else:
            tmp.write_text(_html(losses, summary, data, str(scores_path), label_col), encoding="utf-8")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"output": str(out), "format": fmt, "summary": summary.to_dict()}


def _render_to_url(scores_path, url: str, fmt: str, label, log_base, storage_options) -> dict:
    """``render_report`` into an object store: a temporary object moved into place."""
    target = storage.RemoteOutput(url, storage_options, overwrite=True)  # checked before reading
    try:
        losses, labels, label_col = load_scores(scores_path, label, storage_options)
        summary = summarize(losses, labels)
        with quiet_matplotlib():
            fig = build_figure(losses, summary, label_col=label_col, with_table=fmt == "png", log_base=log_base)
            data = _png_bytes(fig)
        if fmt == "html":
            data = _html(losses, summary, data, str(scores_path), label_col).encode("utf-8")
        try:
            target.open().write(data)
        except OSError as exc:
            raise target.error(exc) from None
        target.commit()
    except BaseException:
        target.abort()
        raise
    return {"output": url, "format": fmt, "summary": summary.to_dict()}


__all__ = ["render_report", "load_scores", "build_figure", "summarize", "log_unit", "no_class_panel_reason"]
