"""Loss definitions and options: the one place for names, defaults and formulas.

Categorical cross-entropy (one exclusive choice per row, softmax):

.. math::  \\mathrm{CCE} = -\\sum_c w_c\\, t'_c \\log p_c, \\qquad t' = t(1-\\varepsilon) + \\varepsilon / C

where ``w`` is ``class_weight`` (PyTorch: the weight of each class, 1 if not given),
``t`` the one-hot (index labels) or dense target, ``\\varepsilon`` the label smoothing.
From logits, ``-\\log p_c = (m - x_c) + \\log1p(\\sum_{k \\ne a} e^{x_k - m})`` with
``m = x_a = \\max_k x_k`` (``a`` the first arg max): both parts are >= 0, so nothing cancels
when the true class dominates (``[40, 0, -1]``, class 0: 5.8e-18, not 0). A ``-inf`` logit is
a masked class (probability 0): it drops out of the sum; if a class with a positive target
weight is masked the loss is ``inf`` and the row's status is ``TARGET_MASKED``.

Binary cross-entropy (C independent yes/no questions per row, sigmoid), per component:

.. math::  \\ell_c = -[\\,pw_c\\, t'_c \\log p_c + (1 - t'_c) \\log(1 - p_c)\\,], \\qquad t' = t(1-\\varepsilon) + \\varepsilon/2

summed (``reduce="sum"``) or averaged (``reduce="mean"``, Keras) over the row. From logits
(PyTorch's form, rearranged into non-negative parts so that nothing cancels):
``pw\\,t' (sp + \\max(-x, 0)) + (1-t') (sp + \\max(x, 0))``, ``sp = \\log(1+e^{-|x|})``;
a part whose weight is 0 is skipped. A ``-inf`` logit is ``p = 0``; ``+inf`` and NaN are
invalid.

Every result is divided by ``ln(log_base)``: base 10 gives the "0.523 / 0.887" of the
worked example, base e gives nats.

Epsilon policy for probability inputs (``eps=``; logits are never clipped):

- a number ``e``: probabilities are clipped to ``[e, 1 - e]`` before the log;
- ``"auto"`` (the default): ``e`` = machine epsilon of the compute dtype (float32:
  1.19e-7, float64: 2.2e-16), as scikit-learn's ``log_loss`` does;
- ``"keras"``: ``e = 1e-7`` (Keras' ``backend.epsilon()``), clipped in the input's float
  width as Keras does: for float32 input ``[float32(1e-7), 1 - 2^-23]`` (``1 - 1e-7`` rounds
  to ``1 - 2^-23`` in float32, so the interval is not symmetric);
- ``"sklearn"``: the same as ``"auto"``;
- ``"torch"``: no clipping; every log is clamped at ``-100`` (``F.binary_cross_entropy``);
- ``"none"``: no clipping at all: a probability of 0 on a counted term gives ``inf``.

Terms whose weight is exactly 0 (target, class weight or pos_weight) are skipped
(``0 log 0 = 0``, never NaN), so BCE with hard 0/1 targets takes one log per component.

float16 input is widened to float32 before scoring and the result is float32, so
``eps="auto"`` clips at the float32 epsilon (1.19e-7), not float16's (9.8e-4) as
scikit-learn's ``log_loss`` would: a float16 probability of exactly 0 costs 15.9 nats, not 6.9.
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
TARGET_MASKED = 10  # from logits: a class with positive target weight has logit -inf; loss inf

REASONS = {
    PRED_NONFINITE: "prediction is NaN or infinite",
    PRED_RANGE: "probability outside [0, 1]",
    LABEL_RANGE: "class index out of range",
    TARGET_VALUE: "target value invalid",
    TARGET_SUM: "dense CCE target does not sum to 1",
    LENGTH: "prediction and target rows differ in length",
    NULL_ROW: "row is null",
    EMPTY_ROW: "row has no classes",
    TARGET_MASKED: "the true class is masked (its logit is -inf): the loss is inf",
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


def _number(x, name: str) -> float:
    """A real number option (not a bool, not a string), as a float."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"{name} must be a number, got {x!r}")
    return float(x)


_INT64 = np.iinfo(np.int64)


def int64_option(x, name: str) -> int:
    """An integer option that must fit int64: ``1.5`` is refused, not truncated; ``2.0`` is 2."""
    if isinstance(x, bool):
        raise InvalidInputError(f"{name} must be an integer, got {x!r}")
    if isinstance(x, (float, np.floating)):
        if not (math.isfinite(x) and float(x).is_integer()):
            raise InvalidInputError(f"{name} must be an integer, got {x!r}")
        x = int(x)
    if not isinstance(x, (int, np.integer)):
        raise InvalidInputError(f"{name} must be an integer, got {x!r}")
    if not (_INT64.min <= int(x) <= _INT64.max):
        raise InvalidInputError(f"{name} must fit in a 64-bit integer, got {x!r}")
    return int(x)


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
            if np.dtype(dtype) == np.float32:  # Keras clips in the input's dtype
                e32 = np.float32(1e-7)
                return float(e32), float(np.float32(1.0) - e32), -math.inf
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
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)):
        raise InvalidInputError(
            f"eps must be a number in [0, 0.5) or one of {', '.join(EPS_PRESETS)}; got {eps!r}"
        )
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
    smoothing = _number(label_smoothing, "label_smoothing")
    if not (0.0 <= smoothing <= 1.0):
        raise InvalidInputError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    lo, hi, logmin = clip_policy(eps, dtype)
    ignore = None if ignore_index is None else int64_option(ignore_index, "ignore_index")
    return Params(
        bce=loss == "bce",
        from_logits=bool(from_logits),
        scale=log_scale(log_base),
        lo=lo,
        hi=hi,
        logmin=logmin,
        smoothing=smoothing,
        has_ignore=ignore is not None,
        ignore_index=ignore if ignore is not None else 0,
        mean=reduce == "mean",
    )
