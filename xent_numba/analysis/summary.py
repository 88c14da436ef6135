"""A mergeable summary of per-row losses: exact counts, sums, min/max; quantiles from a
fixed log-binned histogram (bounded memory, merges exactly across batches and partitions).

Quantile accuracy: bins are log-spaced, ``BINS_PER_DECADE`` per decade over
``[1e-12, 1e6]``; a quantile is reported as the geometric centre of its bin, so its
relative error is below ``10**(1/(2*BINS_PER_DECADE)) - 1`` (about 0.6%) for losses in
that range. Losses of exactly 0 have their own bin. Mean, min, max and counts are exact.

Each batch is added in one compiled pass (``_accumulate``): counts, a compensated sum,
min/max, the histogram and, with labels, the per-class sums, with no temporary arrays.

Per-class state costs memory by the classes seen, never by the largest label: only rows
whose loss is not NaN count (an invalid or ignored row, whatever its label, neither counts
nor grows the table), classes below ``DENSE_CLASSES`` live in a dense table sized by the
largest such class (for a scored batch: below C), and larger ones (a hand-made label of
2**40 with a finite loss) in a sparse one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from ..kernels.fastmath import as_int

BINS_PER_DECADE = 200
LOG_LO, LOG_HI = -12, 6
N_BINS = (LOG_HI - LOG_LO) * BINS_PER_DECADE + 2  # + one for 0 (and below 1e-12), one for above 1e6

# How median and p95 are found (recorded per loss in --summary-json, named in the tables):
# from the histogram, the centre of the quantile's bin, never exact
QUANTILE_RELATIVE_ERROR = 10 ** (1 / (2 * BINS_PER_DECADE)) - 1
QUANTILES = {
    "exact": False,
    "method": "log-binned histogram sketch",
    "relative_error": QUANTILE_RELATIVE_ERROR,
    "range": [10.0**LOG_LO, 10.0**LOG_HI],
    "description": f"median and p95 are approximate (log-binned sketch, within {QUANTILE_RELATIVE_ERROR:.2%} "
                   f"relative for losses in [1e{LOG_LO}, 1e{LOG_HI}])",
}


# Bin b (1 .. N_BINS-2) holds the losses in [EDGES[b-1], EDGES[b]); bin 0 those <= 1e-12
# (zeros included), the last bin those >= 1e6 (and inf).
EDGES = 10.0 ** (LOG_LO + np.arange(N_BINS - 1) / BINS_PER_DECADE)


def _bin_index(v: np.ndarray) -> np.ndarray:
    """The histogram bin of each loss (the NumPy statement of what ``_accumulate`` does)."""
    b = np.searchsorted(EDGES, v, side="right")
    b[~(v > EDGES[0])] = 0
    return b


# Finding the bin without a log: the top bits of a double (its exponent and the first
# _SUB_BITS bits of its mantissa) split every octave into 2**_SUB_BITS slices, each
# narrower than a bin (at most 1/89 octave against 1/60), so a slice holds at most one edge:
# _SLICE_BIN[slice] is the bin at the slice's start, and one comparison with the next edge
# finishes the job. The same bins as ``_bin_index``, exactly, at a table lookup per loss.
_SUB_BITS = 7
_SHIFT = 52 - _SUB_BITS
_KEY0 = int(np.array(EDGES[0]).view(np.int64)) >> _SHIFT


def _slice_table() -> np.ndarray:
    key1 = int(np.array(EDGES[-1]).view(np.int64)) >> _SHIFT
    keys = np.arange(_KEY0, key1 + 1, dtype=np.int64)
    first = (keys << _SHIFT).view(np.float64)
    last = (((keys + 1) << _SHIFT) - 1).view(np.float64)
    lo, hi = np.searchsorted(EDGES, first, side="right"), np.searchsorted(EDGES, last, side="right")
    assert (hi - lo).max() <= 1, "a slice spans two bin edges"
    return lo.astype(np.int16)


_SLICE_BIN = _slice_table()


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _bin(x, first, last, edges, slice_bin):
    """``_bin_index`` of one loss: 0 for ``x <= 1e-12`` (and NaN), the last bin for
    ``x >= 1e6`` and inf, else a table lookup on the top bits of ``x`` and one comparison
    (``first``/``last``: the first and last edge, hoisted out of the loop)."""
    if not x > first:
        return 0
    if x >= last:
        return edges.shape[0]
    b = np.int64(slice_bin[(as_int(x) >> _SHIFT) - _KEY0])
    b += x >= edges[b]
    return b


@njit(cache=True, nogil=True, error_model="numpy")
def _accumulate(values, labels, hist, class_sum, class_count, acc, edges, slice_bin):
    """One pass over a batch's losses: NaN skipped; ``acc`` = [count, n_inf, total,
    compensation, min, max] updated in place (``total`` of the finite values, Neumaier
    compensated); the log-binned histogram; with ``labels`` (one per row, -1 or less for
    none), per-class sums and counts of the non-NaN losses."""
    count, n_inf = 0, 0
    total, comp, lo, hi = acc[2], acc[3], acc[4], acc[5]
    per_class = labels.shape[0] > 0
    first, last = edges[0], edges[edges.shape[0] - 1]
    for i in range(values.shape[0]):
        x = float(values[i])
        if x != x:
            continue
        count += 1
        if x < _INF and x > -_INF:
            t = total + x  # Neumaier: exact error of each addition carried in comp
            if abs(total) >= abs(x):
                comp += (total - t) + x
            else:
                comp += (x - t) + total
            total = t
        else:
            n_inf += 1
        lo = min(lo, x)
        hi = max(hi, x)
        hist[_bin(x, first, last, edges, slice_bin)] += 1
        if per_class:
            k = labels[i]
            if k >= 0 and k < class_sum.shape[0]:
                class_sum[k] += x
                class_count[k] += 1
    acc[0] += count
    acc[1] += n_inf
    acc[2], acc[3], acc[4], acc[5] = total, comp, lo, hi


@njit(cache=True, nogil=True, error_model="numpy")
def _class_sums(values, labels, class_sum, class_count):
    """Per-class sums and counts of the non-NaN losses; labels below 0, or past the table
    (the sparse table's), are skipped."""
    for i in range(values.shape[0]):
        x = float(values[i])
        k = labels[i]
        if x == x and k >= 0 and k < class_sum.shape[0]:
            class_sum[k] += x
            class_count[k] += 1


@njit(cache=True, nogil=True, error_model="numpy")
def _top_label(values, labels, limit):
    """``(the largest label below limit, whether one is at or past it)`` of the rows whose
    loss is not NaN (-1 for the first when there is none)."""
    top, past = -1, False
    for i in range(values.shape[0]):
        x = float(values[i])
        k = labels[i]
        if x == x:
            if k >= limit:
                past = True
            elif k > top:
                top = k
    return top, past


DENSE_CLASSES = 1 << 20  # classes 0 .. DENSE_CLASSES - 1 in the dense table (16 bytes each)


_INF = math.inf
_NO_LABELS = np.zeros(0, dtype=np.int64)
_NO_LABELS.flags.writeable = False
_NO_CLASSES = np.zeros(0, dtype=np.float64)
_NO_COUNTS = np.zeros(0, dtype=np.int64)


def _losses(values) -> np.ndarray:
    """float64, C-order, read-only: one compiled signature. float32 losses are widened here,
    not in the loop: LLVM would turn ``log10(double(x))`` into float32 ``log10f(x)``, whose
    rounding moves a loss lying near a bin edge to the next bin."""
    v = np.ascontiguousarray(values, dtype=np.float64)  # a copy only when needed
    if v.flags.writeable:  # one compiled signature per dtype: always a read-only view
        v = v.view()
        v.flags.writeable = False
    return v


def _labels(labels) -> np.ndarray:
    v = np.ascontiguousarray(labels, dtype=np.int64)
    if v.flags.writeable:
        v = v.view()
        v.flags.writeable = False
    return v


@dataclass
class LossStats:
    """Stats of one loss column."""

    count: int = 0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    n_inf: int = 0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(N_BINS, dtype=np.int64))

    def add(self, values: np.ndarray, labels=None, class_sum=None, class_count=None) -> None:
        """Add a batch of losses (NaN skipped) in one compiled pass; with ``labels``, also the
        per-class sums into ``class_sum``/``class_count`` (sized for the largest label)."""
        acc = np.array([0.0, 0.0, 0.0, 0.0, self.minimum, self.maximum])
        if labels is None:
            labels, class_sum, class_count = _NO_LABELS, _NO_CLASSES, _NO_COUNTS
        _accumulate(_losses(values), labels, self.hist, class_sum, class_count, acc, EDGES, _SLICE_BIN)
        n, n_inf = int(acc[0]), int(acc[1])
        if n == 0:
            return
        self.count += n
        self.n_inf += n_inf
        self.total += float(acc[2] + acc[3]) + (math.inf if self.n_inf else 0.0)
        self.minimum, self.maximum = float(acc[4]), float(acc[5])

    def merge(self, other: LossStats) -> None:
        self.count += other.count
        self.total += other.total
        self.n_inf += other.n_inf
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        self.hist += other.hist

    def quantile(self, q: float) -> float:
        if self.count == 0:
            return math.nan
        rank = max(math.ceil(q * self.count) - 1, 0)  # nearest-rank quantile
        b = int(np.searchsorted(np.cumsum(self.hist), rank, side="right"))
        if b == 0:
            return max(self.minimum, 0.0) if self.minimum <= 10.0**LOG_LO else self.minimum
        if b >= N_BINS - 1:
            return self.maximum
        centre = 10.0 ** (LOG_LO + (b - 0.5) / BINS_PER_DECADE)
        return min(max(centre, self.minimum), self.maximum)

    def to_dict(self) -> dict:
        n = self.count
        return {
            "count": n,
            "mean": self.total / n if n else None,
            "median": self.quantile(0.5) if n else None,
            "p95": self.quantile(0.95) if n else None,
            "min": self.minimum if n else None,
            "max": self.maximum if n else None,
        }


@dataclass
class Summary:
    """Everything the end-of-run table shows; ``merge`` combines partial summaries."""

    rows: int = 0
    invalid: int = 0
    ignored: int = 0
    stats: dict = field(default_factory=dict)  # loss name -> LossStats
    class_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per index label, CCE sum
    class_count: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # classes >= DENSE_CLASSES: (classes, sums, counts), classes sorted and unique
    sparse: tuple = field(default_factory=lambda: _sparse_table([], [], []))

    def add_losses(self, name: str, values: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Add a batch of one loss column; with integer ``labels`` (one per row, negative for
        none) the per-class CCE sums are taken in the same compiled pass."""
        if labels is None:
            self.stats.setdefault(name, LossStats()).add(values)
            return
        labels, values = _labels(labels), _losses(values)
        self._make_room(values, labels)
        self.stats.setdefault(name, LossStats()).add(values, labels, self.class_sum, self.class_count)

    def add_classes(self, labels: np.ndarray, cce: np.ndarray) -> None:
        """Per-class CCE sums for index labels (rows with a NaN loss are skipped)."""
        labels, values = _labels(labels), _losses(cce)
        if labels.size == 0:
            return
        self._make_room(values, labels)
        _class_sums(values, labels, self.class_sum, self.class_count)

    def _make_room(self, values, labels) -> None:
        """The dense table grown for the classes of this batch's rows with a loss (none for
        NaN rows); classes past ``DENSE_CLASSES`` added to the sparse table here."""
        if labels.size == 0:
            return
        top, past = _top_label(values, labels, DENSE_CLASSES)
        self._grow(int(top) + 1)
        if past:
            big = (labels >= DENSE_CLASSES) & ~np.isnan(values)
            cls, inv = np.unique(labels[big], return_inverse=True)
            part = _sparse_table(cls, np.bincount(inv, weights=values[big]), np.bincount(inv))
            self.sparse = _merge_sparse(self.sparse, part)

    def _grow(self, k: int) -> None:
        if self.class_sum.size < k:
            self.class_sum = np.pad(self.class_sum.astype(np.float64), (0, k - self.class_sum.size))
            self.class_count = np.pad(self.class_count, (0, k - self.class_count.size))

    def merge(self, other: Summary) -> Summary:
        self.rows += other.rows
        self.invalid += other.invalid
        self.ignored += other.ignored
        for name, st in other.stats.items():
            self.stats.setdefault(name, LossStats()).merge(st)
        self._grow(other.class_sum.size)
        self.class_sum[: other.class_sum.size] += other.class_sum
        self.class_count[: other.class_count.size] += other.class_count
        self.sparse = _merge_sparse(self.sparse, other.sparse)
        return self

    def per_class(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(classes, CCE sums, rows)`` of every class seen, in class order."""
        seen = np.flatnonzero(self.class_count)
        cls, sums, counts = self.sparse
        return (np.concatenate([seen, cls]), np.concatenate([self.class_sum[seen], sums]),
                np.concatenate([self.class_count[seen], counts]))

    def worst_classes(self, k: int = 5) -> list[tuple[int, float, int]]:
        """``[(class, mean CCE, rows)]`` for the ``k`` classes with the highest mean CCE."""
        seen, sums, counts = self.per_class()
        means = sums / counts
        order = np.argsort(-means, kind="stable")[:k]
        return [(int(seen[i]), float(means[i]), int(counts[i])) for i in order]

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "invalid_rows": self.invalid,
            "ignored_rows": self.ignored,
            "losses": {name: st.to_dict() for name, st in self.stats.items()},
            "worst_classes": [
                {"class": c, "mean_cce": m, "rows": n} for c, m, n in self.worst_classes()
            ],
        }


def _sparse_table(classes, sums, counts) -> tuple:
    return (np.asarray(classes, dtype=np.int64), np.asarray(sums, dtype=np.float64),
            np.asarray(counts, dtype=np.int64))


def _merge_sparse(a: tuple, b: tuple) -> tuple:
    """Two sparse per-class tables as one (classes sorted, sums and counts added)."""
    if not b[0].size:
        return a
    if not a[0].size:
        return b
    cls, inv = np.unique(np.concatenate([a[0], b[0]]), return_inverse=True)
    return _sparse_table(cls, np.bincount(inv, weights=np.concatenate([a[1], b[1]])),
                         np.bincount(inv, weights=np.concatenate([a[2], b[2]])).astype(np.int64))
