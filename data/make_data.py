"""Regenerate the bundled samples (deterministic): ``python data/make_data.py``.

- ``sample.parquet``: 4,000 rows of a 10-class classifier's evaluation dump: ``id``
  (int64), ``pred`` (list<float32> softmax probabilities), ``label`` (int64 class index);
  two row groups, so the streaming path is exercised.
- ``seed_example.parquet``: the worked example, one row: ``pred`` [0.1, 0.3, 0.2, 0.4],
  ``label`` 1 and ``label_one_hot`` [0, 1, 0, 0]. In base-10 logs its CCE is 0.523 and its
  summed BCE 0.887 (``--log-base 10``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def sample(n: int = 4000, c: int = 10, seed: int = 2026) -> pa.Table:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, c, size=n)
    logits = rng.normal(0.0, 1.0, size=(n, c))
    logits[np.arange(n), label] += rng.normal(2.0, 1.5, size=n)  # a decent but imperfect model
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    pred = pa.FixedSizeListArray.from_arrays(pa.array(probs.astype(np.float32).ravel()), c)
    return pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "pred": pred.cast(pa.list_(pa.float32())),
        "label": pa.array(label.astype(np.int64)),
    })


def seed_example() -> pa.Table:
    return pa.table({
        "pred": pa.array([[0.1, 0.3, 0.2, 0.4]], type=pa.list_(pa.float64())),
        "label": pa.array([1], type=pa.int64()),
        "label_one_hot": pa.array([[0, 1, 0, 0]], type=pa.list_(pa.float64())),
    })


def main() -> None:
    pq.write_table(sample(), HERE / "sample.parquet", row_group_size=2000)
    pq.write_table(seed_example(), HERE / "seed_example.parquet")


if __name__ == "__main__":
    main()
