"""`xent report`: a real PNG and an HTML page from a scores file, and clear errors."""

from __future__ import annotations

import base64
import math
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import xent_numba as xn
from xent_numba.analysis.report import load_scores, render_report
from xent_numba.cli.commands import app
from xent_numba.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    t = pq.read_table(ROOT / "data" / "sample.parquet")
    cce = xn.cce(t["pred"], t["label"])
    bce = xn.bce(t["pred"], t["label"])
    cce[:3] = np.nan  # rows that were invalid (null in the scores file)
    table = pa.table({
        "id": t["id"],
        "label": t["label"],
        "cce": pa.array(cce, mask=np.isnan(cce)),
        "bce": bce,
    })
    d = tmp_path_factory.mktemp("scores")
    pq.write_table(table, d / "scores.parquet")
    return d / "scores.parquet", table


def test_png_is_a_real_image(scores, tmp_path):
    pytest.importorskip("matplotlib")
    path, table = scores
    out = tmp_path / "report.png"
    res = render_report(path, out)
    data = out.read_bytes()
    w, h = png_size(data)
    assert 600 <= w <= 3000 and 400 <= h <= 3000
    assert res["format"] == "png" and res["summary"]["rows"] == 4000
    assert res["summary"]["losses"]["cce"]["count"] == 3997
    assert len(res["summary"]["worst_classes"]) == 5  # per-class means from the kept label
    import matplotlib.image as mpimg

    img = mpimg.imread(out)
    assert img.shape[:2] == (h, w)
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert not list(tmp_path.glob(".*tmp*"))


def test_html_embeds_figures_and_summary(scores, tmp_path):
    pytest.importorskip("matplotlib")
    path, _ = scores
    out = tmp_path / "report.html"
    render_report(path, out, label="label")
    page = out.read_text()
    assert page.startswith("<!doctype html>")
    m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    w, h = png_size(base64.b64decode(m.group(1)))
    assert w >= 600 and h >= 300
    for text in ("<table>", "mean", "median", "p95", "4,000", "Worst classes"):
        assert text in page


@pytest.mark.parametrize("fmt", ["csv", "feather", "jsonl"])
def test_other_scores_formats(scores, tmp_path, fmt):
    pytest.importorskip("matplotlib")
    _, table = scores
    src = tmp_path / f"scores.{fmt}"
    small = table.select(["id", "cce"]).slice(0, 300)
    if fmt == "csv":
        pacsv.write_csv(small, src)
    elif fmt == "feather":
        feather.write_feather(small, src)
    else:
        src.write_text("".join(
            f'{{"id": {r["id"]}, "cce": {"null" if r["cce"] is None else r["cce"]}}}\n'
            for r in small.to_pylist()
        ))
    losses, labels, label_col = load_scores(src)
    assert list(losses) == ["cce"] and labels is None and label_col is None
    assert np.isnan(losses["cce"]).sum() == 3
    out = tmp_path / "r.png"
    render_report(src, out)
    assert png_size(out.read_bytes())[0] >= 600


def test_errors(scores, tmp_path):
    pytest.importorskip("matplotlib")
    path, table = scores
    with pytest.raises(InvalidInputError, match=r"\.png or \.html"):
        render_report(path, tmp_path / "r.jpg")
    with pytest.raises(InvalidInputError, match="--label column 'klass'"):
        render_report(path, tmp_path / "r.png", label="klass")
    with pytest.raises(InvalidInputError, match="integer class indices"):
        render_report(path, tmp_path / "r.png", label="bce")
    no_losses = tmp_path / "raw.parquet"
    pq.write_table(table.select(["id"]), no_losses)
    with pytest.raises(InvalidInputError, match="no 'cce' or 'bce' column"):
        render_report(no_losses, tmp_path / "r.png")
    with pytest.raises(InvalidInputError, match="no such file"):
        render_report(tmp_path / "missing.parquet", tmp_path / "r.png")


def test_missing_matplotlib_is_a_clear_error(scores, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(InvalidInputError, match=r"pip install 'xent-numba\[plot\]'"):
        render_report(scores[0], tmp_path / "r.png")
    res = runner.invoke(app, ["report", str(scores[0]), "-o", str(tmp_path / "r.png")])
    assert res.exit_code == 2 and "xent-numba[plot]" in res.output


def test_cli_report(scores, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "r.png"
    res = runner.invoke(app, ["report", str(scores[0]), "--label", "label", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "Wrote" in res.stdout and png_size(out.read_bytes())[0] > 0
    res = runner.invoke(app, ["report", str(scores[0]), "-o", str(tmp_path / "r.gif")])
    assert res.exit_code == 2 and ".png or .html" in res.output


def _texts(fig) -> str:
    parts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()] + [t.get_text() for t in ax.texts]
    return "\n".join(parts)


def test_loss_axis_is_log_scaled_and_names_the_base(scores):
    pytest.importorskip("matplotlib")
    from xent_numba.analysis.report import build_figure, summarize

    path, _ = scores
    losses, labels, label_col = load_scores(path)
    cce = losses["cce"].copy()
    cce[3] = 0.0  # a perfect row: not drawable on a log axis, counted in the title
    losses = {"cce": cce, "bce": losses["bce"]}
    fig = build_figure(losses, summarize(losses, labels), label_col=label_col, log_base=10)
    hists = [ax for ax in fig.axes if ax.get_title().startswith(("CCE", "BCE"))]
    assert len(hists) == 2 and all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in hists)
    assert hists[0].get_xlabel() == "CCE, log base 10\n(log-scaled axis)"
    assert "1 zero" in hists[0].get_title() and "3 null/inf" in hists[0].get_title()
    # the bins span the data's decades: the smallest loss sits in the first bar, not all of them
    lo, hi = hists[0].get_xlim()
    positive = cce[np.isfinite(cce) & (cce > 0)]
    assert lo <= positive.min() and hi >= positive.max() and hi / lo > 100
    text = _texts(fig)
    assert "mean CCE, log base 10" in text and "No per-class panel" not in text
    fig = build_figure(losses, summarize(losses, labels), label_col=label_col)  # base unknown
    assert "e unless --log-base was given" in _texts(fig)


@pytest.mark.parametrize("base, unit", [(math.e, "nats (log base e)"), (2, "bits (log base 2)"), (10, "log base 10")])
def test_log_unit(base, unit):
    from xent_numba.analysis.report import log_unit

    assert log_unit(base) == unit


def test_figure_says_why_the_class_panel_is_absent(scores, tmp_path):
    pytest.importorskip("matplotlib")
    from xent_numba.analysis.report import build_figure, summarize

    _, table = scores
    src = tmp_path / "nolabel.parquet"
    pq.write_table(table.select(["id", "cce", "bce"]), src)
    losses, labels, label_col = load_scores(src)
    fig = build_figure(losses, summarize(losses, labels), label_col=label_col)
    assert "no integer label column" in _texts(fig) and "--keep label" in _texts(fig)
    only_bce = {"bce": losses["bce"]}
    fig = build_figure(only_bce, summarize(only_bce, None))
    assert "only BCE" in _texts(fig)
    render_report(src, tmp_path / "r.png", log_base=2)  # the whole path draws with the note
    with pytest.raises(InvalidInputError, match="log_base"):
        render_report(src, tmp_path / "r.png", log_base=1)
    res = runner.invoke(app, ["report", str(src), "--log-base", "10", "-o", str(tmp_path / "r.png")])
    assert res.exit_code == 0, res.output
