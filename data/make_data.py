"""Regenerate the bundled samples (deterministic): ``python data/make_data.py``.

- ``sample.parquet``: 4,000 rows of a 10-class classifier's evaluation dump: ``id``
  (int64), ``pred`` (list<float32> softmax probabilities), ``label`` (int64 class index);
  two row groups, so the streaming path is exercised.
- ``seed_example.parquet``: the worked example, one row: ``pred`` [0.1, 0.3, 0.2, 0.4],
  ``label`` 1 and ``label_one_hot`` [0, 1, 0, 0]. In base-10 logs its CCE is 0.523 and its
  summed BCE 0.887 (``--log-base 10``).
- ``binary_sample.parquet``: 5,000 rows of a click-through model's dump, one score per row:
  ``id`` (int64), ``score`` (float32 P(click)), ``logit`` (float32, the same score as a
  logit) and ``clicked`` (bool).
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


def binary_sample(n: int = 5000, seed: int = 2026) -> pa.Table:
    rng = np.random.default_rng(seed)
    clicked = rng.random(n) < 0.2
    logit = rng.normal(-1.0, 1.0, size=n) + np.where(clicked, 1.5, -0.5)
    score = 1.0 / (1.0 + np.exp(-logit))
    return pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "score": pa.array(score.astype(np.float32)),
        "logit": pa.array(logit.astype(np.float32)),
        "clicked": pa.array(clicked),
    })


def main() -> None:
    pq.write_table(sample(), HERE / "sample.parquet", row_group_size=2000)
    pq.write_table(seed_example(), HERE / "seed_example.parquet")
    pq.write_table(binary_sample(), HERE / "binary_sample.parquet", row_group_size=2500)


if __name__ == "__main__":
    main()
