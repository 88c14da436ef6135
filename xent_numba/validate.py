"""Input checks shared by the CPU and GPU backends.

Structural checks (shapes, weights) run here before any kernel; per-row value checks are
fused into the kernels, which write a status per row. This module turns those statuses
into the error a user reads.
"""

from __future__ import annotations

import numpy as np

from . import losses
from .arrow import Dense, Ragged, Scalar
from .errors import InvalidInputError


def check_lengths(n_pred: int, n_target: int) -> None:
    if n_pred != n_target:
        raise InvalidInputError(
            f"pred has {n_pred} rows but target has {n_target}; they must match row for row"
        )


def max_classes(pred) -> int:
    if isinstance(pred, Dense):
        return pred.values.shape[1]
    lengths = pred.lengths()
    return int(lengths.max()) if lengths.size else 0


def weights(w, name: str, n_classes: int, *, scalar_ok: bool, rows=None) -> np.ndarray:
    """``class_weight``/``pos_weight``/``weight`` as a float64 vector (empty: none; one entry:
    broadcast), or, where ``rows = (n_total, start, m)`` is given, a per-row ``(N, C)`` array
    (PyTorch's shapes for ``pos_weight`` and ``BCELoss(weight=)``), sliced to rows
    ``start : start + m``.

    Weights that are all exactly 1 change nothing, so they come back empty: the same kernel
    then runs as without them and the result is bit for bit the same (``pos_weight=1.0``
    must never change a number). A vector longer than the rows is accepted and class ``c``
    uses ``w[c]``: rows may be ragged, and one batch of a file may hold only short rows,
    so "longer than this batch's rows" is not an error (README, "Formulas and conventions")."""
    if w is None:
        return np.empty(0, dtype=np.float64)
    try:
        arr = np.asarray(w, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must hold numbers, got {w!r}") from None
    if arr.ndim == 0:
        if not scalar_ok:
            raise InvalidInputError(f"{name} must be a vector with one weight per class")
        arr = arr.reshape(1)
    if arr.ndim == 2 and rows is not None:
        n_total, start, m = rows
        if arr.shape[0] != n_total or arr.shape[1] < n_classes:
            raise InvalidInputError(
                f"{name} of shape {arr.shape} must be (N, C) = ({n_total}, {n_classes}) or (C,)"
            )
        arr = arr[start : start + m]
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise InvalidInputError(f"{name} must hold finite weights >= 0")
        return np.empty(0) if np.all(arr == 1.0) else np.ascontiguousarray(arr)
    if arr.ndim != 1:
        what = "1-D or (N, C)" if rows is not None else "1-D"
        raise InvalidInputError(f"{name} must be {what}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise InvalidInputError(f"{name} must hold finite weights >= 0")
    if (arr.size > 1 or not scalar_ok) and arr.size < n_classes:
        raise InvalidInputError(
            f"{name} has {arr.size} entries but rows have up to {n_classes} classes"
        )
    if np.all(arr == 1.0):
        return np.empty(0, dtype=np.float64)
    return arr


def _first_bad(values, good):
    idx = np.flatnonzero(~good)
    return (int(idx[0]), float(values[idx[0]])) if idx.size else (None, None)


def _row(layout, i):
    return layout[i] if isinstance(layout, np.ndarray) else layout.row(i)


def _describe_binary(status: int, i: int, p: np.ndarray, y: np.ndarray) -> tuple[str, str]:
    """``describe`` for one score per row (``arrow.Scalar``) against (N,) labels."""
    if status in (losses.PRED_NONFINITE, losses.PRED_RANGE):
        return "pred", f"value {float(p[i])!r}"
    if status == losses.LABEL_RANGE:
        return "target", f"label {y[i].item()!r}; binary labels are 0 or 1 (or False/True)"
    if status == losses.TARGET_VALUE:
        return "target", f"value {float(y[i])!r}; soft labels must be in [0, 1]"
    return "", ""


def describe(status: int, i: int, pred, target, prm) -> tuple[str, str]:
    """(column, detail) for row ``i`` whose kernel status is ``status``."""
    if isinstance(pred, Scalar):
        return _describe_binary(status, i, pred.values, target)
    p = np.asarray(_row(pred, i), dtype=np.float64)
    if status in (losses.PRED_NONFINITE, losses.PRED_RANGE):
        good = np.isfinite(p) if status == losses.PRED_NONFINITE else (p >= 0) & (p <= 1)
        c, v = _first_bad(p, good)
        return "pred", f"value {v!r} at class {c}"
    if status == losses.LABEL_RANGE:
        y = int(target[i])
        return "target", f"label {y}, but the row has {p.size} classes (valid: 0..{p.size - 1})"
    t = np.asarray(_row(target, i), dtype=np.float64)
    if status == losses.TARGET_VALUE:
        good = (t >= 0) & np.isfinite(t) if not prm.bce else (t >= 0) & (t <= 1)
        c, v = _first_bad(t, good)
        rule = "in [0, 1]" if prm.bce else "finite and >= 0"
        return "target", f"value {v!r} at class {c}; targets must be {rule}"
    if status == losses.TARGET_SUM:
        return "target", f"sums to {t.sum():.6g}; use bce for multi-label targets"
    if status == losses.LENGTH:
        return "target", f"pred has {p.size} values, target has {t.size}"
    if status == losses.EMPTY_ROW:
        return "pred", "an empty list"
    if status == losses.TARGET_MASKED:
        masked = np.flatnonzero(p == -np.inf)
        return "pred", f"logit -inf at class {int(masked[0]) if masked.size else '?'}, which the target counts"
    return "", ""


def raise_first_invalid(status, pred, target, prm, pred_nulls=None, row_offset=0, counted=None) -> None:
    """Raise ``InvalidInputError`` for the first row whose status is an error (not IGNORED);
    its ``n_invalid`` counts the rows of ``status``, ``counted`` says where that count
    stopped when more rows follow (see ``InvalidInputError``)."""
    if not status.size or status.max() <= losses.IGNORED:  # codes are >= 0: one pass, no temporary
        return
    bad = status > losses.IGNORED
    i = int(np.argmax(bad))
    s = int(status[i])
    if s == losses.NULL_ROW:
        in_pred = pred_nulls is not None and pred_nulls[i]
        whole = isinstance(pred, Scalar)  # one value per row: no "value in it"
        column, detail = ("pred" if in_pred else "target"), "a null row" if whole else "a null row or a null value in it"
    else:
        column, detail = describe(s, i, pred, target, prm)
    raise InvalidInputError(
        losses.REASONS[s],
        row=i + row_offset,
        column=column or None,
        status=s,
        n_invalid=int(bad.sum()),
        detail=detail,
        counted=counted,
    )


def normalized(layout):
    """Each probability row divided by its sum (``normalize=True``, Keras' CCE convention).

    The sums are taken in float64 and the result keeps the input's float width. Rows whose
    sum is 0, negative or not finite are left as they are, so the kernel's value checks
    still report them (a negative or NaN entry names its class)."""
    vals = layout.values
    if isinstance(layout, Dense):
        v = vals.astype(np.float64)
        s = v.sum(axis=1, keepdims=True)
        good = np.isfinite(s) & (s > 0)
        v = np.divide(v, s, out=v, where=good)
        return Dense(v.astype(vals.dtype, copy=False))
    offs = np.asarray(layout.offsets, dtype=np.int64)
    o0, o1 = int(offs[0]), int(offs[-1])
    v = vals[o0:o1].astype(np.float64)
    lengths = np.diff(offs)
    sums = np.zeros(lengths.size)
    nonempty = lengths > 0
    if v.size:
        sums[nonempty] = np.add.reduceat(v, offs[:-1][nonempty] - o0)
    good = np.isfinite(sums) & (sums > 0)
    per_value = np.repeat(np.where(good, sums, 1.0), lengths)
    return Ragged((v / per_value).astype(vals.dtype, copy=False), offs - o0)
