"""The public functions ``cce`` and ``bce``, and ``score`` that the pipeline builds on."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from . import backend, losses, validate
from .arrow import Scalar, aligned_slices, as_labels, as_rows, coerce, decoded
from .errors import InvalidInputError
from .kernels import signatures as canon


def _rows(x) -> int:
    if isinstance(x, (pa.Array, pa.ChunkedArray)):
        return len(x)
    try:
        shape = np.shape(x)
    except ValueError as exc:  # e.g. ragged Python lists
        raise InvalidInputError(
            f"cannot read as a numeric array ({exc}); pass an (N, C) array or an Arrow list array"
        ) from None
    if not shape:
        raise InvalidInputError("expected an array with one entry per row, got a scalar")
    return shape[0]


def _binary_weights(loss, class_weight, pos_weight) -> tuple[float, float]:
    """``(a, b)``: the weights of the ``log p`` and ``log(1-p)`` terms of a scalar binary row."""
    if loss == "cce":
        w = validate.weights(class_weight, "class_weight", 2, scalar_ok=False)
        return (float(w[1]), float(w[0])) if w.size else (1.0, 1.0)
    pw = validate.weights(pos_weight, "pos_weight", 1, scalar_ok=True)
    if pw.size > 1:
        raise InvalidInputError(
            f"pos_weight must be one number for one prediction per row, got {pw.size} entries"
        )
    return (float(pw[0]) if pw.size else 1.0), 1.0


def _ignored_rows(t, ignore_index):
    """``(rows, t)`` for BCE with ``ignore_index``: the rows whose index label is
    ``ignore_index`` (None when there are none) and ``t`` with label 0 there. BCE's kernels
    take no ``ignore_index`` (PyTorch's BCE has none); they score those rows on label 0 and
    ``_mark`` then gives them NaN and status ``IGNORED``, as CCE's kernels do."""
    if ignore_index is None or not isinstance(t, np.ndarray) or t.ndim != 1 or t.dtype.kind not in "iu":
        return None, t
    rows = t == ignore_index
    if not rows.any():
        return None, t
    t = t.copy()
    t[rows] = 0
    return rows, t


def _mark(o, s, ignored, nulls) -> None:
    """Ignored rows (``_ignored_rows``), then null rows, over the kernel's results."""
    if ignored is not None:
        s[ignored] = losses.IGNORED
        o[ignored] = np.nan
    if nulls is not None:
        s[nulls] = losses.NULL_ROW
        o[nulls] = np.nan


def _score_binary(p, t, prm, a, b, o, s, on_invalid, p_nulls, nulls, start, ignored, counted):
    """One piece of scalar binary rows (see ``cpu_binary``): always on the CPU, which reads
    them at memory speed (a GPU would spend longer on the copy than on the logs)."""
    from .kernels import cpu_scalar as cpu_binary

    if t.shape[0] != len(p):
        validate.check_lengths(len(p), t.shape[0])
    n_bad = cpu_binary.run(p.values, t, prm, a, b, o, s)
    _mark(o, s, ignored, nulls)
    if on_invalid == "error" and (n_bad or nulls is not None):  # the kernel counted: no scan when all are valid
        validate.raise_first_invalid(s, p, t, prm, p_nulls, row_offset=start, counted=counted)


def _result_dtype(pred_layout) -> np.dtype:
    return np.dtype(np.float64) if pred_layout.values.dtype == np.float64 else np.dtype(np.float32)


def score(
    loss: str,
    pred,
    target,
    *,
    from_logits: bool = False,
    log_base: float = math.e,
    eps="auto",
    label_smoothing: float = 0.0,
    class_weight=None,
    pos_weight=None,
    ignore_index: int | None = None,
    reduce: str = "sum",
    on_invalid: str = "error",
    device: str = "cpu",
    normalize: bool = False,
    weight=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Score every row; return ``(losses, status)``.

    ``status`` holds one int8 code per row (``losses.OK``, ``losses.IGNORED`` or an error
    code; ``losses.REASONS`` names them). With ``on_invalid="error"`` the first invalid row
    raises ``InvalidInputError``; with ``"nan"`` invalid rows get NaN.

    ``loss="both"`` scores CCE and BCE (as ``--loss both``: ``class_weight`` goes to CCE,
    ``pos_weight``/``reduce`` to BCE) and returns two dicts keyed ``"cce"`` and
    ``"bce"``: ``({"cce": losses, "bce": losses}, {"cce": status, "bce": status})``.
    ``ignore_index`` is CCE's option (PyTorch's); BCE gives the rows with that index label
    NaN and status ``IGNORED`` too, so both losses skip the same rows.

    With ``on_invalid="error"`` the error's ``n_invalid`` counts every row of the call, or,
    when ChunkedArray inputs stop at an earlier chunk, the rows up to there (``counted``).

    Inputs: see ``cce``; pandas/polars Series and torch tensors are read through
    ``arrow.coerce`` (zero-copy where possible; a tensor that requires grad is detached).
    """
    if on_invalid not in losses.ON_INVALID:
        raise InvalidInputError(f"on_invalid must be 'error' or 'nan'; got {on_invalid!r}")
    if normalize and (loss not in ("cce", "both") or from_logits):
        raise InvalidInputError("normalize=True applies to CCE from probabilities only")
    if weight is not None and loss not in ("bce", "both"):
        raise InvalidInputError("weight= (per-element weights) applies to BCE; CCE takes class_weight=")
    if loss == "bce" and class_weight is not None:
        raise InvalidInputError("class_weight applies to CCE; BCE takes weight= and pos_weight=")
    if loss == "both":
        kw = dict(from_logits=from_logits, log_base=log_base, eps=eps, label_smoothing=label_smoothing,
                  on_invalid=on_invalid, device=device)
        c_out, c_st = score("cce", pred, target, class_weight=class_weight, ignore_index=ignore_index,
                            normalize=normalize, **kw)
        b_out, b_st = score("bce", pred, target, pos_weight=pos_weight, reduce=reduce, weight=weight,
                            ignore_index=ignore_index, **kw)
        return {"cce": c_out, "bce": b_out}, {"cce": c_st, "bce": b_st}
    if backend.is_device_array(pred) or backend.is_device_array(target):
        if normalize:
            raise InvalidInputError("normalize=True is not supported for GPU device arrays")
        from .kernels import gpu  # GPU inputs imply device="cuda"; the results stay on the GPU

        return gpu.score_device(
            loss, pred, target, from_logits=from_logits, log_base=log_base, eps=eps,
            label_smoothing=label_smoothing, class_weight=class_weight if weight is None else weight,
            pos_weight=pos_weight,
            ignore_index=ignore_index, reduce=reduce, on_invalid=on_invalid,
        )
    pred, target = decoded(coerce(pred), "pred"), decoded(coerce(target), "target")
    if loss == "bce" and ignore_index is not None:  # applied here, not by the kernels
        bce_ignore, ignore_index = losses.int64_option(ignore_index, "ignore_index"), None
    else:
        bce_ignore = None
    n = _rows(pred)
    validate.check_lengths(n, _rows(target))
    engine = backend.kernels(backend.resolve(device))
    out = status = None
    for start, p_piece, t_piece in aligned_slices(pred, target):
        p, p_nulls = as_rows(p_piece, "pred", is_target=False)
        binary = isinstance(p, Scalar)
        t, t_nulls = as_labels(t_piece, "target") if binary else as_rows(t_piece, "target", is_target=True)
        p_in = p  # error messages quote the values as given
        if binary and weight is not None:
            raise InvalidInputError(
                "weight= (per-element weights) is not supported for one score per row; "
                "use pos_weight, or pass pred as (N, 1)"
            )
        if normalize and not binary:  # [1-p, p] already sums to 1
            p = validate.normalized(p)
        if out is None:
            dtype = _result_dtype(p)
            out = np.empty(n, dtype=dtype)
            status = np.empty(n, dtype=np.int8)
            prm = losses.make_params(
                loss,
                dtype=dtype,
                from_logits=from_logits,
                log_base=log_base,
                eps=eps,
                label_smoothing=label_smoothing,
                ignore_index=ignore_index,
                reduce=reduce,
            )
        m = len(p)
        if m == 0:
            continue
        nulls = p_nulls if t_nulls is None else (t_nulls if p_nulls is None else p_nulls | t_nulls)
        ignored, t = _ignored_rows(t, bce_ignore)
        counted = None if start + m == n else f"counted in rows 0..{start + m - 1}, where scoring stopped"
        if binary:
            a, b = _binary_weights(loss, class_weight, pos_weight)
            _score_binary(p, t, prm, a, b, out[start : start + m], status[start : start + m],
                          on_invalid, p_nulls, nulls, start, ignored, counted)
            continue
        n_classes = validate.max_classes(p)
        rows = (n, start, m)
        if loss == "bce":  # the kernels' w: BCE's per-element weight, CCE's class weight
            w = validate.weights(weight, "weight", n_classes, scalar_ok=True, rows=rows)
        else:
            w = validate.weights(class_weight, "class_weight", n_classes, scalar_ok=False)
        pw = validate.weights(pos_weight, "pos_weight", n_classes, scalar_ok=True, rows=rows)
        o, s = out[start : start + m], status[start : start + m]
        p, t, w, pw = canon.kernel_inputs(p, t, w, pw)  # a few compiled signatures cover every input
        n_bad = engine.run(p, t, prm, w, pw, o, s)  # None: not counted
        _mark(o, s, ignored, nulls)
        if on_invalid == "error" and (n_bad is None or n_bad or nulls is not None):  # no scan when all are valid
            validate.raise_first_invalid(s, p_in, t, prm, p_nulls, row_offset=start, counted=counted)
    if out is None:  # zero rows: the dtype follows the input when it can be read
        dtype = np.float64
        try:
            dtype = _result_dtype(as_rows(pred, "pred", is_target=False)[0])
        except (InvalidInputError, AttributeError):
            pass
        return np.empty(0, dtype=dtype), np.empty(0, dtype=np.int8)
    return out, status


def cce(
    pred,
    target,
    *,
    from_logits: bool = False,
    log_base: float = math.e,
    eps="auto",
    label_smoothing: float = 0.0,
    class_weight=None,
    ignore_index: int | None = None,
    on_invalid: str = "error",
    device: str = "cpu",
    normalize: bool = False,
) -> np.ndarray:
    """Categorical cross-entropy per row: one exclusive choice among C classes.

    .. math:: \\mathrm{CCE}_i = -\\frac{1}{\\ln b}\\sum_c w_c\\, t'_{ic} \\log p_{ic},
              \\quad t' = t(1-\\varepsilon) + \\varepsilon / C

    ``pred``: (N, C) probabilities (or logits with ``from_logits=True``) as a NumPy array or
    an Arrow list / large-list / fixed-size-list array (or a ChunkedArray of them; rows may
    differ in length). ``target``: (N,) integer class indices, or dense targets (one-hot or
    soft, each row summing to 1) in the same layout as ``pred``. ``class_weight`` scales
    class c by ``w_c`` (PyTorch). Rows whose index equals ``ignore_index`` give NaN.
    ``eps`` is a number or a preset ("auto", "keras", "torch", "sklearn", "none"); see
    ``xent_numba.losses``. ``normalize=True`` divides each probability row by its sum first
    (Keras' convention; off by default, as in PyTorch and scikit-learn >= 1.5). Returns one
    loss per row, float64 for float64 input, else float32.

    A 1-D ``pred`` (one number per row, P(y=1) or its logit) is read as the two classes
    ``[1-p, p]`` with index label ``y`` (0/1, bool, or soft in [0, 1]):
    ``-(w_1 t' log p + w_0 (1-t') log(1-p))``, the same number as ``bce`` without weights.
    """
    out, _ = score(
        "cce",
        pred,
        target,
        from_logits=from_logits,
        log_base=log_base,
        eps=eps,
        label_smoothing=label_smoothing,
        class_weight=class_weight,
        ignore_index=ignore_index,
        on_invalid=on_invalid,
        device=device,
        normalize=normalize,
    )
    return out


def bce(
    pred,
    target,
    *,
    from_logits: bool = False,
    reduce: str = "sum",
    log_base: float = math.e,
    eps="auto",
    label_smoothing: float = 0.0,
    pos_weight=None,
    on_invalid: str = "error",
    device: str = "cpu",
    weight=None,
) -> np.ndarray:
    """Binary cross-entropy per row: C independent yes/no questions, summed or averaged.

    .. math:: \\mathrm{BCE}_i = -\\frac{1}{\\ln b}\\sum_c \\left[pw_c\\, t'_{ic} \\log p_{ic}
              + (1 - t'_{ic}) \\log(1 - p_{ic})\\right], \\quad t' = t(1-\\varepsilon) + \\varepsilon/2

    (divided by C with ``reduce="mean"``). ``target``: dense 0/1 (multi-hot) or soft targets
    in [0, 1] in the layout of ``pred``, or (N,) class indices read as one-hot rows.
    From logits the stable form ``max(x,0) - x t + log1p(exp(-|x|))`` is used (PyTorch's form
    with ``pos_weight``). ``weight`` multiplies component c of a row (shape (C,) or (N, C),
    PyTorch's ``BCELoss(weight=)``); ``pos_weight`` may be a number, (C,) or (N, C).
    Returns one loss per row, float64 for float64 input, else float32.

    One score per row: a 1-D ``pred`` (NumPy, or a numeric Arrow Array/ChunkedArray, read
    without a copy) is P(y=1) (or its logit) against (N,) labels: 0/1 integers, bool, or soft
    labels in [0, 1]. ``-(pw t' log p + (1-t') log1p(-p))``; ``pos_weight`` is one number.
    """
    out, _ = score(
        "bce",
        pred,
        target,
        from_logits=from_logits,
        log_base=log_base,
        eps=eps,
        label_smoothing=label_smoothing,
        pos_weight=pos_weight,
        reduce=reduce,
        on_invalid=on_invalid,
        device=device,
        weight=weight,
    )
    return out


__all__ = ["cce", "bce", "score"]
