"""The accuracy harness's own logic: seed parsing and its stratified label samples."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
accuracy = pytest.importorskip("accuracy")


def test_seeds_count_list_and_errors():
    assert accuracy.parse_seeds("3") == [0, 1, 2]
    assert accuracy.parse_seeds("0,2") == [0, 2]
    assert accuracy.parse_seeds("2,") == [2]
    for bad in ("0", "x", ","):
        with pytest.raises(SystemExit, match="--seeds"):
            accuracy.parse_seeds(bad)


@pytest.mark.parametrize("n,seed", [(100, 0), (500, 1), (7, 2)])
def test_sample_is_stratified_seeded_and_exact(n, seed):
    rng = np.random.default_rng(0)
    labels = rng.choice(["negative", "neutral", "positive"], size=3000, p=[0.4, 0.55, 0.05])
    ours = accuracy.stratified_sample(labels, n, seed)
    assert len(ours) == n and len(set(ours.tolist())) == n
    assert set(labels[ours]) == set(labels)  # every class at least once, the 5% one included
    for c in set(labels):  # each class within one row of its proportional share (or its minimum of one)
        share = n * (labels == c).mean()
        assert abs((labels[ours] == c).sum() - max(1, share)) < 1 + (n < 10)
    assert np.array_equal(ours, accuracy.stratified_sample(labels, n, seed))
    assert not np.array_equal(ours, accuracy.stratified_sample(labels, n, seed + 1))
    assert np.array_equal(accuracy.stratified_sample(labels[:5], 10, seed), np.arange(5))
