"""Loss definitions and options: the one place for names, defaults and formulas.

Categorical cross-entropy (one exclusive choice per row, softmax):

.. math::  \\mathrm{CCE} = -\\sum_c w_c\\, t'_c \\log p_c, \\qquad t' = t(1-\\varepsilon) + \\varepsilon / C

where ``w`` is ``class_weight`` (PyTorch: the weight of each class, 1 if not given),
``t`` the one-hot (index labels) or dense target, ``\\varepsilon`` the label smoothing.
From logits, ``\\log p_c = x_c - m - \\log\\sum_k e^{x_k - m}`` with ``m = \\max_k x_k``.

Binary cross-entropy (C independent yes/no questions per row, sigmoid), per component:

.. math::  \\ell_c = -[\\,pw_c\\, t'_c \\log p_c + (1 - t'_c) \\log(1 - p_c)\\,], \\qquad t' = t(1-\\varepsilon) + \\varepsilon/2

summed (``reduce="sum"``) or averaged (``reduce="mean"``, Keras) over the row. From logits
(PyTorch's stable form): ``(1-t')x + (1 + (pw-1)t')(\\log(1+e^{-|x|}) + \\max(-x, 0))``,
which is ``\\max(x,0) - x t' + \\log(1+e^{-|x|})`` when ``pw = 1``.

Every result is divided by ``ln(log_base)``: base 10 gives the "0.523 / 0.887" of the
worked example, base e gives nats.

Epsilon policy for probability inputs (``eps=``; logits are never clipped):

- a number ``e``: probabilities are clipped to ``[e, 1 - e]`` before the log;
- ``"auto"`` (the default): ``e`` = machine epsilon of the compute dtype (float32:
  1.19e-7, float64: 2.2e-16), as scikit-learn's ``log_loss`` does;
- ``"keras"``: ``e = 1e-7`` (Keras' ``backend.epsilon()``);
- ``"sklearn"``: the same as ``"auto"``;
- ``"torch"``: no clipping; every log is clamped at ``-100`` (``F.binary_cross_entropy``);
- ``"none"``: no clipping at all: a probability of 0 on a counted term gives ``inf``.

Terms whose target weight is exactly 0 are skipped (``0 log 0 = 0``), so BCE with hard
0/1 targets takes one log per component.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .errors import InvalidInputError

LOSSES = ("cce", "bce")
EPS_PRESETS = ("auto", "keras", "sklearn", "torch", "none")
BCE_REDUCE = ("sum", "mean")
ON_INVALID = ("error", "nan")
DEVICES = ("cpu", "cuda", "auto")
TORCH_LOG_FLOOR = -100.0
DENSE_SUM_RTOL = 1e-3  # dense CCE targets must sum to 1 within this relative tolerance

# Per-row status written by the kernels (int8). 0 = scored.
OK = 0
IGNORED = 1  # index target == ignore_index: NaN, not an error
PRED_NONFINITE = 2
PRED_RANGE = 3
LABEL_RANGE = 4
TARGET_VALUE = 5
TARGET_SUM = 6
LENGTH = 7
NULL_ROW = 8
EMPTY_ROW = 9

REASONS = {
    PRED_NONFINITE: "prediction is NaN or infinite",
    PRED_RANGE: "probability outside [0, 1]",
    LABEL_RANGE: "class index out of range",
    TARGET_VALUE: "target value invalid",
    TARGET_SUM: "dense CCE target does not sum to 1",
    LENGTH: "prediction and target rows differ in length",
    NULL_ROW: "row is null",
    EMPTY_ROW: "row has no classes",
}


class Params(NamedTuple):
    """Scalar options handed to the kernels (one tuple, not twenty positional arguments)."""

    bce: bool  # False: CCE
    from_logits: bool
    scale: float  # 1 / ln(log_base)
    lo: float  # probability clip bounds
    hi: float
    logmin: float  # floor on every log (-100 for "torch", else -inf)
    smoothing: float
    has_ignore: bool
    ignore_index: int
    mean: bool  # BCE reduce="mean"


def log_scale(log_base: float) -> float:
    """``1 / ln(log_base)``; rejects bases that are not > 0 and != 1."""
    try:
        base = float(log_base)
    except (TypeError, ValueError):
        raise InvalidInputError(f"log_base must be a number > 0 and != 1, got {log_base!r}") from None
    if not math.isfinite(base) or base <= 0 or base == 1:
        raise InvalidInputError(f"log_base must be a finite number > 0 and != 1, got {log_base!r}")
    return 1.0 / math.log(base)


def clip_policy(eps, dtype) -> tuple[float, float, float]:
    """Resolve ``eps`` (number or preset) to ``(lo, hi, logmin)`` for a compute dtype."""
    if isinstance(eps, str):
        name = eps.lower()
        if name in ("auto", "sklearn"):
            e = float(np.finfo(dtype).eps)
            return e, 1.0 - e, -math.inf
        if name == "keras":
            return 1e-7, 1.0 - 1e-7, -math.inf
        if name == "torch":
            return 0.0, 1.0, TORCH_LOG_FLOOR
        if name == "none":
            return 0.0, 1.0, -math.inf
        try:
            eps = float(name)
        except ValueError:
            raise InvalidInputError(
                f"eps must be a number in [0, 0.5) or one of {', '.join(EPS_PRESETS)}; got {eps!r}"
            ) from None
    e = float(eps)
    if not (0.0 <= e < 0.5):
        raise InvalidInputError(f"eps must be in [0, 0.5), got {eps!r}")
    return e, 1.0 - e, -math.inf


def make_params(
    loss: str,
    *,
    dtype,
    from_logits: bool = False,
    log_base: float = math.e,
    eps="auto",
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    reduce: str = "sum",
) -> Params:
    """Check the scalar options of one call and pack them for the kernels."""
    if loss not in LOSSES:
        raise InvalidInputError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    if reduce not in BCE_REDUCE:
        raise InvalidInputError(f"reduce must be 'sum' or 'mean'; got {reduce!r}")
    smoothing = float(label_smoothing)
    if not (0.0 <= smoothing <= 1.0):
        raise InvalidInputError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    lo, hi, logmin = clip_policy(eps, dtype)
    return Params(
        bce=loss == "bce",
        from_logits=bool(from_logits),
        scale=log_scale(log_base),
        lo=lo,
        hi=hi,
        logmin=logmin,
        smoothing=smoothing,
        has_ignore=ignore_index is not None,
        ignore_index=int(ignore_index) if ignore_index is not None else 0,
        mean=reduce == "mean",
    )
