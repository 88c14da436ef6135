"""The summary's fused compiled pass gives what the plain NumPy statement gives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests import reference as ref
from xent_numba.analysis.summary import N_BINS, Summary


def _losses(rng, n, dtype):
    v = np.exp(rng.uniform(-35, 16, n)).astype(dtype)  # below 1e-12 to above 1e6
    v[rng.random(n) < 0.05] = np.nan
    v[:3] = [0.0, 1e-12, 1e6]  # bin edges
    return v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_batch_matches_numpy(dtype):
    rng = np.random.default_rng(1)
    v = _losses(rng, 50_000, dtype)
    labels = rng.integers(-1, 7, v.size)
    s = Summary()
    s.add_losses("cce", v)
    s.add_classes(labels, v)
    want = ref.summary_stats(v)
    st = s.stats["cce"]
    assert (st.count, st.n_inf, st.minimum, st.maximum) == (want["count"], 0, want["min"], want["max"])
    np.testing.assert_array_equal(st.hist, want["hist"])
    assert st.total == pytest.approx(want["total"], rel=1e-15)
    csum, ccount = ref.class_sums(labels, v)
    np.testing.assert_array_equal(s.class_count[: ccount.size], ccount)
    np.testing.assert_allclose(s.class_sum[: csum.size], csum, rtol=1e-12)
    assert not s.class_count[ccount.size :].any()


def test_fused_labels_equal_separate_passes():
    rng = np.random.default_rng(2)
    v = _losses(rng, 10_000, np.float64)
    labels = rng.integers(-1, 5, v.size)
    a, b = Summary(), Summary()
    a.add_losses("cce", v, labels)
    b.add_losses("cce", v)
    b.add_classes(labels, v)
    assert a.to_dict() == b.to_dict()
    np.testing.assert_array_equal(a.class_count, b.class_count)


def test_batches_and_merge_equal_one_pass():
    """Dask merges per-partition summaries: the split never changes counts, hist, min/max."""
    rng = np.random.default_rng(3)
    v = _losses(rng, 30_000, np.float64)
    labels = rng.integers(0, 9, v.size)
    whole = Summary()
    whole.add_losses("cce", v, labels)
    parts = []
    for lo, hi in [(0, 7), (7, 12_345), (12_345, 30_000)]:
        p = Summary()
        p.add_losses("cce", v[lo:hi], labels[lo:hi])
        parts.append(p)
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged.stats["cce"].count == whole.stats["cce"].count
    np.testing.assert_array_equal(merged.stats["cce"].hist, whole.stats["cce"].hist)
    assert merged.to_dict()["losses"]["cce"]["median"] == whole.to_dict()["losses"]["cce"]["median"]
    assert merged.stats["cce"].total == pytest.approx(whole.stats["cce"].total, rel=1e-14)
    np.testing.assert_array_equal(merged.class_count, whole.class_count)


def test_infinities_and_empty():
    s = Summary()
    s.add_losses("bce", np.array([np.nan, np.nan]))
    assert s.stats["bce"].count == 0 and s.to_dict()["losses"]["bce"]["mean"] is None
    s.add_losses("bce", np.array([1.0, np.inf, 2.0]))
    st = s.stats["bce"]
    assert (st.count, st.n_inf, st.maximum) == (3, 1, math.inf) and st.total == math.inf
    assert st.hist[N_BINS - 1] == 1  # inf sits above 1e6, not with the zeros
    assert st.quantile(1.0) == math.inf


def test_strided_and_readonly_input():
    v = np.linspace(0.01, 5, 101)
    ro = v.copy()
    ro.flags.writeable = False
    a, b = Summary(), Summary()
    a.add_losses("cce", v[::2])
    b.add_losses("cce", ro[::2])
    assert a.to_dict() == b.to_dict()


def test_every_bin_edge_and_its_neighbours():
    """The table lookup puts values on, just below and just above every edge in the bin the
    NumPy statement gives (the lookup never computes a log)."""
    from xent_numba.analysis.summary import EDGES

    v = np.concatenate([EDGES, np.nextafter(EDGES, 0), np.nextafter(EDGES, np.inf), [0.0, -0.0, 5e-324, 1e300]])
    s = Summary()
    s.add_losses("cce", v)
    np.testing.assert_array_equal(s.stats["cce"].hist, ref.summary_stats(v)["hist"])
