"""Input columns: the names a run reads, resolved against each file's schema, one schema the
files are cast to, and a batch's prediction / label arrays (one column, or the "wide" layout
of one scalar column per class assembled into a fixed-size list).

Shared by the engines (``pipeline``, ``dask``) and ``advise``; ``opts`` is anything with
``pred``, ``label``, ``keep`` and ``losses`` (``pipeline.ScoreOptions``), and optionally
``exclude``.

A glob (``--pred 'p_*'``) selects the wide layout. Its columns (less those matching an
``exclude`` glob) must form ONE family, so that a summary column the glob also matches
(``p_max``) never becomes an extra class: one stem and a class part that varies, either

- numbers (``p_0 .. p_9``, ``y1 .. y10``): consecutive ascending integers from 0 or 1, in
  column order, which is the class order; or
- names (``p_cat, p_dog, p_bird``): none of them an aggregate word (``AGGREGATE_NAMES``:
  ``max``, ``mean``, ``top1``, ...) and none a bare number.

When both ``pred`` and ``label`` are wide, their class parts must agree, in order.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import arrow
from .errors import InvalidInputError


@dataclass(frozen=True)
class Columns:
    """Input columns resolved against a schema: ``pred``/``label`` are lists of names (more
    than one name: the "wide" layout, one scalar column per class, in column order)."""

    pred: tuple[str, ...]
    label: tuple[str, ...]
    keep: tuple[str, ...]

    @property
    def needed(self) -> list[str]:
        seen = dict.fromkeys(self.keep + self.pred + self.label)
        return list(seen)

    def describe(self, role: str) -> str:
        names = self.pred if role == "pred" else self.label
        return names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"

    def header(self) -> str:
        """The run header's line: ``pred: p_0, p_1, p_2 (3 columns); label: label``."""
        return f"pred: {listing(self.pred)}; label: {listing(self.label)}"


SHOWN_COLUMNS = 12  # a wide layout of more columns is shown as first..last


def listing(names) -> str:
    """Column names for a message: all of them up to ``SHOWN_COLUMNS``, else first..last."""
    if len(names) == 1:
        return names[0]
    shown = ", ".join(names) if len(names) <= SHOWN_COLUMNS else f"{names[0]}..{names[-1]}"
    return f"{shown} ({len(names)} columns)"


def _match(pattern: str, names: list[str], what: str, exclude=()) -> tuple[str, ...]:
    if pattern in names:
        return (pattern,)
    if any(ch in pattern for ch in "*?["):
        hits = tuple(n for n in names if fnmatch.fnmatchcase(n, pattern))
        kept = tuple(n for n in hits if not any(fnmatch.fnmatchcase(n, x) for x in exclude))
        if kept:
            return kept
        if hits:
            raise InvalidInputError(
                f"{what} glob {pattern!r} matched {', '.join(hits)}, and --exclude left none of them",
                column=pattern,
            )
    raise InvalidInputError(
        f"{what} column {pattern!r} not found; columns are: {', '.join(names)}", column=pattern
    )


# Class parts that name a statistic of the row, not a class: a glob that matches one of
# these has caught a summary column. Compared case-insensitively, with and without the
# separators ("top_1" is "top1"), to the whole class part and to each of its words.
AGGREGATE_NAMES = frozenset({
    "max", "min", "sum", "mean", "avg", "average", "median", "std", "var", "argmax", "argmin",
    "top1", "top5", "topk", "total", "entropy", "count", "norm", "logsumexp", "margin",
})
_NUMBERED = re.compile(r"(.*?)(\d+)")
_WORDS = re.compile(r"[^0-9a-zA-Z]+")


def _aggregate(part: str) -> bool:
    words = [w.lower() for w in _WORDS.split(part) if w]
    return "".join(words) in AGGREGATE_NAMES or any(w in AGGREGATE_NAMES for w in words)


def _numbers(names) -> tuple[tuple, list[str], str, int]:
    """The numbers reading: ``(parts, odd names, why, names numbered after one stem)``."""
    found = [_NUMBERED.fullmatch(n) for n in names]
    stems = Counter(m.group(1) for m in found if m)
    if not stems:
        return (), list(names), "no class numbers", 0
    stem, k = stems.most_common(1)[0]
    odd = [n for n, m in zip(names, found, strict=True) if not (m and m.group(1) == stem)]
    if odd:
        return (), odd, f"not {stem}<class number>", k
    nums = tuple(int(m.group(2)) for m in found)
    start = nums[0] if nums[0] in (0, 1) else 0
    odd = [n for n, v, want in zip(names, nums, range(start, start + len(nums)), strict=True) if v != want]
    shown = ", ".join(map(str, nums)) if len(nums) <= SHOWN_COLUMNS else f"{nums[0]}, ..., {nums[-1]}"
    return nums, odd, f"class numbers must run 0, 1, 2, ... (or 1, 2, 3, ...) in column order; got {shown}", k


def _names(names) -> tuple[tuple, list[str], str]:
    """The names reading: ``(parts, odd names, why)``; the stem is the common prefix up to
    its last separator (``p_ca`` of ``p_cat, p_car`` is ``p_``)."""
    prefix = os.path.commonprefix(list(names))
    seps = [i for i, ch in enumerate(prefix) if not ch.isalnum()]
    stem = prefix[: seps[-1] + 1] if seps else prefix
    if not stem:
        return (), list(names), "the columns share no stem (prefix)"
    parts = tuple(n[len(stem):] for n in names)
    odd = [n for n, part in zip(names, parts, strict=True) if not part or part.isdigit() or _aggregate(part)]
    led = [not part[:1].isalnum() for part in parts]  # "p" + "_cat", "_dog" but "red": not one stem
    if any(led) and not all(led):
        major = 2 * sum(led) >= len(led)
        odd += [n for n, x in zip(names, led, strict=True) if x != major and n not in odd]
    why = f"each must be {stem!r} then a class name, not empty, a bare number or a statistic (max, mean, top1, ...)"
    return parts, odd, why


def family(names: tuple[str, ...]) -> tuple[tuple, list[str], str]:
    """``(class parts, names that break the family, why)`` for the columns of a wide layout
    (see the module docstring); parts are ints (numbers) or strings (names). The reading
    that fits every column wins; when neither does, the one with fewer odd names is told
    (on a tie, numbers when most names are numbered)."""
    nums, odd_n, why_n, numbered = _numbers(names)
    if not odd_n:
        return nums, [], ""
    parts, odd, why = _names(names)
    if not odd:
        return parts, [], ""
    if len(odd_n) < len(odd) or (len(odd_n) == len(odd) and 2 * numbered > len(names)):
        return (), odd_n, why_n
    return (), odd, why


def _check_family(role: str, pattern: str, names: tuple[str, ...]) -> tuple:
    parts, odd, why = family(names)
    if odd:
        shown = ", ".join(odd[:SHOWN_COLUMNS]) + (f" and {len(odd) - SHOWN_COLUMNS} more" if len(odd) > SHOWN_COLUMNS else "")
        raise InvalidInputError(
            f"{role} glob {pattern!r} matched {listing(names)}, which are not one family of class "
            f"columns: {shown} ({why}); narrow the glob, or leave columns out with --exclude "
            f"(e.g. --exclude {odd[0]})",
            column=odd[0],
        )
    return parts


def resolve_columns(schema: pa.Schema, opts) -> Columns:
    names = list(schema.names)
    exclude = getattr(opts, "exclude", ()) or ()
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    pred = _match(opts.pred, names, "prediction", exclude)
    label = _match(opts.label, names, "label", exclude)
    parts = {}
    for role, pattern, cols in (("prediction", opts.pred, pred), ("label", opts.label, label)):
        if len(cols) > 1:
            parts[role] = _check_family(role, pattern, cols)
    if len(parts) == 2 and parts["prediction"] != parts["label"]:
        raise InvalidInputError(
            f"the wide prediction columns ({listing(pred)}) and label columns ({listing(label)}) "
            "name different classes; their class parts must agree, in order",
            column=label[0],
        )
    # a column kept twice is written once (the first place it was named)
    keep = tuple(dict.fromkeys(_match(k, names, "--keep")[0] for k in opts.keep))
    for k in keep:
        if k in opts.losses:
            raise InvalidInputError(
                f"--keep column {k!r} has the name of the loss column this run writes; the output "
                "cannot hold two columns of one name (rename the input column, or do not keep it)",
                column=k,
            )
    for role, cols in (("prediction", pred), ("label", label)):
        if len(cols) > 1:
            bad = [c for c in cols if not _is_number(schema.field(c).type)]
            if bad:
                raise InvalidInputError(
                    f"wide {role} columns must be numeric scalars; {bad[0]!r} is {schema.field(bad[0]).type}",
                    column=bad[0],
                )
    flags = [c for c in pred if pa.types.is_boolean(_value_type(schema.field(c).type, lists=True))]
    if flags:  # refused before any work, as the readers would refuse the first batch
        raise InvalidInputError(f"the prediction {arrow.BOOL_PRED}", column=flags[0])
    if len(label) == 1:  # class names, likewise
        arrow.refuse_text(schema.field(label[0]).type, label[0])
    return Columns(pred, label, keep)


def _value_type(t, *, lists=False):
    """The type of the values of a dictionary column (and, with ``lists``, of a list column)."""
    t = t.value_type if pa.types.is_dictionary(t) else t
    if lists and (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        t = _value_type(t.value_type)
    return t


def _is_number(t) -> bool:
    t = _value_type(t)
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)


def plan_inputs(schemas, opts) -> tuple[Columns, pa.Schema]:
    """The columns to read, resolved in every input file (``schemas``: ``[(path, schema)]``),
    and one schema for them that every file's batches are cast to: numbers of one kind
    widened to the widest (float32 and float64 predictions -> float64, int32 and int64 ids
    -> int64, also inside lists). Files that disagree otherwise are refused, naming both."""
    plans = []
    for path, schema in schemas:
        try:
            plans.append(resolve_columns(schema, opts))
        except InvalidInputError as e:
            raise e.moved(source=path) from None
    cols = plans[0]
    first = schemas[0][0]
    for (path, _), c in zip(schemas, plans, strict=True):
        if c != cols:
            raise InvalidInputError(
                f"its columns differ from {first}'s ({', '.join(c.pred)} vs {', '.join(cols.pred)})", source=path
            )
    fields = []
    for name in cols.needed:
        owner, t = first, schemas[0][1].field(name).type
        for path, schema in schemas[1:]:
            u = schema.field(name).type
            w = t if u == t else _wider(t, u)
            if w is None:
                raise InvalidInputError(
                    f"column {name!r} is {t} in {owner} but {u} in {path}; the input files must agree "
                    "(numbers of one kind are widened, other types must match)",
                    column=name,
                )
            if w != t:
                owner, t = path, w
        fields.append(pa.field(name, t))
    return cols, pa.schema(fields)


def _wider(a: pa.DataType, b: pa.DataType):
    """The type that holds every value of ``a`` and of ``b`` of one kind, or None."""
    t = pa.types
    if t.is_null(a) or t.is_null(b):
        return b if t.is_null(a) else a
    if t.is_dictionary(a) or t.is_dictionary(b):  # read as their values (``conform`` decodes)
        a, b = _value_type(a), _value_type(b)
        return a if a == b else _wider(a, b)
    if t.is_floating(a) and t.is_floating(b):
        return a if a.bit_width >= b.bit_width else b
    if t.is_integer(a) and t.is_integer(b):
        sa, sb = t.is_signed_integer(a), t.is_signed_integer(b)
        if sa == sb:
            return a if a.bit_width >= b.bit_width else b
        signed, unsigned = (a, b) if sa else (b, a)
        if signed.bit_width > unsigned.bit_width:
            return signed
        return {8: pa.int16(), 16: pa.int32(), 32: pa.int64()}.get(unsigned.bit_width)
    if (t.is_string(a) or t.is_large_string(a)) and (t.is_string(b) or t.is_large_string(b)):
        return pa.large_string()
    if (t.is_binary(a) or t.is_large_binary(a)) and (t.is_binary(b) or t.is_large_binary(b)):
        return pa.large_binary()
    lists = (t.is_list, t.is_large_list, t.is_fixed_size_list)
    if any(f(a) for f in lists) and any(f(b) for f in lists):
        inner = a.value_type if a.value_type == b.value_type else _wider(a.value_type, b.value_type)
        if inner is None:
            return None
        if t.is_fixed_size_list(a) and t.is_fixed_size_list(b):
            return pa.list_(inner, a.list_size) if a.list_size == b.list_size else pa.list_(inner)
        return pa.large_list(inner) if t.is_large_list(a) or t.is_large_list(b) else pa.list_(inner)
    return None


def conform(batch, schema: pa.Schema):
    """``batch`` with its columns cast to their types in ``schema`` (a no-op when they agree;
    a dictionary-encoded column whose type there is not a dictionary is decoded first)."""
    names = batch.schema.names
    target = [schema.field(n).type if n in schema.names else batch.schema.field(n).type for n in names]
    if all(f.type == u for f, u in zip(batch.schema, target, strict=True)):
        return batch
    if any(pa.types.is_dictionary(f.type) and not pa.types.is_dictionary(u)
           for f, u in zip(batch.schema, target, strict=True)):
        cols = [arrow.decoded(c, n) if pa.types.is_dictionary(c.type) and not pa.types.is_dictionary(u) else c
                for c, n, u in zip(batch.columns, names, target, strict=True)]
        batch = type(batch).from_arrays(cols, names=names)
        if all(f.type == u for f, u in zip(batch.schema, target, strict=True)):
            return batch
    return batch.cast(pa.schema([pa.field(n, u) for n, u in zip(names, target, strict=True)]))


def _column(batch, names: tuple[str, ...]):
    """One column as is, or several scalar columns as a FixedSizeListArray (nulls kept);
    dictionary-encoded columns decoded."""
    if len(names) == 1:
        return arrow.decoded(batch.column(names[0]), names[0])
    cols = [arrow.decoded(batch.column(n), n) for n in names]
    real = any(pa.types.is_floating(c.type) or pa.types.is_decimal(c.type) for c in cols)
    common = pa.float64() if real else pa.int64()
    if all(c.type == cols[0].type for c in cols) and not pa.types.is_decimal(cols[0].type):
        common = cols[0].type
    n, k = len(batch), len(cols)
    values = np.empty((n, k), dtype=common.to_pandas_dtype())
    mask = None
    for j, c in enumerate(cols):
        try:
            c = c.cast(common) if c.type != common else c
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:  # e.g. uint64 past int64
            raise InvalidInputError(f"cannot read {c.type} as {common} with the other columns ({exc})",
                                    column=names[j]) from None
        if c.null_count:
            mask = np.zeros((n, k), dtype=bool) if mask is None else mask
            mask[:, j] = arrow.to_numpy(c.is_null())
        values[:, j] = arrow.to_numpy(c)
    flat = arrow.from_numpy(values.reshape(-1), None if mask is None else mask.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, k)
