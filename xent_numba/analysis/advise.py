"""Which loss fits the data? (``xent advise``, and the check ``xent score`` runs on its first batch.)

CCE scores a row as *one exclusive choice* among C classes (softmax predictions, exactly one
true class); BCE scores it as *C independent yes/no questions* (sigmoid predictions,
multi-label). This module looks at a sample of rows and says which of the two the data is:

- ``label_kind``: ``index`` (integer classes), ``one_hot`` (0/1, exactly one 1 per row),
  ``multi_hot`` (0/1, some rows with other than one positive), ``soft`` (values in [0, 1]
  summing to 1, not all 0/1), ``soft_independent`` (values in [0, 1], not all 0/1, rows not
  summing to 1) or ``invalid`` (values outside [0, 1]);
- ``pred_kind``: ``logits`` (values outside [0, 1]), ``probabilities_normalized`` (every row
  sums to 1 within ``losses.DENSE_SUM_RTOL``) or ``probabilities_independent``;
- one prediction per row (a scalar column, a 1-D array): ``label_kind`` ``binary`` (0/1,
  bool, or soft labels in [0, 1]; ``invalid`` otherwise) and ``pred_kind`` ``probability``
  or ``logit``; BCE is recommended, and CCE over the two classes ``[1-p, p]`` gives the
  same number;
- predictions are called logits only when at least ``LOGIT_FRACTION`` of the rows hold
  values outside [0, 1]; a few such rows among probabilities are reported as invalid rows;
- ``recommended_loss``: ``cce`` for exclusive labels (index, one-hot, soft) with predictions
  that are normalised or logits; ``bce`` for multi-hot / independent soft labels, and for
  exclusive labels whose predictions are independent probabilities (CCE only reads
  ``p[true class]`` and never penalises probability put on the other classes unless the
  predictions sum to 1, so BCE is the proper score for them; a warning says so). ``None``
  only when no row could be read.

Everything here is vectorised NumPy over a sample (default the first 100,000 rows); the
kernels are not involved except for scoring one example row.
"""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

from .. import io, losses
from ..arrow import Ragged, Scalar, as_labels, as_rows, check_lists, coerce, decoded
from ..columns import _column, resolve_columns
from ..errors import InvalidInputError

SAMPLE_ROWS = 100_000
SUM_TOL = losses.DENSE_SUM_RTOL  # the tolerance the scorer uses for "a row sums to 1"
LABEL_KINDS = ("index", "one_hot", "multi_hot", "soft", "soft_independent", "binary", "invalid")
PRED_KINDS = ("logits", "probabilities_normalized", "probabilities_independent", "probability", "logit")
LOGIT_FRACTION = 0.05  # rows outside [0, 1] that make predictions logits, not bad probabilities
EXCLUSIVE = ("index", "one_hot", "soft")
KEYS = ("label_kind", "pred_kind", "recommended_loss", "explanation", "warnings", "evidence")


# ---- per-row reductions over the kernels' layouts --------------------------------------------


def _ragged(layout) -> Ragged:
    """A Ragged view whose offsets start at 0 (a slice's unused child values are cut off)."""
    r = Ragged.of(layout)
    o = r.offsets.astype(np.int64, copy=False)
    return Ragged(r.values[o[0] : o[-1]], o - o[0])


def _reduce(ufunc, r: Ragged, x: np.ndarray, empty):
    """``ufunc.reduce`` of ``x`` (one value per element of ``r``) over each row."""
    n = len(r)
    out = np.full(n, empty, dtype=np.result_type(x.dtype, type(empty)))
    lengths = r.lengths()
    nonempty = lengths > 0
    if nonempty.any():
        out[nonempty] = ufunc.reduceat(x, r.offsets[:-1][nonempty])
    return out


CHUNK_VALUES = 1 << 20  # rows are reduced in blocks of about this many values (bounded memory)


def _blocks(r: Ragged):
    """``(first_row, end_row, sub)``: consecutive row blocks of about ``CHUNK_VALUES`` values,
    ``sub`` a Ragged view of the block with offsets from 0."""
    o, n, row = r.offsets, len(r), 0
    while row < n:
        end = int(np.searchsorted(o, o[row] + CHUNK_VALUES, side="right")) - 1
        end = min(max(end, row + 1), n)
        yield row, end, Ragged(r.values[o[row] : o[end]], o[row : end + 1] - o[row])
        row = end


def _row_stats(r: Ragged, *, counts: bool = False) -> dict:
    """Per-row length, has-non-finite, sum, min, max (finite values) and, with ``counts``,
    the number of values equal to 1 and to 0."""
    n = len(r)
    keys = ["sum", "min", "max"] + (["ones", "zeros"] if counts else [])
    out = {k: np.empty(n, dtype=np.int64 if k in ("ones", "zeros") else np.float64) for k in keys}
    out["nonfinite"] = np.empty(n, dtype=bool)
    out["length"] = r.lengths()
    for a, b, sub in _blocks(r):
        v = np.asarray(sub.values, dtype=np.float64)
        finite = np.isfinite(v)
        all_finite = bool(finite.all())
        out["nonfinite"][a:b] = False if all_finite else _reduce(np.add, sub, ~finite, 0) > 0
        out["sum"][a:b] = _reduce(np.add, sub, v if all_finite else np.where(finite, v, 0.0), 0.0)
        out["min"][a:b] = _reduce(np.minimum, sub, v if all_finite else np.where(finite, v, np.inf), np.inf)
        out["max"][a:b] = _reduce(np.maximum, sub, v if all_finite else np.where(finite, v, -np.inf), -np.inf)
        if counts:
            out["ones"][a:b] = _reduce(np.add, sub, (v == 1).astype(np.int64), 0)
            out["zeros"][a:b] = _reduce(np.add, sub, (v == 0).astype(np.int64), 0)
    return out


def _classes_seen(r: Ragged, rows: np.ndarray) -> int:
    """How many class positions hold a positive value in at least one of the ``rows``."""
    width = int(r.lengths().max()) if len(r) else 0
    seen = np.zeros(width, dtype=bool)
    for a, b, sub in _blocks(r):
        lengths = sub.lengths()
        keep = np.repeat(rows[a:b], lengths) & (np.asarray(sub.values) > 0)
        cls = np.arange(sub.values.size) - np.repeat(sub.offsets[:-1], lengths)
        seen[cls[keep]] = True
    return int(seen.sum())


def _frac(mask: np.ndarray, n: int) -> float:
    return round(float(np.count_nonzero(mask)) / n, 6) if n else 0.0


# ---- the advice ----------------------------------------------------------------------------


def advise_arrays(pred, label, *, ignore_index: int | None = None, tol: float = SUM_TOL) -> dict:
    """Classify a sample of predictions and labels and recommend a loss.

    ``pred``/``label`` are what ``xent_numba.cce`` takes: NumPy arrays, or Arrow list /
    fixed-size-list arrays (or ChunkedArrays of them); ``label`` may be 1-D integer classes.
    Returns a JSON-ready dict with the keys ``label_kind``, ``pred_kind``,
    ``recommended_loss``, ``explanation`` (a list of sentences), ``warnings`` (a list) and
    ``evidence`` (fractions of rows of each kind, classes seen, rows sampled).
    """
    pred, label = decoded(coerce(pred), "pred"), decoded(coerce(label), "label")
    p_layout, p_null = as_rows(pred, "pred", is_target=False)
    if isinstance(p_layout, Scalar):
        return _advise_binary(p_layout.values, p_null, label)
    t_layout, t_null = as_rows(label, "label", is_target=True)
    n = len(p_layout)
    if len(t_layout) != n:
        raise InvalidInputError(f"pred has {n} rows but label has {len(t_layout)}; they must match")
    warnings: list[str] = []
    usable = np.ones(n, dtype=bool)
    for mask in (p_null, t_null):
        if mask is not None:
            usable &= ~mask
    n_null = int(n - usable.sum())
    if n_null:
        warnings.append(f"{n_null} of {n} sampled rows hold nulls; they were left out of the advice.")

    # predictions
    P = _ragged(p_layout)
    ps = _row_stats(P)
    usable &= ps["length"] > 0
    nonfinite = ps["nonfinite"] & usable
    if nonfinite.any():
        warnings.append(
            f"{int(nonfinite.sum())} rows hold NaN or infinite predictions; both losses reject them."
        )
    usable &= ~ps["nonfinite"]
    # labels
    if isinstance(t_layout, np.ndarray):  # integer class indices
        y = t_layout
        ignored = usable & (y == ignore_index) if ignore_index is not None else None
        if ignored is not None:
            usable &= ~ignored
        out_of_range = usable & ((y < 0) | (y >= ps["length"]))
        if out_of_range.any():
            i = int(np.flatnonzero(out_of_range)[0])
            warnings.append(
                f"{int(out_of_range.sum())} rows have a class index outside their prediction row "
                f"(first: row {i}, label {int(y[i])}, {int(ps['length'][i])} classes); "
                "both losses reject them."
                + (" With 1 prediction column and 0/1 labels this is a binary problem: pass the "
                   "label as a one-element list and use BCE." if ps["length"][i] == 1 else "")
            )
        usable &= ~out_of_range
        m = int(usable.sum())
        label_kind = "index"
        lab = {"index": 1.0 if m else 0.0}
        if ignored is not None:
            lab["ignored"] = _frac(ignored, n)
        classes_seen = np.unique(y[usable]).size
        no_positive = several = np.zeros(n, dtype=bool)
    else:
        T = _ragged(t_layout)
        ts = _row_stats(T, counts=True)
        mismatch = usable & (ts["length"] != ps["length"])
        if mismatch.any():
            i = int(np.flatnonzero(mismatch)[0])
            warnings.append(
                f"{int(mismatch.sum())} rows have label and prediction rows of different lengths "
                f"(first: row {i}, {int(ts['length'][i])} vs {int(ps['length'][i])}); both losses reject them."
            )
        usable &= ~mismatch & ~ts["nonfinite"]
        m = int(usable.sum())
        binary = usable & (ts["ones"] + ts["zeros"] == ts["length"])
        one = binary & (ts["ones"] == 1)
        several = binary & (ts["ones"] > 1)
        no_positive = binary & (ts["ones"] == 0)
        in_range = usable & (ts["min"] >= 0) & (ts["max"] <= 1)
        t_sums = usable & (np.abs(ts["sum"] - 1.0) <= tol)
        soft = usable & ~binary & in_range
        bad = usable & ~in_range
        lab = {
            "one_positive": _frac(one, m),
            "several_positives": _frac(several, m),
            "no_positive": _frac(no_positive, m),
            "soft": _frac(soft, m),
            "outside_0_1": _frac(bad, m),
            "sums_to_one": _frac(t_sums, m),
        }
        if bad.any():
            label_kind = "invalid"
            i = int(np.flatnonzero(bad)[0])
            warnings.append(
                f"{int(bad.sum())} label rows hold values outside [0, 1] (first: row {i}); "
                "BCE rejects them, and CCE only accepts non-negative rows summing to 1."
            )
        elif soft.any():
            label_kind = "soft" if t_sums.sum() == m else "soft_independent"
        elif m and one.sum() == m:
            label_kind = "one_hot"
        else:
            label_kind = "multi_hot"
        classes_seen = _classes_seen(T, usable)

    # predictions, over the rows whose labels are usable too
    outside = usable & ((ps["min"] < 0) | (ps["max"] > 1))
    sums_to_one = usable & (np.abs(ps["sum"] - 1.0) <= tol)
    m = int(usable.sum())
    n_classes = int(ps["length"][usable].max()) if m else 0
    if _frac(outside, m) >= LOGIT_FRACTION:
        pred_kind = "logits"
    elif m and sums_to_one.sum() == m:
        pred_kind = "probabilities_normalized"
    else:
        pred_kind = "probabilities_independent"
    row_sum = ps["sum"][usable]

    # the recommendation
    if m == 0:
        recommended = None
        warnings.append("no usable rows in the sample: nothing to advise on.")
    elif label_kind in ("multi_hot", "soft_independent"):
        recommended = "bce"
    elif label_kind in EXCLUSIVE:
        recommended = "bce" if pred_kind == "probabilities_independent" else "cce"
    else:
        recommended = None

    if m:
        if outside.any() and pred_kind != "logits":
            warnings.append(_outside_warning(outside))
        if label_kind in EXCLUSIVE and pred_kind == "probabilities_independent":
            warnings.append(
                f"the labels name one class per row, but {_pct(1 - _frac(sums_to_one, m))} of "
                f"prediction rows do not sum to 1 (median row sum {np.median(row_sum):.3g}): they "
                "look like independent per-class (sigmoid / one-vs-rest) probabilities. CCE would "
                "read only p[true class] and never penalise probability put on other classes "
                "(predicting 1.0 everywhere would score 0), so BCE is the fair score for them; if "
                "the classes really exclude each other, normalise the predictions (or pass softmax "
                "logits with --from-logits) and use CCE."
            )
        if several.any() and pred_kind == "probabilities_normalized":
            warnings.append(
                f"{_pct(_frac(several, m))} of rows have several true classes but every "
                "prediction row sums to 1 like a softmax, which must split its probability "
                "between them: BCE will penalise it however good it is. A multi-label model "
                "should output independent (sigmoid) probabilities."
            )
        if no_positive.any():
            warnings.append(
                f"{int(no_positive.sum())} rows ({_pct(_frac(no_positive, m))}) have no positive "
                "class: CCE cannot score them (its target must sum to 1), BCE scores them as "
                "'no' to every class. If they mean 'none of these', use BCE; if they are "
                "unlabelled, drop them."
            )
        if 0.5 <= _frac(sums_to_one, m) < 1 and pred_kind == "probabilities_independent":
            warnings.append(
                f"{_pct(_frac(sums_to_one, m))} of prediction rows sum to 1 but the rest do not: "
                "check for truncated (top-k) or rounded predictions."
            )

    evidence = {
        "rows_sampled": n,
        "rows_used": m,
        "n_classes": n_classes,
        "classes_seen": int(classes_seen),
        "label_fractions": lab,
        "pred_fractions": {
            "outside_0_1": _frac(outside, m),
            "sums_to_one": _frac(sums_to_one, m),
        },
        "pred_row_sum": {
            "min": _num(row_sum.min()) if row_sum.size else None,
            "median": _num(np.median(row_sum)) if row_sum.size else None,
            "max": _num(row_sum.max()) if row_sum.size else None,
        },
    }
    advice = {
        "label_kind": label_kind,
        "pred_kind": pred_kind if m else None,
        "recommended_loss": recommended,
        "explanation": [],
        "warnings": warnings,
        "evidence": evidence,
    }
    if m:
        first = int(np.flatnonzero(usable)[0])
        advice["explanation"] = _explain(advice, n_classes, _example(pred, label, first, pred_kind))
    return advice


def _outside_warning(outside) -> str:
    i = int(np.flatnonzero(outside)[0])
    return (
        f"{int(outside.sum())} rows hold probabilities outside [0, 1] (first: row {i}): too few "
        "for logits, so they are invalid rows, which both losses reject (--on-invalid null "
        "scores the rest)."
    )


def _advise_binary(x, p_null, label) -> dict:
    """The advice for one prediction per row: a binary problem, whatever the loss asked for."""
    y, y_null = as_labels(label, "label")
    n = x.shape[0]
    if y.shape[0] != n:
        raise InvalidInputError(f"pred has {n} rows but label has {y.shape[0]}; they must match")
    warnings: list[str] = []
    usable = np.ones(n, dtype=bool)
    for mask in (p_null, y_null):
        if mask is not None:
            usable &= ~mask
    if n - usable.sum():
        warnings.append(f"{int(n - usable.sum())} of {n} sampled rows hold nulls; they were left out of the advice.")
    xf = np.asarray(x, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    nonfinite = usable & ~np.isfinite(xf)
    if nonfinite.any():
        warnings.append(f"{int(nonfinite.sum())} rows hold NaN or infinite predictions; both losses reject them.")
    usable &= ~nonfinite
    soft_dtype = y.dtype.kind == "f"
    hard = (t == 0) | (t == 1)
    valid = ((t >= 0) & (t <= 1)) if soft_dtype else hard
    bad = usable & ~valid
    label_kind = "binary"
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        label_kind = "invalid"
        warnings.append(
            f"{int(bad.sum())} rows have a label other than 0/1{' or in [0, 1]' if soft_dtype else ''} "
            f"(first: row {i}, label {y[i].item()!r}); with one prediction per row the labels must be "
            "binary. For more classes, write one probability per class (a list column)."
        )
    usable &= valid
    m = int(usable.sum())
    outside = usable & ((xf < 0) | (xf > 1))
    pred_kind = "logit" if _frac(outside, m) >= LOGIT_FRACTION else "probability"
    if outside.any() and pred_kind == "probability":
        warnings.append(_outside_warning(outside))
    recommended = None if (m == 0 or label_kind == "invalid") else "bce"
    if m == 0:
        warnings.append("no usable rows in the sample: nothing to advise on.")
    evidence = {
        "rows_sampled": n,
        "rows_used": m,
        "n_classes": 2,
        "classes_seen": int(np.unique(t[usable & hard]).size),
        "label_fractions": {"positive": _frac(usable & (t == 1), m), "soft": _frac(usable & ~hard, m)},
        "pred_fractions": {"outside_0_1": _frac(outside, m)},
    }
    explanation = []
    if m:
        what = (
            "logits (values outside [0, 1]): score them with --from-logits"
            if pred_kind == "logit"
            else "probabilities P(y=1)"
        )
        explanation = [
            f"Every row holds one prediction and a {'soft ' if (usable & ~hard).any() else '0/1 '}label: a "
            f"binary (yes/no) problem, and the predictions are {what}.",
            "BCE is the natural score: -[y log p + (1 - y) log(1 - p)]. CCE over the two classes "
            "[1 - p, p] with index label y is exactly the same number, so --loss cce (or both) agrees.",
        ]
        i = int(np.flatnonzero(usable)[0])
        p = 1.0 / (1.0 + math.exp(-xf[i])) if pred_kind == "logit" else xf[i]
        e = np.finfo(np.float64).eps
        q = min(max(p, e), 1 - e)
        b = -(t[i] * math.log(q) + (1 - t[i]) * math.log1p(-q))
        explanation.append(
            f"For example row {i} (pred {xf[i]:.4g}, label {y[i].item()!r}): BCE = CCE over "
            f"[{1 - p:.4g}, {p:.4g}] = {b:.4g} (nats)."
        )
    return {
        "label_kind": label_kind,
        "pred_kind": pred_kind if m else None,
        "recommended_loss": recommended,
        "explanation": explanation,
        "warnings": warnings,
        "evidence": evidence,
    }


def _pct(f: float) -> str:
    return f"{100 * f:.3g}%"


def _num(x) -> float:
    return round(float(x), 6)


def _example(pred, label, i: int, pred_kind: str) -> str | None:
    """Row ``i`` of the user's data scored both ways, as a sentence (nats). Plain NumPy on one
    row (the same formulas as the kernels, clipping as ``eps="auto"`` in float64), so the
    advice never waits for a kernel to compile."""
    try:
        p = np.asarray(_take(pred, i).to_pylist()[0], dtype=np.float64)
        tv = _take(label, i).to_pylist()[0]
        if isinstance(tv, list):
            t = np.asarray(tv, dtype=np.float64)
        else:  # one-hot of the class, O(C) (never an identity matrix)
            t = np.zeros(p.size)
            t[int(tv)] = 1.0
        if pred_kind == "logits":
            m = p.max()
            log_soft = p - m - np.log(np.exp(p - m).sum())
            c = -(t * log_soft).sum()
            b = (np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p)))).sum()
        else:
            e = np.finfo(np.float64).eps
            q = np.clip(p, e, 1 - e)
            c = -(t * np.log(q)).sum()
            b = -(t * np.log(q) + (1 - t) * np.log1p(-q)).sum()
        if not (t.min() >= 0 and abs(t.sum() - 1) <= SUM_TOL):
            c = math.nan  # CCE is not defined for this target row
        shown = ", ".join(f"{v:.3g}" for v in p[:6]) + (", ..." if p.size > 6 else "")
        what = "logits" if pred_kind == "logits" else "pred"
        target = f"label {_short(tv)}" if isinstance(tv, list) else f"true class {tv}"
        fmt = lambda v: "not defined" if math.isnan(v) else f"{v:.4g}"  # noqa: E731
        return (
            f"For example row {i} ({what} [{shown}], {target}): CCE {fmt(c)} vs summed BCE "
            f"{fmt(b)} (nats)."
        )
    except Exception:  # the example is a nicety; the advice never fails because of it
        return None


def _short(v: list) -> str:
    vals = ", ".join(f"{x:g}" for x in v[:6]) + (", ..." if len(v) > 6 else "")
    return f"[{vals}]"


def _take(x, i: int) -> pa.Array:
    if isinstance(x, pa.ChunkedArray):
        return x.slice(i, 1).combine_chunks()
    if isinstance(x, pa.Array):
        return x.slice(i, 1)
    arr = np.asarray(x)
    return pa.array(arr[i : i + 1].tolist())


def _explain(a: dict, c: int, example: str | None) -> list[str]:
    lk, pk, rec = a["label_kind"], a["pred_kind"], a["recommended_loss"]
    wrong = c - 1
    labels = {
        "index": "Every row names exactly one true class (integer labels)",
        "one_hot": "Every label row is one-hot (exactly one true class)",
        "soft": "Every label row is a distribution over the classes (soft targets summing to 1)",
        "multi_hot": "Label rows are 0/1 with other than exactly one positive in some rows (multi-label)",
        "soft_independent": "Label rows hold per-class values in [0, 1] that do not sum to 1 (independent soft targets)",
        "invalid": "Some label rows hold values outside [0, 1]",
    }[lk]
    preds = {
        "logits": "the predictions are logits (values outside [0, 1]): score them with --from-logits; "
        "softmax and sigmoid logits look alike, so the labels decide",
        "probabilities_normalized": "every prediction row sums to 1 (a softmax)",
        "probabilities_independent": "the prediction rows do not all sum to 1 (independent, sigmoid-like probabilities)",
    }[pk]
    out = [f"{labels}, and {preds}."]
    choice = (
        f"CCE scores a row as one exclusive choice among {c} classes: -log p[true class]. "
        f"BCE scores it as {c} independent yes/no questions ('is it class k?'), adding "
        f"-log(1 - p) for each of the {wrong} other classes as well."
    )
    if c == 1:
        choice = (
            "There is one prediction per row: a single yes/no question, which is what BCE scores "
            "(CCE over a single class is meaningless)."
        )
    out.append(choice)
    if lk in EXCLUSIVE and rec == "cce":
        out.append(
            "The labels are mutually exclusive and the predictions are a softmax, so the "
            "question the model answers is the exclusive choice: use CCE. BCE would still give "
            "a number, but for a different question (the example below scores a row both ways)."
        )
        if c == 2 and pk == "probabilities_normalized":
            out.append(
                "With 2 classes and predictions summing to 1 the two yes/no questions are the "
                "same question asked twice, so summed BCE is exactly 2 x CCE (mean BCE = CCE): "
                "the choice changes the scale, not the ranking."
            )
    elif lk in EXCLUSIVE and rec == "bce":
        out.append(
            "The labels are exclusive but the predictions are independent per-class "
            "probabilities, which CCE cannot judge fairly (see the warnings): use BCE, or "
            "normalise the predictions and use CCE."
        )
    elif rec == "bce":
        out.append(
            "A row can have several true classes (or none), so each class is its own yes/no "
            "question: use BCE. CCE needs exactly one unit of target per row."
        )
    if example:
        out.append(example)
    return out


# ---- does a requested loss fit? ---------------------------------------------------------------


def check_fit(advice: dict, loss: str, *, from_logits: bool | None = None) -> str | None:
    """One warning line when ``loss`` ("cce", "bce" or "both") -- or ``from_logits`` when given
    -- does not fit the data that ``advice`` describes; ``None`` when it fits.

    With "both" the comparison is the point, so only a CCE that cannot fit (multi-label
    targets, or predictions that do not sum to 1) is flagged.
    """
    lk, pk, rec = advice.get("label_kind"), advice.get("pred_kind"), advice.get("recommended_loss")
    if rec is None or pk is None:
        return None
    ev = advice.get("evidence", {})
    if from_logits is True and pk == "probability":
        return (
            "every prediction lies in [0, 1], so they look like probabilities, but --from-logits "
            "was given (it applies the sigmoid again); see `xent advise`."
        )
    if lk == "binary":
        pk = "logits" if pk == "logit" else pk
        if not (from_logits is False and pk == "logits"):
            return None  # one prediction per row: BCE and CCE over [1-p, p] are the same number
    if from_logits is False and pk == "logits":
        frac = ev.get("pred_fractions", {}).get("outside_0_1", 0)
        return (
            f"predictions look like logits ({_pct(frac)} of rows have values outside [0, 1]) "
            "but --from-logits was not given; see `xent advise`."
        )
    if from_logits is True and pk == "probabilities_normalized":
        return (
            "every prediction row sums to 1, so they look like probabilities, but --from-logits "
            "was given (it applies softmax/sigmoid again); see `xent advise`."
        )
    wants_cce = loss in ("cce", "both")
    if wants_cce and rec == "bce":
        if lk in ("multi_hot", "soft_independent"):
            why = f"{lk} labels (rows with other than one unit of target): CCE does not fit them"
        else:
            why = (
                f"exclusive ({lk}) labels but predictions that do not sum to 1: CCE only reads "
                "p[true class] and cannot penalise the rest"
            )
        return f"--loss {loss} on {why}; xent advise recommends bce."
    if loss == "bce" and rec == "cce":
        c = ev.get("n_classes", "C")
        return (
            f"--loss bce on exclusive ({lk}) labels with {_PRED_WORDS[pk]} predictions: BCE "
            f"scores each row as {c} independent yes/no questions, not one exclusive choice; "
            "xent advise recommends cce."
        )
    return None


_PRED_WORDS = {
    "logits": "logit",
    "probabilities_normalized": "softmax (rows summing to 1)",
    "probabilities_independent": "independent probability",
}


def first_batch_warning(batch, cols, opts) -> str | None:
    """The check ``xent score`` runs on its first batch: ``check_fit`` of the advice for
    (at most ``SAMPLE_ROWS`` rows of) ``batch`` against ``opts.loss``/``opts.from_logits``.
    Never raises: the scorer reports bad input itself."""
    try:
        if isinstance(batch, pa.Table):
            batch = batch.combine_chunks()
        batch = batch.slice(0, SAMPLE_ROWS)
        advice = advise_arrays(
            _column(batch, cols.pred), _column(batch, cols.label), ignore_index=opts.ignore_index
        )
        return check_fit(advice, opts.loss, from_logits=opts.from_logits)
    except Exception:
        return None


# ---- files -------------------------------------------------------------------------------------


def advise_file(
    inputs, pred: str = "pred", label: str = "label", sample_rows: int = SAMPLE_ROWS,
    *, ignore_index: int | None = None, storage_options: dict | None = None, exclude=(),
) -> dict:
    """``advise_arrays`` on the first ``sample_rows`` rows of Parquet files, directories or
    globs, read batch by batch with only the prediction and label columns. ``pred``/``label``
    may be globs over scalar columns (the "wide" layout, one column per class; ``exclude``:
    globs of columns left out of their matches, as ``xent score --exclude``)."""
    if sample_rows < 1:
        raise InvalidInputError(f"--sample-rows must be at least 1; got {sample_rows}")
    if isinstance(exclude, str):
        exclude = (exclude,)
    opts = SimpleNamespace(pred=pred, label=label, keep=(), losses=(), exclude=tuple(exclude))
    preds, labels, got = [], [], 0
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    for path in io.expand_inputs(inputs, storage_options=storage_options):
        src = io.Source(path)
        try:
            cols = resolve_columns(src.schema, opts)
        except InvalidInputError as exc:
            raise exc.moved(source=str(path)) from None
        for batch in src.batches(list(cols.pred + cols.label), min(65_536, sample_rows)):
            for name in cols.pred + cols.label:  # a corrupt file is refused before any slicing
                try:
                    check_lists(batch.column(name), name)
                except InvalidInputError as exc:
                    raise exc.moved(source=path) from None
            batch = batch.slice(0, sample_rows - got)
            try:
                preds.append(_column(batch, cols.pred))
                labels.append(_column(batch, cols.label))
            except InvalidInputError as exc:
                raise exc.moved(source=path) from None
            got += len(batch)
            if got >= sample_rows:
                break
        if got >= sample_rows:
            break
    if not preds:
        raise InvalidInputError("the input holds no rows")
    try:
        return advise_arrays(_chunked(preds, "prediction"), _chunked(labels, "label"), ignore_index=ignore_index)
    except InvalidInputError as exc:  # named by the user's columns, not the API's
        names = {"pred": cols.describe("pred"), "label": cols.describe("label"), "target": cols.describe("label")}
        raise exc.moved(column=names.get(exc.column, exc.column)) from None


def _chunked(arrays: list, role: str = "column"):
    types = {a.type for a in arrays}
    if len(types) > 1:  # files of one dataset may differ in list flavour or width: unify
        try:
            arrays = [a.cast(arrays[0].type) for a in arrays]
        except (pa.ArrowException, ValueError) as exc:
            kinds = ", ".join(sorted(str(t) for t in types))
            raise InvalidInputError(
                f"the {role} column has different types in different files ({kinds}) that cannot "
                f"be read as one ({exc})"
            ) from None
    return pa.chunked_array(arrays)


__all__ = ["advise_arrays", "advise_file", "check_fit", "first_batch_warning"]
